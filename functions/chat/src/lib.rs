//! The chat function: `POST /v1/chat/completions`, `GET /v1/models`, `GET /v1/account`.

use axum::Router;
use axum::routing::{get, post};
use switchboard_core::http::{finish_router, not_implemented};
use switchboard_core::state::AppState;

/// The chat routes, for mounting (by `switchboard serve`) or wrapping with [`app`].
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(not_implemented))
        .route("/v1/models", get(not_implemented))
        .route("/v1/account", get(not_implemented))
        .with_state(state)
}

/// The complete application of the chat Lambda function.
pub fn app(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    finish_router(router(state), limit)
}
