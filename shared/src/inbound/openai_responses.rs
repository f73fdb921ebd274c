//! The OpenAI Responses API, inbound (`POST /v1/responses`): the request (its `input` items,
//! with a continuation's stored conversation before them) is translated into the chat run's
//! request, and the answer back into a Response object (`output` items, `usage`,
//! `_metadata`). The stream's event sequence is [`super::openai_responses_stream`]; stored
//! responses are [`crate::responses`].
//!
//! Input items: `message` (roles `user`, `system`, `developer`, `assistant`; parts
//! `input_text`, `input_image`, `input_file`, `output_text`, `refusal`), `function_call`,
//! `function_call_output`, `reasoning` (kept for a provider that serves the Responses API
//! natively; the translation drops it). `instructions` lead as a system message.
//! Tools: `function` only; the built-in tools the provider bills beyond token prices are
//! refused with 400 naming the field.

use serde_json::{Map, Value, json};

use crate::chat::{ChatError, Completed};
use crate::providers::{ChatCompletion, ChatRequest, REASONING_CONTENT, Usage};
use crate::responses::new_id;

/// Built-in tools that run and bill at the provider beyond token prices.
const BILLED_TOOLS: &[&str] = &[
    "web_search",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "file_search",
    "code_interpreter",
    "computer_use_preview",
    "computer",
    "image_generation",
    "mcp",
    "local_shell",
    "shell",
    "apply_patch",
];

/// Request fields the gateway cannot honour at all (400 naming the field).
const UNSUPPORTED_FIELDS: &[(&str, &str)] = &[
    (
        "background",
        "background responses are not supported; send the request and wait, or stream it",
    ),
    (
        "conversation",
        "conversations are not supported; continue with `previous_response_id`",
    ),
    ("prompt", "stored prompt templates are not supported"),
];

/// A parsed `POST /v1/responses` body.
#[derive(Debug, Clone)]
pub struct ResponsesRequest {
    /// The body as the client sent it (echoed fields, the native path).
    pub body: Map<String, Value>,
    pub model: String,
    pub instructions: Option<String>,
    /// This turn's input as items (a string input is one user message).
    pub input_items: Vec<Value>,
    pub previous_response_id: Option<String>,
    /// `store` (default true).
    pub store: bool,
    pub stream: bool,
}

fn invalid(param: &str, message: impl Into<String>) -> ChatError {
    ChatError::invalid_param(param, message)
}

/// Reads the body (400 naming what is wrong).
pub fn parse(body: &[u8]) -> Result<ResponsesRequest, ChatError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ChatError::invalid(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(body) = value else {
        return Err(ChatError::invalid("the body is not a JSON object"));
    };
    let model = match body.get("model") {
        Some(Value::String(model)) if !model.trim().is_empty() => model.clone(),
        _ => return Err(invalid("model", "model (a string) is required")),
    };
    for (field, why) in UNSUPPORTED_FIELDS {
        if body
            .get(*field)
            .is_some_and(|v| !v.is_null() && *v != json!(false))
        {
            return Err(invalid(field, *why));
        }
    }
    let instructions = match body.get("instructions") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => return Err(invalid("instructions", "instructions is a string")),
    };
    let input_items = match body.get("input") {
        Some(Value::String(text)) => vec![json!({
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": text}],
        })],
        Some(Value::Array(items)) => items.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(invalid("input", "input is a string or an array of items")),
    };
    let previous_response_id = match body.get("previous_response_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if id.starts_with("resp_") && id.len() <= 100 => Some(id.clone()),
        Some(_) => {
            return Err(invalid(
                "previous_response_id",
                "previous_response_id is the id of a response (resp_...)",
            ));
        }
    };
    if input_items.is_empty() && previous_response_id.is_none() {
        return Err(invalid("input", "input is required"));
    }
    let flag = |name: &str, default: bool| -> Result<bool, ChatError> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(invalid(name, format!("{name} is a boolean"))),
        }
    };
    Ok(ResponsesRequest {
        model,
        instructions,
        input_items,
        previous_response_id,
        store: flag("store", true)?,
        stream: flag("stream", false)?,
        body,
    })
}

