//! The admin function: providers, models, routing rules, users, credits, gateway keys,
//! usage and audit log, all behind an admin-role key.

use axum::Router;
use axum::routing::{MethodRouter, delete, get, post};
use switchboard_core::http::{finish_router, not_implemented};
use switchboard_core::state::AppState;

fn crud_collection() -> MethodRouter<AppState> {
    get(not_implemented).post(not_implemented)
}

fn crud_item() -> MethodRouter<AppState> {
    get(not_implemented)
        .patch(not_implemented)
        .delete(not_implemented)
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/admin/providers", crud_collection())
        .route("/admin/providers/{id}", crud_item())
        .route("/admin/providers/{id}/health", get(not_implemented))
        .route("/admin/providers/{id}/test", post(not_implemented))
        .route("/admin/models", crud_collection())
        .route("/admin/models/{id}", crud_item())
        .route("/admin/routing-rules", crud_collection())
        .route("/admin/routing-rules/{id}", crud_item())
        .route("/admin/users", crud_collection())
        .route(
            "/admin/users/{id}",
            get(not_implemented).patch(not_implemented),
        )
        .route("/admin/users/{id}/credits", post(not_implemented))
        .route("/admin/users/{id}/ledger", get(not_implemented))
        .route("/admin/users/{id}/api-keys", crud_collection())
        .route("/admin/api-keys/{id}", delete(not_implemented))
        .route("/admin/usage", get(not_implemented))
        .route("/admin/usage/summary", get(not_implemented))
        .route("/admin/audit-log", get(not_implemented))
        .route("/admin/health-check", post(not_implemented))
        .with_state(state)
}

pub fn app(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    finish_router(router(state), limit)
}
