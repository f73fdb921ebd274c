//! The `migrate` Lambda function (the deploy-time migration step, see
//! [`switchboard::migrate_step`]). Outside Lambda it runs the step once and prints the
//! summary as JSON.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use switchboard::migrate_step::{MigrateStep, MigrateSummary};
use switchboard_core::config::Config;
use switchboard_core::report::error_chain;

#[tokio::main]
async fn main() -> ExitCode {
    switchboard_core::telemetry::init();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    let step = MigrateStep::new(config);
    if step.in_lambda() {
        let step = &step;
        let served = lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
            let time_left = time_left(event.context.deadline);
            async move {
                // Boxed: the step's future is deep enough to overflow the layout query.
                Box::pin(step.handle(event.payload, time_left))
                    .await
                    .map_err(|error| lambda_runtime::Error::from(error_chain(&error)))
            }
        }))
        .await;
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(error.as_ref()),
        }
    } else {
        match Box::pin(step.run()).await {
            Ok(summary) => {
                print_summary(&summary);
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        }
    }
}

/// Time until the invocation's deadline (milliseconds since the epoch).
fn time_left(deadline_ms: u64) -> Option<Duration> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    Duration::from_millis(deadline_ms).checked_sub(now)
}

#[allow(clippy::print_stdout)]
fn print_summary(summary: &MigrateSummary) {
    match serde_json::to_string(summary) {
        Ok(json) => println!("{json}"),
        Err(error) => tracing::warn!(%error, "could not print the summary"),
    }
}

fn fail(error: &(dyn std::error::Error + 'static)) -> ExitCode {
    tracing::error!(error = %error_chain(error), "migration step failed");
    ExitCode::FAILURE
}
