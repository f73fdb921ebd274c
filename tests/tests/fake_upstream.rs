//! Tests of the fake upstream provider server (and the moto helper) themselves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use switchboard_tests::fake_upstream::{
    DEFAULT_COMPLETION_TOKENS, DEFAULT_PROMPT_TOKENS, DEFAULT_TEXT, FakeUpstream, FinishReason,
    Reply, Step,
};
use switchboard_tests::moto::MotoServer;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct SseEvent {
    event: Option<String>,
    data: String,
}

impl SseEvent {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {}", self.data))
    }
}

/// Parses an SSE body (LF or CRLF line endings) into events.
fn parse_sse(text: &str) -> Vec<SseEvent> {
    let text = text.replace("\r\n", "\n");
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    event = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
                }
            }
            SseEvent {
                event,
                data: data.join("\n"),
            }
        })
        .collect()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn openai_body(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": stream,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null }
    })
}

fn anthropic_body(stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": stream
    })
}

fn gemini_body() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]})
}

async fn openai_chat(fake: &FakeUpstream, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", fake.openai_base_url()))
        .bearer_auth("sk-test-openai")
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn anthropic_messages(fake: &FakeUpstream, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/messages", fake.anthropic_base_url()))
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn gemini_generate(fake: &FakeUpstream, model: &str, stream: bool) -> reqwest::Response {
    let url = if stream {
        format!(
            "{}/models/{model}:streamGenerateContent?alt=sse",
            fake.gemini_base_url()
        )
    } else {
        format!("{}/models/{model}:generateContent", fake.gemini_base_url())
    };
    client()
        .post(url)
        .header("x-goog-api-key", "gemini-test-key")
        .json(&gemini_body())
        .send()
        .await
        .unwrap()
}

/// Reads the whole body, or up to the first error: (text, ended with an error).
async fn read_body(response: reqwest::Response) -> (String, bool) {
    let mut stream = response.bytes_stream();
    let mut bytes = Vec::new();
    let mut errored = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(_) => {
                errored = true;
                break;
            }
        }
    }
    (String::from_utf8(bytes).unwrap(), errored)
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn cached_reply() -> Reply {
    Reply::text("The quick brown fox jumps.").with_usage(100, 20, 30)
}

// ---------------------------------------------------------------------------
// OpenAI
// ---------------------------------------------------------------------------

#[tokio::test]
async fn openai_json_completion() {
    let fake = FakeUpstream::start().await;
    let response = openai_chat(&fake, &openai_body(false)).await;
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with("application/json"));
    let body: Value = response.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(body["model"], "gpt-4o-mini");
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], DEFAULT_TEXT);
    assert!(choice["message"].get("tool_calls").is_none());
    assert_eq!(choice["finish_reason"], "stop");
    let usage = &body["usage"];
    assert_eq!(usage["prompt_tokens"], DEFAULT_PROMPT_TOKENS);
    assert_eq!(usage["completion_tokens"], DEFAULT_COMPLETION_TOKENS);
    assert_eq!(
        usage["total_tokens"],
        DEFAULT_PROMPT_TOKENS + DEFAULT_COMPLETION_TOKENS
    );
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
}

#[tokio::test]
async fn openai_json_with_usage_and_finish_reason() {
    let fake = FakeUpstream::start().await;
    fake.push(cached_reply().with_finish_reason(FinishReason::Length));
    let body: Value = openai_chat(&fake, &openai_body(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "The quick brown fox jumps."
    );
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["prompt_tokens"], 100);
    assert_eq!(body["usage"]["completion_tokens"], 20);
    assert_eq!(body["usage"]["total_tokens"], 120);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 30);
}

