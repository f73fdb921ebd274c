//! `POST /v1/embeddings` (OpenAI's shape): a thin door over `switchboard_core::chat::embed`,
//! which routes to embedding models only and bills through the same ledger as chat.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use switchboard_core::auth::Caller;
use switchboard_core::chat::{self, EmbedInput};
use switchboard_core::http::{ApiError, AppJson, RequestId, RequestTiming};
use switchboard_core::providers::EmbeddingRequest;
use switchboard_core::state::AppState;

pub async fn embeddings(
    State(state): State<AppState>,
    caller: Caller,
    Extension(RequestId(request_id)): Extension<RequestId>,
    lambda: Option<Extension<lambda_http::Context>>,
    timing: Option<Extension<RequestTiming>>,
    headers: HeaderMap,
    AppJson(request): AppJson<EmbeddingRequest>,
) -> Result<Response, ApiError> {
    let options = crate::run_options(&headers, lambda, timing)?;
    let input = EmbedInput {
        caller,
        request,
        request_id,
        options,
    };
    let answer = chat::embed(&state.chat(), input).await?;
    let mut body = serde_json::to_value(&answer.response).map_err(ApiError::internal)?;
    body["_metadata"] = answer.metadata;
    let mut response = Json(body).into_response();
    crate::routed_headers(&mut response, &answer.routed);
    Ok(response)
}
