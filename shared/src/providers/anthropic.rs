//! The Anthropic Messages adapter: canonical request → `POST {base}/messages`, and the
//! message (JSON or event stream) back to OpenAI's shape.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::call::{ResponseContext, UpstreamCall, UpstreamTarget, join_url};
use super::error::{ProviderError, error_text};
use super::request::{
    ANTHROPIC_BLOCK_PART, ChatRequest, ContentPart, Message, MessageContent, Role, ToolCall,
    ToolChoice, ToolChoiceMode,
};
use super::response::{
    ChatCompletion, ChatCompletionChunk, Choice, Delta, FinishReason, FunctionCallDelta,
    REASONING_CONTENT, ResponseMessage, THINKING_BLOCKS, ToolCallDelta, Usage,
};
use super::sse::SseEvent;
use super::stream::{EventDecoder, StreamTally};
use super::translate::{ImageSource, image_source, json_instruction, tool_arguments};
use crate::catalog::ApiFormat;

/// The `anthropic-version` header every request carries.
pub(crate) const API_VERSION: &str = "2023-06-01";
/// Request fields only Anthropic understands; the other formats never send them.
pub const ANTHROPIC_ONLY_FIELDS: &[&str] = &["thinking", "top_k"];
/// `max_tokens` when neither the client nor the catalog gives one (Anthropic requires it).
pub const FALLBACK_MAX_TOKENS: u32 = crate::catalog::DEFAULT_OUTPUT_TOKENS;
/// Anthropic's temperature range ends at 1; OpenAI's at 2.
const MAX_TEMPERATURE: f64 = 1.0;

const FORMAT: ApiFormat = ApiFormat::Anthropic;

pub(crate) fn build_request(
    target: &UpstreamTarget,
    request: &ChatRequest,
    stream: bool,
) -> Result<UpstreamCall, ProviderError> {
    let mut body = Map::new();
    body.insert("model".into(), json!(target.model_id));
    let max_tokens = target
        .output_tokens(request.requested_output_tokens())
        .unwrap_or(FALLBACK_MAX_TOKENS);
    body.insert("max_tokens".into(), json!(max_tokens));

    let (mut system, mut messages) = convert_messages(request)?;
    let add_breakpoints = target.auto_cache_control && !request.has_cache_control();
    if add_breakpoints {
        add_cache_breakpoints(&mut system, &mut messages);
    }
    if let Some(system) = system {
        body.insert("system".into(), system);
    }
    body.insert("messages".into(), Value::Array(messages));

    // Recent Claude models refuse temperature and top_p together; temperature wins.
    if let Some(temperature) = request.temperature {
        body.insert(
            "temperature".into(),
            json!(temperature.min(MAX_TEMPERATURE)),
        );
    } else if let Some(top_p) = request.top_p {
        body.insert("top_p".into(), json!(top_p));
    }
    // Anthropic's own parameters, as the Messages API door received them (extended
    // thinking counts toward max_tokens, so the hold already covers it).
    for name in ANTHROPIC_ONLY_FIELDS {
        if let Some(value) = request.extra.get(*name).filter(|v| !v.is_null()) {
            body.insert((*name).into(), value.clone());
        }
    }
    if let Some(stop) = &request.stop {
        body.insert("stop_sequences".into(), json!(stop.to_vec()));
    }
    insert_tools(request, &mut body)?;
    // Without a system prompt, the tools are the stable prefix to cache.
    if add_breakpoints
        && !body.contains_key("system")
        && let Some(last) = body
            .get_mut("tools")
            .and_then(Value::as_array_mut)
            .and_then(|tools| tools.last_mut())
    {
        last["cache_control"] = json!({"type": "ephemeral"});
    }
    if let Some(user) = &request.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if stream {
        body.insert("stream".into(), Value::Bool(true));
    }
    Ok(UpstreamCall {
        url: join_url(&target.base_url, "messages"),
        body: Value::Object(body),
    })
}

