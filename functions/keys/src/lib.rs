//! The keys function: a user's BYOK provider keys (`/v1/byok`) and own gateway keys
//! (`/v1/api-keys`), each scoped to the authenticated user. Handlers only extract and
//! delegate to `switchboard_core::keys`.
//!
//! The routes and the OpenAPI document come from the same list ([`routes`]).
//! `switchboard serve` merges [`openapi`] into its `/openapi.json`; this function's own
//! Lambda serves it at `/openapi.json` too.

mod billing;
pub mod openapi;
mod usage;

use std::sync::LazyLock;

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use switchboard_core::auth::self_service::{
    self, CreateGatewayKeyRequest, CreatedGatewayKey, GatewayKeyList,
};
use switchboard_core::auth::{Actor, Caller};
use switchboard_core::http::{ApiError, AppJson, RequestId, finish_router};
use switchboard_core::keys::byok::{
    self, ByokList, MaskedByokKey, PatchByokRequest, PutByokRequest,
};
use switchboard_core::state::AppState;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use openapi::ErrorBody;

/// Every keys route with its handler and its OpenAPI operation.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::KeysDoc::openapi())
        .routes(routes!(list_byok))
        .routes(routes!(get_byok, put_byok, patch_byok, delete_byok))
        .routes(routes!(validate_byok))
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key))
        .routes(routes!(billing::checkout))
        .routes(routes!(billing::stripe_webhook))
        .routes(routes!(usage::own_usage))
        .routes(routes!(usage::own_usage_summary))
}

/// The keys routes, for mounting (by `switchboard serve`) or wrapping with [`app`].
pub fn router(state: AppState) -> Router {
    let (router, _) = routes().split_for_parts();
    router.with_state(state)
}

/// Every (method, path) [`router`] serves (the SAM template's test routes each one through
/// API Gateway to this function).
pub fn route_list() -> Vec<(axum::http::Method, String)> {
    openapi::operations(&routes().into_openapi())
}

/// The keys function's OpenAPI document (every route, request and response).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes().into_openapi();
    openapi::finish(&mut doc);
    doc
}

/// The complete application of the keys Lambda function, with its own `/openapi.json`.
pub fn app(state: AppState) -> Router {
    let limit = state.config.server.max_body_bytes;
    let router = router(state).route("/openapi.json", get(openapi_json));
    finish_router(router, limit)
}

async fn openapi_json() -> axum::Json<serde_json::Value> {
    static DOCUMENT: LazyLock<serde_json::Value> =
        LazyLock::new(|| serde_json::to_value(openapi()).unwrap_or_default());
    axum::Json(DOCUMENT.clone())
}

type Reply<T> = Result<AppJson<T>, ApiError>;

fn actor<'a>(caller: &'a Caller, request_id: &'a Option<Extension<RequestId>>) -> Actor<'a> {
    Actor {
        caller,
        request_id: request_id.as_ref().map(|Extension(id)| id.0.as_str()),
    }
}

/// The caller's stored provider keys, masked.
#[utoipa::path(get, path = "/v1/byok", tag = "byok",
    responses((status = 200, description = "The caller's keys", body = ByokList)))]
async fn list_byok(State(state): State<AppState>, caller: Caller) -> Reply<ByokList> {
    Ok(AppJson(byok::list_keys(&state.byok(), &caller).await?))
}

/// The caller's key for one provider, masked.
#[utoipa::path(get, path = "/v1/byok/{provider_slug}", tag = "byok",
    params(("provider_slug" = String, Path, description = "Provider slug, e.g. `openai`")),
    responses((status = 200, description = "The masked key", body = MaskedByokKey),
        (status = 404, description = "Unknown provider, or no key stored", body = ErrorBody)))]
async fn get_byok(
    State(state): State<AppState>,
    caller: Caller,
    Path(slug): Path<String>,
) -> Reply<MaskedByokKey> {
    Ok(AppJson(byok::get_key(&state.byok(), &caller, &slug).await?))
}

/// Store or replace the caller's key for a provider (one per provider). Replacing resets
/// its validation; `validate: true` checks it against the provider before answering.
#[utoipa::path(put, path = "/v1/byok/{provider_slug}", tag = "byok",
    params(("provider_slug" = String, Path, description = "Provider slug, e.g. `openai`")),
    request_body = PutByokRequest,
    responses((status = 200, description = "Stored; the masked key", body = MaskedByokKey),
        (status = 400, description = "Malformed body, a key in the wrong format, or a provider without BYOK", body = ErrorBody),
        (status = 404, description = "Unknown provider", body = ErrorBody)))]
