//! The native Responses API path of the OpenAI adapter against the fake upstream: a request
//! that came in as the Responses API (`ChatRequest::native_responses`) to a provider that
//! serves it (`UpstreamTarget::responses_api`) goes to `POST /v1/responses` with the hold's
//! output limit, `store: false` and the reasoning's encrypted content included; the answer
//! (JSON or SSE) becomes the canonical completion with its `output` items kept. Every other
//! combination still goes to chat completions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod providers_support;

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_core::catalog::ApiFormat;
use switchboard_core::http::error::ApiError;
use switchboard_core::providers::{
    ChatCompletionChunk, ChatRequest, FinishReason, ProviderError, REASONING_CONTENT,
    UpstreamTarget, Usage,
};
use switchboard_tests::fake_upstream::{self, FakeUpstream, Reply, Step};

use providers_support::*;

const FORMAT: ApiFormat = ApiFormat::OpenAi;
/// The hold's output limit of every native target here.
const HOLD_LIMIT: u32 = 4096;
const ENCRYPTED: &str = "gAAAAB-enc-9f8e7d6c5b4a-reasoning-state";

fn native_target(fake: &FakeUpstream) -> UpstreamTarget {
    let mut target = target(FORMAT, fake);
    target.responses_api = true;
    target.max_output_tokens = Some(HOLD_LIMIT);
    target
}

/// The Responses request a client sent (a continuation, already expanded by the inbound
/// side: its `input` holds the previous turn's reasoning item with its encrypted content).
fn responses_body() -> Value {
    json!({
        "model": "auto",
        "instructions": "Answer briefly.",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Add 2 and 2."}]},
            {"type": "reasoning", "id": "rs_prev", "summary": [], "encrypted_content": "gAAAA-previous-turn"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sure."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Use the tool."}]}
        ],
        "tools": [{"type": "function", "name": "add", "description": "Adds.",
                   "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}],
        "tool_choice": "auto",
        "reasoning": {"effort": "high", "summary": "auto"},
        "metadata": {"ticket": "T-1"},
        "max_output_tokens": 50000,
        "previous_response_id": "resp_previous",
        "store": true,
        "include": ["message.output_text.logprobs"],
        "x_made_up_field": "dropped on the platform's key"
    })
}

/// The core request the inbound side builds from `body`: its translation to chat
/// completions (what every other provider gets), with the body attached.
fn native_request(body: Value) -> ChatRequest {
    let mut request = chat_request(&body);
    request.native_responses = Some(body);
    request
}

fn chat_request(body: &Value) -> ChatRequest {
    let mut chat = json!({
        "model": "auto",
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Add 2 and 2."},
            {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": "Use the tool."}
        ],
        "tools": [{"type": "function", "function": {"name": "add", "description": "Adds.",
                   "parameters": {"type": "object"}}}]
    });
    if let Some(limit) = body.get("max_output_tokens") {
        chat["max_completion_tokens"] = limit.clone();
    }
    if body.get("stream") == Some(&json!(true)) {
        chat["stream"] = json!(true);
    }
    request_from(chat)
}

/// Reasoning (with its encrypted content), text and a tool call; 1200 input tokens of
/// which 1000 cached, 300 output tokens of which 120 reasoning.
fn reasoning_reply() -> Reply {
    Reply::text("Calling add.")
        .with_thinking("The user wants a sum; call the tool.", ENCRYPTED)
        .with_tool_call_id("call_add_1", "add", json!({"a": 2, "b": 2}))
        .with_usage(1200, 300, 1000)
        .with_reasoning_tokens(120)
}

const REASONING_USAGE: Usage = Usage {
    uncached_input_tokens: 200,
    cached_input_tokens: 1000,
    cache_write_input_tokens: 0,
    cache_write_1h_input_tokens: 0,
    output_tokens: 300,
    reasoning_tokens: 120,
};

/// What the provider must receive for [`responses_body`] on the platform's key.
fn expected_upstream_body(stream: bool) -> Value {
    let body = responses_body();
    let mut expected = json!({
        "model": "gpt-4o-mini",
        "instructions": body["instructions"],
        "input": body["input"],
        "tools": body["tools"],
        "tool_choice": "auto",
        "reasoning": body["reasoning"],
        "metadata": body["metadata"],
        "max_output_tokens": HOLD_LIMIT,
        "store": false,
        "include": ["message.output_text.logprobs", "reasoning.encrypted_content"]
    });
    if stream {
        expected["stream"] = json!(true);
    }
    expected
}

