//! The billing export to Lago, against a fake Lago: every capture arrives exactly once
//! with its exact cost, Lago being down delays nothing but the export, a refused event
//! does not block the others and waits for an admin, two exporters never send an event
//! twice; Lago refusing the key or URL (401/403/404) stops the pass after one call and
//! fails no event; a duplicate-transaction 422 counts as delivered; the transaction id
//! is fixed at capture (the same on every pass and re-queue, distinct for a reused request
//! id whatever the commit order, and kept for the events written before migration 0022);
//! and the measured export throughput.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchboard_core::billing::{self, ExportEnd, ExportReport};
use switchboard_core::config::BillingSettings;
use switchboard_core::secret::Secret;
use switchboard_tests::fake_lago::{FakeLago, LAGO_TEST_KEY};
use switchboard_tests::fake_upstream::Reply;
use switchboard_tests::gateway::{Gateway, GatewayOptions};
use switchboard_tests::test_db::TestDb;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn settings(lago: &FakeLago) -> BillingSettings {
    BillingSettings {
        lago_api_url: Some(lago.url()),
        lago_api_key: Some(Secret::new(LAGO_TEST_KEY)),
        ..BillingSettings::default()
    }
}

/// A deadline no test reaches.
fn far() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(600)
}

async fn export_with(gw: &Gateway, settings: &BillingSettings) -> ExportReport {
    billing::export_once(&gw.state.pool, &gw.state.http, settings, far())
        .await
        .unwrap()
}

async fn export(gw: &Gateway, lago: &FakeLago) -> ExportReport {
    export_with(gw, &settings(lago)).await
}

