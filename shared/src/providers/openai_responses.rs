//! The OpenAI Responses API as an outbound format: a request that came in as one
//! ([`ChatRequest::native_responses`]) goes to `POST {base_url}/responses` of an
//! OpenAI-format provider that serves it ([`UpstreamTarget::responses_api`]), so that
//! reasoning items and their encrypted content survive a turn. The answer (JSON or SSE)
//! is read into the canonical [`ChatCompletion`] / chunks, so routing, settlement and the
//! ledger work as for chat completions, and carries the provider's `output` items as they
//! came ([`ChatCompletion::native_output`]).
//!
//! The body is the client's, with what the hold and Switchboard's own state decide put in:
//! the upstream's model id, `max_output_tokens` at the hold's limit, `store: false`
//! (Switchboard stores responses itself; `previous_response_id` was already expanded into
//! `input`) and `include: ["reasoning.encrypted_content"]` (reasoning survives without
//! upstream state). On the platform's key only [`FORWARDED_FIELDS`] pass, and only tools
//! the provider bills as tokens.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::call::{ResponseContext, UpstreamCall, UpstreamTarget, join_url};
use super::error::ProviderError;
use super::request::{ChatRequest, ToolCall};
use super::response::{
    ChatCompletion, ChatCompletionChunk, Choice, Delta, FinishReason, FunctionCallDelta,
    REASONING_CONTENT, ResponseMessage, ToolCallDelta, Usage,
};
use super::sse::SseEvent;
use super::stream::{EventDecoder, StreamTally};
use crate::catalog::ApiFormat;

/// What the `include` gets so that reasoning survives statelessly (`store: false`).
pub const ENCRYPTED_REASONING: &str = "reasoning.encrypted_content";

/// Responses request fields that reach the provider on the platform's key besides those
/// Switchboard sets itself (`model`, `max_output_tokens`, `store`, `stream`, `include`):
/// each is free or billed as ordinary tokens (reasoning tokens are output tokens, bounded
/// by `max_output_tokens`). Any other field is dropped there; on a user's own key every
/// field passes but [`NEVER_FORWARDED`].
pub const FORWARDED_FIELDS: &[&str] = &[
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "reasoning",
    "temperature",
    "top_p",
    "top_logprobs",
    "metadata",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "truncation",
    "max_tool_calls",
    // Only `auto` / `default` pass on the platform's key (see `build_request`).
    "service_tier",
];

/// Never forwarded, whatever the key: Switchboard's own state replaces them (the client's
/// `previous_response_id` is already expanded into `input`; upstream conversations and
/// background runs would hold state and answers Switchboard never sees), or Switchboard
/// sets them itself.
const NEVER_FORWARDED: &[&str] = &[
    "previous_response_id",
    "conversation",
    "background",
    "model",
    "max_output_tokens",
    "store",
    "stream",
    "stream_options",
    "include",
];

/// Tool types the provider bills as ordinary tokens: the client runs them. Built-in tools
/// the provider runs itself (web search, file search, code interpreter, computer use,
/// image generation, remote MCP servers, and any type added later) are billed beyond token
/// prices or fetch content no hold can bound: refused on the platform's key.
const TOKEN_PRICED_TOOLS: &[&str] = &["function", "custom", "local_shell", "shell", "apply_patch"];

/// Whether this call goes to the provider's `/responses` natively.
pub(crate) fn serves_natively(target: &UpstreamTarget, request: &ChatRequest) -> bool {
    target.api_format == ApiFormat::OpenAi
        && target.responses_api
        && request.native_responses.is_some()
}

