//! A fake Lago: `POST /api/v1/events/batch` as Lago answers it, recording every call,
//! with injectable failures (a queue of statuses to answer next, a delay per call,
//! transaction ids whose events Lago refuses with 422, and answers lost after Lago stored
//! the batch).
//!
//! Like Lago's `Events::CreateBatchService` (lago-api, Postgres event store), it stores a
//! batch all or nothing: an invalid event, or a `transaction_id` it already holds (or
//! that appears twice in the batch), stores none of the batch and answers
//! `422 {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
//! "error_details": {"<index>": {...}}, "error_extra": {}}`, a duplicate's details being
//! `{"transaction_id": ["value_already_exist"]}`. Invalid events are reported before
//! duplicates (Lago validates, then inserts). [`FakeLago::events`] holds each accepted
//! event once; [`FakeLago::duplicates`] counts deliveries of an id it already held.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};
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
    /// Calls whose batch is stored but answered with this status (the answer lost).
    lost_answers: VecDeque<u16>,
    refused: HashSet<String>,
    delay: Duration,
    /// Calls to any other path (answered 404, as Lago answers an unknown route).
    other_calls: Vec<String>,
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
            .fallback(unknown_route)
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

    /// The next calls are answered with these statuses, in order (then normally), without
    /// storing anything. 401, 403 and 404 come with Lago's bodies for them.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.lock().statuses.extend(statuses.iter().copied());
    }

    /// The next calls are handled normally (a valid batch is stored) but answered with
    /// these statuses, as when a proxy or the network loses Lago's answer.
    pub fn lose_next_answers(&self, statuses: &[u16]) {
        self.lock().lost_answers.extend(statuses.iter().copied());
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

    /// Every call's events (answered or not), in arrival order.
    pub fn calls(&self) -> Vec<Vec<Value>> {
        self.lock().calls.clone()
    }

    /// How many batch calls arrived (answered or not), with their sizes.
    pub fn call_sizes(&self) -> Vec<usize> {
        self.lock().calls.iter().map(Vec::len).collect()
    }

    /// The paths of calls to anything but the batch endpoint (a wrong base URL).
    pub fn other_calls(&self) -> Vec<String> {
        self.lock().other_calls.clone()
    }

    /// Deliveries of a transaction id Lago had already accepted.
    pub fn duplicates(&self) -> usize {
        self.lock().duplicates
    }
}

/// Lago's answer for a status the test scripted.
fn scripted(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match status {
        401 => json!({"status": 401, "error": "Unauthorized"}),
        403 => json!({"status": 403, "error": "Forbidden", "code": "feature_unavailable"}),
        404 => json!({"status": 404, "error": "Not Found", "code": "route_not_found"}),
        _ => json!({"status": status, "error": "scripted failure"}),
    };
    (code, Json(body)).into_response()
}

async fn unknown_route(State(inner): State<Arc<Mutex<Inner>>>, uri: Uri) -> Response {
    let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
    inner.other_calls.push(uri.path().to_string());
    (
        StatusCode::NOT_FOUND,
        Json(json!({"status": 404, "error": "Not Found"})),
    )
        .into_response()
}

fn unprocessable(details: Map<String, Value>) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({
            "status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
            "error_details": details, "error_extra": {}
        })),
    )
        .into_response()
}

async fn batch(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let events: Vec<Value> = body["events"].as_array().cloned().unwrap_or_default();
    let (delay, status) = {
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
        return scripted(401);
    }
    if let Some(status) = status {
        return scripted(status);
    }
    let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
    let id_of = |event: &Value| event["transaction_id"].as_str().map(str::to_string);

    // Validation first: refused events (a code Lago does not know), missing ids.
    let invalid: Map<String, Value> = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match id_of(e) {
            None => Some((
                i.to_string(),
                json!({"transaction_id": ["value_is_mandatory"]}),
            )),
            Some(id) if inner.refused.contains(&id) => {
                Some((i.to_string(), json!({"code": ["metric_not_found"]})))
            }
            Some(_) => None,
        })
        .collect();
    if !invalid.is_empty() {
        return unprocessable(invalid);
    }

    // Then the insert: a transaction id already held, or twice in the batch.
    let mut in_batch = HashSet::new();
    let mut duplicate = Map::new();
    for (i, event) in events.iter().enumerate() {
        let Some(id) = id_of(event) else {
            continue;
        };
        if inner.seen.contains(&id) || !in_batch.insert(id) {
            duplicate.insert(
                i.to_string(),
                json!({"transaction_id": ["value_already_exist"]}),
            );
        }
    }
    if !duplicate.is_empty() {
        inner.duplicates += duplicate.len();
        return unprocessable(duplicate);
    }
    for event in &events {
        if let Some(id) = id_of(event) {
            inner.seen.insert(id);
            inner.events.push(event.clone());
        }
    }
    if let Some(status) = inner.lost_answers.pop_front() {
        return scripted(status);
    }
    (StatusCode::OK, Json(json!({"events": events}))).into_response()
}
