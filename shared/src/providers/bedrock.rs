//! The Amazon Bedrock adapter: canonical request → the Converse API
//! (`POST {base}/model/{modelId}/converse`, `.../converse-stream`), and its answer (JSON,
//! or the event stream's `messageStart` / `contentBlock*` / `messageStop` / `metadata`
//! events) back to OpenAI's shape. Signing is the client's ([`super::sigv4`]); this module
//! names the URL, the signing region and what the errors mean.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::call::{ResponseContext, UpstreamCall, UpstreamTarget, join_url};
use super::error::ProviderError;
use super::request::{
    ChatRequest, ContentPart, Message, MessageContent, Role, ToolCall, ToolChoice, ToolChoiceMode,
};
use super::response::{
    ChatCompletion, ChatCompletionChunk, Choice, Delta, FinishReason, FunctionCallDelta,
    REASONING_CONTENT, ResponseMessage, ToolCallDelta, Usage,
};
use super::sigv4::uri_encode;
use super::sse::SseEvent;
use super::stream::{EventDecoder, StreamTally};
use super::translate::{ImageSource, image_source, json_instruction, tool_arguments};
use crate::catalog::ApiFormat;

const FORMAT: ApiFormat = ApiFormat::Bedrock;
/// The SigV4 service name of the Bedrock runtime.
pub(crate) const SIGNING_SERVICE: &str = "bedrock";
/// `maxTokens` when neither the client nor the catalog gives one.
const FALLBACK_MAX_TOKENS: u32 = crate::catalog::DEFAULT_OUTPUT_TOKENS;
/// Request fields of Anthropic's own that Claude models on Bedrock take through
/// `additionalModelRequestFields`.
const ANTHROPIC_FIELDS: &[&str] = &["thinking", "top_k"];
/// The `requestMetadata` key carrying the account id (cost allocation, invocation logs).
pub(crate) const ACCOUNT_METADATA_KEY: &str = "switchboard_account";

/// The Converse path of a model: its id (a model id, an inference-profile id such as
/// `us.anthropic.claude-sonnet-4-20250514-v1:0`, or an ARN) encoded as one path segment.
pub fn converse_path(model_id: &str, stream: bool) -> String {
    let action = if stream {
        "converse-stream"
    } else {
        "converse"
    };
    format!("model/{}/{action}", uri_encode(model_id))
}

/// The region a Bedrock endpoint signs for: the one its host names
/// (`bedrock-runtime.eu-west-1.amazonaws.com`, `bedrock-runtime-fips.us-east-1...`,
/// a VPC endpoint `vpce-....bedrock-runtime.us-east-1.vpce.amazonaws.com`), else
/// `default` (a local endpoint).
pub fn signing_region(base_url: &str, default: &str) -> String {
    let host = reqwest::Url::parse(base_url)
        .ok()
        .and_then(|url| url.host_str().map(str::to_ascii_lowercase))
        .unwrap_or_default();
    let labels: Vec<&str> = host.split('.').collect();
    labels
        .iter()
        .position(|label| label.starts_with("bedrock-runtime"))
        .and_then(|at| labels.get(at + 1))
        .filter(|region| region.contains('-') && region.chars().any(|c| c.is_ascii_digit()))
        .map_or_else(|| default.to_owned(), |region| (*region).to_owned())
}

pub(crate) fn build_request(
    target: &UpstreamTarget,
    request: &ChatRequest,
    stream: bool,
) -> Result<UpstreamCall, ProviderError> {
    let mut body = Map::new();
    let (system, messages) = convert_messages(request)?;
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    body.insert("messages".into(), Value::Array(messages));

    let mut inference = Map::new();
    let max_tokens = target
        .output_tokens(request.requested_output_tokens())
        .unwrap_or(FALLBACK_MAX_TOKENS);
    inference.insert("maxTokens".into(), json!(max_tokens));
    if let Some(temperature) = request.temperature {
        // Bedrock's models take 0–1.
        inference.insert("temperature".into(), json!(temperature.min(1.0)));
    }
    if let Some(top_p) = request.top_p {
        inference.insert("topP".into(), json!(top_p));
    }
    if let Some(stop) = &request.stop {
        inference.insert("stopSequences".into(), json!(stop.to_vec()));
    }
    body.insert("inferenceConfig".into(), Value::Object(inference));

    if let Some(tool_config) = tool_config(request)? {
        body.insert("toolConfig".into(), tool_config);
    }
    if target.model_id.contains("anthropic.") {
        let fields: Map<String, Value> = ANTHROPIC_FIELDS
            .iter()
            .filter_map(|name| {
                let value = request.extra.get(*name).filter(|v| !v.is_null())?;
                Some(((*name).to_owned(), value.clone()))
            })
            .collect();
        if !fields.is_empty() {
            body.insert("additionalModelRequestFields".into(), Value::Object(fields));
        }
    }
    if let Some(account) = &target.account_tag {
        body.insert(
            "requestMetadata".into(),
            json!({ ACCOUNT_METADATA_KEY: account }),
        );
    }
    Ok(UpstreamCall {
        url: join_url(&target.base_url, &converse_path(&target.model_id, stream)),
        body: Value::Object(body),
    })
}

