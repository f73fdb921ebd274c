//! The Responses API's stream: `response.created`, `response.in_progress`, then per output
//! item `response.output_item.added`, its content (`response.content_part.added`,
//! `response.output_text.delta` / `.done`, `response.content_part.done` for a message;
//! `response.function_call_arguments.delta` / `.done` for a function call;
//! `response.reasoning_summary_part.added`, `response.reasoning_summary_text.delta` /
//! `.done`, `response.reasoning_summary_part.done` for reasoning) and
//! `response.output_item.done`; then `response.completed` with the usage charged and
//! `_metadata` — after the response is stored, so a continuation right after it finds it —
//! or `response.failed` when the stream broke after it began. Every event carries its
//! `type` and `sequence_number`. The run settles before it sends its end.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use serde_json::{Value, json};

use super::openai_responses::{ResponseShell, message_item, reasoning_item};
use super::{FrameStream, SseFrame};
use crate::chat::{ChatError, ChatStream, StreamEnd, StreamItem};
use crate::providers::REASONING_CONTENT;
use crate::responses::new_id;

/// Stores the finished response (its object and output items) before
/// `response.completed` goes out; answers whether it was stored.
pub type Store =
    Box<dyn FnOnce(Value, Vec<Value>) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send>;

/// The output item being streamed.
enum Open {
    None,
    Reasoning {
        id: String,
        text: String,
    },
    Message {
        id: String,
        text: String,
    },
    /// A function call, by its index in the chunks' `tool_calls`.
    Call {
        index: u64,
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

struct Writer {
    stream: ChatStream,
    shell: ResponseShell,
    store: Option<Store>,
    model: String,
    sequence: u64,
    open: Open,
    /// Finished output items.
    output: Vec<Value>,
    /// A native provider's own output items (they win over the translation).
    native_output: Option<Vec<Value>>,
    finish_reason: Option<String>,
    out: VecDeque<SseFrame>,
    done: bool,
}

impl Writer {
    fn emit(&mut self, kind: &'static str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        self.out.push_back(SseFrame::event(kind, &data));
    }

    fn output_index(&self) -> usize {
        self.output.len()
    }

    fn close(&mut self) {
        let index = self.output_index();
        match std::mem::replace(&mut self.open, Open::None) {
            Open::None => {}
            Open::Reasoning { id, text } => {
                let part = json!({"type": "summary_text", "text": text});
                self.emit(
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0, "text": text}),
                );
                self.emit(
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0, "part": part}),
                );
                let item = reasoning_item(&id, &text);
                self.emit(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
                self.output.push(item);
            }
            Open::Message { id, text } => {
                self.emit(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
                );
                self.emit(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}}),
                );
                let item = message_item(&id, &text, "completed");
                self.emit(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
                self.output.push(item);
            }
            Open::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            } => {
                self.emit(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "arguments": arguments, "name": name}),
                );
                let item = self
                    .shell
                    .function_call(&id, &call_id, &name, &arguments, "completed");
                self.emit(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
                self.output.push(item);
            }
        }
    }

    fn reasoning(&mut self, delta: &str) {
        if !matches!(self.open, Open::Reasoning { .. }) {
            self.close();
            let id = new_id("rs");
            let index = self.output_index();
            self.emit(
                "response.output_item.added",
                json!({"output_index": index, "item": {"type": "reasoning", "id": id, "summary": []}}),
            );
            self.emit(
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": index, "summary_index": 0,
                       "part": {"type": "summary_text", "text": ""}}),
            );
            self.open = Open::Reasoning {
                id,
                text: String::new(),
            };
        }
        let index = self.output_index();
        if let Open::Reasoning { id, text } = &mut self.open {
            text.push_str(delta);
            let id = id.clone();
            self.emit(
                "response.reasoning_summary_text.delta",
                json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": delta}),
            );
        }
    }

    fn text(&mut self, delta: &str) {
        if !matches!(self.open, Open::Message { .. }) {
            self.close();
            let id = new_id("msg");
            let index = self.output_index();
            self.emit(
                "response.output_item.added",
                json!({"output_index": index, "item": {"type": "message", "id": id,
                       "status": "in_progress", "role": "assistant", "content": []}}),
            );
            self.emit(
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            );
            self.open = Open::Message {
                id,
                text: String::new(),
            };
        }
        let index = self.output_index();
        if let Open::Message { id, text } = &mut self.open {
            text.push_str(delta);
            let id = id.clone();
            self.emit(
                "response.output_text.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": []}),
            );
        }
    }

    fn call(&mut self, call: &Value) {
        let index = call["index"].as_u64().unwrap_or(0);
        let same = matches!(&self.open, Open::Call { index: open, .. } if *open == index);
        if !same {
            self.close();
            let id = new_id("fc");
            let call_id = call["id"]
                .as_str()
                .map_or_else(|| new_id("call"), str::to_string);
            let name = call["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let item = self
                .shell
                .function_call(&id, &call_id, &name, "", "in_progress");
            let output_index = self.output_index();
            self.emit(
                "response.output_item.added",
                json!({"output_index": output_index, "item": item}),
            );
            self.open = Open::Call {
                index,
                id,
                call_id,
                name,
                arguments: String::new(),
            };
        }
        let delta = call["function"]["arguments"].as_str().unwrap_or_default();
        let output_index = self.output_index();
        if !delta.is_empty()
            && let Open::Call { id, arguments, .. } = &mut self.open
        {
            arguments.push_str(delta);
            let id = id.clone();
            self.emit(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": output_index, "delta": delta}),
            );
        }
    }

    fn chunk(&mut self, chunk: &crate::providers::ChatCompletionChunk) {
        if let Some(Value::Array(items)) = &chunk.native_output {
            self.native_output = Some(items.clone());
        }
        let value = serde_json::to_value(chunk).unwrap_or(Value::Null);
        let choice = &value["choices"][0];
        if let Some(reasoning) = choice["delta"][REASONING_CONTENT]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            self.reasoning(reasoning);
        }
        if let Some(text) = choice["delta"]["content"]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            self.text(text);
        }
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            self.call(call);
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(reason.to_string());
        }
    }

    async fn end(&mut self, end: StreamEnd) {
        self.close();
        let output = self
            .native_output
            .take()
            .unwrap_or_else(|| self.output.clone());
        if let Some(error) = end.error {
            self.failed(&output, &error);
            return;
        }
        let mut response = self.shell.finished(
            &self.model,
            &output,
            &end.usage,
            self.finish_reason.as_deref(),
            end.metadata,
        );
        if let Some(store) = self.store.take() {
            // Written before `response.completed`: a continuation right after finds it.
            if !store(response.clone(), output).await {
                response["store"] = json!(false);
            }
        }
        self.emit("response.completed", json!({"response": response}));
    }

    fn failed(&mut self, output: &[Value], error: &ChatError) {
        let mut response = self.shell.object("failed", &self.model, output, None);
        let code = match error {
            ChatError::UpstreamTimeout(_) => "timeout",
            ChatError::RateLimited { .. } => "rate_limit_exceeded",
            _ => "server_error",
        };
        response["error"] = json!({"code": code, "message": error.to_string()});
        self.emit("response.failed", json!({"response": response}));
    }

    async fn next(&mut self) -> Option<SseFrame> {
        loop {
            if let Some(frame) = self.out.pop_front() {
                return Some(frame);
            }
            if self.done {
                return None;
            }
            match self.stream.events.recv().await {
                Some(StreamItem::Chunk(chunk)) => self.chunk(&chunk),
                Some(StreamItem::End(end)) => {
                    self.done = true;
                    self.end(end).await;
                }
                None => {
                    self.done = true;
                    self.close();
                    let output = self.output.clone();
                    self.failed(
                        &output,
                        &ChatError::Upstream("the stream ended without its final event".into()),
                    );
                }
            }
        }
    }
}

/// The stream's events (see the module docs); `store` writes the finished response
/// before `response.completed` (absent when the request said `store: false`).
pub fn stream(stream: ChatStream, shell: ResponseShell, store: Option<Store>) -> FrameStream {
    let model = stream.routed.model_id.clone();
    let mut writer = Writer {
        stream,
        shell,
        store,
        model,
        sequence: 0,
        open: Open::None,
        output: Vec::new(),
        native_output: None,
        finish_reason: None,
        out: VecDeque::new(),
        done: false,
    };
    let created = writer.shell.object("in_progress", &writer.model, &[], None);
    writer.emit("response.created", json!({"response": created}));
    writer.emit("response.in_progress", json!({"response": created}));
    Box::pin(futures_util::stream::unfold(
        writer,
        |mut writer| async move {
            let frame = writer.next().await?;
            Some((frame, writer))
        },
    ))
}
