//! Lambda's pending charges (issue 28): a capture the database refuses during a chat
//! answer is sent to the SQS queue (moto) before the answer ends, and the billing-export
//! function's drain writes it into the ledger once, deleting the message only then.
//!
//! - the chat function's state as its `main` builds it (`with_pending_charge_queue` from
//!   `SWITCHBOARD_PENDING_CHARGES_QUEUE_URL`), a JSON answer and a streamed one each
//!   leaving exactly one message, then the billing-export handler draining them: balance =
//!   sum of entries, usage rows and billing events present, the queue empty, a second run
//!   changing nothing;
//! - the same charge delivered twice is charged once; a charge the ledger refuses (and a
//!   message that is no charge) stays in the queue and goes to the dead-letter queue by
//!   the redrive policy;
//! - a database that does not answer: the drain receives nothing (no receive spent
//!   towards the dead-letter queue) and the message stays.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_sqs::config::{Credentials, Region};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use rust_decimal::Decimal;
use serde_json::json;
use switchboard_core::credentials::AwsContext;
use switchboard_core::db::connect_pool;
use switchboard_core::ledger::queue::{QueueDrainEnd, message_body};
use switchboard_core::ledger::{
    self, CaptureKind, CaptureRecord, CreditKind, PendingCharge, PendingCharges, SqsPendingCharges,
    UsageLogRow,
};
use switchboard_core::secret::Secret;
use switchboard_tests::fake_upstream::{Reply, Step};
use switchboard_tests::gateway::{Gateway, GatewayOptions};
use switchboard_tests::moto::MotoServer;
use switchboard_tests::test_db::TestDb;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

async fn moto_sdk(moto: &MotoServer) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(moto.endpoint_url())
        .load()
        .await
}

async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned()
}

/// Messages in the queue, visible and in flight.
async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> u64 {
    let output = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attributes = output.attributes().unwrap();
    [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    ]
    .iter()
    .map(|name| attributes[name].parse::<u64>().unwrap())
    .sum()
}

