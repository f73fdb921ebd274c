//! The Lambda functions' pending charges: an SQS queue (`SWITCHBOARD_PENDING_CHARGES_QUEUE_URL`).
//!
//! - [`SqsPendingCharges::keep`] (the chat function, when a capture cannot commit within its
//!   retry budget): one `SendMessage` with the [`PendingCharge`] as its JSON body. SQS
//!   answers only once it has stored the message redundantly, so the charge is durable
//!   before the answer (or the stream) ends; it then waits in the queue for up to its
//!   retention (14 days in the template), whatever the database does meanwhile.
//! - [`SqsPendingCharges::drain`] (the billing-export function, every minute, before its
//!   billing pass): receives the messages ten at a time and writes each into the ledger
//!   ([`write_pending`], the step `serve`'s spool drain uses too). A message is deleted
//!   only once its capture committed (or was found already written: captures are
//!   idempotent by ledger id, so a message delivered twice charges once). One the ledger
//!   refuses for good is logged at ERROR and left in the queue: after the queue's
//!   `maxReceiveCount` receives its redrive policy moves it to the dead-letter queue, for an
//!   operator. When the database fails, the drain stops and leaves the rest: they are
//!   received again once their visibility timeout has passed.
//!
//! The drain first checks that the database answers, so an outage does not spend the
//! messages' receives (which would move good charges to the dead-letter queue).

use std::fmt;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};
use serde::Serialize;

use super::spool::{KeepFuture, PendingCharge, PendingCharges, SpoolError, Written, write_pending};
use crate::db::{DbError, DbPool};

/// SQS's limit on a message body. A usual pending charge weighs about 1.3 KB; the
/// heaviest possible (ten attempts, every error text at its 500-character cut-off, all
/// escaped) about 78 KB (the tests below).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Messages one `ReceiveMessage` returns at most (SQS's limit).
const RECEIVE_BATCH: i32 = 10;
/// Long polling: SQS looks at all its servers (a short poll may miss messages of a small
/// queue) and answers as soon as one message is there, else after this.
const RECEIVE_WAIT_SECS: i32 = 1;

/// `keep` runs after the capture's retry budget, within the margin a chat run keeps
/// before its invocation deadline (`chat::LAMBDA_DEADLINE_MARGIN` less the settle
/// budget): a healthy `SendMessage` takes milliseconds; a hung one must not take the
/// answer's last frames with it.
fn keep_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_millis(500))
        .operation_attempt_timeout(Duration::from_millis(800))
        .operation_timeout(Duration::from_millis(1500))
        .build()
}

/// The drain's calls: a long poll takes [`RECEIVE_WAIT_SECS`] plus the round trip.
fn drain_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(15))
        .build()
}

/// How long the drain's first check of the database may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The pending-charge queue: kept into by the chat function, drained by billing-export.
pub struct SqsPendingCharges {
    keep_client: Client,
    drain_client: Client,
    queue_url: String,
}

impl fmt::Debug for SqsPendingCharges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsPendingCharges")
            .field("queue_url", &self.queue_url)
            .finish()
    }
}

/// Why a drain ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueDrainEnd {
    /// A receive found no message.
    #[default]
    Empty,
    /// Its time budget was spent; the rest waits for the next run.
    Deadline,
    /// The database failed; the rest waits in the queue.
    DatabaseUnavailable,
}

/// What one drain of the queue did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueDrainReport {
    /// Messages received.
    pub received: u64,
    /// Charges written into the ledger now.
    pub captured: u64,
    /// Charges found already written (the request's own capture committed after all, or a
    /// message delivered twice): deleted, nothing written.
    pub duplicates: u64,
    /// Messages the ledger refused for good (or that are not a pending charge): logged at
    /// ERROR and left for the redrive policy to move to the dead-letter queue.
    pub refused: u64,
    /// Messages received but not written because the database failed: visible again
    /// after the queue's visibility timeout.
    pub left: u64,
    /// Written charges whose message could not be deleted: received again later, as
    /// duplicates.
    pub undeleted: u64,
    pub ended: QueueDrainEnd,
    /// Messages in the queue after the drain, visible or in flight (SQS's approximate
    /// count; `None` when it could not be read).
    pub remaining: Option<u64>,
}

