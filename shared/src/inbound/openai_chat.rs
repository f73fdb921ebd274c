//! OpenAI Chat Completions, inbound: the request is the core's own
//! ([`crate::providers::ChatRequest`]); the answer goes back as the completion with
//! `_metadata`, a stream as `data: {...}` chunks, then the last chunk (`choices: []`,
//! `_metadata`, and `usage` when the client asked for it), an error frame when the stream
//! ended early, and `data: [DONE]`. The run settles before it sends its end, so `[DONE]`
//! always follows the settlement.
//!
//! Also OpenAI's model list (`GET /v1/models`).

use std::collections::VecDeque;

use serde_json::{Value, json};

use super::{FrameStream, SseFrame};
use crate::catalog::{Model, Provider};
use crate::chat::{ChatError, ChatStream, Completed, StreamItem};

/// The completion in OpenAI's shape, with `_metadata`.
pub fn answer(completed: Completed) -> Result<Value, ChatError> {
    let mut body = serde_json::to_value(&completed.response).map_err(ChatError::internal)?;
    body["_metadata"] = completed.metadata;
    Ok(body)
}

/// The shape (id, created, model) of the stream's chunks, for the last one.
#[derive(Default)]
struct Shape {
    id: String,
    created: u64,
    model: String,
}

struct Writer {
    stream: ChatStream,
    wants_usage: bool,
    shape: Option<Shape>,
    /// Frames ready to go out.
    out: VecDeque<SseFrame>,
    done: bool,
}

impl Writer {
    async fn next_frame(&mut self) -> Option<SseFrame> {
        if let Some(frame) = self.out.pop_front() {
            return Some(frame);
        }
        if self.done {
            return None;
        }
        match self.stream.events.recv().await {
            Some(StreamItem::Chunk(chunk)) => {
                if self.shape.is_none() {
                    self.shape = Some(Shape {
                        id: chunk.id.clone(),
                        created: chunk.created,
                        model: chunk.model.clone(),
                    });
                }
                Some(SseFrame::data(&chunk))
            }
            Some(StreamItem::End(end)) => {
                self.done = true;
                let shape = self.shape.take().unwrap_or_default();
                let mut last = json!({
                    "id": shape.id,
                    "object": "chat.completion.chunk",
                    "created": shape.created,
                    "model": shape.model,
                    "choices": [],
                    "_metadata": end.metadata,
                });
                if self.wants_usage {
                    last["usage"] =
                        serde_json::to_value(end.usage.to_openai()).unwrap_or(Value::Null);
                }
                if let Some(error) = end.error {
                    self.out.push_back(SseFrame::Error(error));
                }
                self.out.push_back(SseFrame::Done);
                Some(SseFrame::data(&last))
            }
            None => {
                // The run ended without its end (it could not send it in time): say so.
                self.done = true;
                self.out.push_back(SseFrame::Done);
                Some(SseFrame::Error(ChatError::Upstream(
                    "the stream ended without its final chunk".into(),
                )))
            }
        }
    }
}

/// The stream's frames (see the module docs).
pub fn stream(stream: ChatStream, wants_usage: bool) -> FrameStream {
    let writer = Writer {
        stream,
        wants_usage,
        shape: None,
        out: VecDeque::new(),
        done: false,
    };
    Box::pin(futures_util::stream::unfold(
        writer,
        |mut writer| async move {
            let frame = writer.next_frame().await?;
            Some((frame, writer))
        },
    ))
}

/// `GET /v1/models` in OpenAI's list shape: each offer as given (its id, then its
/// `provider_slug/model_id`), with its `model_type`.
pub fn model_list<'a>(models: impl Iterator<Item = (&'a str, &'a Model, &'a Provider)>) -> Value {
    let data: Vec<Value> = models
        .map(|(id, model, provider)| {
            json!({
                "id": id,
                "object": "model",
                "created": model.created_at.timestamp(),
                "owned_by": provider.provider_slug,
                "model_type": model.model_type,
            })
        })
        .collect();
    json!({"object": "list", "data": data})
}
