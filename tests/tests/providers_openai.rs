//! The OpenAI-compatible adapter against the fake upstream: issue 4's scenarios, plus
//! pass-through, `auth_type = none`, and compatible servers' quirks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod providers_support;

use serde_json::json;
use switchboard_core::catalog::{ApiFormat, AuthType};
use switchboard_core::providers::{FinishReason, ProviderError, Usage};
use switchboard_tests::fake_upstream::{FakeUpstream, Reply, Step};

use providers_support::*;

const FORMAT: ApiFormat = ApiFormat::OpenAi;
const STREAMED_TOOL_CALL_USAGE: Usage = Usage {
    uncached_input_tokens: 82,
    cached_input_tokens: 0,
    cache_write_input_tokens: 0,
    cache_write_1h_input_tokens: 0,
    output_tokens: 18,
    reasoning_tokens: 0,
};
/// `prompt_tokens` 2006 of which 1920 cached; 300 completion tokens of which 64 reasoning.
const CACHED_USAGE: Usage = Usage {
    uncached_input_tokens: 86,
    cached_input_tokens: 1920,
    cache_write_input_tokens: 0,
    cache_write_1h_input_tokens: 0,
    output_tokens: 300,
    reasoning_tokens: 64,
};
/// Role chunk, "alpha ", "beta ".
const CUT_AFTER_FRAMES: usize = 3;
/// The keep-alive comment, the tool-call start and two argument pieces.
const KEEP_EVENTS: usize = 4;

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
async fn free_extra_fields_pass_through_and_usage_is_always_requested() {
    let fake = FakeUpstream::start().await;
    let request = request_from(json!({
        "model": "openrouter/auto",
        "stream": true,
        "stream_options": {"include_usage": false},
        "messages": [{"role": "user", "content": "hi", "cache_hint": "x"}],
        "logit_bias": {"50256": -100},
        "reasoning_effort": "low",
        "metadata": {"trace": "abc"},
        "x_made_up_field": "dropped on the platform's key",
        "n": 1
    }));
    assert!(!request.client_wants_stream_usage());
    let (_, end) = collect(
        client()
            .stream(&target(FORMAT, &fake), &request)
            .await
            .unwrap(),
    )
    .await;
    assert!(end.error.is_none());
    assert!(!end.usage_estimated, "usage was requested upstream");
    assert_fields(
        &json!({
            "model": "gpt-4o-mini",
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi", "cache_hint": "x"}],
            "logit_bias": {"50256": -100},
            "reasoning_effort": "low",
            "metadata": {"trace": "abc"},
            "n": 1
        }),
        &only_request(&fake).body,
    );

    // On a user's own key every field passes, the made-up one too.
    fake.clear_requests();
    let mut own_key = target(FORMAT, &fake);
    own_key.forward_unpriced_fields = true;
    collect(client().stream(&own_key, &request).await.unwrap()).await;
    assert_eq!(
        only_request(&fake).body["x_made_up_field"],
        "dropped on the platform's key"
    );
}

#[tokio::test]
async fn auth_type_none_sends_no_auth_header() {
    let fake = FakeUpstream::start().await;
    let mut target = target(FORMAT, &fake);
    target.auth_type = AuthType::None;
    target.api_key = None;
    client().complete(&target, &request("plain")).await.unwrap();
    let recorded = only_request(&fake);
    assert_eq!(recorded.header("authorization"), None);
    assert_eq!(recorded.header("x-api-key"), None);
    assert_eq!(recorded.header("x-goog-api-key"), None);
}

#[tokio::test]
async fn error_chunk_inside_a_200_stream_ends_it() {
    let fake = FakeUpstream::start().await;
    let body = concat!(
        ": OPENROUTER PROCESSING\n\n",
        "data: {\"id\":\"gen-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
        "data: {\"error\":{\"code\":502,\"message\":\"Provider returned error\"}}\n\n",
    );
    fake.push(Step::raw(200, "text/event-stream", body));
    let (chunks, end) = collect(
        client()
            .stream(&target(FORMAT, &fake), &request("plain"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(assemble(&chunks).text, "Hel");
    let error = end.error.unwrap();
    assert!(
        matches!(
            error,
            ProviderError::StreamError {
                retryable: true,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("Provider returned error"));
    assert!(end.usage_estimated);
    assert_eq!(end.usage.output_tokens, 1);
}

#[tokio::test]
async fn compatible_server_without_usage_or_done_marker() {
    let fake = FakeUpstream::start().await;
    // Like some local servers: no usage chunk and no `[DONE]`, but a finish reason.
    let body = concat!(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"llama3\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi there\"},\"finish_reason\":null}]}\r\n\r\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"llama3\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"eos\"}]}\r\n\r\n",
    );
    fake.push(Step::raw(200, "text/event-stream", body));
    let (chunks, end) = collect(
        client()
            .stream(&target(FORMAT, &fake), &request("plain"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(assemble(&chunks).text, "Hi there");
    assert!(end.error.is_none(), "{:?}", end.error);
    assert_eq!(end.finish_reason, Some(FinishReason::Stop));
    assert!(end.usage_estimated);
    assert_eq!(end.usage.output_tokens, 2);
    assert_eq!(
        end.usage.uncached_input_tokens,
        request("plain").estimated_prompt_tokens()
    );

    let no_usage = json!({"id": "c2", "object": "chat.completion", "created": 1, "model": "llama3",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "12345678"}, "finish_reason": "stop"}]});
    fake.push(Step::raw(200, "application/json", no_usage.to_string()));
    let completion = client()
        .complete(&target(FORMAT, &fake), &request("plain"))
        .await
        .unwrap();
    assert!(completion.usage_estimated);
    assert_eq!(completion.usage.output_tokens, 2);
    assert_eq!(completion.response.usage.unwrap().completion_tokens, 2);
}

#[tokio::test]
async fn finish_reasons_length_and_content_filter() {
    let fake = FakeUpstream::start().await;
    for (reason, expected) in [
        (
            switchboard_tests::fake_upstream::FinishReason::Length,
            FinishReason::Length,
        ),
        (
            switchboard_tests::fake_upstream::FinishReason::ContentFilter,
            FinishReason::ContentFilter,
        ),
    ] {
        fake.push(Reply::text("cut").with_finish_reason(reason));
        let completion = client()
            .complete(&target(FORMAT, &fake), &request("plain"))
            .await
            .unwrap();
        assert_eq!(completion.response.finish_reason(), Some(expected));
        fake.push(Reply::text("cut").with_finish_reason(reason));
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
