//! Stripe top-ups against a fake Stripe API and events signed as Stripe signs them, through
//! the public routes and a real PostgreSQL: the checkout sends the right form and records
//! its session; only recorded `usd` sessions are credited, once, to the account that
//! recorded them, never more than recorded; delayed payments credit when they succeed and
//! never when they fail; refunds and disputes act only on recorded payments, once, and wait
//! for the credit when they arrive first; concurrent duplicate deliveries move money once;
//! a debit may take a balance below zero, and such an account is refused. Every test ends
//! with balance = sum(ledger entries).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::seq::SliceRandom;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchboard_core::billing::stripe::sign;
use switchboard_tests::fake_stripe::{
    FakeStripe, STRIPE_TEST_KEY, dispute, event, payment_intent_for, refunded_charge,
    session_object,
};
use switchboard_tests::gateway::{Gateway, GatewayOptions};
use tower::ServiceExt;

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

fn request(
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> http::Request<axum::body::Body> {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.body(axum::body::Body::from(body)).unwrap()
}

async fn answer(response: http::Response<axum::body::Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn post(gw: &Gateway, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
    answer(gw.send(request(path, headers, body)).await).await
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

/// A checkout of `amount` by the owner of `key`: the session id.
async fn buy(gw: &Gateway, key: &str, amount: &str) -> String {
    let (status, session) = checkout(gw, key, json!(amount)).await;
    assert_eq!(status, 201, "{session}");
    session["id"].as_str().unwrap().to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn webhook(event: &Value) -> http::Request<axum::body::Body> {
    let body = event.to_string().into_bytes();
    let signature = sign(&body, WEBHOOK_SECRET, now());
    request("/webhooks/stripe", &[("stripe-signature", signature)], body)
}

/// Delivers `event` to the webhook, signed as Stripe signs (or with `signature`).
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

/// Delivers `event`, expects a 200, and answers what it did.
async fn apply(gw: &Gateway, event: &Value) -> String {
    let (status, answer) = deliver(gw, event, None).await;
    assert_eq!(status, 200, "{event}: {answer}");
    answer["outcome"].as_str().unwrap().to_string()
}

/// The ledger entries of `user` written by Stripe events: (kind, amount, idempotency key).
async fn stripe_entries(gw: &Gateway, user: &str) -> Vec<(String, Decimal, String)> {
    let client = gw.db.connect().await;
    client
        .query(
            "SELECT kind, amount_usd, idempotency_key FROM ledger_entries
             WHERE user_id = $1 AND actor = 'stripe' ORDER BY id",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get::<_, Decimal>(1).normalize(), r.get(2)))
        .collect()
}

/// The balance, checked against the sum of the ledger entries.
async fn balance(gw: &Gateway, user: &str) -> Decimal {
    gw.assert_ledger_consistent(user).await;
    gw.balance(user).await
}

fn completed(stripe: &FakeStripe, session: &str, payment_status: &str) -> Value {
    event(
        "checkout.session.completed",
        stripe.session_object(session, payment_status),
    )
}

fn refund(session: &str, amount: i64, refunded: i64) -> Value {
    let charge = format!("ch_{}", session.trim_start_matches("cs_"));
    event(
        "charge.refunded",
        refunded_charge(&charge, &payment_intent_for(session), amount, refunded),
    )
}

fn dispute_event(kind: &str, id: &str, session: &str, amount: i64, status: &str) -> Value {
    let charge = format!("ch_{}", session.trim_start_matches("cs_"));
    event(
        kind,
        dispute(id, &charge, &payment_intent_for(session), amount, status),
    )
}

/// Every log line, captured while the guard lives (the test's thread only).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
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
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (logs, guard)
    }

    /// The WARN lines naming `word`.
    fn warnings_naming(&self, word: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(word))
            .map(str::to_string)
            .collect()
    }
}

#[tokio::test]
async fn a_checkout_sends_the_right_form_and_records_the_session() {
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
    assert_eq!(field("adaptive_pricing[enabled]"), "false");
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
    // Stripe failing is a 502 that never shows the key, and records nothing.
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

    // Each session Stripe answered is recorded: id, user, cents, usd, not paid yet.
    let recorded: Vec<(String, String, i64, String, String)> = gw
        .db
        .connect()
        .await
        .query(
            "SELECT session_id, user_id, amount_cents, currency, status
             FROM stripe_checkout_sessions ORDER BY session_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let row = |id: &str, cents: i64| {
        (
            id.to_string(),
            "buyer".to_string(),
            cents,
            "usd".to_string(),
            "open".to_string(),
        )
    };
    assert_eq!(
        recorded,
        vec![row("cs_test_0001", 2000), row("cs_test_0002", 500)]
    );
}

#[tokio::test]
async fn checkout_without_stripe_settings_is_a_503() {
    let gw = Gateway::start().await;
    let key = gw.user("buyer", "starter", "0").await;
    let (status, answer) = checkout(&gw, &key, json!("20.00")).await;
    assert_eq!(status, 503, "{answer}");
    let paid = event(
        "checkout.session.completed",
        session_object("cs_1", Some("buyer"), 100, "usd", "paid", Some("pi_1")),
    );
    let (status, _) = deliver(&gw, &paid, None).await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn a_paid_session_credits_once_whatever_is_replayed() {
    let stripe = FakeStripe::start().await;
    let gw = gateway(&stripe).await;
    let key = gw.user("payer", "starter", "0").await;
    let session = buy(&gw, &key, "20.00").await;

    let paid = completed(&stripe, &session, "paid");
    assert_eq!(apply(&gw, &paid).await, "credited");
    assert_eq!(balance(&gw, "payer").await, d("20.00"));
    // The same event again, and a second event for the same session: nothing more.
    assert_eq!(apply(&gw, &paid).await, "duplicate");
    assert_eq!(
        apply(&gw, &completed(&stripe, &session, "paid")).await,
        "duplicate"
    );
    assert_eq!(balance(&gw, "payer").await, d("20.00"));

    // Bad, stale and missing signatures change nothing.
    let other = buy(&gw, &key, "50").await;
    let other = completed(&stripe, &other, "paid");
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
    // An unpaid session is recorded, not credited; other event types are ignored.
    let unpaid = buy(&gw, &key, "30").await;
    assert_eq!(
        apply(&gw, &completed(&stripe, &unpaid, "unpaid")).await,
        "recorded"
    );
    let unknown = event("customer.created", json!({"id": "cus_1"}));
    assert_eq!(apply(&gw, &unknown).await, "ignored");
    assert_eq!(balance(&gw, "payer").await, d("20.00"));
    assert_eq!(stripe_entries(&gw, "payer").await.len(), 1);
}

/// Finding 2: a Payment Link (`?client_reference_id=`) or another product's session in the
/// same Stripe account used to buy credits.
#[tokio::test]
async fn a_session_this_switchboard_did_not_create_is_not_credited() {
    let stripe = FakeStripe::start().await;
    let gw = gateway(&stripe).await;
    gw.user("linker", "starter", "0").await;
    let (logs, _guard) = Logs::capture();

    let mut link = session_object(
        "cs_live_paymentlink01",
        Some("linker"),
        2000,
        "usd",
        "paid",
        Some("pi_link01"),
    );
    link["payment_link"] = json!("plink_1AbC");
    let link = event("checkout.session.completed", link);
    assert_eq!(apply(&gw, &link).await, "ignored");
    assert_eq!(apply(&gw, &link).await, "ignored");
    // Another product's session, naming the user in its metadata.
    let mut product = session_object(
        "cs_live_otherproduct",
        None,
        5000,
        "usd",
        "paid",
        Some("pi_other01"),
    );
    product["metadata"] = json!({"user_id": "linker"});
    assert_eq!(
        apply(&gw, &event("checkout.session.completed", product)).await,
        "ignored"
    );
    let async_paid = event(
        "checkout.session.async_payment_succeeded",
        session_object(
            "cs_live_asyncother",
            Some("linker"),
            900,
            "usd",
            "paid",
            None,
        ),
    );
    assert_eq!(apply(&gw, &async_paid).await, "ignored");

    assert_eq!(balance(&gw, "linker").await, Decimal::ZERO);
    assert!(stripe_entries(&gw, "linker").await.is_empty());
    // One WARN per delivery, naming the session.
    assert_eq!(logs.warnings_naming("cs_live_paymentlink01").len(), 2);
    assert_eq!(logs.warnings_naming("cs_live_otherproduct").len(), 1);
    assert_eq!(logs.warnings_naming("cs_live_asyncother").len(), 1);
}

/// Finding 2: a JPY session of ¥5,000 was credited as $50.00.
#[tokio::test]
async fn a_session_in_another_currency_is_not_credited() {
    let stripe = FakeStripe::start().await;
    let gw = gateway(&stripe).await;
    let key = gw.user("yen", "starter", "0").await;
    let (logs, _guard) = Logs::capture();

    // A session Switchboard recorded in USD, reported in JPY (as Adaptive Pricing would).
    let session = buy(&gw, &key, "50").await;
    let mut object = stripe.session_object(&session, "paid");
    object["currency"] = json!("jpy");
    object["amount_total"] = json!(5000);
    assert_eq!(
        apply(&gw, &event("checkout.session.completed", object)).await,
        "ignored"
    );
    // A JPY session Switchboard never created, naming the user.
    let foreign = event(
        "checkout.session.completed",
        session_object(
            "cs_live_jpy",
            Some("yen"),
            5000,
            "jpy",
            "paid",
            Some("pi_jpy"),
        ),
    );
    assert_eq!(apply(&gw, &foreign).await, "ignored");

    assert_eq!(balance(&gw, "yen").await, Decimal::ZERO);
    let warned = logs.warnings_naming(&session);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("jpy"), "{warned:?}");
    assert_eq!(logs.warnings_naming("cs_live_jpy").len(), 1);
    let status: String = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT status FROM stripe_checkout_sessions WHERE session_id = $1",
            &[&session],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "open", "an ignored event records nothing");
}

/// The credit is the recorded amount, or less when Stripe reports less: never more than
/// recorded (Stripe Tax adds tax to `amount_total`), never more than paid.
#[tokio::test]
async fn the_credit_is_never_more_than_recorded_nor_more_than_paid() {
    let stripe = FakeStripe::start().await;
    let gw = gateway(&stripe).await;
    let key = gw.user("taxed", "starter", "0").await;
    let (logs, _guard) = Logs::capture();

    let with_tax = buy(&gw, &key, "20").await;
    let mut object = stripe.session_object(&with_tax, "paid");
    object["amount_total"] = json!(2350);
    assert_eq!(
        apply(&gw, &event("checkout.session.completed", object)).await,
        "credited"
    );
    assert_eq!(balance(&gw, "taxed").await, d("20.00"));

    let discounted = buy(&gw, &key, "20").await;
    let mut object = stripe.session_object(&discounted, "paid");
    object["amount_total"] = json!(1500);
    assert_eq!(
        apply(&gw, &event("checkout.session.completed", object)).await,
        "credited"
    );
    assert_eq!(balance(&gw, "taxed").await, d("35.00"));
    assert_eq!(logs.warnings_naming(&with_tax).len(), 1);
    assert_eq!(logs.warnings_naming(&discounted).len(), 1);
}

/// Finding 2: a refund of an unknown payment fell back to `metadata.user_id` and debited
/// that account.
#[tokio::test]
async fn a_refund_of_a_payment_switchboard_did_not_record_debits_no_one() {
    let stripe = FakeStripe::start().await;
    let gw = gateway(&stripe).await;
    gw.user("victim", "starter", "10").await;

    let mut charge = refunded_charge("ch_elsewhere", "pi_elsewhere", 2000, 2000);
    charge["metadata"] = json!({"user_id": "victim"});
    assert_eq!(
        apply(&gw, &event("charge.refunded", charge.clone())).await,
        "recorded"
    );
    assert_eq!(
        apply(&gw, &event("charge.refunded", charge.clone())).await,
        "duplicate"
    );
    // A charge without a payment intent cannot be matched at all.
    charge["payment_intent"] = Value::Null;
    charge["id"] = json!("ch_nointent");
    assert_eq!(
        apply(&gw, &event("charge.refunded", charge)).await,
        "ignored"
    );
    // Nor does a dispute of that payment.
    let mut disputed = dispute(
        "dp_elsewhere",
        "ch_elsewhere",
        "pi_elsewhere",
        2000,
        "needs_response",
    );
    disputed["metadata"] = json!({"user_id": "victim"});
    assert_eq!(
        apply(&gw, &event("charge.dispute.created", disputed)).await,
        "recorded"
    );
    assert_eq!(balance(&gw, "victim").await, d("10"));
    assert!(stripe_entries(&gw, "victim").await.is_empty());
}

#[tokio::test]
async fn a_refund_debits_once_per_refunded_amount() {
    let stripe = FakeStripe::start().await;
    let gw = gateway(&stripe).await;
    let key = gw.user("refundee", "starter", "1").await;
    let session = buy(&gw, &key, "20").await;
    assert_eq!(
        apply(&gw, &completed(&stripe, &session, "paid")).await,
        "credited"
    );
    assert_eq!(balance(&gw, "refundee").await, d("21.00"));

    // A partial refund of $5, delivered twice.
    let partial = refund(&session, 2000, 500);
    assert_eq!(apply(&gw, &partial).await, "debited");
    assert_eq!(apply(&gw, &partial).await, "duplicate");
    assert_eq!(balance(&gw, "refundee").await, d("16.00"));
    // Then the rest: amount_refunded is cumulative, so $15 more; the older event arriving
    // late changes nothing.
    let full = refund(&session, 2000, 2000);
    assert_eq!(apply(&gw, &full).await, "debited");
    assert_eq!(apply(&gw, &full).await, "duplicate");
    assert_eq!(apply(&gw, &partial).await, "duplicate");
    assert_eq!(balance(&gw, "refundee").await, d("1.00"));
    let keys: Vec<String> = stripe_entries(&gw, "refundee")
        .await
        .into_iter()
        .map(|(_, _, key)| key)
        .collect();
    assert_eq!(
        keys,
        [
            format!("stripe:checkout:{session}"),
            "stripe:refund:ch_test_0001:5".to_string(),
            "stripe:refund:ch_test_0001:20".to_string(),
        ]
    );
}

/// Finding 3: `checkout.session.async_payment_succeeded` was ignored (bank debits were
/// charged, never credited).
#[tokio::test]
async fn a_delayed_payment_credits_once_when_it_succeeds() {
    let stripe = FakeStripe::start().await;
    let gw = gateway(&stripe).await;
    let key = gw.user("ach", "starter", "0").await;
    let session = buy(&gw, &key, "40").await;

    // Completed, unpaid: the payment intent not reported yet.
    let mut unpaid = stripe.session_object(&session, "unpaid");
    unpaid["payment_intent"] = Value::Null;
    let unpaid = event("checkout.session.completed", unpaid);
    assert_eq!(apply(&gw, &unpaid).await, "recorded");
    assert_eq!(apply(&gw, &unpaid).await, "duplicate");
    assert_eq!(balance(&gw, "ach").await, Decimal::ZERO);

    // The bank debit went through: credited once, the payment intent learnt now.
    let succeeded = event(
        "checkout.session.async_payment_succeeded",
        stripe.session_object(&session, "paid"),
    );
    assert_eq!(apply(&gw, &succeeded).await, "credited");
    assert_eq!(balance(&gw, "ach").await, d("40"));
    assert_eq!(apply(&gw, &succeeded).await, "duplicate");
    // The earlier event arriving again does not move the session back.
    assert_eq!(apply(&gw, &unpaid).await, "duplicate");
    assert_eq!(
        apply(&gw, &completed(&stripe, &session, "paid")).await,
        "duplicate"
    );
    assert_eq!(balance(&gw, "ach").await, d("40"));
    // Its refunds find it through the payment intent learnt from the later event.
    assert_eq!(apply(&gw, &refund(&session, 4000, 1000)).await, "debited");
    assert_eq!(balance(&gw, "ach").await, d("30"));
    assert_eq!(stripe_entries(&gw, "ach").await.len(), 2);
}

#[tokio::test]
async fn a_failed_delayed_payment_credits_nothing() {
    let stripe = FakeStripe::start().await;
    let gw = gateway(&stripe).await;
    let key = gw.user("bounced", "starter", "0").await;
    let session = buy(&gw, &key, "40").await;

    assert_eq!(
        apply(&gw, &completed(&stripe, &session, "unpaid")).await,
        "recorded"
    );
    let failed = event(
        "checkout.session.async_payment_failed",
        stripe.session_object(&session, "unpaid"),
    );
    assert_eq!(apply(&gw, &failed).await, "recorded");
    assert_eq!(apply(&gw, &failed).await, "duplicate");
    // A late `completed` does not revive it.
    assert_eq!(
        apply(&gw, &completed(&stripe, &session, "unpaid")).await,
        "duplicate"
    );
    assert_eq!(balance(&gw, "bounced").await, Decimal::ZERO);
    assert!(stripe_entries(&gw, "bounced").await.is_empty());
    let status: String = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT status FROM stripe_checkout_sessions WHERE session_id = $1",
            &[&session],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "failed");
}

fn hello() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 50})
}

