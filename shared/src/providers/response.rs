//! The canonical answer types (OpenAI `chat.completion` and `chat.completion.chunk`), the
//! finish reasons, and [`Usage`]: token counts split into disjoint buckets for the ledger.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::request::{FunctionCall, ToolCall};

/// The thinking text of an answer (or of a stream delta), in the `reasoning_content` field
/// OpenAI-compatible servers use for it.
pub const REASONING_CONTENT: &str = "reasoning_content";
/// Anthropic's thinking blocks as they came (`{"type": "thinking", "thinking",
/// "signature"}` or `{"type": "redacted_thinking", "data"}`), on an answer's message, on a
/// stream delta (a signature or a redacted block) and on an assistant message sent back:
/// a multi-turn conversation with extended thinking must return them unchanged.
pub const THINKING_BLOCKS: &str = "thinking_blocks";

/// Why generation stopped, in OpenAI's vocabulary (every format is mapped onto it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    /// Legacy `functions` API; only an OpenAI-compatible upstream returns it.
    FunctionCall,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::FunctionCall => "function_call",
        }
    }

    /// OpenAI-compatible servers invent their own values (vLLM `abort`, Ollama `eos`...);
    /// anything unknown means the model stopped on its own.
    pub fn from_openai(value: &str) -> FinishReason {
        match value {
            "length" => FinishReason::Length,
            "tool_calls" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            "function_call" => FinishReason::FunctionCall,
            _ => FinishReason::Stop,
        }
    }
}

impl Serialize for FinishReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FinishReason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Ok(FinishReason::from_openai(&value))
    }
}

/// Token counts of one call in disjoint buckets: every input token is in exactly one of
/// the three input buckets, so cost = Σ bucket × its price never counts a token twice.
///
/// Pricing of `cache_write_input_tokens` (Anthropic `cache_creation_input_tokens`): the
/// catalog has no cache-write price, so the ledger prices them as uncached input. Anthropic
/// itself bills them at 1.25× the input price (5-minute cache) or 2× (1-hour cache); a
/// cache-write price column would close that gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens neither read from nor written to a prompt cache.
    pub uncached_input_tokens: u64,
    /// Input tokens read from the provider's prompt cache (cheaper).
    pub cached_input_tokens: u64,
    /// Input tokens written to the prompt cache (Anthropic only), both lifetimes.
    pub cache_write_input_tokens: u64,
    /// The part of `cache_write_input_tokens` written for 1 hour (billed at 2 × input
    /// rather than 1.25 ×); 0 when the provider does not split them.
    pub cache_write_1h_input_tokens: u64,
    /// Generated tokens, reasoning tokens included.
    pub output_tokens: u64,
    /// The part of `output_tokens` spent on reasoning (informational, not a bucket).
    pub reasoning_tokens: u64,
}

impl Usage {
    /// All input tokens (OpenAI's `prompt_tokens`).
    pub fn input_tokens(&self) -> u64 {
        self.uncached_input_tokens
            .saturating_add(self.cached_input_tokens)
            .saturating_add(self.cache_write_input_tokens)
    }

    pub fn total_tokens(&self) -> u64 {
        self.input_tokens().saturating_add(self.output_tokens)
    }

    /// OpenAI's `usage` object: `prompt_tokens` counts every input token, cached ones
    /// included, as OpenAI itself does.
    pub fn to_openai(&self) -> OpenAiUsage {
        OpenAiUsage {
            prompt_tokens: self.input_tokens(),
            completion_tokens: self.output_tokens,
            total_tokens: self.total_tokens(),
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: self.cached_input_tokens,
                extra: Map::new(),
            }),
            completion_tokens_details: (self.reasoning_tokens > 0).then(|| {
                CompletionTokensDetails {
                    reasoning_tokens: self.reasoning_tokens,
                    extra: Map::new(),
                }
            }),
            extra: Map::new(),
        }
    }

    /// Reads OpenAI's `usage`: `prompt_tokens` includes the cached tokens.
    pub fn from_openai(usage: &OpenAiUsage) -> Usage {
        let cached = usage
            .prompt_tokens_details
            .as_ref()
            .map_or(0, |details| details.cached_tokens)
            .min(usage.prompt_tokens);
        Usage {
            uncached_input_tokens: usage.prompt_tokens - cached,
            cached_input_tokens: cached,
            cache_write_input_tokens: 0,
            cache_write_1h_input_tokens: 0,
            output_tokens: usage.completion_tokens,
            reasoning_tokens: usage
                .completion_tokens_details
                .as_ref()
                .map_or(0, |details| details.reasoning_tokens),
        }
    }
}