impl SqsPendingCharges {
    /// The queue at `queue_url`, through the SDK configuration `sdk` (its region,
    /// credentials and `AWS_ENDPOINT_URL`, as for KMS and Secrets Manager).
    pub fn new(sdk: &SdkConfig, queue_url: impl Into<String>) -> Self {
        let client = |timeouts: TimeoutConfig| {
            Client::from_conf(
                aws_sdk_sqs::config::Builder::from(sdk)
                    .timeout_config(timeouts)
                    .build(),
            )
        };
        SqsPendingCharges {
            keep_client: client(keep_timeouts()),
            drain_client: client(drain_timeouts()),
            queue_url: queue_url.into(),
        }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Writes the queued pending charges into the ledger (see the module docs), for at
    /// most about `budget` (a capture in progress when it runs out is finished). An error
    /// is SQS failing; the database failing is reported in
    /// [`QueueDrainReport::ended`].
    pub async fn drain(
        &self,
        pool: &DbPool,
        budget: Duration,
    ) -> Result<QueueDrainReport, SpoolError> {
        let deadline = Instant::now() + budget;
        let mut report = QueueDrainReport::default();
        if let Err(error) = database_answers(pool).await {
            tracing::warn!(%error, "the database is unavailable; pending charges stay in the queue");
            report.ended = QueueDrainEnd::DatabaseUnavailable;
        }
        while report.ended == QueueDrainEnd::Empty {
            if Instant::now() >= deadline {
                report.ended = QueueDrainEnd::Deadline;
                break;
            }
            let received = self
                .drain_client
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(RECEIVE_BATCH)
                .wait_time_seconds(RECEIVE_WAIT_SECS)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
                .await
                .map_err(|e| {
                    // What was written stays written (and deleted); say so before failing.
                    tracing::warn!(?report, "the pending-charge drain stopped: SQS failed");
                    queue_error("ReceiveMessage", &e)
                })?;
            let messages = received.messages();
            if messages.is_empty() {
                break;
            }
            report.received += messages.len() as u64;
            let written = self.write_batch(pool, messages, &mut report).await;
            report.undeleted += self.delete(&written).await;
        }
        report.remaining = self.depth().await;
        if let Some(remaining) = report.remaining {
            crate::metrics::pending_charges_queued(remaining);
        }
        if report.received > 0 || report.ended != QueueDrainEnd::Empty {
            tracing::info!(
                received = report.received,
                captured = report.captured,
                duplicates = report.duplicates,
                refused = report.refused,
                left = report.left,
                undeleted = report.undeleted,
                remaining = ?report.remaining,
                ended = ?report.ended,
                "pending charges drained from the queue"
            );
        }
        Ok(report)
    }

    /// Writes each message of a batch in order; returns the receipt handles of those
    /// written (to delete). Stops at the first database failure.
    async fn write_batch<'m>(
        &self,
        pool: &DbPool,
        messages: &'m [Message],
        report: &mut QueueDrainReport,
    ) -> Vec<&'m str> {
        let mut written = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            let Some(receipt) = message.receipt_handle() else {
                continue;
            };
            let charge = match message.body().map(serde_json::from_str::<PendingCharge>) {
                Some(Ok(charge)) => charge,
                Some(Err(_)) | None => {
                    refused(message, None, "not a pending charge");
                    report.refused += 1;
                    continue;
                }
            };
            match write_pending(pool, &charge.capture).await {
                Written::Captured => {
                    report.captured += 1;
                    written.push(receipt);
                }
                Written::Duplicate => {
                    report.duplicates += 1;
                    written.push(receipt);
                }
                Written::Refused(reason) => {
                    refused(message, Some(&charge), &reason);
                    report.refused += 1;
                }
                Written::Unavailable(error) => {
                    let left = messages.len() - index;
                    tracing::warn!(
                        %error,
                        left,
                        "the database failed during the drain; pending charges stay in the queue"
                    );
                    report.left += left as u64;
                    report.ended = QueueDrainEnd::DatabaseUnavailable;
                    break;
                }
            }
        }
        written
    }

    /// Deletes the messages whose charge is written; returns how many could not be (they
    /// come back, and are then duplicates).
    async fn delete(&self, receipts: &[&str]) -> u64 {
        if receipts.is_empty() {
            return 0;
        }
        let entries: Result<Vec<DeleteMessageBatchRequestEntry>, _> = receipts
            .iter()
            .enumerate()
            .map(|(index, receipt)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(*receipt)
                    .build()
            })
            .collect();
        let deleted = match entries {
            Ok(entries) => {
                self.drain_client
                    .delete_message_batch()
                    .queue_url(&self.queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
            }
            Err(error) => {
                tracing::warn!(%error, "could not build the delete of written pending charges");
                return receipts.len() as u64;
            }
        };
        match deleted {
            Ok(output) => {
                for failure in output.failed() {
                    tracing::warn!(
                        code = failure.code(),
                        message = failure.message().unwrap_or_default(),
                        "a written pending charge could not be deleted from the queue; it comes back as a duplicate"
                    );
                }
                output.failed().len() as u64
            }
            Err(error) => {
                tracing::warn!(
                    error = %DisplayErrorContext(&error),
                    count = receipts.len(),
                    "written pending charges could not be deleted from the queue; they come back as duplicates"
                );
                receipts.len() as u64
            }
        }
    }

    /// Messages in the queue, visible or in flight (approximate).
    async fn depth(&self) -> Option<u64> {
        let attributes = self
            .drain_client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await;
        match attributes {
            Ok(output) => {
                let count = |name: &QueueAttributeName| {
                    output
                        .attributes()
                        .and_then(|a| a.get(name))
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                Some(
                    count(&QueueAttributeName::ApproximateNumberOfMessages)
                        + count(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
                )
            }
            Err(error) => {
                tracing::warn!(error = %DisplayErrorContext(&error), "could not read the pending-charge queue's depth");
                None
            }
        }
    }
}

impl PendingCharges for SqsPendingCharges {
    fn keep<'a>(&'a self, charge: &'a PendingCharge) -> KeepFuture<'a> {
        Box::pin(async move {
            let body = message_body(charge)?;
            let sent = self
                .keep_client
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(body)
                .send()
                .await
                .map_err(|e| queue_error("SendMessage", &e))?;
            tracing::debug!(
                ledger_id = %charge.capture.ledger_id,
                message_id = sent.message_id().unwrap_or_default(),
                "pending charge sent to the queue"
            );
            Ok(())
        })
    }
}

/// The message body: the pending charge as JSON. SQS accepts any Unicode character but
/// U+FFFE and U+FFFF (and controls, which JSON escapes already); those two may come in a
/// provider's error text, so they are escaped too.
pub fn message_body(charge: &PendingCharge) -> Result<String, SpoolError> {
    let json = serde_json::to_string(charge)
        .map_err(|e| SpoolError::Queue(format!("the pending charge is not serialisable: {e}")))?;
    let mut body = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '\u{FFFE}' => body.push_str("\\ufffe"),
            '\u{FFFF}' => body.push_str("\\uffff"),
            c => body.push(c),
        }
    }
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(SpoolError::Queue(format!(
            "the pending charge weighs {} bytes, over the queue's {MAX_MESSAGE_BYTES}",
            body.len()
        )));
    }
    Ok(body)
}

