//! The Gemini adapter against the fake upstream: issue 4's scenarios, plus thought
//! signatures, tool-result names, Gemini's way of refusing a key, and safety stops.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod providers_support;

use serde_json::json;
use switchboard_core::catalog::ApiFormat;
use switchboard_core::providers::{FinishReason, ProviderError, Usage};
use switchboard_tests::fake_upstream::{self as fake_upstream, FakeUpstream, Reply, Step};

use providers_support::*;

const FORMAT: ApiFormat = ApiFormat::Gemini;
/// 61 prompt tokens; 21 candidate tokens plus 48 thinking tokens.
const STREAMED_TOOL_CALL_USAGE: Usage = Usage {
    uncached_input_tokens: 61,
    cached_input_tokens: 0,
    cache_write_input_tokens: 0,
    cache_write_1h_input_tokens: 0,
    output_tokens: 69,
    reasoning_tokens: 48,
};
/// `promptTokenCount` 2050 of which `cachedContentTokenCount` 2000; 250 + 40 thoughts out.
const CACHED_USAGE: Usage = Usage {
    uncached_input_tokens: 50,
    cached_input_tokens: 2000,
    cache_write_input_tokens: 0,
    cache_write_1h_input_tokens: 0,
    output_tokens: 290,
    reasoning_tokens: 40,
};
/// "alpha ", "beta ".
const CUT_AFTER_FRAMES: usize = 2;
/// The two text chunks, not the one with the call and `finishReason`.
const KEEP_EVENTS: usize = 2;

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
async fn thought_signature_survives_the_round_trip() {
    let fake = FakeUpstream::start().await;
    fake.push(Step::raw(
        200,
        "text/event-stream",
        fixture_bytes("gemini/tool_call.stream.sse"),
    ));
    let target = target(FORMAT, &fake);
    let (chunks, _) = collect(client().stream(&target, &request("tools")).await.unwrap()).await;
    let (id, name, arguments) = assemble(&chunks).tool_calls.remove(0);
    assert!(id.ends_with("__thought__CiQB0e2Kb7Qr"), "{id}");

    let mut body = fixture("requests/tools.json");
    body.as_object_mut().unwrap().remove("tool_choice");
    body["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": "Let me look that up.", "tool_calls": [
            {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}]}),
        json!({"role": "tool", "tool_call_id": id, "content": "sunny"}),
    ]);
    fake.clear_requests();
    client()
        .complete(&target, &request_from(body))
        .await
        .unwrap();
    let sent = only_request(&fake).body;
    assert_eq!(
        sent["contents"][1],
        json!({"role": "model", "parts": [
            {"text": "Let me look that up."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris", "unit": "celsius"}},
             "thoughtSignature": "CiQB0e2Kb7Qr"}
        ]})
    );
    assert_eq!(
        sent["contents"][2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}}
        ]})
    );
}

#[tokio::test]
async fn tool_result_for_an_unknown_call_is_an_invalid_request() {
    let fake = FakeUpstream::start().await;
    let request = request_from(json!({
        "model": "auto",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "call_nowhere", "content": "42"}
        ]
    }));
    let error = client()
        .complete(&target(FORMAT, &fake), &request)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::InvalidRequest { .. }),
        "{error:?}"
    );
    assert_eq!(error.param(), Some("messages[1].tool_call_id"));
    assert!(!error.retryable());
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn invalid_key_400_is_an_auth_failure() {
    let fake = FakeUpstream::start().await;
    fake.push(Step::status_with_body(400, json!({"error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                     "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}]
    }})));
    let error = client()
        .complete(&target(FORMAT, &fake), &request("plain"))
        .await
        .unwrap_err();
    assert!(error.is_auth_failure(), "{error:?}");
    assert!(error.retryable());
}

#[tokio::test]
async fn rate_limit_retry_info_in_the_body() {
    let fake = FakeUpstream::start().await;
    fake.push(Step::status_with_body(
        429,
        json!({"error": {
            "code": 429,
            "message": "You exceeded your current quota.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]
        }}),
    ));
    let error = client()
        .complete(&target(FORMAT, &fake), &request("plain"))
        .await
        .unwrap_err();
    assert_eq!(
        error.retry_after(),
        Some(std::time::Duration::from_secs(37))
    );
    assert!(error.retryable());
}

#[tokio::test]
async fn safety_and_max_tokens_finish_reasons() {
    let fake = FakeUpstream::start().await;
    for (reason, expected) in [
        (
            fake_upstream::FinishReason::ContentFilter,
            FinishReason::ContentFilter,
        ),
        (fake_upstream::FinishReason::Length, FinishReason::Length),
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
async fn blocked_prompt_is_a_content_filter_stop() {
    let fake = FakeUpstream::start().await;
    let body = json!({"promptFeedback": {"blockReason": "SAFETY"},
                      "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
                      "modelVersion": "gemini-2.0-flash"});
    fake.push(Step::raw(200, "application/json", body.to_string()));
    let completion = client()
        .complete(&target(FORMAT, &fake), &request("plain"))
        .await
        .unwrap();
    assert_eq!(
        completion.response.finish_reason(),
        Some(FinishReason::ContentFilter)
    );
    assert_eq!(
        completion.response.choices[0].message.content.as_deref(),
        Some("")
    );
    assert_eq!(completion.usage.uncached_input_tokens, 9);
}
