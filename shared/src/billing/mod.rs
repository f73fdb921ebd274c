//! Money in and out: Stripe Checkout top-ups ([`stripe`]), and the export of every capture
//! to Lago ([`export`]), through Lago's batch events API ([`lago`]).
//!
//! Each capture writes one `billing_events` row in its own transaction (the outbox). An
//! export pass sends the unbilled rows, oldest first, in batches of at most 100, and sets
//! `billed_at` only after Lago answered 2xx: at least once, never lost. A batch is read
//! `FOR UPDATE SKIP LOCKED` and kept locked while it is sent, so two exporters at once
//! never send the same event; Lago deduplicates on `transaction_id` if a reply is lost.

pub mod alerts;
pub mod export;
pub mod lago;
pub mod signature;
pub mod stripe;

pub use export::{
    BacklogView, ExportError, ExportReport, FailedEvent, backlog, export_once, requeue_failed,
};

use crate::config::BillingSettings;
use crate::db::DbPool;

/// Whether a pass has anything to do: Lago or the alert webhook is configured.
pub fn enabled(settings: &BillingSettings) -> bool {
    (settings.lago_api_url.is_some() && settings.lago_api_key.is_some())
        || settings.alert_webhook_url.is_some()
}

/// One billing pass: the export to Lago (when configured) and the pending budget alerts
/// (when a webhook URL is configured). Failures are logged; the next pass retries.
pub async fn run_pass(pool: &DbPool, http: &reqwest::Client, settings: &BillingSettings) {
    if settings.lago_api_url.is_some()
        && settings.lago_api_key.is_some()
        && let Err(error) = export_once(pool, http, settings).await
    {
        tracing::warn!(error = %crate::report::error_chain(&error), "billing export failed");
    }
    match alerts::deliver_pending(pool, http, settings).await {
        Ok(report) if report.delivered + report.failed > 0 => {
            tracing::info!(
                delivered = report.delivered,
                failed = report.failed,
                "budget alerts"
            );
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(error = %crate::report::error_chain(&error), "budget alert delivery failed")
        }
    }
}

/// Runs [`run_pass`] every `settings.export_interval` until `stop` resolves (`serve`'s
/// timer; in AWS a schedule).
pub async fn run_every(
    pool: DbPool,
    http: reqwest::Client,
    settings: BillingSettings,
    stop: impl std::future::Future<Output = ()>,
) {
    let interval = settings.export_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => {}
        }
        tokio::select! {
            () = &mut stop => break,
            () = run_pass(&pool, &http, &settings) => {}
        }
    }
}
