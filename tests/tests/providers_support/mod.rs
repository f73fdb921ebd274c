//! Helpers shared by the `providers_*` integration tests: fixtures, targets against the
//! fake upstream, field-by-field JSON comparison, and stream collection.

#![allow(dead_code)]

pub mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use switchboard_core::catalog::{ApiFormat, AuthType};
use switchboard_core::providers::{
    ChatCompletionChunk, ChatRequest, ChunkStream, FinishReason, ProviderClient, StreamEnd,
    StreamEvent, Timeouts, UpstreamTarget,
};
use switchboard_core::secret::Secret;
use switchboard_tests::fake_upstream::{FakeUpstream, RecordedRequest};

/// The provider key every target uses; tests assert it never leaks.
pub const KEY: &str = "sk-test-Xq7LmN2pR9sT4vW8yZ1bC3dF5gH6jK0a";
/// Placeholder in expected fixtures: any value, but the field must be there.
pub const ANY: &str = "<any>";

pub fn fixture_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/providers")
        .join(relative)
}

pub fn fixture(relative: &str) -> Value {
    let path = fixture_path(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {relative} is not JSON: {e}"))
}

pub fn fixture_bytes(relative: &str) -> Vec<u8> {
    std::fs::read(fixture_path(relative)).unwrap()
}

/// A canonical client request from `requests/`, validated.
pub fn request(name: &str) -> ChatRequest {
    let request: ChatRequest = serde_json::from_value(fixture(&format!("requests/{name}.json")))
        .unwrap_or_else(|e| panic!("requests/{name}.json does not parse: {e}"));
    request.validate().unwrap();
    request
}

pub fn request_from(value: Value) -> ChatRequest {
    let request: ChatRequest = serde_json::from_value(value).unwrap();
    request.validate().unwrap();
    request
}

pub fn model_for(format: ApiFormat) -> &'static str {
    match format {
        ApiFormat::OpenAi => "gpt-4o-mini",
        ApiFormat::Anthropic => "claude-sonnet-4-5",
        ApiFormat::Gemini => "gemini-2.0-flash",
        ApiFormat::Bedrock => "amazon.nova-pro-v1:0",
    }
}

pub fn target(format: ApiFormat, fake: &FakeUpstream) -> UpstreamTarget {
    let (base_url, auth_type) = match format {
        ApiFormat::OpenAi => (fake.openai_base_url(), AuthType::Bearer),
        ApiFormat::Anthropic => (fake.anthropic_base_url(), AuthType::XApiKey),
        ApiFormat::Gemini => (fake.gemini_base_url(), AuthType::XGoogApiKey),
        ApiFormat::Bedrock => (fake.bedrock_base_url(), AuthType::AwsSigv4),
    };
    UpstreamTarget {
        api_format: format,
        base_url,
        auth_type,
        model_id: model_for(format).to_owned(),
        api_key: Some(Secret::new(KEY)),
        // Only the format that requires an output limit gets one by default (the chat
        // run sets the hold's limit for every format; see tests/tests/pricing.rs).
        max_output_tokens: (format == ApiFormat::Anthropic).then_some(8192),
        forward_unpriced_fields: false,
        auto_cache_control: false,
        traceparent: None,
        responses_api: false,
        account_tag: None,
    }
}

pub fn client() -> ProviderClient {
    ProviderClient::new(Timeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_secs(5),
        attempt: Duration::from_secs(10),
        stream_idle: Duration::from_secs(5),
    })
    .unwrap()
}

/// Asserts `actual` equals `expected` field by field, naming the first differing path.
/// Objects must have exactly the same keys; the string `"<any>"` in `expected` accepts any
/// value (the key must still be present).
pub fn assert_fields(expected: &Value, actual: &Value) {
    compare(expected, actual, "$");
}

