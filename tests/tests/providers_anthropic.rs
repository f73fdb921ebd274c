//! The Anthropic Messages adapter against the fake upstream: issue 4's scenarios, plus
//! `max_tokens` defaults, parameter limits, error events and unsupported parts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod providers_support;

use serde_json::json;
use switchboard_core::catalog::ApiFormat;
use switchboard_core::providers::{FinishReason, ProviderError, Usage};
use switchboard_tests::fake_upstream::{self as fake_upstream, FakeUpstream, Reply, Step};

use providers_support::*;

const FORMAT: ApiFormat = ApiFormat::Anthropic;
const STREAMED_TOOL_CALL_USAGE: Usage = Usage {
    uncached_input_tokens: 472,
    cached_input_tokens: 0,
    cache_write_input_tokens: 0,
    cache_write_1h_input_tokens: 0,
    output_tokens: 89,
    reasoning_tokens: 0,
};
/// `input_tokens` 86, `cache_read_input_tokens` 1800, `cache_creation_input_tokens` 120.
const CACHED_USAGE: Usage = Usage {
    uncached_input_tokens: 86,
    cached_input_tokens: 1800,
    cache_write_input_tokens: 120,
    cache_write_1h_input_tokens: 0,
    output_tokens: 300,
    reasoning_tokens: 0,
};
/// message_start, content_block_start, ping, "alpha ", "beta ".
const CUT_AFTER_FRAMES: usize = 5;
/// Up to the second text delta.
const KEEP_EVENTS: usize = 5;

#[tokio::test]
async fn plain_completion() {
    scenarios::plain_completion(FORMAT).await;
}

#[tokio::test]
async fn multi_turn_with_system_prompt() {
    scenarios::multi_turn_with_system(FORMAT).await;
}

#[tokio::test]
async fn tool_call_round_trip() {
    scenarios::tool_call_round_trip(FORMAT).await;
}

#[tokio::test]
async fn streamed_tool_call() {
    scenarios::streamed_tool_call_fixture(FORMAT, STREAMED_TOOL_CALL_USAGE).await;
}

#[tokio::test]
async fn streamed_parallel_tool_calls() {
    scenarios::streamed_parallel_tool_calls(FORMAT).await;
}

#[tokio::test]
async fn image_parts() {
    scenarios::image_parts(FORMAT).await;
}

#[tokio::test]
async fn json_schema_response_format() {
    scenarios::json_schema_response_format(FORMAT).await;
}

#[tokio::test]
async fn cached_token_usage() {
    scenarios::cached_token_usage(FORMAT, CACHED_USAGE).await;
}

#[tokio::test]
async fn streamed_usage_equals_non_streamed_usage() {
    scenarios::streamed_usage_equals_non_streamed(FORMAT).await;
}

#[tokio::test]
async fn malformed_upstream_json() {
    scenarios::malformed_upstream_json(FORMAT).await;
}

#[tokio::test]
async fn stream_cut_without_end_marker() {
    scenarios::stream_cut_without_end_marker(FORMAT, CUT_AFTER_FRAMES).await;
}

#[tokio::test]
async fn stream_ends_cleanly_before_end_marker() {
    scenarios::stream_ends_before_end_marker(FORMAT, KEEP_EVENTS).await;
}

#[tokio::test]
async fn rate_limited_429_with_retry_after() {
    scenarios::rate_limited_with_retry_after(FORMAT).await;
}

#[tokio::test]
async fn server_error_500() {
    scenarios::server_error(FORMAT).await;
}

#[tokio::test]
async fn client_errors_are_not_retryable() {
    scenarios::client_errors_are_not_retryable(FORMAT).await;
}

#[tokio::test]
async fn auth_failure_never_leaks_the_key() {
    scenarios::auth_failure_never_leaks_the_key(FORMAT).await;
}

#[tokio::test]
async fn max_tokens_defaults_and_parameter_limits() {
    let fake = FakeUpstream::start().await;
    let mut target = target(FORMAT, &fake);
    target.max_output_tokens = None;
    let request = request_from(json!({
        "model": "auto",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 1.7,
        "top_p": 0.3,
        "stop": "STOP"
    }));
    client().complete(&target, &request).await.unwrap();
    let body = only_request(&fake).body;
    assert_eq!(body["max_tokens"], 4096);
    assert_eq!(body["temperature"], 1.0, "capped at Anthropic's maximum");
    assert!(body.get("top_p").is_none(), "temperature wins over top_p");
    assert_eq!(body["stop_sequences"], json!(["STOP"]));
}

