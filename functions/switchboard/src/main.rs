//! `switchboard serve | migrate`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard_core::config::Config;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Switchboard LLM gateway: all functions in one process"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every route (starts a private PostgreSQL cluster when DATABASE_URL is unset).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    switchboard_core::telemetry::init();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    let result = match cli.command {
        Command::Serve => switchboard::serve::serve(config).await,
        Command::Migrate => switchboard::serve::migrate(config).await.map(|report| {
            tracing::info!(applied = ?report.applied, already_applied = report.already_applied.len(), "migrations done");
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!(
        "error: {}",
        switchboard_core::http::error::error_chain(error)
    );
    ExitCode::FAILURE
}
