//! Provider adapters. This module owns the canonical request and answer types (OpenAI's
//! Chat Completions schema, which Switchboard speaks to its clients), their translation to
//! and from each upstream wire format (`openai`, `anthropic`, `gemini`, and OpenAI's
//! Responses API for a request that came in as one: `openai_responses`), streaming (SSE
//! parsing, chunk conversion, usage of cut streams), upstream authentication, timeouts,
//! and the classification of upstream failures for routing.
//!
//! The chat function uses it like this:
//! 1. parse the body as [`ChatRequest`], call [`ChatRequest::validate`] (400 with `param`
//!    on error), hand [`ChatRequest::required_capabilities`] and
//!    [`ChatRequest::requested_output_tokens`] to routing;
//! 2. per candidate, build an [`UpstreamTarget`] and call [`ProviderClient::complete`] or
//!    [`ProviderClient::stream`] on the one shared [`ProviderClient`];
//! 3. on error, [`ProviderError::retryable`] says whether to try the next candidate,
//!    [`ProviderError::is_auth_failure`] whether a BYOK key must be marked invalid;
//! 4. bill [`Completion::usage`], or the [`StreamEnd::usage`] of the stream's last item.

mod anthropic;
mod aws_credentials;
mod bedrock;
mod call;
mod client;
mod embeddings;
mod error;
mod eventstream;
mod gemini;
mod openai;
mod openai_responses;
mod request;
mod response;
mod sigv4;
pub mod sse;
mod stream;
mod translate;

pub use anthropic::FALLBACK_MAX_TOKENS as ANTHROPIC_FALLBACK_MAX_TOKENS;
pub use aws_credentials::{AwsCredentialSource, AwsCredentials, AwsCredentialsError};
pub use bedrock::{
    converse_path as bedrock_converse_path, signing_region as bedrock_signing_region,
};
pub use call::UpstreamTarget;
pub use client::{Completion, ProviderClient, Timeouts};
pub use embeddings::{
    Embedded, EmbeddingData, EmbeddingInput, EmbeddingList, EmbeddingRequest, EmbeddingUsage,
    EncodingFormat, MAX_EMBEDDING_INPUTS, decode_base64, encode_base64,
};
pub use error::{ProviderError, TimeoutPhase, status_is_retryable};
pub use openai_responses::{ENCRYPTED_REASONING, FORWARDED_FIELDS as RESPONSES_FORWARDED_FIELDS};
pub use request::{
    ANTHROPIC_BLOCK_PART, ChatRequest, ContentPart, FunctionCall, FunctionDefinition, ImageUrl,
    JsonSchemaFormat, Message, MessageContent, NamedFunction, NamedToolChoice, ResponseFormat,
    ResponseFormatKind, Role, StopSequences, StreamOptions, Tool, ToolCall, ToolChoice,
    ToolChoiceMode,
};
pub use response::{
    ChatCompletion, ChatCompletionChunk, Choice, ChunkChoice, CompletionTokensDetails, Delta,
    FinishReason, FunctionCallDelta, OpenAiUsage, PromptTokensDetails, REASONING_CONTENT,
    ResponseMessage, THINKING_BLOCKS, ToolCallDelta, Usage,
};
pub use stream::{ChunkStream, StreamEnd, StreamEvent};

/// What a request needs from a model and provider; routing filters candidates by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequiredCapabilities {
    /// `stream: true`.
    pub streaming: bool,
    /// `tools` or `functions` present.
    pub function_calling: bool,
    /// At least one image content part.
    pub vision: bool,
    /// `response_format` of type `json_object` or `json_schema`.
    pub json_mode: bool,
    /// Embeddings whose input is token arrays: only an OpenAI-format provider takes them.
    pub token_input: bool,
}