/// The upstream call for `body` (the client's Responses request). `encrypted_reasoning`
/// adds [`ENCRYPTED_REASONING`] to `include` (off only for the one retry of a model that
/// refused it: see [`refuses_encrypted_reasoning`]).
pub(crate) fn build_request(
    target: &UpstreamTarget,
    request: &ChatRequest,
    stream: bool,
    encrypted_reasoning: bool,
) -> Result<UpstreamCall, ProviderError> {
    let Some(Value::Object(client)) = &request.native_responses else {
        return Err(ProviderError::InvalidRequest {
            param: None,
            message: "the Responses request is not a JSON object".to_owned(),
        });
    };
    let platform_key = !target.forward_unpriced_fields;
    if platform_key {
        refuse_billed_tools(client)?;
    }
    let mut body = Map::new();
    for (name, value) in client {
        let name = name.as_str();
        if NEVER_FORWARDED.contains(&name)
            || (platform_key && !FORWARDED_FIELDS.contains(&name))
            || (platform_key && name == "service_tier" && !free_service_tier(value))
        {
            continue;
        }
        body.insert(name.to_owned(), value.clone());
    }
    body.insert("model".to_owned(), Value::String(target.model_id.clone()));
    // The output limit the hold assumed, never above it; the client's own when nothing
    // limits it (probes).
    let client_limit = client
        .get("max_output_tokens")
        .and_then(Value::as_u64)
        .map(|limit| u32::try_from(limit).unwrap_or(u32::MAX));
    let requested = request.requested_output_tokens().or(client_limit);
    if let Some(limit) = target.output_tokens(requested) {
        body.insert("max_output_tokens".to_owned(), Value::from(limit));
    }
    body.insert("store".to_owned(), Value::Bool(false));
    let mut include: Vec<Value> = match client.get("include") {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    };
    let asked = include
        .iter()
        .any(|v| v.as_str() == Some(ENCRYPTED_REASONING));
    if encrypted_reasoning && !asked {
        include.push(Value::from(ENCRYPTED_REASONING));
    }
    if !include.is_empty() {
        body.insert("include".to_owned(), Value::Array(include));
    }
    if stream {
        body.insert("stream".to_owned(), Value::Bool(true));
        // `include_obfuscation` and the like: free.
        if let Some(options @ Value::Object(_)) = client.get("stream_options") {
            body.insert("stream_options".to_owned(), options.clone());
        }
    }
    Ok(UpstreamCall {
        url: join_url(&target.base_url, "responses"),
        body: Value::Object(body),
    })
}

fn free_service_tier(value: &Value) -> bool {
    value.is_null() || matches!(value.as_str(), Some("auto" | "default"))
}

fn refuse_billed_tools(client: &Map<String, Value>) -> Result<(), ProviderError> {
    for (i, tool) in client
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let kind = tool.get("type").and_then(Value::as_str).unwrap_or_default();
        if !TOKEN_PRICED_TOOLS.contains(&kind) {
            return Err(ProviderError::InvalidRequest {
                param: Some(format!("tools[{i}].type")),
                message: format!(
                    "the tool type `{}` is run and billed by the provider beyond its token prices, so it is accepted only with your own provider key (BYOK)",
                    kind.chars().take(64).collect::<String>()
                ),
            });
        }
    }
    Ok(())
}

/// Whether the provider refused the added `include: ["reasoning.encrypted_content"]`
/// (OpenAI answers 400 "Encrypted content is not supported with this model." for models
/// that do not reason, such as gpt-4o): the call is then made once more without it.
pub(crate) fn refuses_encrypted_reasoning(error: &ProviderError) -> bool {
    match error {
        ProviderError::Status {
            status: 400,
            message,
            ..
        } => message.to_ascii_lowercase().contains("encrypted content"),
        _ => false,
    }
}

/// Whether the client asked for the encrypted reasoning itself (then a model that refuses
/// it refuses the client's request, and the refusal stands).
pub(crate) fn client_asked_encrypted_reasoning(request: &ChatRequest) -> bool {
    request
        .native_responses
        .as_ref()
        .and_then(|body| body.get("include"))
        .and_then(Value::as_array)
        .is_some_and(|items| {
            items
                .iter()
                .any(|v| v.as_str() == Some(ENCRYPTED_REASONING))
        })
}