/// OpenAI's `usage` object.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OpenAiUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
    /// Whatever else an OpenAI-compatible upstream reports (e.g. OpenRouter's `cost`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default, deserialize_with = "null_as_zero")]
    pub cached_tokens: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default, deserialize_with = "null_as_zero")]
    pub reasoning_tokens: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Some OpenAI-compatible servers send `null` for counts they do not track.
fn null_as_zero<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(deserializer)?.unwrap_or(0))
}

fn chat_completion_object() -> String {
    "chat.completion".to_owned()
}

fn chat_completion_chunk_object() -> String {
    "chat.completion.chunk".to_owned()
}

fn assistant_role() -> String {
    "assistant".to_owned()
}

/// A non-streamed answer (`object: "chat.completion"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    #[serde(default)]
    pub id: String,
    #[serde(default = "chat_completion_object")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<OpenAiUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// Fields an OpenAI-compatible upstream adds (`service_tier`, `provider`...), kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// A native Responses API answer's `output` items, as the provider sent them (its
    /// reasoning items with their encrypted content included): what the Responses API
    /// answers with instead of a translation.
    #[serde(skip)]
    pub native_output: Option<Value>,
}

impl ChatCompletion {
    /// The finish reason of the first (only) choice.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.choices.first().and_then(|choice| choice.finish_reason)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub index: u32,
    pub message: ResponseMessage,
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
    #[serde(default)]
    pub logprobs: Option<Value>,
}

/// The assistant message of a [`Choice`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    #[serde(default = "assistant_role")]
    pub role: String,
    /// `null` when the answer is only tool calls (as OpenAI does).
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCall>,
    /// Fields such as `annotations`, `audio`, `reasoning_content` from compatible servers.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ResponseMessage {
    pub fn assistant(content: Option<String>, tool_calls: Vec<ToolCall>) -> ResponseMessage {
        ResponseMessage {
            role: assistant_role(),
            content,
            refusal: None,
            tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
            function_call: None,
            extra: Map::new(),
        }
    }
}

/// One streamed piece (`object: "chat.completion.chunk"`). The adapters never emit
/// usage-only chunks: the final usage comes with the stream's end (see `StreamEvent`),
/// and the chat function renders the usage chunk itself when the client asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    #[serde(default)]
    pub id: String,
    #[serde(default = "chat_completion_chunk_object")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<OpenAiUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// On a native Responses API stream's last chunk: the response's `output` items as the
    /// provider sent them ([`ChatCompletion::native_output`]).
    #[serde(skip)]
    pub native_output: Option<Value>,
}

