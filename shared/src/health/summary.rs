//! The outcome of one run: counts for the one-line log, plus each provider's result for the
//! callers that show it (`POST /admin/health-check`, the Lambda's return value).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::catalog::HealthStatus;

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The EventBridge schedule (the health-check Lambda).
    Schedule,
    /// The timer inside `switchboard serve`.
    Timer,
    /// `POST /admin/health-check`.
    Admin,
    /// The health-check binary run by hand outside Lambda.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Timer => "timer",
            Trigger::Admin => "admin",
            Trigger::Manual => "manual",
        }
    }
}

/// What a result did to the provider's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthAction {
    /// Disabled after consecutive `down` results (`disabled_reason = 'health'`).
    Disabled,
    /// Enabled again after the monitor's own disable.
    ReEnabled,
}

/// One provider's result in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProviderCheck {
    pub provider_id: i32,
    pub provider_slug: String,
    /// The recorded status: the probe's, escalated by the passive signal.
    #[schema(schema_with = crate::admin::schema::health_status)]
    pub status: HealthStatus,
    /// The probe's own status.
    #[schema(schema_with = crate::admin::schema::health_status)]
    pub probe_status: HealthStatus,
    pub http_status: Option<u16>,
    pub response_time_ms: Option<i32>,
    /// Consecutive `down` results after this one.
    pub consecutive_down: i32,
    /// Why it is not healthy (never upstream text, never a key).
    pub error: Option<String>,
    pub action: Option<HealthAction>,
}

/// The summary of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthRunSummary {
    /// Also the `request_id` of the run's audit rows.
    pub run_id: Uuid,
    pub trigger: Trigger,
    /// True when another run held the lock: this one did nothing and every count is 0.
    pub skipped: bool,
    /// Providers probed (active ones, and those the monitor disabled).
    pub checked: u32,
    pub healthy: u32,
    pub degraded: u32,
    pub down: u32,
    pub unknown: u32,
    /// Providers disabled by this run.
    pub disabled: u32,
    /// Providers enabled again by this run.
    pub re_enabled: u32,
    /// Expired credit holds released.
    pub holds_released: u64,
    /// Rate-limit counter windows deleted (older than 10 minutes).
    pub counters_pruned: u64,
    /// History rows deleted (older than the retention).
    pub history_pruned: u64,
    /// Stored Responses API responses deleted (past `SWITCHBOARD_RESPONSES_TTL_DAYS`).
    pub responses_expired: u64,
    pub duration_ms: u64,
    pub providers: Vec<ProviderCheck>,
}

impl HealthRunSummary {
    pub fn new(run_id: Uuid, trigger: Trigger) -> Self {
        Self {
            run_id,
            trigger,
            skipped: false,
            checked: 0,
            healthy: 0,
            degraded: 0,
            down: 0,
            unknown: 0,
            disabled: 0,
            re_enabled: 0,
            holds_released: 0,
            counters_pruned: 0,
            history_pruned: 0,
            responses_expired: 0,
            duration_ms: 0,
            providers: Vec::new(),
        }
    }

    /// Counts one provider's result.
    pub fn add(&mut self, check: ProviderCheck) {
        self.checked += 1;
        match check.status {
            HealthStatus::Healthy => self.healthy += 1,
            HealthStatus::Degraded => self.degraded += 1,
            HealthStatus::Down => self.down += 1,
            HealthStatus::Unknown => self.unknown += 1,
        }
        match check.action {
            Some(HealthAction::Disabled) => self.disabled += 1,
            Some(HealthAction::ReEnabled) => self.re_enabled += 1,
            None => {}
        }
        self.providers.push(check);
    }

    /// The one structured log line of a run.
    pub fn log(&self) {
        tracing::info!(
            run_id = %self.run_id,
            trigger = self.trigger.as_str(),
            skipped = self.skipped,
            checked = self.checked,
            healthy = self.healthy,
            degraded = self.degraded,
            down = self.down,
            unknown = self.unknown,
            disabled = self.disabled,
            re_enabled = self.re_enabled,
            holds_released = self.holds_released,
            counters_pruned = self.counters_pruned,
            history_pruned = self.history_pruned,
            responses_expired = self.responses_expired,
            duration_ms = self.duration_ms,
            "health check finished"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: HealthStatus, action: Option<HealthAction>) -> ProviderCheck {
        ProviderCheck {
            provider_id: 1,
            provider_slug: "p".into(),
            status,
            probe_status: status,
            http_status: None,
            response_time_ms: None,
            consecutive_down: 0,
            error: None,
            action,
        }
    }

    #[test]
    fn counts_add_up_and_serialize_flat() {
        let mut summary = HealthRunSummary::new(Uuid::nil(), Trigger::Timer);
        summary.add(check(HealthStatus::Healthy, Some(HealthAction::ReEnabled)));
        summary.add(check(HealthStatus::Down, Some(HealthAction::Disabled)));
        summary.add(check(HealthStatus::Degraded, None));
        summary.add(check(HealthStatus::Unknown, None));
        assert_eq!(
            (
                summary.checked,
                summary.healthy,
                summary.degraded,
                summary.down,
                summary.unknown
            ),
            (4, 1, 1, 1, 1)
        );
        assert_eq!((summary.disabled, summary.re_enabled), (1, 1));
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["trigger"], "timer");
        assert_eq!(json["providers"][0]["action"], "re_enabled");
        assert_eq!(json["providers"][1]["status"], "down");
    }
}
