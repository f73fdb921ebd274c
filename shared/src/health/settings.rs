//! The health check's tuning knobs (`SWITCHBOARD_HEALTH_*`, read by [`crate::config`]).

use std::time::Duration;

/// How probes are made and judged, how long history is kept, and how the passive signal
/// (recent usage rows) is folded in. The run period itself is
/// `Config::health_check_interval` (`SWITCHBOARD_HEALTH_CHECK_INTERVAL_SECS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// The whole probe of one provider (URL check, connect, answer headers).
    /// `SWITCHBOARD_HEALTH_PROBE_TIMEOUT_SECS`, default 10 s.
    pub probe_timeout: Duration,
    /// A 2xx slower than this is `degraded`. Must be below `probe_timeout`.
    /// `SWITCHBOARD_HEALTH_DEGRADED_LATENCY_MS`, default 2000 ms.
    pub degraded_latency: Duration,
    /// Probes in flight at once. `SWITCHBOARD_HEALTH_PROBE_CONCURRENCY`, default 8.
    pub probe_concurrency: usize,
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
            probe_timeout: Duration::from_secs(10),
            degraded_latency: Duration::from_millis(2000),
            probe_concurrency: 8,
            strikes_to_disable: 2,
            history_retention_days: 30,
            passive_window: Duration::from_secs(300),
            passive_min_attempts: 5,
            passive_error_percent: 50,
        }
    }
}
