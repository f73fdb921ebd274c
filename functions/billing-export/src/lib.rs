//! The billing-export function, invoked by an EventBridge schedule (`rate(1 minute)`; a
//! sample event is `events/billing-export-scheduled.json`). The pass itself — pending
//! budget alerts to their webhook, unbilled usage to Lago — is
//! `switchboard_core::billing::run_pass`, shared with `serve`'s timer,
//! `switchboard export-billing` and `POST /admin/billing/export`; this crate only adapts
//! the event, the invocation's deadline and the result.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use switchboard_core::billing::{self, PassReport};
use switchboard_core::state::AppState;

/// Handles one scheduled invocation that must end by `deadline` (the Lambda context's):
/// one billing pass that stops in time, its report as the Lambda's result.
pub async fn handle_scheduled_event(
    state: &AppState,
    event: Value,
    deadline: SystemTime,
) -> Result<PassReport, lambda_runtime::Error> {
    let field = |name: &str| event.get(name).and_then(Value::as_str).unwrap_or("-");
    let budget = billing::lambda_budget(deadline);
    tracing::info!(
        event_id = field("id"),
        time = field("time"),
        budget_secs = budget.as_secs(),
        "scheduled billing pass"
    );
    run_once(state, budget).await
}

/// One pass within `budget` (the binary started by hand, or a scheduled event). Both
/// parts run whatever happens to the other; a part's database error fails the invocation
/// after both ran (it is retried by the next run of the schedule).
pub async fn run_once(
    state: &AppState,
    budget: Duration,
) -> Result<PassReport, lambda_runtime::Error> {
    let report = billing::run_pass(&state.pool, &state.http, &state.config.billing, budget)
        .await
        .map_err(|error| {
            let chain = switchboard_core::report::error_chain(&error);
            tracing::error!(error = %chain, "billing pass failed");
            lambda_runtime::Error::from(chain)
        })?;
    if report.succeeded() {
        Ok(report)
    } else {
        Err(lambda_runtime::Error::from(format!(
            "a part of the billing pass failed (see the log): {}",
            serde_json::to_string(&report).unwrap_or_default()
        )))
    }
}
