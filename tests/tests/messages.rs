//! `POST /v1/messages` (the Anthropic Messages API, inbound), non-streamed: the same run as
//! chat completions behind Anthropic's request, answer and error shapes, to an Anthropic
//! upstream and to an OpenAI one, tools included, charged once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use switchboard_tests::fake_upstream::Reply;
use switchboard_tests::gateway::Gateway;

async fn messages(
    gw: &Gateway,
    auth: (&str, String),
    body: Value,
) -> (u16, http::HeaderMap, Value) {
    let request = http::Request::builder()
        .method("POST")
        .uri("/v1/messages")
        .header(auth.0, auth.1)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let response = gw.send(request).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_claude_request_answers_in_anthropics_shape_and_is_charged_once() {
    let gw = Gateway::start().await;
    let key = gw.user("claude-user", "starter", "5").await;
    gw.upstream.push(
        Reply::text("Hello from Claude.")
            .with_usage(1200, 20, 200)
            .with_cache_creation(300),
    );
    let (status, headers, answer) = messages(
        &gw,
        ("x-api-key", key.clone()),
        json!({
            "model": "claude-3-5-sonnet-20241022",
            "max_tokens": 100,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "Hi"}],
        }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["role"], "assistant");
    assert_eq!(
        answer["content"],
        json!([{"type": "text", "text": "Hello from Claude."}])
    );
    assert_eq!(answer["stop_reason"], "end_turn");
    assert_eq!(
        answer["usage"],
        json!({"input_tokens": 700, "output_tokens": 20,
               "cache_read_input_tokens": 200, "cache_creation_input_tokens": 300})
    );
    assert_eq!(headers["x-switchboard-provider"], "anthropic");
    // The system prompt's cache_control reached Anthropic.
    let sent = gw.upstream.last_request().unwrap().body;
    assert!(sent.to_string().contains("cache_control"), "{sent}");
    let charged = answer["_metadata"]["cost_usd"]
        .as_str()
        .unwrap()
        .to_string();
    let rows: i64 = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT count(*) FROM llm_usage_logs WHERE user_id = 'claude-user' AND status_code = 200",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
    assert!(!charged.is_empty());
    gw.assert_ledger_consistent("claude-user").await;
}

#[tokio::test]
async fn tools_round_trip_through_an_openai_upstream() {
    let gw = Gateway::start().await;
    let key = gw.user("tooler", "starter", "5").await;
    gw.upstream
        .push(Reply::tool_call("get_weather", json!({"city": "Paris"})));
    let (status, _, answer) = messages(
        &gw,
        ("authorization", format!("Bearer {key}")),
        json!({
            "model": "openai/gpt-4o",
            "max_tokens": 200,
            "tools": [{"name": "get_weather", "description": "Weather",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any"},
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
            ],
        }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["stop_reason"], "tool_use");
    let block = &answer["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({"city": "Paris"}));
    let sent = gw.upstream.last_request().unwrap().body;
    assert_eq!(sent["tool_choice"], "required");
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");

    // The tool's result goes back as a tool_result block.
    gw.upstream.push(Reply::text("It is sunny."));
    let (status, _, answer) = messages(
        &gw,
        ("x-api-key", key.clone()),
        json!({
            "model": "openai/gpt-4o",
            "max_tokens": 200,
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": block["id"], "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block["id"], "content": "sunny"}]},
            ],
        }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let sent = gw.upstream.last_request().unwrap().body;
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool"]);
    gw.assert_ledger_consistent("tooler").await;
}

#[tokio::test]
async fn errors_come_in_anthropics_shape() {
    let gw = Gateway::start().await;
    let key = gw.user("broke", "starter", "0").await;
    let hi = json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]});
    for (auth, body, status, kind) in [
        (
            ("x-api-key", "sk-sb-nope".to_string()),
            hi.clone(),
            401,
            "authentication_error",
        ),
        (
            ("x-api-key", key.clone()),
            json!({"model": "gpt-4o", "messages": []}),
            400,
            "invalid_request_error",
        ),
        (
            ("x-api-key", key.clone()),
            json!({"model": "gpt-4o", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
            400,
            "invalid_request_error",
        ),
        (("x-api-key", key.clone()), hi.clone(), 402, "billing_error"),
        (
            ("x-api-key", key.clone()),
            json!({"model": "no-such-model", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}),
            404,
            "not_found_error",
        ),
    ] {
        let (got, _, answer) = messages(&gw, auth, body).await;
        assert_eq!(got, status, "{answer}");
        assert_eq!(answer["type"], "error", "{answer}");
        assert_eq!(answer["error"]["type"], kind, "{answer}");
        assert!(answer["error"]["message"].is_string());
    }
    assert_eq!(gw.upstream.request_count(), 0);
}
