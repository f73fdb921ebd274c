//! One request's run (design README, steps 3–8), shared by every entry point that spends
//! credits on a model call (chat completions, the Anthropic Messages API, embeddings; see
//! [`work`]): plan the candidates, admit (rate limits + hold, one round trip), try
//! candidates in order within one deadline, and settle — capture with one usage row per
//! attempt, or release.
//!
//! **Settlement outlives the client.** [`run`] plans in the caller's task, then runs the
//! rest (admission included) in a spawned task that the caller awaits. A client that hangs
//! up drops only the waiting caller: the run goes on to its settlement.
//! - Buffered answers: no new attempt starts once the client is gone; the attempt under
//!   way runs to its end (the provider generates, and bills, the answer whether or not
//!   anyone reads it) and is captured, or released if it fails. No hold stays active once
//!   the upstream call has ended.
//! - Streams: the run reads the upstream and hands chunks to the door through a bounded
//!   channel. When the door's body is dropped (the client left), the run stops reading the
//!   upstream at once, captures what was produced (the usage chunk if it came, else the
//!   counted tokens) and ends.
//! - Every stream ends by a deadline: the Lambda invocation's, less
//!   [`LAMBDA_DEADLINE_MARGIN`], or `SWITCHBOARD_MAX_STREAM_SECS` under `serve`. It then
//!   ends cleanly (the last chunk with `_metadata`, an error event, `[DONE]`), settled.
//! - A failed capture is retried (same ledger id, idempotent) within a short budget; if it
//!   still fails the hold stays active and the pending charge is logged as one line
//!   (`switchboard::pending_charge`), and no usage row claims it. After a capture commits,
//!   later bookkeeping (breaker, BYOK counters) is best-effort: the client gets its answer.

mod admit;
mod attempt;
mod drive;
mod settle;
mod work;

use std::time::{Duration, Instant, SystemTime};

use axum::http::HeaderMap;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub use settle::{LedgerQueues, Settled};
pub use work::{Route, estimate_prompt_tokens};

use crate::auth::Caller;
use crate::catalog::{PowerLevel, TaskType, UnknownValue};
use crate::http::{ApiError, RequestTiming};
use crate::providers::{
    ChatCompletion, ChatCompletionChunk, ChatRequest, EmbeddingList, EmbeddingRequest, Usage,
};
use crate::state::AppState;

/// A run in Lambda ends this long before the invocation deadline, so that its
/// settlement (with retries, [`settle::SETTLE_BUDGET`]) and last frames fit before it.
pub const LAMBDA_DEADLINE_MARGIN: Duration = Duration::from_secs(6);

/// The margin kept before an invocation deadline `left` away: [`LAMBDA_DEADLINE_MARGIN`],
/// or a third of the time left when a function is configured with less than 18 s (so a
/// short timeout still leaves two thirds for the provider; settlement then has less room
/// for retries).
pub fn lambda_margin(left: Duration) -> Duration {
    LAMBDA_DEADLINE_MARGIN.min(left / 3)
}

/// The invocation deadline from the Lambda context's `deadline` (milliseconds since the
/// epoch). `None` when it is not in the future: a real deadline always is while the
/// function runs, and local emulators send other values (`cargo lambda watch` sends the
/// timeout itself, `600000`), which must not end every request at once.
pub fn invocation_deadline(deadline_ms: u64) -> Option<SystemTime> {
    let deadline = SystemTime::UNIX_EPOCH + Duration::from_millis(deadline_ms);
    (deadline > SystemTime::now()).then_some(deadline)
}

/// What a door extracted from one chat request.
pub struct ChatInput {
    pub caller: Caller,
    pub request: ChatRequest,
    /// The `x-request-id`: usage rows and `_metadata` carry it.
    pub request_id: String,
    pub options: RequestOptions,
    /// `/v1/chat/completions` or `/v1/messages`, recorded on the usage rows.
    pub route: Route,
}

/// What the embeddings door extracted from one request.
pub struct EmbedInput {
    pub caller: Caller,
    pub request: EmbeddingRequest,
    pub request_id: String,
    pub options: RequestOptions,
}

/// The request's routing headers and its time limit.
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// `X-Power-Level` (else the user's default, else `balanced`).
    pub power_level: Option<PowerLevel>,
    /// `X-Task-Type` (else `chat`).
    pub task_type: Option<TaskType>,
    pub user_agent: Option<String>,
    /// When the Lambda invocation ends (from the Lambda context); `None` outside Lambda.
    pub invocation_deadline: Option<SystemTime>,
    /// Where the request's time goes (`Server-Timing`): the run adds its upstream and
    /// ledger waits. A door passes the request's own (the middleware's extension).
    pub timing: RequestTiming,
}

impl RequestOptions {
    /// Reads `X-Power-Level`, `X-Task-Type` and `User-Agent` (400 on unknown values).
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        Ok(RequestOptions {
            power_level: header_enum(headers, "x-power-level")?,
            task_type: header_enum(headers, "x-task-type")?,
            user_agent: headers
                .get(axum::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(200).collect()),
            invocation_deadline: None,
            timing: RequestTiming::default(),
        })
    }
}

