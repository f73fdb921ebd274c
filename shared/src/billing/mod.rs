//! Money in and out: Stripe Checkout top-ups ([`stripe`]), the export of every capture
//! to Lago ([`export`]) through Lago's batch events API ([`lago`]), and budget alert
//! webhooks ([`alerts`]); [`run_pass`] is one billing pass (the export and the alerts).
//!
//! Each capture writes one `billing_events` row in its own transaction (the outbox). An
//! export pass sends the unbilled rows, oldest first, in batches of at most 100, and sets
//! `billed_at` only after Lago answered 2xx: at least once, never lost. A batch is read
//! `FOR UPDATE SKIP LOCKED` and kept locked while it is sent, so two exporters at once
//! never send the same event. Each event's Lago `transaction_id` is fixed when the capture
//! is written; when a reply is lost, Lago refuses the resent event as already held, and
//! that counts as delivered.

pub mod alerts;
pub mod export;
pub mod lago;
pub mod signature;
pub mod stripe;

pub use export::{
    BacklogView, ExportEnd, ExportError, ExportReport, FailedEvent, backlog, export_once,
    requeue_failed,
};

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::config::BillingSettings;
use crate::db::DbPool;

/// `POST /admin/billing/export`'s pass: under API Gateway's 29 s integration timeout.
pub const ADMIN_PASS_BUDGET: Duration = Duration::from_secs(25);
/// `switchboard export-billing` and the billing-export binary run by hand.
pub const CLI_PASS_BUDGET: Duration = Duration::from_secs(300);
/// Left unused before a Lambda invocation's deadline: the last writes, the metrics.
const LAMBDA_MARGIN: Duration = Duration::from_secs(10);
/// A Lambda invocation without a usable deadline (never in AWS) gets this.
const LAMBDA_FALLBACK_BUDGET: Duration = Duration::from_secs(60);
/// `serve`'s timer gives each pass its interval, but at least this.
const MIN_TIMER_BUDGET: Duration = Duration::from_secs(10);

/// A pass's time budget inside a Lambda invocation that must end by `deadline`: all but
/// [`LAMBDA_MARGIN`] of the time left (at least half of it when the function's timeout is
/// that short).
pub fn lambda_budget(deadline: SystemTime) -> Duration {
    match deadline.duration_since(SystemTime::now()) {
        Ok(left) if !left.is_zero() => left.saturating_sub(LAMBDA_MARGIN).max(left / 2),
        _ => LAMBDA_FALLBACK_BUDGET,
    }
}

/// Whether a pass has anything to do: Lago or the alert webhook is configured.
pub fn enabled(settings: &BillingSettings) -> bool {
    lago_configured(settings) || alerts_configured(settings)
}

fn lago_configured(settings: &BillingSettings) -> bool {
    settings.lago_api_url.is_some() && settings.lago_api_key.is_some()
}

fn alerts_configured(settings: &BillingSettings) -> bool {
    settings.alert_webhook_url.is_some() && settings.alert_webhook_secret.is_some()
}

/// How a pass's export went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportStatus {
    /// Lago is not configured.
    Off,
    Finished,
    Deadline,
    LagoUnavailable,
    /// Lago refused the call itself (`lago_status` says how): its key or URL is wrong.
    LagoConfiguration,
    /// The database failed (logged with its cause); the alerts ran all the same.
    DatabaseError,
}

impl From<ExportEnd> for ExportStatus {
    fn from(end: ExportEnd) -> Self {
        match end {
            ExportEnd::Finished => Self::Finished,
            ExportEnd::Deadline => Self::Deadline,
            ExportEnd::LagoUnavailable => Self::LagoUnavailable,
            ExportEnd::LagoConfiguration => Self::LagoConfiguration,
        }
    }
}

/// How a pass's alert deliveries went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// No webhook URL is configured: the alerts wait.
    Off,
    Finished,
    Deadline,
    /// The database failed (logged with its cause); the export ran all the same.
    DatabaseError,
}

/// The alerts' part of a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct AlertsPart {
    pub delivered: u64,
    /// Deliveries that failed (retried later, with backoff).
    pub failed: u64,
    pub status: AlertStatus,
}