#[tokio::test]
async fn error_event_mid_stream() {
    let fake = FakeUpstream::start().await;
    let full = String::from_utf8(fixture_bytes("anthropic/tool_call.stream.sse")).unwrap();
    let head: Vec<&str> = full.split("\n\n").take(4).collect();
    let body = format!(
        "{}\n\nevent: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n",
        head.join("\n\n")
    );
    fake.push(Step::raw(200, "text/event-stream", body));
    let (chunks, end) = collect(
        client()
            .stream(&target(FORMAT, &fake), &request("tools"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(assemble(&chunks).text, "Okay");
    let error = end.error.unwrap();
    match &error {
        ProviderError::StreamError {
            error_type,
            retryable,
            ..
        } => {
            assert_eq!(error_type.as_deref(), Some("overloaded_error"));
            assert!(retryable);
        }
        other => panic!("expected a stream error, got {other:?}"),
    }
    assert!(end.usage_estimated);
    assert_eq!(
        end.usage.uncached_input_tokens, 472,
        "input reported by message_start"
    );
    assert_eq!(end.usage.output_tokens, 2, "max(reported 2, 4 chars / 4)");
}

#[tokio::test]
async fn unsupported_parts_fail_before_any_call() {
    let fake = FakeUpstream::start().await;
    let request = request_from(json!({
        "model": "auto",
        "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
        ]}]
    }));
    let error = client()
        .complete(&target(FORMAT, &fake), &request)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::Unsupported { .. }),
        "{error:?}"
    );
    assert_eq!(error.param(), Some("messages[0].content[0].type"));
    assert!(
        error.retryable(),
        "another candidate of another format may serve it"
    );
    assert!(!error.is_provider_failure());
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn cache_control_is_forwarded() {
    let fake = FakeUpstream::start().await;
    let request = request_from(json!({
        "model": "auto",
        "messages": [
            {"role": "system", "content": [
                {"type": "text", "text": "Long reference text.", "cache_control": {"type": "ephemeral"}}
            ]},
            {"role": "user", "content": "Question?"}
        ]
    }));
    client()
        .complete(&target(FORMAT, &fake), &request)
        .await
        .unwrap();
    assert_eq!(
        only_request(&fake).body["system"],
        json!([{"type": "text", "text": "Long reference text.", "cache_control": {"type": "ephemeral"}}])
    );
}

#[tokio::test]
async fn stop_reasons_map_to_finish_reasons() {
    let fake = FakeUpstream::start().await;
    for (reason, expected) in [
        (fake_upstream::FinishReason::Length, FinishReason::Length),
        (
            fake_upstream::FinishReason::ContentFilter,
            FinishReason::ContentFilter,
        ),
        (fake_upstream::FinishReason::Stop, FinishReason::Stop),
    ] {
        fake.push(Reply::text("x").with_finish_reason(reason));
        let completion = client()
            .complete(&target(FORMAT, &fake), &request("plain"))
            .await
            .unwrap();
        assert_eq!(completion.response.finish_reason(), Some(expected));
        fake.push(Reply::text("x").with_finish_reason(reason));
        let (_, end) = collect(
            client()
                .stream(&target(FORMAT, &fake), &request("plain"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(end.finish_reason, Some(expected));
    }
}

#[tokio::test]
async fn tool_choice_variants() {
    let fake = FakeUpstream::start().await;
    let tools = fixture("requests/tools.json")["tools"].clone();
    for (choice, expected) in [
        (json!("auto"), json!({"type": "auto"})),
        (json!("none"), json!({"type": "none"})),
        (
            json!({"type": "function", "function": {"name": "get_weather"}}),
            json!({"type": "tool", "name": "get_weather"}),
        ),
    ] {
        fake.clear_requests();
        let request = request_from(json!({
            "model": "auto", "tools": tools, "tool_choice": choice,
            "messages": [{"role": "user", "content": "hi"}]
        }));
        client()
            .complete(&target(FORMAT, &fake), &request)
            .await
            .unwrap();
        assert_eq!(only_request(&fake).body["tool_choice"], expected);
    }
}
