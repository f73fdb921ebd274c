//! The chat Lambda function, with response streaming (or a local listener when not in
//! Lambda), its captures that cannot commit kept in the pending-charge queue when one is
//! configured.

use switchboard_core::credentials::AwsContext;
use switchboard_core::http::{LambdaResponses, run_http_function_prepared};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run_http_function_prepared(
        switchboard_chat::app,
        LambdaResponses::Streaming,
        |state| async move {
            switchboard_chat::with_pending_charge_queue(state, &AwsContext::default()).await
        },
    )
    .await
}
