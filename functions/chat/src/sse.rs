//! A committed stream written as OpenAI's SSE: each chunk as `data: {...}`, then the last
//! chunk (`choices: []`, `_metadata`, and `usage` when the client asked for it), an
//! `event: error` frame when the stream ended early, and `data: [DONE]`. The run settles
//! before it sends its end, so `[DONE]` always follows the settlement. Dropping the body
//! (the client left) drops the receiver, which tells the run to stop reading upstream.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use switchboard_core::chat::{ChatStream, StreamItem};
use switchboard_core::http::ApiError;

const DONE: &[u8] = b"data: [DONE]\n\n";

fn frame(value: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("data: {json}\n\n"))
}

fn error_frame(error: &ApiError) -> Bytes {
    Bytes::from(format!("event: error\ndata: {}\n\n", error.body()))
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
    /// Frames ready to go out after the end.
    tail: Vec<Bytes>,
    done: bool,
}

impl Writer {
    async fn next_frame(&mut self) -> Option<Bytes> {
        if !self.tail.is_empty() {
            return Some(self.tail.remove(0));
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
                Some(frame(&chunk))
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
                if let Some(error) = &end.error {
                    self.tail.push(error_frame(error));
                }
                self.tail.push(Bytes::from_static(DONE));
                Some(frame(&last))
            }
            None => {
                // The run ended without its end (it could not send it in time): say so.
                self.done = true;
                self.tail.push(Bytes::from_static(DONE));
                Some(error_frame(&ApiError::Upstream(
                    "the stream ended without its final chunk".into(),
                )))
            }
        }
    }
}

pub fn response(stream: ChatStream, wants_usage: bool) -> Response {
    let writer = Writer {
        stream,
        wants_usage,
        shape: None,
        tail: Vec::new(),
        done: false,
    };
    let body = futures_util::stream::unfold(writer, |mut writer| async move {
        let frame = writer.next_frame().await?;
        Some((Ok::<Bytes, Infallible>(frame), writer))
    });
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    response
}
