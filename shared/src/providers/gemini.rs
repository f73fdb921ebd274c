//! The Google Gemini adapter: canonical request → `POST {base}/models/{model}:generateContent`
//! (or `:streamGenerateContent?alt=sse`), and `GenerateContentResponse`s back to OpenAI's
//! shape.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::call::{ResponseContext, UpstreamCall, UpstreamTarget, join_url};
use super::error::{ProviderError, error_text};
use super::request::{
    ChatRequest, Message, MessageContent, ResponseFormatKind, Role, ToolCall, ToolChoice,
    ToolChoiceMode,
};
use super::response::{
    ChatCompletion, ChatCompletionChunk, Choice, Delta, FinishReason, FunctionCallDelta,
    ResponseMessage, ToolCallDelta, Usage,
};
use super::sse::SseEvent;
use super::stream::{EventDecoder, StreamTally};
use super::translate::{ImageSource, image_source, tool_arguments};
use crate::catalog::ApiFormat;

const FORMAT: ApiFormat = ApiFormat::Gemini;
/// Gemini 3 returns a `thoughtSignature` with each function call and wants it back with
/// that call in the history. OpenAI clients only keep the tool-call id, so the signature
/// rides in the id after this separator.
const SIGNATURE_SEPARATOR: &str = "__thought__";
/// How deep `$ref`s are inlined in tool schemas (recursive schemas are cut there).
const MAX_SCHEMA_DEPTH: usize = 16;

pub(crate) fn build_request(
    target: &UpstreamTarget,
    request: &ChatRequest,
    stream: bool,
) -> Result<UpstreamCall, ProviderError> {
    let mut body = Map::new();
    let (system, contents) = convert_messages(request)?;
    body.insert("contents".into(), Value::Array(contents));
    if let Some(system) = system {
        body.insert("systemInstruction".into(), system);
    }
    insert_tools(request, &mut body)?;
    let mut config = generation_config(request);
    if let Some(limit) = target.output_tokens(request.requested_output_tokens()) {
        // The limit the hold assumed: the hold stays an upper bound.
        config.insert("maxOutputTokens".into(), json!(limit));
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    let model = target
        .model_id
        .strip_prefix("models/")
        .unwrap_or(&target.model_id);
    let path = if stream {
        format!(
            "models/{}:streamGenerateContent?alt=sse",
            encode_segment(model)
        )
    } else {
        format!("models/{}:generateContent", encode_segment(model))
    };
    Ok(UpstreamCall {
        url: join_url(&target.base_url, &path),
        body: Value::Object(body),
    })
}

/// Percent-encodes a model id for use as one path segment.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn convert_messages(request: &ChatRequest) -> Result<(Option<Value>, Vec<Value>), ProviderError> {
    let mut system_parts: Vec<Value> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // Tool results name their function in Gemini; OpenAI's tool messages only carry the
    // call id, so the names come from the assistant's earlier calls.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, message) in request.messages.iter().enumerate() {
        let (role, parts) = match message.role {
            Role::System | Role::Developer => {
                system_parts.extend(text_parts(message, i)?);
                continue;
            }
            Role::User => ("user", user_parts(message, i)?),
            Role::Assistant => {
                for call in message.tool_calls.iter().flatten() {
                    call_names.insert(call.id.as_str(), call.function.name.as_str());
                }
                ("model", model_parts(message, i)?)
            }
            Role::Tool => {
                let id = message.tool_call_id.as_deref().unwrap_or_default();
                let name =
                    call_names
                        .get(id)
                        .copied()
                        .ok_or_else(|| ProviderError::InvalidRequest {
                            param: Some(format!("messages[{i}].tool_call_id")),
                            message: "`tool_call_id` matches no earlier assistant tool call"
                                .to_owned(),
                        })?;
                ("user", vec![function_response(name, message)])
            }
            Role::Function | Role::Unknown(_) => {
                return Err(ProviderError::unsupported(
                    FORMAT,
                    format!("messages[{i}].role"),
                    "legacy `function` messages are not supported for Gemini models; use `tools` and `tool` messages",
                ));
            }
        };
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last_role, last_parts)) if *last_role == role => last_parts.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
    let system = (!system_parts.is_empty()).then(|| json!({"parts": system_parts}));
    let contents = turns
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();
    Ok((system, contents))
}

