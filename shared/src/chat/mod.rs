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
mod answer;
mod attempt;
mod drive;
mod error;
mod input;
mod services;
mod settle;
mod work;

use std::time::Instant;

use tokio::sync::oneshot;

pub use answer::{
    ChatAnswer, ChatStream, Completed, EmbeddingsAnswer, Routed, StreamEnd, StreamItem,
};
pub use error::ChatError;
pub use input::{
    ChatInput, EmbedInput, LAMBDA_DEADLINE_MARGIN, RequestOptions, invocation_deadline,
    lambda_margin,
};
pub use services::ChatServices;
pub use settle::{LedgerQueues, Settled};
pub use work::{Route, estimate_prompt_tokens};

use answer::Answered;

/// The run's task ended without answering (it panicked): the hold releases itself.
#[derive(Debug, thiserror::Error)]
#[error("the chat run ended without an answer")]
struct RunLost;

/// The run answered another kind than its entry point asked for (a bug).
#[derive(Debug, thiserror::Error)]
#[error("the run answered another kind of request than it was given")]
struct WrongAnswer;

/// Runs one chat request to its answer; settlement continues even if the caller is dropped.
pub async fn run(services: &ChatServices, input: ChatInput) -> Result<ChatAnswer, ChatError> {
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
    match start(services, input).await? {
        Answered::Chat(answer) => Ok(answer),
        Answered::Embeddings(_) => Err(ChatError::internal(WrongAnswer)),
    }
}

/// Runs one embeddings request to its answer, through the same routing, admission,
/// fallbacks and settlement as chat.
pub async fn embed(
    services: &ChatServices,
    input: EmbedInput,
) -> Result<EmbeddingsAnswer, ChatError> {
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
    match start(services, input).await? {
        Answered::Embeddings(answer) => Ok(*answer),
        Answered::Chat(_) => Err(ChatError::internal(WrongAnswer)),
    }
}

async fn start(services: &ChatServices, input: admit::Input) -> Result<Answered, ChatError> {
    let started = Instant::now();
    input.work.validate()?;
    let run = admit::plan(services, input, started).await?;
    let (reply, answer) = oneshot::channel();
    tokio::spawn(drive::drive(run, reply));
    answer
        .await
        .unwrap_or_else(|_| Err(ChatError::internal(RunLost)))
}