/// `usage` of a Response object in disjoint buckets: `input_tokens` counts the cached ones
/// (`input_tokens_details.cached_tokens`), `output_tokens` the reasoning ones. Cache writes
/// some models report (`input_tokens_details.cache_write_tokens`) stay uncached input, as
/// on chat completions: OpenAI prices them as input. `None` when the answer has none.
fn usage_of(response: &Value) -> Option<Usage> {
    let usage = response.get("usage").filter(|u| u.is_object())?;
    let input = usage.get("input_tokens").and_then(Value::as_u64)?;
    let output = usage.get("output_tokens").and_then(Value::as_u64)?;
    let detail = |path: &str| usage.pointer(path).and_then(Value::as_u64).unwrap_or(0);
    let cached = detail("/input_tokens_details/cached_tokens").min(input);
    Some(Usage {
        uncached_input_tokens: input - cached,
        cached_input_tokens: cached,
        output_tokens: output,
        reasoning_tokens: detail("/output_tokens_details/reasoning_tokens").min(output),
        ..Usage::default()
    })
}

/// Why the response stopped: `completed` is a stop (tool calls when it called a
/// function), `incomplete` says why in `incomplete_details.reason`. A failed (or
/// otherwise unfinished) response is an error.
fn finish_reason(
    response: &Value,
    has_calls: bool,
    context: &ResponseContext,
) -> Result<FinishReason, ProviderError> {
    match response.get("status").and_then(Value::as_str) {
        // Compatible servers may leave the status out of a finished answer.
        Some("completed") | None if has_calls => Ok(FinishReason::ToolCalls),
        Some("completed") | None => Ok(FinishReason::Stop),
        Some("incomplete") => Ok(
            match response
                .pointer("/incomplete_details/reason")
                .and_then(Value::as_str)
            {
                Some("content_filter") => FinishReason::ContentFilter,
                _ => FinishReason::Length,
            },
        ),
        Some("failed") => Err(ProviderError::invalid_response(format!(
            "the response failed: {}",
            failure_of(response, context).0
        ))),
        Some(other) => Err(ProviderError::invalid_response(format!(
            "the response ended with status `{}`",
            context.sanitize(other)
        ))),
    }
}

/// The sanitized message of a failed response's `error`, and whether another candidate
/// is worth trying (not for a prompt or image the provider refused as invalid).
fn failure_of(response: &Value, context: &ResponseContext) -> (String, bool, Option<String>) {
    let error = response.get("error").unwrap_or(&Value::Null);
    error_parts(error, context)
}

/// `{code, message}` (a Response's `error`, or an `error` stream event).
fn error_parts(error: &Value, context: &ResponseContext) -> (String, bool, Option<String>) {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| error.as_str())
        .unwrap_or("unspecified error");
    let code = error
        .get("code")
        .or_else(|| error.get("type"))
        .and_then(Value::as_str)
        .map(|code| context.sanitize(code));
    let retryable = !code.as_deref().is_some_and(|code| {
        code.starts_with("invalid_") || code.contains("image") || code == "context_length_exceeded"
    });
    (context.sanitize(message), retryable, code)
}

/// An `error` object in a 200 body from a compatible server that does not send a status.
fn embedded_error(value: &Value, context: &ResponseContext) -> Option<ProviderError> {
    let error = value.get("error").filter(|e| !e.is_null())?;
    if value.get("status").and_then(Value::as_str) == Some("failed")
        || value.get("output").is_none()
    {
        return Some(ProviderError::invalid_response(format!(
            "the response failed: {}",
            error_parts(error, context).0
        )));
    }
    None
}

/// What the output items say, in the canonical answer's terms.
#[derive(Debug, Default)]
struct Output {
    text: String,
    has_text: bool,
    refusal: Option<String>,
    tool_calls: Vec<ToolCall>,
    reasoning: Vec<String>,
    /// A client-run call that is not a function (`custom_tool_call`, `local_shell_call`...):
    /// the answer still ends for tools.
    other_calls: bool,
}