/// Prompt-cache breakpoints for a request that set none (Anthropic caches the prefix up
/// to each breakpoint: tools, then system, then messages): the end of the system prompt,
/// and the end of the conversation before its last turn — the longest prefix the next call
/// of the same conversation repeats. Thinking blocks cannot carry one.
fn add_cache_breakpoints(system: &mut Option<Value>, messages: &mut [Value]) {
    let ephemeral = json!({"type": "ephemeral"});
    match system {
        Some(Value::String(text)) => {
            *system = Some(json!([{"type": "text", "text": text, "cache_control": ephemeral}]));
        }
        Some(Value::Array(blocks)) => {
            if let Some(last) = blocks.last_mut() {
                last["cache_control"] = ephemeral.clone();
            }
        }
        _ => {}
    }
    if messages.len() >= 2 {
        let prefix_end = messages.len() - 2;
        if let Some(block) = messages[prefix_end]["content"]
            .as_array_mut()
            .and_then(|blocks| blocks.last_mut())
            .filter(|b| !matches!(b["type"].as_str(), Some("thinking" | "redacted_thinking")))
        {
            block["cache_control"] = ephemeral;
        }
    }
}

/// System and developer messages (wherever they are) become the top-level `system`, plus
/// the JSON instruction; the rest become content-block messages, consecutive same-role
/// messages merged (tool results travel in user messages).
fn convert_messages(request: &ChatRequest) -> Result<(Option<Value>, Vec<Value>), ProviderError> {
    let mut system_blocks: Vec<Value> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, message) in request.messages.iter().enumerate() {
        let (role, mut blocks) = match message.role {
            Role::System | Role::Developer => {
                let mut blocks = text_blocks(message, i)?;
                mark_message_breakpoint(message, &mut blocks);
                system_blocks.extend(blocks);
                continue;
            }
            Role::User => ("user", user_blocks(message, i)?),
            Role::Assistant => ("assistant", assistant_blocks(message, i)?),
            Role::Tool => ("user", vec![tool_result_block(message)]),
            Role::Function | Role::Unknown(_) => {
                return Err(ProviderError::unsupported(
                    FORMAT,
                    format!("messages[{i}].role"),
                    "legacy `function` messages are not supported for Anthropic models; use `tools` and `tool` messages",
                ));
            }
        };
        mark_message_breakpoint(message, &mut blocks);
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last_role, last_blocks)) if *last_role == role => last_blocks.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    if let Some(instruction) = request.json_mode().and_then(json_instruction) {
        system_blocks.push(json!({"type": "text", "text": instruction}));
    }
    let system = if system_blocks.is_empty() {
        None
    } else if system_blocks
        .iter()
        .any(|b| b.get("cache_control").is_some())
    {
        // Blocks keep the client's cache breakpoints.
        Some(Value::Array(system_blocks))
    } else {
        let texts: Vec<&str> = system_blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect();
        Some(Value::String(texts.join("\n\n")))
    };
    let messages = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    Ok((system, messages))
}

/// A `cache_control` set on the message itself (LiteLLM's convention; `/v1/messages`
/// carries a `tool_use` block's this way) is a breakpoint at its end: on its last block,
/// unless that block has its own (or is a thinking block, which cannot carry one).
fn mark_message_breakpoint(message: &Message, blocks: &mut [Value]) {
    let Some(cache_control) = message.extra.get("cache_control").filter(|v| v.is_object()) else {
        return;
    };
    if let Some(last) = blocks.last_mut().filter(|block| {
        block.get("cache_control").is_none()
            && !matches!(
                block["type"].as_str(),
                Some("thinking" | "redacted_thinking")
            )
    }) {
        last["cache_control"] = cache_control.clone();
    }
}

fn text_block(text: &str, part: Option<&ContentPart>) -> Value {
    let mut block = json!({"type": "text", "text": text});
    // OpenRouter-style prompt caching: `cache_control` on an OpenAI text part.
    if let Some(cache_control) = part.and_then(|p| p.extra.get("cache_control")) {
        block["cache_control"] = cache_control.clone();
    }
    block
}

/// Text-only content (system, developer) as text blocks; empty texts dropped, since
/// Anthropic refuses empty text blocks.
fn text_blocks(message: &Message, i: usize) -> Result<Vec<Value>, ProviderError> {
    let Some(content) = &message.content else {
        return Ok(Vec::new());
    };
    let pieces = content
        .text_pieces()
        .map_err(|(j, kind)| unsupported_part(i, j, kind))?;
    Ok(pieces
        .into_iter()
        .filter(|(text, _)| !text.is_empty())
        .map(|(text, part)| text_block(text, part))
        .collect())
}

