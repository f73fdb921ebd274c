//! One export pass: unbilled `billing_events` to Lago, batch by batch, until nothing is
//! left, Lago cannot take more, or the pass's deadline is near.
//!
//! - Each event's Lago `transaction_id` (`lago_transaction_id`) was fixed when its capture
//!   was written (migration 0022): the request id, or `<request id>:<ledger id>` for the
//!   later events of a reused `X-Request-Id`. It is the same on every pass and re-queue.
//! - A batch (at most 100 events, oldest first) is read `FOR UPDATE SKIP LOCKED` in a
//!   transaction that stays open while it is sent: a second exporter skips those rows.
//! - 2xx: the events and their requests' usage rows get `billed_at`.
//! - 5xx, 429, 408, a timeout or no connection: each event's `next_attempt_at` moves on
//!   with backoff (10 s doubling per attempt, at most 10 minutes) and the pass stops; the
//!   next pass (or the next run of the schedule) tries again.
//! - 401, 403, 404 (any 4xx but 413 and 422): a configuration error (a rotated key, a
//!   wrong URL), not a bad event. The pass stops after that one call with one ERROR line
//!   naming the status; no event changes (no `billing_error`, no attempt counted, no
//!   backoff), so every pass makes exactly one call until the setting is fixed, and the
//!   first pass after that exports everything.
//! - 422 naming events (Lago's `error_details` by index): an event whose `transaction_id`
//!   already exists in Lago was delivered before (an answer lost) and is marked billed;
//!   any other named event records `billing_error` and waits for an admin
//!   ([`requeue_failed`]); the rest of the batch is sent again. A 422 (or 413) naming no
//!   event splits the batch in halves until the refused events stand alone.
//! - Before each call the pass checks its deadline: it starts no call it cannot finish
//!   (a call waits at most the time left), and what it did not send stays for the next.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::lago::{EventRefusal, LagoClient, LagoFailure, MAX_BATCH};
use crate::config::BillingSettings;
use crate::db::{DbError, DbPool};

/// Batches one pass sends at most (then the schedule's next run goes on).
const MAX_BATCHES_PER_PASS: usize = 100;
/// Backoff after a transient failure: this, doubled per attempt, at most [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// No call starts with less time than this left before the pass's deadline.
pub(crate) const MIN_CALL_TIME: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "billing is not configured: set SWITCHBOARD_LAGO_API_URL and SWITCHBOARD_LAGO_API_KEY (the Lago export), or SWITCHBOARD_ALERT_WEBHOOK_URL (budget alerts)"
    )]
    NotConfigured,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for ExportError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Db(DbError::from(error))
    }
}

impl From<deadpool_postgres::PoolError> for ExportError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::Db(DbError::from(error))
    }
}

/// Why an export pass ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportEnd {
    /// Nothing left to send now (or the pass's batch limit).
    #[default]
    Finished,
    /// The pass's deadline came; the rest waits for the next pass.
    Deadline,
    /// Lago was unavailable; the events wait with backoff.
    LagoUnavailable,
    /// Lago refused the call itself (401, 403, 404…): its key or URL is wrong.
    LagoConfiguration,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct ExportReport {
    /// Events Lago accepted (or already held).
    pub sent: u64,
    /// Events Lago refused (now in the failures list).
    pub failed: u64,
    /// Events left for a later pass because Lago was unavailable.
    pub deferred: u64,
    pub ended: ExportEnd,
    /// The status of Lago's answer that ended the pass with `lago_configuration`.
    pub lago_status: Option<u16>,
}

impl ExportReport {
    fn add(&mut self, other: ExportReport) {
        self.sent += other.sent;
        self.failed += other.failed;
        self.deferred += other.deferred;
        self.ended = other.ended;
        self.lago_status = other.lago_status;
    }
}

/// An unbilled event, in Lago's shape.
struct Pending {
    id: i64,
    event: Value,
}

