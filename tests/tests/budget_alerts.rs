//! Budget alerts: crossing 80 % and 100 % of a monthly cap sends exactly two signed
//! webhooks, a receiver answering 500 gets the same alert again later, a threshold fires
//! once per month, and a low balance alerts once per top-up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchboard_core::billing::alerts;
use switchboard_core::billing::signature;
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

async fn deliver(gw: &Gateway) -> alerts::AlertReport {
    alerts::deliver_pending(&gw.state.pool, &gw.state.http, &gw.state.config.billing)
        .await
        .unwrap()
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
            failed: 1
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
