//! The chat function: `POST /v1/chat/completions`, `POST /v1/messages` and
//! `POST /v1/embeddings` (thin doors over `switchboard_core::chat`, which routes, admits,
//! calls, falls back and settles), `GET /v1/models` (filtered by the caller's tier, in
//! OpenAI's or Anthropic's list shape) and `GET /v1/account`.
//!
//! Under Lambda, a capture that cannot commit within its retry budget is kept in the
//! pending-charge queue ([`with_pending_charge_queue`]) and written by the billing-export
//! function once the database is back.

mod embeddings;
mod messages;
mod openapi;
mod responses;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, on};
use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use switchboard_core::auth::Caller;
use switchboard_core::chat::{self, ChatAnswer, ChatInput, RequestOptions, Route, Routed};
use switchboard_core::credentials::AwsContext;
use switchboard_core::http::sse::event_stream;
use switchboard_core::http::{
    ApiError, AppJson, ErrorShape, RequestId, RequestTiming, finish_router,
};
use switchboard_core::inbound::{anthropic_messages, openai_chat};
use switchboard_core::ledger;
use switchboard_core::providers::ChatRequest;
use switchboard_core::state::AppState;

/// Every chat route: its method, path and handler. [`router`] mounts exactly these and
/// [`route_list`] names them, so the list cannot drift from the router.
fn routes() -> [(Method, &'static str, MethodRouter<AppState>); 10] {
    // The method is written once per route, for the list and the router alike.
    macro_rules! route {
        ($method:ident $path:literal => $handler:expr) => {
            (Method::$method, $path, on(MethodFilter::$method, $handler))
        };
    }
    [
        route!(POST "/v1/chat/completions" => chat_completions),
        route!(POST "/v1/messages" => messages::messages),
        route!(POST "/v1/messages/count_tokens" => messages::count_tokens),
        route!(POST "/v1/responses" => responses::create),
        route!(GET "/v1/responses/{id}" => responses::get),
        route!(DELETE "/v1/responses/{id}" => responses::delete),
        route!(GET "/v1/responses/{id}/input_items" => responses::input_items),
        route!(POST "/v1/embeddings" => embeddings::embeddings),
        route!(GET "/v1/models" => list_models),
        route!(GET "/v1/account" => account),
    ]
}

/// The chat routes, for mounting (by `switchboard serve`) or wrapping with [`app`].
pub fn router(state: AppState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| {
            router.route(path, handler)
        })
        .with_state(state)
}

/// Every (method, path) [`router`] serves (the SAM template's test routes each one through
/// API Gateway to this function).
pub fn route_list() -> Vec<(Method, String)> {
    routes()
        .into_iter()
        .map(|(method, path, _)| (method, path.to_string()))
        .collect()
}

/// The chat function's OpenAPI document (`serve` merges it into its own).
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi::document()
}

/// Attaches the pending-charge queue (`SWITCHBOARD_PENDING_CHARGES_QUEUE_URL`, through the
/// SDK configuration of `aws`) to `state`, when one is configured: the chat function's
/// captures that cannot commit are then sent there (`ledger::queue`) before the answer
/// ends. Without it they are only logged, as `switchboard::pending_charge` lines.
pub async fn with_pending_charge_queue(state: AppState, aws: &AwsContext) -> AppState {
    let Some(url) = state.config.ledger.pending_charges_queue_url.clone() else {
        if state.config.server.in_lambda {
            tracing::warn!(
                "SWITCHBOARD_PENDING_CHARGES_QUEUE_URL is not set: a capture that cannot commit is only logged"
            );
        }
        return state;
    };
    let queue = ledger::SqsPendingCharges::new(aws.sdk_config().await, url);
    tracing::info!(
        queue = queue.queue_url(),
        "captures that cannot commit are kept in the pending-charge queue"
    );
    state.with_pending_charges(std::sync::Arc::new(queue))
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
    timing: Option<Extension<RequestTiming>>,
    headers: HeaderMap,
    AppJson(request): AppJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let options = run_options(&headers, lambda, timing)?;
    let wants_usage = request.client_wants_stream_usage();
    let input = ChatInput {
        caller,
        request,
        request_id,
        options,
        route: Route::ChatCompletions,
    };
    Ok(match chat::run(&state.chat(), input).await? {
        ChatAnswer::Complete(completed) => {
            let routed = completed.routed.clone();
            let mut answer = Json(openai_chat::answer(*completed)?).into_response();
            routed_headers(&mut answer, &routed);
            answer
        }
        ChatAnswer::Stream(stream) => {
            let routed = stream.routed.clone();
            let frames = openai_chat::stream(stream, wants_usage);
            let mut answer = event_stream(frames, ErrorShape::OpenAi);
            routed_headers(&mut answer, &routed);
            answer
        }
    })
}

/// The run's options for one request, as every door builds them: the routing headers, the
/// Lambda invocation's deadline and the request's `Server-Timing` counters.
fn run_options(
    headers: &HeaderMap,
    lambda: Option<Extension<lambda_http::Context>>,
    timing: Option<Extension<RequestTiming>>,
) -> Result<RequestOptions, ApiError> {
    let mut options = RequestOptions::from_headers(headers)?;
    options.invocation_deadline =
        lambda.and_then(|Extension(context)| chat::invocation_deadline(context.deadline));
    if let Some(Extension(timing)) = timing {
        options.timing = timing;
    }
    Ok(options)
}

/// `x-switchboard-provider` / `x-switchboard-model`: which offer answered; and
/// `x-switchboard-max-tokens` when the request's `max_tokens` was clamped to its limit (on
/// a stream, the only place that says so before the last chunk).
fn routed_headers(response: &mut Response, routed: &Routed) {
    let headers = response.headers_mut();
    if let Some(clamped_to) = routed.max_tokens_clamped_to {
        headers.insert(
            HeaderName::from_static("x-switchboard-max-tokens"),
            HeaderValue::from(clamped_to),
        );
    }
    if let Ok(v) = HeaderValue::from_str(&routed.provider_slug) {
        headers.insert(HeaderName::from_static("x-switchboard-provider"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&routed.model_id) {
        headers.insert(HeaderName::from_static("x-switchboard-model"), v);
    }
}

/// The model list, only what the caller's tier may use. OpenAI's shape by default: each
/// `model_id` once and each offer also as `provider_slug/model_id` (to pin a provider),
/// with its `model_type` (`chat` or `embedding`). With an `anthropic-version` header,
/// Anthropic's shape.
async fn list_models(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(page): Query<anthropic_messages::ModelPage>,
) -> Result<Response, ApiError> {
    let catalog = state.catalog.get(&state.pool).await?;
    let mut seen = std::collections::HashSet::new();
    let mut models = Vec::new();
    for (model, provider) in catalog.models_for_tier(caller.tier) {
        let pinned = format!("{}/{}", provider.provider_slug, model.model_id);
        for id in [model.model_id.clone(), pinned] {
            if seen.insert(id.clone()) {
                models.push((id, model, provider));
            }
        }
    }
    let listed = models
        .iter()
        .map(|(id, m, p)| (id.as_str(), m.as_ref(), p.as_ref()));
    if headers.contains_key("anthropic-version") {
        let chat_models = listed.map(|(id, model, _)| (id, model));
        return Ok(Json(anthropic_messages::model_list(chat_models, &page)?).into_response());
    }
    Ok(Json(openai_chat::model_list(listed)).into_response())
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
        // What the presented key may do (the console picks its views by it).
        "key_role": if caller.is_admin() { "admin" } else { "user" },
    })))
}
