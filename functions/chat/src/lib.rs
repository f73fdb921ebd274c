//! The chat function: `POST /v1/chat/completions` (a thin door over `switchboard_core::chat`,
//! which routes, admits, calls, falls back and settles), `GET /v1/models` (filtered by the
//! caller's tier) and `GET /v1/account`.

mod messages;
mod messages_sse;
mod openapi;
mod sse;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use switchboard_core::auth::Caller;
use switchboard_core::chat::{self, ChatAnswer, ChatInput, RequestOptions, Routed};
use switchboard_core::http::{ApiError, AppJson, RequestId, finish_router};
use switchboard_core::ledger;
use switchboard_core::providers::ChatRequest;
use switchboard_core::state::AppState;

/// The chat routes, for mounting (by `switchboard serve`) or wrapping with [`app`].
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/messages", post(messages::messages))
        .route("/v1/messages/count_tokens", post(messages::count_tokens))
        .route("/v1/models", get(list_models))
        .route("/v1/account", get(account))
        .with_state(state)
}

/// The chat function's OpenAPI document (`serve` merges it into its own).
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi::document()
}

/// The complete application of the chat Lambda function, with its own `/openapi.json`.
pub fn app(state: AppState) -> Router {
    let limit = state.config.server.max_body_bytes;
    let router = router(state).route("/openapi.json", get(openapi_json));
    finish_router(router, limit)
}

async fn openapi_json() -> Json<Value> {
    static DOCUMENT: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| serde_json::to_value(openapi()).unwrap_or_default());
    Json(DOCUMENT.clone())
}

async fn chat_completions(
    State(state): State<AppState>,
    caller: Caller,
    Extension(RequestId(request_id)): Extension<RequestId>,
    lambda: Option<Extension<lambda_http::Context>>,
    headers: HeaderMap,
    AppJson(request): AppJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let mut options = RequestOptions::from_headers(&headers)?;
    options.invocation_deadline =
        lambda.and_then(|Extension(context)| chat::invocation_deadline(context.deadline));
    let wants_usage = request.client_wants_stream_usage();
    let input = ChatInput {
        caller,
        request,
        request_id,
        options,
    };
    Ok(match chat::run(&state, input).await? {
        ChatAnswer::Complete(completed) => {
            let mut body = serde_json::to_value(&completed.response).map_err(ApiError::internal)?;
            body["_metadata"] = completed.metadata;
            let mut answer = Json(body).into_response();
            routed_headers(&mut answer, &completed.routed);
            answer
        }
        ChatAnswer::Stream(stream) => {
            let routed = stream.routed.clone();
            let mut answer = sse::response(stream, wants_usage);
            routed_headers(&mut answer, &routed);
            answer
        }
    })
}

/// `x-switchboard-provider` / `x-switchboard-model`: which offer answered.
fn routed_headers(response: &mut Response, routed: &Routed) {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&routed.provider_slug) {
        headers.insert(HeaderName::from_static("x-switchboard-provider"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&routed.model_id) {
        headers.insert(HeaderName::from_static("x-switchboard-model"), v);
    }
}

/// OpenAI's model list, only what the caller's tier may use: each `model_id` once, and
/// each offer also as `provider_slug/model_id` (to pin a provider).
async fn list_models(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let catalog = state
        .catalog
        .get(&state.pool)
        .await
        .map_err(ApiError::internal)?;
    let mut seen = std::collections::HashSet::new();
    let mut data = Vec::new();
    for (model, provider) in catalog.models_for_tier(caller.tier) {
        let created = model.created_at.timestamp();
        if seen.insert(model.model_id.clone()) {
            data.push(json!({"id": model.model_id, "object": "model", "created": created, "owned_by": provider.provider_slug}));
        }
        let pinned = format!("{}/{}", provider.provider_slug, model.model_id);
        if seen.insert(pinned.clone()) {
            data.push(json!({"id": pinned, "object": "model", "created": created, "owned_by": provider.provider_slug}));
        }
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn account(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let client = state
        .pool
        .get()
        .await
        .map_err(switchboard_core::db::DbError::from)?;
    let balance = ledger::account_balance(&**client, &caller.user_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no account for this key".into()))?;
    Ok(Json(json!({
        "user_id": balance.user_id,
        "tier": balance.tier,
        "status": balance.status,
        "credits_balance": balance.credits_balance.normalize().to_string(),
        "credits_held": balance.credits_held.normalize().to_string(),
        "month_spend": balance.month_spend.normalize().to_string(),
        "monthly_cap": balance.monthly_cap.map(|c| c.normalize().to_string()),
    })))
}
