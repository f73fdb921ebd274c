//! The Anthropic Messages API's stream: `message_start`, `ping`, then per content block
//! `content_block_start`, `content_block_delta` (`thinking_delta` and `signature_delta`,
//! `text_delta`, or `input_json_delta` for a tool call's arguments) and
//! `content_block_stop`, then `message_delta` (stop reason and usage, plus `_metadata`) and
//! `message_stop`. A stream that ended early ends with an `error` event instead. The run
//! settles before it sends its end, so the last event always follows the settlement.

use std::collections::VecDeque;

use serde_json::{Value, json};

use super::anthropic_messages::stop_reason;
use super::{FrameStream, SseFrame};
use crate::chat::{ChatError, ChatStream, StreamItem};
use crate::providers::{REASONING_CONTENT, THINKING_BLOCKS};

#[derive(PartialEq)]
enum Block {
    None,
    Text,
    Thinking,
    /// A tool call, by its index in OpenAI's `tool_calls`.
    Tool(u64),
}

struct Writer {
    stream: ChatStream,
    model: String,
    started: bool,
    block: Block,
    /// The index of the current content block.
    index: i64,
    stop_reason: &'static str,
    out: VecDeque<SseFrame>,
    done: bool,
}

impl Writer {
    fn start(&mut self, id: &str) {
        if self.started {
            return;
        }
        self.started = true;
        self.out.push_back(SseFrame::event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        ));
        self.out
            .push_back(SseFrame::event("ping", &json!({"type": "ping"})));
    }

    fn close_block(&mut self) {
        if self.block != Block::None {
            self.out.push_back(SseFrame::event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.index}),
            ));
            self.block = Block::None;
        }
    }

    fn open(&mut self, block: Block, content_block: Value) {
        self.close_block();
        self.index += 1;
        self.block = block;
        self.out.push_back(SseFrame::event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.index, "content_block": content_block}),
        ));
    }

    fn delta(&mut self, delta: Value) {
        self.out.push_back(SseFrame::event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": self.index, "delta": delta}),
        ));
    }

    fn chunk(&mut self, chunk: &Value) {
        self.start(chunk["id"].as_str().unwrap_or_default());
        let choice = &chunk["choices"][0];
        if let Some(thinking) = choice["delta"][REASONING_CONTENT]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            if self.block != Block::Thinking {
                self.open(
                    Block::Thinking,
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                );
            }
            self.delta(json!({"type": "thinking_delta", "thinking": thinking}));
        }
        for block in choice["delta"][THINKING_BLOCKS]
            .as_array()
            .into_iter()
            .flatten()
        {
            match block["type"].as_str() {
                Some("thinking") => {
                    if self.block != Block::Thinking {
                        self.open(
                            Block::Thinking,
                            json!({"type": "thinking", "thinking": "", "signature": ""}),
                        );
                    }
                    if let Some(signature) = block["signature"].as_str().filter(|s| !s.is_empty()) {
                        self.delta(json!({"type": "signature_delta", "signature": signature}));
                    }
                }
                Some("redacted_thinking") => {
                    self.open(Block::None, block.clone());
                    self.out.push_back(SseFrame::event(
                        "content_block_stop",
                        &json!({"type": "content_block_stop", "index": self.index}),
                    ));
                }
                _ => {}
            }
        }
        if let Some(text) = choice["delta"]["content"]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            if self.block != Block::Text {
                self.open(Block::Text, json!({"type": "text", "text": ""}));
            }
            self.delta(json!({"type": "text_delta", "text": text}));
        }
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let n = call["index"].as_u64().unwrap_or(0);
            if self.block != Block::Tool(n) {
                self.open(
                    Block::Tool(n),
                    json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": {}}),
                );
            }
            if let Some(arguments) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                self.delta(json!({"type": "input_json_delta", "partial_json": arguments}));
            }
        }
        if let Some(reason) = stop_reason(choice["finish_reason"].as_str()) {
            self.stop_reason = reason;
        }
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
                Some(StreamItem::Chunk(chunk)) => {
                    let chunk = serde_json::to_value(&chunk).unwrap_or(Value::Null);
                    self.chunk(&chunk);
                }
                Some(StreamItem::End(end)) => {
                    self.done = true;
                    self.start("");
                    self.close_block();
                    if let Some(error) = end.error {
                        self.out.push_back(SseFrame::Error(error));
                        continue;
                    }
                    self.out.push_back(SseFrame::event(
                        "message_delta",
                        &json!({
                            "type": "message_delta",
                            "delta": {"stop_reason": self.stop_reason, "stop_sequence": null},
                            "usage": {
                                "input_tokens": end.usage.uncached_input_tokens,
                                "output_tokens": end.usage.output_tokens,
                                "cache_read_input_tokens": end.usage.cached_input_tokens,
                                "cache_creation_input_tokens": end.usage.cache_write_input_tokens,
                            },
                            "_metadata": end.metadata,
                        }),
                    ));
                    self.out.push_back(SseFrame::event(
                        "message_stop",
                        &json!({"type": "message_stop"}),
                    ));
                }
                None => {
                    self.done = true;
                    self.out.push_back(SseFrame::Error(ChatError::Upstream(
                        "the stream ended without its final event".into(),
                    )));
                }
            }
        }
    }
}

/// The stream's events (see the module docs).
pub fn stream(stream: ChatStream) -> FrameStream {
    let writer = Writer {
        model: stream.routed.model_id.clone(),
        stream,
        started: false,
        block: Block::None,
        index: -1,
        stop_reason: "end_turn",
        out: VecDeque::new(),
        done: false,
    };
    Box::pin(futures_util::stream::unfold(
        writer,
        |mut writer| async move {
            let frame = writer.next().await?;
            Some((frame, writer))
        },
    ))
}
