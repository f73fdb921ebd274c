//! An OpenTelemetry collector's OTLP/HTTP traces endpoint (`POST /v1/traces`, JSON
//! encoding): records every span it receives, flattened, with its resource's service name.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use tokio::sync::oneshot;

/// One received span: OTLP/JSON's fields, with attributes as a flat map of their values.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service_name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: i64,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// `stringValue` as a string, `intValue` as its string, `boolValue` as `true`/`false`.
    pub attributes: std::collections::BTreeMap<String, String>,
    /// OTLP's status code: 1 ok, 2 error.
    pub status_code: i64,
}

#[derive(Default)]
struct Inner {
    spans: Vec<ReceivedSpan>,
    posts: usize,
    /// The headers of the last post (the collector credentials test).
    last_headers: Option<HeaderMap>,
}

pub struct FakeOtlp {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    _shutdown: oneshot::Sender<()>,
}

impl FakeOtlp {
    pub async fn start() -> FakeOtlp {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(Arc::clone(&inner));
        let (addr, shutdown) = crate::spawn_server("fake OTLP collector", app).await;
        FakeOtlp {
            addr,
            inner,
            _shutdown: shutdown,
        }
    }

    /// The base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.lock().spans.clone()
    }

    pub fn posts(&self) -> usize {
        self.lock().posts
    }

    pub fn last_headers(&self) -> Option<HeaderMap> {
        self.lock().last_headers.clone()
    }

    /// Waits (up to `timeout`) until `ready` holds for the spans received.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        ready: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let started = Instant::now();
        loop {
            let spans = self.spans();
            if ready(&spans) || started.elapsed() > timeout {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn attribute_value(value: &Value) -> String {
    for key in ["stringValue", "intValue", "boolValue", "doubleValue"] {
        if let Some(v) = value.get(key) {
            return text(v);
        }
    }
    value.to_string()
}

fn nanos(value: &Value) -> u64 {
    text(value).parse().unwrap_or(0)
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut received = Vec::new();
    for resource in request["resourceSpans"].as_array().into_iter().flatten() {
        let service_name = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .map(|a| attribute_value(&a["value"]))
            .unwrap_or_default();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                received.push(ReceivedSpan {
                    service_name: service_name.clone(),
                    trace_id: text(&span["traceId"]),
                    span_id: text(&span["spanId"]),
                    parent_span_id: span.get("parentSpanId").map(text).filter(|p| !p.is_empty()),
                    name: text(&span["name"]),
                    kind: span["kind"].as_i64().unwrap_or(0),
                    start_unix_nanos: nanos(&span["startTimeUnixNano"]),
                    end_unix_nanos: nanos(&span["endTimeUnixNano"]),
                    attributes: span["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| (text(&a["key"]), attribute_value(&a["value"])))
                        .collect(),
                    status_code: span["status"]["code"].as_i64().unwrap_or(0),
                });
            }
        }
    }
    let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
    inner.posts += 1;
    inner.spans.extend(received);
    inner.last_headers = Some(headers);
    StatusCode::OK
}
