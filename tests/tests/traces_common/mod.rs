//! What the two trace tests share (each installs its exporter once per process, so each
//! export mode has its own test binary).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use switchboard_core::otel::{ExportMode, OtlpSettings};
use switchboard_tests::fake_otlp::{FakeOtlp, ReceivedSpan};
use switchboard_tests::fake_upstream::{Reply, Step};
use switchboard_tests::gateway::Gateway;

pub const CLIENT_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
pub const SERVER: i64 = 2;
pub const CLIENT: i64 = 3;
pub const INTERNAL: i64 = 1;

/// A fake collector and the exporter pointed at it.
pub async fn collector(mode: ExportMode) -> FakeOtlp {
    let otlp = FakeOtlp::start().await;
    let settings = OtlpSettings::from_lookup(|name| match name {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(otlp.endpoint()),
        "OTEL_EXPORTER_OTLP_HEADERS" => Some("authorization=Bearer collector-token-123".into()),
        "OTEL_BSP_SCHEDULE_DELAY" => Some("100".into()),
        "OTEL_SERVICE_NAME" => Some("switchboard-test".into()),
        _ => None,
    })
    .unwrap()
    .unwrap();
    switchboard_core::otel::install_with(settings, mode);
    otlp
}

pub fn trace_of<'a>(spans: &'a [ReceivedSpan], trace_id: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.trace_id == trace_id).collect()
}

/// The spans of each trace, by trace id.
pub fn traces(spans: &[ReceivedSpan]) -> BTreeMap<String, Vec<ReceivedSpan>> {
    let mut by_trace: BTreeMap<String, Vec<ReceivedSpan>> = BTreeMap::new();
    for span in spans {
        by_trace
            .entry(span.trace_id.clone())
            .or_default()
            .push(span.clone());
    }
    by_trace
}