fn text_parts(message: &Message, i: usize) -> Result<Vec<Value>, ProviderError> {
    let Some(content) = &message.content else {
        return Ok(Vec::new());
    };
    let pieces = content
        .text_pieces()
        .map_err(|(j, kind)| unsupported_part(i, j, kind))?;
    Ok(pieces
        .into_iter()
        .filter(|(text, _)| !text.is_empty())
        .map(|(text, _)| json!({"text": text}))
        .collect())
}

fn user_parts(message: &Message, i: usize) -> Result<Vec<Value>, ProviderError> {
    let Some(MessageContent::Parts(content)) = &message.content else {
        return text_parts(message, i);
    };
    let mut parts = Vec::new();
    for (j, part) in content.iter().enumerate() {
        match part.kind.as_str() {
            "text" => {
                if let Some(text) = part.text.as_deref().filter(|t| !t.is_empty()) {
                    parts.push(json!({"text": text}));
                }
            }
            "image_url" => {
                let param = format!("messages[{i}].content[{j}].image_url.url");
                let url = part
                    .image_url
                    .as_ref()
                    .map_or("", |image| image.url.as_str());
                parts.push(match image_source(FORMAT, url, &param)? {
                    ImageSource::Base64 { media_type, data } => {
                        json!({"inlineData": {"mimeType": media_type, "data": data}})
                    }
                    ImageSource::Url(url) => {
                        json!({"fileData": {"mimeType": mime_from_extension(&url), "fileUri": url}})
                    }
                });
            }
            other => return Err(unsupported_part(i, j, other)),
        }
    }
    Ok(parts)
}

/// Gemini wants a MIME type with `fileData`; guessed from the URL's extension.
fn mime_from_extension(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("heic") => "image/heic",
        Some("heif") => "image/heif",
        Some("pdf") => "application/pdf",
        _ => "image/jpeg",
    }
}

fn model_parts(message: &Message, i: usize) -> Result<Vec<Value>, ProviderError> {
    if message.function_call.is_some() {
        return Err(ProviderError::unsupported(
            FORMAT,
            format!("messages[{i}].function_call"),
            "legacy `function_call` messages are not supported for Gemini models; use `tool_calls`",
        ));
    }
    let mut parts = text_parts(message, i)?;
    for (j, call) in message.tool_calls.iter().flatten().enumerate() {
        let param = format!("messages[{i}].tool_calls[{j}].function.arguments");
        let args = tool_arguments(&call.function.arguments, &param)?;
        let mut part = json!({"functionCall": {"name": call.function.name, "args": args}});
        if let Some((_, signature)) = call.id.split_once(SIGNATURE_SEPARATOR) {
            part["thoughtSignature"] = json!(signature);
        }
        parts.push(part);
    }
    Ok(parts)
}

/// A tool result; Gemini wants an object, so text that is not a JSON object is wrapped as
/// `{"content": text}`.
fn function_response(name: &str, message: &Message) -> Value {
    let text = message
        .content
        .as_ref()
        .map(|content| content.joined_text("\n"))
        .unwrap_or_default();
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(object)) => Value::Object(object),
        _ => json!({"content": text}),
    };
    json!({"functionResponse": {"name": name, "response": response}})
}

fn unsupported_part(i: usize, j: usize, kind: &str) -> ProviderError {
    ProviderError::unsupported(
        FORMAT,
        format!("messages[{i}].content[{j}].type"),
        format!("content parts of type `{kind}` are not supported for Gemini models here"),
    )
}

