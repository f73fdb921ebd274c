//! What a door hands to a run: the request, the caller, its routing headers and its time
//! limit (the Lambda invocation's deadline, less a margin for settlement).

use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;

use super::error::ChatError;
use super::work::Route;
use crate::auth::Caller;
use crate::catalog::{PowerLevel, TaskType, UnknownValue};
use crate::providers::{ChatRequest, EmbeddingRequest};
use crate::timing::RequestTiming;

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
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ChatError> {
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
) -> Result<Option<T>, ChatError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ChatError::invalid_param(name, format!("{name} is not valid text")))?;
    text.trim()
        .to_ascii_lowercase()
        .parse()
        .map(Some)
        .map_err(|e: UnknownValue| ChatError::invalid_param(name, format!("{name}: {e}")))
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
