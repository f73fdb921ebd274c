//! The keys function's OpenAPI document: info, the user-key security scheme, the error
//! body, and the responses every route shares (401, 503), added to each operation after
//! the routes have contributed their own.

use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::Ref;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, RefOr};

/// The name of the user-key security scheme.
pub const SECURITY_SCHEME: &str = "user_key";

/// Every error, in OpenAI's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `not_found`, `conflict`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub code: String,
    /// The offending field, when there is one.
    pub param: Option<String>,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Switchboard keys API",
        description = "A user's own provider keys (BYOK, envelope-encrypted, shown only \
            masked) and own gateway keys. Every route needs the user's gateway key \
            (`Authorization: Bearer sk-sb-...`) and sees only that user's keys: anyone \
            else's are answered 404. Unknown request fields are ignored."
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "billing", description = "Stripe top-ups"),
        (name = "byok", description = "Bring your own provider key"),
        (name = "api-keys", description = "The caller's own gateway keys"),
    )
)]
pub struct KeysDoc;

/// Adds the security scheme, and to every operation the user-key requirement and the
/// shared error responses it does not already describe.
pub fn finish(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        SECURITY_SCHEME.to_string(),
        RefOr::T(SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("sk-sb-...")
                .description(Some(
                    "The user's gateway key (also accepted in `x-api-key`)",
                ))
                .build(),
        )),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        // Stripe signs its webhook; it carries no gateway key.
        if path.starts_with("/webhooks/") {
            continue;
        }
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            add_shared_parts(operation);
        }
    }
}

fn add_shared_parts(operation: &mut Operation) {
    operation
        .security
        .get_or_insert_with(Vec::new)
        .push(SecurityRequirement::new(
            SECURITY_SCHEME,
            Vec::<String>::new(),
        ));
    for (status, description) in [
        ("401", "Missing, unknown or revoked key"),
        (
            "503",
            "The database or the key encryption service is unavailable",
        ),
    ] {
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| {
                RefOr::T(
                    ResponseBuilder::new()
                        .description(description)
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("ErrorBody")))
                                .build(),
                        )
                        .build(),
                )
            });
    }
}

/// Every (method, path) of a document's operations. The document comes from the same
/// `routes!` list as the router (`utoipa_axum`), so this is what the router serves.
pub fn operations(doc: &OpenApi) -> Vec<(axum::http::Method, String)> {
    use axum::http::Method;
    let mut list = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, operation) in [
            (Method::GET, &item.get),
            (Method::PUT, &item.put),
            (Method::POST, &item.post),
            (Method::DELETE, &item.delete),
            (Method::OPTIONS, &item.options),
            (Method::HEAD, &item.head),
            (Method::PATCH, &item.patch),
            (Method::TRACE, &item.trace),
        ] {
            if operation.is_some() {
                list.push((method, path.clone()));
            }
        }
    }
    list
}
