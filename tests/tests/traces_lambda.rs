//! OpenTelemetry traces as a Lambda function sends them: each request's spans are sent
//! before its answer ends (nothing may run after the response), so the collector has them
//! the moment the client has read the answer, buffered or streamed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod traces_common;

use std::time::Duration;

use switchboard_core::otel::ExportMode;
use switchboard_tests::gateway::Gateway;

#[tokio::test]
async fn a_lambda_request_has_sent_its_trace_when_its_answer_ends() {
    let otlp = traces_common::collector(ExportMode::PerRequest).await;
    let gw = Gateway::start().await;
    // No waiting at all: the spans must already be there.
    traces_common::run_and_check(&gw, &otlp, Duration::ZERO).await;
    assert_eq!(otlp.posts(), 2, "one post per request");
}
