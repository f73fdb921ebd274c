//! The OTLP/HTTP exporter (JSON encoding, `POST {endpoint}/v1/traces`).
//!
//! - `serve` ([`ExportMode::Batched`]): finished traces go into a bounded queue and a
//!   background task sends them in batches (every `OTEL_BSP_SCHEDULE_DELAY` ms, default
//!   1000, or 512 spans), off the request path; when the queue is full (a collector that
//!   is down), traces are dropped and counted, never waited for.
//! - Lambda ([`ExportMode::PerRequest`]): nothing may run after the response, so each
//!   request's spans are sent before its answer's last byte.
//!
//! Settings are the OpenTelemetry SDK's own: `OTEL_EXPORTER_OTLP_ENDPOINT` (the collector's
//! base URL; `/v1/traces` is appended), `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full
//! URL, wins), `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,…`, for a collector's credentials:
//! kept as secrets), `OTEL_EXPORTER_OTLP_TIMEOUT` (ms, default 2000), `OTEL_SERVICE_NAME`
//! (default `switchboard`), `OTEL_SDK_DISABLED=true` (off).

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{AttrValue, SpanRecord, hex};
use crate::secret::Secret;

const QUEUE_TRACES: usize = 2048;
const BATCH_SPANS: usize = 512;

/// Where and how traces are sent.
#[derive(Clone)]
pub struct OtlpSettings {
    /// The full traces URL.
    pub endpoint: String,
    pub service_name: String,
    pub headers: Vec<(String, Secret)>,
    pub timeout: Duration,
    pub batch_delay: Duration,
}