fn header_enum<T: std::str::FromStr<Err = UnknownValue>>(
    headers: &HeaderMap,
    name: &'static str,
) -> Result<Option<T>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::invalid_param(name, format!("{name} is not valid text")))?;
    text.trim()
        .to_ascii_lowercase()
        .parse()
        .map(Some)
        .map_err(|e: UnknownValue| ApiError::invalid_param(name, format!("{name}: {e}")))
}

/// Which offer served the request (the `x-switchboard-provider` / `-model` headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub provider_slug: String,
    pub model_id: String,
    /// The request's `max_tokens` was above this offer's output limit and was sent (and
    /// held) at this value (`x-switchboard-max-tokens`, `_metadata.max_tokens_clamped_to`).
    pub max_tokens_clamped_to: Option<u32>,
}

/// The answer of a run.
pub enum ChatAnswer {
    Complete(Box<Completed>),
    Stream(ChatStream),
}

/// A buffered answer, settled.
pub struct Completed {
    pub routed: Routed,
    /// The answer in OpenAI's shape, its `usage` the billed usage.
    pub response: ChatCompletion,
    /// `_metadata` (design README step 8).
    pub metadata: Value,
    /// The billed usage in disjoint buckets (doors that answer in another shape, such as
    /// the Messages API, report cache reads and writes from it).
    pub usage: Usage,
}

/// An embeddings answer, settled.
pub struct EmbeddingsAnswer {
    pub routed: Routed,
    /// OpenAI's shape, its `usage` the billed input tokens.
    pub response: EmbeddingList,
    /// `_metadata`, as on a chat answer.
    pub metadata: Value,
}

/// What the run's task answers (each public entry point expects its own kind).
enum Answered {
    Chat(ChatAnswer),
    Embeddings(Box<EmbeddingsAnswer>),
}

/// A committed stream: chunks, then one [`StreamItem::End`] sent after settlement. Dropping
/// it tells the run that the client left.
pub struct ChatStream {
    pub routed: Routed,
    pub events: mpsc::Receiver<StreamItem>,
}

pub enum StreamItem {
    Chunk(ChatCompletionChunk),
    /// The last item: the stream is settled.
    End(StreamEnd),
}

pub struct StreamEnd {
    /// The billed usage.
    pub usage: Usage,
    /// `_metadata` for the last chunk.
    pub metadata: Value,
    /// Why the stream ended early (upstream failure, time limit), to send as an error event.
    pub error: Option<ApiError>,
}

/// The run's task ended without answering (it panicked): the hold releases itself.
#[derive(Debug, thiserror::Error)]
#[error("the chat run ended without an answer")]
struct RunLost;

/// The run answered another kind than its entry point asked for (a bug).
#[derive(Debug, thiserror::Error)]
#[error("the run answered another kind of request than it was given")]
struct WrongAnswer;

/// Runs one chat request to its answer; settlement continues even if the caller is dropped.
pub async fn run(state: &AppState, input: ChatInput) -> Result<ChatAnswer, ApiError> {
    let ChatInput {
        caller,
        request,
        request_id,
        options,
        route,
    } = input;
    let input = admit::Input {
        caller,
        work: work::Work::Chat(Box::new(request)),
        request_id,
        options,
        route,
    };
    match start(state, input).await? {
        Answered::Chat(answer) => Ok(answer),
        Answered::Embeddings(_) => Err(ApiError::internal(WrongAnswer)),
    }
}

/// Runs one embeddings request to its answer, through the same routing, admission,
/// fallbacks and settlement as chat.
pub async fn embed(state: &AppState, input: EmbedInput) -> Result<EmbeddingsAnswer, ApiError> {
    let EmbedInput {
        caller,
        request,
        request_id,
        options,
    } = input;
    let input = admit::Input {
        caller,
        work: work::Work::Embed(request),
        request_id,
        options,
        route: Route::Embeddings,
    };
    match start(state, input).await? {
        Answered::Embeddings(answer) => Ok(*answer),
        Answered::Chat(_) => Err(ApiError::internal(WrongAnswer)),
    }
}

async fn start(state: &AppState, input: admit::Input) -> Result<Answered, ApiError> {
    let started = Instant::now();
    input.work.validate()?;
    let run = admit::plan(state, input, started).await?;
    let (reply, answer) = oneshot::channel();
    tokio::spawn(drive::drive(run, reply));
    answer
        .await
        .unwrap_or_else(|_| Err(ApiError::internal(RunLost)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lambda_margin_is_six_seconds_or_a_third_of_a_short_timeout() {
        assert_eq!(
            lambda_margin(Duration::from_secs(120)),
            Duration::from_secs(6)
        );
        assert_eq!(
            lambda_margin(Duration::from_secs(18)),
            Duration::from_secs(6)
        );
        assert_eq!(
            lambda_margin(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
        assert_eq!(lambda_margin(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn only_a_future_invocation_deadline_counts() {
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let deadline = invocation_deadline(now_ms + 30_000).expect("a real deadline");
        let left = deadline.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(29) && left <= Duration::from_secs(30));
        assert_eq!(invocation_deadline(600_000), None, "cargo lambda watch");
        assert_eq!(invocation_deadline(now_ms - 1), None);
    }
}