/// Finding 3: disputes were ignored (top up, spend, charge back). A dispute debits once,
/// even below zero (the account is then refused until topped up); won gives back once;
/// lost changes nothing more.
#[tokio::test]
async fn a_dispute_debits_once_a_won_one_gives_back_once_a_lost_one_nothing_more() {
    let stripe = FakeStripe::start().await;
    let gw = gateway(&stripe).await;
    let key = gw.user("chargeback", "starter", "0").await;
    let first = buy(&gw, &key, "20").await;
    assert_eq!(
        apply(&gw, &completed(&stripe, &first, "paid")).await,
        "credited"
    );
    let (status, _, body) = gw.chat(&key, &hello(), &[]).await;
    assert_eq!(status, 200, "{body}");
    let spent = d("20") - balance(&gw, "chargeback").await;
    assert!(spent > Decimal::ZERO);

    // Charged back: the whole $20 taken, the balance below zero, the account refused.
    let created = dispute_event(
        "charge.dispute.created",
        "dp_1",
        &first,
        2000,
        "needs_response",
    );
    assert_eq!(apply(&gw, &created).await, "debited");
    assert_eq!(apply(&gw, &created).await, "duplicate");
    let updated = dispute_event(
        "charge.dispute.updated",
        "dp_1",
        &first,
        2000,
        "under_review",
    );
    assert_eq!(apply(&gw, &updated).await, "recorded");
    assert_eq!(balance(&gw, "chargeback").await, -spent);
    let (status, _, body) = gw.chat(&key, &hello(), &[]).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_credits");

    // Won: given back once, whatever is replayed (the created event too).
    let won = dispute_event("charge.dispute.closed", "dp_1", &first, 2000, "won");
    assert_eq!(apply(&gw, &won).await, "credited");
    assert_eq!(apply(&gw, &won).await, "duplicate");
    assert_eq!(apply(&gw, &created).await, "duplicate");
    assert_eq!(balance(&gw, "chargeback").await, d("20") - spent);
    let (status, _, body) = gw.chat(&key, &hello(), &[]).await;
    assert_eq!(status, 200, "{body}");
    let after_won = balance(&gw, "chargeback").await;

    // A second payment, disputed and lost: taken once, nothing more.
    let second = buy(&gw, &key, "10").await;
    apply(&gw, &completed(&stripe, &second, "paid")).await;
    let created = dispute_event(
        "charge.dispute.created",
        "dp_2",
        &second,
        1000,
        "needs_response",
    );
    assert_eq!(apply(&gw, &created).await, "debited");
    let lost = dispute_event("charge.dispute.closed", "dp_2", &second, 1000, "lost");
    assert_eq!(apply(&gw, &lost).await, "recorded");
    assert_eq!(apply(&gw, &lost).await, "duplicate");
    assert_eq!(apply(&gw, &created).await, "duplicate");
    assert_eq!(balance(&gw, "chargeback").await, after_won);

    // An inquiry (no funds withdrawn) takes nothing.
    let third = buy(&gw, &key, "10").await;
    apply(&gw, &completed(&stripe, &third, "paid")).await;
    let inquiry = dispute_event(
        "charge.dispute.created",
        "dp_3",
        &third,
        1000,
        "warning_needs_response",
    );
    assert_eq!(apply(&gw, &inquiry).await, "recorded");
    assert_eq!(balance(&gw, "chargeback").await, after_won + d("10"));

    let entries: Vec<(String, Decimal)> = stripe_entries(&gw, "chargeback")
        .await
        .into_iter()
        .filter(|(_, _, key)| key.starts_with("stripe:dispute:"))
        .map(|(_, amount, key)| (key, amount))
        .collect();
    assert_eq!(
        entries,
        [
            ("stripe:dispute:dp_1".to_string(), d("-20")),
            ("stripe:dispute:dp_1:won".to_string(), d("20")),
            ("stripe:dispute:dp_2".to_string(), d("-10")),
        ]
    );
}

