//! The billing-export function, invoked by an EventBridge schedule (`rate(1 minute)`; a
//! sample event is `events/billing-export-scheduled.json`). The pass itself — unbilled
//! usage to Lago, pending budget alerts to their webhook — is
//! `switchboard_core::billing::run_pass_report`, shared with `serve`'s timer and
//! `switchboard export-billing`; this crate only adapts the event and the result.

use serde_json::Value;
use switchboard_core::billing::{self, PassReport};
use switchboard_core::state::AppState;

/// Handles one scheduled invocation: one billing pass, its report as the Lambda's result.
pub async fn handle_scheduled_event(
    state: &AppState,
    event: Value,
) -> Result<PassReport, lambda_runtime::Error> {
    let field = |name: &str| event.get(name).and_then(Value::as_str).unwrap_or("-");
    tracing::info!(
        event_id = field("id"),
        time = field("time"),
        "scheduled billing pass"
    );
    run_once(state).await
}

/// One pass (the binary started by hand, or a scheduled event).
pub async fn run_once(state: &AppState) -> Result<PassReport, lambda_runtime::Error> {
    billing::run_pass_report(&state.pool, &state.http, &state.config.billing)
        .await
        .map_err(|error| {
            let chain = switchboard_core::report::error_chain(&error);
            tracing::error!(error = %chain, "billing pass failed");
            lambda_runtime::Error::from(chain)
        })
}
