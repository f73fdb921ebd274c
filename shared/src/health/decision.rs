//! What a probe result does to a provider: the passive signal folded into the probe's
//! status, then the strike count and the disable / re-enable decision (hysteresis). Pure
//! functions; the caller applies the decision under the provider's row lock.
//!
//! ## Passive signal
//! Over the last `passive_window` (default 5 min) of `llm_usage_logs` for the provider, an
//! attempt failed when its `status_code` is NULL (no answer: timeout, connection error),
//! ≥ 500, or 429. When there were at least `passive_min_attempts` (default 5) attempts and
//! strictly more than `passive_error_percent` (default 50 %) of them failed, the probe's
//! status is escalated one step: `healthy` → `degraded`, `degraded` → `down`. A `down` stays
//! `down`; an `unknown` (not probed) stays `unknown`. So real traffic can turn a borderline
//! probe into a strike, but the passive signal alone (a healthy probe) never strikes, and
//! never disables a provider.
//!
//! ## Hysteresis
//! - `down`: one more strike (`health_consecutive_down`). At `strikes_to_disable` (default
//!   2) consecutive strikes an active, non-system provider is disabled with
//!   `disabled_reason = 'health'`. A system provider keeps counting strikes and its `down`
//!   status (routing skips `down` providers) but is never disabled.
//! - `degraded`: the strikes start over; nothing is enabled or disabled.
//! - `healthy`: the strikes start over, and a provider the monitor disabled
//!   (`disabled_reason = 'health'`) is enabled again. One healthy result is enough, a
//!   degraded one is not.
//! - `unknown`: no information; strikes and activation are left alone.
//! - A provider an admin disabled (`is_active = false`, reason `admin` or NULL) is never
//!   enabled by the monitor.

use crate::catalog::HealthStatus;

use crate::config::HealthSettings;

/// `disabled_reason` of a provider the monitor disabled.
pub const DISABLED_BY_HEALTH: &str = "health";

/// Recent traffic of one provider (from usage rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PassiveSignal {
    pub attempts: i64,
    pub failures: i64,
}

impl PassiveSignal {
    /// Enough attempts, and strictly more than the threshold share of them failed.
    pub fn is_failing(&self, settings: &HealthSettings) -> bool {
        !settings.passive_window.is_zero()
            && self.attempts >= settings.passive_min_attempts
            && self.failures.saturating_mul(100)
                > self.attempts.saturating_mul(settings.passive_error_percent)
    }
}

/// The probe status with the passive signal folded in, and a note when it changed it.
pub fn fold_passive(
    probe: HealthStatus,
    signal: Option<&PassiveSignal>,
    settings: &HealthSettings,
) -> (HealthStatus, Option<String>) {
    let Some(signal) = signal.filter(|s| s.is_failing(settings)) else {
        return (probe, None);
    };
    let escalated = match probe {
        HealthStatus::Healthy => HealthStatus::Degraded,
        HealthStatus::Degraded => HealthStatus::Down,
        other => other,
    };
    if escalated == probe {
        return (probe, None);
    }
    (
        escalated,
        Some(format!(
            "passive: {} of {} calls failed in the last {} s (probe alone: {probe})",
            signal.failures,
            signal.attempts,
            settings.passive_window.as_secs()
        )),
    )
}

/// The provider's health-relevant state, read under its row lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentHealth {
    pub is_active: bool,
    pub disabled_reason: Option<String>,
    pub is_system_provider: bool,
    pub consecutive_down: i32,
}

impl CurrentHealth {
    fn disabled_by_health(&self) -> bool {
        !self.is_active && self.disabled_reason.as_deref() == Some(DISABLED_BY_HEALTH)
    }
}

/// Whether the result switches the provider on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Unchanged,
    /// Set `is_active = false`, `disabled_reason = 'health'`.
    Disable,
    /// Set `is_active = true`, clear the reason (only after the monitor's own disable).
    Enable,
}

/// The new strike count and activation after a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub consecutive_down: i32,
    pub activation: Activation,
}

