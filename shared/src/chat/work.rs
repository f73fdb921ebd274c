//! What a run calls the model for: a chat completion (from `/v1/chat/completions` or
//! `/v1/messages`) or embeddings (`/v1/embeddings`). Everything else about a run —
//! routing, admission, the hold, fallbacks, the breaker, the capture and its usage rows —
//! is the same code for both.

use serde_json::Value;

use super::error::ChatError;
use crate::catalog::ModelType;
use crate::ledger::CacheWrites;
use crate::providers::{ChatRequest, EmbeddingRequest, RequiredCapabilities};
use crate::routing::Candidate;
use crate::tokens::{self, MediaBiller, PromptMedia};

/// The route a request came through; recorded on its usage rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Route {
    #[default]
    ChatCompletions,
    Messages,
    Responses,
    Embeddings,
}

impl Route {
    pub fn path(self) -> &'static str {
        match self {
            Route::ChatCompletions => "/v1/chat/completions",
            Route::Messages => "/v1/messages",
            Route::Responses => "/v1/responses",
            Route::Embeddings => "/v1/embeddings",
        }
    }
}

/// The request a run serves.
pub(super) enum Work {
    Chat(Box<ChatRequest>),
    Embed(EmbeddingRequest),
}

impl Work {
    /// 400 with `param` for what no provider would take.
    pub fn validate(&self) -> Result<(), ChatError> {
        match self {
            Work::Chat(request) => request.validate().map_err(ChatError::from),
            Work::Embed(request) => request.validate().map_err(ChatError::from),
        }
    }

    pub fn model(&self) -> &str {
        match self {
            Work::Chat(request) => &request.model,
            Work::Embed(request) => &request.model,
        }
    }

    pub fn model_type(&self) -> ModelType {
        match self {
            Work::Chat(_) => ModelType::Chat,
            Work::Embed(_) => ModelType::Embedding,
        }
    }

    /// `gen_ai.operation.name` (OpenTelemetry GenAI conventions).
    pub fn operation_name(&self) -> &'static str {
        match self {
            Work::Chat(_) => "chat",
            Work::Embed(_) => "embeddings",
        }
    }

    pub fn is_stream(&self) -> bool {
        matches!(self, Work::Chat(request) if request.is_stream())
    }

    /// The output the caller asked for at most; an embedding produces none.
    pub fn requested_output_tokens(&self) -> Option<u32> {
        match self {
            Work::Chat(request) => request.requested_output_tokens(),
            Work::Embed(_) => Some(0),
        }
    }

    pub fn has_cache_control(&self) -> bool {
        matches!(self, Work::Chat(request) if request.has_cache_control())
    }

    /// The longest-lived prompt-cache write the request's breakpoints ask for.
    pub fn cache_writes(&self) -> CacheWrites {
        match self {
            Work::Chat(request) => request.cache_writes(),
            Work::Embed(_) => CacheWrites::None,
        }
    }

    /// What the hold prices each candidate's prompt at, from the routing `estimate`.
    pub fn prompt_bounds(&self, estimate: u32) -> PromptBounds {
        PromptBounds {
            estimate,
            media: match self {
                Work::Chat(request) => Some(PromptMedia::of(&message_values(request))),
                Work::Embed(_) => None,
            },
        }
    }

    pub fn required_capabilities(&self) -> RequiredCapabilities {
        match self {
            Work::Chat(request) => request.required_capabilities(),
            Work::Embed(request) => RequiredCapabilities {
                token_input: request.input.is_tokens(),
                ..RequiredCapabilities::default()
            },
        }
    }

    /// Fields the ledger cannot price (chat only).
    pub fn price_raising_fields(&self) -> Vec<&'static str> {
        match self {
            Work::Chat(request) => request.price_raising_fields(),
            Work::Embed(_) => Vec::new(),
        }
    }

    /// The input's estimated tokens: the hold's input side.
    pub fn estimate_prompt_tokens(&self) -> u32 {
        match self {
            Work::Chat(request) => estimate_prompt_tokens(request),
            Work::Embed(request) => request.estimated_input_tokens(&request.model),
        }
    }
}

/// The prompt's estimated tokens (the hold's input side, and `count_tokens`). The tokenizer
/// follows the requested model's family; `auto` (or any non-OpenAI model) gets the
/// conservative heuristic. Tool definitions count too.
pub fn estimate_prompt_tokens(request: &ChatRequest) -> u32 {
    let messages = message_values(request);
    let mut prompt_tokens = tokens::estimate_prompt_tokens(&request.model, &messages);
    if let Some(tools) = &request.tools
        && let Ok(json) = serde_json::to_string(tools)
    {
        prompt_tokens =
            prompt_tokens.saturating_add(tokens::estimate_text_tokens(&request.model, &json));
    }
    prompt_tokens
}

fn message_values(request: &ChatRequest) -> Vec<Value> {
    request
        .messages
        .iter()
        .map(|m| serde_json::to_value(m).unwrap_or(Value::Null))
        .collect()
}

/// The hold's prompt per candidate: the routing estimate with the prompt's images and PDF
/// pages at the most that candidate's provider bills for them, and no more than its
/// context window (`tokens::prompt_bound`). Embeddings: the estimate.
pub(super) struct PromptBounds {
    estimate: u32,
    media: Option<PromptMedia>,
}

impl PromptBounds {
    pub fn for_candidate(&self, candidate: &Candidate) -> u64 {
        match &self.media {
            None => u64::from(self.estimate),
            Some(media) => tokens::prompt_bound(
                self.estimate,
                media,
                MediaBiller::Model {
                    format: candidate.provider.api_format,
                    model_id: &candidate.model.model_id,
                },
                candidate.model.context_window,
            ),
        }
    }
}
