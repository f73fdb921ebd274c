//! What a run answers: a buffered completion or a committed stream (chunks, then its end
//! after settlement), an embeddings list, and which offer served it.

use serde_json::Value;
use tokio::sync::mpsc;

use super::error::ChatError;
use crate::providers::{ChatCompletion, ChatCompletionChunk, EmbeddingList, Usage};

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
pub(super) enum Answered {
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
    pub error: Option<ChatError>,
}