fn queue_error<E>(operation: &str, error: &aws_sdk_sqs::error::SdkError<E>) -> SpoolError
where
    E: std::error::Error + 'static,
{
    SpoolError::Queue(format!("{operation}: {}", DisplayErrorContext(error)))
}

/// A message the ledger refuses (or that is no pending charge): one ERROR line with what
/// an operator needs, the message left for the dead-letter queue.
fn refused(message: &Message, charge: Option<&PendingCharge>, reason: &str) {
    let receives = message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .map(String::as_str)
        .unwrap_or_default();
    tracing::error!(
        target: "switchboard::pending_charge",
        message_id = message.message_id().unwrap_or_default(),
        receives,
        ledger_id = charge.map(|c| c.capture.ledger_id.as_str()).unwrap_or_default(),
        user_id = charge.map(|c| c.capture.user_id.as_str()).unwrap_or_default(),
        amount_usd = %charge.map(|c| c.capture.amount.normalize()).unwrap_or_default(),
        reason,
        "a pending charge was refused by the ledger; left in the queue for its dead-letter queue"
    );
}

/// Whether the database answers a trivial statement.
async fn database_answers(pool: &DbPool) -> Result<(), String> {
    let probe = async {
        let client = pool.get().await.map_err(DbError::from)?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(DbError::from)?;
        Ok::<(), DbError>(())
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(crate::report::error_chain(&error)),
        Err(_) => Err("the database did not answer in time".into()),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use rust_decimal::Decimal;

    use super::*;
    use crate::ledger::{CaptureKind, CaptureRecord, UsageLogRow};

    /// The heaviest record a request can leave: `SWITCHBOARD_MAX_ATTEMPTS` at its maximum
    /// (10) usage rows, each with every text at its longest (error texts are cut at 500
    /// characters, the user agent at 200) made of characters JSON escapes to six bytes.
    fn heaviest() -> PendingCharge {
        let escaped: String = "\u{1}".repeat(500);
        let row = |attempt: i16| UsageLogRow {
            user_id: "u".repeat(128),
            request_id: "r".repeat(128),
            attempt,
            provider_id: Some(i32::MAX),
            model_id: Some(i32::MAX),
            user_key_id: Some(i32::MAX),
            provider_slug: Some("p".repeat(64)),
            model_name: Some("m".repeat(200)),
            power_level: Some("precision".into()),
            task_type: Some("reasoning".into()),
            prompt_tokens: i32::MAX,
            completion_tokens: i32::MAX,
            total_tokens: i32::MAX,
            cached_tokens: i32::MAX,
            cost_input_usd: Decimal::new(i64::MAX, 9),
            cost_output_usd: Decimal::new(i64::MAX, 9),
            cost_total_usd: Decimal::new(i64::MAX, 9),
            charged_usd: Decimal::new(i64::MAX, 9),
            used_byok: true,
            stream: true,
            latency_ms: Some(i32::MAX),
            tokens_per_second: Some(Decimal::new(i64::MAX, 3)),
            status_code: Some(599),
            error_message: Some(escaped.clone()),
            was_fallback: true,
            fallback_reason: Some(escaped.clone()),
            user_agent: Some("a".repeat(200)),
            price_input_per_1m: Some(Decimal::new(i64::MAX, 9)),
            price_cached_input_per_1m: Some(Decimal::new(i64::MAX, 9)),
            price_cache_write_per_1m: Some(Decimal::new(i64::MAX, 9)),
            price_cache_write_1h_per_1m: Some(Decimal::new(i64::MAX, 9)),
            price_output_per_1m: Some(Decimal::new(i64::MAX, 9)),
            route: Some("/v1/chat/completions".into()),
            ttft_ms: Some(i32::MAX),
        };
        PendingCharge {
            kept_at: Utc::now(),
            capture: CaptureRecord {
                ledger_id: "l".repeat(200),
                user_id: "u".repeat(128),
                amount: Decimal::new(i64::MAX, 9),
                kind: CaptureKind::Usage,
                usage_logs: (1..=10).map(row).collect(),
                billing_properties: serde_json::json!({
                    "model": "m".repeat(200), "provider": "p".repeat(64),
                    "input_tokens": i32::MAX, "output_tokens": i32::MAX,
                    "cost_usd": "9223372036.854775807", "byok": true,
                }),
            },
        }
    }

    /// A usual record: one attempt, no error text.
    fn usual() -> PendingCharge {
        let mut charge = heaviest();
        charge.capture.ledger_id = uuid::Uuid::new_v4().to_string();
        charge.capture.user_id = "user-1234".into();
        charge.capture.amount = Decimal::new(45, 5);
        charge.capture.billing_properties = serde_json::json!({
            "model": "gpt-4o", "provider": "openai", "input_tokens": 100,
            "output_tokens": 20, "cost_usd": "0.00045", "byok": false,
        });
        charge.capture.usage_logs.truncate(1);
        let row = &mut charge.capture.usage_logs[0];
        row.user_id = "user-1234".into();
        row.request_id = uuid::Uuid::new_v4().to_string();
        row.provider_slug = Some("openai".into());
        row.model_name = Some("gpt-4o".into());
        row.error_message = None;
        row.fallback_reason = None;
        row.was_fallback = false;
        row.user_agent = Some("OpenAI/Python 1.99.0".into());
        charge
    }

    #[test]
    fn the_heaviest_pending_charge_fits_a_message_three_times() {
        let body = message_body(&heaviest()).unwrap();
        // About 78 KB, nearly all of it twenty 500-character error texts, escaped.
        assert!(
            body.len() < MAX_MESSAGE_BYTES / 3,
            "{} bytes: too close to SQS's limit",
            body.len()
        );
        let usual = message_body(&usual()).unwrap();
        assert!(usual.len() < 2048, "a usual record: {} bytes", usual.len());
        let back: PendingCharge = serde_json::from_str(&body).unwrap();
        assert_eq!(back.capture.usage_logs.len(), 10);
        assert_eq!(back.capture.amount, Decimal::new(i64::MAX, 9));
    }

    #[test]
    fn characters_sqs_refuses_are_escaped_and_read_back() {
        let mut charge = heaviest();
        charge.capture.usage_logs.truncate(1);
        let text = "bad \u{FFFE} and \u{FFFF}, fine \u{1F600} and \u{E000}";
        charge.capture.usage_logs[0].error_message = Some(text.into());
        let body = message_body(&charge).unwrap();
        // SQS's allowed characters: #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF.
        assert!(body.chars().all(|c| matches!(c,
            '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')));
        let back: PendingCharge = serde_json::from_str(&body).unwrap();
        assert_eq!(
            back.capture.usage_logs[0].error_message.as_deref(),
            Some(text)
        );
    }

    #[test]
    fn a_record_over_the_limit_is_refused_before_sending() {
        let mut charge = heaviest();
        charge.capture.billing_properties = serde_json::json!({"x": "y".repeat(MAX_MESSAGE_BYTES)});
        let error = message_body(&charge).unwrap_err();
        assert!(error.to_string().contains("over the queue's"), "{error}");
    }
}