async fn put_byok(
    State(state): State<AppState>,
    caller: Caller,
    request_id: Option<Extension<RequestId>>,
    Path(slug): Path<String>,
    AppJson(body): AppJson<PutByokRequest>,
) -> Reply<MaskedByokKey> {
    let actor = actor(&caller, &request_id);
    Ok(AppJson(
        byok::put_key(&state.byok(), &actor, &slug, body).await?,
    ))
}

/// Activate or deactivate the caller's key for a provider.
#[utoipa::path(patch, path = "/v1/byok/{provider_slug}", tag = "byok",
    params(("provider_slug" = String, Path, description = "Provider slug, e.g. `openai`")),
    request_body = PatchByokRequest,
    responses((status = 200, description = "The masked key", body = MaskedByokKey),
        (status = 400, description = "`is_active` missing or not a boolean", body = ErrorBody),
        (status = 404, description = "Unknown provider, or no key stored", body = ErrorBody)))]
async fn patch_byok(
    State(state): State<AppState>,
    caller: Caller,
    request_id: Option<Extension<RequestId>>,
    Path(slug): Path<String>,
    AppJson(body): AppJson<PatchByokRequest>,
) -> Reply<MaskedByokKey> {
    let actor = actor(&caller, &request_id);
    Ok(AppJson(
        byok::set_active(&state.byok(), &actor, &slug, body).await?,
    ))
}

/// Delete the caller's key for a provider.
#[utoipa::path(delete, path = "/v1/byok/{provider_slug}", tag = "byok",
    params(("provider_slug" = String, Path, description = "Provider slug, e.g. `openai`")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "Unknown provider, or no key stored", body = ErrorBody)))]
async fn delete_byok(
    State(state): State<AppState>,
    caller: Caller,
    request_id: Option<Extension<RequestId>>,
    Path(slug): Path<String>,
) -> Result<StatusCode, ApiError> {
    let actor = actor(&caller, &request_id);
    byok::delete_key(&state.byok(), &actor, &slug).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Check the stored key against the provider's models endpoint (10 s at most) and store
/// the result (`is_validated`, `validation_error`, `last_validated_at`).
#[utoipa::path(post, path = "/v1/byok/{provider_slug}/validate", tag = "byok",
    params(("provider_slug" = String, Path, description = "Provider slug, e.g. `openai`")),
    responses((status = 200, description = "Checked; the masked key with the result", body = MaskedByokKey),
        (status = 404, description = "Unknown provider, or no key stored", body = ErrorBody),
        (status = 409, description = "The stored key can no longer be decrypted; store it again", body = ErrorBody)))]
async fn validate_byok(
    State(state): State<AppState>,
    caller: Caller,
    Path(slug): Path<String>,
) -> Reply<MaskedByokKey> {
    Ok(AppJson(
        byok::validate_key(&state.byok(), &caller, &slug).await?,
    ))
}

/// The caller's own gateway keys, revoked ones included (never a key or its hash).
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys",
    responses((status = 200, description = "The caller's gateway keys", body = GatewayKeyList)))]
async fn list_api_keys(State(state): State<AppState>, caller: Caller) -> Reply<GatewayKeyList> {
    Ok(AppJson(
        self_service::list_own_keys(&state.pool, &caller).await?,
    ))
}

/// Create a user-role gateway key for the caller's account; the key is shown only here.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys",
    request_body = CreateGatewayKeyRequest,
    responses((status = 200, description = "Created; the key, once", body = CreatedGatewayKey),
        (status = 400, description = "Bad name, or too many active keys", body = ErrorBody)))]
async fn create_api_key(
    State(state): State<AppState>,
    caller: Caller,
    request_id: Option<Extension<RequestId>>,
    AppJson(body): AppJson<CreateGatewayKeyRequest>,
) -> Reply<CreatedGatewayKey> {
    let actor = actor(&caller, &request_id);
    Ok(AppJson(
        self_service::create_own_key(&state.pool, &actor, body).await?,
    ))
}

/// Revoke one of the caller's gateway keys.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204, description = "Revoked (or already revoked)"),
        (status = 404, description = "No such key among the caller's", body = ErrorBody)))]
async fn revoke_api_key(
    State(state): State<AppState>,
    caller: Caller,
    request_id: Option<Extension<RequestId>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let actor = actor(&caller, &request_id);
    self_service::revoke_own_key(&state.pool, &state.key_cache, &actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