/// The text of a message's content (a string, or parts with `text` / `refusal`).
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str().or_else(|| p["refusal"].as_str()))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// A user/system message's content as chat content parts.
fn content_parts(content: &Value, at: &str) -> Result<Value, ChatError> {
    let parts = match content {
        Value::String(text) => return Ok(json!(text)),
        Value::Array(parts) => parts,
        _ => {
            return Err(invalid(
                &format!("{at}.content"),
                "content is a string or an array of parts",
            ));
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let param = format!("{at}.content[{j}]");
        let converted = match part["type"].as_str() {
            Some("input_text" | "output_text" | "text") => {
                json!({"type": "text", "text": part["text"].as_str().unwrap_or_default()})
            }
            Some("refusal") => {
                json!({"type": "text", "text": part["refusal"].as_str().unwrap_or_default()})
            }
            Some("input_image") => {
                let Some(url) = part["image_url"].as_str() else {
                    return Err(invalid(
                        &format!("{param}.image_url"),
                        "an input_image needs image_url (a URL or a data: URL); file ids are not supported",
                    ));
                };
                let mut image = json!({"url": url});
                if let Some(detail) = part["detail"].as_str() {
                    image["detail"] = json!(detail);
                }
                json!({"type": "image_url", "image_url": image})
            }
            Some("input_file") => {
                let mut file = Map::new();
                for field in ["file_data", "file_id", "filename", "file_url"] {
                    if let Some(value) = part.get(field).filter(|v| !v.is_null()) {
                        file.insert(field.into(), value.clone());
                    }
                }
                json!({"type": "file", "file": file})
            }
            other => {
                return Err(invalid(
                    &format!("{param}.type"),
                    format!("content parts of type {other:?} are not supported"),
                ));
            }
        };
        out.push(converted);
    }
    // Text alone goes as a string: every chat upstream takes that.
    if out.iter().all(|part| part["type"] == "text") {
        let text: String = out.iter().filter_map(|p| p["text"].as_str()).collect();
        return Ok(json!(text));
    }
    Ok(Value::Array(out))
}

/// The conversation's items as chat messages: consecutive function calls become one
/// assistant turn's tool calls, function outputs tool messages; reasoning items are left
/// out (only a native Responses provider can take them back).
fn messages_of(items: &[Value], first_index: usize) -> Result<Vec<Value>, ChatError> {
    let mut messages: Vec<Value> = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let at = format!("input[{}]", n.saturating_sub(first_index));
        let kind = item["type"]
            .as_str()
            .unwrap_or(if item.get("role").is_some() {
                "message"
            } else {
                ""
            });
        match kind {
            "message" => {
                let role = match item["role"].as_str() {
                    Some(role @ ("user" | "system" | "assistant")) => role,
                    Some("developer") => "system",
                    _ => {
                        return Err(invalid(
                            &format!("{at}.role"),
                            "role is user, system, developer or assistant",
                        ));
                    }
                };
                let content = if role == "assistant" {
                    json!(text_of(&item["content"]))
                } else {
                    content_parts(&item["content"], &at)?
                };
                messages.push(json!({"role": role, "content": content}));
            }
            "function_call" => {
                let (Some(call_id), Some(name)) = (item["call_id"].as_str(), item["name"].as_str())
                else {
                    return Err(invalid(&at, "a function_call item needs call_id and name"));
                };
                let call = json!({
                    "id": call_id, "type": "function",
                    "function": {"name": name, "arguments": item["arguments"].as_str().unwrap_or("{}")},
                });
                // Parallel calls, or calls after the turn's text: one assistant message.
                match messages.last_mut() {
                    Some(last) if last["role"] == "assistant" => {
                        match last["tool_calls"].as_array_mut() {
                            Some(calls) => calls.push(call),
                            None => last["tool_calls"] = json!([call]),
                        }
                    }
                    _ => messages
                        .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            "function_call_output" => {
                let Some(call_id) = item["call_id"].as_str() else {
                    return Err(invalid(
                        &format!("{at}.call_id"),
                        "a function_call_output item needs call_id",
                    ));
                };
                let output = match &item["output"] {
                    Value::String(text) => text.clone(),
                    other => text_of(other),
                };
                messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            }
            "reasoning" => {}
            other => {
                return Err(invalid(
                    &format!("{at}.type"),
                    format!("input items of type {other:?} are not supported"),
                ));
            }
        }
    }
    Ok(messages)
}

/// Translates the request, after the stored `history` of a continuation (its turns' input
/// and output items, oldest first), into the chat run's request. The original body rides
/// along (`native_responses`, with the whole input) for a provider that serves the
/// Responses API natively.
pub fn to_chat_request(
    request: &ResponsesRequest,
    history: Vec<Value>,
) -> Result<ChatRequest, ChatError> {
    let body = &request.body;
    let mut messages = Vec::new();
    if let Some(instructions) = &request.instructions {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    let first_index = history.len();
    let mut items = history;
    items.extend(request.input_items.iter().cloned());
    messages.extend(messages_of(&items, first_index)?);

    let mut chat = Map::new();
    chat.insert("model".into(), json!(request.model));
    chat.insert("messages".into(), Value::Array(messages));
    if request.stream {
        chat.insert("stream".into(), json!(true));
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    match body.get("max_output_tokens") {
        None | Some(Value::Null) => {}
        Some(value) if value.as_u64().is_some_and(|n| n >= 1) => {
            chat.insert("max_completion_tokens".into(), value.clone());
        }
        Some(_) => {
            return Err(invalid(
                "max_output_tokens",
                "max_output_tokens is a positive integer",
            ));
        }
    }
    for name in [
        "temperature",
        "top_p",
        "user",
        "parallel_tool_calls",
        "service_tier",
    ] {
        if let Some(value) = body.get(name).filter(|v| !v.is_null()) {
            chat.insert(name.into(), value.clone());
        }
    }
    if let Some(tools) = body.get("tools").filter(|v| !v.is_null()) {
        let Some(tools) = tools.as_array() else {
            return Err(invalid("tools", "tools is an array"));
        };
        let mut converted = Vec::with_capacity(tools.len());
        for (i, tool) in tools.iter().enumerate() {
            match tool["type"].as_str() {
                Some("function") => converted.push(function_tool(tool, &format!("tools[{i}]"))?),
                // A namespace (Codex's sub-agent tools) is flattened into its functions;
                // their calls come back with the namespace named ([`namespaces`]).
                Some("namespace") => {
                    for (j, inner) in tool["tools"].as_array().into_iter().flatten().enumerate() {
                        converted.push(function_tool(inner, &format!("tools[{i}].tools[{j}]"))?);
                    }
                }
                Some(kind) if BILLED_TOOLS.contains(&kind) => {
                    return Err(invalid(
                        &format!("tools[{i}].type"),
                        format!(
                            "the built-in tool `{kind}` is billed by the provider beyond token prices and is not available on the platform's key; define a function tool"
                        ),
                    ));
                }
                other => {
                    return Err(invalid(
                        &format!("tools[{i}].type"),
                        format!(
                            "tools of type {other:?} are not supported; define a function tool"
                        ),
                    ));
                }
            }
        }
        if !converted.is_empty() {
            chat.insert("tools".into(), Value::Array(converted));
        }
    }
    if let Some(choice) = body.get("tool_choice").filter(|v| !v.is_null()) {
        let mapped = match choice {
            Value::String(mode) if ["auto", "none", "required"].contains(&mode.as_str()) => {
                choice.clone()
            }
            Value::Object(object) if object.get("type") == Some(&json!("function")) => {
                json!({"type": "function", "function": {"name": object.get("name").cloned().unwrap_or(Value::Null)}})
            }
            _ => {
                return Err(invalid(
                    "tool_choice",
                    "tool_choice is auto, none, required or {\"type\": \"function\", \"name\"}",
                ));
            }
        };
        chat.insert("tool_choice".into(), mapped);
    }
    if let Some(format) = body
        .get("text")
        .and_then(|t| t.get("format"))
        .filter(|f| !f.is_null())
    {
        match format["type"].as_str() {
            Some("text") | None => {}
            Some("json_object") => {
                chat.insert("response_format".into(), json!({"type": "json_object"}));
            }
            Some("json_schema") => {
                let mut schema = Map::new();
                for field in ["name", "schema", "strict", "description"] {
                    if let Some(value) = format.get(field).filter(|v| !v.is_null()) {
                        schema.insert(field.into(), value.clone());
                    }
                }
                if !schema.contains_key("name") {
                    schema.insert("name".into(), json!("response"));
                }
                chat.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": schema}),
                );
            }
            Some(other) => {
                return Err(invalid(
                    "text.format.type",
                    format!(
                        "text.format.type {other:?} is not one of text, json_object, json_schema"
                    ),
                ));
            }
        }
    }
    if let Some(effort) = body
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str)
    {
        // OpenAI's chat parameter (not `none`: the Agents SDK sends it for models that do
        // not reason); an Anthropic-format upstream gets a thinking budget.
        if effort != "none" {
            chat.insert("reasoning_effort".into(), json!(effort));
        }
        if let Some(budget) = thinking_budget(effort) {
            chat.insert(
                "thinking".into(),
                json!({"type": "enabled", "budget_tokens": budget}),
            );
        }
    }
    let mut request_out: ChatRequest = serde_json::from_value(Value::Object(chat))
        .map_err(|e| ChatError::invalid(format!("the request cannot be read: {e}")))?;
    let mut native = body.clone();
    native.insert("input".into(), Value::Array(items));
    native.remove("previous_response_id");
    request_out.native_responses = Some(Value::Object(native));
    Ok(request_out)
}

/// A Responses function tool (flat: `name`, `description`, `parameters`, `strict`) as a
/// chat tool.
fn function_tool(tool: &Value, at: &str) -> Result<Value, ChatError> {
    let Some(name) = tool["name"].as_str() else {
        return Err(invalid(
            &format!("{at}.name"),
            "a function tool needs a name",
        ));
    };
    let mut function = json!({
        "name": name,
        "parameters": tool.get("parameters").filter(|p| !p.is_null()).cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    });
    if let Some(description) = tool["description"].as_str() {
        function["description"] = json!(description);
    }
    if let Some(strict) = tool["strict"].as_bool() {
        function["strict"] = json!(strict);
    }
    Ok(json!({"type": "function", "function": function}))
}

/// The namespace of each function a `namespace` tool wraps (its calls name it).
pub fn namespaces(request: &ResponsesRequest) -> std::collections::HashMap<String, String> {
    let mut found = std::collections::HashMap::new();
    for tool in request
        .body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if tool["type"] == "namespace"
            && let Some(namespace) = tool["name"].as_str()
        {
            for inner in tool["tools"].as_array().into_iter().flatten() {
                if let Some(name) = inner["name"].as_str() {
                    found.insert(name.to_string(), namespace.to_string());
                }
            }
        }
    }
    found
}

/// Anthropic's extended-thinking budget for a reasoning effort (its minimum is 1,024).
fn thinking_budget(effort: &str) -> Option<u32> {
    match effort {
        "low" => Some(1_024),
        "medium" => Some(4_096),
        "high" | "xhigh" => Some(16_384),
        _ => None,
    }
}

/// What a Response object echoes and carries besides its output.
#[derive(Debug, Clone)]
pub struct ResponseShell {
    pub id: String,
    pub created_at: i64,
    pub request: ResponsesRequest,
    /// The namespace of each function a `namespace` tool wraps.
    pub namespaces: std::collections::HashMap<String, String>,
}

impl ResponseShell {
    pub fn new(request: ResponsesRequest) -> ResponseShell {
        ResponseShell {
            id: new_id("resp"),
            created_at: chrono::Utc::now().timestamp(),
            namespaces: namespaces(&request),
            request,
        }
    }

    /// A function call item, with its namespace when a `namespace` tool wraps it.
    pub fn function_call(
        &self,
        id: &str,
        call_id: &str,
        name: &str,
        arguments: &str,
        status: &str,
    ) -> Value {
        let mut item = function_call_item(id, call_id, name, arguments, status);
        if let Some(namespace) = self.namespaces.get(name) {
            item["namespace"] = json!(namespace);
        }
        item
    }

    /// The Response object: `status` (`in_progress`, `completed`, `incomplete`, `failed`),
    /// the served `model`, `output`, `usage` once known.
    pub fn object(
        &self,
        status: &str,
        model: &str,
        output: &[Value],
        usage: Option<&Usage>,
    ) -> Value {
        let body = &self.request.body;
        let echo = |name: &str, default: Value| {
            body.get(name)
                .filter(|v| !v.is_null())
                .cloned()
                .unwrap_or(default)
        };
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": null,
            "instructions": self.request.instructions,
            "max_output_tokens": echo("max_output_tokens", Value::Null),
            "model": model,
            "output": output,
            "parallel_tool_calls": echo("parallel_tool_calls", json!(true)),
            "previous_response_id": self.request.previous_response_id,
            "reasoning": echo("reasoning", json!({"effort": null, "summary": null})),
            "store": self.request.store,
            "temperature": echo("temperature", json!(1.0)),
            "text": echo("text", json!({"format": {"type": "text"}})),
            "tool_choice": echo("tool_choice", json!("auto")),
            "tools": echo("tools", json!([])),
            "top_p": echo("top_p", json!(1.0)),
            "truncation": "disabled",
            "usage": usage.map(usage_object),
            "user": echo("user", Value::Null),
            "metadata": echo("metadata", json!({})),
        })
    }

    /// The finished Response object, with `status` and `incomplete_details` from the finish
    /// reason.
    pub fn finished(
        &self,
        model: &str,
        output: &[Value],
        usage: &Usage,
        finish_reason: Option<&str>,
        metadata: Value,
    ) -> Value {
        let incomplete = match finish_reason {
            Some("length") => Some("max_output_tokens"),
            Some("content_filter") => Some("content_filter"),
            _ => None,
        };
        let mut object = self.object(
            if incomplete.is_some() {
                "incomplete"
            } else {
                "completed"
            },
            model,
            output,
            Some(usage),
        );
        if let Some(reason) = incomplete {
            object["incomplete_details"] = json!({"reason": reason});
        }
        object["_metadata"] = metadata;
        object
    }
}