/// A buffered request that falls back after a 503 (continuing the client's trace), then
/// a stream: checks both traces once `received` has them.
pub async fn run_and_check(gw: &Gateway, otlp: &FakeOtlp, wait: Duration) {
    let key = gw.user("traced", "starter", "5").await;
    gw.add_second_gpt4o_offer().await;

    gw.upstream.push(Step::status(503));
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "trace me"}]});
    let (status, _, answer) = gw
        .chat(&key, &body, &[("traceparent", CLIENT_TRACEPARENT)])
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["_metadata"]["attempts"], 2);
    let calls = gw.upstream.requests();
    assert_eq!(calls.len(), 2);

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let spans = otlp
        .wait_for(wait, |spans| {
            trace_of(spans, trace_id).iter().any(|s| s.kind == SERVER)
        })
        .await;
    let trace = trace_of(&spans, trace_id);
    let root = trace
        .iter()
        .find(|s| s.kind == SERVER)
        .expect("the request's span");
    assert_eq!(root.service_name, "switchboard-test");
    assert_eq!(root.name, "POST /v1/chat/completions");
    assert_eq!(
        root.parent_span_id.as_deref(),
        Some("00f067aa0ba902b7"),
        "continues the client's trace"
    );
    let a = &root.attributes;
    assert_eq!(a["gen_ai.operation.name"], "chat");
    assert_eq!(a["gen_ai.request.model"], "gpt-4o");
    assert_eq!(a["gen_ai.response.model"], "gpt-4o");
    assert_eq!(a["http.route"], "/v1/chat/completions");
    assert_eq!(a["http.response.status_code"], "200");
    assert_eq!(a["switchboard.fallback"], "true");
    assert_eq!(
        a["gen_ai.usage.input_tokens"],
        answer["usage"]["prompt_tokens"].to_string()
    );
    assert_eq!(
        a["gen_ai.usage.output_tokens"],
        answer["usage"]["completion_tokens"].to_string()
    );
    assert_eq!(
        a["gen_ai.provider.name"],
        answer["_metadata"]["provider_used"].as_str().unwrap()
    );

    // One CLIENT span per upstream attempt, in order; each call carried its own span.
    let mut attempts: Vec<&&ReceivedSpan> = trace.iter().filter(|s| s.kind == CLIENT).collect();
    attempts.sort_by_key(|s| s.attributes["switchboard.attempt"].parse::<i64>().unwrap());
    assert_eq!(attempts.len(), 2, "{trace:#?}");
    assert_eq!(attempts[0].status_code, 2, "the 503 attempt failed");
    assert_eq!(attempts[0].attributes["error.type"], "5xx");
    assert_eq!(attempts[1].status_code, 1);
    assert_eq!(
        attempts[1].attributes["gen_ai.usage.output_tokens"],
        a["gen_ai.usage.output_tokens"]
    );
    for (span, call) in attempts.iter().zip(&calls) {
        assert_eq!(span.parent_span_id.as_deref(), Some(root.span_id.as_str()));
        assert_eq!(span.name, "chat gpt-4o");
        assert!(span.attributes.contains_key("gen_ai.provider.name"));
        assert_eq!(
            call.header("traceparent"),
            Some(format!("00-{trace_id}-{}-01", span.span_id).as_str()),
            "the provider call carries its attempt's span"
        );
        assert!(
            span.start_unix_nanos >= root.start_unix_nanos
                && span.end_unix_nanos <= root.end_unix_nanos
        );
    }
    let internal: Vec<&str> = trace
        .iter()
        .filter(|s| s.kind == INTERNAL)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        internal.iter().filter(|n| **n == "admission").count(),
        1,
        "{internal:?}"
    );
    assert_eq!(
        internal.iter().filter(|n| **n == "settlement").count(),
        1,
        "{internal:?}"
    );
    let settlement = trace.iter().find(|s| s.name == "settlement").unwrap();
    assert_eq!(settlement.attributes["switchboard.settlement"], "captured");
    assert_eq!(
        trace.len(),
        5,
        "request, admission, two attempts, settlement"
    );

    // A stream without a traceparent: a trace of its own, its attempt span lasting to
    // the stream's end.
    gw.upstream
        .push(Reply::text("streamed words").with_usage(11, 2, 0));
    let streamed = json!({"model": "gpt-4o", "stream": true,
                          "messages": [{"role": "user", "content": "trace me"}]});
    let (status, _, events) = gw.chat_stream(&key, &streamed, &[]).await;
    assert_eq!(status, 200);
    assert!(!events.is_empty());
    let spans = otlp
        .wait_for(wait, |spans| {
            traces(spans).len() >= 2 && spans.iter().filter(|s| s.kind == SERVER).count() >= 2
        })
        .await;
    let all = traces(&spans);
    assert_eq!(all.len(), 2, "one trace per request");
    let stream_trace = all.iter().find(|(id, _)| *id != trace_id).unwrap().1;
    let root = stream_trace.iter().find(|s| s.kind == SERVER).unwrap();
    assert!(root.parent_span_id.is_none());
    assert_eq!(root.attributes["gen_ai.usage.output_tokens"], "2");
    let attempt = stream_trace.iter().find(|s| s.kind == CLIENT).unwrap();
    assert_eq!(attempt.attributes["gen_ai.usage.input_tokens"], "11");
    let settlement = stream_trace
        .iter()
        .find(|s| s.name == "settlement")
        .unwrap();
    assert!(
        attempt.end_unix_nanos <= settlement.start_unix_nanos + 1_000_000,
        "the attempt lasts to the stream's end, before its settlement"
    );

    // The collector's credentials went with every post; no attribute holds a key.
    assert_eq!(
        otlp.last_headers().unwrap()["authorization"],
        "Bearer collector-token-123"
    );
    for span in otlp.spans() {
        for value in span.attributes.values() {
            assert!(
                !value.contains(&key[..12]) && !value.contains("traced"),
                "{span:?}"
            );
        }
    }
}