fn insert_tools(request: &ChatRequest, body: &mut Map<String, Value>) -> Result<(), ProviderError> {
    for (i, tool) in request.tools.iter().flatten().enumerate() {
        if tool.kind != "function" {
            return Err(ProviderError::unsupported(
                FORMAT,
                format!("tools[{i}].type"),
                format!(
                    "tools of type `{}` are not supported for Gemini models",
                    tool.kind
                ),
            ));
        }
    }
    let declarations: Vec<Value> = request
        .tool_functions()
        .map(|function| {
            let mut declaration = json!({"name": function.name});
            if let Some(description) = &function.description {
                declaration["description"] = json!(description);
            }
            // Gemini rejects a parameters object without properties.
            if let Some(parameters) = &function.parameters
                && parameters
                    .get("properties")
                    .and_then(Value::as_object)
                    .is_some_and(|properties| !properties.is_empty())
            {
                declaration["parameters"] = gemini_schema(parameters);
            }
            declaration
        })
        .collect();
    if declarations.is_empty() {
        return Ok(());
    }
    body.insert(
        "tools".into(),
        json!([{"functionDeclarations": declarations}]),
    );
    if let Some(choice) = request.effective_tool_choice() {
        let config = match choice {
            ToolChoice::Mode(ToolChoiceMode::Auto) => json!({"mode": "AUTO"}),
            ToolChoice::Mode(ToolChoiceMode::Required) => json!({"mode": "ANY"}),
            ToolChoice::Mode(ToolChoiceMode::None) => json!({"mode": "NONE"}),
            ToolChoice::Named(named) => {
                json!({"mode": "ANY", "allowedFunctionNames": [named.function.name]})
            }
        };
        body.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": config}),
        );
    }
    Ok(())
}

fn generation_config(request: &ChatRequest) -> Map<String, Value> {
    let mut config = Map::new();
    if let Some(temperature) = request.temperature {
        config.insert("temperature".into(), json!(temperature));
    }
    if let Some(top_p) = request.top_p {
        config.insert("topP".into(), json!(top_p));
    }
    if let Some(stop) = &request.stop {
        config.insert("stopSequences".into(), json!(stop.to_vec()));
    }
    if let Some(seed) = request.seed {
        config.insert("seed".into(), json!(seed));
    }
    if let Some(penalty) = request.presence_penalty {
        config.insert("presencePenalty".into(), json!(penalty));
    }
    if let Some(penalty) = request.frequency_penalty {
        config.insert("frequencyPenalty".into(), json!(penalty));
    }
    if let Some(format) = request.json_mode() {
        config.insert("responseMimeType".into(), json!("application/json"));
        if format.kind == ResponseFormatKind::JsonSchema
            && let Some(schema) = format.json_schema.as_ref().and_then(|s| s.schema.as_ref())
        {
            config.insert("responseSchema".into(), gemini_schema(schema));
        }
    }
    config
}

/// JSON Schema → Gemini's `Schema` (an OpenAPI 3.0 subset): local `$ref`s inlined,
/// `type: [T, "null"]` → `type: T, nullable: true`, `const` → one-value `enum`,
/// `oneOf` → `anyOf`, and keywords Gemini refuses (`additionalProperties`, `$schema`,
/// `strict`, `examples`...) dropped.
pub(crate) fn gemini_schema(schema: &Value) -> Value {
    let definitions = schema
        .get("$defs")
        .or_else(|| schema.get("definitions"))
        .cloned()
        .unwrap_or(Value::Null);
    convert_schema(schema, &definitions, 0)
}