/// The Responses API's `usage` of the billed usage: every input token (cached reads and
/// cache writes included), reasoning tokens inside the output.
pub fn usage_object(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.input_tokens(),
        "input_tokens_details": {
            "cached_tokens": usage.cached_input_tokens,
            "cache_write_tokens": usage.cache_write_input_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens(),
    })
}

/// The answer's output items: as a native Responses provider sent them, else translated —
/// a reasoning item (the reasoning text as its summary), the message, each function call.
pub fn output_items(shell: &ResponseShell, completion: &ChatCompletion) -> Vec<Value> {
    if let Some(Value::Array(items)) = &completion.native_output {
        return items.clone();
    }
    let Some(choice) = completion.choices.first() else {
        return Vec::new();
    };
    let message = serde_json::to_value(&choice.message).unwrap_or(Value::Null);
    let mut items = Vec::new();
    if let Some(reasoning) = message[REASONING_CONTENT]
        .as_str()
        .filter(|t| !t.is_empty())
    {
        items.push(reasoning_item(&new_id("rs"), reasoning));
    }
    if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
        items.push(message_item(&new_id("msg"), text, "completed"));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        items.push(shell.function_call(
            &new_id("fc"),
            call["id"].as_str().unwrap_or_default(),
            call["function"]["name"].as_str().unwrap_or_default(),
            call["function"]["arguments"].as_str().unwrap_or_default(),
            "completed",
        ));
    }
    items
}

