//! The chat Lambda function, with response streaming (or a local listener when not in
//! Lambda).

use switchboard_core::http::{LambdaResponses, run_http_function_with};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run_http_function_with(switchboard_chat::app, LambdaResponses::Streaming).await
}
