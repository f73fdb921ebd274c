//! The Anthropic Messages API, inbound (`/v1/messages`): the request is translated into
//! the chat run's request (the provider adapters then speak each upstream format,
//! Anthropic's included, `cache_control` kept), and the answer back into Anthropic's shape.
//! The stream's event sequence is [`super::anthropic_stream`]; errors are written in
//! Anthropic's shape by `http`.
//!
//! `thinking` and `top_k` reach an Anthropic-format upstream as they came; other formats
//! do without them. Thinking blocks come back in the answer (with their signatures), and
//! an assistant turn's thinking blocks go back to an Anthropic upstream unchanged.
//!
//! Also `count_tokens` (the estimate the hold uses) and Anthropic's model list.

use serde_json::{Map, Value, json};

use crate::chat::{ChatError, Completed};
use crate::providers::{
    ANTHROPIC_BLOCK_PART, ChatRequest, REASONING_CONTENT, THINKING_BLOCKS, Usage,
};

/// The request body as JSON, or a 400 naming what is wrong.
pub fn parse(body: &[u8]) -> Result<Value, ChatError> {
    serde_json::from_slice(body)
        .map_err(|e| ChatError::invalid(format!("the body is not valid JSON: {e}")))
}

/// The answer in Anthropic's shape, with `_metadata`.
pub fn answer(completed: Completed) -> Result<Value, ChatError> {
    let response = serde_json::to_value(&completed.response).map_err(ChatError::internal)?;
    let mut message = to_message(&response, &completed.usage);
    message["_metadata"] = completed.metadata;
    Ok(message)
}

/// `POST /v1/messages/count_tokens`: the request as the hold would estimate it (no
/// `max_tokens` needed, never streamed).
pub fn count_tokens_request(body: &[u8]) -> Result<ChatRequest, ChatError> {
    let mut body = parse(body)?;
    if let Some(object) = body.as_object_mut() {
        object.entry("max_tokens").or_insert(json!(1));
        object.remove("stream");
    }
    to_chat_request(&body)
}

/// Anthropic's stop reason for OpenAI's finish reason (`None` while a stream has none).
pub fn stop_reason(finish_reason: Option<&str>) -> Option<&'static str> {
    match finish_reason? {
        "length" => Some("max_tokens"),
        "tool_calls" => Some("tool_use"),
        "content_filter" => Some("refusal"),
        _ => Some("end_turn"),
    }
}

fn invalid(param: &str, message: impl Into<String>) -> ChatError {
    ChatError::invalid_param(param, message)
}

/// Anthropic content (a string, or blocks) as OpenAI content parts, for a user or system
/// turn; `tool_result` blocks are returned separately (they become `tool` messages).
fn user_parts(content: &Value, at: &str) -> Result<(Vec<Value>, Vec<Value>), ChatError> {
    let mut parts = Vec::new();
    let mut tool_results = Vec::new();
    match content {
        Value::String(text) => parts.push(json!({"type": "text", "text": text})),
        Value::Array(blocks) => {
            for (i, block) in blocks.iter().enumerate() {
                let mut part = match block["type"].as_str() {
                    Some("text") => json!({"type": "text", "text": block["text"]}),
                    // No OpenAI equivalent: to an Anthropic upstream as it came.
                    Some("document" | "search_result" | "container_upload") => {
                        json!({"type": ANTHROPIC_BLOCK_PART, "block": block})
                    }
                    Some("image") => {
                        let source = &block["source"];
                        let url = match source["type"].as_str() {
                            Some("base64") => format!(
                                "data:{};base64,{}",
                                source["media_type"].as_str().unwrap_or("image/png"),
                                source["data"].as_str().unwrap_or_default()
                            ),
                            Some("url") => source["url"].as_str().unwrap_or_default().to_string(),
                            _ => {
                                return Err(invalid(
                                    &format!("{at}.content[{i}].source"),
                                    "an image source is `base64` or `url`",
                                ));
                            }
                        };
                        json!({"type": "image_url", "image_url": {"url": url}})
                    }
                    Some("tool_result") => {
                        let text = match &block["content"] {
                            Value::String(text) => text.clone(),
                            Value::Array(inner) => inner
                                .iter()
                                .filter_map(|b| b["text"].as_str())
                                .collect::<Vec<_>>()
                                .join("\n"),
                            Value::Null => String::new(),
                            other => other.to_string(),
                        };
                        let mut result = json!({
                            "role": "tool",
                            "tool_call_id": block["tool_use_id"],
                            "content": text,
                        });
                        // The result's breakpoint, on the message (the Anthropic adapter
                        // puts it back on the `tool_result` block).
                        if let Some(cache_control) = block.get("cache_control") {
                            result["cache_control"] = cache_control.clone();
                        }
                        tool_results.push(result);
                        continue;
                    }
                    other => {
                        return Err(invalid(
                            &format!("{at}.content[{i}].type"),
                            format!("content blocks of type {other:?} are not supported here"),
                        ));
                    }
                };
                if let Some(cache_control) = block.get("cache_control") {
                    part["cache_control"] = cache_control.clone();
                }
                parts.push(part);
            }
        }
        _ => {
            return Err(invalid(
                &format!("{at}.content"),
                "content is a string or an array of blocks",
            ));
        }
    }
    Ok((parts, tool_results))
}

