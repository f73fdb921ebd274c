//! One struct per catalog table (`llm_providers`, `llm_models`, `llm_routing_rules`),
//! field for field, with the closed vocabularies parsed into their enums and prices as
//! exact decimals (USD per one million tokens).

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use super::types::{ApiFormat, AuthType, HealthStatus, ModelType, PowerLevel, TaskType, Tier};

/// A row of `llm_providers`: where and how to call an upstream, and its health.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub id: i32,
    pub provider_name: String,
    pub provider_slug: String,
    pub api_format: ApiFormat,
    pub base_url: String,
    pub health_url: Option<String>,
    pub auth_type: AuthType,
    pub supports_streaming: bool,
    pub supports_function_calling: bool,
    pub supports_vision: bool,
    /// An OpenAI-format provider that also serves the Responses API (`/responses`):
    /// Responses requests go to it natively.
    pub supports_responses_api: bool,
    pub rate_limit_rpm: Option<i32>,
    pub rate_limit_tpm: Option<i32>,
    pub rate_limit_rpd: Option<i32>,
    pub is_active: bool,
    /// Users may store their own key for this provider.
    pub is_byok_supported: bool,
    /// The platform holds a key for this provider (requests may use it without BYOK).
    pub is_system_provider: bool,
    pub health_status: HealthStatus,
    pub health_last_checked: Option<DateTime<Utc>>,
    pub health_response_time_ms: Option<i32>,
    pub health_consecutive_down: i32,
    pub breaker_consecutive_failures: i32,
    /// The shared circuit breaker is open (the provider is in cooldown) until this instant.
    pub breaker_open_until: Option<DateTime<Utc>>,
    /// `admin` or `health` when the provider was disabled.
    pub disabled_reason: Option<String>,
    pub min_tier_required: Tier,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Provider {
    /// Whether the circuit breaker keeps this provider in cooldown at `now`.
    pub fn breaker_is_open(&self, now: DateTime<Utc>) -> bool {
        self.breaker_open_until.is_some_and(|until| now < until)
    }
}

/// A row of `llm_models`: one offer of a model by one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The row id (what rules and `replacement_model_id` refer to).
    pub id: i32,
    pub provider_id: i32,
    pub model_name: String,
    /// The id the upstream knows the model by (`gpt-4o`, `meta-llama/llama-3-70b-instruct`).
    pub model_id: String,
    pub display_name: Option<String>,
    /// Maximum output tokens; `None` = not limited beyond the context window.
    pub max_tokens: Option<i32>,
    pub context_window: i32,
    /// `chat` or `embedding`: which routes may pick this model.
    pub model_type: ModelType,
    pub supports_streaming: bool,
    pub supports_function_calling: bool,
    pub supports_vision: bool,
    pub supports_json_mode: bool,
    pub cost_per_1m_input_tokens: Decimal,
    pub cost_per_1m_output_tokens: Decimal,
    /// `None` = no cache discount: cached input costs the input price.
    pub cost_per_1m_tokens_cached: Option<Decimal>,
    /// 5-minute prompt-cache writes; `None` = 1.25 × the input price (Anthropic's rule).
    pub cost_per_1m_cache_write_tokens: Option<Decimal>,
    /// 1-hour prompt-cache writes; `None` = 2 × the input price.
    pub cost_per_1m_cache_write_1h_tokens: Option<Decimal>,
    pub power_level: Option<PowerLevel>,
    pub power_level_priority: i32,
    pub is_active: bool,
    pub is_deprecated: bool,
    pub deprecation_date: Option<NaiveDate>,
    /// The `llm_models.id` that replaces this one when it is deprecated.
    pub replacement_model_id: Option<i32>,
    pub min_tier_required: Tier,
    /// Measured (`sb_refresh_model_performance`): the p50 time to the complete answer of
    /// buffered calls, and its sample count in the window.
    pub avg_latency_ms: Option<i32>,
    pub latency_samples: i32,
    /// The p50 time to the first token of streams, and its sample count.
    pub avg_ttft_ms: Option<i32>,
    pub ttft_samples: i32,
    pub avg_tokens_per_second: Option<Decimal>,
    pub tokens_per_second_samples: i32,
    pub performance_updated_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Model {
    /// Price of one million cached input tokens (the input price when there is no discount).
    pub fn cached_input_price(&self) -> Decimal {
        self.cost_per_1m_tokens_cached
            .unwrap_or(self.cost_per_1m_input_tokens)
    }
}

/// A row of `llm_routing_rules`: "for this power level (and tier, and task type), route
/// `auto` to this model".
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingRule {
    pub id: i32,
    /// The `llm_models.id` this rule routes to (the table's column name).
    pub model_id: i32,
    pub power_level: PowerLevel,
    /// `None` matches every tier.
    pub user_tier: Option<Tier>,
    /// `None` matches every task type.
    pub task_type: Option<TaskType>,
    /// Lower runs first.
    pub priority: i32,
    /// Share of the weighted draw among rules of the same priority (> 0).
    pub weight: i32,
    /// Bounds on the request's estimated total tokens (prompt + requested output).
    pub min_tokens: Option<i32>,
    pub max_tokens: Option<i32>,
    pub requires_byok: bool,
    pub is_fallback: bool,
    pub fallback_order: i32,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RoutingRule {
    /// Whether this active rule applies to a request of this power level, tier and task.
    pub fn matches(&self, power_level: PowerLevel, tier: Tier, task_type: TaskType) -> bool {
        self.is_active
            && self.power_level == power_level
            && self.user_tier.is_none_or(|t| t == tier)
            && self.task_type.is_none_or(|t| t == task_type)
    }
}
