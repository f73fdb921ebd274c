//! OpenTelemetry traces as `serve` sends them (api.md "Metrics and timing", issue 20):
//! batched by a background task, off the request path, to an OTLP/HTTP collector.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod traces_common;

use std::time::Duration;

use switchboard_core::otel::ExportMode;
use switchboard_tests::gateway::Gateway;

#[tokio::test]
async fn serve_sends_one_trace_per_request_with_genai_attributes_and_propagates_traceparent() {
    let otlp = traces_common::collector(ExportMode::Batched).await;
    let gw = Gateway::start().await;
    traces_common::run_and_check(&gw, &otlp, Duration::from_secs(5)).await;
    // Batched: the two traces went in fewer posts than requests... or as many; never more.
    assert!(otlp.posts() <= 2);
}
