//! The credit ledger: how long a hold lives, group commit's batch size, and the Lambda
//! functions' pending-charge queue.

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
    /// The SQS queue a Lambda function keeps the captures that cannot commit in, and the
    /// billing-export function drains (`SWITCHBOARD_PENDING_CHARGES_QUEUE_URL`; unset: no
    /// queue). `serve` keeps them in its spool instead and ignores it.
    pub pending_charges_queue_url: Option<String>,
    /// `serve` admits against quota grants (`SWITCHBOARD_LEDGER_GRANTS`, default on; the
    /// Lambda functions always use per-request holds).
    pub grants: bool,
    /// Granted requests' captures are written within this (`SWITCHBOARD_LEDGER_FLUSH_MS`,
    /// default 100): what a crash of `serve` can lose at most.
    pub flush_delay: Duration,
    /// An unused grant is returned after this (`SWITCHBOARD_LEDGER_GRANT_IDLE_SECS`,
    /// default 10).
    pub grant_idle: Duration,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            hold_ttl: DEFAULT_HOLD_TTL,
            max_batch: 64,
            pending_charges_queue_url: None,
            grants: true,
            flush_delay: Duration::from_millis(100),
            grant_idle: Duration::from_secs(10),
        }
    }
}

impl LedgerSettings {
    pub(super) fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let pending_charges_queue_url = env
            .get("SWITCHBOARD_PENDING_CHARGES_QUEUE_URL")
            .map(|url| url.trim().to_string());
        if let Some(url) = &pending_charges_queue_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError {
                variable: "SWITCHBOARD_PENDING_CHARGES_QUEUE_URL",
                reason: format!(
                    "`{url}` is not a queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)"
                ),
            });
        }
        Ok(Self {
            hold_ttl: env.seconds("SWITCHBOARD_HOLD_TTL_SECS", 60, 86_400, defaults.hold_ttl)?,
            max_batch: env
                .number("SWITCHBOARD_LEDGER_MAX_BATCH", 1, 1000)?
                .unwrap_or(defaults.max_batch),
            pending_charges_queue_url,
            grants: env
                .flag("SWITCHBOARD_LEDGER_GRANTS")?
                .unwrap_or(defaults.grants),
            flush_delay: Duration::from_millis(
                env.number("SWITCHBOARD_LEDGER_FLUSH_MS", 1, 5_000)?
                    .map_or(100, |ms| ms as u64),
            ),
            grant_idle: env.seconds(
                "SWITCHBOARD_LEDGER_GRANT_IDLE_SECS",
                1,
                3_600,
                defaults.grant_idle,
            )?,
        })
    }
}