fn convert_schema(schema: &Value, definitions: &Value, depth: usize) -> Value {
    let Value::Object(object) = schema else {
        return schema.clone();
    };
    if depth > MAX_SCHEMA_DEPTH {
        return json!({"type": "object"});
    }
    if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap_or_default();
        if let Some(target) = definitions.get(name) {
            return convert_schema(target, definitions, depth + 1);
        }
        return json!({"type": "object"});
    }
    let mut out = Map::new();
    for (key, value) in object {
        match key.as_str() {
            "type" => match value {
                Value::Array(types) => {
                    let concrete: Vec<&Value> = types
                        .iter()
                        .filter(|t| t.as_str() != Some("null"))
                        .collect();
                    if concrete.len() < types.len() {
                        out.insert("nullable".into(), Value::Bool(true));
                    }
                    if let Some(first) = concrete.first() {
                        out.insert("type".into(), (*first).clone());
                    }
                }
                other => {
                    out.insert("type".into(), other.clone());
                }
            },
            "properties" => {
                if let Value::Object(properties) = value {
                    let converted: Map<String, Value> = properties
                        .iter()
                        .map(|(name, property)| {
                            (
                                name.clone(),
                                convert_schema(property, definitions, depth + 1),
                            )
                        })
                        .collect();
                    out.insert("properties".into(), Value::Object(converted));
                }
            }
            "items" => {
                out.insert(
                    "items".into(),
                    convert_schema(value, definitions, depth + 1),
                );
            }
            "anyOf" | "oneOf" => {
                if let Value::Array(options) = value {
                    let converted: Vec<Value> = options
                        .iter()
                        .map(|option| convert_schema(option, definitions, depth + 1))
                        .collect();
                    out.insert("anyOf".into(), Value::Array(converted));
                }
            }
            "const" => {
                out.insert("enum".into(), json!([value]));
            }
            "description" | "title" | "format" | "nullable" | "enum" | "required" | "minItems"
            | "maxItems" | "minProperties" | "maxProperties" | "minLength" | "maxLength"
            | "pattern" | "minimum" | "maximum" | "example" | "default" | "propertyOrdering" => {
                out.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

pub(crate) fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        // STOP, LANGUAGE, OTHER, MALFORMED_FUNCTION_CALL, FINISH_REASON_UNSPECIFIED
        _ => FinishReason::Stop,
    }
}

/// `promptTokenCount` includes the cached tokens; thoughts are output but not part of
/// `candidatesTokenCount`; tool-use prompt tokens are input.
fn usage_from(metadata: &Value) -> Usage {
    let count = |key: &str| metadata.get(key).and_then(Value::as_u64).unwrap_or(0);
    let prompt = count("promptTokenCount") + count("toolUsePromptTokenCount");
    let cached = count("cachedContentTokenCount").min(prompt);
    let thoughts = count("thoughtsTokenCount");
    Usage {
        uncached_input_tokens: prompt - cached,
        cached_input_tokens: cached,
        cache_write_input_tokens: 0,
        cache_write_1h_input_tokens: 0,
        output_tokens: count("candidatesTokenCount") + thoughts,
        reasoning_tokens: thoughts,
    }
}

/// A fresh OpenAI-style call id (Gemini's calls carry none, or an id we keep), with the
/// thought signature appended when there is one.
fn call_id(part: &Value) -> String {
    let call = part.get("functionCall").unwrap_or(&Value::Null);
    let mut id = match call.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => {
            let mut id = uuid::Uuid::new_v4().simple().to_string();
            id.truncate(24);
            format!("call_{id}")
        }
    };
    if let Some(signature) = part.get("thoughtSignature").and_then(Value::as_str) {
        id.push_str(SIGNATURE_SEPARATOR);
        id.push_str(signature);
    }
    id
}

/// What one `GenerateContentResponse` holds: visible text, function calls, finish.
struct Candidate {
    text: String,
    has_text: bool,
    calls: Vec<ToolCall>,
    finish: Option<FinishReason>,
}