/// The reasoning item as the fake sends it, its encrypted content intact.
fn assert_native_output(output: &Value) {
    assert_fields(
        &json!([
            {"id": ANY, "type": "reasoning",
             "summary": [{"type": "summary_text", "text": "The user wants a sum; call the tool."}],
             "encrypted_content": ENCRYPTED},
            {"id": ANY, "type": "message", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "Calling add.", "annotations": [], "logprobs": []}]},
            {"id": ANY, "type": "function_call", "status": "completed", "call_id": "call_add_1",
             "name": "add", "arguments": "{\"a\":2,\"b\":2}"}
        ]),
        output,
    );
}

fn reasoning_text(chunks: &[ChatCompletionChunk]) -> Vec<String> {
    chunks
        .iter()
        .flat_map(|chunk| &chunk.choices)
        .filter_map(|choice| choice.delta.extra.get(REASONING_CONTENT))
        .map(|text| text.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn native_request_goes_to_responses_and_comes_back_as_a_completion() {
    let fake = FakeUpstream::start().await;
    fake.push(reasoning_reply());
    let completion = client()
        .complete(&native_target(&fake), &native_request(responses_body()))
        .await
        .unwrap();

    let recorded = only_request(&fake);
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.path, "/v1/responses");
    assert_eq!(recorded.header("accept"), Some("application/json"));
    assert_auth(FORMAT, &recorded);
    // The model replaced, the hold's limit (not the client's 50000), stored by Switchboard
    // and not upstream, the reasoning included, the continuation id gone (its items are
    // in `input` already), the unpriced field dropped.
    assert_fields(&expected_upstream_body(false), &recorded.body);

    let message = &completion.response.choices[0].message;
    assert_eq!(message.content.as_deref(), Some("Calling add."));
    let calls = message.tool_calls.as_ref().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].id, "call_add_1");
    assert_eq!(calls[0].kind, "function");
    assert_eq!(calls[0].function.name, "add");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].function.arguments).unwrap(),
        json!({"a": 2, "b": 2})
    );
    assert_eq!(
        message.extra[REASONING_CONTENT],
        "The user wants a sum; call the tool."
    );
    assert_eq!(
        completion.response.finish_reason(),
        Some(FinishReason::ToolCalls)
    );
    assert!(completion.response.id.starts_with("resp_fake"));
    assert_eq!(completion.response.model, "gpt-4o-mini");

    assert_eq!(completion.usage, REASONING_USAGE);
    assert!(!completion.usage_estimated);
    let openai = completion.response.usage.as_ref().unwrap();
    assert_eq!(openai.prompt_tokens, 1200);
    assert_eq!(openai.completion_tokens, 300);
    assert_eq!(openai.total_tokens, 1500);
    assert_eq!(
        openai.prompt_tokens_details.as_ref().unwrap().cached_tokens,
        1000
    );
    assert_native_output(completion.response.native_output.as_ref().unwrap());
}

#[tokio::test]
async fn native_output_is_exactly_what_the_provider_sent() {
    let fake = FakeUpstream::start().await;
    // Items the canonical answer has no place for (a custom tool call, annotations, a
    // refusal part) survive untouched.
    let output = json!([
        {"id": "rs_abc", "type": "reasoning", "summary": [], "encrypted_content": ENCRYPTED, "status": null},
        {"id": "msg_abc", "type": "message", "status": "completed", "role": "assistant", "phase": "final_answer",
         "content": [{"type": "output_text", "text": "See ", "annotations": [{"type": "url_citation", "url": "https://example.test", "start_index": 0, "end_index": 3, "title": "x"}]},
                     {"type": "refusal", "refusal": "not that part"}]},
        {"id": "ctc_abc", "type": "custom_tool_call", "call_id": "call_c", "name": "apply_patch", "input": "*** Begin Patch"}
    ]);
    let body = json!({
        "id": "resp_upstream_1", "object": "response", "created_at": 1_765_000_000,
        "status": "completed", "error": null, "incomplete_details": null,
        "model": "gpt-5-2025-08-07", "output": output,
        "usage": {"input_tokens": 50, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 10},
                  "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 12}, "total_tokens": 70}
    });
    fake.push(Step::raw(200, "application/json", body.to_string()));
    let completion = client()
        .complete(&native_target(&fake), &native_request(responses_body()))
        .await
        .unwrap();
    assert_eq!(completion.response.native_output.as_ref(), Some(&output));
    let message = &completion.response.choices[0].message;
    assert_eq!(message.content.as_deref(), Some("See "));
    assert_eq!(message.refusal.as_deref(), Some("not that part"));
    assert_eq!(message.tool_calls, None);
    // A client-run custom tool call ends the turn for tools.
    assert_eq!(
        completion.response.finish_reason(),
        Some(FinishReason::ToolCalls)
    );
    assert_eq!(completion.response.model, "gpt-5-2025-08-07");
    assert_eq!(completion.response.created, 1_765_000_000);
    // Every token in one bucket: cache writes are input at the input price, as on chat.
    assert_eq!(
        completion.usage,
        Usage {
            uncached_input_tokens: 50,
            output_tokens: 20,
            reasoning_tokens: 12,
            ..Usage::default()
        }
    );
}