fn user_blocks(message: &Message, i: usize) -> Result<Vec<Value>, ProviderError> {
    let Some(MessageContent::Parts(parts)) = &message.content else {
        return text_blocks(message, i);
    };
    let mut blocks = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        match part.kind.as_str() {
            "text" => {
                if let Some(text) = part.text.as_deref().filter(|t| !t.is_empty()) {
                    blocks.push(text_block(text, Some(part)));
                }
            }
            "image_url" => {
                let param = format!("messages[{i}].content[{j}].image_url.url");
                let url = part
                    .image_url
                    .as_ref()
                    .map_or("", |image| image.url.as_str());
                let source = match image_source(FORMAT, url, &param)? {
                    ImageSource::Base64 { media_type, data } => {
                        json!({"type": "base64", "media_type": media_type, "data": data})
                    }
                    ImageSource::Url(url) => json!({"type": "url", "url": url}),
                };
                let mut block = json!({"type": "image", "source": source});
                if let Some(cache_control) = part.extra.get("cache_control") {
                    block["cache_control"] = cache_control.clone();
                }
                blocks.push(block);
            }
            ANTHROPIC_BLOCK_PART => {
                if let Some(block) = part.extra.get("block") {
                    blocks.push(block.clone());
                }
            }
            other => return Err(unsupported_part(i, j, other)),
        }
    }
    Ok(blocks)
}

fn assistant_blocks(message: &Message, i: usize) -> Result<Vec<Value>, ProviderError> {
    if message.function_call.is_some() {
        return Err(ProviderError::unsupported(
            FORMAT,
            format!("messages[{i}].function_call"),
            "legacy `function_call` messages are not supported for Anthropic models; use `tool_calls`",
        ));
    }
    // Thinking blocks come first, unchanged (their signatures are checked upstream).
    let mut blocks: Vec<Value> = message
        .extra
        .get(THINKING_BLOCKS)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|b| matches!(b["type"].as_str(), Some("thinking" | "redacted_thinking")))
        .cloned()
        .collect();
    let text = text_blocks(message, i)?;
    if text.is_empty()
        && let Some(refusal) = message.refusal.as_deref().filter(|r| !r.is_empty())
    {
        blocks.push(text_block(refusal, None));
    }
    blocks.extend(text);
    for (j, call) in message.tool_calls.iter().flatten().enumerate() {
        let param = format!("messages[{i}].tool_calls[{j}].function.arguments");
        let input = tool_arguments(&call.function.arguments, &param)?;
        blocks.push(json!({
            "type": "tool_use",
            "id": call.id,
            "name": call.function.name,
            "input": input
        }));
    }
    Ok(blocks)
}

fn tool_result_block(message: &Message) -> Value {
    let content = message
        .content
        .as_ref()
        .map(|content| content.joined_text("\n"))
        .unwrap_or_default();
    let mut block = json!({
        "type": "tool_result",
        "tool_use_id": message.tool_call_id.clone().unwrap_or_default(),
        "content": content
    });
    // A breakpoint on the result's text parts (OpenAI-style `cache_control`) marks the
    // whole result, whose text is joined into one.
    if let Some(MessageContent::Parts(parts)) = &message.content
        && let Some(cache_control) = parts
            .iter()
            .filter_map(|part| part.extra.get("cache_control"))
            .filter(|value| value.is_object())
            .max_by_key(|value| crate::ledger::CacheWrites::of_cache_control(value))
    {
        block["cache_control"] = cache_control.clone();
    }
    block
}

fn unsupported_part(i: usize, j: usize, kind: &str) -> ProviderError {
    ProviderError::unsupported(
        FORMAT,
        format!("messages[{i}].content[{j}].type"),
        format!("content parts of type `{kind}` are not supported for Anthropic models here"),
    )
}

