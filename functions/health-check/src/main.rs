//! The health-check Lambda function. Outside Lambda it runs one check and exits.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use switchboard_core::config::Config;
use switchboard_core::state::AppState;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    switchboard_core::telemetry::init();
    let config = Config::from_env()?;
    let in_lambda = config.in_lambda;
    let state = AppState::from_config(config)?;
    if in_lambda {
        let state = &state;
        lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
            switchboard_health_check::handle_scheduled_event(state, event.payload).await
        }))
        .await
    } else {
        let summary = switchboard_health_check::handle_scheduled_event(&state, Value::Null).await?;
        tracing::info!(%summary, "health check finished");
        Ok(())
    }
}