/// Runs one export pass that starts no Lago call after `deadline` (see the module docs).
pub async fn export_once(
    pool: &DbPool,
    http: &reqwest::Client,
    settings: &BillingSettings,
    deadline: Instant,
) -> Result<ExportReport, ExportError> {
    let (Some(api_url), Some(api_key)) = (&settings.lago_api_url, &settings.lago_api_key) else {
        return Err(ExportError::NotConfigured);
    };
    let lago = LagoClient {
        http,
        api_url,
        api_key,
    };
    let mut report = ExportReport::default();
    for _ in 0..MAX_BATCHES_PER_PASS {
        if deadline.saturating_duration_since(Instant::now()) < MIN_CALL_TIME {
            report.ended = ExportEnd::Deadline;
            break;
        }
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        let pending = lock_batch(&*tx, &settings.metric_code).await?;
        if pending.is_empty() {
            break;
        }
        let full = pending.len() == MAX_BATCH;
        let batch = deliver(&*tx, &lago, pending, deadline).await?;
        tx.commit().await?;
        report.add(batch);
        if batch.ended != ExportEnd::Finished || !full {
            break;
        }
    }
    if report != ExportReport::default() {
        tracing::info!(
            sent = report.sent,
            failed = report.failed,
            deferred = report.deferred,
            ended = ?report.ended,
            "billing export pass"
        );
    }
    crate::metrics::record_billing_export(
        report.sent,
        report.failed + report.deferred > 0 || report.ended == ExportEnd::LagoConfiguration,
    );
    match pool.get().await {
        Ok(client) => match backlog_size(&**client).await {
            Ok((events, oldest)) => crate::metrics::billing_backlog(events, oldest),
            Err(error) => tracing::debug!(%error, "could not read the billing backlog"),
        },
        Err(error) => tracing::debug!(%error, "could not read the billing backlog"),
    }
    Ok(report)
}

/// Events still to export and the age of the oldest (for the metrics).
async fn backlog_size(
    client: &impl GenericClient,
) -> Result<(u64, std::time::Duration), ExportError> {
    let row = client
        .query_one(
            "SELECT count(*), COALESCE(extract(epoch FROM now() - min(created_at)), 0)::float8
             FROM billing_events WHERE billed_at IS NULL AND billing_error IS NULL",
            &[],
        )
        .await?;
    let events = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
    let age =
        std::time::Duration::try_from_secs_f64(row.get::<_, f64>(1).max(0.0)).unwrap_or_default();
    Ok((events, age))
}

async fn lock_batch(
    client: &impl GenericClient,
    metric_code: &str,
) -> Result<Vec<Pending>, ExportError> {
    let rows = client
        .query(
            "SELECT e.id, e.lago_transaction_id,
                    COALESCE(a.billing_subscription_id, e.external_customer_id),
                    e.properties, extract(epoch FROM e.event_timestamp)::bigint
             FROM billing_events e
             LEFT JOIN accounts a ON a.user_id = e.external_customer_id
             WHERE e.billed_at IS NULL AND e.billing_error IS NULL
               AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= now())
             ORDER BY e.id
             LIMIT $1
             FOR UPDATE OF e SKIP LOCKED",
            &[&(MAX_BATCH as i64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let properties: Value = row.get(3);
            Pending {
                id: row.get(0),
                event: lago_event(row.get(1), row.get(2), metric_code, row.get(4), &properties),
            }
        })
        .collect())
}

/// Lago's event for one capture (api.md, "Billing export").
fn lago_event(
    transaction_id: String,
    subscription: String,
    code: &str,
    timestamp: i64,
    p: &Value,
) -> Value {
    let number = |key: &str, fallback: &str| {
        p.get(key)
            .or_else(|| p.get(fallback))
            .cloned()
            .unwrap_or(json!(0))
    };
    json!({
        "transaction_id": transaction_id,
        "external_subscription_id": subscription,
        "code": code,
        "timestamp": timestamp,
        "properties": {
            "input_tokens": number("input_tokens", "prompt_tokens"),
            "cached_input_tokens": number("cached_input_tokens", "cached_tokens"),
            "cache_write_input_tokens": number("cache_write_input_tokens", "cache_write_input_tokens"),
            "output_tokens": number("output_tokens", "completion_tokens"),
            "cost_usd": p.get("cost_usd").or_else(|| p.get("charged_usd")).cloned().unwrap_or(json!("0")),
            "model": p.get("model").cloned().unwrap_or(Value::Null),
            "provider": p.get("provider").cloned().unwrap_or(Value::Null),
            "byok": p.get("byok").cloned().unwrap_or(json!(false)),
            "power_level": p.get("power_level").cloned().unwrap_or(Value::Null),
            "task_type": p.get("task_type").cloned().unwrap_or(Value::Null),
        }
    })
}

