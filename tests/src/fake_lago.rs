//! A fake Lago: `POST /api/v1/events/batch` as Lago answers it, recording every call,
//! with injectable failures (a queue of statuses to answer next, a delay per call, and
//! transaction ids whose events Lago refuses with 422). Lago deduplicates events on
//! `transaction_id`; so does this fake ([`FakeLago::events`] holds each once), and it
//! counts every delivery so that a test can see a duplicate send.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The API key the fake accepts (`Authorization: Bearer …`).
pub const LAGO_TEST_KEY: &str = "lago-test-key-0123456789";

#[derive(Default)]
struct Inner {
    /// Every call's events, in arrival order.
    calls: Vec<Vec<Value>>,
    /// Accepted events, each transaction id once.
    events: Vec<Value>,
    seen: HashSet<String>,
    /// Deliveries of an already accepted transaction id.
    duplicates: usize,
    statuses: VecDeque<u16>,
    refused: HashSet<String>,
    delay: Duration,
}

pub struct FakeLago {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    _shutdown: oneshot::Sender<()>,
}

impl FakeLago {
    pub async fn start() -> FakeLago {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/api/v1/events/batch", post(batch))
            .with_state(Arc::clone(&inner));
        let (addr, shutdown) = crate::spawn_server("fake Lago", app).await;
        FakeLago {
            addr,
            inner,
            _shutdown: shutdown,
        }
    }

    /// The base URL to configure (`SWITCHBOARD_LAGO_API_URL`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next calls are answered with these statuses, in order (then normally).
    pub fn fail_next(&self, statuses: &[u16]) {
        self.lock().statuses.extend(statuses.iter().copied());
    }

    /// Every call waits this long before answering.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// A batch holding an event with this transaction id is refused with 422.
    pub fn refuse(&self, transaction_id: &str) {
        self.lock().refused.insert(transaction_id.to_string());
    }

    pub fn accept_all(&self) {
        self.lock().refused.clear();
    }

    /// The accepted events, each transaction id once, in order of acceptance.
    pub fn events(&self) -> Vec<Value> {
        self.lock().events.clone()
    }

    /// How many batch calls arrived (answered or not), with their sizes.
    pub fn call_sizes(&self) -> Vec<usize> {
        self.lock().calls.iter().map(Vec::len).collect()
    }

    /// Deliveries of a transaction id Lago had already accepted.
    pub fn duplicates(&self) -> usize {
        self.lock().duplicates
    }
}

async fn batch(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let events: Vec<Value> = body["events"].as_array().cloned().unwrap_or_default();
    let (delay, scripted) = {
        let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.calls.push(events.clone());
        (inner.delay, inner.statuses.pop_front())
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(format!("Bearer {LAGO_TEST_KEY}").as_str())
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"status": 401, "error": "Unauthorized"})),
        )
            .into_response();
    }
    if let Some(status) = scripted {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (
            status,
            Json(json!({"status": status.as_u16(), "error": "scripted failure"})),
        )
            .into_response();
    }
    let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
    let refused: Vec<(usize, String)> = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let id = e["transaction_id"].as_str()?.to_string();
            inner.refused.contains(&id).then_some((i, id))
        })
        .collect();
    if !refused.is_empty() {
        let details: serde_json::Map<String, Value> = refused
            .iter()
            .map(|(i, _)| (i.to_string(), json!({"code": ["metric_not_found"]})))
            .collect();
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                "error_details": details
            })),
        )
            .into_response();
    }
    for event in &events {
        let Some(id) = event["transaction_id"].as_str() else {
            continue;
        };
        if inner.seen.insert(id.to_string()) {
            inner.events.push(event.clone());
        } else {
            inner.duplicates += 1;
        }
    }
    (StatusCode::OK, Json(json!({"events": events}))).into_response()
}