/// `n` requests of `user`, every third streamed; returns their request ids.
async fn requests(gw: &Gateway, key: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        gw.upstream
            .push(Reply::text("ok").with_usage(100 + i as u64, 10 + i as u64, 0));
        let mut body = json!({"model": "gpt-4o", "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}]});
        if i % 3 == 0 {
            body["stream"] = json!(true);
            let (status, _, _) = gw.chat_stream(key, &body, &[("x-request-id", &id)]).await;
            assert_eq!(status, 200);
        } else {
            let (status, _, answer) = gw.chat(key, &body, &[("x-request-id", &id)]).await;
            assert_eq!(status, 200, "{answer}");
        }
        ids.push(id);
    }
    ids
}

async fn captured_total(gw: &Gateway) -> Decimal {
    gw.db
        .connect()
        .await
        .query_one(
            "SELECT -sum(amount_usd) FROM ledger_entries WHERE kind IN ('capture', 'byok_fee')",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

fn cost_sum(events: &[Value]) -> Decimal {
    events
        .iter()
        .map(|e| d(e["properties"]["cost_usd"].as_str().unwrap()))
        .sum()
}

#[tokio::test]
async fn every_capture_reaches_lago_once_with_its_exact_cost() {
    let lago = FakeLago::start().await;
    let gw = Gateway::start().await;
    let key = gw.user("billed", "starter", "10").await;
    gw.db
        .connect()
        .await
        .execute(
            "UPDATE accounts SET billing_subscription_id = 'sub-billed' WHERE user_id = 'billed'",
            &[],
        )
        .await
        .unwrap();
    let ids = requests(&gw, &key, "exp", 12).await;

    let report = export(&gw, &lago).await;
    assert_eq!((report.sent, report.failed, report.deferred), (12, 0, 0));
    let events = lago.events();
    assert_eq!(events.len(), 12);
    // One event per request: Lago's transaction ids are the request ids.
    let sent: HashSet<String> = events
        .iter()
        .map(|e| e["transaction_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sent, ids.iter().cloned().collect::<HashSet<_>>());
    assert_eq!(cost_sum(&events), captured_total(&gw).await);
    let first = &events[0];
    assert_eq!(first["external_subscription_id"], "sub-billed");
    assert_eq!(first["code"], "llm_usage");
    assert!(first["timestamp"].as_i64().unwrap() > 1_700_000_000);
    for field in [
        "input_tokens",
        "cached_input_tokens",
        "cache_write_input_tokens",
        "output_tokens",
    ] {
        assert!(first["properties"][field].is_u64(), "{field}: {first}");
    }
    assert_eq!(first["properties"]["model"], "gpt-4o");
    assert_eq!(first["properties"]["provider"], "openai");
    assert_eq!(first["properties"]["byok"], false);
    assert_eq!(first["properties"]["power_level"], "balanced");
    assert_eq!(first["properties"]["task_type"], "chat");

    // Billed in the database, events and usage rows alike; a second pass sends nothing.
    let client = gw.db.connect().await;
    let unbilled: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM billing_events WHERE billed_at IS NULL)
                  + (SELECT count(*) FROM llm_usage_logs WHERE billed_at IS NULL AND request_id = ANY($1))",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unbilled, 0);
    assert_eq!(export(&gw, &lago).await, ExportReport::default());
    assert_eq!(lago.duplicates(), 0);
}

#[tokio::test]
async fn lago_down_for_a_while_delays_the_export_and_loses_nothing() {
    let lago = FakeLago::start().await;
    let gw = Gateway::start().await;
    let key = gw.user("patient", "starter", "10").await;
    requests(&gw, &key, "down", 5).await;

    lago.fail_next(&[500, 503]);
    let first = export(&gw, &lago).await;
    assert_eq!((first.sent, first.deferred), (0, 5));
    // The next try is scheduled with backoff, so an immediate pass sends nothing.
    assert_eq!(export(&gw, &lago).await, ExportReport::default());
    let client = gw.db.connect().await;
    let scheduled: bool = client
        .query_one(
            "SELECT bool_and(next_attempt_at > now() AND attempts = 1) FROM billing_events",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(scheduled);

    // Time passes (the backoff elapses): the second failure, then success.
    let elapse = "UPDATE billing_events SET next_attempt_at = now() WHERE billed_at IS NULL";
    client.execute(elapse, &[]).await.unwrap();
    assert_eq!(export(&gw, &lago).await.deferred, 5);
    client.execute(elapse, &[]).await.unwrap();
    assert_eq!(export(&gw, &lago).await.sent, 5);
    assert_eq!(lago.events().len(), 5);
    assert_eq!(lago.duplicates(), 0);
    assert_eq!(cost_sum(&lago.events()), captured_total(&gw).await);
}

async fn admin(gw: &Gateway, method: &str, path: &str, key: &str) -> (u16, Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {key}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let response = gw.send(request).await;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_refused_event_waits_for_an_admin_without_blocking_the_others() {
    let lago = FakeLago::start().await;
    let gw = Gateway::start_with(GatewayOptions {
        env: vec![
            ("SWITCHBOARD_LAGO_API_URL", lago.url()),
            ("SWITCHBOARD_LAGO_API_KEY", LAGO_TEST_KEY.into()),
        ],
        ..GatewayOptions::default()
    })
    .await;
    gw.user("ops", "enterprise", "0").await;
    let ops = gw.key_for("ops", "admin", None).await;
    let key = gw.user("mixed", "starter", "10").await;
    requests(&gw, &key, "mix", 7).await;
    let client = gw.db.connect().await;
    let bad: String = client
        .query_one(
            "SELECT transaction_id FROM billing_events WHERE properties->>'request_id' = 'mix-3'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    lago.refuse("mix-3");

    let (status, report) = admin(&gw, "POST", "/admin/billing/export", &ops).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report,
        json!({"sent": 6, "failed": 1, "deferred": 0, "export": "finished", "lago_status": null,
               "alerts": {"delivered": 0, "failed": 0, "status": "off"}})
    );
    assert_eq!(lago.events().len(), 6);
    let (status, backlog) = admin(&gw, "GET", "/admin/billing/export", &ops).await;
    assert_eq!(status, 200);
    assert_eq!(backlog["unbilled"], 0);
    assert_eq!(backlog["failed"], 1);
    let failure = &backlog["failures"][0];
    assert_eq!(failure["request_id"], "mix-3");
    assert_eq!(failure["transaction_id"], bad);
    assert_eq!(failure["lago_transaction_id"], "mix-3");
    assert!(
        failure["error"].as_str().unwrap().starts_with("HTTP 422"),
        "{failure}"
    );
    assert!(!failure.to_string().contains(LAGO_TEST_KEY));
    // Not retried by itself.
    assert_eq!(export(&gw, &lago).await, ExportReport::default());

    // Fixed in Lago, re-queued by the admin, delivered by the next pass.
    lago.accept_all();
    let (status, requeued) = admin(&gw, "POST", "/admin/billing/export/retry", &ops).await;
    assert_eq!((status, requeued), (200, json!({"requeued": 1})));
    assert_eq!(export(&gw, &lago).await.sent, 1);
    assert_eq!(lago.events().len(), 7);
    assert_eq!(cost_sum(&lago.events()), captured_total(&gw).await);
    let (_, backlog) = admin(&gw, "GET", "/admin/billing/export", &ops).await;
    assert_eq!(
        (backlog["unbilled"].as_i64(), backlog["failed"].as_i64()),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn a_reused_request_id_still_gives_each_charge_its_own_event() {
    let lago = FakeLago::start().await;
    let gw = Gateway::start().await;
    let key = gw.user("reuser", "starter", "10").await;
    requests(&gw, &key, "same", 1).await;
    // The same X-Request-Id again: a second, separate charge.
    requests(&gw, &key, "same", 1).await;
    assert_eq!(export(&gw, &lago).await.sent, 2);
    let ids: Vec<String> = lago
        .events()
        .iter()
        .map(|e| e["transaction_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids[0], "same-0");
    assert!(ids[1].starts_with("same-0:") && ids[1].len() > 8, "{ids:?}");
    assert_eq!(cost_sum(&lago.events()), captured_total(&gw).await);
}

#[tokio::test]
async fn an_unconfigured_export_says_so() {
    let gw = Gateway::start().await;
    gw.user("ops", "enterprise", "0").await;
    let ops = gw.key_for("ops", "admin", None).await;
    let (status, answer) = admin(&gw, "POST", "/admin/billing/export", &ops).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SWITCHBOARD_LAGO_API_URL")
    );
}

/// Inserts `n` billing events directly (as captures write them).
async fn seed_events(gw: &Gateway, n: i64) {
    gw.user("bulk", "starter", "0").await;
    gw.db
        .connect()
        .await
        .execute(
            "INSERT INTO billing_events (transaction_id, external_customer_id, properties)
             SELECT 'bulk-' || i, 'bulk', jsonb_build_object(
                 'request_id', 'bulk-' || i, 'model', 'gpt-4o', 'provider', 'openai',
                 'byok', false, 'input_tokens', 100, 'cached_input_tokens', 0,
                 'cache_write_input_tokens', 0, 'output_tokens', 10,
                 'cost_usd', '0.00035', 'power_level', 'balanced', 'task_type', 'chat')
             FROM generate_series(1, $1::bigint) AS i",
            &[&n],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn two_exporters_at_once_never_send_an_event_twice() {
    let lago = FakeLago::start().await;
    let gw = Gateway::start().await;
    seed_events(&gw, 450).await;
    lago.set_delay(Duration::from_millis(50));
    let (a, b) = tokio::join!(export(&gw, &lago), export(&gw, &lago));
    assert_eq!(a.sent + b.sent, 450, "{a:?} {b:?}");
    assert!(a.sent > 0 && b.sent > 0, "both worked: {a:?} {b:?}");
    assert_eq!(lago.events().len(), 450);
    assert_eq!(lago.duplicates(), 0);
    assert!(lago.call_sizes().iter().all(|&n| n <= 100));
}

#[tokio::test]
async fn export_throughput() {
    let lago = FakeLago::start().await;
    let gw = Gateway::start().await;
    let n = 5000;
    seed_events(&gw, n).await;
    let started = Instant::now();
    let report = export(&gw, &lago).await;
    let took = started.elapsed();
    assert_eq!(report.sent, n as u64);
    assert_eq!(lago.events().len(), n as usize);
    eprintln!(
        "billing export: {n} events in {:.2} s = {:.0} events/s ({} calls of at most 100)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        lago.call_sizes().len()
    );
}

/// Log lines (JSON) written on this thread while a guard from [`Logs::capture`] lives.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(self.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn errors(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["level"] == "ERROR")
            .collect()
    }
}

/// Events in a state an export pass changed: billed, failed, tried or scheduled.
async fn touched_events(gw: &Gateway) -> i64 {
    gw.db
        .connect()
        .await
        .query_one(
            "SELECT count(*) FROM billing_events
             WHERE billed_at IS NOT NULL OR billing_error IS NOT NULL OR attempts > 0
                OR next_attempt_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Lago answering 401 (a rotated key), 403 or 404 (a wrong URL) is a configuration error,
/// not 150 bad events: each pass makes exactly one call, logs exactly one ERROR naming
/// the status (never the key), marks no event failed and schedules nothing; the first
/// pass after the fix sends everything.
#[tokio::test]
async fn lago_refusing_the_key_or_the_url_stops_each_pass_after_one_call() {
    const ROTATED: &str = "rotated-lago-key-987654";
    let lago = FakeLago::start().await;
    let gw = Gateway::start().await;
    seed_events(&gw, 150).await;
    let logs = Logs::default();
    let _capture = logs.capture();

    let rotated = BillingSettings {
        lago_api_key: Some(Secret::new(ROTATED)),
        ..settings(&lago)
    };
    let wrong_url = BillingSettings {
        lago_api_url: Some(format!("{}/lago", lago.url())),
        ..settings(&lago)
    };
    for (status, setup) in [(401, &rotated), (403, &settings(&lago)), (404, &wrong_url)] {
        for pass in 0..2 {
            if status == 403 {
                lago.fail_next(&[403]);
            }
            let calls_before = lago.call_sizes().len() + lago.other_calls().len();
            let errors_before = logs.errors().len();
            let report = export_with(&gw, setup).await;
            assert_eq!(
                report,
                ExportReport {
                    ended: ExportEnd::LagoConfiguration,
                    lago_status: Some(status),
                    ..ExportReport::default()
                },
                "HTTP {status}, pass {pass}"
            );
            assert_eq!(
                lago.call_sizes().len() + lago.other_calls().len() - calls_before,
                1,
                "one call per pass (HTTP {status})"
            );
            assert_eq!(touched_events(&gw).await, 0, "no event changed");
            let errors = logs.errors();
            assert_eq!(errors.len() - errors_before, 1, "{errors:?}");
            let error = errors.last().unwrap().to_string();
            assert!(error.contains(&status.to_string()), "{error}");
        }
    }
    assert_eq!(lago.other_calls(), vec!["/lago/api/v1/events/batch"; 2]);
    assert!(lago.events().is_empty());
    let text = logs.text();
    assert!(!text.contains(ROTATED) && !text.contains(LAGO_TEST_KEY));

    // The key fixed: the next pass sends the whole backlog, in two calls.
    let calls_before = lago.call_sizes().len();
    let report = export(&gw, &lago).await;
    assert_eq!((report.sent, report.failed, report.deferred), (150, 0, 0));
    assert_eq!(lago.call_sizes()[calls_before..], [100, 50]);
    assert_eq!(lago.events().len(), 150);
}

/// Lago stored a batch but its answer was lost: the resent events are refused as
/// duplicates (422 `value_already_exist`, the whole batch refused as Lago does), which
/// counts as delivered, and the other events of that batch go through.
#[tokio::test]
async fn an_event_lago_already_holds_counts_as_delivered() {
    let lago = FakeLago::start().await;
    let gw = Gateway::start().await;
    let key = gw.user("lost", "starter", "10").await;
    requests(&gw, &key, "lost", 5).await;
    lago.lose_next_answers(&[502]);
    let first = export(&gw, &lago).await;
    assert_eq!((first.sent, first.deferred), (0, 5));
    assert_eq!(lago.events().len(), 5, "Lago stored them");

    requests(&gw, &key, "later", 3).await;
    let client = gw.db.connect().await;
    client
        .execute(
            "UPDATE billing_events SET next_attempt_at = now() WHERE billed_at IS NULL",
            &[],
        )
        .await
        .unwrap();
    let second = export(&gw, &lago).await;
    assert_eq!(
        (second.sent, second.failed, second.deferred, second.ended),
        (8, 0, 0, ExportEnd::Finished)
    );
    // The 8 refused for the 5 Lago holds, then the 3 others alone.
    assert_eq!(lago.call_sizes(), vec![5, 8, 3]);
    assert_eq!(lago.duplicates(), 5);
    assert_eq!(lago.events().len(), 8);
    assert_eq!(cost_sum(&lago.events()), captured_total(&gw).await);
    let (unbilled, failed): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE billed_at IS NULL),
                        count(*) FILTER (WHERE billing_error IS NOT NULL)
                 FROM billing_events",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((unbilled, failed), (0, 0));
    assert_eq!(export(&gw, &lago).await, ExportReport::default());
}

/// `billing_events` as `(ledger id, lago_transaction_id)`.
async fn stored_ids(gw: &Gateway) -> HashMap<String, String> {
    gw.db
        .connect()
        .await
        .query(
            "SELECT transaction_id, lago_transaction_id FROM billing_events",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// The Lago transaction id is written with the capture, before any pass, and every pass
/// (after an outage, a refusal and an admin's re-queue) sends that same id.
#[tokio::test]
async fn the_transaction_id_is_fixed_at_capture_and_kept_on_every_pass() {
    let lago = FakeLago::start().await;
    let gw = Gateway::start().await;
    let key = gw.user("fixed", "starter", "10").await;
    requests(&gw, &key, "fix", 3).await;
    requests(&gw, &key, "fix", 1).await; // "fix-0" again: a second charge

    let at_capture = stored_ids(&gw).await;
    assert_eq!(at_capture.len(), 4);
    for id in ["fix-0", "fix-1", "fix-2"] {
        assert_eq!(
            at_capture.values().filter(|v| *v == id).count(),
            1,
            "{at_capture:?}"
        );
    }
    let (ledger, reused) = at_capture
        .iter()
        .find(|(_, lago_id)| lago_id.starts_with("fix-0:"))
        .unwrap();
    assert_eq!(*reused, format!("fix-0:{ledger}"));

    lago.fail_next(&[503]);
    assert_eq!(export(&gw, &lago).await.deferred, 4);
    let client = gw.db.connect().await;
    client
        .execute(
            "UPDATE billing_events SET next_attempt_at = now() WHERE billed_at IS NULL",
            &[],
        )
        .await
        .unwrap();
    lago.refuse("fix-1");
    let second = export(&gw, &lago).await;
    assert_eq!((second.sent, second.failed), (3, 1));
    lago.accept_all();
    assert_eq!(billing::requeue_failed(&client).await.unwrap(), 1);
    assert_eq!(export(&gw, &lago).await.sent, 1);

    assert_eq!(stored_ids(&gw).await, at_capture, "never changed");
    let stored: HashSet<&String> = at_capture.values().collect();
    let calls = lago.calls();
    // The 503, the 422 naming "fix-1", the 3 others again, the re-queued one.
    assert_eq!(lago.call_sizes(), vec![4, 4, 3, 1], "{calls:?}");
    for event in calls.iter().flatten() {
        let id = event["transaction_id"].as_str().unwrap().to_string();
        assert!(
            stored.contains(&id),
            "{id} was sent, {stored:?} were stored"
        );
    }
    let sent: HashSet<String> = lago
        .events()
        .iter()
        .map(|e| e["transaction_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sent, at_capture.values().cloned().collect::<HashSet<_>>());
    assert_eq!(lago.duplicates(), 0);
}

/// Two charges of one reused request id whose captures commit out of order (the later
/// event first, a pass in between) still reach Lago as two events: the second capture
/// waits for the first one's claim of the bare id and takes `<request id>:<ledger id>`.
/// (Deriving the id at send time gave both the bare id, and Lago kept one.)
#[tokio::test]
async fn a_reused_request_id_committed_out_of_order_still_gives_two_events() {
    let lago = FakeLago::start().await;
    let gw = Gateway::start().await;
    let key = gw.user("racer", "starter", "10").await;
    let mut slow = gw.db.connect().await;
    let first = slow.transaction().await.unwrap();
    first
        .execute(
            "INSERT INTO billing_events (transaction_id, external_customer_id, properties)
             VALUES ('slow-capture', 'racer',
                     '{\"request_id\": \"race-0\", \"cost_usd\": \"0.01\", \"model\": \"gpt-4o\"}')",
            &[],
        )
        .await
        .unwrap();

    let between = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let report = export(&gw, &lago).await;
        first.commit().await.unwrap();
        report
    };
    let (_, between) = tokio::join!(requests(&gw, &key, "race", 1), between);
    let after = export(&gw, &lago).await;
    assert_eq!(
        between.sent, 0,
        "the second capture waited for the first one's claim"
    );
    assert_eq!(after.sent, 2, "{after:?}");
    assert_eq!(after.failed, 0);
    assert_eq!(lago.duplicates(), 0);
    let mut sent: Vec<String> = lago
        .events()
        .iter()
        .map(|e| e["transaction_id"].as_str().unwrap().to_string())
        .collect();
    sent.sort();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0], "race-0");
    assert!(sent[1].starts_with("race-0:"), "{sent:?}");
}

/// Migration 0022 gives the events written before it exactly the transaction id an
/// export pass computed for them until then (it may have sent them already), and the
/// captures after it continue from there.
#[tokio::test]
async fn events_written_before_0022_keep_the_transaction_id_a_pass_sent() {
    let db = TestDb::empty().await;
    let client = db.connect().await;
    let (before, rest): (Vec<_>, Vec<_>) = switchboard_core::db::migrate::MIGRATIONS
        .iter()
        .partition(|m| m.version < 22);
    for migration in &before {
        client.batch_execute(migration.sql).await.unwrap();
    }
    client
        .batch_execute(
            "INSERT INTO billing_events (transaction_id, external_customer_id, properties, billed_at)
             VALUES ('l1', 'u', '{\"request_id\": \"r\"}', NULL),
                    ('l2', 'u', '{\"request_id\": \"q\"}', now()),
                    ('l3', 'u', '{\"request_id\": \"r\"}', NULL),
                    ('l4', 'u', '{}', NULL),
                    ('l5', 'u', '{\"request_id\": \"r\"}', now())",
        )
        .await
        .unwrap();
    // The export's query until 0022 (shared/src/billing/export.rs before this change).
    let sent_before: HashMap<String, String> = client
        .query(
            "SELECT e.transaction_id,
                    CASE WHEN e.properties->>'request_id' IS NULL THEN e.transaction_id
                         WHEN EXISTS (SELECT 1 FROM billing_events b
                                      WHERE b.properties->>'request_id' = e.properties->>'request_id'
                                        AND b.id < e.id)
                         THEN (e.properties->>'request_id') || ':' || e.transaction_id
                         ELSE e.properties->>'request_id' END
             FROM billing_events e",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    for migration in &rest {
        client.batch_execute(migration.sql).await.unwrap();
    }
    let after: HashMap<String, String> = client
        .query(
            "SELECT transaction_id, lago_transaction_id FROM billing_events WHERE transaction_id LIKE 'l%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(after, sent_before);
    assert_eq!(after["l3"], "r:l3");
    assert_eq!(after["l4"], "l4");

    // New captures: a request id already used gets its ledger id appended, a new one is
    // taken bare.
    client
        .batch_execute(
            "INSERT INTO billing_events (transaction_id, external_customer_id, properties)
             VALUES ('n1', 'u', '{\"request_id\": \"r\"}'), ('n2', 'u', '{\"request_id\": \"q\"}'),
                    ('n3', 'u', '{\"request_id\": \"new\"}')",
        )
        .await
        .unwrap();
    let new: HashMap<String, String> = client
        .query(
            "SELECT transaction_id, lago_transaction_id FROM billing_events WHERE transaction_id LIKE 'n%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(new["n1"], "r:n1");
    assert_eq!(new["n2"], "q:n2");
    assert_eq!(new["n3"], "new");
}
