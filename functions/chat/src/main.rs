//! The chat Lambda function (or a local listener when not in Lambda).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    switchboard_core::http::run_http_function(switchboard_chat::app).await
}
