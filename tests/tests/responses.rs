//! `POST /v1/responses` (the OpenAI Responses API, inbound) end to end against real Postgres
//! and the fake upstream: the Response object and its usage against the ledger, the SSE
//! event sequence, stored responses and continuations (written before the answer ends,
//! tenant-isolated, expiring), function calls, translation to each upstream format, bad
//! input, and exactly K of N under a balance that covers K.

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

async fn send(
    gw: &Gateway,
    method: &str,
    path: &str,
    key: &str,
    body: Option<&Value>,
) -> (u16, String) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = gw.send(request).await;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn create(gw: &Gateway, key: &str, body: Value) -> (u16, Value) {
    let (status, text) = send(gw, "POST", "/v1/responses", key, Some(&body)).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The SSE events of a streamed create: (type, data).
async fn create_stream(gw: &Gateway, key: &str, mut body: Value) -> (u16, Vec<(String, Value)>) {
    body["stream"] = json!(true);
    let (status, text) = send(gw, "POST", "/v1/responses", key, Some(&body)).await;
    let events = parse_sse(&text)
        .into_iter()
        .map(|(name, data)| {
            let value: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            (name.unwrap_or_default(), value)
        })
        .collect();
    (status, events)
}

/// What the ledger charged `user` in all (captures).
async fn charged(gw: &Gateway, user: &str) -> Decimal {
    gw.db
        .connect()
        .await
        .query_one(
            "SELECT coalesce(-sum(amount_usd), 0) FROM ledger_entries WHERE user_id = $1 AND kind = 'capture'",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_response_is_answered_charged_once_stored_and_read_back() {
    let gw = Gateway::start().await;
    let key = gw.user("alice", "professional", "10").await;
    gw.upstream
        .set_default(Reply::text("Hello there!").with_usage(1000, 200, 400));
    let (status, response) = create(
        &gw,
        &key,
        json!({"model": "gpt-4o", "input": "Say hello.", "instructions": "Be brief.",
               "max_output_tokens": 300, "metadata": {"ticket": "42"}}),
    )
    .await;
    assert_eq!(status, 200, "{response}");
    assert!(response["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(response["object"], "response");
    assert_eq!(response["status"], "completed");
    assert_eq!(response["model"], "gpt-4o");
    assert_eq!(response["instructions"], "Be brief.");
    assert_eq!(response["metadata"]["ticket"], "42");
    let output = response["output"].as_array().unwrap();
    assert_eq!(output.len(), 1);
    assert_eq!(output[0]["type"], "message");
    assert!(output[0]["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(output[0]["content"][0]["type"], "output_text");
    assert_eq!(output[0]["content"][0]["text"], "Hello there!");
    assert_eq!(output[0]["content"][0]["annotations"], json!([]));
    // Usage: every input token, cached ones inside; what the ledger charged.
    assert_eq!(response["usage"]["input_tokens"], 1000);
    assert_eq!(
        response["usage"]["input_tokens_details"]["cached_tokens"],
        400
    );
    assert_eq!(response["usage"]["output_tokens"], 200);
    assert_eq!(response["usage"]["total_tokens"], 1200);
    // GPT-4o: 600 × 2.50 + 400 × 1.25 + 200 × 10 per 1M = 0.004.
    assert_eq!(response["_metadata"]["cost_usd"], "0.004");
    assert_eq!(charged(&gw, "alice").await, d("0.004"));
    // Sent upstream as a chat completion, the instructions first.
    let sent = gw.upstream.last_request().unwrap();
    assert!(sent.path.ends_with("/chat/completions"), "{}", sent.path);
    assert_eq!(sent.body["messages"][0]["role"], "system");
    assert_eq!(sent.body["messages"][1]["content"], "Say hello.");
    assert_eq!(sent.body["max_completion_tokens"], 300);
    // The usage row says the route.
    let route: String = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT route FROM llm_usage_logs WHERE user_id = 'alice'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(route, "/v1/responses");

    // Stored: read back, its input items, deleted.
    let id = response["id"].as_str().unwrap();
    let (status, text) = send(&gw, "GET", &format!("/v1/responses/{id}"), &key, None).await;
    assert_eq!(status, 200);
    let read: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(read["output"], response["output"]);
    assert_eq!(read["usage"], response["usage"]);
    let (status, text) = send(
        &gw,
        "GET",
        &format!("/v1/responses/{id}/input_items"),
        &key,
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let items: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(items["object"], "list");
    assert_eq!(items["data"][0]["content"][0]["text"], "Say hello.");
    // Another account sees nothing of it.
    let other = gw.user("mallory", "professional", "10").await;
    for (method, path) in [
        ("GET", format!("/v1/responses/{id}")),
        ("GET", format!("/v1/responses/{id}/input_items")),
        ("DELETE", format!("/v1/responses/{id}")),
    ] {
        let (status, _) = send(&gw, method, &path, &other, None).await;
        assert_eq!(status, 404, "{method} {path}");
    }
    let (status, _) = create(
        &gw,
        &other,
        json!({"model": "gpt-4o", "input": "more", "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, text) = send(&gw, "DELETE", &format!("/v1/responses/{id}"), &key, None).await;
    assert_eq!(status, 200, "{text}");
    let (status, _) = send(&gw, "GET", &format!("/v1/responses/{id}"), &key, None).await;
    assert_eq!(status, 404);
    gw.assert_ledger_consistent("alice").await;
    gw.assert_ledger_consistent("mallory").await;
    assert_eq!(charged(&gw, "mallory").await, Decimal::ZERO);
}

#[tokio::test]
async fn a_stream_sends_the_event_sequence_and_is_stored_before_it_completes() {
    let gw = Gateway::start().await;
    let key = gw.user("streamer", "professional", "10").await;
    gw.upstream
        .set_default(Reply::text("One two three.").with_usage(50, 6, 0));
    let (status, events) =
        create_stream(&gw, &key, json!({"model": "gpt-4o", "input": "Count."})).await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    let expected_start = [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ];
    assert_eq!(&kinds[..5], &expected_start, "{kinds:?}");
    let tail: Vec<&str> = kinds.iter().rev().take(4).rev().copied().collect();
    assert_eq!(
        tail,
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    // Every event carries its type and its sequence number, in order.
    for (n, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], n);
    }
    let text: String = events
        .iter()
        .filter(|(name, _)| name == "response.output_text.delta")
        .map(|(_, data)| data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "One two three.");
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["usage"]["input_tokens"], 50);
    assert_eq!(completed["usage"]["output_tokens"], 6);
    let cost = d(completed["_metadata"]["cost_usd"].as_str().unwrap());
    assert_eq!(charged(&gw, "streamer").await, cost);
    // The upstream was asked for its usage chunk.
    assert_eq!(
        gw.upstream.last_request().unwrap().body["stream_options"]["include_usage"],
        true
    );
    // Stored before `response.completed` went out: the continuation works at once.
    let id = completed["id"].as_str().unwrap();
    gw.upstream
        .set_default(Reply::text("Four.").with_usage(70, 2, 0));
    let (status, next) = create(
        &gw,
        &key,
        json!({"model": "gpt-4o", "input": "And then?", "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(next["previous_response_id"], id);
    let sent = gw.upstream.last_request().unwrap().body;
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"], "{sent}");
    assert_eq!(sent["messages"][1]["content"], "One two three.");
    gw.assert_ledger_consistent("streamer").await;
}

#[tokio::test]
async fn function_calls_round_trip_through_a_stored_continuation() {
    let gw = Gateway::start().await;
    let key = gw.user("tools", "professional", "10").await;
    let tools = json!([{"type": "function", "name": "weather", "description": "The weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                        "strict": true}]);
    gw.upstream.push(
        Reply::tool_call("weather", json!({"city": "Paris"}))
            .with_tool_call("weather", json!({"city": "Rome"}))
            .with_usage(80, 20, 0),
    );
    let (status, first) = create(
        &gw,
        &key,
        json!({"model": "gpt-4o", "input": "Weather in Paris and Rome?", "tools": tools}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let calls: Vec<&Value> = first["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["type"] == "function_call")
        .collect();
    assert_eq!(calls.len(), 2, "{first}");
    assert_eq!(calls[0]["name"], "weather");
    assert_eq!(calls[0]["status"], "completed");
    assert!(calls[0]["id"].as_str().unwrap().starts_with("fc_"));
    let upstream_tools = &gw.upstream.last_request().unwrap().body["tools"];
    assert_eq!(upstream_tools[0]["function"]["name"], "weather");
    assert_eq!(upstream_tools[0]["function"]["strict"], true);

    gw.upstream
        .push(Reply::text("Sunny in Paris, rain in Rome.").with_usage(120, 10, 0));
    let outputs: Vec<Value> = calls
        .iter()
        .zip(["sunny", "rain"])
        .map(|(call, out)| json!({"type": "function_call_output", "call_id": call["call_id"], "output": out}))
        .collect();
    let (status, second) = create(
        &gw,
        &key,
        json!({"model": "gpt-4o", "input": outputs, "tools": tools,
               "previous_response_id": first["id"]}),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        second["output"][0]["content"][0]["text"],
        "Sunny in Paris, rain in Rome."
    );
    let sent = gw.upstream.last_request().unwrap().body;
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["tool_calls"].as_array().unwrap().len(), 2);
    assert_eq!(messages[2]["role"], "tool");
    assert_eq!(messages[2]["tool_call_id"], calls[0]["call_id"]);
    assert_eq!(messages[3]["content"], "rain");
    gw.assert_ledger_consistent("tools").await;
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field_and_unknown_continuations_a_404() {
    let gw = Gateway::start().await;
    let key = gw.user("careless", "professional", "10").await;
    for (body, param) in [
        (
            json!({"model": "gpt-4o", "input": "x", "tools": [{"type": "web_search"}]}),
            "tools[0].type",
        ),
        (
            json!({"model": "gpt-4o", "input": [{"type": "computer_call_output"}]}),
            "input[0].type",
        ),
        (
            json!({"model": "gpt-4o", "input": "x", "background": true}),
            "background",
        ),
        (json!({"model": "gpt-4o"}), "input"),
        (json!({"input": "x"}), "model"),
        (
            json!({"model": "gpt-4o", "input": "x", "max_output_tokens": -3}),
            "max_output_tokens",
        ),
        (
            json!({"model": "gpt-4o", "input": [{"type": "item_reference", "id": "msg_nope"}]}),
            "input[0].id",
        ),
    ] {
        let (status, answer) = create(&gw, &key, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["param"], param, "{body}: {answer}");
    }
    let (status, answer) = send(&gw, "POST", "/v1/responses", &key, None).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = create(
        &gw,
        &key,
        json!({"model": "gpt-4o", "input": "x", "previous_response_id": "resp_0000"}),
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(gw.upstream.request_count(), 0);
    gw.assert_ledger_consistent("careless").await;
}

#[tokio::test]
async fn anthropic_and_gemini_upstreams_serve_it_translated_with_reasoning_kept() {
    let gw = Gateway::start().await;
    let key = gw.user("polyglot", "enterprise", "10").await;
    // Claude with extended thinking: the thinking comes back as a reasoning item.
    gw.upstream.push(
        Reply::text("Four.")
            .with_thinking("Two plus two is four.", "sig-1")
            .with_usage(40, 12, 0),
    );
    let (status, response) = create(
        &gw,
        &key,
        json!({"model": "claude-3-5-sonnet-20241022", "input": "2+2?", "instructions": "Answer.",
               "max_output_tokens": 2000, "reasoning": {"effort": "low"}}),
    )
    .await;
    assert_eq!(status, 200, "{response}");
    let sent = gw.upstream.last_request().unwrap();
    assert!(sent.path.ends_with("/messages"), "{}", sent.path);
    assert_eq!(sent.body["system"][0]["text"], "Answer.");
    assert_eq!(sent.body["thinking"]["budget_tokens"], 1024);
    assert_eq!(sent.body["max_tokens"], 2000);
    let output = response["output"].as_array().unwrap();
    assert_eq!(output[0]["type"], "reasoning");
    assert_eq!(output[0]["summary"][0]["text"], "Two plus two is four.");
    assert_eq!(output[1]["type"], "message");
    assert_eq!(output[1]["content"][0]["text"], "Four.");
    assert_eq!(response["usage"]["output_tokens"], 12);

    // Gemini, streamed, with a JSON schema.
    gw.db
        .connect()
        .await
        .execute(
            "INSERT INTO llm_models (provider_id, model_name, model_id, context_window, max_tokens,
                 supports_json_mode, cost_per_1m_input_tokens, cost_per_1m_output_tokens)
             SELECT id, 'Gemini Flash', 'gemini-2.0-flash', 1000000, 8192, true, 0.10, 0.40
             FROM llm_providers WHERE provider_slug = 'google'",
            &[],
        )
        .await
        .unwrap();
    gw.state.catalog.invalidate();
    gw.upstream
        .push(Reply::text("{\"city\":\"Paris\"}").with_usage(30, 8, 0));
    let (status, events) = create_stream(
        &gw,
        &key,
        json!({"model": "gemini-2.0-flash", "input": "Capital of France as JSON",
               "text": {"format": {"type": "json_schema", "name": "capital", "strict": true,
                        "schema": {"type": "object", "properties": {"city": {"type": "string"}}}}}}),
    )
    .await;
    assert_eq!(status, 200);
    let sent = gw.upstream.last_request().unwrap();
    assert!(
        sent.path.contains(":streamGenerateContent"),
        "{}",
        sent.path
    );
    assert_eq!(
        sent.body["generationConfig"]["responseMimeType"], "application/json",
        "{}",
        sent.body
    );
    let completed = &events.last().unwrap().1;
    assert_eq!(completed["type"], "response.completed");
    assert_eq!(
        completed["response"]["output"][0]["content"][0]["text"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(completed["response"]["text"]["format"]["name"], "capital");
    assert_eq!(completed["response"]["usage"]["input_tokens"], 30);
    gw.assert_ledger_consistent("polyglot").await;
}

#[tokio::test]
async fn expired_responses_are_gone_and_the_scheduled_run_sweeps_them() {
    let gw = Gateway::start_with(switchboard_tests::gateway::GatewayOptions {
        env: vec![("SWITCHBOARD_RESPONSES_TTL_DAYS", "2".into())],
        ..Default::default()
    })
    .await;
    let key = gw.user("forgetful", "professional", "10").await;
    gw.upstream
        .set_default(Reply::text("Noted.").with_usage(10, 2, 0));
    let (_, first) = create(
        &gw,
        &key,
        json!({"model": "gpt-4o", "input": "Remember 7."}),
    )
    .await;
    let id = first["id"].as_str().unwrap().to_string();
    let client = gw.db.connect().await;
    let ttl: f64 = client
        .query_one(
            "SELECT extract(epoch FROM expires_at - created_at)::float8 FROM responses WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!((ttl - 2.0 * 86_400.0).abs() < 60.0, "{ttl}");
    // `store: false`: nothing kept, and a continuation of it is unknown.
    let (_, unstored) = create(
        &gw,
        &key,
        json!({"model": "gpt-4o", "input": "Ephemeral.", "store": false}),
    )
    .await;
    assert_eq!(unstored["store"], false);
    let (status, _) = send(
        &gw,
        "GET",
        &format!("/v1/responses/{}", unstored["id"].as_str().unwrap()),
        &key,
        None,
    )
    .await;
    assert_eq!(status, 404);

    client
        .execute(
            "UPDATE responses SET expires_at = now() - interval '1 second' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let (status, _) = send(&gw, "GET", &format!("/v1/responses/{id}"), &key, None).await;
    assert_eq!(status, 404);
    let (status, _) = create(
        &gw,
        &key,
        json!({"model": "gpt-4o", "input": "What was it?", "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, 404);
    let summary = switchboard_core::health::run(
        &gw.state.health(),
        switchboard_core::health::Trigger::Manual,
    )
    .await
    .unwrap();
    assert_eq!(summary.responses_expired, 1);
    let left: i64 = client
        .query_one("SELECT count(*) FROM responses WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

/// ledger.md: N concurrent requests against a balance that covers exactly K of them —
/// here 100 Responses requests, new ones and continuations of a stored response, half of
/// them streamed: exactly K succeed, the rest are 402, nothing stays held, and the balance
/// is the sum of its entries (zero: each success costs what its hold was).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_k_of_n_concurrent_responses_and_continuations_succeed() {
    const N: usize = 100;
    const K: usize = 37;
    let gw = Gateway::start().await;
    let client = gw.db.connect().await;
    // A model whose input is free: every request holds exactly its output limit, 1,000
    // tokens at $1 per 1M, whatever its history; and the upstream bills exactly that.
    client
        .execute(
            "INSERT INTO llm_models (provider_id, model_name, model_id, context_window, max_tokens,
                 cost_per_1m_input_tokens, cost_per_1m_output_tokens)
             SELECT id, 'Exact', 'exact-model', 128000, 1000, 0, 1.00
             FROM llm_providers WHERE provider_slug = 'openai'",
            &[],
        )
        .await
        .unwrap();
    gw.state.catalog.invalidate();
    let key = gw
        .user(
            "k-of-n",
            "enterprise",
            &format!("{}", Decimal::new((K + 1) as i64, 3)),
        )
        .await;
    gw.upstream
        .set_default(Reply::text("Done.").with_usage(20, 1000, 0));
    let (status, first) = create(
        &gw,
        &key,
        json!({"model": "exact-model", "input": "Start.", "max_output_tokens": 1000}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let previous = first["id"].as_str().unwrap().to_string();

    let callers: Vec<_> = (0..N)
        .map(|i| {
            let app = gw.app.clone();
            let key = key.clone();
            let mut body = json!({"model": "exact-model", "input": format!("Request {i}."),
                                  "max_output_tokens": 1000});
            if i % 2 == 0 {
                body["previous_response_id"] = json!(previous);
            }
            if i % 4 < 2 {
                body["stream"] = json!(true);
            }
            tokio::spawn(async move {
                use tower::ServiceExt;
                let request = http::Request::post("/v1/responses")
                    .header("authorization", format!("Bearer {key}"))
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap();
                let response = app.oneshot(request).await.unwrap();
                let status = response.status().as_u16();
                let text = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                (status, String::from_utf8_lossy(&text).into_owned())
            })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for caller in callers {
        let (status, text) = caller.await.unwrap();
        match status {
            200 => {
                assert!(
                    !text.contains("response.failed") && !text.contains("\"error\":{"),
                    "{text}"
                );
                ok += 1;
            }
            402 => refused += 1,
            other => panic!("{other}: {text}"),
        }
    }
    assert_eq!((ok, refused), (K, N - K));
    gw.assert_ledger_consistent("k-of-n").await;
    assert_eq!(gw.balance("k-of-n").await, Decimal::ZERO);
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM responses WHERE user_id = 'k-of-n'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored as usize, K + 1, "every success stored, no refusal");
}

/// An OpenAI provider that serves the Responses API gets the request natively: its output
/// items come back as it sent them (a reasoning item with its encrypted content), and a
/// continuation sends them back to it in the input.
#[tokio::test]
async fn a_provider_serving_the_responses_api_gets_it_natively_reasoning_kept() {
    let gw = Gateway::start().await;
    gw.db
        .connect()
        .await
        .execute(
            "UPDATE llm_providers SET supports_responses_api = true WHERE provider_slug = 'openai'",
            &[],
        )
        .await
        .unwrap();
    gw.state.catalog.invalidate();
    let key = gw.user("native", "professional", "10").await;
    gw.upstream.push(
        Reply::text("Four.")
            .with_thinking("Two and two.", "sig-native")
            .with_usage(60, 14, 0),
    );
    let (status, first) = create(
        &gw,
        &key,
        json!({"model": "gpt-4o", "input": "2+2?", "reasoning": {"effort": "low"}}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let sent = gw.upstream.last_request().unwrap();
    assert!(sent.path.ends_with("/responses"), "{}", sent.path);
    assert_eq!(sent.body["store"], false);
    let output = first["output"].as_array().unwrap();
    let reasoning = output
        .iter()
        .find(|i| i["type"] == "reasoning")
        .expect("a reasoning item");
    let encrypted = reasoning["encrypted_content"]
        .as_str()
        .expect("its encrypted content");
    assert!(!encrypted.is_empty());
    assert_eq!(first["usage"]["input_tokens"], 60);
    assert_eq!(
        d(first["_metadata"]["cost_usd"].as_str().unwrap()),
        charged(&gw, "native").await
    );

    // Streamed, continued: the stored reasoning item goes back in the input, natively.
    gw.upstream
        .push(Reply::text("Five minus one.").with_usage(90, 5, 0));
    let (status, events) = create_stream(
        &gw,
        &key,
        json!({"model": "gpt-4o", "input": "Another way?", "previous_response_id": first["id"]}),
    )
    .await;
    assert_eq!(status, 200);
    let sent = gw.upstream.last_request().unwrap();
    assert!(sent.path.ends_with("/responses"), "{}", sent.path);
    let input = sent.body["input"].as_array().unwrap();
    assert!(
        input
            .iter()
            .any(|item| item["type"] == "reasoning" && item["encrypted_content"] == encrypted),
        "{input:?}"
    );
    assert!(sent.body.get("previous_response_id").is_none());
    let completed = &events.last().unwrap().1;
    assert_eq!(completed["type"], "response.completed");
    assert_eq!(
        completed["response"]["output"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == "message")
            .unwrap()["content"][0]["text"],
        "Five minus one."
    );
    gw.assert_ledger_consistent("native").await;
}
