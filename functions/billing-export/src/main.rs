//! The billing-export Lambda function. Outside Lambda (no `AWS_LAMBDA_RUNTIME_API`) it runs
//! once (the pending-charge queue's drain when one is configured, then the billing pass),
//! prints its report as JSON on stdout and exits 0 (non-zero on failure).

use std::process::ExitCode;

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use switchboard_core::config::Config;
use switchboard_core::credentials::AwsContext;
use switchboard_core::ledger::SqsPendingCharges;
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
    let queue = match &state.config.ledger.pending_charges_queue_url {
        Some(url) => Some(SqsPendingCharges::new(
            AwsContext::default().sdk_config().await,
            url.clone(),
        )),
        None => None,
    };
    let queue = queue.as_ref();
    if in_lambda {
        // CloudWatch metrics as EMF lines, written before each invocation returns.
        switchboard_core::metrics::install(switchboard_core::metrics::Exposition::Emf);
        let state = &state;
        let served = lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
            {
                let outcome = switchboard_billing_export::handle_scheduled_event(
                    state,
                    queue,
                    event.payload,
                    event.context.deadline(),
                )
                .await;
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
        match switchboard_billing_export::run_once(
            &state,
            queue,
            switchboard_core::billing::CLI_PASS_BUDGET,
        )
        .await
        {
            Ok(report) => {
                print_report(&report);
                ExitCode::SUCCESS
            }
            Err(error) => fail(error.as_ref()),
        }
    }
}

#[allow(clippy::print_stdout)]
fn print_report(report: &switchboard_billing_export::RunReport) {
    match serde_json::to_string(report) {
        Ok(json) => println!("{json}"),
        Err(error) => tracing::warn!(%error, "could not print the report"),
    }
}

fn fail(error: &(dyn std::error::Error + 'static)) -> ExitCode {
    tracing::error!(error = %error_chain(error), "billing-export function failed");
    ExitCode::FAILURE
}