fn insert_tools(request: &ChatRequest, body: &mut Map<String, Value>) -> Result<(), ProviderError> {
    for (i, tool) in request.tools.iter().flatten().enumerate() {
        if tool.kind != "function" {
            return Err(ProviderError::unsupported(
                FORMAT,
                format!("tools[{i}].type"),
                format!(
                    "tools of type `{}` are not supported for Anthropic models",
                    tool.kind
                ),
            ));
        }
    }
    // Each function with the tool's prompt-cache breakpoint, if any (Claude Code puts one
    // on its last tool); legacy `functions` have none.
    let tools: Vec<Value> = request
        .tools
        .iter()
        .flatten()
        .filter(|tool| tool.kind == "function")
        .filter_map(|tool| {
            let function = tool.function.as_ref()?;
            Some((function, tool.extra.get("cache_control")))
        })
        .chain(request.functions.iter().flatten().map(|f| (f, None)))
        .map(|(function, cache_control)| {
            let mut tool = json!({
                "name": function.name,
                "input_schema": function
                    .parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}}))
            });
            if let Some(description) = &function.description {
                tool["description"] = json!(description);
            }
            if let Some(cache_control) = cache_control {
                tool["cache_control"] = cache_control.clone();
            }
            tool
        })
        .collect();
    if tools.is_empty() {
        return Ok(());
    }
    body.insert("tools".into(), Value::Array(tools));
    let mut choice = match request.effective_tool_choice() {
        None | Some(ToolChoice::Mode(ToolChoiceMode::Auto)) => json!({"type": "auto"}),
        Some(ToolChoice::Mode(ToolChoiceMode::Required)) => json!({"type": "any"}),
        Some(ToolChoice::Mode(ToolChoiceMode::None)) => json!({"type": "none"}),
        Some(ToolChoice::Named(named)) => json!({"type": "tool", "name": named.function.name}),
    };
    let explicit = request.tool_choice.is_some() || request.function_call.is_some();
    if request.parallel_tool_calls == Some(false) && choice["type"] != "none" {
        choice["disable_parallel_tool_use"] = Value::Bool(true);
        body.insert("tool_choice".into(), choice);
    } else if explicit {
        body.insert("tool_choice".into(), choice);
    }
    Ok(())
}

pub(crate) fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        // end_turn, stop_sequence, pause_turn
        _ => FinishReason::Stop,
    }
}

/// Anthropic's usage is already disjoint: `input_tokens` excludes cache reads and writes.
fn usage_from(value: &Value, previous: Usage) -> Usage {
    let count = |key: &str| value.get(key).and_then(Value::as_u64);
    Usage {
        uncached_input_tokens: count("input_tokens").unwrap_or(previous.uncached_input_tokens),
        cached_input_tokens: count("cache_read_input_tokens")
            .unwrap_or(previous.cached_input_tokens),
        cache_write_input_tokens: count("cache_creation_input_tokens")
            .unwrap_or(previous.cache_write_input_tokens),
        // `cache_creation: {ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}` splits
        // the writes by lifetime when the request used a 1-hour cache.
        cache_write_1h_input_tokens: value
            .get("cache_creation")
            .and_then(|c| c.get("ephemeral_1h_input_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(previous.cache_write_1h_input_tokens),
        output_tokens: count("output_tokens").unwrap_or(previous.output_tokens),
        reasoning_tokens: 0,
    }
}

pub(crate) fn parse_completion(
    body: &[u8],
    context: &ResponseContext,
) -> Result<(ChatCompletion, Option<Usage>), ProviderError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ProviderError::invalid_response(format!("the answer is not valid JSON ({e})"))
    })?;
    if value.get("type").and_then(Value::as_str) == Some("error") {
        let (message, _) = error_text(FORMAT, &value);
        return Err(ProviderError::invalid_response(context.sanitize(
            &message.unwrap_or_else(|| "unspecified error".to_owned()),
        )));
    }
    let blocks = value
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::invalid_response("the answer has no `content` array"))?;
    let mut text = String::new();
    let mut has_text = false;
    let mut tool_calls = Vec::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            // Shown as `reasoning_content` and kept whole (with the signature) for the
            // Messages API; their tokens are billed as output.
            Some("thinking") => {
                reasoning.push_str(block["thinking"].as_str().unwrap_or_default());
                thinking_blocks.push(block.clone());
            }
            Some("redacted_thinking") => thinking_blocks.push(block.clone()),
            Some("text") => {
                has_text = true;
                text.push_str(
                    block
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                );
            }
            Some("tool_use") => {
                let id = block.get("id").and_then(Value::as_str).unwrap_or_default();
                let name = block
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                tool_calls.push(ToolCall::function(id, name, input.to_string()));
            }
            _ => {}
        }
    }
    let finish = value
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(finish_reason);
    let content = if has_text || tool_calls.is_empty() {
        Some(text)
    } else {
        None
    };
    let usage = value
        .get("usage")
        .map(|usage| usage_from(usage, Usage::default()));
    let mut message = ResponseMessage::assistant(content, tool_calls);
    if !thinking_blocks.is_empty() {
        message
            .extra
            .insert(REASONING_CONTENT.into(), Value::String(reasoning));
        message
            .extra
            .insert(THINKING_BLOCKS.into(), Value::Array(thinking_blocks));
    }
    let completion = ChatCompletion {
        id: string_or(&value, "id", ""),
        object: "chat.completion".to_owned(),
        created: context.created,
        model: string_or(&value, "model", &context.model),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: finish,
            logprobs: None,
        }],
        usage: None,
        system_fingerprint: None,
        extra: Map::new(),
        native_output: None,
    };
    Ok((completion, usage))
}

