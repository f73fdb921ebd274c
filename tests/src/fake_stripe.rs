//! A fake Stripe API: `POST /v1/checkout/sessions` (form-encoded, `Authorization: Bearer`)
//! answered as Stripe does, recording each call's form fields, with injectable failures
//! (a queue of statuses to answer next). Webhook events are built and signed by the tests
//! themselves, exactly as Stripe signs them (`switchboard_core::billing::stripe::sign`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
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
