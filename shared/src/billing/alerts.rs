//! Budget alert webhooks. A capture that crosses one of an account's thresholds (a
//! percentage of its monthly cap, or its low-balance amount) enqueues an `alert_events`
//! row in its own transaction (migration 0015's trigger): one per threshold per month,
//! one low-balance alert per top-up. [`deliver_pending`] POSTs each to
//! `SWITCHBOARD_ALERT_WEBHOOK_URL`, signed with `Switchboard-Signature: t=…,v1=…`
//! (HMAC-SHA256 of `"<t>.<body>"` with `SWITCHBOARD_ALERT_WEBHOOK_SECRET`, the Stripe
//! scheme), at least once: an alert is marked delivered only after a 2xx; anything else
//! is retried on a later pass with backoff, the same event id and body.
//!
//! Each alert is sent and recorded in its own short transaction: the row is locked
//! `FOR UPDATE SKIP LOCKED` while it is POSTed (a second pass at the same time takes the
//! next alert, never this one), and its outcome (delivered, or the next try's time with
//! backoff) is committed before the next alert starts. A pass that is stopped (its
//! deadline, a Lambda timeout, a crash) loses at most the alert in flight, which is sent
//! again later. The pass starts no delivery it cannot finish before its deadline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::time::Instant;
use utoipa::ToSchema;

use super::signature;
use crate::config::BillingSettings;
use crate::db::{DbError, DbPool};

/// One delivery's longest wait.
pub const ALERT_TIMEOUT: Duration = Duration::from_secs(10);
/// Alerts one pass handles at most.
const MAX_PER_PASS: usize = 500;
/// No delivery starts with less time than this left before the pass's deadline.
const MIN_DELIVERY_TIME: Duration = Duration::from_secs(1);
/// Backoff after a failed delivery: this, doubled per attempt, at most 30 minutes.
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(1800);

/// Why an alert pass ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertEnd {
    /// No alert due is left (or the pass's limit of alerts).
    #[default]
    Finished,
    /// The pass's deadline came; the rest waits for the next pass.
    Deadline,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct AlertReport {
    pub delivered: u64,
    /// Deliveries that failed this pass (retried later, with backoff).
    pub failed: u64,
    pub ended: AlertEnd,
}

/// Delivers the pending alerts, one transaction each, starting none after `deadline`
/// (see the module docs). Without a webhook URL, nothing is sent and the alerts wait.
pub async fn deliver_pending(
    pool: &DbPool,
    http: &reqwest::Client,
    settings: &BillingSettings,
    deadline: Instant,
) -> Result<AlertReport, DbError> {
    let (Some(url), Some(secret)) = (&settings.alert_webhook_url, &settings.alert_webhook_secret)
    else {
        return Ok(AlertReport::default());
    };
    let mut report = AlertReport::default();
    for _ in 0..MAX_PER_PASS {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < MIN_DELIVERY_TIME {
            report.ended = AlertEnd::Deadline;
            break;
        }
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "SELECT id, payload::text FROM alert_events
                 WHERE delivered_at IS NULL AND (next_attempt_at IS NULL OR next_attempt_at <= now())
                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[],
            )
            .await?
        else {
            break;
        };
        let id: i64 = row.get(0);
        let body: String = row.get(1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let sent = http
            .post(url)
            .header("content-type", "application/json")
            .header(
                "switchboard-signature",
                signature::sign(body.as_bytes(), secret.expose(), now),
            )
            .timeout(ALERT_TIMEOUT.min(left))
            .body(body)
            .send()
            .await;
        let error = match sent {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("HTTP {}", response.status().as_u16())),
            Err(e) if e.is_timeout() => Some("no answer in time".to_string()),
            Err(_) => Some("could not be reached".to_string()),
        };
        match error {
            None => {
                tx.execute(
                    "UPDATE alert_events SET delivered_at = now(), attempts = attempts + 1,
                         last_error = NULL WHERE id = $1",
                    &[&id],
                )
                .await?;
                report.delivered += 1;
            }
            Some(error) => {
                tracing::warn!(alert = id, %error, "budget alert not delivered; retried later");
                tx.execute(
                    "UPDATE alert_events SET attempts = attempts + 1, last_error = $2,
                         next_attempt_at = now() + least(
                             make_interval(secs => $3::double precision * power(2, least(attempts, 20))),
                             make_interval(secs => $4::double precision))
                     WHERE id = $1",
                    &[
                        &id,
                        &error,
                        &FIRST_BACKOFF.as_secs_f64(),
                        &MAX_BACKOFF.as_secs_f64(),
                    ],
                )
                .await?;
                report.failed += 1;
            }
        }
        tx.commit().await?;
    }
    Ok(report)
}
