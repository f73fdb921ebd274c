//! The credit ledger: how long a hold lives, and group commit's batch size.

use std::time::Duration;

use super::ConfigError;
use super::env::Env;

/// The hold lifetime when `SWITCHBOARD_HOLD_TTL_SECS` is unset.
pub const DEFAULT_HOLD_TTL: Duration = Duration::from_secs(900);

#[derive(Debug, Clone)]
pub struct LedgerSettings {
    /// A hold left by a crashed or frozen instance expires after this
    /// (`SWITCHBOARD_HOLD_TTL_SECS`, default 900).
    pub hold_ttl: Duration,
    /// The most requests one group-commit batch carries (`SWITCHBOARD_LEDGER_MAX_BATCH`,
    /// default 64; 1 turns group commit off).
    pub max_batch: usize,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            hold_ttl: DEFAULT_HOLD_TTL,
            max_batch: 64,
        }
    }
}

impl LedgerSettings {
    pub(super) fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        Ok(Self {
            hold_ttl: env.seconds("SWITCHBOARD_HOLD_TTL_SECS", 60, 86_400, defaults.hold_ttl)?,
            max_batch: env
                .number("SWITCHBOARD_LEDGER_MAX_BATCH", 1, 1000)?
                .unwrap_or(defaults.max_batch),
        })
    }
}
