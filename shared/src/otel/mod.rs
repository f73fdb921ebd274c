//! OpenTelemetry traces (issue 20), exported over OTLP/HTTP (JSON encoding) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; off, and
//! free, otherwise: no [`Trace`] is made and every call below is skipped.
//!
//! One trace per request: a SERVER span for the request (continuing the caller's W3C
//! `traceparent` when it sent one), with INTERNAL child spans for the admission and the
//! settlement and one CLIENT span per upstream attempt, whose `traceparent` the provider
//! call carries. Attributes follow the OpenTelemetry GenAI semantic conventions
//! (`gen_ai.operation.name`, `gen_ai.request.model`, `gen_ai.response.model`,
//! `gen_ai.provider.name`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`).
//! No attribute carries a key, a user id or a prompt.
//!
//! Spans are collected with the request and handed to the exporter when its answer ends:
//! `serve` batches them in a background task; a Lambda function sends them before the
//! answer's last byte (see [`export`]).

mod export;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

pub use export::{ExportMode, OtlpSettings, install, install_with, installed, submit};

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl From<&str> for AttrValue {
    fn from(value: &str) -> Self {
        // Values from requests are bounded.
        AttrValue::Str(value.chars().take(256).collect())
    }
}

impl From<String> for AttrValue {
    fn from(value: String) -> Self {
        AttrValue::from(value.as_str())
    }
}

impl From<i64> for AttrValue {
    fn from(value: i64) -> Self {
        AttrValue::Int(value)
    }
}

impl From<u64> for AttrValue {
    fn from(value: u64) -> Self {
        AttrValue::Int(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

impl From<bool> for AttrValue {
    fn from(value: bool) -> Self {
        AttrValue::Bool(value)
    }
}

/// OTLP's span kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Internal = 1,
    Server = 2,
    Client = 3,
}

/// A finished span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: String,
    pub kind: SpanKind,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// `Some(message)`: the span ended in error.
    pub error: Option<String>,
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn new_span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A W3C `traceparent` (`00-<trace id>-<parent span id>-<flags>`): its trace and span ids,
/// or `None` when malformed or all zeros.
pub fn parse_traceparent(value: &str) -> Option<([u8; 16], [u8; 8])> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || flags.len() != 2 {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace = unhex::<16>(trace).filter(|t| *t != [0; 16])?;
    let span = unhex::<8>(span).filter(|s| *s != [0; 8])?;
    unhex::<1>(flags)?;
    Some((trace, span))
}

/// One request's trace: its ids and the spans finished so far.
#[derive(Debug, Clone)]
pub struct Trace(Arc<TraceInner>);

#[derive(Debug)]
struct TraceInner {
    trace_id: [u8; 16],
    /// The request's own (SERVER) span.
    root_span_id: [u8; 8],
    /// The caller's span, from its `traceparent`.
    remote_parent: Option<[u8; 8]>,
    start_unix_nanos: u64,
    spans: Mutex<Vec<SpanRecord>>,
    /// Attributes for the request's span, added as the run learns them.
    root_attributes: Mutex<Vec<(&'static str, AttrValue)>>,
}

impl Trace {
    /// A trace for a new request, continuing the caller's `traceparent` when valid. `None`
    /// when tracing is off.
    pub fn start(traceparent: Option<&str>) -> Option<Trace> {
        if !installed() {
            return None;
        }
        let remote = traceparent.and_then(parse_traceparent);
        Some(Trace(Arc::new(TraceInner {
            trace_id: remote.map_or_else(new_trace_id, |(trace, _)| trace),
            root_span_id: new_span_id(),
            remote_parent: remote.map(|(_, span)| span),
            start_unix_nanos: now_nanos(),
            spans: Mutex::new(Vec::new()),
            root_attributes: Mutex::new(Vec::new()),
        })))
    }

    /// Starts a child span of the request's span.
    pub fn child(&self, name: impl Into<String>, kind: SpanKind) -> ActiveSpan {
        ActiveSpan {
            trace: self.clone(),
            span_id: new_span_id(),
            name: name.into(),
            kind,
            start_unix_nanos: now_nanos(),
            attributes: Vec::new(),
            error: None,
        }
    }

    /// Adds (or replaces) an attribute of the request's span.
    pub fn set_root(&self, key: &'static str, value: impl Into<AttrValue>) {
        let mut attributes = self
            .0
            .root_attributes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let value = value.into();
        match attributes.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => attributes.push((key, value)),
        }
    }

    /// Ends the request's span and returns every span of the trace (taken: a second call
    /// returns the request's span alone).
    pub fn finish(&self, name: String, error: Option<String>) -> Vec<SpanRecord> {
        let inner = &self.0;
        let mut spans =
            std::mem::take(&mut *inner.spans.lock().unwrap_or_else(PoisonError::into_inner));
        let attributes = inner
            .root_attributes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        spans.push(SpanRecord {
            trace_id: inner.trace_id,
            span_id: inner.root_span_id,
            parent_span_id: inner.remote_parent,
            name,
            kind: SpanKind::Server,
            start_unix_nanos: inner.start_unix_nanos,
            end_unix_nanos: now_nanos(),
            attributes,
            error,
        });
        spans
    }

    fn push(&self, span: SpanRecord) {
        self.0
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(span);
    }
}

fn new_trace_id() -> [u8; 16] {
    loop {
        let id: [u8; 16] = rand::random();
        if id != [0; 16] {
            return id;
        }
    }
}

/// A span under way; recorded when it is dropped.
#[derive(Debug)]
pub struct ActiveSpan {
    trace: Trace,
    span_id: [u8; 8],
    name: String,
    kind: SpanKind,
    start_unix_nanos: u64,
    attributes: Vec<(&'static str, AttrValue)>,
    error: Option<String>,
}

impl ActiveSpan {
    pub fn set(&mut self, key: &'static str, value: impl Into<AttrValue>) {
        self.attributes.push((key, value.into()));
    }

    pub fn fail(&mut self, error_type: impl Into<String>) {
        self.error = Some(error_type.into());
    }

    /// The W3C `traceparent` naming this span as the parent (sampled).
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-01",
            hex(&self.trace.0.trace_id),
            hex(&self.span_id)
        )
    }
}

impl Drop for ActiveSpan {
    fn drop(&mut self) {
        let inner = &self.trace.0;
        self.trace.push(SpanRecord {
            trace_id: inner.trace_id,
            span_id: self.span_id,
            parent_span_id: Some(inner.root_span_id),
            name: std::mem::take(&mut self.name),
            kind: self.kind,
            start_unix_nanos: self.start_unix_nanos,
            end_unix_nanos: now_nanos(),
            attributes: std::mem::take(&mut self.attributes),
            error: self.error.take(),
        });
    }
}

/// Starts a child span when the request is traced.
pub fn child(trace: Option<&Trace>, name: impl Into<String>, kind: SpanKind) -> Option<ActiveSpan> {
    trace.map(|t| t.child(name, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip_and_rejects() {
        let (trace, span) =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(hex(&trace), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&span), "00f067aa0ba902b7");
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }
}
