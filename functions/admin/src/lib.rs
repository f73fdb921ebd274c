//! The admin function: providers, models, routing rules, users, credits, gateway keys,
//! usage and audit log, all behind an admin-role key (401 without a valid key, 403 with a
//! user key). Handlers extract and delegate to `switchboard_core::admin`; every write is
//! audit-logged in its own transaction.
//!
//! The routes and the OpenAPI document come from the same list (`routes()`), so every
//! mounted route is documented. `switchboard serve` merges [`openapi`] into its
//! `/openapi.json`; this function's own Lambda serves it at `/openapi.json` too.

mod accounts;
mod billing;
mod catalog;
pub mod console;
pub mod extract;
pub mod openapi;
mod reports;

use std::sync::LazyLock;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use switchboard_core::db::DbError;
use switchboard_core::http::{ApiError, AppJson, finish_router};
use switchboard_core::state::AppState;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) type Reply<T> = Result<AppJson<T>, ApiError>;

/// Every admin route with its handler and its OpenAPI operation.
fn routes() -> OpenApiRouter<AppState> {
    use accounts::*;
    use billing::*;
    use catalog::*;
    use reports::*;
    OpenApiRouter::with_openapi(openapi::AdminDoc::openapi())
        .routes(routes!(list_providers, create_provider))
        .routes(routes!(get_provider, update_provider, delete_provider))
        .routes(routes!(provider_health))
        .routes(routes!(test_provider))
        .routes(routes!(run_health_check))
        .routes(routes!(list_models, create_model))
        .routes(routes!(get_model, update_model, delete_model))
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(get_rule, update_rule, delete_rule))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user))
        .routes(routes!(credit_user))
        .routes(routes!(user_ledger))
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(revoke_api_key))
        .routes(routes!(list_usage))
        .routes(routes!(usage_summary))
        .routes(routes!(list_audit_log))
        .routes(routes!(export_backlog, export_now))
        .routes(routes!(export_retry))
}

/// The admin routes, for mounting (by `switchboard serve`) or wrapping with [`app`].
pub fn router(state: AppState) -> Router {
    let (router, _) = routes().split_for_parts();
    router.with_state(state).merge(console::router())
}

/// Every (method, path) [`router`] serves: each documented route and the console's (the
/// SAM template's test routes each one through API Gateway to this function).
pub fn route_list() -> Vec<(axum::http::Method, String)> {
    let mut list = openapi::operations(&routes().into_openapi());
    list.extend(console::route_list());
    list
}

/// The admin function's OpenAPI document (every route, request and response).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes().into_openapi();
    openapi::finish(&mut doc);
    doc
}

/// The complete application of the admin Lambda function, with its own `/openapi.json`.
pub fn app(state: AppState) -> Router {
    let limit = state.config.server.max_body_bytes;
    let router = router(state).route("/openapi.json", get(openapi_json));
    finish_router(router, limit)
}

async fn openapi_json() -> impl IntoResponse {
    static DOCUMENT: LazyLock<serde_json::Value> =
        LazyLock::new(|| serde_json::to_value(openapi()).unwrap_or_default());
    axum::Json(DOCUMENT.clone())
}

/// A pooled connection (503 when the database cannot be reached in time).
pub(crate) async fn db(state: &AppState) -> Result<deadpool_postgres::Object, ApiError> {
    state
        .pool
        .get()
        .await
        .map_err(|e| ApiError::from(DbError::from(e)))
}

/// Called after every committed catalog write (providers, models, routing rules), so this
/// instance routes with the change at once; other instances reload within the catalog
/// cache's TTL.
pub(crate) fn catalog_changed(state: &AppState) {
    state.catalog.invalidate();
}