/// Finding 3: a refund arriving before the credit was dropped and the later credit kept.
#[tokio::test]
async fn a_refund_or_dispute_before_the_credit_is_netted_when_the_credit_lands() {
    let stripe = FakeStripe::start().await;
    let gw = gateway(&stripe).await;
    let key = gw.user("early", "starter", "0").await;

    // Refunded in full before the credit: credit 20, refund 20 → net 0.
    let full = buy(&gw, &key, "20").await;
    assert_eq!(apply(&gw, &refund(&full, 2000, 2000)).await, "recorded");
    assert_eq!(balance(&gw, "early").await, Decimal::ZERO);
    assert_eq!(
        apply(&gw, &completed(&stripe, &full, "paid")).await,
        "credited"
    );
    assert_eq!(balance(&gw, "early").await, Decimal::ZERO);
    assert_eq!(apply(&gw, &refund(&full, 2000, 2000)).await, "duplicate");
    assert_eq!(
        apply(&gw, &completed(&stripe, &full, "paid")).await,
        "duplicate"
    );
    assert_eq!(balance(&gw, "early").await, Decimal::ZERO);

    // Two partial refunds (cumulative $5, then $8) before the credit: 20 − 8 = 12; the
    // rest refunded later: 0.
    let partial = buy(&gw, &key, "20").await;
    assert_eq!(apply(&gw, &refund(&partial, 2000, 500)).await, "recorded");
    assert_eq!(apply(&gw, &refund(&partial, 2000, 800)).await, "recorded");
    assert_eq!(
        apply(&gw, &completed(&stripe, &partial, "paid")).await,
        "credited"
    );
    assert_eq!(balance(&gw, "early").await, d("12"));
    assert_eq!(apply(&gw, &refund(&partial, 2000, 2000)).await, "debited");
    assert_eq!(balance(&gw, "early").await, Decimal::ZERO);

    // A dispute before the (delayed) credit, then won.
    let disputed = buy(&gw, &key, "20").await;
    let created = dispute_event(
        "charge.dispute.created",
        "dp_early",
        &disputed,
        2000,
        "needs_response",
    );
    assert_eq!(apply(&gw, &created).await, "recorded");
    assert_eq!(
        apply(&gw, &completed(&stripe, &disputed, "unpaid")).await,
        "recorded"
    );
    let succeeded = event(
        "checkout.session.async_payment_succeeded",
        stripe.session_object(&disputed, "paid"),
    );
    assert_eq!(apply(&gw, &succeeded).await, "credited");
    assert_eq!(balance(&gw, "early").await, Decimal::ZERO);
    let won = dispute_event("charge.dispute.closed", "dp_early", &disputed, 2000, "won");
    assert_eq!(apply(&gw, &won).await, "credited");
    assert_eq!(balance(&gw, "early").await, d("20"));

    // Won before the dispute's own creation event and before the credit: nothing is ever
    // taken.
    let late = buy(&gw, &key, "10").await;
    let won = dispute_event("charge.dispute.closed", "dp_late", &late, 1000, "won");
    assert_eq!(apply(&gw, &won).await, "recorded");
    let created = dispute_event(
        "charge.dispute.created",
        "dp_late",
        &late,
        1000,
        "needs_response",
    );
    assert_eq!(apply(&gw, &created).await, "duplicate");
    assert_eq!(
        apply(&gw, &completed(&stripe, &late, "paid")).await,
        "credited"
    );
    assert_eq!(balance(&gw, "early").await, d("30"));
    assert!(
        !stripe_entries(&gw, "early")
            .await
            .iter()
            .any(|(_, _, key)| key.contains("dp_late"))
    );
}