#[tokio::test]
async fn openai_stream_with_usage_chunk() {
    let fake = FakeUpstream::start().await;
    fake.push(cached_reply());
    fake.push(cached_reply());
    let response = openai_chat(&fake, &openai_body(true)).await;
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with("text/event-stream"));
    let (text, errored) = read_body(response).await;
    assert!(!errored);
    let events = parse_sse(&text);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(SseEvent::json)
        .collect();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-4o-mini");
        assert_eq!(chunk["id"], chunks[0]["id"]);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let contents: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|s| !s.is_empty())
        .collect();
    assert!(contents.len() >= 3, "content split in several chunks");
    assert_eq!(contents.concat(), "The quick brown fox jumps.");

    // Final choice chunk, then the usage chunk with no choices.
    let usage_chunk = &chunks[chunks.len() - 1];
    let final_chunk = &chunks[chunks.len() - 2];
    assert_eq!(final_chunk["choices"][0]["finish_reason"], "stop");
    assert!(final_chunk["usage"].is_null());
    assert_eq!(usage_chunk["choices"], json!([]));
    // Streamed usage equals the non-streamed usage of the same reply.
    let plain: Value = openai_chat(&fake, &openai_body(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(usage_chunk["usage"], plain["usage"]);
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 100);
    assert_eq!(
        usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"],
        30
    );
    // Only the last choice chunk has a finish_reason.
    let finished = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .count();
    assert_eq!(finished, 1);
}

#[tokio::test]
async fn openai_stream_without_include_usage() {
    let fake = FakeUpstream::start().await;
    let mut body = openai_body(true);
    body.as_object_mut().unwrap().remove("stream_options");
    let (text, _) = read_body(openai_chat(&fake, &body).await).await;
    let events = parse_sse(&text);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    for event in &events[..events.len() - 1] {
        let chunk = event.json();
        assert!(chunk.get("usage").is_none());
        assert_eq!(chunk["choices"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn openai_tool_call_json_and_stream() {
    let fake = FakeUpstream::start().await;
    let reply = Reply::tool_call("get_weather", json!({"city": "Paris", "unit": "celsius"}));
    fake.push(reply.clone());
    fake.push(reply);

    let body: Value = openai_chat(&fake, &openai_body(false))
        .await
        .json()
        .await
        .unwrap();
    let message = &body["choices"][0]["message"];
    assert!(message["content"].is_null());
    let call = &message["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Paris", "unit": "celsius"}));
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");

    let (text, _) = read_body(openai_chat(&fake, &openai_body(true)).await).await;
    let events = parse_sse(&text);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(SseEvent::json)
        .collect();
    let first_call = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(first_call["index"], 0);
    assert_eq!(first_call["id"], call["id"]);
    assert_eq!(first_call["function"]["name"], "get_weather");
    let pieces: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .filter(|s| !s.is_empty())
        .collect();
    assert!(pieces.len() >= 2, "arguments streamed in several deltas");
    let streamed: Value = serde_json::from_str(&pieces.concat()).unwrap();
    assert_eq!(streamed, arguments);
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str())
        .unwrap();
    assert_eq!(finish, "tool_calls");
}

#[tokio::test]
async fn openai_models_endpoint() {
    let fake = FakeUpstream::start().await;
    fake.push(Step::status(500)); // not consumed by the models endpoint
    let response = client()
        .get(format!("{}/models", fake.openai_base_url()))
        .bearer_auth("sk-test-openai")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "list");
    let model = &body["data"][0];
    assert_eq!(model["id"], "gpt-4o-mini");
    assert_eq!(model["object"], "model");
    assert!(model["created"].is_u64());
    assert!(model["owned_by"].is_string());
    assert_eq!(fake.pending_steps(), 1);
}

// ---------------------------------------------------------------------------
// Anthropic
// ---------------------------------------------------------------------------

