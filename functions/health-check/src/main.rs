//! The health-check Lambda function. Outside Lambda (no `AWS_LAMBDA_RUNTIME_API`) it runs
//! one check, prints the summary as JSON on stdout and exits 0 (non-zero on failure).

use std::process::ExitCode;

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use switchboard_core::config::Config;
use switchboard_core::report::error_chain;
use switchboard_core::state::AppState;

#[tokio::main]
async fn main() -> ExitCode {
    switchboard_core::telemetry::init();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    let in_lambda = config.server.in_lambda;
    let state = match AppState::load(config).await {
        Ok(state) => state,
        Err(error) => return fail(&error),
    };
    if in_lambda {
        // CloudWatch metrics as EMF lines, written before each invocation returns.
        switchboard_core::metrics::install(switchboard_core::metrics::Exposition::Emf);
        let state = &state;
        let served = lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
            {
                let outcome =
                    switchboard_health_check::handle_scheduled_event(state, event.payload).await;
                switchboard_core::metrics::flush_emf();
                outcome
            }
        }))
        .await;
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(error.as_ref()),
        }
    } else {
        match switchboard_health_check::run_once(&state).await {
            Ok(summary) => {
                print_summary(&summary);
                ExitCode::SUCCESS
            }
            Err(error) => fail(error.as_ref()),
        }
    }
}

/// The summary on stdout, for a script that runs the check by hand.
#[allow(clippy::print_stdout)]
fn print_summary(summary: &switchboard_core::health::HealthRunSummary) {
    match serde_json::to_string(summary) {
        Ok(json) => println!("{json}"),
        Err(error) => tracing::warn!(%error, "could not print the summary"),
    }
}

fn fail(error: &(dyn std::error::Error + 'static)) -> ExitCode {
    tracing::error!(error = %error_chain(error), "health check function failed");
    ExitCode::FAILURE
}
