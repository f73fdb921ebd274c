//! The canonical request: OpenAI's Chat Completions body, parsed strictly where Switchboard
//! must understand a field and kept verbatim (`extra`) where it only passes it on.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::RequiredCapabilities;
use super::call::UpstreamTarget;
use super::error::ProviderError;
use crate::catalog::ApiFormat;
use crate::ledger::CacheWrites;

/// Image parts are estimated at the token cost of one 1024×1024 high-detail OpenAI image.
const IMAGE_TOKEN_ESTIMATE: u64 = 765;
/// Per-message overhead of the chat template (role markers, separators).
const MESSAGE_TOKEN_OVERHEAD: u64 = 4;

/// `POST /v1/chat/completions` body. Unknown top-level fields land in `extra` and are sent
/// on unchanged to OpenAI-compatible upstreams (other formats ignore them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopSequences>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Legacy function calling; translated like `tools` for the other formats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<FunctionDefinition>>,
    /// Legacy `function_call`: `"none"`, `"auto"` or `{"name": ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every other field (`logprobs`, `logit_bias`, `metadata`, `reasoning_effort`...),
    /// passed through verbatim to OpenAI-compatible upstreams.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// A request that came in as the OpenAI Responses API: its body, the whole input a
    /// continuation sends included. An OpenAI-format provider that serves the Responses
    /// API (`UpstreamTarget::responses_api`) gets it natively (reasoning items and their
    /// encrypted content survive); every other provider gets the translated request.
    #[serde(skip)]
    pub native_responses: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A message role. Unknown roles parse (so validation can name the offending message) and
/// are refused by [`ChatRequest::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    /// Legacy `functions` API result.
    Function,
    Unknown(String),
}

impl Role {
    pub fn as_str(&self) -> &str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Function => "function",
            Role::Unknown(other) => other,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Ok(match value.as_str() {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            "function" => Role::Function,
            _ => Role::Unknown(value),
        })
    }
}

/// One conversation message. Fields this crate does not interpret (`audio`, OpenRouter's
/// extras...) are kept in `extra` for OpenAI-compatible upstreams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Legacy assistant function call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCall>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Message {
    /// A message with only a role and text content.
    pub fn text(role: Role, text: impl Into<String>) -> Message {
        Message {
            role,
            content: Some(MessageContent::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            refusal: None,
            function_call: None,
            extra: Map::new(),
        }
    }
}

/// A piece of text-only content and the part it came from ([`MessageContent::text_pieces`]).
pub type TextPiece<'a> = (&'a str, Option<&'a ContentPart>);

/// `content`: a string or an array of typed parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text parts joined (non-text parts skipped).
    pub fn joined_text(&self, separator: &str) -> String {
        match self {
            MessageContent::Text(text) => text.clone(),
            MessageContent::Parts(parts) => parts
                .iter()
                .filter_map(|part| part.text.as_deref())
                .collect::<Vec<_>>()
                .join(separator),
        }
    }

    /// The text of text-only content (system, developer), in order, with the part it came
    /// from: the string itself, or each `text` / `refusal` part (those without text skipped).
    /// `Err((j, type))` names the first part of another type, which the caller refuses in
    /// its own format.
    pub fn text_pieces(&self) -> Result<Vec<TextPiece<'_>>, (usize, &str)> {
        match self {
            MessageContent::Text(text) => Ok(vec![(text.as_str(), None)]),
            MessageContent::Parts(parts) => {
                let mut pieces = Vec::with_capacity(parts.len());
                for (j, part) in parts.iter().enumerate() {
                    match (part.kind.as_str(), part.text.as_deref()) {
                        ("text" | "refusal", Some(text)) => pieces.push((text, Some(part))),
                        ("text" | "refusal", None) => {}
                        (other, _) => return Err((j, other)),
                    }
                }
                Ok(pieces)
            }
        }
    }

    fn has_image(&self) -> bool {
        matches!(self, MessageContent::Parts(parts) if parts.iter().any(ContentPart::is_image))
    }
}

/// One content part. Kept as a struct rather than an enum so part types this crate does
/// not translate (`input_audio`, `file`) still reach OpenAI-compatible upstreams intact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<ImageUrl>,
    /// E.g. `cache_control` (forwarded to Anthropic) or the payload of other part types.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A content part carrying an Anthropic block that has no OpenAI equivalent (`document`,