fn read_output(items: &[Value]) -> Output {
    let mut out = Output::default();
    for item in items {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                for part in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let text = part.get("text").and_then(Value::as_str);
                    match part.get("type").and_then(Value::as_str) {
                        Some("output_text") => {
                            out.has_text = true;
                            out.text.push_str(text.unwrap_or_default());
                        }
                        Some("refusal") => {
                            let refusal = part.get("refusal").and_then(Value::as_str);
                            out.refusal
                                .get_or_insert_with(String::new)
                                .push_str(refusal.unwrap_or_default());
                        }
                        _ => {}
                    }
                }
            }
            Some("function_call") => {
                let field = |key: &str| {
                    item.get(key)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                out.tool_calls.push(ToolCall::function(
                    field("call_id"),
                    field("name"),
                    field("arguments"),
                ));
            }
            Some("reasoning") => {
                let texts = |key: &str| -> Vec<String> {
                    item.get(key)
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|part| part.get("text").and_then(Value::as_str))
                        .filter(|text| !text.is_empty())
                        .map(str::to_owned)
                        .collect()
                };
                // The summary OpenAI gives; the reasoning text itself where a server
                // shows it (open-weight models) and no summary came.
                let summary = texts("summary");
                out.reasoning.extend(if summary.is_empty() {
                    texts("content")
                } else {
                    summary
                });
            }
            Some(kind) if kind.ends_with("_call") && kind != "function_call" => {
                out.other_calls |= matches!(
                    kind,
                    "custom_tool_call" | "local_shell_call" | "shell_call" | "apply_patch_call"
                );
            }
            _ => {}
        }
    }
    out
}

/// Reasoning parts are joined by a blank line, on streams too.
const REASONING_SEPARATOR: &str = "\n\n";

pub(crate) fn parse_completion(
    body: &[u8],
    context: &ResponseContext,
) -> Result<(ChatCompletion, Option<Usage>), ProviderError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ProviderError::invalid_response(format!("the answer is not valid JSON ({e})"))
    })?;
    if let Some(error) = embedded_error(&value, context) {
        return Err(error);
    }
    let items = value
        .get("output")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::invalid_response("the answer has no `output` array"))?;
    let output = read_output(items);
    let has_calls = !output.tool_calls.is_empty() || output.other_calls;
    let finish = finish_reason(&value, has_calls, context)?;
    let content = (output.has_text || output.tool_calls.is_empty()).then_some(output.text);
    let mut message = ResponseMessage::assistant(content, output.tool_calls);
    message.refusal = output.refusal;
    if !output.reasoning.is_empty() {
        message.extra.insert(
            REASONING_CONTENT.into(),
            Value::String(output.reasoning.join(REASONING_SEPARATOR)),
        );
    }
    let completion = ChatCompletion {
        id: string_or(&value, "id", ""),
        object: "chat.completion".to_owned(),
        created: value
            .get("created_at")
            .and_then(Value::as_f64)
            .map_or(context.created, |at| at as u64),
        model: string_or(&value, "model", &context.model),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: Some(finish),
            logprobs: None,
        }],
        usage: None,
        system_fingerprint: None,
        extra: Map::new(),
        native_output: Some(Value::Array(items.clone())),
    };
    Ok((completion, usage_of(&value)))
}

fn string_or(value: &Value, key: &str, default: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
        .unwrap_or(default)
        .to_owned()
}

/// Responses events → chunks: `response.created` opens (role chunk), the text, refusal,
/// function-call argument and reasoning deltas stream, `response.completed` (or
/// `response.incomplete`) ends with the finish reason, the usage and the output items;
/// `response.failed` and `error` break the stream. The body ending before the end is a
/// cut stream ([`EventDecoder::on_eof`]).
pub(crate) struct StreamDecoder {
    context: ResponseContext,
    id: String,
    model: String,
    /// Output index of a function call → its tool-call index.
    tools: HashMap<u64, u32>,
    next_tool: u32,
    /// The reasoning part the last reasoning delta belonged to (output index, part index).
    reasoning_part: Option<(u64, u64)>,
}

impl StreamDecoder {
    pub(crate) fn new(context: ResponseContext) -> StreamDecoder {
        let model = context.model.clone();
        StreamDecoder {
            context,
            id: String::new(),
            model,
            tools: HashMap::new(),
            next_tool: 0,
            reasoning_part: None,
        }
    }