/// System and developer messages become `system` text blocks (plus the JSON instruction);
/// the rest alternate user / assistant turns of content blocks, consecutive same-role
/// messages merged (tool results travel in user turns).
fn convert_messages(request: &ChatRequest) -> Result<(Vec<Value>, Vec<Value>), ProviderError> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, message) in request.messages.iter().enumerate() {
        let (role, blocks) = match message.role {
            Role::System | Role::Developer => {
                system.extend(text_blocks(message, i)?);
                continue;
            }
            Role::User => ("user", user_blocks(message, i)?),
            Role::Assistant => ("assistant", assistant_blocks(message, i)?),
            Role::Tool => ("user", vec![tool_result_block(message)]),
            Role::Function | Role::Unknown(_) => {
                return Err(ProviderError::unsupported(
                    FORMAT,
                    format!("messages[{i}].role"),
                    "legacy `function` messages are not supported for Bedrock models; use `tools` and `tool` messages",
                ));
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last_role, last_blocks)) if *last_role == role => last_blocks.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    if let Some(instruction) = request.json_mode().and_then(json_instruction) {
        system.push(json!({"text": instruction}));
    }
    let messages = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    Ok((system, messages))
}

/// Text content as `{"text"}` blocks; Bedrock refuses blank ones, so they are dropped.
fn text_blocks(message: &Message, i: usize) -> Result<Vec<Value>, ProviderError> {
    let Some(content) = &message.content else {
        return Ok(Vec::new());
    };
    let pieces = content
        .text_pieces()
        .map_err(|(j, kind)| unsupported_part(i, j, kind))?;
    Ok(pieces
        .into_iter()
        .filter(|(text, _)| !text.trim().is_empty())
        .map(|(text, _)| json!({"text": text}))
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
                if let Some(text) = part.text.as_deref().filter(|t| !t.trim().is_empty()) {
                    blocks.push(json!({"text": text}));
                }
            }
            "image_url" => blocks.push(image_block(part, i, j)?),
            other => return Err(unsupported_part(i, j, other)),
        }
    }
    Ok(blocks)
}

/// An image as Converse takes it: its format and its bytes (base64 in JSON). Bedrock does
/// not fetch URLs, so only `data:` URLs can be sent.
fn image_block(part: &ContentPart, i: usize, j: usize) -> Result<Value, ProviderError> {
    let param = format!("messages[{i}].content[{j}].image_url.url");
    let url = part
        .image_url
        .as_ref()
        .map_or("", |image| image.url.as_str());
    match image_source(FORMAT, url, &param)? {
        ImageSource::Base64 { media_type, data } => {
            let format = match media_type.as_str() {
                "image/png" => "png",
                "image/jpeg" | "image/jpg" => "jpeg",
                "image/gif" => "gif",
                "image/webp" => "webp",
                other => {
                    return Err(ProviderError::unsupported(
                        FORMAT,
                        param,
                        format!("Bedrock takes png, jpeg, gif and webp images, not `{other}`"),
                    ));
                }
            };
            Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
        }
        ImageSource::Url(_) => Err(ProviderError::unsupported(
            FORMAT,
            param,
            "Bedrock does not fetch images by URL; send the image inline as a base64 data URL",
        )),
    }
}

