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

#[tokio::test]
async fn a_streamed_answer_follows_anthropics_event_sequence() {
    let gw = Gateway::start().await;
    let key = gw.user("streamer", "starter", "5").await;
    gw.upstream
        .push(Reply::text("one two three").with_usage(50, 7, 0));
    let request = http::Request::builder()
        .method("POST")
        .uri("/v1/messages")
        .header("x-api-key", key.clone())
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({"model": "claude-3-5-sonnet-20241022", "max_tokens": 50, "stream": true,
                   "messages": [{"role": "user", "content": "Count."}]})
            .to_string(),
        ))
        .unwrap();
    let response = gw.send(request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let events = switchboard_tests::gateway::parse_sse(&String::from_utf8_lossy(&bytes));
    let names: Vec<&str> = events
        .iter()
        .map(|(name, _)| name.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(names[..3], ["message_start", "ping", "content_block_start"]);
    assert!(names.contains(&"content_block_delta"));
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let text: String = events
        .iter()
        .filter(|(name, _)| name.as_deref() == Some("content_block_delta"))
        .map(|(_, data)| {
            let data: Value = serde_json::from_str(data).unwrap();
            data["delta"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, "one two three");
    let delta: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 7);
    assert_eq!(delta["usage"]["input_tokens"], 50);
    assert!(delta["_metadata"]["cost_usd"].is_string());
    gw.assert_ledger_consistent("streamer").await;
}

#[tokio::test]
async fn a_streamed_tool_call_arrives_as_a_tool_use_block() {
    let gw = Gateway::start().await;
    let key = gw.user("stool", "starter", "5").await;
    gw.upstream
        .push(Reply::tool_call("get_weather", json!({"city": "Oslo"})));
    let request = http::Request::builder()
        .method("POST")
        .uri("/v1/messages")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({"model": "openai/gpt-4o", "max_tokens": 50, "stream": true,
                   "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
                   "messages": [{"role": "user", "content": "Weather?"}]})
            .to_string(),
        ))
        .unwrap();
    let response = gw.send(request).await;
    assert_eq!(response.status(), 200);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let events = switchboard_tests::gateway::parse_sse(&String::from_utf8_lossy(&bytes));
    let start = events
        .iter()
        .find(|(name, _)| name.as_deref() == Some("content_block_start"))
        .map(|(_, data)| serde_json::from_str::<Value>(data).unwrap())
        .unwrap();
    assert_eq!(start["content_block"]["type"], "tool_use");
    assert_eq!(start["content_block"]["name"], "get_weather");
    let json: String = events
        .iter()
        .filter(|(name, _)| name.as_deref() == Some("content_block_delta"))
        .map(|(_, data)| {
            let data: Value = serde_json::from_str(data).unwrap();
            data["delta"]["partial_json"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&json).unwrap(),
        json!({"city": "Oslo"})
    );
    let delta: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    gw.assert_ledger_consistent("stool").await;
}

#[tokio::test]
async fn count_tokens_answers_the_estimate_and_charges_nothing() {
    let gw = Gateway::start().await;
    let key = gw.user("counter", "starter", "1").await;
    let request = |body: Value| {
        http::Request::builder()
            .method("POST")
            .uri("/v1/messages/count_tokens")
            .header("x-api-key", key.clone())
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap()
    };
    let short = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]});
    let long = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi there, ".repeat(200)}]});
    let mut counts = Vec::new();
    for body in [short, long] {
        let response = gw.send(request(body)).await;
        assert_eq!(response.status(), 200);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        counts.push(answer["input_tokens"].as_u64().unwrap());
    }
    assert!(counts[0] > 0 && counts[1] > counts[0] * 50, "{counts:?}");
    assert_eq!(gw.upstream.request_count(), 0);
    assert_eq!(gw.balance("counter").await, rust_decimal::Decimal::ONE);
    let response = gw
        .send(
            http::Request::builder()
                .method("POST")
                .uri("/v1/messages/count_tokens")
                .header("content-type", "application/json")
                .body(axum::body::Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn thinking_and_top_k_reach_anthropic_and_no_one_else() {
    let gw = Gateway::start().await;
    let key = gw.user("thinker", "starter", "5").await;
    let body = |model: &str| {
        json!({"model": model, "max_tokens": 2000, "top_k": 5,
               "thinking": {"type": "enabled", "budget_tokens": 1024},
               "messages": [{"role": "user", "content": "Think."}]})
    };
    let (status, _, answer) = messages(
        &gw,
        ("x-api-key", key.clone()),
        body("claude-3-5-sonnet-20241022"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let sent = gw.upstream.last_request().unwrap().body;
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert_eq!(sent["top_k"], 5);
    let (status, _, answer) =
        messages(&gw, ("x-api-key", key.clone()), body("openai/gpt-4o")).await;
    assert_eq!(status, 200, "{answer}");
    let sent = gw.upstream.last_request().unwrap().body;
    assert!(
        sent.get("thinking").is_none() && sent.get("top_k").is_none(),
        "{sent}"
    );
    gw.assert_ledger_consistent("thinker").await;
}

#[tokio::test]
async fn thinking_blocks_come_back_with_their_signature_and_go_back_unchanged() {
    let gw = Gateway::start().await;
    let key = gw.user("deep-thinker", "starter", "5").await;
    gw.upstream.push(
        Reply::text("The answer is 4.")
            .with_thinking("Two plus two is four.", "sig-abc123")
            .with_usage(40, 30, 0),
    );
    let question = json!({"role": "user", "content": "2+2?"});
    let (status, _, answer) = messages(
        &gw,
        ("x-api-key", key.clone()),
        json!({"model": "claude-3-5-sonnet-20241022", "max_tokens": 2000,
               "thinking": {"type": "enabled", "budget_tokens": 1024},
               "messages": [question]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["content"],
        json!([
            {"type": "thinking", "thinking": "Two plus two is four.", "signature": "sig-abc123"},
            {"type": "text", "text": "The answer is 4."}
        ])
    );
    assert_eq!(answer["usage"]["output_tokens"], 30);

    // The next turn sends the assistant's content back, thinking first: it reaches
    // Anthropic unchanged, and an OpenAI-format provider never sees it.
    let follow_up = |model: &str| {
        json!({"model": model, "max_tokens": 2000,
               "thinking": {"type": "enabled", "budget_tokens": 1024},
               "messages": [question, {"role": "assistant", "content": answer["content"]},
                            {"role": "user", "content": "And 3+3?"}]})
    };
    let (status, _, _) = messages(
        &gw,
        ("x-api-key", key.clone()),
        follow_up("claude-3-5-sonnet-20241022"),
    )
    .await;
    assert_eq!(status, 200);
    let sent = gw.upstream.last_request().unwrap().body;
    assert_eq!(
        sent["messages"][1]["content"][0], answer["content"][0],
        "{sent}"
    );
    assert_eq!(sent["messages"][1]["content"][1]["type"], "text");
    let (status, _, _) = messages(&gw, ("x-api-key", key), follow_up("openai/gpt-4o")).await;
    assert_eq!(status, 200);
    let sent = gw.upstream.last_request().unwrap().body;
    assert!(!sent.to_string().contains("sig-abc123"), "{sent}");
    gw.assert_ledger_consistent("deep-thinker").await;
}

#[tokio::test]
async fn a_streamed_thinking_block_arrives_with_thinking_and_signature_deltas() {
    let gw = Gateway::start().await;
    let key = gw.user("stream-thinker", "starter", "5").await;
    gw.upstream.push(
        Reply::text("Four.")
            .with_thinking("Adding two and two.", "sig-stream-9")
            .with_usage(40, 20, 0),
    );
    let request = http::Request::builder()
        .method("POST")
        .uri("/v1/messages")
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({"model": "claude-3-5-sonnet-20241022", "max_tokens": 2000, "stream": true,
                   "thinking": {"type": "enabled", "budget_tokens": 1024},
                   "messages": [{"role": "user", "content": "2+2?"}]})
            .to_string(),
        ))
        .unwrap();
    let response = gw.send(request).await;
    assert_eq!(response.status(), 200);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let events: Vec<(String, Value)> =
        switchboard_tests::gateway::parse_sse(&String::from_utf8_lossy(&bytes))
            .into_iter()
            .map(|(name, data)| {
                (
                    name.unwrap_or_default(),
                    serde_json::from_str(&data).unwrap(),
                )
            })
            .collect();
    let starts: Vec<&Value> = events
        .iter()
        .filter(|(name, _)| name == "content_block_start")
        .map(|(_, data)| data)
        .collect();
    assert_eq!(starts[0]["content_block"]["type"], "thinking");
    assert_eq!(starts[0]["index"], 0);
    assert_eq!(starts[1]["content_block"]["type"], "text");
    assert_eq!(starts[1]["index"], 1);
    let deltas = |kind: &str, field: &str| -> String {
        events
            .iter()
            .filter(|(_, data)| data["delta"]["type"] == kind)
            .map(|(_, data)| data["delta"][field].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(deltas("thinking_delta", "thinking"), "Adding two and two.");
    assert_eq!(deltas("signature_delta", "signature"), "sig-stream-9");
    assert_eq!(deltas("text_delta", "text"), "Four.");
    // Every block is closed before the next opens.
    let stops = events
        .iter()
        .filter(|(n, _)| n == "content_block_stop")
        .count();
    assert_eq!(stops, 2);
    gw.assert_ledger_consistent("stream-thinker").await;
}

#[tokio::test]
async fn system_turns_inside_messages_are_accepted_as_claude_code_sends_them() {
    let gw = Gateway::start().await;
    let key = gw.user("system-turns", "starter", "5").await;
    let body = |model: &str| {
        json!({"model": model, "max_tokens": 100, "system": "You are Claude Code.",
        "messages": [
            {"role": "user", "content": "say hi"},
            {"role": "system", "content": "Available agent types: general-purpose."},
        ]})
    };
    let (status, _, answer) = messages(
        &gw,
        ("x-api-key", key.clone()),
        body("claude-3-5-sonnet-20241022"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let sent = gw.upstream.last_request().unwrap().body;
    let system = sent["system"].to_string();
    assert!(
        system.contains("You are Claude Code.") && system.contains("Available agent types"),
        "{sent}"
    );
    assert!(
        sent["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["role"] != "system")
    );
    let (status, _, answer) =
        messages(&gw, ("x-api-key", key.clone()), body("openai/gpt-4o")).await;
    assert_eq!(status, 200, "{answer}");
    let sent = gw.upstream.last_request().unwrap().body;
    assert_eq!(sent["messages"][2]["role"], "system", "{sent}");
    let (status, _, answer) = messages(
        &gw,
        ("x-api-key", key),
        json!({"model": "openai/gpt-4o", "max_tokens": 5,
               "messages": [{"role": "tool", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["type"], "invalid_request_error");
    gw.assert_ledger_consistent("system-turns").await;
}

#[tokio::test]
async fn anthropic_only_blocks_and_tool_cache_breakpoints_reach_anthropic_as_they_came() {
    let gw = Gateway::start().await;
    let key = gw.user("documents", "starter", "5").await;
    let document = json!({"type": "document", "title": "Report",
                          "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"},
                          "cache_control": {"type": "ephemeral"}});
    let body = |model: &str| {
        json!({"model": model, "max_tokens": 100,
               "tools": [{"name": "lookup", "description": "Look up",
                          "input_schema": {"type": "object", "properties": {}},
                          "cache_control": {"type": "ephemeral"}}],
               "messages": [{"role": "user", "content": [document, {"type": "text", "text": "Summarise."}]}]})
    };
    let (status, _, answer) = messages(
        &gw,
        ("x-api-key", key.clone()),
        body("claude-3-5-sonnet-20241022"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let sent = gw.upstream.last_request().unwrap().body;
    assert_eq!(sent["messages"][0]["content"][0], document, "{sent}");
    assert_eq!(
        sent["tools"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    let before = gw.upstream.request_count();
    // An OpenAI-format provider cannot take a document: a clear 400, nothing sent.
    let (status, _, answer) =
        messages(&gw, ("x-api-key", key.clone()), body("openai/gpt-4o")).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`document` blocks"),
        "{answer}"
    );
    assert_eq!(gw.upstream.request_count(), before);
    // Server tools bill beyond token prices: refused.
    let (status, _, answer) = messages(
        &gw,
        ("x-api-key", key),
        json!({"model": "claude-3-5-sonnet-20241022", "max_tokens": 100,
               "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
               "messages": [{"role": "user", "content": "news?"}]}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("web_search_20250305")
    );
    gw.assert_ledger_consistent("documents").await;
}