/// `search_result`, …), in its `block` field: the Anthropic adapter sends the block as it
/// came; the other formats cannot express it (another candidate may serve the request).
pub const ANTHROPIC_BLOCK_PART: &str = "anthropic_block";

impl ContentPart {
    pub fn is_image(&self) -> bool {
        self.kind == "image_url"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageUrl {
    /// An `http(s)` URL or a `data:<mime>;base64,<data>` URL.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl<'de> Deserialize<'de> for ImageUrl {
    /// Accepts the documented `{"url": ..., "detail": ...}` and the bare URL string some
    /// older clients send.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Object {
            url: String,
            #[serde(default)]
            detail: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            Bare(String),
            Object(Object),
        }
        Ok(match Shape::deserialize(deserializer)? {
            Shape::Bare(url) => ImageUrl { url, detail: None },
            Shape::Object(Object { url, detail }) => ImageUrl { url, detail },
        })
    }
}

/// A tool call made by the assistant (in a request's history or in an answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_kind() -> String {
    "function".to_owned()
}

impl ToolCall {
    pub fn function(id: impl Into<String>, name: impl Into<String>, arguments: String) -> Self {
        ToolCall {
            id: id.into(),
            kind: function_kind(),
            function: FunctionCall {
                name: name.into(),
                arguments,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text, as OpenAI sends it.
    #[serde(default)]
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDefinition>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDefinition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `tool_choice`: a mode string or a named function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(ToolChoiceMode),
    Named(NamedToolChoice),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolChoiceMode {
    None,
    Auto,
    Required,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: NamedFunction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedFunction {
    pub name: String,
}

/// `stop`: one string or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopSequences {
    One(String),
    Many(Vec<String>),
}

impl StopSequences {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            StopSequences::One(one) => vec![one.clone()],
            StopSequences::Many(many) => many.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: ResponseFormatKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<JsonSchemaFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormatKind {
    Text,
    JsonObject,
    JsonSchema,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

impl ChatRequest {
    /// Checks what serde cannot: the values, and the shape of each role's message. The
    /// error names the offending parameter (`messages[2].tool_call_id`, `temperature`...).
    pub fn validate(&self) -> Result<(), ProviderError> {
        if self.model.trim().is_empty() {
            return Err(invalid("model", "`model` must not be empty"));
        }
        if self.messages.is_empty() {
            return Err(invalid(
                "messages",
                "`messages` must contain at least one message",
            ));
        }
        for (i, message) in self.messages.iter().enumerate() {
            validate_message(i, message)?;
        }
        if let Some(n) = self.n
            && n != 1
        {
            return Err(invalid(
                "n",
                format!(
                    "`n` = {n} is not supported: Switchboard returns exactly one choice; send `n` = 1 or omit it"
                ),
            ));
        }
        check_range("temperature", self.temperature, 0.0, 2.0)?;
        check_range("top_p", self.top_p, 0.0, 1.0)?;
        check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        for (param, value) in [
            ("max_tokens", self.max_tokens),
            ("max_completion_tokens", self.max_completion_tokens),
        ] {
            if value == Some(0) {
                return Err(invalid(param, format!("`{param}` must be at least 1")));
            }
        }
        if let Some(StopSequences::Many(many)) = &self.stop
            && many.len() > 4
        {
            return Err(invalid("stop", "`stop` accepts at most 4 sequences"));
        }
        self.validate_tools()?;
        if let Some(format) = &self.response_format
            && format.kind == ResponseFormatKind::JsonSchema
            && format.json_schema.is_none()
        {
            return Err(invalid(
                "response_format.json_schema",
                "`response_format` of type `json_schema` needs a `json_schema` object",
            ));
        }
        Ok(())
    }

    fn validate_tools(&self) -> Result<(), ProviderError> {
        for (i, tool) in self.tools.iter().flatten().enumerate() {
            if tool.kind == "function" {
                let Some(function) = &tool.function else {
                    return Err(invalid(
                        format!("tools[{i}].function"),
                        "a tool of type `function` needs a `function` object",
                    ));
                };
                check_function_name(&format!("tools[{i}].function.name"), &function.name)?;
            }
        }
        for (i, function) in self.functions.iter().flatten().enumerate() {
            check_function_name(&format!("functions[{i}].name"), &function.name)?;
        }
        if let Some(choice) = &self.tool_choice {
            let has_tools = self.tools.as_ref().is_some_and(|tools| !tools.is_empty());
            if !has_tools && !matches!(choice, ToolChoice::Mode(ToolChoiceMode::None)) {
                return Err(invalid(
                    "tool_choice",
                    "`tool_choice` is only allowed when `tools` are specified",
                ));
            }
            if let ToolChoice::Named(named) = choice {
                let known = self.tool_functions().any(|f| f.name == named.function.name);
                if !known {
                    return Err(invalid(
                        "tool_choice",
                        format!(
                            "`tool_choice` names `{}`, which is not among `tools`",
                            truncate(&named.function.name, 64)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// What the request needs from a model and provider (routing filters on it).
    pub fn required_capabilities(&self) -> RequiredCapabilities {
        RequiredCapabilities {
            streaming: self.is_stream(),
            function_calling: self.tools.as_ref().is_some_and(|t| !t.is_empty())
                || self.functions.as_ref().is_some_and(|f| !f.is_empty()),
            vision: self
                .messages
                .iter()
                .any(|m| m.content.as_ref().is_some_and(MessageContent::has_image)),
            json_mode: self.json_mode().is_some(),
            token_input: false,
        }
    }

    /// Output tokens the client asked for (`max_completion_tokens`, else `max_tokens`).
    /// Fields that make the provider charge more than the catalog's token prices:
    /// `service_tier` other than `auto` / `default` (priority and flex tiers), web search,
    /// audio output. Empty when the request has none. The ledger cannot price them, so on
    /// the platform's key they are refused (api.md); on a user's own key they pass.
    pub fn price_raising_fields(&self) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if let Some(tier) = self.extra.get("service_tier")
            && !matches!(tier.as_str(), Some("auto" | "default") | None)
            && !tier.is_null()
        {
            fields.push("service_tier");
        }
        if self
            .extra
            .get("web_search_options")
            .is_some_and(|v| !v.is_null())
        {
            fields.push("web_search_options");
        }
        if self.extra.get("audio").is_some_and(|v| !v.is_null()) {
            fields.push("audio");
        }
        let audio_modality = self
            .extra
            .get("modalities")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|v| v.as_str() == Some("audio")));
        if audio_modality {
            fields.push("modalities");
        }
        fields
    }

    /// Whether the request sets a prompt-cache breakpoint anywhere ([`Self::cache_writes`]).
    pub fn has_cache_control(&self) -> bool {
        self.cache_writes() != CacheWrites::None
    }

    /// The longest-lived prompt-cache write the request asks for: `cache_control` on a
    /// content part (system, user, assistant or tool messages) or inside an Anthropic
    /// block, on a message (a breakpoint at its end), or on a tool. An Anthropic-format
    /// provider bills the prompt up to a breakpoint as cache writes, at the 1-hour price
    /// for `"ttl": "1h"`.
    pub fn cache_writes(&self) -> CacheWrites {
        let mut writes = CacheWrites::None;
        for message in &self.messages {
            note_cache_control(&message.extra, &mut writes);
            if let Some(MessageContent::Parts(parts)) = &message.content {
                for part in parts {
                    note_cache_control(&part.extra, &mut writes);
                }
            }
        }
        for tool in self.tools.iter().flatten() {
            note_cache_control(&tool.extra, &mut writes);
        }
        writes
    }

    /// The first input that a provider of `format` would fetch itself and bill by content
    /// Switchboard cannot bound before the call, as the `param` naming it: for Anthropic,
    /// an image by URL and a block whose `source` is a URL or a Files API file; for
    /// Gemini, an image by URL (`fileData` may be any file: a PDF, a video); for OpenAI,
    /// a `file` part by `file_id` or `file_url` (an image by URL is billed at most the
    /// model's per-image maximum, so it passes). `data:` URLs are inline.
    pub fn unbounded_input(&self, format: ApiFormat) -> Option<String> {
        for (i, message) in self.messages.iter().enumerate() {
            let Some(MessageContent::Parts(parts)) = &message.content else {
                continue;
            };
            for (j, part) in parts.iter().enumerate() {
                let path = match (part.kind.as_str(), format) {
                    ("image_url", ApiFormat::Anthropic | ApiFormat::Gemini) => part
                        .image_url
                        .as_ref()
                        .filter(|image| is_fetched_url(&image.url))
                        .map(|_| ".image_url.url".to_owned()),
                    (ANTHROPIC_BLOCK_PART, ApiFormat::Anthropic) => {
                        part.extra.get("block").and_then(fetched_source)
                    }
                    ("file", ApiFormat::OpenAi) => {
                        let file = part.extra.get("file");
                        ["file_id", "file_url"]
                            .into_iter()
                            .find(|key| {
                                file.and_then(|f| f.get(*key)).is_some_and(|v| !v.is_null())
                            })
                            .map(|key| format!(".file.{key}"))
                    }
                    _ => None,
                };
                if let Some(path) = path {
                    return Some(format!("messages[{i}].content[{j}]{path}"));
                }
            }
        }
        None
    }

    /// On the platform's key, refuses what [`Self::unbounded_input`] finds for the
    /// target's format: no hold can cover it (api.md). On the user's own key it passes.
    /// Another candidate, of a format that can bound it, may still serve the request.
    pub(crate) fn refuse_unbounded_inputs(
        &self,
        target: &UpstreamTarget,
    ) -> Result<(), ProviderError> {
        if target.forward_unpriced_fields {
            return Ok(());
        }
        match self.unbounded_input(target.api_format) {
            None => Ok(()),
            Some(param) => {
                let provider = match target.api_format {
                    ApiFormat::Anthropic => "an Anthropic-format provider",
                    ApiFormat::Gemini => "a Gemini-format provider",
                    ApiFormat::OpenAi => "an OpenAI-format provider",
                    ApiFormat::Bedrock => "a Bedrock provider",
                };
                Err(ProviderError::Unsupported {
                    format: target.api_format,
                    message: format!(
                        "`{param}`: {provider} fetches this input itself and bills it by its content, which Switchboard cannot bound before the call, so it is accepted only with your own provider key (BYOK); send the content inline (base64) instead"
                    ),
                    param: Some(param),
                })
            }
        }
    }

    pub fn requested_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether the client asked for the usage chunk at the end of its stream.
    pub fn client_wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|options| options.include_usage)
            .unwrap_or(false)
    }

    /// A rough prompt size: characters / 4 of every text (tool definitions included),
    /// plus a small per-message overhead and a flat 765 tokens per image. It is what a
    /// stream cut before the upstream reported its input bills as input. Routing and holds
    /// use the tokenizer-based `crate::tokens::estimate_prompt_tokens` instead.
    pub fn estimated_prompt_tokens(&self) -> u64 {
        let mut chars: u64 = 0;
        let mut tokens: u64 = 0;
        for message in &self.messages {
            tokens += MESSAGE_TOKEN_OVERHEAD;
            match &message.content {
                Some(MessageContent::Text(text)) => chars += text.chars().count() as u64,
                Some(MessageContent::Parts(parts)) => {
                    for part in parts {
                        if part.is_image() {
                            tokens += IMAGE_TOKEN_ESTIMATE;
                        } else if let Some(text) = &part.text {
                            chars += text.chars().count() as u64;
                        }
                    }
                }
                None => {}
            }
            for call in message.tool_calls.iter().flatten() {
                chars += (call.function.name.len() + call.function.arguments.len()) as u64;
            }
        }
        for tool in self.tool_functions() {
            chars += serde_json::to_string(tool).map_or(0, |json| json.len() as u64);
        }
        tokens + chars.div_ceil(4)
    }

    /// The function definitions of `tools` (type `function`) and legacy `functions`.
    pub(crate) fn tool_functions(&self) -> impl Iterator<Item = &FunctionDefinition> {
        self.tools
            .iter()
            .flatten()
            .filter(|tool| tool.kind == "function")
            .filter_map(|tool| tool.function.as_ref())
            .chain(self.functions.iter().flatten())
    }

    /// The JSON output the client asked for, if any.
    pub(crate) fn json_mode(&self) -> Option<&ResponseFormat> {
        self.response_format
            .as_ref()
            .filter(|format| format.kind != ResponseFormatKind::Text)
    }

    /// The effective tool choice, legacy `function_call` included.
    pub(crate) fn effective_tool_choice(&self) -> Option<ToolChoice> {
        if let Some(choice) = &self.tool_choice {
            return Some(choice.clone());
        }
        match self.function_call.as_ref()? {
            Value::String(mode) => match mode.as_str() {
                "none" => Some(ToolChoice::Mode(ToolChoiceMode::None)),
                "auto" => Some(ToolChoice::Mode(ToolChoiceMode::Auto)),
                _ => None,
            },
            Value::Object(object) => object.get("name").and_then(Value::as_str).map(|name| {
                ToolChoice::Named(NamedToolChoice {
                    kind: function_kind(),
                    function: NamedFunction {
                        name: name.to_owned(),
                    },
                })
            }),
            _ => None,
        }
    }
}

/// Notes the `cache_control` of `fields`, and any inside them (an Anthropic block's).
fn note_cache_control(fields: &Map<String, Value>, writes: &mut CacheWrites) {
    for (key, value) in fields {
        if key == "cache_control" {
            if value.is_object() {
                *writes = (*writes).max(CacheWrites::of_cache_control(value));
            }
        } else {
            match value {
                Value::Object(inner) => note_cache_control(inner, writes),
                Value::Array(items) => {
                    for item in items {
                        if let Value::Object(inner) = item {
                            note_cache_control(inner, writes);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// An `http(s)` URL: the provider would fetch it (a `data:` URL is inline).
fn is_fetched_url(url: &str) -> bool {
    let scheme = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    scheme.starts_with("https://") || scheme.starts_with("http://")
}

/// The path (`.source.url`, `.source.content[0].source.url`…) of the first `source` inside
/// an Anthropic block that the provider fetches: a URL or a Files API file.
fn fetched_source(block: &Value) -> Option<String> {
    match block {
        Value::Object(fields) => {
            if let Some(source) = fields.get("source") {
                match source.get("type").and_then(Value::as_str) {
                    Some("url") => return Some(".source.url".to_owned()),
                    Some("file") => return Some(".source.file_id".to_owned()),
                    _ => {}
                }
            }
            fields
                .iter()
                .find_map(|(key, value)| fetched_source(value).map(|path| format!(".{key}{path}")))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(n, item)| fetched_source(item).map(|path| format!("[{n}]{path}"))),
        _ => None,
    }
}

fn validate_message(i: usize, message: &Message) -> Result<(), ProviderError> {
    let content_param = || format!("messages[{i}].content");
    match &message.role {
        Role::Unknown(role) => {
            return Err(invalid(
                format!("messages[{i}].role"),
                format!(
                    "unknown role `{}` (expected one of: system, developer, user, assistant, tool, function)",
                    truncate(role, 32)
                ),
            ));
        }
        Role::System | Role::Developer | Role::User | Role::Tool | Role::Function => {
            if message.content.is_none() {
                return Err(invalid(
                    content_param(),
                    format!("a `{}` message needs `content`", message.role),
                ));
            }
        }
        Role::Assistant => {
            let has_calls = message.tool_calls.as_ref().is_some_and(|c| !c.is_empty())
                || message.function_call.is_some();
            if message.content.is_none() && !has_calls && message.refusal.is_none() {
                return Err(invalid(
                    content_param(),
                    "an `assistant` message needs `content` unless it has `tool_calls`",
                ));
            }
        }
    }
    if message.role == Role::Tool
        && message
            .tool_call_id
            .as_deref()
            .is_none_or(|id| id.is_empty())
    {
        return Err(invalid(
            format!("messages[{i}].tool_call_id"),
            "a `tool` message needs the `tool_call_id` it answers",
        ));
    }
    if message.role == Role::Function && message.name.as_deref().is_none_or(str::is_empty) {
        return Err(invalid(
            format!("messages[{i}].name"),
            "a `function` message needs the `name` of the function",
        ));
    }
    if let Some(MessageContent::Parts(parts)) = &message.content {
        let text_only = !matches!(message.role, Role::User);
        for (j, part) in parts.iter().enumerate() {
            let param = format!("messages[{i}].content[{j}]");
            match part.kind.as_str() {
                "text" if part.text.is_none() => {
                    return Err(invalid(
                        format!("{param}.text"),
                        "a `text` part needs `text`",
                    ));
                }
                "text" => {}
                "image_url" if text_only => {
                    return Err(invalid(
                        format!("{param}.type"),
                        format!("`{}` messages accept only text parts", message.role),
                    ));
                }
                "image_url" => {
                    if part
                        .image_url
                        .as_ref()
                        .is_none_or(|image| image.url.is_empty())
                    {
                        return Err(invalid(
                            format!("{param}.image_url.url"),
                            "an `image_url` part needs `image_url.url`",
                        ));
                    }
                }
                // Refusal parts appear in assistant history; audio/file parts are passed
                // through to OpenAI-compatible upstreams only (the others refuse them).
                "refusal" | "input_audio" | "file" => {}
                // From the Messages API; only the Anthropic adapter sends it.
                ANTHROPIC_BLOCK_PART if part.extra.get("block").is_some_and(Value::is_object) => {}
                other => {
                    return Err(invalid(
                        format!("{param}.type"),
                        format!("unknown content part type `{}`", truncate(other, 32)),
                    ));
                }
            }
        }
    }
    for (j, call) in message.tool_calls.iter().flatten().enumerate() {
        if call.id.is_empty() {
            return Err(invalid(
                format!("messages[{i}].tool_calls[{j}].id"),
                "a tool call needs an `id`",
            ));
        }
        if call.function.name.is_empty() {
            return Err(invalid(
                format!("messages[{i}].tool_calls[{j}].function.name"),
                "a tool call needs a function `name`",
            ));
        }
    }
    Ok(())
}

fn check_range(param: &str, value: Option<f64>, min: f64, max: f64) -> Result<(), ProviderError> {
    match value {
        Some(v) if !(min..=max).contains(&v) => Err(invalid(
            param,
            format!("`{param}` must be between {min} and {max}, got {v}"),
        )),
        _ => Ok(()),
    }
}

/// OpenAI's rule for function names, which the other providers accept too.
fn check_function_name(param: &str, name: &str) -> Result<(), ProviderError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(invalid(
            param,
            "function names must be 1 to 64 characters of a-z, A-Z, 0-9, `_` or `-`",
        ))
    }
}

fn invalid(param: impl Into<String>, message: impl Into<String>) -> ProviderError {
    ProviderError::InvalidRequest {
        param: Some(param.into()),
        message: message.into(),
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> ChatRequest {
        serde_json::from_value(value).unwrap()
    }

    fn param_of(value: Value) -> String {
        match parse(value).validate() {
            Err(ProviderError::InvalidRequest { param, .. }) => param.unwrap_or_default(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn minimal_request_is_valid_and_round_trips_unknown_fields() {
        let body = json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "hi", "x_custom": 1}],
            "logit_bias": {"50256": -100},
            "metadata": {"k": "v"}
        });
        let request = parse(body.clone());
        request.validate().unwrap();
        assert_eq!(serde_json::to_value(&request).unwrap(), body);
    }

    #[test]
    fn validation_names_the_parameter() {
        let base = |patch: Value| {
            let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            for (key, value) in patch.as_object().unwrap() {
                body[key] = value.clone();
            }
            body
        };
        assert_eq!(param_of(base(json!({"messages": []}))), "messages");
        assert_eq!(param_of(base(json!({"model": ""}))), "model");
        assert_eq!(param_of(base(json!({"n": 2}))), "n");
        assert_eq!(param_of(base(json!({"temperature": 2.5}))), "temperature");
        assert_eq!(param_of(base(json!({"top_p": -0.1}))), "top_p");
        assert_eq!(param_of(base(json!({"max_tokens": 0}))), "max_tokens");
        assert_eq!(
            param_of(base(json!({"max_completion_tokens": 0}))),
            "max_completion_tokens"
        );
        assert_eq!(
            param_of(base(json!({"stop": ["a", "b", "c", "d", "e"]}))),
            "stop"
        );
        assert_eq!(
            param_of(base(
                json!({"messages": [{"role": "wizard", "content": "x"}]})
            )),
            "messages[0].role"
        );
        assert_eq!(
            param_of(base(
                json!({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}]})
            )),
            "messages[1].tool_call_id"
        );
        assert_eq!(
            param_of(base(json!({"messages": [{"role": "assistant"}]}))),
            "messages[0].content"
        );
        assert_eq!(
            param_of(base(
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": ""}}]}]})
            )),
            "messages[0].content[0].image_url.url"
        );
        assert_eq!(
            param_of(base(
                json!({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]})
            )),
            "messages[0].content[0].type"
        );
        assert_eq!(
            param_of(base(
                json!({"tools": [{"type": "function", "function": {"name": "bad name"}}]})
            )),
            "tools[0].function.name"
        );
        assert_eq!(
            param_of(base(json!({"tool_choice": "required"}))),
            "tool_choice"
        );
        assert_eq!(
            param_of(base(json!({
                "tools": [{"type": "function", "function": {"name": "a"}}],
                "tool_choice": {"type": "function", "function": {"name": "b"}}
            }))),
            "tool_choice"
        );
        assert_eq!(
            param_of(base(json!({"response_format": {"type": "json_schema"}}))),
            "response_format.json_schema"
        );
        let n_error = parse(base(json!({"n": 3}))).validate().unwrap_err();
        assert!(n_error.to_string().contains("not supported"), "{n_error}");
        parse(base(json!({"n": 1, "temperature": 2, "top_p": 1})))
            .validate()
            .unwrap();
    }

    #[test]
    fn wrong_types_are_serde_errors() {
        for body in [
            json!({"model": "m", "messages": "hi"}),
            json!({"model": "m", "messages": [], "max_tokens": -1}),
            json!({"model": "m", "messages": [], "max_tokens": 1e12}),
            json!({"model": "m", "messages": [], "tool_choice": "sometimes"}),
            json!({"model": "m", "messages": [], "response_format": {"type": "yaml"}}),
            json!({"model": 5, "messages": []}),
        ] {
            assert!(
                serde_json::from_value::<ChatRequest>(body.clone()).is_err(),
                "{body}"
            );
        }
    }

    #[test]
    fn capabilities_and_output_tokens() {
        let request = parse(json!({
            "model": "auto",
            "stream": true,
            "max_tokens": 100,
            "max_completion_tokens": 50,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "response_format": {"type": "json_object"},
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
            ]}]
        }));
        assert_eq!(
            request.required_capabilities(),
            RequiredCapabilities {
                streaming: true,
                function_calling: true,
                vision: true,
                json_mode: true,
                token_input: false,
            }
        );
        assert_eq!(request.requested_output_tokens(), Some(50));
        let plain = parse(
            json!({"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}],
                                  "response_format": {"type": "text"}}),
        );
        assert_eq!(
            plain.required_capabilities(),
            RequiredCapabilities::default()
        );
        assert_eq!(plain.requested_output_tokens(), Some(9));
        let legacy = parse(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                   "functions": [{"name": "f"}]}),
        );
        assert!(legacy.required_capabilities().function_calling);
    }

    #[test]
    fn prompt_estimate_counts_text_and_images() {
        let request = parse(json!({"model": "m", "messages": [
            {"role": "user", "content": "abcdefgh"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
        ]}));
        assert_eq!(request.estimated_prompt_tokens(), 2 * 4 + 765 + 2);
    }

    #[test]
    fn price_raising_fields_and_cache_control_are_recognised() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let with = |field: &str, value: Value| {
            let mut body = base.clone();
            body[field] = value;
            parse(body).price_raising_fields()
        };
        assert!(parse(base.clone()).price_raising_fields().is_empty());
        assert!(with("service_tier", json!("auto")).is_empty());
        assert!(with("service_tier", json!("default")).is_empty());
        assert!(with("service_tier", Value::Null).is_empty());
        assert_eq!(with("service_tier", json!("priority")), ["service_tier"]);
        assert_eq!(
            with("web_search_options", json!({})),
            ["web_search_options"]
        );
        assert_eq!(with("audio", json!({"voice": "alloy"})), ["audio"]);
        assert_eq!(with("modalities", json!(["text", "audio"])), ["modalities"]);
        assert!(with("modalities", json!(["text"])).is_empty());

        assert!(!parse(base).has_cache_control());
        let cached = parse(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "doc", "cache_control": {"type": "ephemeral"}}
            ]}]}),
        );
        assert!(cached.has_cache_control());
    }

    #[test]
    fn cache_breakpoints_anywhere_and_their_lifetime() {
        let with = |patch: Value| {
            let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            for (key, value) in patch.as_object().unwrap() {
                body[key] = value.clone();
            }
            parse(body).cache_writes()
        };
        let five = json!({"type": "ephemeral"});
        let hour = json!({"type": "ephemeral", "ttl": "1h"});
        assert_eq!(with(json!({})), CacheWrites::None);
        // On a tool definition.
        assert_eq!(
            with(
                json!({"tools": [{"type": "function", "function": {"name": "f"}, "cache_control": five}]})
            ),
            CacheWrites::FiveMinutes
        );
        assert_eq!(
            with(
                json!({"tools": [{"type": "function", "function": {"name": "f"}, "cache_control": hour}]})
            ),
            CacheWrites::OneHour
        );
        // On a tool result's part, on an assistant message, inside an Anthropic block.
        assert_eq!(
            with(
                json!({"messages": [{"role": "tool", "tool_call_id": "c", "content": [
                {"type": "text", "text": "r", "cache_control": five}]}]})
            ),
            CacheWrites::FiveMinutes
        );
        assert_eq!(
            with(
                json!({"messages": [{"role": "assistant", "content": "a", "cache_control": hour}]})
            ),
            CacheWrites::OneHour
        );
        assert_eq!(
            with(
                json!({"messages": [{"role": "user", "content": [{"type": "anthropic_block",
                "block": {"type": "search_result", "content": [{"type": "text", "text": "x", "cache_control": hour}]}}]}]})
            ),
            CacheWrites::OneHour
        );
        // The longest one wins; a null is none.
        assert_eq!(
            with(json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "a", "cache_control": hour},
                {"type": "text", "text": "b", "cache_control": five}]}]})),
            CacheWrites::OneHour
        );
        assert_eq!(
            with(
                json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a", "cache_control": null}]}]})
            ),
            CacheWrites::None
        );
    }

    #[test]
    fn the_token_estimate_knows_the_anthropic_block_part() {
        // A base64 PDF inside the part counts for Anthropic-format candidates only.
        let part = json!({"role": "user", "content": [{"type": ANTHROPIC_BLOCK_PART, "block":
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}}}]});
        let media = crate::tokens::PromptMedia::of(&[part]);
        let biller = |format| crate::tokens::MediaBiller::Model {
            format,
            model_id: "m",
        };
        assert!(media.tokens(biller(ApiFormat::Anthropic)) > 0);
        assert_eq!(media.tokens(biller(ApiFormat::OpenAi)), 0);
    }

    #[test]
    fn inputs_the_provider_fetches_are_named_per_format() {
        let request = |content: Value| {
            parse(json!({"model": "m", "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": content}]}))
        };
        let image = request(json!([{"type": "text", "text": "what?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]));
        let param = Some("messages[1].content[1].image_url.url".to_owned());
        assert_eq!(image.unbounded_input(ApiFormat::Anthropic), param);
        assert_eq!(image.unbounded_input(ApiFormat::Gemini), param);
        assert_eq!(image.unbounded_input(ApiFormat::OpenAi), None);
        let inline = request(
            json!([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]),
        );
        assert_eq!(inline.unbounded_input(ApiFormat::Anthropic), None);

        let document = |source: Value| {
            request(json!([{"type": "anthropic_block", "block": {"type": "document", "source": source}}]))
                .unbounded_input(ApiFormat::Anthropic)
        };
        assert_eq!(
            document(json!({"type": "url", "url": "https://example.com/a.pdf"})).as_deref(),
            Some("messages[1].content[0].source.url")
        );
        assert_eq!(
            document(json!({"type": "file", "file_id": "file_01"})).as_deref(),
            Some("messages[1].content[0].source.file_id")
        );
        assert_eq!(
            document(
                json!({"type": "content", "content": [{"type": "text", "text": "x"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]})
            )
            .as_deref(),
            Some("messages[1].content[0].source.content[1].source.url")
        );
        assert_eq!(
            document(json!({"type": "base64", "media_type": "application/pdf", "data": "JVBER"})),
            None
        );
        assert_eq!(
            document(json!({"type": "text", "media_type": "text/plain", "data": "x"})),
            None
        );

        let file = request(json!([{"type": "file", "file": {"file_id": "file-abc"}}]));
        assert_eq!(
            file.unbounded_input(ApiFormat::OpenAi).as_deref(),
            Some("messages[1].content[0].file.file_id")
        );
        let inline_file = request(
            json!([{"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBER"}}]),
        );
        assert_eq!(inline_file.unbounded_input(ApiFormat::OpenAi), None);
    }
}