fn assistant_blocks(message: &Message, i: usize) -> Result<Vec<Value>, ProviderError> {
    if message.function_call.is_some() {
        return Err(ProviderError::unsupported(
            FORMAT,
            format!("messages[{i}].function_call"),
            "legacy `function_call` messages are not supported for Bedrock models; use `tool_calls`",
        ));
    }
    let mut blocks = text_blocks(message, i)?;
    if blocks.is_empty()
        && let Some(refusal) = message.refusal.as_deref().filter(|r| !r.trim().is_empty())
    {
        blocks.push(json!({"text": refusal}));
    }
    for (j, call) in message.tool_calls.iter().flatten().enumerate() {
        let param = format!("messages[{i}].tool_calls[{j}].function.arguments");
        let input = tool_arguments(&call.function.arguments, &param)?;
        blocks.push(json!({"toolUse": {
            "toolUseId": call.id,
            "name": call.function.name,
            "input": input
        }}));
    }
    Ok(blocks)
}

fn tool_result_block(message: &Message) -> Value {
    let text = message
        .content
        .as_ref()
        .map(|content| content.joined_text("\n"))
        .unwrap_or_default();
    // A blank text block is refused; an empty result still needs a content block.
    let content = if text.trim().is_empty() {
        json!([{"json": {}}])
    } else {
        json!([{"text": text}])
    };
    json!({"toolResult": {
        "toolUseId": message.tool_call_id.clone().unwrap_or_default(),
        "content": content
    }})
}

fn unsupported_part(i: usize, j: usize, kind: &str) -> ProviderError {
    ProviderError::unsupported(
        FORMAT,
        format!("messages[{i}].content[{j}].type"),
        format!("content parts of type `{kind}` are not supported for Bedrock models here"),
    )
}

/// `toolConfig`: each function as a `toolSpec`, and the choice. Converse has no "none":
/// the tools stay declared (earlier turns may use them) and the model chooses.
fn tool_config(request: &ChatRequest) -> Result<Option<Value>, ProviderError> {
    for (i, tool) in request.tools.iter().flatten().enumerate() {
        if tool.kind != "function" {
            return Err(ProviderError::unsupported(
                FORMAT,
                format!("tools[{i}].type"),
                format!(
                    "tools of type `{}` are not supported for Bedrock models",
                    tool.kind
                ),
            ));
        }
    }
    let tools: Vec<Value> = request
        .tools
        .iter()
        .flatten()
        .filter_map(|tool| tool.function.as_ref())
        .chain(request.functions.iter().flatten())
        .map(|function| {
            let mut spec = json!({
                "name": function.name,
                "inputSchema": {"json": function
                    .parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}}))}
            });
            if let Some(description) = function.description.as_deref().filter(|d| !d.is_empty()) {
                spec["description"] = json!(description);
            }
            json!({"toolSpec": spec})
        })
        .collect();
    if tools.is_empty() {
        return Ok(None);
    }
    let mut config = json!({"tools": tools});
    match request.effective_tool_choice() {
        Some(ToolChoice::Mode(ToolChoiceMode::Required)) => {
            config["toolChoice"] = json!({"any": {}});
        }
        Some(ToolChoice::Named(named)) => {
            config["toolChoice"] = json!({"tool": {"name": named.function.name}});
        }
        Some(ToolChoice::Mode(ToolChoiceMode::Auto)) if request.tool_choice.is_some() => {
            config["toolChoice"] = json!({"auto": {}});
        }
        _ => {}
    }
    Ok(Some(config))
}

pub(crate) fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        // end_turn, stop_sequence
        _ => FinishReason::Stop,
    }
}

