//! The billing export to Lago, against a fake Lago: every capture arrives exactly once
//! with its exact cost, Lago being down delays nothing but the export, a refused event
//! does not block the others and waits for an admin, two exporters never send an event
//! twice; and the measured export throughput.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchboard_core::billing::{self, ExportReport};
use switchboard_core::config::BillingSettings;
use switchboard_core::secret::Secret;
use switchboard_tests::fake_lago::{FakeLago, LAGO_TEST_KEY};
use switchboard_tests::fake_upstream::Reply;
use switchboard_tests::gateway::{Gateway, GatewayOptions};

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

async fn export(gw: &Gateway, lago: &FakeLago) -> ExportReport {
    billing::export_once(&gw.state.pool, &gw.state.http, &settings(lago))
        .await
        .unwrap()
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
    assert_eq!(report, json!({"sent": 6, "failed": 1, "deferred": 0}));
    assert_eq!(lago.events().len(), 6);
    let (status, backlog) = admin(&gw, "GET", "/admin/billing/export", &ops).await;
    assert_eq!(status, 200);
    assert_eq!(backlog["unbilled"], 0);
    assert_eq!(backlog["failed"], 1);
    let failure = &backlog["failures"][0];
    assert_eq!(failure["request_id"], "mix-3");
    assert_eq!(failure["transaction_id"], bad);
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