impl std::fmt::Debug for OtlpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpSettings")
            .field("endpoint", &self.endpoint)
            .field("service_name", &self.service_name)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl OtlpSettings {
    /// The settings from `lookup` (the environment); `Ok(None)` when tracing is off.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let endpoint = match (
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(full), _) => full,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        let url = reqwest::Url::parse(&endpoint)
            .map_err(|_| "OTEL_EXPORTER_OTLP_ENDPOINT is not a URL".to_string())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s) URL".into());
        }
        let mut headers = Vec::new();
        for pair in get("OTEL_EXPORTER_OTLP_HEADERS")
            .unwrap_or_default()
            .split(',')
        {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair
                .split_once('=')
                .ok_or("OTEL_EXPORTER_OTLP_HEADERS must be key=value pairs separated by commas")?;
            let key = key.trim().to_ascii_lowercase();
            if reqwest::header::HeaderName::from_bytes(key.as_bytes()).is_err() {
                return Err("OTEL_EXPORTER_OTLP_HEADERS names an invalid header".into());
            }
            headers.push((key, Secret::new(value.trim())));
        }
        let millis = |name: &str, default: u64| -> Result<Duration, String> {
            match get(name) {
                None => Ok(Duration::from_millis(default)),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| (1..=600_000).contains(ms))
                    .map(Duration::from_millis)
                    .ok_or(format!("{name} must be milliseconds between 1 and 600000")),
            }
        };
        Ok(Some(OtlpSettings {
            endpoint,
            service_name: get("OTEL_SERVICE_NAME").unwrap_or_else(|| "switchboard".into()),
            headers,
            timeout: millis("OTEL_EXPORTER_OTLP_TIMEOUT", 2000)?,
            batch_delay: millis("OTEL_BSP_SCHEDULE_DELAY", 1000)?,
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportMode {
    /// A background task sends batches (`serve`).
    Batched,
    /// Each request's spans are sent before its answer ends (Lambda).
    PerRequest,
}

struct Exporter {
    settings: OtlpSettings,
    http: reqwest::Client,
    queue: Option<mpsc::Sender<Vec<SpanRecord>>>,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Installs the exporter (once) when the environment asks for it; for `Batched`, call it
/// inside the Tokio runtime. A malformed setting is logged and leaves tracing off.
pub fn install(mode: ExportMode) {
    match OtlpSettings::from_lookup(|name| std::env::var(name).ok()) {
        Ok(Some(settings)) => install_with(settings, mode),
        Ok(None) => {}
        Err(reason) => tracing::warn!(%reason, "OpenTelemetry tracing stays off"),
    }
}

/// Installs the exporter with explicit settings (once; later calls keep the first).
pub fn install_with(settings: OtlpSettings, mode: ExportMode) {
    let _ = EXPORTER.get_or_init(|| {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .unwrap_or_default();
        let queue = (mode == ExportMode::Batched).then(|| {
            let (sender, receiver) = mpsc::channel(QUEUE_TRACES);
            tokio::spawn(run_batches(receiver, settings.clone(), http.clone()));
            sender
        });
        tracing::info!(endpoint = %settings.endpoint, ?mode, "OpenTelemetry traces exported over OTLP/HTTP");
        Exporter {
            settings,
            http,
            queue,
        }
    });
}

pub fn installed() -> bool {
    EXPORTER.get().is_some()
}

/// Hands a finished trace to the exporter. Batched: queued, and `None` is returned.
/// Per request: the returned future sends it (await it before the answer ends).
pub fn submit(spans: Vec<SpanRecord>) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
    let exporter = EXPORTER.get()?;
    match &exporter.queue {
        Some(queue) => {
            if queue.try_send(spans).is_err() {
                ::metrics::counter!(crate::metrics::TRACE_EXPORTS_DROPPED).increment(1);
            }
            None
        }
        None => Some(Box::pin(send(&exporter.http, &exporter.settings, spans))),
    }
}

async fn run_batches(
    mut receiver: mpsc::Receiver<Vec<SpanRecord>>,
    settings: OtlpSettings,
    http: reqwest::Client,
) {
    while let Some(first) = receiver.recv().await {
        let mut batch = first;
        let deadline = tokio::time::Instant::now() + settings.batch_delay;
        while batch.len() < BATCH_SPANS {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(more)) => batch.extend(more),
                Ok(None) | Err(_) => break,
            }
        }
        send(&http, &settings, batch).await;
    }
}

async fn send(http: &reqwest::Client, settings: &OtlpSettings, spans: Vec<SpanRecord>) {
    if spans.is_empty() {
        return;
    }
    let count = spans.len();
    let body = encode(&settings.service_name, &spans);
    let mut request = http.post(&settings.endpoint).json(&body);
    for (name, value) in &settings.headers {
        let Ok(mut header) = reqwest::header::HeaderValue::from_str(value.expose()) else {
            continue;
        };
        header.set_sensitive(true);
        request = request.header(name.as_str(), header);
    }
    match request.send().await {
        Ok(response) if response.status().is_success() => {}
        Ok(response) => {
            ::metrics::counter!(crate::metrics::TRACE_EXPORTS_FAILED).increment(1);
            tracing::warn!(
                status = response.status().as_u16(),
                spans = count,
                "the OTLP collector refused traces"
            );
        }
        Err(error) => {
            ::metrics::counter!(crate::metrics::TRACE_EXPORTS_FAILED).increment(1);
            tracing::warn!(error = %crate::report::error_chain(&error), spans = count, "could not send traces to the OTLP collector");
        }
    }
}

fn attribute(key: &str, value: &AttrValue) -> Value {
    let value = match value {
        AttrValue::Str(s) => json!({"stringValue": s}),
        // OTLP/JSON writes 64-bit integers as strings.
        AttrValue::Int(i) => json!({"intValue": i.to_string()}),
        AttrValue::Bool(b) => json!({"boolValue": b}),
    };
    json!({"key": key, "value": value})
}

/// The OTLP/JSON `ExportTraceServiceRequest` for `spans`.
pub(crate) fn encode(service_name: &str, spans: &[SpanRecord]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|span| {
            let mut value = json!({
                "traceId": hex(&span.trace_id),
                "spanId": hex(&span.span_id),
                "name": span.name,
                "kind": span.kind as i32,
                "startTimeUnixNano": span.start_unix_nanos.to_string(),
                "endTimeUnixNano": span.end_unix_nanos.to_string(),
                "attributes": span.attributes.iter().map(|(k, v)| attribute(k, v)).collect::<Vec<_>>(),
                "status": match &span.error {
                    None => json!({"code": 1}),
                    Some(message) => json!({"code": 2, "message": message}),
                },
            });
            if let Some(parent) = span.parent_span_id {
                value["parentSpanId"] = json!(hex(&parent));
            }
            value
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": {"attributes": [
                attribute("service.name", &AttrValue::Str(service_name.to_string())),
                attribute("service.version", &AttrValue::Str(env!("CARGO_PKG_VERSION").to_string())),
            ]},
            "scopeSpans": [{
                "scope": {"name": "switchboard", "version": env!("CARGO_PKG_VERSION")},
                "spans": spans,
            }],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<OtlpSettings>, String> {
        OtlpSettings::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn settings_follow_the_sdk_variables_and_hide_header_values() {
        assert!(settings(&[]).unwrap().is_none());
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Bearer sekrit-token, x-team=llm",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(s.service_name, "switchboard");
        assert_eq!(s.headers.len(), 2);
        assert!(!format!("{s:?}").contains("sekrit"));
        let full = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4318/custom"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(full.endpoint, "http://b:4318/custom");
        assert!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x")]).is_err());
        assert!(
            settings(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")
            ])
            .is_err()
        );
        assert!(
            settings(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"),
                ("OTEL_SDK_DISABLED", "true")
            ])
            .unwrap()
            .is_none()
        );
    }
}
