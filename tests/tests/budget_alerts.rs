//! Budget alerts: crossing 80 % and 100 % of a monthly cap sends exactly two signed
//! webhooks, a receiver answering 500 gets the same alert again later, a threshold fires
//! once per month, and a low balance alerts once per top-up. The alert pass commits each
//! alert as it goes: killed mid-way (a Lambda timeout) it keeps what it delivered and the
//! backoff it recorded, it stops by itself at its deadline, two passes at once never send
//! one alert twice; the whole billing pass delivers the alerts when the export fails (its
//! database, or Lago down), and `POST /admin/billing/export` runs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchboard_core::billing::alerts::{self, AlertEnd};
use switchboard_core::billing::{self, AlertStatus, AlertsPart, ExportStatus, signature};
use switchboard_tests::fake_lago::{FakeLago, LAGO_TEST_KEY};
use switchboard_tests::fake_upstream::Reply;
use switchboard_tests::fake_webhook::FakeWebhook;
use switchboard_tests::gateway::{Gateway, GatewayOptions};

const SECRET: &str = "alert-secret-0123456789";

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

async fn gateway(hook: &FakeWebhook) -> Gateway {
    Gateway::start_with(GatewayOptions {
        env: vec![
            ("SWITCHBOARD_ALERT_WEBHOOK_URL", hook.url()),
            ("SWITCHBOARD_ALERT_WEBHOOK_SECRET", SECRET.into()),
        ],
        ..GatewayOptions::default()
    })
    .await
}

