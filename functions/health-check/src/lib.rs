//! The health-check function, invoked by an EventBridge schedule (`rate(5 minutes)`; a
//! sample event is `events/health-check-scheduled.json`). The run itself — probes,
//! classification, auto-disable with hysteresis, hold expiry, pruning — is
//! `switchboard_core::health::run`, shared with the timer of `switchboard serve` and
//! `POST /admin/health-check`; this crate only adapts the event and the result.

use serde_json::Value;
use switchboard_core::health::{self, HealthRunSummary, Trigger};
use switchboard_core::state::AppState;

/// Handles one scheduled invocation: runs the check and returns its summary (the Lambda's
/// JSON result). The event's content does not matter; its id and time are logged.
pub async fn handle_scheduled_event(
    state: &AppState,
    event: Value,
) -> Result<HealthRunSummary, lambda_runtime::Error> {
    let field = |name: &str| event.get(name).and_then(Value::as_str).unwrap_or("-");
    tracing::info!(
        event_id = field("id"),
        detail_type = field("detail-type"),
        time = field("time"),
        "scheduled health check"
    );
    run(state, Trigger::Schedule).await
}

/// One run outside Lambda (the binary started by hand).
pub async fn run_once(state: &AppState) -> Result<HealthRunSummary, lambda_runtime::Error> {
    run(state, Trigger::Manual).await
}

async fn run(
    state: &AppState,
    trigger: Trigger,
) -> Result<HealthRunSummary, lambda_runtime::Error> {
    health::run(&state.health(), trigger)
        .await
        .map_err(|error| {
            let chain = switchboard_core::report::error_chain(&error);
            tracing::error!(error = %chain, "health check failed");
            lambda_runtime::Error::from(chain)
        })
}
