//! The scenarios every format must pass (issue 4's test list), parameterised by format.
//! Each `providers_<format>.rs` file runs them against the fake upstream and adds its
//! format's own cases.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_core::catalog::ApiFormat;
use switchboard_core::http::error::ApiError;
use switchboard_core::providers::{FinishReason, ProviderError, Usage};
use switchboard_tests::fake_upstream::{DEFAULT_TEXT, FakeUpstream, Reply, Step};

use super::*;

fn dir(format: ApiFormat) -> &'static str {
    format.as_str()
}

fn raw_json(relative: &str) -> Step {
    Step::raw(200, "application/json", fixture_bytes(relative))
}

fn raw_sse(bytes: Vec<u8>) -> Step {
    Step::raw(200, "text/event-stream", bytes)
}

/// Path of the completion endpoint for `format` (Gemini: streamed or not).
fn expected_path(format: ApiFormat, stream: bool) -> String {
    match format {
        ApiFormat::OpenAi => "/v1/chat/completions".to_owned(),
        ApiFormat::Anthropic => "/v1/messages".to_owned(),
        ApiFormat::Gemini if stream => {
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent".to_owned()
        }
        ApiFormat::Gemini => "/v1beta/models/gemini-2.0-flash:generateContent".to_owned(),
        ApiFormat::Bedrock if stream => {
            "/bedrock/model/amazon.nova-pro-v1%3A0/converse-stream".to_owned()
        }
        ApiFormat::Bedrock => "/bedrock/model/amazon.nova-pro-v1%3A0/converse".to_owned(),
    }
}

/// Plain completion: the upstream request and the answer, field by field, from fixtures.
pub async fn plain_completion(format: ApiFormat) {
    let fake = FakeUpstream::start().await;
    fake.push(raw_json(&format!("{}/plain.response.json", dir(format))));
    let completion = client()
        .complete(&target(format, &fake), &request("plain"))
        .await
        .unwrap();

    let recorded = only_request(&fake);
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.path, expected_path(format, false));
    assert_eq!(recorded.query, None);
    assert_auth(format, &recorded);
    assert_fields(
        &fixture(&format!("{}/plain.upstream.json", dir(format))),
        &recorded.body,
    );
    assert_fields(
        &fixture(&format!("{}/plain.completion.json", dir(format))),
        &serde_json::to_value(&completion.response).unwrap(),
    );
    assert!(!completion.usage_estimated);
    assert_eq!(
        completion.response.finish_reason(),
        Some(FinishReason::Stop)
    );
}

/// Multi-turn with system (and developer) prompts.
pub async fn multi_turn_with_system(format: ApiFormat) {
    let fake = FakeUpstream::start().await;
    let completion = client()
        .complete(&target(format, &fake), &request("multi_turn"))
        .await
        .unwrap();
    let recorded = only_request(&fake);
    assert_fields(
        &fixture(&format!("{}/multi_turn.upstream.json", dir(format))),
        &recorded.body,
    );
    let message = &completion.response.choices[0].message;
    assert_eq!(message.role, "assistant");
    assert_eq!(message.content.as_deref(), Some(DEFAULT_TEXT));
}

/// Tools out, a tool call back (from a fixture), then the tool result in the next turn.
pub async fn tool_call_round_trip(format: ApiFormat) {
    let fake = FakeUpstream::start().await;
    let target = target(format, &fake);
    let client = client();
    let first = request("tools");
    fake.push(raw_json(&format!(
        "{}/tool_call.response.json",
        dir(format)
    )));
    let completion = client.complete(&target, &first).await.unwrap();
    assert_fields(
        &fixture(&format!("{}/tools.upstream.json", dir(format))),
        &only_request(&fake).body,
    );
    assert_fields(
        &fixture(&format!("{}/tool_call.completion.json", dir(format))),
        &serde_json::to_value(&completion.response).unwrap(),
    );
    assert_eq!(
        completion.response.finish_reason(),
        Some(FinishReason::ToolCalls)
    );
    let message = &completion.response.choices[0].message;
    let call = &message.tool_calls.as_ref().unwrap()[0];
    let arguments: Value = serde_json::from_str(&call.function.arguments).unwrap();
    assert_eq!(arguments, json!({"city": "Paris", "unit": "celsius"}));

    // The client runs the tool and sends the result back with the assistant's message.
    let mut body = fixture("requests/tools.json");
    body.as_object_mut().unwrap().remove("tool_choice");
    body.as_object_mut().unwrap().remove("parallel_tool_calls");
    let messages = body["messages"].as_array_mut().unwrap();
    messages.push(serde_json::to_value(message).unwrap());
    messages.push(json!({
        "role": "tool",
        "tool_call_id": call.id,
        "content": "{\"temperature\":18,\"conditions\":\"sunny\"}"
    }));
    messages.push(json!({"role": "user", "content": "Should I take an umbrella?"}));
    fake.clear_requests();
    fake.push(Reply::text("No umbrella needed."));
    let second = client.complete(&target, &request_from(body)).await.unwrap();
    assert_fields(
        &fixture(&format!("{}/tool_result.upstream.json", dir(format))),
        &only_request(&fake).body,
    );
    assert_eq!(
        second.response.choices[0].message.content.as_deref(),
        Some("No umbrella needed.")
    );
}