/// Converse's usage is disjoint like Anthropic's: `inputTokens` excludes the cache reads
/// and writes (`totalTokens` is the sum of all four).
fn usage_from(value: &Value) -> Usage {
    let count = |key: &str| value.get(key).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        uncached_input_tokens: count("inputTokens"),
        cached_input_tokens: count("cacheReadInputTokens"),
        cache_write_input_tokens: count("cacheWriteInputTokens"),
        cache_write_1h_input_tokens: 0,
        output_tokens: count("outputTokens"),
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
    let blocks = value
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ProviderError::invalid_response("the answer has no `output.message.content` array")
        })?;
    let mut text = String::new();
    let mut has_text = false;
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        if let Some(piece) = block.get("text").and_then(Value::as_str) {
            has_text = true;
            text.push_str(piece);
        } else if let Some(tool) = block.get("toolUse") {
            let input = tool.get("input").cloned().unwrap_or_else(|| json!({}));
            tool_calls.push(ToolCall::function(
                string_of(tool, "toolUseId"),
                string_of(tool, "name"),
                input.to_string(),
            ));
        } else if let Some(piece) = block
            .pointer("/reasoningContent/reasoningText/text")
            .and_then(Value::as_str)
        {
            reasoning.push_str(piece);
        }
    }
    let finish = value
        .get("stopReason")
        .and_then(Value::as_str)
        .map(finish_reason);
    let content = (has_text || tool_calls.is_empty()).then_some(text);
    let mut message = ResponseMessage::assistant(content, tool_calls);
    if !reasoning.is_empty() {
        message
            .extra
            .insert(REASONING_CONTENT.into(), Value::String(reasoning));
    }
    let usage = value.get("usage").map(usage_from);
    let completion = ChatCompletion {
        id: format!("chatcmpl-bedrock-{}", uuid::Uuid::new_v4().simple()),
        object: "chat.completion".to_owned(),
        created: context.created,
        model: context.model.clone(),
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

fn string_of(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A refused model says which model and region, and what usually fixes it: access to the
/// model is not enabled in that region (AccessDeniedException, ResourceNotFoundException)
/// or the function's role may not invoke it.
pub(crate) fn explain_error(error: ProviderError, model_id: &str, region: &str) -> ProviderError {
    match error {
        ProviderError::Status {
            status: status @ (403 | 404),
            message,
            error_type,
            retry_after,
        } => {
            let hint = if status == 403 {
                "enable access to the model in the Bedrock console for this region and allow bedrock:InvokeModel / InvokeModelWithResponseStream on it in the function's role (template parameter BedrockModelArns)"
            } else {
                "the model or inference profile does not exist or is not enabled in this region"
            };
            ProviderError::Status {
                status,
                message: format!(
                    "Bedrock refused model `{model_id}` in region `{region}`: {message} ({hint})"
                ),
                error_type,
                retry_after,
            }
        }
        other => other,
    }
}

/// Converse stream events → chunks: `messageStart` opens (role chunk),
/// `contentBlockStart` opens a tool call, `contentBlockDelta` carries text, tool input and
/// reasoning, `messageStop` the stop reason, `metadata` the usage and ends the stream. An
/// exception message (`exception:throttlingException`...) breaks it.
pub(crate) struct StreamDecoder {
    context: ResponseContext,
    id: String,
    /// Content-block index → OpenAI tool-call index.
    tool_blocks: HashMap<u64, u32>,
    next_tool: u32,
}

impl StreamDecoder {
    pub(crate) fn new(context: ResponseContext) -> StreamDecoder {
        StreamDecoder {
            context,
            id: format!("chatcmpl-bedrock-{}", uuid::Uuid::new_v4().simple()),
            tool_blocks: HashMap::new(),
            next_tool: 0,
        }
    }

    fn chunk(&self, delta: Delta, finish: Option<FinishReason>) -> ChatCompletionChunk {
        ChatCompletionChunk::new(
            &self.id,
            self.context.created,
            &self.context.model,
            delta,
            finish,
        )
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

    fn tool_index(&mut self, block: u64) -> u32 {
        if let Some(index) = self.tool_blocks.get(&block) {
            return *index;
        }
        let index = self.next_tool;
        self.next_tool += 1;
        self.tool_blocks.insert(block, index);
        index
    }
}

impl EventDecoder for StreamDecoder {
    fn on_event(
        &mut self,
        event: SseEvent,
        tally: &mut StreamTally,
        out: &mut Vec<ChatCompletionChunk>,
    ) -> Result<bool, ProviderError> {
        let kind = event.event.unwrap_or_default();
        if let Some(exception) = kind
            .strip_prefix("exception:")
            .or_else(|| kind.strip_prefix("error:"))
        {
            let message = serde_json::from_str::<Value>(&event.data)
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .or_else(|| v.get("Message"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| "unspecified error".to_owned());
            return Err(ProviderError::StreamError {
                message: self.context.sanitize(&message),
                error_type: Some(exception.to_owned()),
                retryable: !exception.eq_ignore_ascii_case("validationException"),
            });
        }
        let value: Value = serde_json::from_str(&event.data).map_err(|e| {
            ProviderError::invalid_response(format!("a stream event is not valid JSON ({e})"))
        })?;
        let block = value
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match kind.as_str() {
            "messageStart" => out.push(self.chunk(
                Delta {
                    role: Some("assistant".to_owned()),
                    content: Some(String::new()),
                    ..Delta::default()
                },
                None,
            )),
            "contentBlockStart" => {
                if let Some(tool) = value.pointer("/start/toolUse") {
                    let index = self.tool_index(block);
                    out.push(self.tool_delta(ToolCallDelta {
                        index,
                        id: Some(string_of(tool, "toolUseId")),
                        kind: Some("function".to_owned()),
                        function: Some(FunctionCallDelta {
                            name: Some(string_of(tool, "name")),
                            arguments: Some(String::new()),
                        }),
                    }));
                }
            }
            "contentBlockDelta" => {
                let delta = value.get("delta").unwrap_or(&Value::Null);
                if let Some(text) = delta.get("text").and_then(Value::as_str) {
                    if !text.is_empty() {
                        out.push(self.chunk(
                            Delta {
                                content: Some(text.to_owned()),
                                ..Delta::default()
                            },
                            None,
                        ));
                    }
                } else if let Some(input) = delta.pointer("/toolUse/input").and_then(Value::as_str)
                {
                    if !input.is_empty() {
                        let index = self.tool_index(block);
                        out.push(self.tool_delta(ToolCallDelta {
                            index,
                            id: None,
                            kind: None,
                            function: Some(FunctionCallDelta {
                                name: None,
                                arguments: Some(input.to_owned()),
                            }),
                        }));
                    }
                } else if let Some(text) = delta
                    .pointer("/reasoningContent/text")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    let mut delta = Delta::default();
                    delta.extra.insert(REASONING_CONTENT.into(), json!(text));
                    out.push(self.chunk(delta, None));
                }
            }
            "messageStop" => {
                let finish = value
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .map(finish_reason)
                    .unwrap_or(FinishReason::Stop);
                out.push(self.chunk(Delta::default(), Some(finish)));
            }
            "metadata" => {
                if let Some(usage) = value.get("usage") {
                    tally.set_usage(usage_from(usage), true);
                }
                return Ok(true);
            }
            // contentBlockStop, and event types added later.
            _ => {}
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::AuthType;
    use crate::providers::error::bedrock_error_type as error_type;

    fn target(model: &str) -> UpstreamTarget {
        UpstreamTarget {
            api_format: FORMAT,
            base_url: "https://bedrock-runtime.eu-west-1.amazonaws.com".into(),
            auth_type: AuthType::AwsSigv4,
            model_id: model.into(),
            api_key: None,
            max_output_tokens: Some(100),
            forward_unpriced_fields: false,
            auto_cache_control: false,
            traceparent: None,
            responses_api: false,
            account_tag: Some("acct-1".into()),
        }
    }

    #[test]
    fn model_ids_and_profiles_are_one_encoded_segment() {
        let call = build_request(
            &target("us.anthropic.claude-sonnet-4-20250514-v1:0"),
            &serde_json::from_value(
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .unwrap(),
            true,
        )
        .unwrap();
        assert_eq!(
            call.url,
            "https://bedrock-runtime.eu-west-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse-stream"
        );
        assert_eq!(
            converse_path(
                "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-pro-v1:0",
                false
            ),
            "model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.amazon.nova-pro-v1%3A0/converse"
        );
        assert_eq!(call.body["requestMetadata"][ACCOUNT_METADATA_KEY], "acct-1");
        assert_eq!(call.body["inferenceConfig"]["maxTokens"], 100);
    }

    #[test]
    fn regions_come_from_the_host() {
        let default = "us-east-1";
        for (url, region) in [
            (
                "https://bedrock-runtime.eu-west-1.amazonaws.com",
                "eu-west-1",
            ),
            (
                "https://bedrock-runtime-fips.us-gov-west-1.amazonaws.com/",
                "us-gov-west-1",
            ),
            (
                "https://bedrock-runtime.cn-north-1.amazonaws.com.cn",
                "cn-north-1",
            ),
            (
                "https://vpce-0a1.bedrock-runtime.ap-south-1.vpce.amazonaws.com",
                "ap-south-1",
            ),
            ("http://127.0.0.1:4000/bedrock", default),
        ] {
            assert_eq!(signing_region(url, default), region, "{url}");
        }
    }

    #[test]
    fn messages_tools_images_and_system_translate() {
        let request: ChatRequest = serde_json::from_value(json!({
            "model": "m",
            "temperature": 1.5,
            "stop": ["END"],
            "tool_choice": "required",
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather",
                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
                {"role": "user", "content": "Thanks"}
            ]
        }))
        .unwrap();
        let body = build_request(&target("amazon.nova-pro-v1:0"), &request, false)
            .unwrap()
            .body;
        assert_eq!(body["system"], json!([{"text": "Be brief."}]));
        assert_eq!(body["inferenceConfig"]["temperature"], 1.0);
        assert_eq!(body["inferenceConfig"]["stopSequences"], json!(["END"]));
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3, "{body}");
        assert_eq!(
            messages[0]["content"][1],
            json!({"image": {"format": "png", "source": {"bytes": "iVBOR"}}})
        );
        assert_eq!(
            messages[1]["content"][0]["toolUse"],
            json!({"toolUseId": "t1", "name": "weather", "input": {"city": "Paris"}})
        );
        assert_eq!(messages[2]["role"], "user");
        assert_eq!(
            messages[2]["content"][0]["toolResult"],
            json!({"toolUseId": "t1", "content": [{"text": "sunny"}]})
        );
        assert_eq!(messages[2]["content"][1], json!({"text": "Thanks"}));
        assert_eq!(body["toolConfig"]["toolChoice"], json!({"any": {}}));
        assert_eq!(
            body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["properties"]["city"]
                ["type"],
            "string"
        );
        // Images by URL cannot go: Bedrock does not fetch.
        let by_url: ChatRequest = serde_json::from_value(json!({"model": "m", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}]}))
        .unwrap();
        assert!(matches!(
            build_request(&target("m"), &by_url, false),
            Err(ProviderError::Unsupported { .. })
        ));
    }

    #[test]
    fn answers_stop_reasons_and_usage() {
        let context = ResponseContext {
            model: "amazon.nova-pro-v1:0".into(),
            created: 1,
            prompt_estimate: 5,
            key: None,
        };
        let body = json!({
            "output": {"message": {"role": "assistant", "content": [
                {"text": "Calling."},
                {"toolUse": {"toolUseId": "tu1", "name": "weather", "input": {"city": "Oslo"}}}
            ]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 10, "outputTokens": 4, "totalTokens": 20,
                      "cacheReadInputTokens": 5, "cacheWriteInputTokens": 1}
        });
        let (completion, usage) = parse_completion(body.to_string().as_bytes(), &context).unwrap();
        let usage = usage.unwrap();
        assert_eq!(usage.uncached_input_tokens, 10);
        assert_eq!(usage.cached_input_tokens, 5);
        assert_eq!(usage.cache_write_input_tokens, 1);
        assert_eq!(usage.output_tokens, 4);
        assert_eq!(usage.total_tokens(), 20);
        let choice = &completion.choices[0];
        assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(choice.message.content.as_deref(), Some("Calling."));
        let calls = choice.message.tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].id, "tu1");
        assert_eq!(calls[0].function.arguments, r#"{"city":"Oslo"}"#);
        for (reason, finish) in [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("max_tokens", FinishReason::Length),
            ("tool_use", FinishReason::ToolCalls),
            ("guardrail_intervened", FinishReason::ContentFilter),
            ("content_filtered", FinishReason::ContentFilter),
        ] {
            assert_eq!(finish_reason(reason), finish, "{reason}");
        }
    }

    #[test]
    fn refusals_name_the_model_and_region() {
        let error = explain_error(
            ProviderError::Status {
                status: 403,
                message: "You don't have access to the model with the specified model ID.".into(),
                error_type: Some("AccessDeniedException".into()),
                retry_after: None,
            },
            "amazon.nova-pro-v1:0",
            "eu-west-1",
        );
        let text = error.to_string();
        assert!(text.contains("amazon.nova-pro-v1:0"), "{text}");
        assert!(text.contains("eu-west-1"), "{text}");
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "x-amzn-errortype",
            reqwest::header::HeaderValue::from_static(
                "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
            ),
        );
        assert_eq!(
            error_type(&headers, None).as_deref(),
            Some("ThrottlingException")
        );
        let body = json!({"__type": "com.amazon.coral.validate#ValidationException"});
        assert_eq!(
            error_type(&reqwest::header::HeaderMap::new(), Some(&body)).as_deref(),
            Some("ValidationException")
        );
    }
}