    fn chunk(&self, delta: Delta, finish: Option<FinishReason>) -> ChatCompletionChunk {
        ChatCompletionChunk::new(&self.id, self.context.created, &self.model, delta, finish)
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

    fn reasoning_delta(&mut self, value: &Value, part_key: &str) -> Option<ChatCompletionChunk> {
        let text = value
            .get("delta")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if text.is_empty() {
            return None;
        }
        let index = |key: &str| value.get(key).and_then(Value::as_u64).unwrap_or(0);
        let part = (index("output_index"), index(part_key));
        let mut shown = String::new();
        if self.reasoning_part.is_some_and(|last| last != part) {
            shown.push_str(REASONING_SEPARATOR);
        }
        self.reasoning_part = Some(part);
        shown.push_str(text);
        let mut delta = Delta::default();
        delta
            .extra
            .insert(REASONING_CONTENT.into(), Value::String(shown));
        Some(self.chunk(delta, None))
    }

    fn open(&mut self, response: &Value) {
        self.id = string_or(response, "id", &self.id);
        self.model = string_or(response, "model", &self.model);
    }
}

impl EventDecoder for StreamDecoder {
    fn on_event(
        &mut self,
        event: SseEvent,
        tally: &mut StreamTally,
        out: &mut Vec<ChatCompletionChunk>,
    ) -> Result<bool, ProviderError> {
        let data = event.data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Ok(false);
        }
        let value: Value = serde_json::from_str(data).map_err(|e| {
            ProviderError::invalid_response(format!("a stream event is not valid JSON ({e})"))
        })?;
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default();
        let text = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match kind {
            "response.created" => {
                self.open(value.get("response").unwrap_or(&Value::Null));
                out.push(self.chunk(
                    Delta {
                        role: Some("assistant".to_owned()),
                        content: Some(String::new()),
                        ..Delta::default()
                    },
                    None,
                ));
            }
            "response.output_item.added" => {
                let item = value.get("item").unwrap_or(&Value::Null);
                if item.get("type").and_then(Value::as_str) == Some("function_call") {
                    let output_index = value.get("output_index").and_then(Value::as_u64);
                    let index = self.next_tool;
                    self.next_tool += 1;
                    self.tools.insert(output_index.unwrap_or(u64::MAX), index);
                    let field = |key: &str| string_or(item, key, "");
                    out.push(self.tool_delta(ToolCallDelta {
                        index,
                        id: Some(field("call_id")),
                        kind: Some("function".to_owned()),
                        function: Some(FunctionCallDelta {
                            name: Some(field("name")),
                            arguments: Some(field("arguments")),
                        }),
                    }));
                }
            }
            "response.function_call_arguments.delta" => {
                let output_index = value.get("output_index").and_then(Value::as_u64);
                let arguments = text("delta");
                if let Some(&index) = self.tools.get(&output_index.unwrap_or(u64::MAX))
                    && !arguments.is_empty()
                {
                    out.push(self.tool_delta(ToolCallDelta {
                        index,
                        id: None,
                        kind: None,
                        function: Some(FunctionCallDelta {
                            name: None,
                            arguments: Some(arguments),
                        }),
                    }));
                }
            }
            "response.output_text.delta" => {
                let delta = text("delta");
                if !delta.is_empty() {
                    out.push(self.chunk(
                        Delta {
                            content: Some(delta),
                            ..Delta::default()
                        },
                        None,
                    ));
                }
            }
            "response.refusal.delta" => {
                let delta = text("delta");
                if !delta.is_empty() {
                    out.push(self.chunk(
                        Delta {
                            refusal: Some(delta),
                            ..Delta::default()
                        },
                        None,
                    ));
                }
            }
            "response.reasoning_summary_text.delta" => {
                out.extend(self.reasoning_delta(&value, "summary_index"));
            }
            "response.reasoning_text.delta" => {
                out.extend(self.reasoning_delta(&value, "content_index"));
            }
            "response.completed" | "response.incomplete" => {
                let response = value.get("response").unwrap_or(&Value::Null);
                self.open(response);
                let items = response
                    .get("output")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let output = read_output(&items);
                let has_calls =
                    self.next_tool > 0 || !output.tool_calls.is_empty() || output.other_calls;
                let finish = finish_reason(response, has_calls, &self.context)?;
                if let Some(usage) = usage_of(response) {
                    tally.set_usage(usage, true);
                }
                let mut chunk = self.chunk(Delta::default(), Some(finish));
                chunk.native_output = Some(Value::Array(items));
                out.push(chunk);
                return Ok(true);
            }
            "response.failed" => {
                let response = value.get("response").unwrap_or(&Value::Null);
                let (message, retryable, error_type) = failure_of(response, &self.context);
                return Err(ProviderError::StreamError {
                    message,
                    error_type,
                    retryable,
                });
            }
            "error" => {
                // The event's own fields, or `{"error": {...}}` from a compatible server.
                let error = value
                    .get("error")
                    .filter(|e| e.is_object())
                    .unwrap_or(&value);
                let (message, retryable, error_type) = error_parts(error, &self.context);
                return Err(ProviderError::StreamError {
                    message,
                    error_type,
                    retryable,
                });
            }
            "" if value.get("error").is_some_and(|e| !e.is_null()) => {
                let (message, retryable, error_type) = error_parts(&value["error"], &self.context);
                return Err(ProviderError::StreamError {
                    message,
                    error_type,
                    retryable,
                });
            }
            // response.in_progress, content_part.*, *.done, output_item.done, and event
            // types added later.
            _ => {}
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::AuthType;
    use crate::secret::Secret;
    use serde_json::json;

    fn function_call_item(call_id: &str, name: &str, arguments: &str) -> Value {
        json!({"type": "function_call", "id": format!("fc_{call_id}"), "call_id": call_id,
               "name": name, "arguments": arguments, "status": "completed"})
    }

    fn target(byok: bool) -> UpstreamTarget {
        UpstreamTarget {
            api_format: ApiFormat::OpenAi,
            base_url: "https://api.example/v1/".to_owned(),
            auth_type: AuthType::Bearer,
            model_id: "upstream-model".to_owned(),
            api_key: Some(Secret::new("k")),
            max_output_tokens: Some(500),
            forward_unpriced_fields: byok,
            auto_cache_control: false,
            traceparent: None,
            responses_api: true,
            account_tag: None,
        }
    }

    fn request(native: Value) -> ChatRequest {
        let mut request: ChatRequest = serde_json::from_value(json!({
            "model": "auto", "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 4000
        }))
        .unwrap();
        request.native_responses = Some(native);
        request
    }

    fn context() -> ResponseContext {
        ResponseContext {
            model: "upstream-model".to_owned(),
            created: 7,
            prompt_estimate: 3,
            key: Some(Secret::new("sk-secret-key-0123456789")),
        }
    }

    #[test]
    fn platform_key_body_keeps_priced_fields_and_sets_switchboards_own() {
        let body = json!({
            "model": "auto", "input": "hi", "instructions": "Be brief.",
            "previous_response_id": "resp_1", "store": true, "background": true,
            "conversation": "conv_1", "max_output_tokens": 9000,
            "include": ["message.output_text.logprobs"],
            "service_tier": "priority", "prompt": {"id": "pmpt_1"},
            "reasoning": {"effort": "high", "summary": "auto"},
            "stream_options": {"include_obfuscation": false}, "made_up": 1
        });
        let call = build_request(&target(false), &request(body.clone()), false, true).unwrap();
        assert_eq!(call.url, "https://api.example/v1/responses");
        assert_eq!(
            call.body,
            json!({
                "model": "upstream-model", "input": "hi", "instructions": "Be brief.",
                "max_output_tokens": 500, "store": false,
                "include": ["message.output_text.logprobs", ENCRYPTED_REASONING],
                "reasoning": {"effort": "high", "summary": "auto"}
            })
        );
        // A user's own key: unpriced fields pass, Switchboard's own state still does not.
        let call = build_request(&target(true), &request(body), true, true).unwrap();
        let sent = call.body.as_object().unwrap();
        for kept in ["service_tier", "prompt", "made_up"] {
            assert!(sent.contains_key(kept), "{kept}");
        }
        for dropped in ["previous_response_id", "background", "conversation"] {
            assert!(!sent.contains_key(dropped), "{dropped}");
        }
        assert_eq!(sent["stream"], true);
        assert_eq!(
            sent["stream_options"],
            json!({"include_obfuscation": false})
        );
        assert_eq!(sent["store"], false);
    }

    #[test]
    fn a_retry_without_encrypted_reasoning_keeps_the_clients_include() {
        let call = build_request(
            &target(false),
            &request(json!({"input": "x"})),
            false,
            false,
        )
        .unwrap();
        assert!(call.body.get("include").is_none());
        let asked = request(json!({"input": "x", "include": [ENCRYPTED_REASONING]}));
        assert!(client_asked_encrypted_reasoning(&asked));
        let call = build_request(&target(false), &asked, false, true).unwrap();
        assert_eq!(call.body["include"], json!([ENCRYPTED_REASONING]));
    }

    #[test]
    fn built_in_tools_are_refused_on_the_platform_key_only() {
        let body = json!({"input": "x", "tools": [
            {"type": "function", "name": "f", "parameters": {}},
            {"type": "mcp", "server_label": "s", "server_url": "https://mcp.example"}
        ]});
        let error = build_request(&target(false), &request(body.clone()), false, true).unwrap_err();
        assert_eq!(error.param(), Some("tools[1].type"));
        assert!(!error.retryable());
        assert!(build_request(&target(true), &request(body), false, true).is_ok());
    }

    #[test]
    fn output_items_become_the_canonical_answer() {
        let body = json!({
            "id": "resp_9", "object": "response", "created_at": 1700000000.0,
            "status": "completed", "model": "upstream-model-2025",
            "output": [
                {"type": "reasoning", "id": "rs_1", "encrypted_content": "gAAAA",
                 "summary": [{"type": "summary_text", "text": "First."},
                             {"type": "summary_text", "text": "Second."}]},
                {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": "Calling.", "annotations": []}]},
                function_call_item("call_a", "lookup", "{\"q\":1}")
            ],
            "usage": {"input_tokens": 120, "input_tokens_details": {"cached_tokens": 100},
                      "output_tokens": 40, "output_tokens_details": {"reasoning_tokens": 25},
                      "total_tokens": 160}
        });
        let (completion, usage) =
            parse_completion(body.to_string().as_bytes(), &context()).unwrap();
        let message = &completion.choices[0].message;
        assert_eq!(message.content.as_deref(), Some("Calling."));
        assert_eq!(message.extra[REASONING_CONTENT], "First.\n\nSecond.");
        let call = &message.tool_calls.as_ref().unwrap()[0];
        assert_eq!(
            (call.id.as_str(), call.function.name.as_str()),
            ("call_a", "lookup")
        );
        assert_eq!(completion.finish_reason(), Some(FinishReason::ToolCalls));
        assert_eq!(completion.created, 1_700_000_000);
        assert_eq!(completion.native_output.as_ref(), Some(&body["output"]));
        assert_eq!(
            usage,
            Some(Usage {
                uncached_input_tokens: 20,
                cached_input_tokens: 100,
                output_tokens: 40,
                reasoning_tokens: 25,
                ..Usage::default()
            })
        );
    }

    #[test]
    fn incomplete_and_failed_responses() {
        let incomplete = json!({"status": "incomplete", "output": [],
            "incomplete_details": {"reason": "max_output_tokens"}});
        let (completion, usage) =
            parse_completion(incomplete.to_string().as_bytes(), &context()).unwrap();
        assert_eq!(completion.finish_reason(), Some(FinishReason::Length));
        assert_eq!(usage, None);
        let failed = json!({"status": "failed", "output": [],
            "error": {"code": "server_error", "message": "boom sk-secret-key-0123456789"}});
        let error = parse_completion(failed.to_string().as_bytes(), &context()).unwrap_err();
        assert!(
            matches!(error, ProviderError::InvalidResponse { .. }),
            "{error:?}"
        );
        assert!(!error.to_string().contains("sk-secret"), "{error}");
        let chat = json!({"choices": [{"message": {"content": "x"}}]});
        assert!(parse_completion(chat.to_string().as_bytes(), &context()).is_err());
    }

    #[test]
    fn refused_encrypted_content_is_recognised() {
        let refused = ProviderError::Status {
            status: 400,
            message: "Encrypted content is not supported with this model.".to_owned(),
            error_type: Some("invalid_request_error".to_owned()),
            retry_after: None,
        };
        assert!(refuses_encrypted_reasoning(&refused));
        let other = ProviderError::Status {
            status: 400,
            message: "Invalid input.".to_owned(),
            error_type: None,
            retry_after: None,
        };
        assert!(!refuses_encrypted_reasoning(&other));
    }

    fn event(kind: &str, data: Value) -> SseEvent {
        SseEvent {
            event: Some(kind.to_owned()),
            data: data.to_string(),
            id: None,
        }
    }

    #[test]
    fn stream_events_become_chunks_and_the_end_carries_usage_and_output() {
        let mut decoder = StreamDecoder::new(context());
        let mut tally = StreamTally::new(3);
        let mut out = Vec::new();
        let events = [
            event(
                "response.created",
                json!({"type": "response.created",
                "response": {"id": "resp_s", "model": "m-1", "status": "in_progress", "output": []}}),
            ),
            event(
                "response.reasoning_summary_text.delta",
                json!({"type": "response.reasoning_summary_text.delta",
                "output_index": 0, "summary_index": 0, "delta": "Think."}),
            ),
            event(
                "response.reasoning_summary_text.delta",
                json!({"type": "response.reasoning_summary_text.delta",
                "output_index": 0, "summary_index": 1, "delta": "More."}),
            ),
            event(
                "response.output_item.added",
                json!({"type": "response.output_item.added",
                "output_index": 1, "item": {"type": "function_call", "call_id": "call_x", "name": "f", "arguments": ""}}),
            ),
            event(
                "response.function_call_arguments.delta",
                json!({"type": "response.function_call_arguments.delta",
                "output_index": 1, "delta": "{\"a\":"}),
            ),
            event(
                "response.function_call_arguments.delta",
                json!({"type": "response.function_call_arguments.delta",
                "output_index": 1, "delta": "1}"}),
            ),
        ];
        for e in events {
            assert!(!decoder.on_event(e, &mut tally, &mut out).unwrap());
        }
        let output = json!([{"type": "reasoning", "encrypted_content": "gAAAA", "summary": []},
                            function_call_item("call_x", "f", "{\"a\":1}")]);
        let done = decoder
            .on_event(
                event(
                    "response.completed",
                    json!({"type": "response.completed", "response": {
                    "id": "resp_s", "model": "m-1", "status": "completed", "output": output,
                    "usage": {"input_tokens": 10, "output_tokens": 5,
                              "input_tokens_details": {"cached_tokens": 4},
                              "output_tokens_details": {"reasoning_tokens": 2}}}}),
                ),
                &mut tally,
                &mut out,
            )
            .unwrap();
        assert!(done);
        let reasoning: Vec<&str> = out
            .iter()
            .filter_map(|c| c.choices[0].delta.extra.get(REASONING_CONTENT)?.as_str())
            .collect();
        assert_eq!(reasoning, ["Think.", "\n\nMore."]);
        let first_call = &out[3].choices[0].delta.tool_calls.as_ref().unwrap()[0];
        assert_eq!(first_call.id.as_deref(), Some("call_x"));
        let last = out.last().unwrap();
        assert_eq!(last.finish_reason(), Some(FinishReason::ToolCalls));
        assert_eq!(last.native_output.as_ref(), Some(&output));
        assert_eq!(last.id, "resp_s");
        let (usage, estimated) = tally.usage();
        assert!(!estimated);
        assert_eq!(
            (usage.uncached_input_tokens, usage.cached_input_tokens),
            (6, 4)
        );
        assert_eq!((usage.output_tokens, usage.reasoning_tokens), (5, 2));
    }

    #[test]
    fn failed_and_error_events_break_the_stream() {
        let mut decoder = StreamDecoder::new(context());
        let mut tally = StreamTally::new(3);
        let failed = event(
            "response.failed",
            json!({"type": "response.failed", "response": {
            "status": "failed", "error": {"code": "server_error", "message": "overloaded"}}}),
        );
        let error = decoder
            .on_event(failed, &mut tally, &mut Vec::new())
            .unwrap_err();
        assert!(error.retryable());
        assert!(error.to_string().contains("overloaded"), "{error}");
        let refused = event(
            "error",
            json!({"type": "error", "code": "invalid_prompt",
            "message": "no", "param": null}),
        );
        let error = decoder
            .on_event(refused, &mut tally, &mut Vec::new())
            .unwrap_err();
        assert!(!error.retryable());
    }
}
