//! The passive circuit breaker shared through the provider rows.

use std::time::Duration;

use super::ConfigError;
use super::env::Env;

/// Consecutive failures that open a provider's breaker, and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// `SWITCHBOARD_BREAKER_THRESHOLD`, default 3.
    pub failure_threshold: i32,
    /// `SWITCHBOARD_BREAKER_COOLDOWN_SECS`, default 30.
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            cooldown: Duration::from_secs(30),
        }
    }
}

impl BreakerSettings {
    pub(super) fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        Ok(Self {
            failure_threshold: env
                .number("SWITCHBOARD_BREAKER_THRESHOLD", 1, 100)?
                .map_or(defaults.failure_threshold, |n| n as i32),
            cooldown: env.seconds(
                "SWITCHBOARD_BREAKER_COOLDOWN_SECS",
                1,
                3600,
                defaults.cooldown,
            )?,
        })
    }
}
