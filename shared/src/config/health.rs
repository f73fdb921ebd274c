//! The health check: how often it runs, how probes are made and judged, how long history
//! is kept, and how the passive signal (recent usage rows) is folded in.

use std::time::Duration;

use super::ConfigError;
use super::env::Env;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// How often `serve` runs the check (`SWITCHBOARD_HEALTH_CHECK_INTERVAL_SECS`, default
    /// 300; in AWS the schedule in the SAM template decides).
    pub interval: Duration,
    /// The whole probe of one provider (URL check, connect, answer headers).
    /// `SWITCHBOARD_HEALTH_PROBE_TIMEOUT_SECS`, default 10 s.
    pub probe_timeout: Duration,
    /// A 2xx slower than this is `degraded`. Must be below `probe_timeout`.
    /// `SWITCHBOARD_HEALTH_DEGRADED_LATENCY_MS`, default 2000 ms.
    pub degraded_latency: Duration,
    /// Consecutive `down` results that disable a non-system provider.
    /// `SWITCHBOARD_HEALTH_DOWN_STRIKES`, default 2.
    pub strikes_to_disable: i32,
    /// History rows (`provider_health_checks`) older than this many days are deleted.
    /// `SWITCHBOARD_HEALTH_HISTORY_DAYS`, default 30.
    pub history_retention_days: i32,
    /// How far back the passive signal looks in `llm_usage_logs`; zero turns it off.
    /// `SWITCHBOARD_HEALTH_PASSIVE_WINDOW_SECS`, default 300 s.
    pub passive_window: Duration,
    /// Fewer attempts than this in the window say nothing.
    /// `SWITCHBOARD_HEALTH_PASSIVE_MIN_ATTEMPTS`, default 5.
    pub passive_min_attempts: i64,
    /// The passive signal fires when strictly more than this percentage of the window's
    /// attempts failed. `SWITCHBOARD_HEALTH_PASSIVE_ERROR_PERCENT`, default 50.
    pub passive_error_percent: i64,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            probe_timeout: Duration::from_secs(10),
            degraded_latency: Duration::from_millis(2000),
            strikes_to_disable: 2,
            history_retention_days: 30,
            passive_window: Duration::from_secs(300),
            passive_min_attempts: 5,
            passive_error_percent: 50,
        }
    }
}

impl HealthSettings {
    /// The `SWITCHBOARD_HEALTH_*` variables; the degraded threshold must be below the
    /// probe timeout (a probe that slow would have timed out as `down` first).
    pub(super) fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let probe_timeout = env.seconds(
            "SWITCHBOARD_HEALTH_PROBE_TIMEOUT_SECS",
            1,
            60,
            defaults.probe_timeout,
        )?;
        let degraded_latency = env
            .number("SWITCHBOARD_HEALTH_DEGRADED_LATENCY_MS", 1, 60_000)?
            .map_or(defaults.degraded_latency, |ms| {
                Duration::from_millis(ms as u64)
            });
        if degraded_latency >= probe_timeout {
            return Err(ConfigError {
                variable: "SWITCHBOARD_HEALTH_DEGRADED_LATENCY_MS",
                reason: format!(
                    "{} ms is not below the probe timeout of {} s (SWITCHBOARD_HEALTH_PROBE_TIMEOUT_SECS)",
                    degraded_latency.as_millis(),
                    probe_timeout.as_secs()
                ),
            });
        }
        Ok(Self {
            interval: env.seconds(
                "SWITCHBOARD_HEALTH_CHECK_INTERVAL_SECS",
                10,
                86_400,
                defaults.interval,
            )?,
            probe_timeout,
            degraded_latency,
            strikes_to_disable: env
                .number("SWITCHBOARD_HEALTH_DOWN_STRIKES", 1, 10)?
                .map_or(defaults.strikes_to_disable, |n| n as i32),
            history_retention_days: env
                .number("SWITCHBOARD_HEALTH_HISTORY_DAYS", 1, 3650)?
                .map_or(defaults.history_retention_days, |n| n as i32),
            passive_window: env.seconds(
                "SWITCHBOARD_HEALTH_PASSIVE_WINDOW_SECS",
                0,
                86_400,
                defaults.passive_window,
            )?,
            passive_min_attempts: env
                .number("SWITCHBOARD_HEALTH_PASSIVE_MIN_ATTEMPTS", 1, 1_000_000)?
                .map_or(defaults.passive_min_attempts, |n| n as i64),
            passive_error_percent: env
                .number("SWITCHBOARD_HEALTH_PASSIVE_ERROR_PERCENT", 0, 99)?
                .map_or(defaults.passive_error_percent, |n| n as i64),
        })
    }
}