fn string_or(value: &Value, key: &str, default: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or(default)
        .to_owned()
}

/// Anthropic events → chunks: `message_start` opens (role chunk, input usage),
/// `content_block_*` carry text and tool calls, `message_delta` the stop reason and final
/// output count, `message_stop` ends.
pub(crate) struct StreamDecoder {
    context: ResponseContext,
    id: String,
    model: String,
    /// Content-block index → OpenAI tool-call index.
    tool_blocks: HashMap<u64, u32>,
    next_tool: u32,
    usage: Usage,
}

impl StreamDecoder {
    pub(crate) fn new(context: ResponseContext) -> StreamDecoder {
        let model = context.model.clone();
        StreamDecoder {
            context,
            id: String::new(),
            model,
            tool_blocks: HashMap::new(),
            next_tool: 0,
            usage: Usage::default(),
        }
    }

    fn chunk(&self, delta: Delta, finish: Option<FinishReason>) -> ChatCompletionChunk {
        ChatCompletionChunk::new(&self.id, self.context.created, &self.model, delta, finish)
    }

    /// A chunk carrying one canonical extension field (thinking text or blocks).
    fn extra_delta(&self, key: &str, value: Value) -> ChatCompletionChunk {
        let mut delta = Delta::default();
        delta.extra.insert(key.into(), value);
        self.chunk(delta, None)
    }

    fn tool_delta(&self, call: ToolCallDelta) -> ChatCompletionChunk {
        self.chunk(
            Delta {
                tool_calls: Some(vec![call]),
                ..Delta::default()
            },
            None,
        )
    }
}

impl EventDecoder for StreamDecoder {
    fn on_event(
        &mut self,
        event: SseEvent,
        tally: &mut StreamTally,
        out: &mut Vec<ChatCompletionChunk>,
    ) -> Result<bool, ProviderError> {
        let value: Value = serde_json::from_str(&event.data).map_err(|e| {
            ProviderError::invalid_response(format!("a stream event is not valid JSON ({e})"))
        })?;
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default();
        match kind {
            "message_start" => {
                let message = value.get("message").unwrap_or(&Value::Null);
                self.id = string_or(message, "id", "");
                self.model = string_or(message, "model", &self.context.model);
                if let Some(usage) = message.get("usage") {
                    self.usage = usage_from(usage, Usage::default());
                    tally.set_usage(self.usage, false);
                }
                out.push(self.chunk(
                    Delta {
                        role: Some("assistant".to_owned()),
                        content: Some(String::new()),
                        ..Delta::default()
                    },
                    None,
                ));
            }
            "content_block_start" => {
                let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
                let block = value.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = block
                            .get("text")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if !text.is_empty() {
                            out.push(self.chunk(
                                Delta {
                                    content: Some(text.to_owned()),
                                    ..Delta::default()
                                },
                                None,
                            ));
                        }
                    }
                    Some("redacted_thinking") => {
                        out.push(self.extra_delta(THINKING_BLOCKS, json!([block])));
                    }
                    Some("tool_use") => {
                        let tool_index = self.next_tool;
                        self.next_tool += 1;
                        self.tool_blocks.insert(index, tool_index);
                        out.push(self.tool_delta(ToolCallDelta {
                            index: tool_index,
                            id: Some(string_or(block, "id", "")),
                            kind: Some("function".to_owned()),
                            function: Some(FunctionCallDelta {
                                name: Some(string_or(block, "name", "")),
                                arguments: Some(String::new()),
                            }),
                        }));
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
                let delta = value.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta
                            .get("text")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if !text.is_empty() {
                            out.push(self.chunk(
                                Delta {
                                    content: Some(text.to_owned()),
                                    ..Delta::default()
                                },
                                None,
                            ));
                        }
                    }
                    Some("input_json_delta") => {
                        let partial = delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if let Some(&tool_index) = self.tool_blocks.get(&index)
                            && !partial.is_empty()
                        {
                            out.push(self.tool_delta(ToolCallDelta {
                                index: tool_index,
                                id: None,
                                kind: None,
                                function: Some(FunctionCallDelta {
                                    name: None,
                                    arguments: Some(partial.to_owned()),
                                }),
                            }));
                        }
                    }
                    Some("thinking_delta") => {
                        let thinking = delta["thinking"].as_str().unwrap_or_default();
                        if !thinking.is_empty() {
                            out.push(self.extra_delta(REASONING_CONTENT, json!(thinking)));
                        }
                    }
                    Some("signature_delta") => {
                        let block = json!([{"type": "thinking", "thinking": "", "signature": delta["signature"]}]);
                        out.push(self.extra_delta(THINKING_BLOCKS, block));
                    }
                    // citations_delta: not shown.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(usage) = value.get("usage") {
                    self.usage = usage_from(usage, self.usage);
                }
                // message_delta's output count is cumulative and final.
                tally.set_usage(self.usage, true);
                let finish = value
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                    .map(finish_reason);
                if finish.is_some() {
                    out.push(self.chunk(Delta::default(), finish));
                }
            }
            "message_stop" => return Ok(true),
            "error" => {
                let (message, error_type) = error_text(FORMAT, &value);
                let retryable = !matches!(
                    error_type.as_deref(),
                    Some("invalid_request_error" | "not_found_error" | "request_too_large")
                );
                return Err(ProviderError::StreamError {
                    message: self
                        .context
                        .sanitize(&message.unwrap_or_else(|| "unspecified error".to_owned())),
                    error_type,
                    retryable,
                });
            }
            // ping, content_block_stop, and event types added later.
            _ => {}
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::AuthType;