#[tokio::test]
async fn native_stream_gives_deltas_in_order_and_usage_and_output_at_the_end() {
    let fake = FakeUpstream::start().await;
    fake.push(reasoning_reply());
    fake.push(reasoning_reply());
    let target = native_target(&fake);
    let client = client();
    let mut body = responses_body();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_obfuscation": false});
    let request = native_request(body);
    let (chunks, end) = collect(client.stream(&target, &request).await.unwrap()).await;

    let recorded = only_request(&fake);
    assert_eq!(recorded.path, "/v1/responses");
    assert_eq!(recorded.header("accept"), Some("text/event-stream"));
    let mut expected = expected_upstream_body(true);
    expected["stream_options"] = json!({"include_obfuscation": false});
    assert_fields(&expected, &recorded.body);

    assert!(end.error.is_none(), "{:?}", end.error);
    assert_eq!(end.usage, REASONING_USAGE);
    assert!(!end.usage_estimated);
    assert_eq!(end.finish_reason, Some(FinishReason::ToolCalls));

    // The opening role chunk, the reasoning, the text, the tool call, then the end.
    let first = &chunks[0].choices[0].delta;
    assert_eq!(first.role.as_deref(), Some("assistant"));
    assert!(chunks[0].id.starts_with("resp_fake"));
    let order: Vec<&str> = chunks
        .iter()
        .flat_map(|chunk| &chunk.choices)
        .filter_map(|choice| {
            let delta = &choice.delta;
            if delta.extra.contains_key(REASONING_CONTENT) {
                Some("reasoning")
            } else if delta.content.as_deref().is_some_and(|t| !t.is_empty()) {
                Some("text")
            } else if delta.tool_calls.is_some() {
                Some("tool")
            } else {
                None
            }
        })
        .collect();
    let mut deduped = order.clone();
    deduped.dedup();
    assert_eq!(deduped, ["reasoning", "text", "tool"], "{order:?}");
    assert_eq!(
        reasoning_text(&chunks),
        [
            "The ", "user ", "wants ", "a ", "sum; ", "call ", "the ", "tool."
        ]
    );
    let assembled = assemble(&chunks);
    assert_eq!(assembled.text, "Calling add.");
    assert_eq!(
        assembled.tool_calls,
        [(
            "call_add_1".to_owned(),
            "add".to_owned(),
            "{\"a\":2,\"b\":2}".to_owned()
        )]
    );
    // The first piece of the call carries its id and name; the others only arguments.
    let pieces: Vec<_> = chunks
        .iter()
        .flat_map(|chunk| &chunk.choices)
        .filter_map(|choice| choice.delta.tool_calls.as_ref())
        .flatten()
        .collect();
    assert!(pieces.len() >= 2);
    assert_eq!(pieces[0].id.as_deref(), Some("call_add_1"));
    assert!(pieces[1..].iter().all(|p| p.id.is_none()));

    // Only the last chunk carries the output items, with the finish reason.
    let (last, rest) = chunks.split_last().unwrap();
    assert!(rest.iter().all(|chunk| chunk.native_output.is_none()));
    assert_eq!(last.finish_reason(), Some(FinishReason::ToolCalls));
    assert_native_output(last.native_output.as_ref().unwrap());

    // The same answer not streamed: the same usage and finish.
    let completion = client
        .complete(&target, &native_request(responses_body()))
        .await
        .unwrap();
    assert_eq!(completion.usage, end.usage);
    assert_eq!(completion.response.finish_reason(), end.finish_reason);
}

