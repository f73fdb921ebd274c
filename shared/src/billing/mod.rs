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

/// What one billing pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PassReport {
    /// `None` when Lago is not configured (the export is off).
    pub export: Option<ExportReport>,
    pub alerts: alerts::AlertReport,
}

/// One billing pass: the export to Lago (when configured) and the pending budget alerts
/// (when a webhook URL is configured).
pub async fn run_pass_report(
    pool: &DbPool,
    http: &reqwest::Client,
    settings: &BillingSettings,
) -> Result<PassReport, ExportError> {
    let export = if settings.lago_api_url.is_some() && settings.lago_api_key.is_some() {
        Some(export_once(pool, http, settings).await?)
    } else {
        tracing::info!("billing export off: SWITCHBOARD_LAGO_API_URL or its key is unset");
        None
    };
    let alerts = alerts::deliver_pending(pool, http, settings).await?;
    if alerts.delivered + alerts.failed > 0 {
        tracing::info!(
            delivered = alerts.delivered,
            failed = alerts.failed,
            "budget alerts"
        );
    }
    Ok(PassReport { export, alerts })
}

/// [`run_pass_report`] for a timer: failures are logged; the next pass retries.
pub async fn run_pass(pool: &DbPool, http: &reqwest::Client, settings: &BillingSettings) {
    if let Err(error) = run_pass_report(pool, http, settings).await {
        tracing::warn!(error = %crate::report::error_chain(&error), "billing pass failed");
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