/// Translates a Messages API request into the chat run's request.
pub fn to_chat_request(body: &Value) -> Result<ChatRequest, ChatError> {
    let Some(object) = body.as_object() else {
        return Err(ChatError::invalid("the body is not a JSON object"));
    };
    let max_tokens = object
        .get("max_tokens")
        .and_then(Value::as_u64)
        .filter(|n| *n >= 1)
        .ok_or_else(|| invalid("max_tokens", "max_tokens (a positive integer) is required"))?;
    let mut messages = Vec::new();
    match object.get("system") {
        None | Some(Value::Null) => {}
        Some(system) => {
            let (parts, _) = user_parts(system, "system")?;
            messages.push(json!({"role": "system", "content": parts}));
        }
    }
    let turns = object
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "messages (an array) is required"))?;
    for (i, turn) in turns.iter().enumerate() {
        let at = format!("messages[{i}]");
        match turn["role"].as_str() {
            Some("user") => {
                let (parts, tool_results) = user_parts(&turn["content"], &at)?;
                messages.extend(tool_results);
                if !parts.is_empty() {
                    messages.push(json!({"role": "user", "content": parts}));
                }
            }
            Some("assistant") => {
                let mut text = String::new();
                let mut tool_calls = Vec::new();
                let mut thinking = Vec::new();
                let mut breakpoint: Option<&Value> = None;
                match &turn["content"] {
                    Value::String(s) => text.push_str(s),
                    Value::Array(blocks) => {
                        for block in blocks {
                            // A text or tool_use block's breakpoint goes on the message:
                            // the Anthropic adapter puts it on the turn's last block, so
                            // the cached prefix ends no earlier than the client's.
                            if let Some(cache_control) =
                                block.get("cache_control").filter(|v| v.is_object())
                                && breakpoint
                                    .is_none_or(|kept| kept.get("ttl") != Some(&json!("1h")))
                            {
                                breakpoint = Some(cache_control);
                            }
                            match block["type"].as_str() {
                                Some("text") => {
                                    text.push_str(block["text"].as_str().unwrap_or_default())
                                }
                                // Returned unchanged to an Anthropic upstream (its
                                // signature is checked there); others drop them.
                                Some("thinking" | "redacted_thinking") => {
                                    thinking.push(block.clone())
                                }
                                Some("tool_use") => tool_calls.push(json!({
                                    "id": block["id"],
                                    "type": "function",
                                    "function": {
                                        "name": block["name"],
                                        "arguments": block["input"].to_string(),
                                    },
                                })),
                                _ => {}
                            }
                        }
                    }
                    _ => {
                        return Err(invalid(
                            &format!("{at}.content"),
                            "content is a string or blocks",
                        ));
                    }
                }
                let mut message = json!({"role": "assistant", "content": text});
                if !tool_calls.is_empty() {
                    message["tool_calls"] = Value::Array(tool_calls);
                }
                if !thinking.is_empty() {
                    message[THINKING_BLOCKS] = Value::Array(thinking);
                }
                if let Some(cache_control) = breakpoint {
                    message["cache_control"] = cache_control.clone();
                }
                messages.push(message);
            }
            // Claude Code sends system turns inside `messages` (agent lists, reminders):
            // they become system messages in place (an Anthropic upstream gets them in
            // its top-level `system`, after the request's own).
            Some("system") => {
                let (parts, _) = user_parts(&turn["content"], &at)?;
                if !parts.is_empty() {
                    messages.push(json!({"role": "system", "content": parts}));
                }
            }
            _ => {
                return Err(invalid(
                    &format!("{at}.role"),
                    "role is `user`, `assistant` or `system`",
                ));
            }
        }
    }
    let mut chat = Map::new();
    chat.insert(
        "model".into(),
        object.get("model").cloned().unwrap_or(Value::Null),
    );
    chat.insert("messages".into(), Value::Array(messages));
    chat.insert("max_tokens".into(), json!(max_tokens));
    if object.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.insert("stream".into(), json!(true));
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("stop_sequences", "stop"),
    ] {
        if let Some(value) = object.get(from).filter(|v| !v.is_null()) {
            chat.insert(to.into(), value.clone());
        }
    }
    // Anthropic's own parameters ride along for an Anthropic-format upstream.
    for name in ["thinking", "top_k"] {
        if let Some(value) = object.get(name).filter(|v| !v.is_null()) {
            chat.insert(name.into(), value.clone());
        }
    }
    if let Some(user) = object.get("metadata").and_then(|m| m.get("user_id")) {
        chat.insert("user".into(), user.clone());
    }
    if let Some(tools) = object.get("tools").and_then(Value::as_array) {
        let mut converted = Vec::with_capacity(tools.len());
        for (i, t) in tools.iter().enumerate() {
            // Server tools (web search, code execution, …) run and bill at the provider
            // beyond token prices: the ledger cannot price them.
            if let Some(kind) = t["type"].as_str().filter(|k| *k != "custom") {
                return Err(invalid(
                    &format!("tools[{i}].type"),
                    format!(
                        "server tools such as `{kind}` are billed beyond token prices and are not supported; define a custom tool with `input_schema`"
                    ),
                ));
            }
            let mut tool = json!({"type": "function", "function": {
                "name": t["name"],
                "description": t.get("description").cloned().unwrap_or(Value::Null),
                "parameters": t.get("input_schema").cloned().unwrap_or(json!({"type": "object"})),
            }});
            if let Some(cache_control) = t.get("cache_control") {
                tool["cache_control"] = cache_control.clone();
            }
            converted.push(tool);
        }
        chat.insert("tools".into(), Value::Array(converted));
    }
    if let Some(choice) = object.get("tool_choice") {
        let mapped = match choice["type"].as_str() {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => json!({"type": "function", "function": {"name": choice["name"]}}),
            _ => {
                return Err(invalid(
                    "tool_choice",
                    "tool_choice.type is auto, any, tool or none",
                ));
            }
        };
        chat.insert("tool_choice".into(), mapped);
    }
    let request: ChatRequest = serde_json::from_value(Value::Object(chat))
        .map_err(|e| ChatError::invalid(format!("the request cannot be read: {e}")))?;
    Ok(request)
}