#[tokio::test]
async fn a_cut_native_stream_is_an_error_with_usage_counted_so_far() {
    let fake = FakeUpstream::start().await;
    let text = "alpha beta gamma delta epsilon zeta eta theta";
    // created, in_progress, item added, part added, "alpha ", "beta ": then the cut.
    fake.push(Step::cut_stream(
        Reply::text(text).with_usage(500, 12, 0),
        6,
    ));
    let request = native_request(responses_body());
    let (chunks, end) = collect(
        client()
            .stream(&native_target(&fake), &request)
            .await
            .unwrap(),
    )
    .await;
    let assembled = assemble(&chunks);
    assert_eq!(assembled.text, "alpha beta ");
    assert!(chunks.iter().all(|chunk| chunk.native_output.is_none()));
    let error = end.error.expect("a cut stream ends with an error");
    assert!(
        matches!(error, ProviderError::StreamInterrupted { .. }),
        "{error:?}"
    );
    assert!(error.retryable());
    assert!(end.usage_estimated);
    assert_eq!(end.finish_reason, None);
    assert_eq!(end.usage.output_tokens, 3); // 11 characters / 4, rounded up
    assert_eq!(end.usage.input_tokens(), request.estimated_prompt_tokens());
}

#[tokio::test]
async fn a_native_stream_that_ends_cleanly_before_response_completed_is_cut() {
    let fake = FakeUpstream::start().await;
    let body = concat!(
        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"output\":[]}}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"output_index\":0,\"content_index\":0,\"delta\":\"Hello\"}\n\n",
        "event: response.output_text.done\ndata: {\"type\":\"response.output_text.done\",\"sequence_number\":2,\"output_index\":0,\"content_index\":0,\"text\":\"Hello\"}\n\n",
    );
    fake.push(Step::raw(200, "text/event-stream", body));
    let (chunks, end) = collect(
        client()
            .stream(&native_target(&fake), &native_request(responses_body()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(assemble(&chunks).text, "Hello");
    let error = end.error.unwrap();
    assert!(
        matches!(error, ProviderError::StreamInterrupted { .. }),
        "{error:?}"
    );
    assert!(end.usage_estimated);
    assert_eq!(end.usage.output_tokens, 2);
}

#[tokio::test]
async fn failed_and_error_events_end_the_native_stream_with_an_error() {
    let fake = FakeUpstream::start().await;
    let failed = concat!(
        "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"output\":[]}}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"content_index\":0,\"delta\":\"Par\"}\n\n",
        "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"id\":\"resp_1\",\"status\":\"failed\",\"output\":[],\"error\":{\"code\":\"server_error\",\"message\":\"The model had an error.\"}}}\n\n",
    );
    let refused = "event: error\ndata: {\"type\":\"error\",\"code\":\"invalid_prompt\",\"message\":\"The prompt was refused.\",\"param\":null,\"sequence_number\":1}\n\n";
    fake.push(Step::raw(200, "text/event-stream", failed));
    fake.push(Step::raw(200, "text/event-stream", refused));
    let target = native_target(&fake);
    let request = native_request(responses_body());

    let (chunks, end) = collect(client().stream(&target, &request).await.unwrap()).await;
    assert_eq!(assemble(&chunks).text, "Par");
    let error = end.error.unwrap();
    assert!(
        matches!(
            &error,
            ProviderError::StreamError {
                retryable: true,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("The model had an error."));
    assert!(error.is_provider_failure());

    let (_, end) = collect(client().stream(&target, &request).await.unwrap()).await;
    let error = end.error.unwrap();
    assert!(!error.retryable(), "{error:?}");
    assert!(error.to_string().contains("The prompt was refused."));
}

#[tokio::test]
async fn malformed_native_answers_are_retryable_invalid_responses() {
    let fake = FakeUpstream::start().await;
    let target = native_target(&fake);
    let request = native_request(responses_body());
    fake.push(Step::Malformed);
    let error = client().complete(&target, &request).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::InvalidResponse { .. }),
        "{error:?}"
    );
    assert!(error.retryable());

    fake.push(Step::Malformed);
    let (chunks, end) = collect(client().stream(&target, &request).await.unwrap()).await;
    assert!(chunks.iter().all(|c| !c.has_content()));
    let error = end.error.unwrap();
    assert!(
        matches!(error, ProviderError::InvalidResponse { .. }),
        "{error:?}"
    );
    assert!(error.retryable());
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.path == "/v1/responses")
            .count(),
        2
    );
}

#[tokio::test]
async fn status_errors_from_responses_map_like_chat_completions() {
    let fake = FakeUpstream::start().await;
    let target = native_target(&fake);
    let request = native_request(responses_body());

    fake.push(Step::rate_limited("7"));
    let error = client().complete(&target, &request).await.unwrap_err();
    assert_eq!(error.upstream_status(), Some(429));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
    assert!(error.retryable());
    assert!(error.is_provider_failure());
    assert_no_key(&error);

    fake.push(Step::rate_limited("3"));
    let error = client().stream(&target, &request).await.unwrap_err();
    assert_eq!(error.upstream_status(), Some(429));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));

    fake.push(Step::status(500));
    let error = client().complete(&target, &request).await.unwrap_err();
    assert_eq!(error.upstream_status(), Some(500));
    assert!(error.retryable());
    assert!(
        error.to_string().contains("The server had an error"),
        "{error}"
    );
    assert!(matches!(ApiError::from(error), ApiError::Upstream(_)));

    fake.push(Step::status(500));
    let error = client().stream(&target, &request).await.unwrap_err();
    assert_eq!(error.upstream_status(), Some(500));
    assert!(error.retryable());

    fake.push(Step::status(400));
    let error = client().complete(&target, &request).await.unwrap_err();
    assert_eq!(error.upstream_status(), Some(400));
    assert!(!error.retryable());

    let echo = format!("Incorrect API key provided: {KEY}.");
    fake.push(Step::status_with_body(
        401,
        json!({"error": {"message": echo, "type": "invalid_request_error", "code": "invalid_api_key"}}),
    ));
    let error = client().complete(&target, &request).await.unwrap_err();
    assert!(error.is_auth_failure());
    assert_no_key(&error);

    let requests = fake.requests();
    assert_eq!(requests.len(), 6);
    assert!(requests.iter().all(|r| r.path == "/v1/responses"));
}

