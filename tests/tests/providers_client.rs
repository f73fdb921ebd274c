//! `ProviderClient` behaviour shared by every format: timeouts per attempt, connection
//! errors, credentials, validation before any call, and early stream abandonment.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod providers_support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use switchboard_core::catalog::{ApiFormat, AuthType};
use switchboard_core::http::error::ApiError;
use switchboard_core::providers::{
    ProviderClient, ProviderError, StreamEvent, TimeoutPhase, Timeouts,
};
use switchboard_tests::fake_upstream::{FakeUpstream, Reply, Step};

use providers_support::*;

const FORMATS: [ApiFormat; 3] = [ApiFormat::OpenAi, ApiFormat::Anthropic, ApiFormat::Gemini];

fn client_with(timeouts: Timeouts) -> ProviderClient {
    ProviderClient::new(timeouts).unwrap()
}

fn short(first_byte_ms: u64, attempt_ms: u64, idle_ms: u64) -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_millis(first_byte_ms),
        attempt: Duration::from_millis(attempt_ms),
        stream_idle: Duration::from_millis(idle_ms),
    }
}

#[tokio::test]
async fn first_byte_timeout_on_streams() {
    for format in FORMATS {
        let fake = FakeUpstream::start().await;
        fake.push(Step::delayed_reply(
            Duration::from_secs(3),
            Reply::default(),
        ));
        let started = Instant::now();
        let error = client_with(short(300, 10_000, 5_000))
            .stream(&target(format, &fake), &request("plain"))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "{format}");
        assert!(
            matches!(
                error,
                ProviderError::Timeout {
                    phase: TimeoutPhase::FirstByte
                }
            ),
            "{format}: {error:?}"
        );
        assert!(error.retryable());
        assert!(error.is_provider_failure());
        assert!(matches!(
            ApiError::from(error),
            ApiError::UpstreamTimeout(_)
        ));
    }
}

#[tokio::test]
async fn attempt_deadline_on_non_streamed_calls() {
    for format in FORMATS {
        let fake = FakeUpstream::start().await;
        fake.push(Step::delayed_reply(
            Duration::from_secs(3),
            Reply::default(),
        ));
        let started = Instant::now();
        let error = client_with(short(10_000, 300, 5_000))
            .complete(&target(format, &fake), &request("plain"))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "{format}");
        assert!(
            matches!(
                error,
                ProviderError::Timeout {
                    phase: TimeoutPhase::Attempt
                }
            ),
            "{format}: {error:?}"
        );
        assert!(error.retryable());
    }
}

#[tokio::test]
async fn idle_stream_times_out_with_usage_so_far() {
    for format in FORMATS {
        let fake = FakeUpstream::start().await;
        fake.push(Step::slow_stream(
            Reply::text("one two three four"),
            Duration::from_millis(1500),
        ));
        let stream = client_with(short(5_000, 10_000, 300))
            .stream(&target(format, &fake), &request("plain"))
            .await
            .unwrap();
        let (_, end) = collect(stream).await;
        let error = end.error.expect("an idle stream ends with an error");
        assert!(
            matches!(
                error,
                ProviderError::Timeout {
                    phase: TimeoutPhase::StreamIdle
                }
            ),
            "{format}: {error:?}"
        );
        assert!(error.retryable());
        assert!(end.usage_estimated);
    }
}

#[tokio::test]
async fn connection_refused_is_retryable() {
    // A port that was free a moment ago and has no listener now.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let fake = FakeUpstream::start().await;
    for format in FORMATS {
        let mut target = target(format, &fake);
        target.base_url = format!("http://127.0.0.1:{port}/v1");
        let error = client()
            .complete(&target, &request("plain"))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ProviderError::Connect { .. }),
            "{format}: {error:?}"
        );
        assert!(error.retryable());
        assert!(error.is_provider_failure());
        assert_no_key(&error);
        let error = client()
            .stream(&target, &request("plain"))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ProviderError::Connect { .. }),
            "{format}: {error:?}"
        );
    }
}

#[tokio::test]
async fn missing_key_fails_without_calling() {
    let fake = FakeUpstream::start().await;
    for format in FORMATS {
        let mut target = target(format, &fake);
        target.api_key = None;
        let error = client()
            .complete(&target, &request("plain"))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ProviderError::MissingCredential { .. }),
            "{format}: {error:?}"
        );
        assert!(error.retryable());
    }
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn invalid_requests_fail_before_any_call() {
    let fake = FakeUpstream::start().await;
    for format in FORMATS {
        let request: switchboard_core::providers::ChatRequest = serde_json::from_value(json!({
            "model": "auto", "n": 2, "messages": [{"role": "user", "content": "hi"}]
        }))
        .unwrap();
        let error = client()
            .complete(&target(format, &fake), &request)
            .await
            .unwrap_err();
        assert_eq!(error.param(), Some("n"), "{format}");
        assert!(!error.retryable());
        match ApiError::from(error) {
            ApiError::InvalidRequest { param, message } => {
                assert_eq!(param.as_deref(), Some("n"));
                assert!(message.contains("not supported"), "{message}");
            }
            other => panic!("expected 400, got {other:?}"),
        }
    }
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let fake = FakeUpstream::start().await;
    for format in FORMATS {
        fake.push(Step::raw(307, "text/plain", "moved"));
        let error = client()
            .complete(&target(format, &fake), &request("plain"))
            .await
            .unwrap_err();
        assert_eq!(error.upstream_status(), Some(307), "{format}");
        assert!(error.retryable());
    }
    assert_eq!(fake.request_count(), 3);
}

#[tokio::test]
async fn abandoned_stream_reports_usage_so_far() {
    for format in FORMATS {
        let fake = FakeUpstream::start().await;
        fake.push(Step::slow_stream(
            Reply::text("alpha beta gamma delta").with_usage(40, 9, 0),
            Duration::from_millis(200),
        ));
        let mut stream = client()
            .stream(&target(format, &fake), &request("plain"))
            .await
            .unwrap();
        assert!(!stream.content_started());
        // The client goes away after the first piece of content.
        loop {
            match stream.next().await.unwrap() {
                StreamEvent::Chunk(chunk) if chunk.has_content() => break,
                StreamEvent::Chunk(_) => {}
                StreamEvent::End(end) => panic!("{format}: ended early: {end:?}"),
            }
        }
        assert!(stream.content_started());
        let (usage, estimated) = stream.usage_so_far();
        drop(stream);
        assert!(estimated, "{format}");
        assert!(usage.output_tokens >= 1, "{format}");
        assert!(usage.input_tokens() > 0, "{format}");
    }
}

#[tokio::test]
async fn auth_type_is_independent_of_the_format() {
    // An OpenAI-compatible gateway that wants `x-api-key` (some proxies do).
    let fake = FakeUpstream::start().await;
    let mut target = target(ApiFormat::OpenAi, &fake);
    target.auth_type = AuthType::XApiKey;
    client().complete(&target, &request("plain")).await.unwrap();
    let recorded = only_request(&fake);
    assert_eq!(recorded.header("x-api-key"), Some(KEY));
    assert_eq!(recorded.header("authorization"), None);
}