/// Stripe retries and delivers concurrently: every event of a payment delivered eight
/// times at once, in a shuffled order, moves money once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicate_deliveries_move_money_once() {
    let stripe = FakeStripe::start().await;
    let gw = gateway(&stripe).await;
    let key = gw.user("rush", "starter", "0").await;
    let delayed = buy(&gw, &key, "20").await;
    let card = buy(&gw, &key, "30").await;

    let mut events = Vec::new();
    for _ in 0..8 {
        events.push(completed(&stripe, &delayed, "unpaid"));
        events.push(event(
            "checkout.session.async_payment_succeeded",
            stripe.session_object(&delayed, "paid"),
        ));
        events.push(refund(&delayed, 2000, 500));
        events.push(dispute_event(
            "charge.dispute.created",
            "dp_rush",
            &delayed,
            1000,
            "needs_response",
        ));
        events.push(completed(&stripe, &card, "paid"));
    }
    events.shuffle(&mut rand::rng());
    let deliveries: Vec<_> = events
        .iter()
        .map(|e| tokio::spawn(gw.app.clone().oneshot(webhook(e))))
        .collect();
    for delivery in deliveries {
        let (status, body) = answer(delivery.await.unwrap().unwrap()).await;
        assert_eq!(status, 200, "{body}");
    }

    // 20 − 5 (refund) − 10 (dispute) + 30.
    assert_eq!(balance(&gw, "rush").await, d("35"));
    let mut kinds: Vec<String> = stripe_entries(&gw, "rush")
        .await
        .into_iter()
        .map(|(_, amount, key)| format!("{key} {amount}"))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "stripe:checkout:cs_test_0001 20".to_string(),
            "stripe:checkout:cs_test_0002 30".to_string(),
            "stripe:dispute:dp_rush -10".to_string(),
            "stripe:refund:ch_test_0001:5 -5".to_string(),
        ]
    );
}

