//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: the Anthropic Messages API's
//! door over the same core run as chat completions. The translation both ways is
//! `switchboard_core::inbound::anthropic_messages` (and `anthropic_stream`); errors are
//! answered in Anthropic's shape with api.md's statuses.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use switchboard_core::auth::Caller;
use switchboard_core::chat::{self, ChatAnswer, ChatInput, Route};
use switchboard_core::http::sse::event_stream;
use switchboard_core::http::{ApiError, ErrorShape, RequestId, RequestTiming};
use switchboard_core::inbound::{anthropic_messages, anthropic_stream};
use switchboard_core::state::AppState;

pub async fn messages(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    lambda: Option<Extension<lambda_http::Context>>,
    timing: Option<Extension<RequestTiming>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answered = async {
        let options = crate::run_options(&headers, lambda, timing);
        let (caller, options) = (caller?, options?);
        let request = anthropic_messages::to_chat_request(&anthropic_messages::parse(&body)?)?;
        let input = ChatInput {
            caller,
            request,
            request_id,
            options,
            route: Route::Messages,
        };
        Ok::<_, ApiError>(match chat::run(&state.chat(), input).await? {
            ChatAnswer::Complete(completed) => {
                let routed = completed.routed.clone();
                let mut answer = Json(anthropic_messages::answer(*completed)?).into_response();
                crate::routed_headers(&mut answer, &routed);
                answer
            }
            ChatAnswer::Stream(stream) => {
                let routed = stream.routed.clone();
                let frames = anthropic_stream::stream(stream);
                let mut answer = event_stream(frames, ErrorShape::Anthropic);
                crate::routed_headers(&mut answer, &routed);
                answer
            }
        })
    }
    .await;
    answered.unwrap_or_else(|error| error.into_response_shaped(ErrorShape::Anthropic))
}

/// `POST /v1/messages/count_tokens`: the prompt's estimated tokens, the routing estimate
/// the hold starts from; no upstream call, no charge. `max_tokens` is not required here.
pub async fn count_tokens(caller: Result<Caller, ApiError>, body: Bytes) -> Response {
    let counted = async {
        caller?;
        let request = anthropic_messages::count_tokens_request(&body)?;
        Ok::<_, ApiError>(chat::estimate_prompt_tokens(&request))
    }
    .await;
    match counted {
        Ok(tokens) => Json(json!({"input_tokens": tokens})).into_response(),
        Err(error) => error.into_response_shaped(ErrorShape::Anthropic),
    }
}
