//! Stripe top-ups against a fake Stripe API and events signed as Stripe signs them: a
//! checkout sends the right form and answers the session URL; a paid session credits
//! once, whatever is replayed; bad, stale and missing signatures and unpaid sessions
//! change nothing; a refund debits once per refunded amount.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchboard_core::billing::stripe::sign;
use switchboard_tests::fake_stripe::{FakeStripe, STRIPE_TEST_KEY};
use switchboard_tests::gateway::{Gateway, GatewayOptions};

const WEBHOOK_SECRET: &str = "whsec_test_0123456789";

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

async fn gateway(stripe: &FakeStripe) -> Gateway {
    Gateway::start_with(GatewayOptions {
        env: vec![
            ("SWITCHBOARD_STRIPE_API_URL", stripe.url()),
            ("SWITCHBOARD_STRIPE_API_KEY", STRIPE_TEST_KEY.into()),
            ("SWITCHBOARD_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
            (
                "SWITCHBOARD_STRIPE_SUCCESS_URL",
                "https://app.example/paid".into(),
            ),
            (
                "SWITCHBOARD_STRIPE_CANCEL_URL",
                "https://app.example/cancelled".into(),
            ),
        ],
        ..GatewayOptions::default()
    })
    .await
}

async fn post(gw: &Gateway, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = gw
        .send(request.body(axum::body::Body::from(body)).unwrap())
        .await;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn checkout(gw: &Gateway, key: &str, amount: Value) -> (u16, Value) {
    post(
        gw,
        "/v1/billing/checkout",
        &[("authorization", format!("Bearer {key}"))],
        json!({"amount_usd": amount}).to_string().into_bytes(),
    )
    .await
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Delivers `event` to the webhook, signed at `signed_at` (or with `signature`).
async fn deliver(gw: &Gateway, event: &Value, signature: Option<String>) -> (u16, Value) {
    let body = event.to_string().into_bytes();
    let signature = signature.unwrap_or_else(|| sign(&body, WEBHOOK_SECRET, now()));
    post(
        gw,
        "/webhooks/stripe",
        &[("stripe-signature", signature)],
        body,
    )
    .await
}

fn completed(event_id: &str, session: &str, user: &str, cents: i64, paid: bool) -> Value {
    json!({
        "id": event_id, "object": "event", "type": "checkout.session.completed",
        "data": {"object": {
            "id": session, "object": "checkout.session", "mode": "payment",
            "payment_status": if paid { "paid" } else { "unpaid" },
            "amount_total": cents, "currency": "usd",
            "client_reference_id": user, "metadata": {"user_id": user},
            "payment_intent": format!("pi_{session}")
        }}
    })
}

#[tokio::test]
async fn a_checkout_sends_the_right_form_and_answers_the_session_url() {
    let stripe = FakeStripe::start().await;
    let gw = gateway(&stripe).await;
    let key = gw.user("buyer", "starter", "0").await;

    let (status, session) = checkout(&gw, &key, json!("20.00")).await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["id"], "cs_test_0001");
    assert_eq!(
        session["url"],
        "https://checkout.stripe.com/c/pay/cs_test_0001"
    );
    let fields = &stripe.sessions()[0];
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {fields:?}"))
    };
    assert_eq!(field("mode"), "payment");
    assert_eq!(field("client_reference_id"), "buyer");
    assert_eq!(field("metadata[user_id]"), "buyer");
    assert_eq!(field("line_items[0][price_data][currency]"), "usd");
    assert_eq!(field("line_items[0][price_data][unit_amount]"), "2000");
    assert_eq!(field("line_items[0][quantity]"), "1");
    assert_eq!(field("success_url"), "https://app.example/paid");
    assert_eq!(field("cancel_url"), "https://app.example/cancelled");

    // A number works too; bad amounts are 400s that reach no one.
    assert_eq!(checkout(&gw, &key, json!(5)).await.0, 201);
    for bad in [
        json!("4.99"),
        json!("1000.01"),
        json!("20.001"),
        json!("lots"),
        json!(null),
    ] {
        let (status, answer) = checkout(&gw, &key, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert_eq!(answer["error"]["param"], "amount_usd");
    }
    assert_eq!(stripe.sessions().len(), 2);
    // Stripe failing is a 502 that never shows the key.
    stripe.fail_next(&[500]);
    let (status, answer) = checkout(&gw, &key, json!("10")).await;
    assert_eq!(status, 502, "{answer}");
    assert!(!answer.to_string().contains(STRIPE_TEST_KEY));
    // No gateway key, no checkout.
    let (status, _) = post(
        &gw,
        "/v1/billing/checkout",
        &[],
        json!({"amount_usd": "10"}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn checkout_without_stripe_settings_is_a_503() {
    let gw = Gateway::start().await;
    let key = gw.user("buyer", "starter", "0").await;
    let (status, answer) = checkout(&gw, &key, json!("20.00")).await;
    assert_eq!(status, 503, "{answer}");
    let (status, _) = deliver(&gw, &completed("evt_1", "cs_1", "buyer", 100, true), None).await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn a_paid_session_credits_once_whatever_is_replayed() {
    let stripe = FakeStripe::start().await;
    let gw = gateway(&stripe).await;
    gw.user("payer", "starter", "0").await;

    let event = completed("evt_1", "cs_paid", "payer", 2000, true);
    let (status, answer) = deliver(&gw, &event, None).await;
    assert_eq!(
        (status, &answer["outcome"]),
        (200, &json!("credited")),
        "{answer}"
    );
    assert_eq!(gw.balance("payer").await, d("20.00"));
    // The same event again, and a second event for the same session: nothing more.
    let (status, answer) = deliver(&gw, &event, None).await;
    assert_eq!((status, &answer["outcome"]), (200, &json!("duplicate")));
    let again = completed("evt_2", "cs_paid", "payer", 2000, true);
    assert_eq!(deliver(&gw, &again, None).await.0, 200);
    assert_eq!(gw.balance("payer").await, d("20.00"));

    // Bad, stale and missing signatures, and an unpaid session, change nothing.
    let other = completed("evt_3", "cs_other", "payer", 5000, true);
    let body = other.to_string().into_bytes();
    for (signature, why) in [
        (sign(&body, "whsec_wrong", now()), "wrong secret"),
        (sign(&body, WEBHOOK_SECRET, now() - 301), "stale"),
        (sign(b"{}", WEBHOOK_SECRET, now()), "another body"),
        ("t=1,v1=zz".to_string(), "garbage"),
    ] {
        let (status, answer) = deliver(&gw, &other, Some(signature)).await;
        assert_eq!(status, 400, "{why}: {answer}");
    }
    let (status, _) = post(&gw, "/webhooks/stripe", &[], body.clone()).await;
    assert_eq!(status, 400, "missing signature");
    let unpaid = completed("evt_4", "cs_unpaid", "payer", 5000, false);
    let (status, answer) = deliver(&gw, &unpaid, None).await;
    assert_eq!((status, &answer["outcome"]), (200, &json!("ignored")));
    let unknown = json!({"id": "evt_5", "type": "customer.created", "data": {"object": {}}});
    assert_eq!(deliver(&gw, &unknown, None).await.0, 200);
    assert_eq!(gw.balance("payer").await, d("20.00"));
    gw.assert_ledger_consistent("payer").await;
}

fn refunded(event_id: &str, session: &str, refunded_cents: i64) -> Value {
    json!({
        "id": event_id, "object": "event", "type": "charge.refunded",
        "data": {"object": {
            "id": format!("ch_{session}"), "object": "charge",
            "amount": 2000, "amount_refunded": refunded_cents,
            "payment_intent": format!("pi_{session}")
        }}
    })
}

#[tokio::test]
async fn a_refund_debits_once_per_refunded_amount() {
    let stripe = FakeStripe::start().await;
    let gw = gateway(&stripe).await;
    gw.user("refundee", "starter", "1").await;
    deliver(
        &gw,
        &completed("evt_1", "cs_r", "refundee", 2000, true),
        None,
    )
    .await;
    assert_eq!(gw.balance("refundee").await, d("21.00"));

    // A partial refund of $5, delivered twice.
    let partial = refunded("evt_2", "cs_r", 500);
    let (status, answer) = deliver(&gw, &partial, None).await;
    assert_eq!(
        (status, &answer["outcome"]),
        (200, &json!("debited")),
        "{answer}"
    );
    assert_eq!(deliver(&gw, &partial, None).await.1["outcome"], "duplicate");
    assert_eq!(gw.balance("refundee").await, d("16.00"));
    // Then the rest: amount_refunded is cumulative, so $15 more.
    let full = refunded("evt_3", "cs_r", 2000);
    assert_eq!(deliver(&gw, &full, None).await.1["outcome"], "debited");
    assert_eq!(deliver(&gw, &full, None).await.1["outcome"], "duplicate");
    assert_eq!(gw.balance("refundee").await, d("1.00"));
    // A refund for a payment Switchboard never saw changes nothing.
    let stranger = refunded("evt_4", "cs_unknown", 700);
    assert_eq!(deliver(&gw, &stranger, None).await.1["outcome"], "ignored");
    assert_eq!(gw.balance("refundee").await, d("1.00"));
    gw.assert_ledger_consistent("refundee").await;
}