fn read_candidate(value: &Value) -> Candidate {
    let candidate = value
        .get("candidates")
        .and_then(Value::as_array)
        .and_then(|candidates| candidates.first());
    let mut read = Candidate {
        text: String::new(),
        has_text: false,
        calls: Vec::new(),
        finish: None,
    };
    let parts = candidate
        .and_then(|c| c.get("content"))
        .and_then(|content| content.get("parts"))
        .and_then(Value::as_array);
    for part in parts.into_iter().flatten() {
        if part.get("thought").and_then(Value::as_bool) == Some(true) {
            // Thought summaries are not shown; their tokens are billed as output.
            continue;
        }
        if let Some(text) = part.get("text").and_then(Value::as_str) {
            read.has_text = true;
            read.text.push_str(text);
        }
        if let Some(call) = part.get("functionCall") {
            let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
            let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
            read.calls
                .push(ToolCall::function(call_id(part), name, args.to_string()));
        }
    }
    read.finish = candidate
        .and_then(|c| c.get("finishReason"))
        .and_then(Value::as_str)
        .map(finish_reason);
    // A prompt blocked before any candidate.
    if candidate.is_none()
        && value
            .get("promptFeedback")
            .and_then(|feedback| feedback.get("blockReason"))
            .is_some()
    {
        read.finish = Some(FinishReason::ContentFilter);
    }
    read
}

fn response_id(value: &Value) -> String {
    match value.get("responseId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => format!("chatcmpl-{id}"),
        _ => format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
    }
}

