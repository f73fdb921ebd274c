//! `switchboard`: every function's routes in one process (local development, containers),
//! the embedded default database, and the migration command.

pub mod embedded_pg;
pub mod migrate_step;
pub mod rewrap;
pub mod serve;

use std::sync::LazyLock;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use switchboard_core::http::{AdminCaller, ApiError, finish_router};
use switchboard_core::state::AppState;

/// Every route of every function, plus `/healthz` and `/openapi.json`.
pub fn app(state: AppState) -> Router {
    let limit = state.config.server.max_body_bytes;
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .merge(switchboard_chat::router(state.clone()))
        .merge(switchboard_admin::router(state.clone()))
        .merge(switchboard_keys::router(state));
    finish_router(router, limit)
}

/// One OpenAPI document for everything `serve` mounts: each function's own document,
/// merged. A function contributes by exposing `pub fn openapi() -> utoipa::openapi::OpenApi`
/// and being listed here.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("Switchboard")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Every route `switchboard serve` mounts. Errors use OpenAI's shape.",
                ))
                .build(),
        )
        .build();
    // One line per function.
    doc.merge(switchboard_chat::openapi());
    doc.merge(switchboard_admin::openapi());
    doc.merge(switchboard_keys::openapi());
    doc
}

async fn openapi_json() -> axum::Json<serde_json::Value> {
    static DOCUMENT: LazyLock<serde_json::Value> =
        LazyLock::new(|| serde_json::to_value(openapi()).unwrap_or_default());
    axum::Json(DOCUMENT.clone())
}

/// `GET /metrics` (api.md, "Metrics and timing"): the Prometheus text format, for the
/// admin key or `SWITCHBOARD_METRICS_TOKEN`.
async fn metrics(
    State(state): State<AppState>,
    mut parts: axum::http::request::Parts,
) -> Result<Response, ApiError> {
    let token_ok = match (
        &state.config.server.metrics_token,
        switchboard_core::auth::presented_key(&parts.headers),
    ) {
        (Some(token), Some(presented)) => {
            switchboard_core::metrics::is_metrics_token(presented, token)
        }
        _ => false,
    };
    if !token_ok {
        AdminCaller::from_request_parts(&mut parts, &state).await?;
    }
    let text =
        switchboard_core::metrics::render(&switchboard_core::metrics::pool_lines(&state.pool))
            .ok_or_else(|| ApiError::NotFound("metrics are off (SWITCHBOARD_METRICS=0)".into()))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// 200 with the database status when Postgres answers, else 503.
async fn healthz(State(state): State<AppState>) -> Response {
    let probe = tokio::time::timeout(Duration::from_secs(2), async {
        let client = state.pool.get().await.map_err(|e| e.to_string())?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    })
    .await;
    let version = env!("CARGO_PKG_VERSION");
    match probe {
        Ok(Ok(())) => (
            StatusCode::OK,
            axum::Json(json!({"status": "ok", "database": "ok", "version": version})),
        )
            .into_response(),
        Ok(Err(error)) => {
            tracing::warn!(%error, "health probe: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(
                    json!({"status": "degraded", "database": "unreachable", "version": version}),
                ),
            )
                .into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "degraded", "database": "timeout", "version": version})),
        )
            .into_response(),
    }
}