/// What one billing pass did: `{"sent", "failed", "deferred", "export", "lago_status",
/// "alerts": {"delivered", "failed", "status"}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct PassReport {
    /// Events Lago accepted (or already held).
    pub sent: u64,
    /// Events Lago refused (now in the export's failures list).
    pub failed: u64,
    /// Events left for a later pass because Lago was unavailable.
    pub deferred: u64,
    pub export: ExportStatus,
    /// Lago's status when it refused the call itself (401, 403, 404…).
    pub lago_status: Option<u16>,
    pub alerts: AlertsPart,
}

impl PassReport {
    /// Whether every part ran without a database error (a Lago refusal or outage is
    /// reported, not an error of the pass).
    pub fn succeeded(&self) -> bool {
        self.export != ExportStatus::DatabaseError
            && self.alerts.status != AlertStatus::DatabaseError
    }
}

/// One billing pass, within `budget`: the pending budget alerts (when a webhook is
/// configured), then the export to Lago (when configured). Each part runs whatever
/// happened to the other and reports on its own; a database error is logged with its
/// cause and reported as `database_error`. The alerts go first (usually none, and
/// time-sensitive) and get at most half the budget when the export is on; the export
/// gets what is left. [`ExportError::NotConfigured`] when neither part is configured.
///
/// The one "billing pass" of every door: `serve`'s timer, `switchboard export-billing`,
/// the billing-export Lambda and `POST /admin/billing/export`.
pub async fn run_pass(
    pool: &DbPool,
    http: &reqwest::Client,
    settings: &BillingSettings,
    budget: Duration,
) -> Result<PassReport, ExportError> {
    if !enabled(settings) {
        return Err(ExportError::NotConfigured);
    }
    let started = Instant::now();
    let deadline = started + budget;
    let lago = lago_configured(settings);

    let alerts = if alerts_configured(settings) {
        let until = if lago { started + budget / 2 } else { deadline };
        match alerts::deliver_pending(pool, http, settings, until).await {
            Ok(report) => AlertsPart {
                delivered: report.delivered,
                failed: report.failed,
                status: match report.ended {
                    alerts::AlertEnd::Finished => AlertStatus::Finished,
                    alerts::AlertEnd::Deadline => AlertStatus::Deadline,
                },
            },
            Err(error) => {
                tracing::error!(error = %crate::report::error_chain(&error), "budget alerts failed (the database); retried on the next pass");
                AlertsPart {
                    delivered: 0,
                    failed: 0,
                    status: AlertStatus::DatabaseError,
                }
            }
        }
    } else {
        AlertsPart {
            delivered: 0,
            failed: 0,
            status: AlertStatus::Off,
        }
    };

    let mut report = PassReport {
        sent: 0,
        failed: 0,
        deferred: 0,
        export: ExportStatus::Off,
        lago_status: None,
        alerts,
    };
    if lago {
        match export_once(pool, http, settings, deadline).await {
            Ok(export) => {
                report.sent = export.sent;
                report.failed = export.failed;
                report.deferred = export.deferred;
                report.export = export.ended.into();
                report.lago_status = export.lago_status;
            }
            Err(error) => {
                tracing::error!(error = %crate::report::error_chain(&error), "billing export failed (the database); retried on the next pass");
                report.export = ExportStatus::DatabaseError;
            }
        }
    }
    if report.alerts.delivered + report.alerts.failed > 0 {
        tracing::info!(
            delivered = report.alerts.delivered,
            failed = report.alerts.failed,
            "budget alerts"
        );
    }
    Ok(report)
}

/// Runs [`run_pass`] every `settings.export_interval` until `stop` resolves (`serve`'s
/// timer; in AWS a schedule). Each pass gets the interval as its budget (at least 10 s),
/// so passes do not pile up behind a slow Lago or receiver.
pub async fn run_every(
    pool: DbPool,
    http: reqwest::Client,
    settings: BillingSettings,
    stop: impl std::future::Future<Output = ()>,
) {
    let interval = settings.export_interval;
    let budget = interval.max(MIN_TIMER_BUDGET);
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => {}
        }
        tokio::select! {
            () = &mut stop => break,
            // Not configured is the only error, and `serve` starts this timer only when
            // something is; each part logs its own failures.
            _ = run_pass(&pool, &http, &settings, budget) => {}
        }
    }
}