    fn target(byok: bool) -> UpstreamTarget {
        UpstreamTarget {
            api_format: FORMAT,
            base_url: "https://api.anthropic.test/v1".into(),
            auth_type: AuthType::XApiKey,
            model_id: "claude-sonnet-4-5".into(),
            api_key: None,
            max_output_tokens: Some(100),
            forward_unpriced_fields: byok,
            auto_cache_control: true,
            traceparent: None,
            responses_api: false,
            account_tag: None,
        }
    }

    fn build(body: Value) -> Value {
        let request: ChatRequest = serde_json::from_value(body).unwrap();
        build_request(&target(false), &request, false).unwrap().body
    }

    #[test]
    fn breakpoints_on_tool_results_and_whole_messages_reach_anthropic() {
        let five = json!({"type": "ephemeral"});
        let hour = json!({"type": "ephemeral", "ttl": "1h"});
        let body = build(json!({"model": "m", "messages": [
            {"role": "system", "content": "Rules.", "cache_control": hour},
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Looking.", "cache_control": five,
             "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": [
                {"type": "text", "text": "sunny", "cache_control": five}]},
            {"role": "user", "content": "Thanks."}
        ]}));
        assert_eq!(
            body["system"],
            json!([{"type": "text", "text": "Rules.", "cache_control": hour}])
        );
        let assistant = &body["messages"][1]["content"];
        assert_eq!(assistant[0].get("cache_control"), None, "{body}");
        assert_eq!(assistant[1]["type"], "tool_use");
        assert_eq!(assistant[1]["cache_control"], five);
        let result = &body["messages"][2]["content"][0];
        assert_eq!(result["type"], "tool_result");
        assert_eq!(result["content"], "sunny");
        assert_eq!(result["cache_control"], five);
        // The client set breakpoints: the gateway adds none of its own.
        assert_eq!(body["messages"][2]["content"].as_array().unwrap().len(), 2);
        assert_eq!(body["messages"][2]["content"][1].get("cache_control"), None);
    }

    #[test]
    fn a_tool_breakpoint_alone_stops_the_automatic_ones() {
        let body = build(json!({"model": "m",
            "tools": [{"type": "function", "function": {"name": "f"}, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "messages": [{"role": "system", "content": "Rules."}, {"role": "user", "content": "a"},
                         {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}));
        assert_eq!(body["tools"][0]["cache_control"]["ttl"], "1h");
        assert_eq!(body["system"], "Rules.", "{body}");
        assert!(!body["messages"].to_string().contains("cache_control"));
    }
}
