//! The keys function: a user's BYOK provider keys (`/v1/byok`) and own gateway keys
//! (`/v1/api-keys`), each scoped to the authenticated user.

use axum::Router;
use axum::routing::{delete, get, post};
use switchboard_core::http::{finish_router, not_implemented};
use switchboard_core::state::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/byok", get(not_implemented))
        .route(
            "/v1/byok/{provider_slug}",
            get(not_implemented)
                .put(not_implemented)
                .patch(not_implemented)
                .delete(not_implemented),
        )
        .route("/v1/byok/{provider_slug}/validate", post(not_implemented))
        .route("/v1/api-keys", get(not_implemented).post(not_implemented))
        .route("/v1/api-keys/{id}", delete(not_implemented))
        .with_state(state)
}

pub fn app(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    finish_router(router(state), limit)
}