fn compare(expected: &Value, actual: &Value, path: &str) {
    if expected.as_str() == Some(ANY) {
        return;
    }
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let child = format!("{path}.{key}");
                match a.get(key) {
                    Some(actual) => compare(value, actual, &child),
                    None => panic!("{child}: missing (expected {value})"),
                }
            }
            for key in a.keys() {
                assert!(
                    e.contains_key(key),
                    "{path}.{key}: unexpected field (value {})",
                    a[key]
                );
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            assert_eq!(
                e.len(),
                a.len(),
                "{path}: expected {} elements, got {}: {actual}",
                e.len(),
                a.len()
            );
            for (i, (e, a)) in e.iter().zip(a).enumerate() {
                compare(e, a, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(expected, actual, "{path}: values differ"),
    }
}

/// Every chunk, then the end.
pub async fn collect(mut stream: ChunkStream) -> (Vec<ChatCompletionChunk>, StreamEnd) {
    let mut chunks = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            StreamEvent::Chunk(chunk) => chunks.push(chunk),
            StreamEvent::End(end) => {
                assert!(stream.next().await.is_none(), "items after End");
                return (chunks, end);
            }
        }
    }
    panic!("the stream ended without an End item");
}

/// The answer reassembled from chunks, as a client would.
#[derive(Debug, Default, PartialEq)]
pub struct Assembled {
    pub text: String,
    /// (id, name, arguments) per tool-call index.
    pub tool_calls: Vec<(String, String, String)>,
    pub finish_reason: Option<FinishReason>,
}

pub fn assemble(chunks: &[ChatCompletionChunk]) -> Assembled {
    let mut out = Assembled::default();
    for chunk in chunks {
        for choice in &chunk.choices {
            if let Some(text) = &choice.delta.content {
                out.text.push_str(text);
            }
            for call in choice.delta.tool_calls.iter().flatten() {
                let index = call.index as usize;
                while out.tool_calls.len() <= index {
                    out.tool_calls.push(Default::default());
                }
                let entry = &mut out.tool_calls[index];
                if let Some(id) = &call.id {
                    entry.0 = id.clone();
                }
                if let Some(function) = &call.function {
                    if let Some(name) = &function.name {
                        entry.1.push_str(name);
                    }
                    if let Some(arguments) = &function.arguments {
                        entry.2.push_str(arguments);
                    }
                }
            }
            if let Some(reason) = choice.finish_reason {
                out.finish_reason = Some(reason);
            }
        }
    }
    out
}

/// The one completion request the fake received.
pub fn only_request(fake: &FakeUpstream) -> RecordedRequest {
    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "expected exactly one upstream request");
    requests.into_iter().next().unwrap()
}

/// The key travels in the format's auth header and nowhere else (URL, query, body).
pub fn assert_auth(format: ApiFormat, recorded: &RecordedRequest) {
    match format {
        ApiFormat::OpenAi => {
            assert_eq!(
                recorded.header("authorization"),
                Some(format!("Bearer {KEY}").as_str())
            );
            assert_eq!(recorded.header("x-api-key"), None);
        }
        ApiFormat::Anthropic => {
            assert_eq!(recorded.header("x-api-key"), Some(KEY));
            assert_eq!(recorded.header("anthropic-version"), Some("2023-06-01"));
            assert_eq!(recorded.header("authorization"), None);
        }
        ApiFormat::Gemini => {
            assert_eq!(recorded.header("x-goog-api-key"), Some(KEY));
            assert_eq!(recorded.header("authorization"), None);
            assert_eq!(recorded.query_param("key"), None);
        }
        ApiFormat::Bedrock => unreachable!("signed, not keyed: tests/tests/providers_bedrock.rs"),
    }
    assert!(!recorded.path.contains(KEY));
    assert!(!recorded.query.as_deref().unwrap_or_default().contains(KEY));
    assert!(!String::from_utf8_lossy(&recorded.raw_body).contains(KEY));
}

/// The error's Display and Debug never contain the key nor a recognisable part of it.
pub fn assert_no_key<E: std::fmt::Display + std::fmt::Debug>(error: &E) {
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(KEY), "key leaked: {shown}");
    assert!(
        !shown.contains(&KEY[8..28]),
        "part of the key leaked: {shown}"
    );
}
