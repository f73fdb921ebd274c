//! A fake Stripe API: `POST /v1/checkout/sessions` (form-encoded, `Authorization: Bearer`)
//! answered as Stripe does, recording each call's form fields, with injectable failures
//! (a queue of statuses to answer next). The objects Stripe puts in webhook events
//! (Checkout Sessions, refunded charges, disputes) are built here in Stripe's shape, a
//! created session's from what was sent for it; the tests sign the events exactly as Stripe
//! signs them (`switchboard_core::billing::stripe::sign`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The secret key the fake accepts.
pub const STRIPE_TEST_KEY: &str = "sk_test_fake_0123456789";

#[derive(Default)]
struct Inner {
    sessions: Vec<Vec<(String, String)>>,
    statuses: VecDeque<u16>,
}

pub struct FakeStripe {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    _shutdown: oneshot::Sender<()>,
}

impl FakeStripe {
    pub async fn start() -> FakeStripe {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v1/checkout/sessions", post(create_session))
            .with_state(Arc::clone(&inner));
        let (addr, shutdown) = crate::spawn_server("fake Stripe", app).await;
        FakeStripe {
            addr,
            inner,
            _shutdown: shutdown,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The form fields of every session created, in order.
    pub fn sessions(&self) -> Vec<Vec<(String, String)>> {
        self.lock().sessions.clone()
    }

    /// The next calls are answered with these statuses (then normally).
    pub fn fail_next(&self, statuses: &[u16]) {
        self.lock().statuses.extend(statuses.iter().copied());
    }

    /// The Checkout Session object Stripe puts in events about `id`, a session this fake
    /// created: `amount_total` and `currency` from its line item, `client_reference_id`
    /// and `metadata` as sent, the given `payment_status`, and its payment intent
    /// ([`payment_intent_for`]).
    pub fn session_object(&self, id: &str, payment_status: &str) -> Value {
        let sessions = self.sessions();
        let fields = id
            .strip_prefix("cs_test_")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| sessions.get(n.wrapping_sub(1)))
            .unwrap_or_else(|| panic!("the fake Stripe created no session {id}"));
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let number = |name: &str| field(name).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        let total =
            number("line_items[0][price_data][unit_amount]") * number("line_items[0][quantity]");
        let mut object = session_object(
            id,
            field("client_reference_id"),
            total,
            field("line_items[0][price_data][currency]").unwrap_or("usd"),
            payment_status,
            Some(&payment_intent_for(id)),
        );
        if let Some(user) = field("metadata[user_id]") {
            object["metadata"] = json!({"user_id": user});
        }
        object
    }
}

/// The payment intent of a session's payment in these tests.
pub fn payment_intent_for(session_id: &str) -> String {
    format!("pi_{}", session_id.trim_start_matches("cs_"))
}

/// A Checkout Session object as Stripe sends it in `checkout.session.*` events (a Payment
/// Link's sessions look the same, with `payment_link` set and `client_reference_id` taken
/// from the link's URL).
pub fn session_object(
    id: &str,
    client_reference_id: Option<&str>,
    amount_total: i64,
    currency: &str,
    payment_status: &str,
    payment_intent: Option<&str>,
) -> Value {
    json!({
        "id": id, "object": "checkout.session", "mode": "payment", "status": "complete",
        "livemode": false, "payment_status": payment_status,
        "amount_subtotal": amount_total, "amount_total": amount_total, "currency": currency,
        "client_reference_id": client_reference_id, "metadata": {},
        "payment_intent": payment_intent, "payment_link": null,
    })
}

/// A charge as `charge.refunded` carries it: `amount_refunded` is cumulative.
pub fn refunded_charge(
    charge_id: &str,
    payment_intent: &str,
    amount: i64,
    amount_refunded: i64,
) -> Value {
    json!({
        "id": charge_id, "object": "charge", "amount": amount, "amount_captured": amount,
        "amount_refunded": amount_refunded, "refunded": amount_refunded >= amount,
        "currency": "usd", "paid": true, "status": "succeeded",
        "payment_intent": payment_intent, "metadata": {},
    })
}

/// A dispute as `charge.dispute.*` events carry it (`status`: `needs_response`,
/// `under_review`, `won`, `lost`, or an inquiry's `warning_*`).
pub fn dispute(
    dispute_id: &str,
    charge_id: &str,
    payment_intent: &str,
    amount: i64,
    status: &str,
) -> Value {
    json!({
        "id": dispute_id, "object": "dispute", "amount": amount, "charge": charge_id,
        "currency": "usd", "payment_intent": payment_intent, "reason": "fraudulent",
        "status": status, "is_charge_refundable": false, "livemode": false, "metadata": {},
    })
}

/// An event of `event_type` about `object`, with a fresh `evt_` id, as Stripe sends it.
pub fn event(event_type: &str, object: Value) -> Value {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    json!({
        "id": format!("evt_test_{:06}", NEXT.fetch_add(1, Ordering::Relaxed)),
        "object": "event", "api_version": "2025-01-27.acacia", "created": created,
        "livemode": false, "pending_webhooks": 1, "type": event_type,
        "data": {"object": object},
    })
}

async fn create_session(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(format!("Bearer {STRIPE_TEST_KEY}").as_str())
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}})),
        )
            .into_response();
    }
    if let Some(status) = inner.statuses.pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (
            status,
            Json(json!({"error": {"type": "api_error", "message": "scripted failure"}})),
        )
            .into_response();
    }
    let fields: Vec<(String, String)> = form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    inner.sessions.push(fields);
    let id = format!("cs_test_{:04}", inner.sessions.len());
    (
        StatusCode::OK,
        Json(json!({
            "id": id, "object": "checkout.session",
            "url": format!("https://checkout.stripe.com/c/pay/{id}"),
        })),
    )
        .into_response()
}
