//! Clients' large output defaults (opencode and Claude Code send `max_tokens` 32,000,
//! litellm's Anthropic route 128,000) against models with smaller output limits: clamped
//! to the chosen model's limit, held and sent upstream at the clamp, and said so in
//! `_metadata.max_tokens_clamped_to` and `x-switchboard-max-tokens` (api.md). Before,
//! each was a 503 `no_available_provider` that clients retried as temporary. A prompt that
//! alone exceeds every candidate's context window is a 400 `context_length_exceeded`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;

use axum::body::Body;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchboard_tests::fake_upstream::Reply;
use switchboard_tests::gateway::{Gateway, parse_sse};

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// The amount of the one hold the user's request took (captured since).
async fn hold_amount(gw: &Gateway, user: &str) -> Decimal {
    gw.db
        .connect()
        .await
        .query_one(
            "SELECT amount_usd FROM credit_holds WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
}

async fn post(gw: &Gateway, path: &str, key: &str, body: &Value) -> (u16, http::HeaderMap, String) {
    let request = http::Request::post(path)
        .header("authorization", format!("Bearer {key}"))
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = gw.send(request).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn a_large_max_tokens_is_clamped_to_the_models_limit_held_and_sent_at_it() {
    let gw = Gateway::start().await;
    gw.upstream
        .set_default(Reply::text("Hi.").with_usage(20, 3, 0));
    // GPT-4 Turbo: 4,096 output tokens at most; $10 / $30 per 1M.
    for (i, field, requested) in [
        (0, "max_tokens", 32_000),
        (1, "max_completion_tokens", 128_000),
    ] {
        let user = format!("opencode-{i}");
        let key = gw.user(&user, "professional", "5").await;
        let body = json!({"model": "gpt-4-turbo", field: requested,
                          "messages": [{"role": "user", "content": "Say hi."}]});
        let (status, headers, answer) = gw.chat(&key, &body, &[]).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["_metadata"]["max_tokens_clamped_to"], 4096);
        assert_eq!(headers["x-switchboard-max-tokens"], "4096");
        // Sent upstream at the clamp, in the field the client used.
        let sent = gw.upstream.last_request().unwrap().body;
        assert_eq!(sent[field], 4096, "{sent}");
        // Held at the clamp: the output side is 4,096 × $30 / 1M, not 32,000 × $30 / 1M.
        let hold = hold_amount(&gw, &user).await;
        assert!(hold >= d("0.12288"), "{hold}");
        assert!(hold < d("0.1235"), "{hold}");
        // Charged for what was used.
        assert_eq!(answer["_metadata"]["cost_usd"], "0.00029");
        gw.assert_ledger_consistent(&user).await;
    }

    // Within the limit: sent as asked, nothing said.
    let key = gw.user("modest", "professional", "5").await;
    let body = json!({"model": "gpt-4-turbo", "max_tokens": 4096,
                      "messages": [{"role": "user", "content": "Say hi."}]});
    let (status, headers, answer) = gw.chat(&key, &body, &[]).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["_metadata"].get("max_tokens_clamped_to").is_none());
    assert!(headers.get("x-switchboard-max-tokens").is_none());
    assert_eq!(gw.upstream.last_request().unwrap().body["max_tokens"], 4096);
}

#[tokio::test]
async fn a_messages_stream_with_litellms_default_is_clamped_and_says_so() {
    let gw = Gateway::start().await;
    let key = gw.user("litellm", "professional", "5").await;
    gw.upstream
        .set_default(Reply::text("Hello.").with_usage(15, 2, 0));
    // Claude 3.5 Sonnet: 8,192 output tokens at most.
    let body = json!({"model": "claude-3-5-sonnet-20241022", "max_tokens": 128_000, "stream": true,
                      "messages": [{"role": "user", "content": "Hi"}]});
    let (status, headers, text) = post(&gw, "/v1/messages", &key, &body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["x-switchboard-max-tokens"], "8192");
    let events = parse_sse(&text);
    assert!(
        events
            .iter()
            .any(|(name, _)| name.as_deref() == Some("message_stop")),
        "{text}"
    );
    assert_eq!(gw.upstream.last_request().unwrap().body["max_tokens"], 8192);
    gw.assert_ledger_consistent("litellm").await;

    // The same through chat completions, streamed: the header, and the last chunk's
    // `_metadata`.
    let body = json!({"model": "claude-3-5-sonnet-20241022", "max_tokens": 32_000, "stream": true,
                      "messages": [{"role": "user", "content": "Hi"}]});
    let (status, headers, events) = gw.chat_stream(&key, &body, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-switchboard-max-tokens"], "8192");
    let last: Value = events
        .iter()
        .filter(|(_, data)| data != "[DONE]")
        .map(|(_, data)| serde_json::from_str::<Value>(data).unwrap())
        .next_back()
        .unwrap();
    assert_eq!(last["_metadata"]["max_tokens_clamped_to"], 8192, "{last}");
    gw.assert_ledger_consistent("litellm").await;
}

#[tokio::test]
async fn a_prompt_longer_than_every_context_window_is_a_400_in_each_format() {
    let gw = Gateway::start().await;
    let key = gw.user("verbose", "professional", "5").await;
    // Llama 3 70B has an 8,192-token window: about 12,000 words cannot fit.
    let long = "lorem ipsum dolor sit amet ".repeat(3_000);
    let model = "meta-llama/llama-3-70b-instruct";
    let body = json!({"model": model, "max_tokens": 10,
                      "messages": [{"role": "user", "content": long}]});
    let (status, _, answer) = gw.chat(&key, &body, &[]).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "context_length_exceeded");
    assert_eq!(answer["error"]["type"], "invalid_request_error");
    assert_eq!(answer["error"]["param"], "messages");
    let (status, _, text) = post(&gw, "/v1/messages", &key, &body).await;
    assert_eq!(status, 400, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["error"]["type"], "invalid_request_error");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("context window"),
        "{answer}"
    );
    // Nothing called, nothing held.
    assert_eq!(gw.upstream.request_count(), 0);
    gw.assert_ledger_consistent("verbose").await;
    assert_eq!(gw.balance("verbose").await, d("5"));
}