#[tokio::test]
async fn a_model_that_refuses_encrypted_reasoning_is_asked_again_without_it() {
    let fake = FakeUpstream::start().await;
    let target = native_target(&fake);
    let refusal = json!({"error": {"message": "Encrypted content is not supported with this model.",
        "type": "invalid_request_error", "param": "include", "code": null}});
    let mut body = responses_body();
    body["include"] = json!([]);

    // Not streamed, then streamed: one refusal each, then the answer.
    fake.push(Step::status_with_body(400, refusal.clone()));
    fake.push(Reply::text("Four."));
    let completion = client()
        .complete(&target, &native_request(body.clone()))
        .await
        .unwrap();
    assert_eq!(
        completion.response.choices[0].message.content.as_deref(),
        Some("Four.")
    );
    fake.push(Step::status_with_body(400, refusal.clone()));
    fake.push(Reply::text("Four."));
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (chunks, end) = collect(
        client()
            .stream(&target, &native_request(streamed))
            .await
            .unwrap(),
    )
    .await;
    assert!(end.error.is_none(), "{:?}", end.error);
    assert_eq!(assemble(&chunks).text, "Four.");
    let requests = fake.requests();
    assert_eq!(requests.len(), 4);
    for pair in requests.chunks(2) {
        assert_eq!(
            pair[0].body["include"],
            json!(["reasoning.encrypted_content"])
        );
        assert_eq!(pair[1].body.get("include"), None, "{}", pair[1].body);
        assert_eq!(pair[1].body["store"], false);
        assert_eq!(pair[1].body["max_output_tokens"], HOLD_LIMIT);
    }

    // The client asked for it itself: the refusal is the answer, no second call.
    fake.clear_requests();
    fake.push(Step::status_with_body(400, refusal));
    body["include"] = json!(["reasoning.encrypted_content"]);
    let error = client()
        .complete(&target, &native_request(body))
        .await
        .unwrap_err();
    assert_eq!(error.upstream_status(), Some(400));
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn the_fake_sends_encrypted_content_only_when_included() {
    let fake = FakeUpstream::start().await;
    fake.push(reasoning_reply());
    let mut body = responses_body();
    body["include"] = json!([]);
    // Switchboard always includes it, so a direct call shows the fake's side.
    let response = reqwest::Client::new()
        .post(format!("{}/responses", fake.openai_base_url()))
        .json(&json!({"model": "gpt-5", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "response");
    assert_eq!(answer["output"][0]["type"], "reasoning");
    assert_eq!(answer["output"][0].get("encrypted_content"), None);
    // A body without `input` is refused like the real API does.
    let response = reqwest::Client::new()
        .post(format!("{}/responses", fake.openai_base_url()))
        .json(&json!({"model": "gpt-5"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // On the user's own key the made-up field passes; Switchboard's own state does not.
    let mut own_key = native_target(&fake);
    own_key.forward_unpriced_fields = true;
    fake.clear_requests();
    client()
        .complete(&own_key, &native_request(body))
        .await
        .unwrap();
    let sent = only_request(&fake).body;
    assert_eq!(sent["x_made_up_field"], "dropped on the platform's key");
    assert_eq!(sent.get("previous_response_id"), None);
    assert_eq!(sent["store"], false);
    assert_eq!(sent["include"], json!(["reasoning.encrypted_content"]));
}

#[tokio::test]
async fn incomplete_native_answers_finish_for_length_or_content_filter() {
    let fake = FakeUpstream::start().await;
    let target = native_target(&fake);
    let request = native_request(responses_body());
    for (reason, expected) in [
        (fake_upstream::FinishReason::Length, FinishReason::Length),
        (
            fake_upstream::FinishReason::ContentFilter,
            FinishReason::ContentFilter,
        ),
    ] {
        fake.push(Reply::text("cut").with_finish_reason(reason));
        let completion = client().complete(&target, &request).await.unwrap();
        assert_eq!(completion.response.finish_reason(), Some(expected));
        assert_eq!(
            completion.response.native_output.as_ref().unwrap()[0]["status"],
            "incomplete"
        );
        fake.push(Reply::text("cut").with_finish_reason(reason));
        let (chunks, end) = collect(client().stream(&target, &request).await.unwrap()).await;
        assert!(end.error.is_none(), "{:?}", end.error);
        assert_eq!(end.finish_reason, Some(expected));
        assert!(chunks.last().unwrap().native_output.is_some());
    }
}

#[tokio::test]
async fn built_in_tools_are_refused_on_the_platform_key_before_any_call() {
    let fake = FakeUpstream::start().await;
    let mut body = responses_body();
    body["tools"].as_array_mut().unwrap().push(
        json!({"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example.test"}),
    );
    let error = client()
        .complete(&native_target(&fake), &native_request(body))
        .await
        .unwrap_err();
    assert_eq!(error.param(), Some("tools[1].type"));
    assert!(!error.retryable());
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn a_request_without_the_native_body_still_goes_to_chat_completions() {
    let fake = FakeUpstream::start().await;
    let target = native_target(&fake);
    let request = chat_request(&responses_body());
    assert!(request.native_responses.is_none());
    let completion = client().complete(&target, &request).await.unwrap();
    assert_eq!(completion.response.native_output, None);
    assert_eq!(only_request(&fake).path, "/v1/chat/completions");

    fake.clear_requests();
    let (chunks, end) = collect(client().stream(&target, &request).await.unwrap()).await;
    assert!(end.error.is_none());
    assert!(chunks.iter().all(|chunk| chunk.native_output.is_none()));
    assert_eq!(only_request(&fake).path, "/v1/chat/completions");
}

#[tokio::test]
async fn a_native_request_to_a_provider_without_the_responses_api_is_translated() {
    let fake = FakeUpstream::start().await;
    let mut target = native_target(&fake);
    target.responses_api = false;
    fake.push(reasoning_reply());
    let request = native_request(responses_body());
    let completion = client().complete(&target, &request).await.unwrap();
    assert_eq!(completion.response.native_output, None);
    let recorded = only_request(&fake);
    assert_eq!(recorded.path, "/v1/chat/completions");
    assert_eq!(recorded.body["messages"][1]["content"], "Add 2 and 2.");
    assert_eq!(recorded.body["max_completion_tokens"], HOLD_LIMIT);
    assert_eq!(recorded.body.get("input"), None);
    assert_eq!(recorded.body.get("include"), None);

    fake.clear_requests();
    let mut body = responses_body();
    body["stream"] = json!(true);
    let (_, end) = collect(
        client()
            .stream(&target, &native_request(body))
            .await
            .unwrap(),
    )
    .await;
    assert!(end.error.is_none());
    assert_eq!(only_request(&fake).path, "/v1/chat/completions");

    // Another format never takes the native path, whatever the flag says.
    let fake = FakeUpstream::start().await;
    let mut anthropic = providers_support::target(ApiFormat::Anthropic, &fake);
    anthropic.responses_api = true;
    client()
        .complete(&anthropic, &native_request(responses_body()))
        .await
        .unwrap();
    assert_eq!(only_request(&fake).path, "/v1/messages");
}
