//! A capture that keeps failing: the answer is delivered, the hold stays active, no usage
//! row claims the charge, and one structured log line carries what reconciliation needs.
//! Its own test binary, so the global log subscriber captures only this test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchboard_tests::fake_upstream::{Reply, Step};
use switchboard_tests::gateway::Gateway;
use switchboard_tests::log_capture::Captured;

#[tokio::test]
async fn a_capture_that_keeps_failing_keeps_the_hold_and_logs_the_pending_charge() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let gw = Gateway::start().await;
    let key = gw.user("pending", "starter", "10").await;
    gw.db
        .connect()
        .await
        .batch_execute(
            "CREATE FUNCTION fail_capture() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'injected capture failure'; END $$;
             CREATE TRIGGER fail_capture BEFORE INSERT ON billing_events
                 FOR EACH ROW EXECUTE FUNCTION fail_capture();",
        )
        .await
        .unwrap();
    gw.upstream
        .push(Step::reply(Reply::text("hi").with_usage(100, 20, 0)));
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100});
    let started = std::time::Instant::now();
    let (status, _, answer) = gw.chat(&key, &body, &[("x-request-id", "pending-1")]).await;
    // Delivered: the provider produced it and the charge is recorded for reconciliation.
    assert_eq!(status, 200, "{answer}");
    let metadata = &answer["_metadata"];
    assert_eq!(metadata["charge_pending"], true);
    assert!(metadata["credits_remaining"].is_null());
    assert_eq!(metadata["cost_usd"], "0.00045");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(700),
        "the capture was retried before giving up"
    );

    let client = gw.db.connect().await;
    let row = client
        .query_one(
            "SELECT h.request_id, h.state,
                    (SELECT count(*) FROM ledger_entries e WHERE e.user_id = h.user_id AND e.kind = 'capture'),
                    (SELECT count(*) FROM llm_usage_logs u WHERE u.request_id = 'pending-1')
             FROM credit_holds h WHERE h.user_id = 'pending'",
            &[],
        )
        .await
        .unwrap();
    let ledger_id: String = row.get(0);
    assert_eq!(
        row.get::<_, String>(1),
        "active",
        "the hold stays for reconciliation"
    );
    assert_eq!(row.get::<_, i64>(2), 0, "nothing charged");
    assert_eq!(row.get::<_, i64>(3), 0, "no usage row claims the charge");
    assert_eq!(
        gw.balance("pending").await,
        Decimal::from_str("10").unwrap()
    );

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "switchboard::pending_charge")
        .collect();
    assert_eq!(lines.len(), 1, "one line per pending charge: {text}");
    let fields = &lines[0]["fields"];
    assert_eq!(fields["ledger_id"], ledger_id.as_str());
    assert_eq!(fields["request_id"], "pending-1");
    assert_eq!(fields["user_id"], "pending");
    assert_eq!(fields["amount_usd"], "0.00045");
    assert_eq!(lines[0]["level"], "ERROR");
    let retries = text
        .lines()
        .filter(|line| line.contains("capture failed; retrying"))
        .count();
    assert!(retries >= 2, "retried: {retries}");
}