#[tokio::test]
async fn anthropic_json_completion() {
    let fake = FakeUpstream::start().await;
    fake.push(cached_reply().with_cache_creation(10));
    let response = anthropic_messages(&fake, &anthropic_body(false)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "The quick brown fox jumps."}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert!(body["stop_sequence"].is_null());
    let usage = &body["usage"];
    // 100 prompt tokens = 60 uncached + 30 cache reads + 10 cache writes.
    assert_eq!(usage["input_tokens"], 60);
    assert_eq!(usage["cache_read_input_tokens"], 30);
    assert_eq!(usage["cache_creation_input_tokens"], 10);
    assert_eq!(usage["output_tokens"], 20);

    // Default reply and max_tokens finish.
    fake.push(Reply::text("cut").with_finish_reason(FinishReason::Length));
    let body: Value = anthropic_messages(&fake, &anthropic_body(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["stop_reason"], "max_tokens");
    let body: Value = anthropic_messages(&fake, &anthropic_body(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["content"][0]["text"], DEFAULT_TEXT);
    assert_eq!(body["usage"]["input_tokens"], DEFAULT_PROMPT_TOKENS);
    assert_eq!(body["usage"]["cache_read_input_tokens"], 0);
}

#[tokio::test]
async fn anthropic_stream() {
    let fake = FakeUpstream::start().await;
    fake.push(cached_reply().with_cache_creation(10));
    fake.push(cached_reply().with_cache_creation(10));
    let response = anthropic_messages(&fake, &anthropic_body(true)).await;
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with("text/event-stream"));
    let (text, errored) = read_body(response).await;
    assert!(!errored);
    let events = parse_sse(&text);
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    for event in &events {
        assert_eq!(event.json()["type"], event.event.as_deref().unwrap());
    }
    assert_eq!(names[..3], ["message_start", "content_block_start", "ping"]);
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let start = events[0].json();
    assert_eq!(start["message"]["model"], "claude-sonnet-4-5");
    assert_eq!(start["message"]["role"], "assistant");
    assert_eq!(start["message"]["content"], json!([]));
    assert_eq!(start["message"]["usage"]["input_tokens"], 60);
    assert_eq!(start["message"]["usage"]["cache_read_input_tokens"], 30);
    assert_eq!(start["message"]["usage"]["cache_creation_input_tokens"], 10);
    assert_eq!(
        events[1].json()["content_block"],
        json!({"type": "text", "text": ""})
    );
    let deltas: Vec<String> = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| {
            let data = e.json();
            assert_eq!(data["delta"]["type"], "text_delta");
            data["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(deltas.len() >= 3);
    assert_eq!(deltas.concat(), "The quick brown fox jumps.");
    let message_delta = events[events.len() - 2].json();
    assert_eq!(message_delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(message_delta["usage"]["output_tokens"], 20);

    // Same usage as the non-streamed answer.
    let plain: Value = anthropic_messages(&fake, &anthropic_body(false))
        .await
        .json()
        .await
        .unwrap();
    for key in [
        "input_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    ] {
        assert_eq!(start["message"]["usage"][key], plain["usage"][key]);
    }
    assert_eq!(
        message_delta["usage"]["output_tokens"],
        plain["usage"]["output_tokens"]
    );
}

#[tokio::test]
async fn anthropic_tool_call_json_and_stream() {
    let fake = FakeUpstream::start().await;
    let reply = Reply::tool_call("get_weather", json!({"city": "Paris"}));
    fake.push(reply.clone());
    fake.push(reply);

    let body: Value = anthropic_messages(&fake, &anthropic_body(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["stop_reason"], "tool_use");
    let block = &body["content"][0];
    assert_eq!(body["content"].as_array().unwrap().len(), 1);
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({"city": "Paris"}));

    let (text, _) = read_body(anthropic_messages(&fake, &anthropic_body(true)).await).await;
    let events = parse_sse(&text);
    let start = events
        .iter()
        .find(|e| e.event.as_deref() == Some("content_block_start"))
        .unwrap()
        .json();
    assert_eq!(start["content_block"]["type"], "tool_use");
    assert_eq!(start["content_block"]["name"], "get_weather");
    assert_eq!(start["content_block"]["id"], block["id"]);
    assert_eq!(start["content_block"]["input"], json!({}));
    let partials: Vec<String> = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| {
            let data = e.json();
            assert_eq!(data["delta"]["type"], "input_json_delta");
            data["delta"]["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(partials.len() >= 2);
    let input: Value = serde_json::from_str(&partials.concat()).unwrap();
    assert_eq!(input, json!({"city": "Paris"}));
    let message_delta = events
        .iter()
        .find(|e| e.event.as_deref() == Some("message_delta"))
        .unwrap()
        .json();
    assert_eq!(message_delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        events.last().unwrap().event.as_deref(),
        Some("message_stop")
    );
}

#[tokio::test]
async fn anthropic_models_endpoint() {
    let fake = FakeUpstream::start().await;
    let response = client()
        .get(format!("{}/models", fake.anthropic_base_url()))
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let model = &body["data"][0];
    assert_eq!(model["type"], "model");
    assert_eq!(model["id"], "claude-sonnet-4-5");
    assert!(model["display_name"].is_string());
    assert!(model["created_at"].is_string());
    assert_eq!(body["has_more"], false);
    assert_eq!(body["first_id"], "claude-sonnet-4-5");
    assert_eq!(body["last_id"], "claude-haiku-4-5");

    fake.set_models(&["claude-opus-4-1"]);
    let body: Value = client()
        .get(format!("{}/models", fake.anthropic_base_url()))
        .header("x-api-key", "sk-ant-test")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"][0]["id"], "claude-opus-4-1");
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------
// Gemini
// ---------------------------------------------------------------------------

#[tokio::test]
async fn gemini_json_completion() {
    let fake = FakeUpstream::start().await;
    fake.push(cached_reply());
    let response = gemini_generate(&fake, "gemini-2.0-flash", false).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let candidate = &body["candidates"][0];
    assert_eq!(candidate["content"]["role"], "model");
    assert_eq!(
        candidate["content"]["parts"],
        json!([{"text": "The quick brown fox jumps."}])
    );
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(candidate["index"], 0);
    let usage = &body["usageMetadata"];
    assert_eq!(usage["promptTokenCount"], 100);
    assert_eq!(usage["candidatesTokenCount"], 20);
    assert_eq!(usage["totalTokenCount"], 120);
    assert_eq!(usage["cachedContentTokenCount"], 30);
    assert_eq!(body["modelVersion"], "gemini-2.0-flash");

    let body: Value = gemini_generate(&fake, "gemini-2.0-flash", false)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["candidates"][0]["content"]["parts"][0]["text"],
        DEFAULT_TEXT
    );
    // Zero cached tokens are omitted, like the real API.
    assert!(
        body["usageMetadata"]
            .get("cachedContentTokenCount")
            .is_none()
    );
}

#[tokio::test]
async fn gemini_stream_sse() {
    let fake = FakeUpstream::start().await;
    fake.push(cached_reply());
    fake.push(cached_reply());
    let response = gemini_generate(&fake, "gemini-2.5-pro", true).await;
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with("text/event-stream"));
    let (text, errored) = read_body(response).await;
    assert!(!errored);
    let frames: Vec<Value> = parse_sse(&text).iter().map(SseEvent::json).collect();
    assert!(frames.len() >= 3);
    let (last, rest) = frames.split_last().unwrap();
    for frame in rest {
        assert!(frame.get("usageMetadata").is_none());
        assert!(frame["candidates"][0].get("finishReason").is_none());
    }
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    let texts: String = frames
        .iter()
        .map(|f| {
            f["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(texts, "The quick brown fox jumps.");
    assert_eq!(last["modelVersion"], "gemini-2.5-pro");

    let plain: Value = gemini_generate(&fake, "gemini-2.5-pro", false)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(last["usageMetadata"], plain["usageMetadata"]);
}

#[tokio::test]
async fn gemini_stream_without_alt_sse_is_a_json_array() {
    let fake = FakeUpstream::start().await;
    let response = client()
        .post(format!(
            "{}/models/gemini-2.0-flash:streamGenerateContent",
            fake.gemini_base_url()
        ))
        .json(&gemini_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let chunks = body.as_array().unwrap();
    assert!(chunks.len() >= 2);
    assert_eq!(
        chunks.last().unwrap()["candidates"][0]["finishReason"],
        "STOP"
    );
}

#[tokio::test]
async fn gemini_tool_call_json_and_stream() {
    let fake = FakeUpstream::start().await;
    let reply = Reply::tool_call("get_weather", json!({"city": "Paris"}));
    fake.push(reply.clone());
    fake.push(reply);

    let body: Value = gemini_generate(&fake, "gemini-2.0-flash", false)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["candidates"][0]["content"]["parts"],
        json!([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}])
    );
    assert_eq!(body["candidates"][0]["finishReason"], "STOP");

    let (text, _) = read_body(gemini_generate(&fake, "gemini-2.0-flash", true).await).await;
    let frames: Vec<Value> = parse_sse(&text).iter().map(SseEvent::json).collect();
    let last = frames.last().unwrap();
    assert_eq!(
        last["candidates"][0]["content"]["parts"][0]["functionCall"],
        json!({"name": "get_weather", "args": {"city": "Paris"}})
    );
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert!(last["usageMetadata"]["totalTokenCount"].is_u64());
}

#[tokio::test]
async fn gemini_models_endpoint() {
    let fake = FakeUpstream::start().await;
    let response = client()
        .get(format!("{}/models", fake.gemini_base_url()))
        .header("x-goog-api-key", "gemini-test-key")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let model = &body["models"][0];
    assert_eq!(model["name"], "models/gemini-2.0-flash");
    assert!(model["displayName"].is_string());
    assert!(
        model["supportedGenerationMethods"]
            .as_array()
            .unwrap()
            .contains(&json!("generateContent"))
    );
}

// ---------------------------------------------------------------------------
// Scripted faults
// ---------------------------------------------------------------------------

/// Sends one completion request in each format, after pushing `step` for each.
async fn each_format(fake: &FakeUpstream, step: Step, stream: bool) -> [reqwest::Response; 3] {
    fake.push(step.clone());
    let openai = openai_chat(fake, &openai_body(stream)).await;
    fake.push(step.clone());
    let anthropic = anthropic_messages(fake, &anthropic_body(stream)).await;
    fake.push(step);
    let gemini = gemini_generate(fake, "gemini-2.0-flash", stream).await;
    [openai, anthropic, gemini]
}

fn assert_error_shapes(bodies: &[Value; 3], status: u16, openai_type: &str, anthropic_type: &str) {
    let [openai, anthropic, gemini] = bodies;
    assert!(openai["error"]["message"].is_string());
    assert_eq!(openai["error"]["type"], openai_type);
    assert!(openai["error"].get("code").is_some());
    assert_eq!(anthropic["type"], "error");
    assert_eq!(anthropic["error"]["type"], anthropic_type);
    assert!(anthropic["error"]["message"].is_string());
    assert_eq!(gemini["error"]["code"], status);
    assert!(gemini["error"]["message"].is_string());
    assert!(gemini["error"]["status"].is_string());
}

async fn json_bodies(responses: [reqwest::Response; 3]) -> [Value; 3] {
    let [a, b, c] = responses;
    [
        a.json().await.unwrap(),
        b.json().await.unwrap(),
        c.json().await.unwrap(),
    ]
}

#[tokio::test]
async fn status_500_in_each_format() {
    let fake = FakeUpstream::start().await;
    let responses = each_format(&fake, Step::status(500), false).await;
    for response in &responses {
        assert_eq!(response.status(), 500);
        assert!(response.headers().get("retry-after").is_none());
    }
    let bodies = json_bodies(responses).await;
    assert_error_shapes(&bodies, 500, "server_error", "api_error");
    assert_eq!(bodies[2]["error"]["status"], "INTERNAL");
    // Same for stream requests: the error comes before any SSE.
    let responses = each_format(&fake, Step::status(503), true).await;
    for response in &responses {
        assert_eq!(response.status(), 503);
        assert!(content_type(response).starts_with("application/json"));
    }
    let bodies = json_bodies(responses).await;
    assert_eq!(bodies[1]["error"]["type"], "overloaded_error");
    assert_eq!(bodies[2]["error"]["status"], "UNAVAILABLE");
    // Custom body.
    fake.push(Step::status_with_body(400, json!({"custom": true})));
    let response = openai_chat(&fake, &openai_body(false)).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"custom": true})
    );
}

#[tokio::test]
async fn rate_limited_in_each_format() {
    let fake = FakeUpstream::start().await;
    let responses = each_format(&fake, Step::rate_limited("2"), false).await;
    for response in &responses {
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "2");
    }
    let bodies = json_bodies(responses).await;
    assert_error_shapes(&bodies, 429, "requests", "rate_limit_error");
    assert_eq!(bodies[0]["error"]["code"], "rate_limit_exceeded");
    assert_eq!(bodies[2]["error"]["status"], "RESOURCE_EXHAUSTED");
}

#[tokio::test]
async fn bad_request_gets_a_400_and_keeps_the_step() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::text("scripted"));
    // Anthropic requires max_tokens.
    let mut body = anthropic_body(false);
    body.as_object_mut().unwrap().remove("max_tokens");
    let response = anthropic_messages(&fake, &body).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    // Not JSON at all.
    let response = client()
        .post(format!("{}/chat/completions", fake.openai_base_url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    // Gemini without contents.
    let response = client()
        .post(format!(
            "{}/models/gemini-2.0-flash:generateContent",
            fake.gemini_base_url()
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["status"], "INVALID_ARGUMENT");
    // Unknown path.
    let response = client()
        .post(format!("{}/v1/nothing", fake.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    assert_eq!(fake.pending_steps(), 1);
    let body: Value = openai_chat(&fake, &openai_body(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "scripted");
    assert_eq!(fake.request_count(), 5);
}

#[tokio::test]
async fn delay_then_reply_and_client_timeout() {
    let fake = FakeUpstream::start().await;
    fake.push(Step::delayed_reply(
        Duration::from_millis(300),
        Reply::text("late"),
    ));
    let started = Instant::now();
    let body: Value = openai_chat(&fake, &openai_body(false))
        .await
        .json()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(body["choices"][0]["message"]["content"], "late");

    // A client with a shorter timeout gives up; the request is still recorded.
    fake.push(Step::delay(Duration::from_secs(2), Step::status(500)));
    let result = reqwest::Client::new()
        .post(format!("{}/messages", fake.anthropic_base_url()))
        .timeout(Duration::from_millis(200))
        .json(&anthropic_body(false))
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    assert_eq!(fake.request_count(), 2);
    assert_eq!(fake.pending_steps(), 0);
}

#[tokio::test]
async fn slow_stream_delays_frames() {
    let fake = FakeUpstream::start().await;
    fake.push(Step::slow_stream(
        Reply::text("one two three"),
        Duration::from_millis(60),
    ));
    let response = anthropic_messages(&fake, &anthropic_body(true)).await;
    // Headers (with the first frame) come at once, the other frames follow slowly.
    let headers_at = Instant::now();
    let (text, errored) = read_body(response).await;
    assert!(!errored);
    let events = parse_sse(&text);
    let gaps = u32::try_from(events.len() - 1).unwrap();
    assert!(headers_at.elapsed() >= Duration::from_millis(60) * gaps);
    assert_eq!(
        events.last().unwrap().event.as_deref(),
        Some("message_stop")
    );
}

#[tokio::test]
async fn malformed_json_and_stream() {
    let fake = FakeUpstream::start().await;
    for response in each_format(&fake, Step::Malformed, false).await {
        assert_eq!(response.status(), 200);
        assert!(content_type(&response).starts_with("application/json"));
        let text = response.text().await.unwrap();
        assert!(!text.is_empty());
        assert!(serde_json::from_str::<Value>(&text).is_err());
    }
    fake.push(Step::Malformed);
    let response = openai_chat(&fake, &openai_body(true)).await;
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with("text/event-stream"));
    let (text, _) = read_body(response).await;
    let events = parse_sse(&text);
    assert!(!events.is_empty());
    assert!(serde_json::from_str::<Value>(&events[0].data).is_err());
    assert!(events.iter().all(|e| e.data != "[DONE]"));
}

#[tokio::test]
async fn cut_stream_stops_without_end_marker() {
    let fake = FakeUpstream::start().await;
    let reply = Reply::text("one two three four five six");
    for response in each_format(&fake, Step::cut_stream(reply.clone(), 3), true).await {
        assert_eq!(response.status(), 200);
        let (text, errored) = read_body(response).await;
        assert!(errored, "the connection is aborted, not cleanly ended");
        let events = parse_sse(&text);
        assert_eq!(events.len(), 3, "{text}");
        for event in &events {
            let data = event.json();
            assert_ne!(data["type"], "message_stop");
            assert!(data["candidates"][0].get("finishReason").is_none());
        }
    }
    // More frames than the stream has: everything but the end marker.
    fake.push(Step::cut_stream(reply.clone(), 1000));
    let (text, errored) = read_body(openai_chat(&fake, &openai_body(true)).await).await;
    assert!(errored);
    let events = parse_sse(&text);
    assert!(events.len() > 3);
    assert!(events.iter().all(|e| e.data != "[DONE]"));
    // A non-streamed request gets half a body, then the connection drops.
    fake.push(Step::cut_stream(reply, 3));
    let response = openai_chat(&fake, &openai_body(false)).await;
    assert_eq!(response.status(), 200);
    let (text, errored) = read_body(response).await;
    assert!(errored);
    assert!(serde_json::from_str::<Value>(&text).is_err());
}

#[tokio::test]
async fn reset_closes_the_connection_without_a_response_and_keeps_serving() {
    let fake = FakeUpstream::start().await;
    for stream in [false, true] {
        fake.push(Step::reset());
        let result = client()
            .post(format!("{}/chat/completions", fake.openai_base_url()))
            .bearer_auth("sk-test-openai")
            .json(&openai_body(stream))
            .send()
            .await;
        let error = result.expect_err("no response at all");
        assert!(!error.is_timeout(), "{error:?}");
        assert!(error.status().is_none(), "{error:?}");
    }
    // The models route resets too.
    fake.push_models(Step::reset());
    let result = client()
        .get(format!("{}/models", fake.openai_base_url()))
        .bearer_auth("sk-test-openai")
        .send()
        .await;
    assert!(result.is_err());
    // The server is still up, and the requests were recorded.
    let response = openai_chat(&fake, &openai_body(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(fake.request_count(), 4);
}

#[tokio::test]
async fn queue_order_then_default() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::text("first"));
    fake.push(Step::status(500));
    fake.push(Reply::text("third"));
    fake.push(Step::raw(418, "text/plain", "teapot"));
    let first: Value = openai_chat(&fake, &openai_body(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["choices"][0]["message"]["content"], "first");
    let second = anthropic_messages(&fake, &anthropic_body(false)).await;
    assert_eq!(second.status(), 500);
    let third: Value = gemini_generate(&fake, "gemini-2.0-flash", false)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        third["candidates"][0]["content"]["parts"][0]["text"],
        "third"
    );
    let fourth = openai_chat(&fake, &openai_body(false)).await;
    assert_eq!(fourth.status(), 418);
    assert_eq!(content_type(&fourth), "text/plain");
    assert_eq!(fourth.text().await.unwrap(), "teapot");
    assert_eq!(fake.pending_steps(), 0);
    // Empty queue: the default reply, then a changed default.
    let fifth: Value = openai_chat(&fake, &openai_body(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fifth["choices"][0]["message"]["content"], DEFAULT_TEXT);
    fake.set_default(Reply::text("new default").with_usage(5, 6, 0));
    for _ in 0..2 {
        let body: Value = openai_chat(&fake, &openai_body(false))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "new default");
        assert_eq!(body["usage"]["total_tokens"], 11);
    }
}

#[tokio::test]
async fn models_endpoints_can_be_scripted() {
    let fake = FakeUpstream::start().await;
    fake.push_models(Step::status(500));
    fake.push_models(Step::rate_limited("7"));
    fake.push_models(Step::delay(
        Duration::from_millis(200),
        Step::Reply(Reply::default()),
    ));
    let openai_models = format!("{}/models", fake.openai_base_url());
    let response = client().get(&openai_models).send().await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["type"],
        "server_error"
    );
    let response = client()
        .get(format!("{}/models", fake.gemini_base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["status"],
        "RESOURCE_EXHAUSTED"
    );
    let started = Instant::now();
    let response = client()
        .get(format!("{}/models", fake.anthropic_base_url()))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["data"][0]["type"],
        "model"
    );
    assert_eq!(fake.pending_model_steps(), 0);
    // The completion queue was not touched: the default reply is served.
    let body: Value = openai_chat(&fake, &openai_body(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], DEFAULT_TEXT);
    // Queue empty again: the normal list.
    let response = client().get(&openai_models).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

// ---------------------------------------------------------------------------
// Recording
// ---------------------------------------------------------------------------

#[tokio::test]
async fn records_requests_with_headers_and_bodies() {
    let fake = FakeUpstream::start().await;
    openai_chat(&fake, &openai_body(false)).await;
    anthropic_messages(&fake, &anthropic_body(true))
        .await
        .text()
        .await
        .unwrap();
    client()
        .post(format!(
            "{}/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=query-key",
            fake.gemini_base_url()
        ))
        .header("X-Goog-Api-Key", "gemini-test-key")
        .json(&gemini_body())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    client()
        .get(format!("{}/models", fake.gemini_base_url()))
        .send()
        .await
        .unwrap();

    assert_eq!(fake.request_count(), 4);
    let requests = fake.requests();
    let openai = &requests[0];
    assert_eq!(openai.method, "POST");
    assert_eq!(openai.path, "/v1/chat/completions");
    assert_eq!(openai.query, None);
    assert_eq!(
        openai.header("authorization"),
        Some("Bearer sk-test-openai")
    );
    assert_eq!(
        openai.header("Authorization"),
        Some("Bearer sk-test-openai")
    );
    assert_eq!(openai.body, openai_body(false));
    assert_eq!(
        serde_json::from_slice::<Value>(&openai.raw_body).unwrap(),
        openai.body
    );

    let anthropic = &requests[1];
    assert_eq!(anthropic.path, "/v1/messages");
    assert_eq!(anthropic.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(anthropic.header("anthropic-version"), Some("2023-06-01"));
    assert!(anthropic.header("authorization").is_none());
    assert_eq!(anthropic.body["stream"], true);

    let gemini = &requests[2];
    assert_eq!(
        gemini.path,
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    );
    assert_eq!(gemini.query.as_deref(), Some("alt=sse&key=query-key"));
    assert_eq!(gemini.query_param("key"), Some("query-key"));
    assert_eq!(gemini.header("x-goog-api-key"), Some("gemini-test-key"));
    assert!(
        gemini
            .headers
            .iter()
            .any(|(name, _)| name == "x-goog-api-key")
    );
    assert_eq!(gemini.body, gemini_body());

    let models = &requests[3];
    assert_eq!(models.method, "GET");
    assert_eq!(models.path, "/v1beta/models");
    assert!(models.body.is_null());
    assert!(models.raw_body.is_empty());

    assert_eq!(fake.last_request().unwrap().path, "/v1beta/models");
    fake.clear_requests();
    assert_eq!(fake.request_count(), 0);
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn non_json_body_is_recorded_raw() {
    let fake = FakeUpstream::start().await;
    let response = client()
        .post(format!("{}/messages", fake.anthropic_base_url()))
        .body("plain text")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let request = fake.last_request().unwrap();
    assert!(request.body.is_null());
    assert_eq!(&request.raw_body[..], b"plain text");
}

#[tokio::test]
async fn stops_serving_on_drop() {
    let fake = FakeUpstream::start().await;
    let url = format!("{}/models", fake.openai_base_url());
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    drop(fake);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A fresh client (no pooled connection) cannot connect any more.
    let result = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(result.is_err());
}

// ---------------------------------------------------------------------------
// moto
// ---------------------------------------------------------------------------

#[tokio::test]
async fn moto_server_starts_and_answers() {
    let required = std::env::var_os("SWITCHBOARD_REQUIRE_MOTO").is_some();
    if let Err(error) = MotoServer::find_binary() {
        if required {
            panic!("SWITCHBOARD_REQUIRE_MOTO is set but {error}");
        }
        eprintln!("skipping moto_server_starts_and_answers: {error}");
        return;
    }
    let moto = MotoServer::start().await.expect("moto server starts");
    let endpoint = moto.endpoint_url();
    assert!(endpoint.starts_with("http://127.0.0.1:"));
    // An unsigned STS call: moto answers (2xx or 4xx), which shows it is up.
    let response = client()
        .post(format!("{endpoint}/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("Action=GetCallerIdentity&Version=2011-06-15")
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert!(
        status.is_success() || status.is_client_error(),
        "unexpected status {status}"
    );
    drop(moto);
}
