//! `switchboard serve | migrate | rewrap-keys`.

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
    /// Re-wrap every BYOK data key under another KMS key (key rotation); the stored
    /// provider keys themselves are not touched.
    RewrapKeys {
        /// The KMS key (id, ARN or alias) to wrap every data key under.
        #[arg(long, value_name = "KMS_KEY_ID")]
        to_kms_key: String,
    },
    /// Run one billing pass and exit: pending budget alerts to SWITCHBOARD_ALERT_WEBHOOK_URL,
    /// unbilled usage to Lago (SWITCHBOARD_LAGO_API_URL, _API_KEY).
    ExportBilling,
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
        Command::Serve => {
            switchboard_core::metrics::install(switchboard_core::metrics::Exposition::Prometheus);
            switchboard_core::otel::install(switchboard_core::otel::ExportMode::Batched);
            switchboard::serve::serve(config).await
        }
        Command::Migrate => switchboard::serve::migrate(config).await.map(|report| {
            tracing::info!(applied = ?report.applied, already_applied = report.already_applied.len(), "migrations done");
        }),
        Command::ExportBilling => match switchboard::serve::export_billing(config).await {
            Ok(report) => {
                tracing::info!(sent = report.sent, failed = report.failed, deferred = report.deferred,
                    export = ?report.export, alerts_delivered = report.alerts.delivered,
                    alerts_failed = report.alerts.failed, alerts = ?report.alerts.status,
                    "billing pass done");
                if !report.succeeded() {
                    eprintln!("error: a part of the billing pass failed (see the log above)");
                    return ExitCode::FAILURE;
                }
                Ok(())
            }
            Err(error) => return fail(&error),
        },
        Command::RewrapKeys { to_kms_key } => {
            match switchboard::rewrap::rewrap_keys(config, &to_kms_key).await {
                Ok(_) => Ok(()),
                Err(error) => return fail(&error),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("error: {}", switchboard_core::report::error_chain(error));
    ExitCode::FAILURE
}
