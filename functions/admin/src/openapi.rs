//! The admin function's OpenAPI document: info, the admin-key security scheme, the error
//! body, and the responses every admin route shares (400, 401, 403, 503), added to each
//! operation after the routes have contributed their own.

use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::Ref;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, RefOr};

/// The name of the admin-key security scheme.
pub const SECURITY_SCHEME: &str = "admin_key";

/// Every error, in OpenAI's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `not_found`,
    /// `conflict`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub code: String,
    /// The offending field, when there is one.
    pub param: Option<String>,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Switchboard admin API",
        description = "Providers, models, routing rules, users, credits, gateway keys, usage \
            and the audit log. Every route needs an admin-role gateway key \
            (`Authorization: Bearer sk-sb-...`). Money is exchanged as decimal strings in \
            USD; input also accepts JSON numbers. Unknown fields are rejected with 400. \
            Lists take `limit` (1-500, default 50) and `offset` and answer \
            `{data, limit, offset, total, has_more}`."
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "providers", description = "Upstream LLM providers"),
        (name = "models", description = "Models offered by providers, with prices"),
        (name = "routing-rules", description = "Power-level routing rules"),
        (name = "users", description = "Accounts, credits and the ledger"),
        (name = "api-keys", description = "Gateway keys"),
        (name = "usage", description = "Usage rows and summaries"),
        (name = "audit", description = "The audit log of admin writes"),
        (name = "billing", description = "The usage export to Lago"),
    )
)]
pub struct AdminDoc;

/// Adds the security scheme, and to every operation the admin-key requirement and the
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
                    "A gateway key with the admin role (also accepted in `x-api-key`)",
                ))
                .build(),
        )),
    );
    for item in doc.paths.paths.values_mut() {
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
        (
            "400",
            "Invalid input: malformed JSON, unknown fields, bad values",
        ),
        ("401", "Missing, unknown or revoked key"),
        ("403", "The key is not an admin key"),
        ("503", "The database is unavailable"),
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