/// An answer's thinking as Anthropic's blocks: as the provider sent them (with their
/// signatures) when it was Anthropic, else one `thinking` block from another provider's
/// `reasoning_content` (with an empty signature: it cannot be sent back to Anthropic).
fn thinking_blocks(message: &Value) -> Vec<Value> {
    if let Some(blocks) = message[THINKING_BLOCKS].as_array() {
        return blocks.clone();
    }
    match message[REASONING_CONTENT]
        .as_str()
        .filter(|t| !t.is_empty())
    {
        Some(thinking) => vec![json!({"type": "thinking", "thinking": thinking, "signature": ""})],
        None => Vec::new(),
    }
}

/// The chat run's answer in Anthropic's shape.
fn to_message(response: &Value, usage: &Usage) -> Value {
    let choice = &response["choices"][0];
    let message = &choice["message"];
    let mut content = thinking_blocks(message);
    if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let input: Value = call["function"]["arguments"]
            .as_str()
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_else(|| json!({}));
        content.push(json!({
            "type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input,
        }));
    }
    let stop_reason = stop_reason(choice["finish_reason"].as_str()).unwrap_or("end_turn");
    json!({
        "id": response["id"],
        "type": "message",
        "role": "assistant",
        "model": response["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {
            "input_tokens": usage.uncached_input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_read_input_tokens": usage.cached_input_tokens,
            "cache_creation_input_tokens": usage.cache_write_input_tokens,
        },
    })
}

/// Anthropic's list paging: `limit` (1–1000, default 20), `after_id`, `before_id`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ModelPage {
    pub limit: Option<usize>,
    pub after_id: Option<String>,
    pub before_id: Option<String>,
}

/// `GET /v1/models` in Anthropic's list shape (`{data, has_more, first_id, last_id}`):
/// chat models only (the Messages API cannot call an embedding model).
pub fn model_list<'a>(
    models: impl Iterator<Item = (&'a str, &'a crate::catalog::Model)>,
    page: &ModelPage,
) -> Result<Value, ChatError> {
    let all: Vec<Value> = models
        .filter(|(_, model)| model.model_type == crate::catalog::ModelType::Chat)
        .map(|(id, model)| {
            json!({
                "type": "model",
                "id": id,
                "display_name": model.display_name.as_deref().unwrap_or(&model.model_name),
                "created_at": model.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            })
        })
        .collect();
    let limit = page.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(ChatError::invalid_param(
            "limit",
            "limit must be between 1 and 1000",
        ));
    }
    let position = |id: &str, param: &'static str| {
        all.iter()
            .position(|m| m["id"] == id)
            .ok_or_else(|| ChatError::invalid_param(param, format!("unknown {param}")))
    };
    let (start, end) = match (&page.after_id, &page.before_id) {
        (Some(after), _) => (position(after, "after_id")? + 1, all.len()),
        (None, Some(before)) => {
            let end = position(before, "before_id")?;
            (end.saturating_sub(limit), end)
        }
        (None, None) => (0, all.len()),
    };
    let data: Vec<Value> = all[start..end].iter().take(limit).cloned().collect();
    let has_more = if page.before_id.is_some() && page.after_id.is_none() {
        start > 0
    } else {
        start + data.len() < end
    };
    Ok(json!({
        "data": data,
        "has_more": has_more,
        "first_id": data.first().map(|m| m["id"].clone()),
        "last_id": data.last().map(|m| m["id"].clone()),
    }))
}