pub(crate) fn parse_completion(
    body: &[u8],
    context: &ResponseContext,
) -> Result<(ChatCompletion, Option<Usage>), ProviderError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ProviderError::invalid_response(format!("the answer is not valid JSON ({e})"))
    })?;
    if value.get("error").is_some() {
        let (message, _) = error_text(FORMAT, &value);
        return Err(ProviderError::invalid_response(context.sanitize(
            &message.unwrap_or_else(|| "unspecified error".to_owned()),
        )));
    }
    if value.get("candidates").is_none() && value.get("promptFeedback").is_none() {
        return Err(ProviderError::invalid_response(
            "the answer has no `candidates`",
        ));
    }
    let candidate = read_candidate(&value);
    let finish = if candidate.calls.is_empty() {
        candidate.finish
    } else {
        Some(FinishReason::ToolCalls)
    };
    let content = if candidate.has_text || candidate.calls.is_empty() {
        Some(candidate.text)
    } else {
        None
    };
    let usage = value.get("usageMetadata").map(usage_from);
    let model = value
        .get("modelVersion")
        .and_then(Value::as_str)
        .unwrap_or(&context.model)
        .to_owned();
    let completion = ChatCompletion {
        id: response_id(&value),
        object: "chat.completion".to_owned(),
        created: context.created,
        model,
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage::assistant(content, candidate.calls),
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

/// Each SSE event is one `GenerateContentResponse`: text pieces become content deltas,
/// function calls (always whole) one tool-call delta each; the event with `finishReason`
/// is the last.
pub(crate) struct StreamDecoder {
    context: ResponseContext,
    id: Option<String>,
    model: String,
    role_sent: bool,
    tool_calls: u32,
}

impl StreamDecoder {
    pub(crate) fn new(context: ResponseContext) -> StreamDecoder {
        let model = context.model.clone();
        StreamDecoder {
            context,
            id: None,
            model,
            role_sent: false,
            tool_calls: 0,
        }
    }

    fn chunk(&mut self, mut delta: Delta, finish: Option<FinishReason>) -> ChatCompletionChunk {
        if !self.role_sent {
            self.role_sent = true;
            delta.role = Some("assistant".to_owned());
        }
        let id = self.id.clone().unwrap_or_default();
        ChatCompletionChunk::new(&id, self.context.created, &self.model, delta, finish)
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
        if value.get("error").is_some() {
            let (message, error_type) = error_text(FORMAT, &value);
            let retryable = !matches!(
                error_type.as_deref(),
                Some("INVALID_ARGUMENT" | "NOT_FOUND" | "FAILED_PRECONDITION")
            );
            return Err(ProviderError::StreamError {
                message: self
                    .context
                    .sanitize(&message.unwrap_or_else(|| "unspecified error".to_owned())),
                error_type,
                retryable,
            });
        }
        if self.id.is_none() {
            self.id = Some(response_id(&value));
        }
        if let Some(model) = value.get("modelVersion").and_then(Value::as_str) {
            self.model = model.to_owned();
        }
        let candidate = read_candidate(&value);
        if let Some(metadata) = value.get("usageMetadata") {
            tally.set_usage(usage_from(metadata), candidate.finish.is_some());
        }
        if !candidate.text.is_empty() {
            let delta = Delta {
                content: Some(candidate.text),
                ..Delta::default()
            };
            out.push(self.chunk(delta, None));
        }
        for call in candidate.calls {
            let index = self.tool_calls;
            self.tool_calls += 1;
            let delta = Delta {
                tool_calls: Some(vec![ToolCallDelta {
                    index,
                    id: Some(call.id),
                    kind: Some("function".to_owned()),
                    function: Some(FunctionCallDelta {
                        name: Some(call.function.name),
                        arguments: Some(call.function.arguments),
                    }),
                }]),
                ..Delta::default()
            };
            out.push(self.chunk(delta, None));
        }
        if let Some(finish) = candidate.finish {
            let finish = if self.tool_calls > 0 {
                FinishReason::ToolCalls
            } else {
                finish
            };
            out.push(self.chunk(Delta::default(), Some(finish)));
        }
        // No end marker: the body simply ends after the chunk with `finishReason`.
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_conversion() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "city": {"type": "string", "description": "City"},
                "unit": {"type": ["string", "null"], "enum": ["c", "f"]},
                "kind": {"const": "weather"},
                "where": {"$ref": "#/$defs/Place"},
                "tags": {"type": "array", "items": {"type": "string", "examples": ["a"]}},
                "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]}
            },
            "required": ["city"],
            "$defs": {"Place": {"type": "object", "properties": {"lat": {"type": "number"}}}}
        });
        assert_eq!(
            gemini_schema(&schema),
            json!({
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City"},
                    "unit": {"type": "string", "nullable": true, "enum": ["c", "f"]},
                    "kind": {"enum": ["weather"]},
                    "where": {"type": "object", "properties": {"lat": {"type": "number"}}},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]}
                },
                "required": ["city"]
            })
        );
    }

    #[test]
    fn recursive_refs_are_cut() {
        let schema = json!({
            "type": "object",
            "properties": {"node": {"$ref": "#/$defs/Node"}},
            "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}}
        });
        // Terminates, and the outer levels are intact.
        let converted = gemini_schema(&schema);
        assert_eq!(converted["properties"]["node"]["type"], "object");
    }

    #[test]
    fn usage_buckets() {
        let usage = usage_from(&json!({
            "promptTokenCount": 100, "cachedContentTokenCount": 60,
            "candidatesTokenCount": 10, "thoughtsTokenCount": 5, "totalTokenCount": 115
        }));
        assert_eq!(usage.uncached_input_tokens, 40);
        assert_eq!(usage.cached_input_tokens, 60);
        assert_eq!(usage.output_tokens, 15);
        assert_eq!(usage.reasoning_tokens, 5);
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason("STOP"), FinishReason::Stop);
        assert_eq!(finish_reason("MAX_TOKENS"), FinishReason::Length);
        for reason in ["SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT"] {
            assert_eq!(finish_reason(reason), FinishReason::ContentFilter);
        }
    }

    #[test]
    fn model_ids_are_one_path_segment() {
        assert_eq!(encode_segment("gemini-2.0-flash"), "gemini-2.0-flash");
        assert_eq!(encode_segment("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn thought_signatures_ride_in_the_call_id() {
        let part = json!({"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln"});
        let id = call_id(&part);
        assert!(
            id.starts_with("call_") && id.ends_with("__thought__c2ln"),
            "{id}"
        );
    }
}