impl ChatCompletionChunk {
    /// A chunk with one choice carrying `delta`.
    pub fn new(
        id: &str,
        created: u64,
        model: &str,
        delta: Delta,
        finish_reason: Option<FinishReason>,
    ) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: id.to_owned(),
            object: chat_completion_chunk_object(),
            created,
            model: model.to_owned(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
                logprobs: None,
            }],
            usage: None,
            system_fingerprint: None,
            extra: Map::new(),
            native_output: None,
        }
    }

    /// Whether this chunk carries generated output (text, refusal or a tool call), as
    /// opposed to the opening role-only chunk or a bare finish reason. Once such a chunk
    /// reached the client, falling back to another candidate is no longer possible.
    pub fn has_content(&self) -> bool {
        self.choices.iter().any(|choice| choice.delta.has_content())
    }

    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.choices.iter().find_map(|choice| choice.finish_reason)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCallDelta>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Delta {
    pub fn has_content(&self) -> bool {
        self.content.as_deref().is_some_and(|text| !text.is_empty())
            || self
                .extra
                .get(REASONING_CONTENT)
                .and_then(Value::as_str)
                .is_some_and(|text| !text.is_empty())
            || self.extra.contains_key(THINKING_BLOCKS)
            || self.refusal.as_deref().is_some_and(|text| !text.is_empty())
            || self
                .tool_calls
                .as_ref()
                .is_some_and(|calls| !calls.is_empty())
            || self.function_call.is_some()
    }

    /// Characters of generated output in this delta, for estimating output tokens when
    /// the upstream never reports usage.
    pub(crate) fn output_chars(&self) -> u64 {
        let count = |text: &Option<String>| text.as_deref().map_or(0, |t| t.chars().count());
        let mut chars = count(&self.content) + count(&self.refusal);
        chars += self
            .extra
            .get(REASONING_CONTENT)
            .and_then(Value::as_str)
            .map_or(0, |t| t.chars().count());
        for call in self.tool_calls.iter().flatten() {
            if let Some(function) = &call.function {
                chars += count(&function.name) + count(&function.arguments);
            }
        }
        if let Some(function) = &self.function_call {
            chars += count(&function.name) + count(&function.arguments);
        }
        chars as u64
    }
}

/// A piece of a streamed tool call: the first piece of call `index` carries its `id`,
/// `type` and `function.name`; later pieces append to `function.arguments`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_usage_round_trip_keeps_buckets_disjoint() {
        let openai: OpenAiUsage = serde_json::from_value(json!({
            "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 60, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 5}
        }))
        .unwrap();
        let usage = Usage::from_openai(&openai);
        assert_eq!(usage.uncached_input_tokens, 40);
        assert_eq!(usage.cached_input_tokens, 60);
        assert_eq!(usage.output_tokens, 20);
        assert_eq!(usage.reasoning_tokens, 5);
        let back = usage.to_openai();
        assert_eq!(back.prompt_tokens, 100);
        assert_eq!(back.total_tokens, 120);
        assert_eq!(back.prompt_tokens_details.unwrap().cached_tokens, 60);
    }

    #[test]
    fn cache_writes_count_as_prompt_tokens() {
        let usage = Usage {
            uncached_input_tokens: 10,
            cached_input_tokens: 20,
            cache_write_input_tokens: 30,
            cache_write_1h_input_tokens: 0,
            output_tokens: 5,
            reasoning_tokens: 0,
        };
        let openai = serde_json::to_value(usage.to_openai()).unwrap();
        assert_eq!(
            openai,
            json!({"prompt_tokens": 60, "completion_tokens": 5, "total_tokens": 65,
                   "prompt_tokens_details": {"cached_tokens": 20}})
        );
    }

    #[test]
    fn cached_above_prompt_is_clamped() {
        let openai: OpenAiUsage = serde_json::from_value(json!({
            "prompt_tokens": 10, "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 50}
        }))
        .unwrap();
        let usage = Usage::from_openai(&openai);
        assert_eq!(usage.input_tokens(), 10);
        assert_eq!(usage.cached_input_tokens, 10);
    }

    #[test]
    fn unknown_finish_reasons_mean_stop() {
        let reason: FinishReason = serde_json::from_value(json!("eos")).unwrap();
        assert_eq!(reason, FinishReason::Stop);
        assert_eq!(
            serde_json::to_value(FinishReason::ToolCalls).unwrap(),
            json!("tool_calls")
        );
    }

    #[test]
    fn role_only_chunk_has_no_content() {
        let chunk = ChatCompletionChunk::new(
            "id",
            0,
            "m",
            Delta {
                role: Some("assistant".into()),
                content: Some(String::new()),
                ..Delta::default()
            },
            None,
        );
        assert!(!chunk.has_content());
        let chunk = ChatCompletionChunk::new(
            "id",
            0,
            "m",
            Delta {
                content: Some("hi".into()),
                ..Delta::default()
            },
            None,
        );
        assert!(chunk.has_content());
    }
}