/// Sends the batch (again without the events Lago named, or split in halves when it
/// named none) and records each event's fate in the open transaction.
async fn deliver(
    tx: &impl GenericClient,
    lago: &LagoClient<'_>,
    pending: Vec<Pending>,
    deadline: Instant,
) -> Result<ExportReport, ExportError> {
    let mut report = ExportReport::default();
    let mut queue = vec![pending];
    while let Some(batch) = queue.pop() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < MIN_CALL_TIME {
            // Untouched: the next pass sends them.
            report.ended = ExportEnd::Deadline;
            break;
        }
        let ids: Vec<i64> = batch.iter().map(|p| p.id).collect();
        let events: Vec<Value> = batch.iter().map(|p| p.event.clone()).collect();
        match lago.send(&events, left).await {
            Ok(()) => {
                mark_billed(tx, &ids).await?;
                report.sent += ids.len() as u64;
            }
            Err(LagoFailure::Unavailable(message)) => {
                // Everything not yet sent waits for a later pass.
                let mut waiting = ids;
                waiting.extend(queue.drain(..).flatten().map(|p| p.id));
                tracing::warn!(events = waiting.len(), error = %message, "Lago unavailable; the events are retried later");
                defer(tx, &waiting).await?;
                report.deferred += waiting.len() as u64;
                report.ended = ExportEnd::LagoUnavailable;
                break;
            }
            Err(LagoFailure::Configuration { status, message }) => {
                tracing::error!(
                    status,
                    error = %message,
                    "Lago refused the billing export's call with HTTP {status}: check SWITCHBOARD_LAGO_API_KEY and SWITCHBOARD_LAGO_API_URL; no event was marked failed and the next pass tries again"
                );
                report.ended = ExportEnd::LagoConfiguration;
                report.lago_status = Some(status);
                break;
            }
            Err(LagoFailure::Rejected { events: named, .. }) if !named.is_empty() => {
                let named: BTreeMap<usize, EventRefusal> = named.into_iter().collect();
                let mut rest = Vec::new();
                let mut held = Vec::new();
                for (index, pending) in batch.into_iter().enumerate() {
                    match named.get(&index) {
                        None => rest.push(pending),
                        Some(EventRefusal::AlreadyExists) => held.push(pending.id),
                        Some(EventRefusal::Invalid(message)) => {
                            tracing::error!(event_id = pending.id, error = %message, "Lago refused a billing event; it waits for an admin");
                            mark_failed(tx, pending.id, message).await?;
                            report.failed += 1;
                        }
                    }
                }
                if !held.is_empty() {
                    tracing::info!(
                        events = held.len(),
                        "Lago already holds these events (an earlier answer was lost); marked billed"
                    );
                    mark_billed(tx, &held).await?;
                    report.sent += held.len() as u64;
                }
                if !rest.is_empty() {
                    queue.push(rest);
                }
            }
            Err(LagoFailure::Rejected { message, .. }) if batch.len() == 1 => {
                tracing::error!(event_id = ids[0], error = %message, "Lago refused a billing event; it waits for an admin");
                mark_failed(tx, ids[0], &message).await?;
                report.failed += 1;
            }
            Err(LagoFailure::Rejected { .. }) => {
                let mut batch = batch;
                let second = batch.split_off(batch.len() / 2);
                queue.push(second);
                queue.push(batch);
            }
        }
    }
    Ok(report)
}

async fn mark_billed(client: &impl GenericClient, ids: &[i64]) -> Result<(), ExportError> {
    client
        .execute(
            "UPDATE billing_events SET billed_at = now(), attempts = attempts + 1,
                 next_attempt_at = NULL
             WHERE id = ANY($1)",
            &[&ids],
        )
        .await?;
    client
        .execute(
            "UPDATE llm_usage_logs u SET billed_at = now()
             FROM billing_events e
             WHERE e.id = ANY($1) AND u.billed_at IS NULL
               AND u.request_id = e.properties->>'request_id' AND u.user_id = e.external_customer_id",
            &[&ids],
        )
        .await?;
    Ok(())
}