/// How many of this test database's sessions wait on a lock.
async fn lock_waiters(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// A refund delivered while a delayed payment's credit is being written (after that
/// transaction read the payment's refunds, before it committed) is applied, not left
/// waiting for a credit that has in fact landed. The credit is held there by a lock on the
/// row of a dispute it is applying at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_racing_the_credit_is_not_lost() {
    let stripe = FakeStripe::start().await;
    let gw = gateway(&stripe).await;
    let key = gw.user("racer", "starter", "0").await;
    let session = buy(&gw, &key, "20").await;
    assert_eq!(
        apply(&gw, &completed(&stripe, &session, "unpaid")).await,
        "recorded"
    );
    let created = dispute_event(
        "charge.dispute.created",
        "dp_race",
        &session,
        500,
        "needs_response",
    );
    assert_eq!(apply(&gw, &created).await, "recorded");

    let mut holder = gw.db.connect().await;
    let hold = holder.transaction().await.unwrap();
    hold.execute(
        "SELECT 1 FROM stripe_disputes WHERE dispute_id = 'dp_race' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    let watcher = gw.db.connect().await;
    let succeeded = event(
        "checkout.session.async_payment_succeeded",
        stripe.session_object(&session, "paid"),
    );
    let credit = tokio::spawn(gw.app.clone().oneshot(webhook(&succeeded)));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while lock_waiters(&watcher).await < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the credit never reached the dispute"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The refund arrives now: it either waits for the credit's transaction or finishes.
    let refunded = tokio::spawn(
        gw.app
            .clone()
            .oneshot(webhook(&refund(&session, 2000, 800))),
    );
    while !refunded.is_finished() && lock_waiters(&watcher).await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refund neither waited nor finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    hold.commit().await.unwrap();
    for delivery in [credit, refunded] {
        let (status, body) = answer(delivery.await.unwrap().unwrap()).await;
        assert_eq!(status, 200, "{body}");
    }
    // 20 − 5 (dispute) − 8 (refund).
    assert_eq!(balance(&gw, "racer").await, d("7"));
    assert_eq!(stripe_entries(&gw, "racer").await.len(), 3);
}

/// Payments credited before the sessions table existed (migration 0021) stay refundable,
/// and a charge's earlier refunds are not taken twice.
#[tokio::test]
async fn the_migration_keeps_payments_credited_before_it() {
    use switchboard_core::billing::stripe::{EventOutcome, handle_event};
    use switchboard_core::db::migrate::MIGRATIONS;
    use switchboard_tests::test_db::TestDb;

    let db = TestDb::empty().await;
    let client = db.connect().await;
    for migration in MIGRATIONS.iter().filter(|m| m.version < 21) {
        client.batch_execute(migration.sql).await.unwrap();
    }
    // What the old code wrote: a credited session, and a $5 refund of its charge.
    client
        .batch_execute(
            "INSERT INTO accounts (user_id) VALUES ('old');
             SELECT sb_credit('old', 20, 'topup', 'stripe:checkout:cs_old', NULL, 'stripe');
             SELECT sb_credit('old', -5, 'adjustment', 'stripe:refund:ch_old:5', NULL, 'stripe');
             INSERT INTO stripe_payments (session_id, payment_intent, user_id, amount_usd)
             VALUES ('cs_old', 'pi_old', 'old', 20);",
        )
        .await
        .unwrap();
    let latest = MIGRATIONS.iter().find(|m| m.version == 21).unwrap();
    client.batch_execute(latest.sql).await.unwrap();

    let deliver = |event: Value| {
        let pool = db.pool().clone();
        async move { handle_event(&pool, &event).await.unwrap() }
    };
    // Replays of the old session change nothing; the refund grows to $8: $3 more.
    let paid = event(
        "checkout.session.completed",
        session_object("cs_old", Some("old"), 2000, "usd", "paid", Some("pi_old")),
    );
    assert_eq!(deliver(paid).await, EventOutcome::Duplicate);
    let refunded = event(
        "charge.refunded",
        refunded_charge("ch_old", "pi_old", 2000, 800),
    );
    assert_eq!(deliver(refunded).await, EventOutcome::Debited);
    let balance: Decimal = client
        .query_one(
            "SELECT balance_usd FROM accounts WHERE user_id = 'old'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let sum: Decimal = client
        .query_one(
            "SELECT sum(amount_usd) FROM ledger_entries WHERE user_id = 'old'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!((balance, sum), (d("12"), d("12")));
}