/// A streamed tool call from a recorded stream, chunk by chunk, then reassembled.
pub async fn streamed_tool_call_fixture(format: ApiFormat, expected_usage: Usage) {
    let fake = FakeUpstream::start().await;
    fake.push(raw_sse(fixture_bytes(&format!(
        "{}/tool_call.stream.sse",
        dir(format)
    ))));
    let stream = client()
        .stream(&target(format, &fake), &request("tools"))
        .await
        .unwrap();
    let (chunks, end) = collect(stream).await;

    let recorded = only_request(&fake);
    assert_eq!(recorded.path, expected_path(format, true));
    assert_auth(format, &recorded);
    assert_eq!(recorded.header("accept"), Some("text/event-stream"));
    match format {
        ApiFormat::OpenAi => {
            assert_eq!(recorded.body["stream"], true);
            assert_eq!(recorded.body["stream_options"]["include_usage"], true);
        }
        ApiFormat::Anthropic => assert_eq!(recorded.body["stream"], true),
        ApiFormat::Gemini => assert_eq!(recorded.query.as_deref(), Some("alt=sse")),
        ApiFormat::Bedrock => {}
    }

    let chunks_json = serde_json::to_value(&chunks).unwrap();
    assert_fields(
        &fixture(&format!("{}/tool_call.chunks.json", dir(format))),
        &chunks_json,
    );
    let assembled = assemble(&chunks);
    assert_eq!(assembled.tool_calls.len(), 1);
    let (id, name, arguments) = &assembled.tool_calls[0];
    assert!(!id.is_empty());
    assert_eq!(name, "get_weather");
    let arguments: Value = serde_json::from_str(arguments).unwrap();
    assert_eq!(arguments, json!({"city": "Paris", "unit": "celsius"}));
    assert_eq!(assembled.finish_reason, Some(FinishReason::ToolCalls));

    assert!(end.error.is_none(), "{:?}", end.error);
    assert_eq!(end.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(end.usage, expected_usage);
    assert!(!end.usage_estimated);
}

/// Parallel tool calls streamed as the fake renders them (argument deltas in pieces).
pub async fn streamed_parallel_tool_calls(format: ApiFormat) {
    let fake = FakeUpstream::start().await;
    fake.push(
        Reply::tool_call("get_weather", json!({"city": "Paris", "unit": "celsius"}))
            .with_tool_call("get_weather", json!({"city": "Oslo"}))
            .with_usage(90, 40, 0),
    );
    let stream = client()
        .stream(&target(format, &fake), &request("tools"))
        .await
        .unwrap();
    let (chunks, end) = collect(stream).await;
    assert!(end.error.is_none(), "{:?}", end.error);
    let assembled = assemble(&chunks);
    let calls: Vec<(String, Value)> = assembled
        .tool_calls
        .iter()
        .map(|(id, name, arguments)| {
            assert!(!id.is_empty());
            (name.clone(), serde_json::from_str(arguments).unwrap())
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            (
                "get_weather".to_owned(),
                json!({"city": "Paris", "unit": "celsius"})
            ),
            ("get_weather".to_owned(), json!({"city": "Oslo"})),
        ]
    );
    let ids: std::collections::HashSet<&String> =
        assembled.tool_calls.iter().map(|(id, _, _)| id).collect();
    assert_eq!(ids.len(), 2, "tool-call ids must differ");
    assert_eq!(end.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(end.usage.output_tokens, 40);
    if format != ApiFormat::Gemini {
        // Gemini sends each call whole; the others stream the arguments in pieces.
        let argument_deltas = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .flat_map(|c| c.delta.tool_calls.iter().flatten())
            .filter(|d| d.id.is_none())
            .count();
        assert!(argument_deltas >= 4, "{argument_deltas} argument deltas");
    }
}

/// Images: a base64 data URL and an https URL.
pub async fn image_parts(format: ApiFormat) {
    let fake = FakeUpstream::start().await;
    let image = request("image");
    assert!(image.required_capabilities().vision);
    // Anthropic and Gemini fetch an image URL themselves and bill it by content: on the
    // platform's key that is refused before any call (tests/tests/holds.rs); the user's
    // own key sends it.
    let platform = client().complete(&target(format, &fake), &image).await;
    if format != ApiFormat::OpenAi {
        match platform {
            Err(ProviderError::Unsupported { param, .. }) => assert_eq!(
                param.as_deref(),
                Some("messages[0].content[2].image_url.url")
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(fake.request_count(), 0);
        let mut own_key = target(format, &fake);
        own_key.forward_unpriced_fields = true;
        client().complete(&own_key, &image).await.unwrap();
    } else {
        platform.unwrap();
    }
    assert_fields(
        &fixture(&format!("{}/image.upstream.json", dir(format))),
        &only_request(&fake).body,
    );
}

/// `response_format` json_schema.
pub async fn json_schema_response_format(format: ApiFormat) {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::text("{\"city\":\"Paris\"}"));
    let completion = client()
        .complete(&target(format, &fake), &request("json_schema"))
        .await
        .unwrap();
    assert_fields(
        &fixture(&format!("{}/json_schema.upstream.json", dir(format))),
        &only_request(&fake).body,
    );
    assert_eq!(
        completion.response.choices[0].message.content.as_deref(),
        Some("{\"city\":\"Paris\"}")
    );
}

/// Cached-token usage from a recorded answer, split into disjoint buckets.
pub async fn cached_token_usage(format: ApiFormat, expected: Usage) {
    let fake = FakeUpstream::start().await;
    fake.push(raw_json(&format!("{}/cached.response.json", dir(format))));
    let completion = client()
        .complete(&target(format, &fake), &request("plain"))
        .await
        .unwrap();
    assert_eq!(completion.usage, expected);
    assert!(!completion.usage_estimated);
    let openai = completion.response.usage.as_ref().unwrap();
    assert_eq!(openai.prompt_tokens, expected.input_tokens());
    assert_eq!(openai.completion_tokens, expected.output_tokens);
    assert_eq!(openai.total_tokens, expected.total_tokens());
    assert_eq!(
        openai.prompt_tokens_details.as_ref().unwrap().cached_tokens,
        expected.cached_input_tokens
    );
}

/// The same answer streamed and not streamed yields the same usage, text and finish.
pub async fn streamed_usage_equals_non_streamed(format: ApiFormat) {
    let fake = FakeUpstream::start().await;
    let reply = Reply::text("The quick brown fox jumps over the lazy dog.")
        .with_usage(1200, 37, 1024)
        .with_cache_creation(if format == ApiFormat::Anthropic {
            100
        } else {
            0
        });
    fake.push(reply.clone());
    fake.push(reply);
    let target = target(format, &fake);
    let client = client();
    let request = request("plain");
    let completion = client.complete(&target, &request).await.unwrap();
    let (chunks, end) = collect(client.stream(&target, &request).await.unwrap()).await;
    assert!(end.error.is_none(), "{:?}", end.error);
    assert!(!end.usage_estimated);
    assert!(!completion.usage_estimated);
    assert_eq!(end.usage, completion.usage);
    let expected = Usage {
        uncached_input_tokens: if format == ApiFormat::Anthropic {
            76
        } else {
            176
        },
        cached_input_tokens: 1024,
        cache_write_input_tokens: if format == ApiFormat::Anthropic {
            100
        } else {
            0
        },
        cache_write_1h_input_tokens: 0,
        output_tokens: 37,
        reasoning_tokens: 0,
    };
    assert_eq!(end.usage, expected);
    assert_eq!(end.usage.input_tokens(), 1200);
    let assembled = assemble(&chunks);
    assert_eq!(
        Some(assembled.text.as_str()),
        completion.response.choices[0].message.content.as_deref()
    );
    assert_eq!(assembled.finish_reason, completion.response.finish_reason());
    assert_eq!(end.finish_reason, Some(FinishReason::Stop));
}

/// A 200 whose JSON is broken: a retryable invalid response, streamed or not.
pub async fn malformed_upstream_json(format: ApiFormat) {
    let fake = FakeUpstream::start().await;
    let target = target(format, &fake);
    let client = client();
    fake.push(Step::Malformed);
    let error = client
        .complete(&target, &request("plain"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::InvalidResponse { .. }),
        "{error:?}"
    );
    assert!(error.retryable());
    assert!(error.is_provider_failure());

    fake.push(Step::Malformed);
    let (chunks, end) = collect(client.stream(&target, &request("plain")).await.unwrap()).await;
    assert!(chunks.iter().all(|c| !c.has_content()));
    let error = end
        .error
        .expect("a malformed frame ends the stream with an error");
    assert!(
        matches!(error, ProviderError::InvalidResponse { .. }),
        "{error:?}"
    );
    assert!(error.retryable());
    assert!(end.usage_estimated);
}

/// The connection drops after `after_frames` frames: the chunks so far, then an error, and
/// usage counted so far (reported input where the format sends it early).
pub async fn stream_cut_without_end_marker(format: ApiFormat, after_frames: usize) {
    let fake = FakeUpstream::start().await;
    let text = "alpha beta gamma delta epsilon zeta eta theta";
    fake.push(Step::cut_stream(
        Reply::text(text).with_usage(500, 12, 0),
        after_frames,
    ));
    let stream = client()
        .stream(&target(format, &fake), &request("plain"))
        .await
        .unwrap();
    let (chunks, end) = collect(stream).await;
    let assembled = assemble(&chunks);
    assert!(
        !assembled.text.is_empty(),
        "some text arrived before the cut"
    );
    assert!(text.starts_with(&assembled.text));
    assert!(assembled.text.len() < text.len());
    let error = end.error.expect("a cut stream ends with an error");
    assert!(
        matches!(error, ProviderError::StreamInterrupted { .. }),
        "{error:?}"
    );
    assert!(error.retryable());
    assert!(end.usage_estimated);
    assert_eq!(
        end.usage.output_tokens,
        (assembled.text.chars().count() as u64).div_ceil(4)
    );
    let expected_input = match format {
        // message_start reported the input before the cut.
        ApiFormat::Anthropic => 500,
        _ => request("plain").estimated_prompt_tokens(),
    };
    assert_eq!(end.usage.input_tokens(), expected_input);
}

/// The body ends cleanly, but before the end marker (and before any finish reason).
pub async fn stream_ends_before_end_marker(format: ApiFormat, keep_events: usize) {
    let fake = FakeUpstream::start().await;
    let full = String::from_utf8(fixture_bytes(&format!(
        "{}/tool_call.stream.sse",
        dir(format)
    )))
    .unwrap()
    .replace("\r\n", "\n");
    let kept: Vec<&str> = full.split("\n\n").take(keep_events).collect();
    let body = format!("{}\n\n", kept.join("\n\n"));
    fake.push(raw_sse(body.into_bytes()));
    let stream = client()
        .stream(&target(format, &fake), &request("tools"))
        .await
        .unwrap();
    let (chunks, end) = collect(stream).await;
    assert!(!chunks.is_empty());
    let error = end.error.expect("a stream without its end is an error");
    assert!(
        matches!(error, ProviderError::StreamInterrupted { .. }),
        "{error:?}"
    );
    assert!(end.usage_estimated);
    assert!(end.usage.output_tokens > 0);
    assert_eq!(end.finish_reason, None);
}

/// 429 with `Retry-After`: retryable, the wait parsed, streamed or not.
pub async fn rate_limited_with_retry_after(format: ApiFormat) {
    let fake = FakeUpstream::start().await;
    let target = target(format, &fake);
    let client = client();
    fake.push(Step::rate_limited("7"));
    let error = client
        .complete(&target, &request("plain"))
        .await
        .unwrap_err();
    assert_eq!(error.upstream_status(), Some(429));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
    assert!(error.retryable());
    assert!(!error.is_auth_failure());
    assert!(error.is_provider_failure());
    assert!(error.to_string().contains("429"), "{error}");
    assert_no_key(&error);

    let in_a_minute = (chrono::Utc::now() + chrono::Duration::seconds(61))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    fake.push(Step::rate_limited(in_a_minute));
    let error = client.stream(&target, &request("plain")).await.unwrap_err();
    assert_eq!(error.upstream_status(), Some(429));
    let wait = error.retry_after().unwrap();
    assert!(
        wait > Duration::from_secs(55) && wait <= Duration::from_secs(61),
        "{wait:?}"
    );
    assert!(error.retryable());
}

/// 500: retryable, the provider's message kept.
pub async fn server_error(format: ApiFormat) {
    let fake = FakeUpstream::start().await;
    let target = target(format, &fake);
    fake.push(Step::status(500));
    let error = client()
        .complete(&target, &request("plain"))
        .await
        .unwrap_err();
    assert_eq!(error.upstream_status(), Some(500));
    assert!(error.retryable());
    assert!(error.is_provider_failure());
    assert_eq!(error.retry_after(), None);
    assert!(
        error.to_string().contains("The server had an error"),
        "{error}"
    );
    assert!(matches!(ApiError::from(error), ApiError::Upstream(_)));

    fake.push(Step::status(529));
    let error = client()
        .stream(&target, &request("plain"))
        .await
        .unwrap_err();
    assert_eq!(error.upstream_status(), Some(529));
    assert!(error.retryable());
}

/// 400/404/422 are returned, not retried; they map to the client's error shape.
pub async fn client_errors_are_not_retryable(format: ApiFormat) {
    let fake = FakeUpstream::start().await;
    let target = target(format, &fake);
    for status in [400, 404, 422] {
        fake.push(Step::status(status));
        let error = client()
            .complete(&target, &request("plain"))
            .await
            .unwrap_err();
        assert_eq!(error.upstream_status(), Some(status));
        assert!(!error.retryable(), "{status}");
        assert!(!error.is_provider_failure(), "{status}");
        let api = ApiError::from(error);
        let expected = if status == 404 { 404 } else { 400 };
        assert_eq!(api.status().as_u16(), expected, "{status}");
    }
}

/// 401 from an upstream that echoes the key: an auth failure whose message, Display and
/// Debug hold no trace of the key.
pub async fn auth_failure_never_leaks_the_key(format: ApiFormat) {
    let fake = FakeUpstream::start().await;
    let target = target(format, &fake);
    let echo = format!(
        "Incorrect API key provided: {KEY}. You can find your API key at https://example.test."
    );
    let body = match format {
        ApiFormat::OpenAi => {
            json!({"error": {"message": echo, "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})
        }
        ApiFormat::Anthropic => {
            json!({"type": "error", "error": {"type": "authentication_error", "message": echo}})
        }
        ApiFormat::Gemini => {
            json!({"error": {"code": 400, "message": echo, "status": "INVALID_ARGUMENT",
                                               "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "metadata": {"key": KEY}}]}})
        }
        ApiFormat::Bedrock => unreachable!("no stored key: tests/tests/providers_bedrock.rs"),
    };
    for status in [401, 403] {
        fake.push(Step::status_with_body(status, body.clone()));
        let error = client()
            .complete(&target, &request("plain"))
            .await
            .unwrap_err();
        assert!(error.is_auth_failure());
        assert!(error.retryable());
        assert!(!error.is_provider_failure());
        assert_no_key(&error);
        assert!(
            error
                .to_string()
                .contains("Incorrect API key provided: [redacted]"),
            "{error}"
        );
        assert_no_key(&ApiError::from(error));
    }
    fake.push(Step::status_with_body(401, body));
    let error = client()
        .stream(&target, &request("plain"))
        .await
        .unwrap_err();
    assert!(error.is_auth_failure());
    assert_no_key(&error);
    // Nothing else shows the key either.
    let shown = format!("{target:?}");
    assert!(!shown.contains(KEY), "{shown}");
}
