//! What routing needs to know about one request, and about the world at that moment.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::catalog::{ModelType, PowerLevel, TaskType, Tier};
use crate::config::PowerLevelCeilings;

/// Defined with the provider adapters (they derive it from the request body).
pub use crate::providers::RequiredCapabilities;

/// One chat request, as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingRequest {
    pub user_id: String,
    pub tier: Tier,
    pub power_level: PowerLevel,
    pub task_type: TaskType,
    /// `auto`, a catalog `model_id` (which may contain `/`), or `provider_slug/model_id`.
    pub model: String,
    /// The kind of model the route calls: chat routes never pick an embedding model, and
    /// `/v1/embeddings` never a chat model.
    pub model_type: ModelType,
    pub capabilities: RequiredCapabilities,
    /// From [`crate::tokens::estimate_prompt_tokens`].
    pub estimated_prompt_tokens: u32,
    /// `max_tokens` / `max_completion_tokens` of the request, if given (each candidate
    /// clamps it to its own limits: [`crate::routing::OutputBudget`]).
    pub requested_output_tokens: Option<u32>,
    /// Provider ids for which the user has an active BYOK key
    /// ([`crate::keys::byok::active_byok_provider_ids`]).
    pub byok_providers: HashSet<i32>,
}

impl RoutingRequest {
    /// The model name that asks routing to choose by power level.
    pub const AUTO: &'static str = "auto";

    pub fn is_auto(&self) -> bool {
        self.model == Self::AUTO
    }
}

/// The world at planning time: the clock, which system provider keys exist, and the
/// power-level cost ceilings. Separate from the request so tests can fix each of them.
#[derive(Clone, Copy)]
pub struct RoutingContext<'a> {
    /// Compared with each provider's `breaker_open_until`.
    pub now: DateTime<Utc>,
    /// Whether the platform holds a key for this provider slug (`SWITCHBOARD_PROVIDER_KEY_*`
    /// or the secret).
    pub has_system_key: &'a (dyn Fn(&str) -> bool + Sync),
    pub ceilings: &'a PowerLevelCeilings,
}

impl std::fmt::Debug for RoutingContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingContext")
            .field("now", &self.now)
            .field("ceilings", &self.ceilings)
            .finish_non_exhaustive()
    }
}
