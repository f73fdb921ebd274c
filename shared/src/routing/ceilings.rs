//! Power-level cost ceilings: the most a model reached through `auto` may cost, as a
//! blended price per one million tokens.
//!
//! The blend is `(3 × input + output) / 4` (a 3:1 input:output mix, the usual convention of
//! price comparisons). The seed's own rules do not fit the table literally (balanced →
//! GPT-4 Turbo blends to $15 > $5), so the ceiling works in two steps:
//!
//! - A model that a routing rule for this power level names explicitly is trusted by the
//!   admin who wrote the rule, up to the ceiling of the **next level up** (eco's rules up to
//!   balanced's $5, balanced's up to precision's $100, precision's up to $100).
//! - A model that `auto` reaches indirectly, as the replacement of a deprecated rule
//!   model, must fit the power level's **own** ceiling.
//!
//! Requests that name a model (`gpt-4o`, `openai/gpt-4o`) are not subject to ceilings.

use rust_decimal::Decimal;

use crate::catalog::{Model, PowerLevel};
use crate::config::PowerLevelCeilings;

impl PowerLevelCeilings {
    /// The power level's own ceiling.
    pub fn ceiling(&self, level: PowerLevel) -> Decimal {
        match level {
            PowerLevel::Eco => self.eco,
            PowerLevel::Balanced => self.balanced,
            PowerLevel::Precision => self.precision,
        }
    }

    /// The power level's latency ceiling, in milliseconds.
    pub fn max_latency_ms(&self, level: PowerLevel) -> u32 {
        match level {
            PowerLevel::Eco => self.eco_max_latency_ms,
            PowerLevel::Balanced => self.balanced_max_latency_ms,
            PowerLevel::Precision => self.precision_max_latency_ms,
        }
    }

    /// Whether the power level puts cache-capable candidates first.
    pub fn prefers_cached(&self, level: PowerLevel) -> bool {
        match level {
            PowerLevel::Eco => self.eco_prefer_cached,
            PowerLevel::Balanced => self.balanced_prefer_cached,
            PowerLevel::Precision => self.precision_prefer_cached,
        }
    }

    /// The ceiling for a model a rule of `level` names explicitly: the next level's.
    pub fn explicit_rule_ceiling(&self, level: PowerLevel) -> Decimal {
        match level {
            PowerLevel::Eco => self.balanced,
            PowerLevel::Balanced | PowerLevel::Precision => self.precision,
        }
    }
}

/// `(3 × input + output) / 4`, USD per one million tokens.
pub fn blended_cost_per_1m(model: &Model) -> Decimal {
    (Decimal::from(3) * model.cost_per_1m_input_tokens + model.cost_per_1m_output_tokens)
        / Decimal::from(4)
}
