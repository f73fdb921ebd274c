//! Why no candidate is left: the model does not exist (404), the user's tier is too low
//! (403), the prompt fits no candidate's context window (400), or every candidate was
//! removed by another filter (503), naming that filter.

use std::fmt;

use crate::catalog::{ModelType, Tier};

/// The filters of routing.md, in the order they run. The one that removed the last
/// candidate is named in [`RoutingError::NoAvailableProvider`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoutingFilter {
    /// `auto`: no active rule for this power level, tier and task type.
    RuleMatch,
    /// A deprecated model without a replacement (or whose replacement does not exist).
    Deprecated,
    /// The user's tier is below the provider's or model's `min_tier_required`.
    Tier,
    /// The model row is inactive.
    ModelDisabled,
    /// The provider row is inactive (by an admin or the health monitor).
    ProviderDisabled,
    /// The provider's health status is `down`.
    ProviderDown,
    /// Streaming, function calling, vision or json mode not supported.
    Capability,
    /// The prompt alone does not fit the model's context window (the output is clamped
    /// to what is left, never filtered on).
    ContextWindow,
    /// The estimated total tokens are outside the rule's `min_tokens..=max_tokens`.
    RuleTokenBounds,
    /// `auto` only: the blended price exceeds the power level's ceiling.
    CostCeiling,
    /// The rule requires a BYOK key and the user has none for the provider.
    RequiresByok,
    /// No BYOK key, no system key, and the provider needs a key.
    Credential,
    /// `auto` only: the measured latency (time to first token for streams, to the
    /// complete answer otherwise) exceeds the power level's ceiling. Never removes the
    /// last candidate: when every one is too slow, the fastest stays.
    LatencyCeiling,
}

impl RoutingFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            RoutingFilter::RuleMatch => "routing rule",
            RoutingFilter::Deprecated => "deprecation",
            RoutingFilter::Tier => "tier",
            RoutingFilter::ModelDisabled => "model disabled",
            RoutingFilter::ProviderDisabled => "provider disabled",
            RoutingFilter::ProviderDown => "provider health",
            RoutingFilter::Capability => "capability",
            RoutingFilter::ContextWindow => "context window",
            RoutingFilter::RuleTokenBounds => "rule token bounds",
            RoutingFilter::CostCeiling => "power-level cost ceiling",
            RoutingFilter::RequiresByok => "requires BYOK",
            RoutingFilter::Credential => "credential",
            RoutingFilter::LatencyCeiling => "power-level latency ceiling",
        }
    }
}

impl fmt::Display for RoutingFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    /// 404 `model_not_found`.
    #[error("the model `{model}` does not exist")]
    ModelNotFound { model: String },
    /// 400: the model exists, but is of another kind than the route calls (an embedding
    /// model on a chat route, or the reverse).
    #[error(
        "the model `{model}` is {}; this route needs {} (chat models on /v1/chat/completions and /v1/messages, embedding models on /v1/embeddings)",
        model_kind(*.actual),
        model_kind(*.expected)
    )]
    WrongModelType {
        model: String,
        actual: ModelType,
        expected: ModelType,
    },
    /// 403: every remaining candidate needs a higher tier.
    #[error("{target} requires the {needed} tier or higher (your tier is {tier})")]
    TierTooLow {
        /// The requested model, or `auto (power level …)`.
        target: String,
        tier: Tier,
        /// The lowest tier that would have kept a candidate.
        needed: Tier,
    },
    /// 400 `context_length_exceeded`: the prompt alone exceeds the context window of every
    /// candidate left by the earlier filters.
    #[error(
        "the prompt is longer than the context window of every model that could serve it ({detail}); shorten the messages"
    )]
    ContextLengthExceeded { detail: String },
    /// 503 `no_available_provider`.
    #[error(
        "no available provider for {target}: every candidate was removed by the {filter} filter ({detail})"
    )]
    NoAvailableProvider {
        /// The requested model, or `auto (power level …)`.
        target: String,
        filter: RoutingFilter,
        detail: String,
    },
}

fn model_kind(model_type: ModelType) -> &'static str {
    match model_type {
        ModelType::Chat => "a chat model",
        ModelType::Embedding => "an embedding model",
    }
}