/// The visible messages' bodies, left visible (visibility timeout 0).
async fn peek(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<PendingCharge> {
    let output = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    output
        .messages()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect()
}

/// Makes every capture fail inside the database (as the existing pending-charge test does),
/// until [`restore_captures`].
const FAIL_CAPTURES: &str = "CREATE FUNCTION fail_capture() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN RAISE EXCEPTION 'injected capture failure'; END $$;
     CREATE TRIGGER fail_capture BEFORE INSERT ON billing_events
         FOR EACH ROW EXECUTE FUNCTION fail_capture();";
const RESTORE_CAPTURES: &str =
    "DROP TRIGGER fail_capture ON billing_events; DROP FUNCTION fail_capture();";

#[tokio::test]
async fn a_charge_refused_during_a_lambda_answer_is_queued_then_written_once_by_billing_export() {
    let moto = MotoServer::start().await.expect("moto");
    let sdk = moto_sdk(&moto).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = create_queue(&sqs, "sb-pending-charges").await;

    let mut gw = Gateway::start_with(GatewayOptions {
        env: vec![("SWITCHBOARD_PENDING_CHARGES_QUEUE_URL", url.clone())],
        ..GatewayOptions::default()
    })
    .await;
    // The chat function's state, as its main builds it.
    let state = switchboard_chat::with_pending_charge_queue(
        gw.state.clone(),
        &AwsContext::with_sdk_config(sdk.clone()),
    )
    .await;
    gw.app = switchboard_chat::app(state.clone());
    let key = gw.user("queued", "starter", "10").await;
    let db = gw.db.connect().await;
    db.batch_execute(FAIL_CAPTURES).await.unwrap();

    // A JSON answer: delivered, its charge pending, one message in the queue.
    gw.upstream
        .push(Step::reply(Reply::text("hi").with_usage(100, 20, 0)));
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100});
    let (status, _, answer) = gw.chat(&key, &body, &[("x-request-id", "queued-1")]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["_metadata"]["charge_pending"], true, "{answer}");
    assert_eq!(answer["_metadata"]["cost_usd"], "0.00045");
    assert_eq!(depth(&sqs, &url).await, 1, "one message per pending charge");
    let queued = peek(&sqs, &url).await;
    assert_eq!(queued.len(), 1);
    let charge = &queued[0].capture;
    assert_eq!(charge.user_id, "queued");
    assert_eq!(charge.amount, d("0.00045"));
    assert_eq!(charge.usage_logs.len(), 1);
    assert_eq!(charge.usage_logs[0].request_id, "queued-1");
    let hold: (String, String) = {
        let row = db
            .query_one(
                "SELECT request_id, state FROM credit_holds WHERE user_id = 'queued'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        charge.ledger_id, hold.0,
        "the message names the hold's ledger id"
    );
    assert_eq!(hold.1, "active", "nothing charged yet");

    // A streamed answer: the message is sent before the stream's last frame.
    gw.upstream
        .push(Step::reply(Reply::text("hello").with_usage(200, 40, 0)));
    let streamed = json!({"model": "gpt-4o", "stream": true, "max_tokens": 100,
                          "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, events) = gw
        .chat_stream(&key, &streamed, &[("x-request-id", "queued-2")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let metadata = events
        .iter()
        .filter_map(|(_, data)| serde_json::from_str::<serde_json::Value>(data).ok())
        .find_map(|v| v.get("_metadata").cloned())
        .unwrap();
    assert_eq!(metadata["charge_pending"], true, "{metadata}");
    assert_eq!(metadata["cost_usd"], "0.0009");
    assert_eq!(depth(&sqs, &url).await, 2);
    assert_eq!(gw.balance("queued").await, d("10"), "nothing charged yet");

    // The database takes captures again: billing-export's run drains the queue.
    db.batch_execute(RESTORE_CAPTURES).await.unwrap();
    let queue = SqsPendingCharges::new(&sdk, url.clone());
    let report =
        switchboard_billing_export::run_once(&state, Some(&queue), Duration::from_secs(30))
            .await
            .unwrap();
    let drained = report.pending_charges.clone().unwrap();
    assert_eq!(drained.received, 2, "{drained:?}");
    assert_eq!(drained.captured, 2, "{drained:?}");
    assert_eq!(
        (drained.duplicates, drained.refused, drained.left),
        (0, 0, 0)
    );
    assert_eq!(drained.ended, QueueDrainEnd::Empty);
    assert_eq!(drained.remaining, Some(0));
    assert!(
        report.pass.is_none(),
        "no Lago, no alerts: only the drain ran"
    );
    assert_eq!(depth(&sqs, &url).await, 0, "deleted once written");

    let charged = d("10") - d("0.00045") - d("0.0009");
    assert_eq!(gw.balance("queued").await, charged);
    gw.assert_ledger_consistent("queued").await;
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM ledger_entries WHERE user_id = 'queued' AND kind = 'capture'),
                    (SELECT count(*) FROM llm_usage_logs WHERE request_id IN ('queued-1', 'queued-2')),
                    (SELECT coalesce(sum(charged_usd), 0) FROM llm_usage_logs WHERE user_id = 'queued'),
                    (SELECT count(*) FROM billing_events WHERE external_customer_id = 'queued'),
                    (SELECT count(*) FROM credit_holds WHERE user_id = 'queued' AND state = 'captured')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2, "two captures");
    assert_eq!(row.get::<_, i64>(1), 2, "a usage row per answer");
    assert_eq!(row.get::<_, Decimal>(2), d("0.00135"));
    assert_eq!(row.get::<_, i64>(3), 2, "a billing event per answer");
    assert_eq!(
        row.get::<_, i64>(4),
        2,
        "both holds closed by their capture"
    );

    // A second run finds nothing and changes nothing.
    let again = switchboard_billing_export::run_once(&state, Some(&queue), Duration::from_secs(30))
        .await
        .unwrap()
        .pending_charges
        .unwrap();
    assert_eq!(
        (again.received, again.captured, again.duplicates),
        (0, 0, 0)
    );
    assert_eq!(gw.balance("queued").await, charged);
    gw.assert_ledger_consistent("queued").await;
}

/// A pending charge of `amount` for `user_id` under `ledger_id`.
fn pending(user_id: &str, ledger_id: &str, amount: &str) -> PendingCharge {
    PendingCharge {
        kept_at: chrono::Utc::now(),
        capture: CaptureRecord {
            ledger_id: ledger_id.into(),
            user_id: user_id.into(),
            amount: d(amount),
            kind: CaptureKind::Usage,
            usage_logs: vec![UsageLogRow {
                user_id: user_id.into(),
                request_id: format!("req-{ledger_id}"),
                attempt: 1,
                charged_usd: d(amount),
                cost_total_usd: d(amount),
                ..UsageLogRow::default()
            }],
            billing_properties: json!({"model": "gpt-4o", "provider": "openai"}),
        },
    }
}

#[tokio::test]
async fn a_charge_delivered_twice_is_charged_once_and_a_refused_one_goes_to_the_dead_letter_queue()
{
    let moto = MotoServer::start().await.expect("moto");
    let sdk = moto_sdk(&moto).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dlq = create_queue(&sqs, "sb-pending-charges-dlq").await;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    // As in the template, but with a 1 s visibility timeout so the test need not wait.
    let url = sqs
        .create_queue()
        .queue_name("sb-pending-charges")
        .attributes(QueueAttributeName::VisibilityTimeout, "1")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}).to_string(),
        )
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();

    let db = TestDb::new().await;
    let client = db.connect().await;
    client
        .execute(
            "INSERT INTO accounts (user_id, tier) VALUES ('twice', 'starter')",
            &[],
        )
        .await
        .unwrap();
    ledger::credit(
        &client,
        "twice",
        d("1"),
        CreditKind::TopUp,
        "top-up-1",
        None,
        None,
    )
    .await
    .unwrap();
    ledger::authorize(
        &client,
        "twice",
        "hold-twice",
        d("0.01"),
        Duration::from_secs(900),
    )
    .await
    .unwrap();

    // The same charge twice (SQS delivers at least once; a drain may also be cut between
    // the capture and the delete), one the ledger refuses (no such account) and a message
    // that is no pending charge.
    let queue = SqsPendingCharges::new(&sdk, url.clone());
    let charge = pending("twice", "hold-twice", "0.004");
    queue.keep(&charge).await.unwrap();
    queue.keep(&charge).await.unwrap();
    queue
        .keep(&pending("nobody", "hold-nobody", "0.5"))
        .await
        .unwrap();
    sqs.send_message()
        .queue_url(&url)
        .message_body("not a pending charge")
        .send()
        .await
        .unwrap();
    assert_eq!(depth(&sqs, &url).await, 4);

    let pool = connect_pool(&Secret::new(db.url()), 2).unwrap();
    let report = queue.drain(&pool, Duration::from_secs(30)).await.unwrap();
    assert_eq!(report.received, 4, "{report:?}");
    assert_eq!(report.captured, 1, "{report:?}");
    assert_eq!(report.duplicates, 1, "{report:?}");
    assert_eq!(report.refused, 2, "{report:?}");
    assert_eq!(report.ended, QueueDrainEnd::Empty);
    assert_eq!(
        report.remaining,
        Some(2),
        "the refused ones stay: {report:?}"
    );

    let invariants = ledger::check_invariants(&client, "twice").await.unwrap();
    assert_eq!(
        invariants.balance,
        d("0.996"),
        "charged once: {invariants:?}"
    );
    assert_eq!(invariants.balance, invariants.sum_of_entries);
    assert_eq!(invariants.active_holds, 0, "the hold closed by the capture");
    let rows: i64 = client
        .query_one(
            "SELECT count(*) FROM llm_usage_logs WHERE request_id = 'req-hold-twice'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "one usage row");
    let events: i64 = client
        .query_one(
            "SELECT count(*) FROM billing_events WHERE external_customer_id = 'twice'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 1, "one billing event");

    // The refused ones come back once more, then the redrive policy moves them to the
    // dead-letter queue (after maxReceiveCount receives); nothing more is charged.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = queue.drain(&pool, Duration::from_secs(30)).await.unwrap();
    assert_eq!((report.received, report.refused), (2, 2), "{report:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = queue.drain(&pool, Duration::from_secs(30)).await.unwrap();
    assert_eq!(report.received, 0, "{report:?}");
    assert_eq!(depth(&sqs, &url).await, 0);
    assert_eq!(
        depth(&sqs, &dlq).await,
        2,
        "both refused messages in the DLQ"
    );
    let invariants = ledger::check_invariants(&client, "twice").await.unwrap();
    assert_eq!(invariants.balance, d("0.996"));
}

#[tokio::test]
async fn a_database_that_does_not_answer_leaves_every_message_unreceived() {
    let moto = MotoServer::start().await.expect("moto");
    let sdk = moto_sdk(&moto).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = create_queue(&sqs, "sb-pending-charges").await;
    let queue = SqsPendingCharges::new(&sdk, url.clone());
    queue
        .keep(&pending("someone", "hold-1", "0.01"))
        .await
        .unwrap();

    // Nothing listens on port 1.
    let pool = connect_pool(&Secret::new("postgres://postgres@127.0.0.1:1/none"), 1).unwrap();
    let report = queue.drain(&pool, Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        report.ended,
        QueueDrainEnd::DatabaseUnavailable,
        "{report:?}"
    );
    assert_eq!(report.received, 0, "{report:?}");
    assert_eq!(report.remaining, Some(1));

    // Never received: the redrive policy's count is untouched.
    let output = sqs
        .receive_message()
        .queue_url(&url)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    let message = &output.messages()[0];
    assert_eq!(
        message.attributes().unwrap()[&MessageSystemAttributeName::ApproximateReceiveCount],
        "1",
        "this receive is the first"
    );
    let body: PendingCharge = serde_json::from_str(message.body().unwrap()).unwrap();
    assert_eq!(body.capture.ledger_id, "hold-1");
    assert_eq!(message.body().unwrap(), message_body(&body).unwrap());
}