/// Applies one (passive-folded) result to the provider's state (see the module docs).
pub fn decide(current: &CurrentHealth, status: HealthStatus, strikes_to_disable: i32) -> Decision {
    match status {
        HealthStatus::Down => {
            let consecutive_down = current.consecutive_down.saturating_add(1);
            let disable = current.is_active
                && !current.is_system_provider
                && consecutive_down >= strikes_to_disable;
            Decision {
                consecutive_down,
                activation: if disable {
                    Activation::Disable
                } else {
                    Activation::Unchanged
                },
            }
        }
        HealthStatus::Healthy => Decision {
            consecutive_down: 0,
            activation: if current.disabled_by_health() {
                Activation::Enable
            } else {
                Activation::Unchanged
            },
        },
        HealthStatus::Degraded => Decision {
            consecutive_down: 0,
            activation: Activation::Unchanged,
        },
        HealthStatus::Unknown => Decision {
            consecutive_down: current.consecutive_down,
            activation: Activation::Unchanged,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use HealthStatus::{Degraded, Down, Healthy, Unknown};

    fn active(consecutive_down: i32) -> CurrentHealth {
        CurrentHealth {
            is_active: true,
            disabled_reason: None,
            is_system_provider: false,
            consecutive_down,
        }
    }

    fn disabled(reason: Option<&str>) -> CurrentHealth {
        CurrentHealth {
            is_active: false,
            disabled_reason: reason.map(str::to_string),
            is_system_provider: false,
            consecutive_down: 2,
        }
    }

    #[test]
    fn two_strikes_disable_and_anything_but_down_resets() {
        let first = decide(&active(0), Down, 2);
        assert_eq!(first.consecutive_down, 1);
        assert_eq!(first.activation, Activation::Unchanged);
        let second = decide(&active(1), Down, 2);
        assert_eq!(second.consecutive_down, 2);
        assert_eq!(second.activation, Activation::Disable);
        assert_eq!(decide(&active(1), Degraded, 2).consecutive_down, 0);
        assert_eq!(decide(&active(1), Healthy, 2).consecutive_down, 0);
        // Not probed: no information, nothing changes.
        let unknown = decide(&active(1), Unknown, 2);
        assert_eq!(unknown.consecutive_down, 1);
        assert_eq!(unknown.activation, Activation::Unchanged);
        assert_eq!(decide(&active(0), Down, 1).activation, Activation::Disable);
    }

    #[test]
    fn system_providers_are_never_disabled() {
        let system = CurrentHealth {
            is_system_provider: true,
            ..active(5)
        };
        let decision = decide(&system, Down, 2);
        assert_eq!(decision.consecutive_down, 6);
        assert_eq!(decision.activation, Activation::Unchanged);
    }

    #[test]
    fn only_the_monitors_own_disable_is_undone_and_only_when_healthy() {
        assert_eq!(
            decide(&disabled(Some("health")), Healthy, 2).activation,
            Activation::Enable
        );
        assert_eq!(
            decide(&disabled(Some("health")), Degraded, 2).activation,
            Activation::Unchanged
        );
        assert_eq!(
            decide(&disabled(Some("health")), Down, 2).activation,
            Activation::Unchanged
        );
        for reason in [Some("admin"), None] {
            assert_eq!(
                decide(&disabled(reason), Healthy, 2).activation,
                Activation::Unchanged
            );
            assert_eq!(
                decide(&disabled(reason), Down, 2).activation,
                Activation::Unchanged
            );
        }
    }

    #[test]
    fn passive_signal_escalates_one_step() {
        let settings = HealthSettings::default();
        let failing = PassiveSignal {
            attempts: 8,
            failures: 6,
        };
        assert_eq!(fold_passive(Healthy, Some(&failing), &settings).0, Degraded);
        let (status, note) = fold_passive(Degraded, Some(&failing), &settings);
        assert_eq!(status, Down);
        assert!(note.unwrap().contains("6 of 8"));
        assert_eq!(fold_passive(Down, Some(&failing), &settings), (Down, None));
        assert_eq!(
            fold_passive(Unknown, Some(&failing), &settings),
            (Unknown, None)
        );
        assert_eq!(fold_passive(Healthy, None, &settings), (Healthy, None));
    }

    #[test]
    fn passive_signal_thresholds() {
        let settings = HealthSettings::default();
        let signal = |attempts, failures| PassiveSignal { attempts, failures };
        // Too few attempts say nothing.
        assert!(!signal(4, 4).is_failing(&settings));
        // Exactly half is not "more than half".
        assert!(!signal(10, 5).is_failing(&settings));
        assert!(signal(10, 6).is_failing(&settings));
        assert!(signal(5, 3).is_failing(&settings));
        // A zero window turns the signal off.
        let off = HealthSettings {
            passive_window: Duration::ZERO,
            ..settings
        };
        assert!(!signal(100, 100).is_failing(&off));
    }
}
