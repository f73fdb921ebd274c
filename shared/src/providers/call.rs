//! The types one upstream call is made of, shared by the client and the three format
//! adapters (which the client dispatches to): where to call with which key, the
//! translated request, and what an adapter needs to read the answer.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::error;
use crate::catalog::{ApiFormat, AuthType};
use crate::secret::Secret;

/// Where and how to call: one offer (provider + model) of the candidate plan.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    pub api_format: ApiFormat,
    /// The provider's base URL including its version segment, as in the catalog
    /// (`https://api.openai.com/v1`, `https://api.anthropic.com/v1`,
    /// `https://generativelanguage.googleapis.com/v1beta`).
    pub base_url: String,
    pub auth_type: AuthType,
    /// The upstream's own model id (replaces the client's `model`).
    pub model_id: String,
    /// System or BYOK key; `None` only for `auth_type = none`.
    pub api_key: Option<Secret>,
    /// The most output the call may produce: the limit the hold assumed (the request's
    /// `max_tokens` clamped to the model's output limit and to what its context window
    /// leaves after the prompt; without one, that limit). Sent in every format, in place
    /// of a larger request value and when the request gave none, so that the hold stays
    /// an upper bound. `None` (probes, key checks): the request's own value, if any (and
    /// for Anthropic, which requires one, 4096). See [`UpstreamTarget::output_tokens`].
    pub max_output_tokens: Option<u32>,
    /// Forward request fields Switchboard does not price (the user's own key: the user
    /// pays the provider). On the platform's key only [`FORWARDED_FIELDS`] pass.
    pub forward_unpriced_fields: bool,
    /// Anthropic: add prompt-cache breakpoints (the system prompt and the conversation
    /// before the last turn) when the request set none, so that a power level that prefers
    /// cached prompts gets cache hits. Ignored by the other formats.
    pub auto_cache_control: bool,
    /// The W3C `traceparent` of this call's span, sent to the provider when tracing is on.
    pub traceparent: Option<String>,
    /// The provider serves the OpenAI Responses API (`llm_providers.supports_responses_api`):
    /// a request that came in as one ([`super::ChatRequest::native_responses`]) goes to its
    /// `/responses` natively.
    pub responses_api: bool,
    /// Bedrock: the account id sent as `requestMetadata` (`SWITCHBOARD_BEDROCK_REQUEST_TAGS`);
    /// ignored by the other formats.
    pub account_tag: Option<String>,
}

impl UpstreamTarget {
    /// The output limit to send for a request that asked for `requested` (its
    /// `max_tokens` or `max_completion_tokens`): that when within
    /// [`max_output_tokens`](Self::max_output_tokens), else that limit.
    pub fn output_tokens(&self, requested: Option<u32>) -> Option<u32> {
        match (requested, self.max_output_tokens) {
            (Some(requested), Some(limit)) => Some(requested.min(limit)),
            (requested, limit) => requested.or(limit),
        }
    }
}

/// Request fields outside [`ChatRequest`](super::ChatRequest)'s own that reach an
/// OpenAI-format provider on the platform's key: each is free or billed as ordinary
/// tokens. Any other field is dropped there (api.md: unknown fields are ignored); on a
/// user's own key every field passes ([`UpstreamTarget::forward_unpriced_fields`]).
pub const FORWARDED_FIELDS: &[&str] = &[
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "reasoning_effort",
    "prediction",
    "store",
    "metadata",
    "verbosity",
    "parallel_tool_calls",
    // Only `auto` / `default` get here on the platform's key (the others are refused).
    "service_tier",
];

/// What an adapter needs to read an answer.
#[derive(Debug, Clone)]
pub(crate) struct ResponseContext {
    pub model: String,
    pub created: u64,
    pub prompt_estimate: u64,
    pub key: Option<Secret>,
}

impl ResponseContext {
    pub fn sanitize(&self, text: &str) -> String {
        error::sanitize(text, self.key.as_ref())
    }
}

/// A translated upstream request.
#[derive(Debug)]
pub(crate) struct UpstreamCall {
    pub url: String,
    pub body: Value,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// `base_url` joined with `path` (exactly one slash between them).
pub(crate) fn join_url(base_url: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base_url.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_url_has_one_slash() {
        assert_eq!(
            join_url("https://a/v1/", "/messages"),
            "https://a/v1/messages"
        );
        assert_eq!(
            join_url("https://a/v1", "messages"),
            "https://a/v1/messages"
        );
    }
}