async fn defer(client: &impl GenericClient, ids: &[i64]) -> Result<(), ExportError> {
    client
        .execute(
            "UPDATE billing_events SET attempts = attempts + 1,
                 next_attempt_at = now() + least(
                     make_interval(secs => $2::double precision * power(2, least(attempts, 20))),
                     make_interval(secs => $3::double precision))
             WHERE id = ANY($1)",
            &[
                &ids,
                &FIRST_BACKOFF.as_secs_f64(),
                &MAX_BACKOFF.as_secs_f64(),
            ],
        )
        .await?;
    Ok(())
}

async fn mark_failed(client: &impl GenericClient, id: i64, error: &str) -> Result<(), ExportError> {
    client
        .execute(
            "UPDATE billing_events SET billing_error = $2, attempts = attempts + 1 WHERE id = $1",
            &[&id, &error],
        )
        .await?;
    Ok(())
}

/// One event Lago refused.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FailedEvent {
    /// The client's request id (`x-request-id`).
    pub request_id: Option<String>,
    /// The ledger id of the charge (the event's key in Switchboard).
    pub transaction_id: String,
    /// The `transaction_id` the event has in Lago (fixed at capture).
    pub lago_transaction_id: String,
    pub user_id: String,
    pub error: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

/// `GET /admin/billing/export`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BacklogView {
    /// Events not yet billed and not failed.
    pub unbilled: i64,
    pub oldest_unbilled_at: Option<DateTime<Utc>>,
    /// Events Lago refused, waiting for an admin.
    pub failed: i64,
    /// The most recent 100 of them.
    pub failures: Vec<FailedEvent>,
}

/// The export backlog, for admins.
pub async fn backlog(client: &impl GenericClient) -> Result<BacklogView, ExportError> {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE billing_error IS NULL),
                    min(created_at) FILTER (WHERE billing_error IS NULL),
                    count(*) FILTER (WHERE billing_error IS NOT NULL)
             FROM billing_events WHERE billed_at IS NULL",
            &[],
        )
        .await?;
    let failures = client
        .query(
            "SELECT properties->>'request_id', transaction_id, external_customer_id, billing_error,
                    attempts, created_at, lago_transaction_id
             FROM billing_events WHERE billed_at IS NULL AND billing_error IS NOT NULL
             ORDER BY id DESC LIMIT 100",
            &[],
        )
        .await?
        .iter()
        .map(|r| FailedEvent {
            request_id: r.get(0),
            transaction_id: r.get(1),
            user_id: r.get(2),
            error: r.get(3),
            attempts: r.get(4),
            created_at: r.get(5),
            lago_transaction_id: r.get(6),
        })
        .collect();
    Ok(BacklogView {
        unbilled: row.get(0),
        oldest_unbilled_at: row.get(1),
        failed: row.get(2),
        failures,
    })
}

/// Puts the refused events back in the queue (after the cause was fixed in Lago);
/// returns how many.
pub async fn requeue_failed(client: &impl GenericClient) -> Result<u64, ExportError> {
    Ok(client
        .execute(
            "UPDATE billing_events SET billing_error = NULL, next_attempt_at = NULL
             WHERE billed_at IS NULL AND billing_error IS NOT NULL",
            &[],
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_becomes_lagos_event() {
        let properties = json!({
            "request_id": "req-1", "model": "gpt-4o", "provider": "openai", "byok": false,
            "input_tokens": 90, "cached_input_tokens": 10, "cache_write_input_tokens": 0,
            "output_tokens": 20, "cost_usd": "0.000425", "power_level": "balanced",
            "task_type": "chat"
        });
        let event = lago_event(
            "ledger-1".into(),
            "sub-1".into(),
            "llm_usage",
            1_700_000_000,
            &properties,
        );
        assert_eq!(
            event,
            json!({
                "transaction_id": "ledger-1",
                "external_subscription_id": "sub-1",
                "code": "llm_usage",
                "timestamp": 1_700_000_000,
                "properties": {
                    "input_tokens": 90, "cached_input_tokens": 10, "cache_write_input_tokens": 0,
                    "output_tokens": 20, "cost_usd": "0.000425", "model": "gpt-4o",
                    "provider": "openai", "byok": false, "power_level": "balanced",
                    "task_type": "chat"
                }
            })
        );
    }
}