async fn patch_user(gw: &Gateway, admin: &str, user: &str, body: Value) -> (u16, Value) {
    let request = http::Request::builder()
        .method("PATCH")
        .uri(format!("/admin/users/{user}"))
        .header("authorization", format!("Bearer {admin}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
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

/// A request costing exactly $0.3751 (150,000 prompt tokens at $2.50 and 10 output tokens
/// at $10 per 1M, gpt-4o), with a tiny hold.
async fn spend(gw: &Gateway, key: &str) {
    gw.upstream
        .push(Reply::text("ok").with_usage(150_000, 10, 0));
    let body = json!({"model": "openai/gpt-4o", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, answer) = gw.chat(key, &body, &[]).await;
    assert_eq!(status, 200, "{answer}");
}

/// A deadline no test reaches.
fn far() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(600)
}

async fn deliver_until(gw: &Gateway, deadline: tokio::time::Instant) -> alerts::AlertReport {
    alerts::deliver_pending(
        &gw.state.pool,
        &gw.state.http,
        &gw.state.config.billing,
        deadline,
    )
    .await
    .unwrap()
}

async fn deliver(gw: &Gateway) -> alerts::AlertReport {
    deliver_until(gw, far()).await
}

async fn alert_count(gw: &Gateway, user: &str) -> i64 {
    gw.db
        .connect()
        .await
        .query_one(
            "SELECT count(*) FROM alert_events WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
}

fn verified(delivery: &switchboard_tests::fake_webhook::Delivery) -> Value {
    signature::verify(
        delivery.signature.as_deref(),
        &delivery.body,
        SECRET,
        SystemTime::now(),
        Duration::from_secs(300),
    )
    .expect("the alert is signed with the configured secret");
    assert!(
        signature::verify(
            delivery.signature.as_deref(),
            &delivery.body,
            "another-secret",
            SystemTime::now(),
            Duration::from_secs(300),
        )
        .is_err()
    );
    serde_json::from_slice(&delivery.body).unwrap()
}

#[tokio::test]
async fn crossing_80_and_100_percent_sends_two_signed_alerts_at_least_once() {
    let hook = FakeWebhook::start().await;
    let gw = gateway(&hook).await;
    gw.user("ops", "enterprise", "0").await;
    let admin = gw.key_for("ops", "admin", None).await;
    let key = gw
        .user_with("capped", "starter", "10", Some("1.00"), None)
        .await;
    let (status, view) = patch_user(
        &gw,
        &admin,
        "capped",
        json!({"alert_thresholds_pct": [100, 80], "billing_subscription_id": "sub-9"}),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["alert_thresholds_pct"], json!([80, 100]));
    assert_eq!(view["billing_subscription_id"], "sub-9");
    assert_eq!(
        patch_user(&gw, &admin, "capped", json!({"alert_thresholds_pct": [0]}))
            .await
            .0,
        400
    );

    spend(&gw, &key).await; // 37.5 %
    spend(&gw, &key).await; // 75 %
    assert_eq!(alert_count(&gw, "capped").await, 0);
    spend(&gw, &key).await; // 112.5 %: both thresholds at once
    assert_eq!(alert_count(&gw, "capped").await, 2);

    // The receiver fails the first delivery: that alert is retried later, the other goes.
    hook.fail_next(&[500]);
    assert_eq!(
        deliver(&gw).await,
        alerts::AlertReport {
            delivered: 1,
            failed: 1,
            ended: alerts::AlertEnd::Finished,
        }
    );
    assert_eq!(
        deliver(&gw).await,
        alerts::AlertReport::default(),
        "backoff"
    );
    gw.db
        .connect()
        .await
        .execute(
            "UPDATE alert_events SET next_attempt_at = now() WHERE delivered_at IS NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(deliver(&gw).await.delivered, 1);

    let deliveries = hook.deliveries();
    assert_eq!(deliveries.len(), 3);
    assert_eq!(deliveries[0].status, 500);
    assert_eq!(
        deliveries[0].body, deliveries[2].body,
        "the same alert, again"
    );
    let mut thresholds: Vec<i64> = deliveries[1..]
        .iter()
        .map(|delivery| {
            let alert = verified(delivery);
            assert_eq!(alert["type"], "budget.threshold_crossed");
            assert_eq!(alert["user_id"], "capped");
            assert_eq!(alert["monthly_cap_usd"], "1");
            assert_eq!(alert["month_spend_usd"], "1.1253");
            assert_eq!(alert["balance_usd"], "8.8747");
            assert_eq!(alert["month"].as_str().unwrap().len(), 7);
            assert!(alert["id"].is_string() && alert["created_at"].is_string());
            alert["threshold_pct"].as_i64().unwrap()
        })
        .collect();
    thresholds.sort_unstable();
    assert_eq!(thresholds, [80, 100]);

    // Once per threshold per month: with the cap raised to $1.20, the next request
    // crosses 100 % of it again, and nothing new is sent.
    let (status, _) = patch_user(&gw, &admin, "capped", json!({"monthly_cap_usd": "1.20"})).await;
    assert_eq!(status, 200);
    spend(&gw, &key).await; // 1.5004 of 1.20
    assert_eq!(alert_count(&gw, "capped").await, 2);
    assert_eq!(deliver(&gw).await, alerts::AlertReport::default());
    gw.assert_ledger_consistent("capped").await;
}

#[tokio::test]
async fn a_low_balance_alerts_once_per_top_up() {
    let hook = FakeWebhook::start().await;
    let gw = gateway(&hook).await;
    gw.user("ops", "enterprise", "0").await;
    let admin = gw.key_for("ops", "admin", None).await;
    let key = gw.user("thin", "starter", "1").await;
    let (status, view) = patch_user(
        &gw,
        &admin,
        "thin",
        json!({"low_balance_alert_usd": "0.50"}),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["low_balance_alert_usd"], "0.50");

    spend(&gw, &key).await; // 0.6249
    assert_eq!(alert_count(&gw, "thin").await, 0);
    spend(&gw, &key).await; // 0.2498: below 0.50
    spend(&gw, &key).await; // still below: no second alert
    assert_eq!(alert_count(&gw, "thin").await, 1);
    assert_eq!(deliver(&gw).await.delivered, 1);
    let alert = verified(&hook.deliveries()[0]);
    assert_eq!(alert["type"], "balance.low");
    assert_eq!(alert["balance_usd"], "0.2498");

    // A top-up re-arms it.
    let request = http::Request::builder()
        .method("POST")
        .uri("/admin/users/thin/credits")
        .header("authorization", format!("Bearer {admin}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({"amount_usd": "1.00", "reason": "top-up", "idempotency_key": "t-1"}).to_string(),
        ))
        .unwrap();
    assert_eq!(gw.send(request).await.status(), 201);
    assert_eq!(gw.balance("thin").await, d("0.8747"));
    spend(&gw, &key).await; // 0.4996
    assert_eq!(alert_count(&gw, "thin").await, 2);
    gw.assert_ledger_consistent("thin").await;
}

/// Queues alerts `from..to` for the account `many` (as the capture trigger writes them;
/// each payload's `id` is `alert-<n>`).
async fn queue_alerts(gw: &Gateway, from: i32, to: i32) {
    gw.db
        .connect()
        .await
        .execute(
            "INSERT INTO alert_events (user_id, type, dedupe_key, payload)
             SELECT 'many', 'balance.low', 'test:' || i,
                    jsonb_build_object('id', 'alert-' || i, 'type', 'balance.low', 'user_id', 'many')
             FROM generate_series($1::int, $2::int - 1) AS i",
            &[&from, &to],
        )
        .await
        .unwrap();
}

/// `(delivered, failed with its backoff recorded)` alerts in the database.
async fn alert_states(gw: &Gateway) -> (i64, i64) {
    let row = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE delivered_at IS NOT NULL),
                    count(*) FILTER (WHERE delivered_at IS NULL AND attempts = 1
                                       AND last_error = 'HTTP 500' AND next_attempt_at > now())
             FROM alert_events",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// How many times the receiver acknowledged (answered 2xx) each alert id.
fn acknowledged(hook: &FakeWebhook) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for delivery in hook.deliveries() {
        if delivery.answered && (200..300).contains(&delivery.status) {
            let alert: Value = serde_json::from_slice(&delivery.body).unwrap();
            *counts
                .entry(alert["id"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
    }
    counts
}

/// 40 alerts against a receiver taking 200 ms each. (1) A pass killed after 1.1 s, as
/// Lambda kills a function at its timeout, keeps every alert it delivered and the backoff
/// of the one that failed (one transaction per alert; a single transaction lost them all
/// and sent them again on every pass). (2) Two passes at once with a 2 s deadline stop by
/// themselves before it, and never take the same alert. (3) The next pass sends only the
/// rest: each alert is acknowledged once (the one in flight at the kill perhaps twice).
#[tokio::test]
async fn a_pass_commits_each_alert_and_stops_at_its_deadline() {
    let hook = FakeWebhook::start().await;
    let gw = gateway(&hook).await;
    gw.user("many", "starter", "10").await;
    queue_alerts(&gw, 0, 40).await;
    hook.set_delay(Duration::from_millis(200));
    hook.fail_next(&[500]);

    let killed = tokio::time::timeout(Duration::from_millis(1100), deliver(&gw)).await;
    assert!(killed.is_err(), "the pass had more to do than 1.1 s allows");
    let (delivered, backed_off) = alert_states(&gw).await;
    assert_eq!(backed_off, 1, "the failed delivery's backoff is kept");
    let acked: usize = acknowledged(&hook).values().sum();
    assert!(delivered >= 3, "{delivered} delivered before the kill");
    assert!(
        acked == delivered as usize || acked == delivered as usize + 1,
        "acknowledged {acked}, recorded {delivered}"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let started = Instant::now();
    let (a, b) = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::join!(deliver_until(&gw, deadline), deliver_until(&gw, deadline))
    })
    .await
    .expect("the passes stop by themselves");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((a.ended, b.ended), (AlertEnd::Deadline, AlertEnd::Deadline));
    assert!(a.delivered > 0 && b.delivered > 0, "{a:?} {b:?}");
    assert_eq!(a.failed + b.failed, 0);
    let (after_deadline, _) = alert_states(&gw).await;
    assert_eq!(
        after_deadline,
        delivered + (a.delivered + b.delivered) as i64
    );
    assert!(after_deadline < 39, "some left for the next pass");

    hook.set_delay(Duration::ZERO);
    let rest = deliver(&gw).await;
    assert_eq!(rest.ended, AlertEnd::Finished);
    assert_eq!(rest.delivered as i64, 39 - after_deadline);
    gw.db
        .connect()
        .await
        .execute(
            "UPDATE alert_events SET next_attempt_at = now() WHERE delivered_at IS NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        deliver(&gw).await.delivered,
        1,
        "the failed one, after its backoff"
    );
    assert_eq!(alert_states(&gw).await, (40, 0));

    let acked = acknowledged(&hook);
    assert_eq!(acked.len(), 40);
    let resent: usize = acked.values().map(|n| n - 1).sum();
    assert!(resent <= 1, "{acked:?}");
}

/// The whole billing pass runs both parts whatever happens to the other: the export's
/// database failing, or Lago being down, still delivers the alerts.
#[tokio::test]
async fn the_alerts_go_out_when_the_export_fails() {
    let hook = FakeWebhook::start().await;
    let lago = FakeLago::start().await;
    let gw = Gateway::start_with(GatewayOptions {
        env: vec![
            ("SWITCHBOARD_ALERT_WEBHOOK_URL", hook.url()),
            ("SWITCHBOARD_ALERT_WEBHOOK_SECRET", SECRET.into()),
            ("SWITCHBOARD_LAGO_API_URL", lago.url()),
            ("SWITCHBOARD_LAGO_API_KEY", LAGO_TEST_KEY.into()),
        ],
        ..GatewayOptions::default()
    })
    .await;
    gw.user("many", "starter", "10").await;
    let pass = || {
        billing::run_pass(
            &gw.state.pool,
            &gw.state.http,
            &gw.state.config.billing,
            Duration::from_secs(20),
        )
    };
    let client = gw.db.connect().await;

    // The export's table cannot be read: a database error in the export.
    queue_alerts(&gw, 0, 2).await;
    client
        .batch_execute("ALTER TABLE billing_events RENAME TO billing_events_away")
        .await
        .unwrap();
    let report = pass().await.unwrap();
    assert_eq!(report.export, ExportStatus::DatabaseError);
    assert_eq!(
        report.alerts,
        AlertsPart {
            delivered: 2,
            failed: 0,
            status: AlertStatus::Finished
        }
    );
    assert!(!report.succeeded());
    client
        .batch_execute("ALTER TABLE billing_events_away RENAME TO billing_events")
        .await
        .unwrap();

    // Lago down.
    queue_alerts(&gw, 2, 3).await;
    client
        .batch_execute(
            "INSERT INTO billing_events (transaction_id, external_customer_id, properties)
             VALUES ('down-1', 'many', '{\"cost_usd\": \"0.01\"}')",
        )
        .await
        .unwrap();
    lago.fail_next(&[503]);
    let report = pass().await.unwrap();
    assert_eq!(
        (report.export, report.deferred, report.alerts.delivered),
        (ExportStatus::LagoUnavailable, 1, 1)
    );
    assert!(report.succeeded());
    assert_eq!(hook.deliveries().len(), 3);
    assert_eq!(lago.call_sizes(), vec![1]);
}

/// `POST /admin/billing/export` runs the whole pass: the alerts too, with the export off
/// when Lago is not configured.
#[tokio::test]
async fn the_admin_route_runs_the_whole_pass() {
    let hook = FakeWebhook::start().await;
    let gw = gateway(&hook).await;
    gw.user("ops", "enterprise", "0").await;
    let admin = gw.key_for("ops", "admin", None).await;
    gw.user("many", "starter", "10").await;
    queue_alerts(&gw, 0, 2).await;
    let request = http::Request::builder()
        .method("POST")
        .uri("/admin/billing/export")
        .header("authorization", format!("Bearer {admin}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let response = gw.send(request).await;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let report: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report,
        json!({"sent": 0, "failed": 0, "deferred": 0, "export": "off", "lago_status": null,
               "alerts": {"delivered": 2, "failed": 0, "status": "finished"}})
    );
    assert_eq!(hook.deliveries().len(), 2);
    assert_eq!(alert_states(&gw).await.0, 2);
}
