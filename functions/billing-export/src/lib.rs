//! The billing-export function, invoked by an EventBridge schedule (`rate(1 minute)`; a
//! sample event is `events/billing-export-scheduled.json`). Each run first drains the
//! pending-charge queue (when `SWITCHBOARD_PENDING_CHARGES_QUEUE_URL` is set: the chat
//! function's captures that could not commit, `switchboard_core::ledger::queue`), then
//! runs the billing pass — pending budget alerts to their webhook, unbilled usage to Lago,
//! `switchboard_core::billing::run_pass`, shared with `serve`'s timer,
//! `switchboard export-billing` and `POST /admin/billing/export` — so the drained charges'
//! billing events go to Lago in the same run. This crate only adapts the event, the
//! invocation's deadline and the result.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::Value;
use switchboard_core::billing::{self, ExportError, PassReport};
use switchboard_core::ledger::SqsPendingCharges;
use switchboard_core::ledger::queue::{QueueDrainEnd, QueueDrainReport};
use switchboard_core::state::AppState;

/// What one run did: the queue's drain, then the billing pass (its fields at the top
/// level, as before the queue existed).
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Absent when no queue is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_charges: Option<QueueDrainReport>,
    /// Absent when neither Lago nor the alert webhook is configured (a run that only
    /// drains the queue).
    #[serde(flatten)]
    pub pass: Option<PassReport>,
}

/// Handles one scheduled invocation that must end by `deadline` (the Lambda context's):
/// the queue's drain and one billing pass that stop in time, the report as the Lambda's
/// result.
pub async fn handle_scheduled_event(
    state: &AppState,
    queue: Option<&SqsPendingCharges>,
    event: Value,
    deadline: SystemTime,
) -> Result<RunReport, lambda_runtime::Error> {
    let field = |name: &str| event.get(name).and_then(Value::as_str).unwrap_or("-");
    let budget = billing::lambda_budget(deadline);
    tracing::info!(
        event_id = field("id"),
        time = field("time"),
        budget_secs = budget.as_secs(),
        "scheduled billing pass"
    );
    run_once(state, queue, budget).await
}

/// One run within `budget` (the binary started by hand, or a scheduled event): the drain
/// gets at most half of it when a billing pass follows. Every part runs whatever happens
/// to the others; a part's failure (SQS, the database) fails the invocation after all ran
/// (the next run of the schedule tries again).
pub async fn run_once(
    state: &AppState,
    queue: Option<&SqsPendingCharges>,
    budget: Duration,
) -> Result<RunReport, lambda_runtime::Error> {
    let started = Instant::now();
    let billing_on = billing::enabled(&state.config.billing);
    let mut failures: Vec<String> = Vec::new();

    let pending_charges = match queue {
        None => None,
        Some(queue) => {
            let drain_budget = if billing_on { budget / 2 } else { budget };
            match queue.drain(&state.pool, drain_budget).await {
                Ok(report) => {
                    if report.ended == QueueDrainEnd::DatabaseUnavailable {
                        failures.push(
                            "the database failed while draining the pending-charge queue".into(),
                        );
                    }
                    Some(report)
                }
                Err(error) => {
                    let chain = switchboard_core::report::error_chain(&error);
                    tracing::error!(error = %chain, "could not drain the pending-charge queue");
                    failures.push(chain);
                    None
                }
            }
        }
    };

    let left = budget.saturating_sub(started.elapsed());
    let pass = match billing::run_pass(&state.pool, &state.http, &state.config.billing, left).await
    {
        Ok(report) => {
            if !report.succeeded() {
                failures.push(format!(
                    "a part of the billing pass failed (see the log): {}",
                    serde_json::to_string(&report).unwrap_or_default()
                ));
            }
            Some(report)
        }
        // Nothing to export: fine for a run that drains the queue.
        Err(ExportError::NotConfigured) if queue.is_some() => None,
        Err(error) => {
            let chain = switchboard_core::report::error_chain(&error);
            tracing::error!(error = %chain, "billing pass failed");
            failures.push(chain);
            None
        }
    };

    let report = RunReport {
        pending_charges,
        pass,
    };
    if failures.is_empty() {
        Ok(report)
    } else {
        Err(lambda_runtime::Error::from(format!(
            "{}; report: {}",
            failures.join("; "),
            serde_json::to_string(&report).unwrap_or_default()
        )))
    }
}