pub fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message", "id": id, "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    })
}

pub fn function_call_item(
    id: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
    status: &str,
) -> Value {
    json!({
        "type": "function_call", "id": id, "call_id": call_id, "name": name,
        "arguments": arguments, "status": status,
    })
}

pub fn reasoning_item(id: &str, summary: &str) -> Value {
    json!({
        "type": "reasoning", "id": id,
        "summary": [{"type": "summary_text", "text": summary}],
    })
}

/// A buffered answer as the Response object, and its output items (for the store).
pub fn answer(shell: &ResponseShell, completed: Completed) -> (Value, Vec<Value>) {
    let output = output_items(shell, &completed.response);
    let finish = completed
        .response
        .choices
        .first()
        .and_then(|c| serde_json::to_value(c.finish_reason).ok())
        .and_then(|v| v.as_str().map(str::to_string));
    let object = shell.finished(
        &completed.response.model,
        &output,
        &completed.usage,
        finish.as_deref(),
        completed.metadata,
    );
    (object, output)
}

/// Input items with ids (for `input_items`): each item keeps its own, or gets one.
pub fn with_ids(items: &[Value]) -> Vec<Value> {
    items
        .iter()
        .map(|item| {
            let mut item = item.clone();
            if item.get("id").is_none_or(Value::is_null) {
                let prefix = match item["type"].as_str() {
                    Some("function_call") => "fc",
                    Some("function_call_output") => "fco",
                    Some("reasoning") => "rs",
                    _ => "msg",
                };
                item["id"] = json!(new_id(prefix));
            }
            if item.get("type").is_none() && item.get("role").is_some() {
                item["type"] = json!("message");
            }
            item
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> Result<ChatRequest, ChatError> {
        let parsed = parse(body.to_string().as_bytes())?;
        to_chat_request(&parsed, Vec::new())
    }

    #[test]
    fn a_string_input_is_one_user_message_after_the_instructions() {
        let chat = request(
            json!({"model": "gpt-4o", "input": "Hi", "instructions": "Be brief.",
                                   "max_output_tokens": 50}),
        )
        .unwrap();
        let messages = serde_json::to_value(&chat.messages).unwrap();
        assert_eq!(messages[0]["role"], "system");
        assert_eq!(messages[0]["content"], "Be brief.");
        assert_eq!(messages[1]["role"], "user");
        assert_eq!(chat.requested_output_tokens(), Some(50));
        assert!(chat.native_responses.is_some());
    }

    #[test]
    fn function_calls_and_outputs_become_tool_turns() {
        let chat = request(json!({"model": "gpt-4o", "input": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": "{\"city\":\"Rome\"}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "c2", "output": "rain"},
        ], "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}]}))
        .unwrap();
        let messages = serde_json::to_value(&chat.messages).unwrap();
        assert_eq!(messages[1]["role"], "assistant");
        assert_eq!(messages[1]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(messages[2]["role"], "tool");
        assert_eq!(messages[2]["tool_call_id"], "c1");
        assert_eq!(messages[3]["content"], "rain");
        let tools = serde_json::to_value(&chat.tools).unwrap();
        assert_eq!(tools[0]["function"]["name"], "weather");
    }

    #[test]
    fn built_in_tools_and_bad_items_are_400s_naming_the_field() {
        for (body, param) in [
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}),
                "input[0].type",
            ),
            (
                json!({"model": "m", "input": "x", "background": true}),
                "background",
            ),
            (json!({"model": "m"}), "input"),
            (json!({"input": "x"}), "model"),
            (
                json!({"model": "m", "input": "x", "max_output_tokens": 0}),
                "max_output_tokens",
            ),
            (
                json!({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}),
                "text.format.type",
            ),
        ] {
            match request(body.clone()) {
                Err(ChatError::Invalid { param: Some(p), .. }) => assert_eq!(p, param, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn json_schema_and_reasoning_map_to_chat_parameters() {
        let chat = request(json!({"model": "m", "input": "x",
            "text": {"format": {"type": "json_schema", "name": "city", "schema": {"type": "object"}, "strict": true}},
            "reasoning": {"effort": "medium"}})).unwrap();
        let value = serde_json::to_value(&chat).unwrap();
        assert_eq!(value["response_format"]["json_schema"]["name"], "city");
        assert_eq!(value["reasoning_effort"], "medium");
        assert_eq!(value["thinking"]["budget_tokens"], 4096);
    }
}
