//! `/v1/chat/completions` end to end against real Postgres and the fake upstream: routing,
//! the ledger, fallbacks, streaming, usage logs, and every error status chat can produce.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchboard_core::providers::Timeouts;
use switchboard_tests::fake_upstream::{Reply, Step};
use switchboard_tests::gateway::{Gateway, GatewayOptions, system_key_for};

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}], "max_tokens": 100})
}

/// Adds a second offer of `gpt-4o` on OpenRouter, tried after OpenAI's.
async fn usage_rows(
    gw: &Gateway,
    request_id: &str,
) -> Vec<(i16, Option<i32>, bool, Option<String>, Decimal)> {
    let client = gw.db.connect().await;
    client
        .query(
            "SELECT attempt, status_code, was_fallback, provider_slug, charged_usd FROM llm_usage_logs
             WHERE request_id = $1 ORDER BY attempt",
            &[&request_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

#[tokio::test]
async fn a_completion_is_routed_charged_logged_and_answered_with_metadata() {
    let gw = Gateway::start().await;
    let key = gw.user("alice", "professional", "10").await;
    gw.upstream
        .set_default(Reply::text("Hello there!").with_usage(1000, 200, 400));

    let (status, headers, body) = gw
        .chat(&key, &hello("gpt-4o"), &[("x-request-id", "req-alice-1")])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello there!");
    assert_eq!(body["usage"]["prompt_tokens"], 1000);
    assert_eq!(body["usage"]["completion_tokens"], 200);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 400);
    assert_eq!(headers["x-request-id"], "req-alice-1");
    assert_eq!(headers["x-switchboard-provider"], "openai");
    assert_eq!(headers["x-switchboard-model"], "gpt-4o");

    // GPT-4o: 600 uncached × 2.50 + 400 cached × 1.25 + 200 × 10.00 = 1500 + 500 + 2000 → 0.004 USD.
    let meta = &body["_metadata"];
    assert_eq!(meta["provider_used"], "openai");
    assert_eq!(meta["model_used"], "gpt-4o");
    assert_eq!(meta["cost_usd"], "0.004");
    assert_eq!(meta["credits_remaining"], "9.996");
    assert_eq!(meta["power_level"], "balanced");
    assert_eq!(meta["user_tier"], "professional");
    assert_eq!(meta["byok"], false);
    assert_eq!(meta["attempts"], 1);
    assert_eq!(meta["request_id"], "req-alice-1");
    assert_eq!(gw.balance("alice").await, d("9.996"));

    // The upstream got the system key in its header, never in the URL.
    let upstream = gw.upstream.last_request().unwrap();
    assert_eq!(
        upstream.header("authorization"),
        Some(format!("Bearer {}", system_key_for("openai")).as_str())
    );
    assert!(!upstream.path.contains("sk-") && upstream.query.as_deref().unwrap_or("").is_empty());

    let rows = usage_rows(&gw, "req-alice-1").await;
    assert_eq!(
        rows,
        vec![(1, Some(200), false, Some("openai".into()), d("0.004"))]
    );
    let client = gw.db.connect().await;
    let event = client
        .query_one(
            "SELECT external_customer_id, properties FROM billing_events",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(event.get::<_, String>(0), "alice");
    assert_eq!(event.get::<_, Value>(1)["charged_usd"], "0.004000000");
    gw.assert_ledger_consistent("alice").await;
}

#[tokio::test]
async fn auto_routes_by_power_level_to_each_wire_format() {
    let gw = Gateway::start().await;
    let key = gw.user("bob", "enterprise", "10").await;
    for (level, provider, model, path) in [
        (
            "precision",
            "anthropic",
            "claude-3-5-sonnet-20241022",
            "/v1/messages",
        ),
        ("balanced", "openai", "gpt-4-turbo", "/v1/chat/completions"),
        (
            "eco",
            "openrouter",
            "meta-llama/llama-3-70b-instruct",
            "/v1/chat/completions",
        ),
    ] {
        let (status, _, body) = gw
            .chat(&key, &hello("auto"), &[("x-power-level", level)])
            .await;
        assert_eq!(status, 200, "{level}: {body}");
        assert_eq!(body["_metadata"]["provider_used"], provider);
        assert_eq!(body["_metadata"]["model_used"], model);
        assert_eq!(body["_metadata"]["power_level"], level);
        assert_eq!(gw.upstream.last_request().unwrap().path, path);
    }
    // Gemini through a pinned offer of a model we add.
    let client = gw.db.connect().await;
    client
        .batch_execute(
            "INSERT INTO llm_models (provider_id, model_name, model_id, context_window, cost_per_1m_input_tokens, cost_per_1m_output_tokens)
             SELECT id, 'Gemini Flash', 'gemini-2.0-flash', 1000000, 0.10, 0.40 FROM llm_providers WHERE provider_slug = 'google'",
        )
        .await
        .unwrap();
    gw.state.catalog.invalidate();
    let (status, _, body) = gw.chat(&key, &hello("google/gemini-2.0-flash"), &[]).await;
    assert_eq!(status, 200, "{body}");
    let request = gw.upstream.last_request().unwrap();
    assert_eq!(
        request.path,
        "/v1beta/models/gemini-2.0-flash:generateContent"
    );
    assert_eq!(
        request.header("x-goog-api-key"),
        Some(system_key_for("google").as_str())
    );
    gw.assert_ledger_consistent("bob").await;
}

#[tokio::test]
async fn falls_back_on_500_and_429_but_not_on_400() {
    let gw = Gateway::start().await;
    gw.add_second_gpt4o_offer().await;
    let key = gw.user("carol", "starter", "10").await;

    for (rid, step) in [
        ("fb-500", Step::status(500)),
        ("fb-429", Step::rate_limited("1")),
    ] {
        gw.upstream.push(step);
        let (status, _, body) = gw
            .chat(&key, &hello("gpt-4o"), &[("x-request-id", rid)])
            .await;
        assert_eq!(status, 200, "{rid}: {body}");
        assert_eq!(body["_metadata"]["attempts"], 2);
        assert_eq!(body["_metadata"]["provider_used"], "openrouter");
        let rows = usage_rows(&gw, rid).await;
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].1, Some(if rid == "fb-500" { 500 } else { 429 }));
        assert!(!rows[0].2);
        assert_eq!(rows[0].4, Decimal::ZERO, "a failed attempt charges nothing");
        assert_eq!(rows[1].1, Some(200));
        assert!(rows[1].2, "the second attempt is a fallback");
        // Reset the breaker the failures may have opened so the next case starts clean.
        gw.db
            .connect()
            .await
            .batch_execute("UPDATE llm_providers SET breaker_consecutive_failures = 0, breaker_open_until = NULL")
            .await
            .unwrap();
        gw.state.catalog.invalidate();
    }

    let before = gw.balance("carol").await;
    gw.upstream.push(Step::status_with_body(
        400,
        json!({"error": {"message": "bad temperature", "type": "invalid_request_error"}}),
    ));
    let (status, _, body) = gw
        .chat(&key, &hello("gpt-4o"), &[("x-request-id", "no-fb-400")])
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(
        usage_rows(&gw, "no-fb-400").await.len(),
        1,
        "no fallback on 400"
    );
    assert_eq!(gw.balance("carol").await, before, "nothing charged");
    gw.assert_ledger_consistent("carol").await;
}

#[tokio::test]
async fn falls_back_on_timeout_and_gives_504_when_the_deadline_passes() {
    let gw = Gateway::start_with(GatewayOptions {
        env: vec![("SWITCHBOARD_REQUEST_TIMEOUT_SECS", "3".into())],
        timeouts: Timeouts {
            attempt: Duration::from_millis(800),
            ..Timeouts::default()
        },
    })
    .await;
    gw.add_second_gpt4o_offer().await;
    let key = gw.user("dave", "starter", "10").await;

    gw.upstream.push(Step::delayed_reply(
        Duration::from_secs(2),
        Reply::default(),
    ));
    let (status, _, body) = gw
        .chat(&key, &hello("gpt-4o"), &[("x-request-id", "fb-timeout")])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["_metadata"]["attempts"], 2);

    // Every candidate times out: 504, nothing charged.
    let before = gw.balance("dave").await;
    for _ in 0..2 {
        gw.upstream.push(Step::delayed_reply(
            Duration::from_secs(5),
            Reply::default(),
        ));
    }
    let (status, _, body) = gw
        .chat(&key, &hello("gpt-4o"), &[("x-request-id", "all-timeout")])
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["type"], "upstream_timeout");
    assert_eq!(usage_rows(&gw, "all-timeout").await.len(), 2);
    assert_eq!(gw.balance("dave").await, before);
    gw.assert_ledger_consistent("dave").await;
}

#[tokio::test]
async fn the_overall_deadline_ends_the_request_with_504() {
    // One attempt may take 25 s, but the request as a whole only 1 s.
    let gw = Gateway::start_with(GatewayOptions {
        env: vec![("SWITCHBOARD_REQUEST_TIMEOUT_SECS", "1".into())],
        ..GatewayOptions::default()
    })
    .await;
    let key = gw.user("hasty", "starter", "10").await;
    gw.upstream.push(Step::delayed_reply(
        Duration::from_secs(3),
        Reply::default(),
    ));
    let started = std::time::Instant::now();
    let (status, _, body) = gw.chat(&key, &hello("gpt-4o"), &[]).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "answered at the deadline"
    );
    assert_eq!(gw.balance("hasty").await, d("10"));
    gw.assert_ledger_consistent("hasty").await;
}

#[tokio::test]
async fn every_candidate_failing_is_a_502_naming_the_status_and_charges_nothing() {
    let gw = Gateway::start().await;
    gw.add_second_gpt4o_offer().await;
    let key = gw.user("erin", "starter", "10").await;
    gw.upstream.push(Step::status(500));
    gw.upstream.push(Step::status(503));
    let (status, _, body) = gw
        .chat(&key, &hello("gpt-4o"), &[("x-request-id", "all-fail")])
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "upstream_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("503"), "{message}");
    assert!(!message.contains("sk-system"), "no key in errors");
    assert_eq!(usage_rows(&gw, "all-fail").await.len(), 2);
    assert_eq!(gw.balance("erin").await, d("10"));
    gw.assert_ledger_consistent("erin").await;
}

#[tokio::test]
async fn streaming_happy_path_with_usage_costs_the_same_as_non_streaming() {
    let gw = Gateway::start().await;
    let key = gw.user("frank", "starter", "10").await;
    gw.upstream
        .set_default(Reply::text("One two three four five six.").with_usage(321, 54, 100));

    let mut body = hello("gpt-4o");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, headers, events) = gw
        .chat_stream(&key, &body, &[("x-request-id", "stream-1")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["x-switchboard-provider"], "openai");
    assert_eq!(headers["x-switchboard-model"], "gpt-4o");
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"]
                .get(0)
                .and_then(|ch| ch["delta"]["content"].as_str())
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "One two three four five six.");
    let last = chunks.last().unwrap();
    assert_eq!(last["usage"]["prompt_tokens"], 321);
    assert_eq!(last["usage"]["completion_tokens"], 54);
    assert_eq!(last["_metadata"]["provider_used"], "openai");
    assert_eq!(last["_metadata"]["request_id"], "stream-1");
    let streamed_cost = last["_metadata"]["cost_usd"].as_str().unwrap().to_string();

    let (status, _, plain) = gw.chat(&key, &hello("gpt-4o"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        plain["_metadata"]["cost_usd"].as_str().unwrap(),
        streamed_cost,
        "same content, same cost"
    );
    assert_eq!(
        gw.balance("frank").await,
        d("10") - d(&streamed_cost) * Decimal::from(2)
    );
    gw.assert_ledger_consistent("frank").await;
}

#[tokio::test]
async fn a_stream_failing_before_its_first_chunk_falls_back() {
    let gw = Gateway::start().await;
    gw.add_second_gpt4o_offer().await;
    let key = gw.user("gina", "starter", "10").await;
    gw.upstream.push(Step::status(500));
    let mut body = hello("gpt-4o");
    body["stream"] = json!(true);
    let (status, headers, events) = gw
        .chat_stream(&key, &body, &[("x-request-id", "stream-fb")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-switchboard-provider"], "openrouter");
    assert_eq!(events.last().unwrap().1, "[DONE]");
    assert!(
        events.iter().all(|(event, _)| event.is_none()),
        "no error event"
    );
    let last: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(last["_metadata"]["attempts"], 2);
    assert_eq!(usage_rows(&gw, "stream-fb").await.len(), 2);
    gw.assert_ledger_consistent("gina").await;
}

#[tokio::test]
async fn a_stream_cut_after_content_ends_with_an_error_event_and_charges_what_was_sent() {
    let gw = Gateway::start().await;
    let key = gw.user("hank", "starter", "10").await;
    gw.upstream.push(Step::cut_stream(
        Reply::text("This answer will be cut somewhere in the middle of it."),
        3,
    ));
    let mut body = hello("gpt-4o");
    body["stream"] = json!(true);
    let (status, _, events) = gw
        .chat_stream(&key, &body, &[("x-request-id", "stream-cut")])
        .await;
    assert_eq!(status, 200);
    let error = events
        .iter()
        .find(|(event, _)| event.as_deref() == Some("error"))
        .expect("an SSE error event");
    let error: Value = serde_json::from_str(&error.1).unwrap();
    assert_eq!(error["error"]["type"], "upstream_error");
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let rows = usage_rows(&gw, "stream-cut").await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].4 > Decimal::ZERO, "the tokens sent are charged");
    assert_eq!(gw.balance("hank").await, d("10") - rows[0].4);
    gw.assert_ledger_consistent("hank").await;
}

// A client that disconnects mid-stream: chat_faults.rs
// (a_streaming_client_gone_stops_the_upstream_read_and_is_settled_at_once).

#[tokio::test]
async fn error_statuses_of_the_contract() {
    let gw = Gateway::start().await;
    let rich = gw.user("rich", "free", "100").await;

    // 400: malformed JSON, schema violations, bad headers.
    let request = http::Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("authorization", format!("Bearer {rich}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            "{\"model\": \"gpt-4o\", \"messages\": [",
        ))
        .unwrap();
    let response = gw.send(request).await;
    assert_eq!(response.status(), 400);
    for bad in [
        json!({"model": "gpt-4o"}),
        json!({"model": "gpt-4o", "messages": []}),
        json!({"model": "gpt-4o", "messages": [{"role": "wizard", "content": "hi"}]}),
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 7}),
        json!({"model": 42, "messages": [{"role": "user", "content": "hi"}]}),
    ] {
        let (status, _, body) = gw.chat(&rich, &bad, &[]).await;
        assert_eq!(status, 400, "{bad} → {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    let (status, _, body) = gw
        .chat(&rich, &hello("gpt-4o"), &[("x-power-level", "turbo")])
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "x-power-level");

    // 401: no key, unknown key, revoked key.
    let (status, _, body) = gw.chat("", &hello("gpt-4o"), &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let (status, _, _) = gw
        .chat(
            "sk-sb-000000000000000000000000000000000000000000000000",
            &hello("gpt-4o"),
            &[],
        )
        .await;
    assert_eq!(status, 401);
    let revoked = gw.key_for("rich", "user", None).await;
    gw.db
        .connect()
        .await
        .batch_execute("UPDATE gateway_api_keys SET revoked_at = now() WHERE name = 'test'")
        .await
        .unwrap();
    let (status, _, _) = gw.chat(&revoked, &hello("gpt-4o"), &[]).await;
    assert_eq!(status, 401);

    // 402: insufficient credits, monthly cap.
    let poor = gw.user("poor", "free", "0.0001").await;
    let (status, _, body) = gw.chat(&poor, &hello("gpt-4o"), &[]).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_credits");
    let capped = gw
        .user_with("capped", "free", "100", Some("0.0001"), None)
        .await;
    let (status, _, body) = gw.chat(&capped, &hello("gpt-4o"), &[]).await;
    assert_eq!(status, 402);
    assert_eq!(body["error"]["code"], "monthly_cap_exceeded");

    // 403: a model above the user's tier (Claude 3.5 Sonnet needs starter).
    let free = gw.user("freebie", "free", "100").await;
    let (status, _, body) = gw
        .chat(&free, &hello("claude-3-5-sonnet-20241022"), &[])
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["type"], "permission_error");

    // 404: unknown model.
    let (status, _, body) = gw.chat(&free, &hello("gpt-9-ultra"), &[]).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "model_not_found");

    // 413: body over the limit.
    let huge = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(1_100_000)}]});
    let (status, _, body) = gw.chat(&free, &huge, &[]).await;
    assert_eq!(status, 413, "{body}");

    // 429: the key's own rate limit, with Retry-After.
    let limited = gw.user_with("limited", "free", "100", None, Some(1)).await;
    let (status, _, _) = gw.chat(&limited, &hello("gpt-4o"), &[]).await;
    assert_eq!(status, 200);
    let (status, headers, body) = gw.chat(&limited, &hello("gpt-4o"), &[]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));

    // 503: every candidate removed by a filter (Llama has no vision).
    let image = json!({"model": "meta-llama/llama-3-70b-instruct", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    ]}]});
    let (status, _, body) = gw.chat(&free, &image, &[]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["type"], "no_available_provider");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("capabilit"),
        "{body}"
    );

    for user in ["rich", "poor", "capped", "freebie", "limited"] {
        gw.assert_ledger_consistent(user).await;
    }
}

#[tokio::test]
async fn user_a_cannot_spend_user_b_credits() {
    let gw = Gateway::start().await;
    let a = gw.user("user-a", "starter", "0").await;
    let _b = gw.user("user-b", "starter", "50").await;
    let (status, _, _) = gw.chat(&a, &hello("gpt-4o"), &[]).await;
    assert_eq!(status, 402);
    assert_eq!(gw.balance("user-b").await, d("50"));
    let (status, account) = gw.get(&a, "/v1/account").await;
    assert_eq!(status, 200);
    assert_eq!(account["user_id"], "user-a");
    assert_eq!(account["credits_balance"], "0");
    gw.assert_ledger_consistent("user-a").await;
    gw.assert_ledger_consistent("user-b").await;
}

#[tokio::test]
async fn models_are_filtered_by_tier_and_account_reports_money() {
    let gw = Gateway::start().await;
    let free = gw.user("free-user", "free", "5").await;
    let pro = gw
        .user_with("pro-user", "professional", "5", Some("100"), None)
        .await;
    let ids = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, body) = gw.get(&free, "/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    let free_ids = ids(&body);
    assert!(free_ids.contains(&"gpt-4o".to_string()));
    assert!(free_ids.contains(&"openai/gpt-4o".to_string()));
    assert!(
        !free_ids.iter().any(|id| id.contains("claude")),
        "{free_ids:?}"
    );
    let (_, body) = gw.get(&pro, "/v1/models").await;
    assert!(ids(&body).contains(&"claude-3-5-sonnet-20241022".to_string()));

    let (status, account) = gw.get(&pro, "/v1/account").await;
    assert_eq!(status, 200);
    assert_eq!(account["tier"], "professional");
    assert_eq!(account["credits_balance"], "5");
    assert_eq!(account["credits_held"], "0");
    assert_eq!(account["monthly_cap"], "100");
    let (status, body) = gw.get("sk-sb-nope", "/v1/account").await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn hundred_concurrent_requests_with_failures_keep_the_ledger_exact() {
    let gw = Arc::new(Gateway::start().await);
    gw.add_second_gpt4o_offer().await;
    let key = Arc::new(gw.user("busy", "enterprise", "3").await);
    // A third of the upstream calls fail; some of them after the stream began.
    for i in 0..60 {
        match i % 4 {
            0 => gw.upstream.push(Step::status(500)),
            1 => gw.upstream.push(Step::cut_stream(Reply::default(), 2)),
            _ => gw.upstream.push(Step::reply(Reply::default())),
        }
    }
    let mut tasks = Vec::new();
    for i in 0..100 {
        let gw = gw.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut body = hello("gpt-4o");
            if i % 2 == 0 {
                body["stream"] = json!(true);
                let (status, _, _) = gw.chat_stream(&key, &body, &[]).await;
                status.as_u16()
            } else {
                let (status, _, _) = gw.chat(&key, &body, &[]).await;
                status.as_u16()
            }
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| [200, 402, 502, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 50,
        "{statuses:?}"
    );

    gw.assert_ledger_consistent("busy").await;
    let client = gw.db.connect().await;
    let captured: Decimal = client
        .query_one("SELECT COALESCE(-sum(amount_usd), 0) FROM ledger_entries WHERE user_id = 'busy' AND kind = 'capture'", &[])
        .await
        .unwrap()
        .get(0);
    let logged: Decimal = client
        .query_one(
            "SELECT COALESCE(sum(charged_usd), 0) FROM llm_usage_logs WHERE user_id = 'busy'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(captured, logged, "captures equal the usage-log costs");
    assert_eq!(gw.balance("busy").await, d("3") - captured);
}

async fn put_byok(gw: &Gateway, key: &str, slug: &str, provider_key: &str) {
    let request = http::Request::builder()
        .method("PUT")
        .uri(format!("/v1/byok/{slug}"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({"api_key": provider_key}).to_string(),
        ))
        .unwrap();
    let response = gw.send(request).await;
    // No cache flush here: storing a key makes this process forget the user's cached
    // lookups, so the next request routes with it (keys_cooldown.rs tests that too).
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn byok_calls_use_the_users_key_and_are_not_charged_the_provider_cost() {
    let gw = Gateway::start_with(GatewayOptions {
        env: vec![("SWITCHBOARD_BYOK_FEE_PERCENT", "10".into())],
        ..GatewayOptions::default()
    })
    .await;
    let key = gw.user("byok-user", "starter", "1").await;
    let users_key = "sk-proj-users-own-key-0123456789abcdef";
    put_byok(&gw, &key, "openai", users_key).await;
    gw.upstream
        .set_default(Reply::text("hi").with_usage(1000, 200, 0));

    let (status, _, body) = gw
        .chat(&key, &hello("gpt-4o"), &[("x-request-id", "byok-1")])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        gw.upstream.last_request().unwrap().header("authorization"),
        Some(format!("Bearer {users_key}").as_str())
    );
    let meta = &body["_metadata"];
    assert_eq!(meta["byok"], true);
    // Provider cost 1000 × 2.50 + 200 × 10 = 0.0045; the platform fee is 10 % of it.
    assert_eq!(meta["provider_cost_usd"], "0.0045");
    assert_eq!(meta["cost_usd"], "0.00045");
    assert_eq!(gw.balance("byok-user").await, d("0.99955"));
    let client = gw.db.connect().await;
    let row = client
        .query_one("SELECT used_byok, cost_total_usd, charged_usd, user_key_id IS NOT NULL FROM llm_usage_logs WHERE request_id = 'byok-1'", &[])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, Decimal>(1), d("0.0045"));
    assert_eq!(row.get::<_, Decimal>(2), d("0.00045"));
    assert!(row.get::<_, bool>(3));
    let counters = client
        .query_one("SELECT total_requests, total_tokens, total_cost_usd FROM user_api_keys WHERE user_id = 'byok-user'", &[])
        .await
        .unwrap();
    assert_eq!(counters.get::<_, i64>(0), 1);
    assert_eq!(counters.get::<_, i64>(1), 1200);
    assert_eq!(counters.get::<_, Decimal>(2), d("0.0045"));
    gw.assert_ledger_consistent("byok-user").await;
}

#[tokio::test]
async fn a_byok_key_the_provider_refuses_is_marked_invalid_and_the_request_falls_back() {
    let gw = Gateway::start().await;
    gw.add_second_gpt4o_offer().await;
    let key = gw.user("refused", "starter", "1").await;
    put_byok(&gw, &key, "openai", "sk-proj-revoked-by-openai-0123456789").await;

    gw.upstream.push(Step::status(401));
    let (status, _, body) = gw
        .chat(&key, &hello("gpt-4o"), &[("x-request-id", "byok-401")])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["_metadata"]["provider_used"], "openrouter");
    assert_eq!(body["_metadata"]["byok"], false);
    let client = gw.db.connect().await;
    let row = client
        .query_one(
            "SELECT is_validated, validation_error FROM user_api_keys WHERE user_id = 'refused'",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    assert!(row.get::<_, Option<String>>(1).unwrap().contains("401"));

    // The refused key is no longer preferred: OpenAI is called with the system key.
    let (status, _, body) = gw.chat(&key, &hello("openai/gpt-4o"), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["_metadata"]["byok"], false);
    assert_eq!(
        gw.upstream.last_request().unwrap().header("authorization"),
        Some(format!("Bearer {}", system_key_for("openai")).as_str())
    );
    gw.assert_ledger_consistent("refused").await;
}

async fn breaker_state(gw: &Gateway, slug: &str) -> (i32, bool) {
    let row = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT breaker_consecutive_failures, coalesce(breaker_open_until > now(), false) FROM llm_providers WHERE provider_slug = $1",
            &[&slug],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn the_shared_circuit_breaker_opens_after_three_failures_and_a_success_closes_it() {
    let gw = Gateway::start().await;
    gw.add_second_gpt4o_offer().await;
    let key = gw.user("breaker", "starter", "10").await;
    for round in 1..=3 {
        gw.upstream.push(Step::status(502));
        let (status, _, body) = gw.chat(&key, &hello("gpt-4o"), &[]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["_metadata"]["attempts"], 2);
        assert_eq!(breaker_state(&gw, "openai").await, (round, round >= 3));
    }
    // Open: OpenAI is skipped without a call.
    let before = gw.upstream.request_count();
    let (status, _, body) = gw.chat(&key, &hello("gpt-4o"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body["_metadata"]["attempts"], 1);
    assert_eq!(body["_metadata"]["provider_used"], "openrouter");
    assert_eq!(gw.upstream.request_count(), before + 1);
    // When every candidate is cooling down they are tried anyway; a success closes it.
    let (status, _, body) = gw.chat(&key, &hello("openai/gpt-4o"), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(breaker_state(&gw, "openai").await, (0, false));
    gw.assert_ledger_consistent("breaker").await;
}

#[tokio::test]
async fn a_retry_after_opens_the_breaker_for_that_long_and_the_error_rate_opens_it_too() {
    let gw = Gateway::start().await;
    gw.add_second_gpt4o_offer().await;
    let key = gw.user("ratey", "starter", "10").await;
    gw.upstream.push(Step::rate_limited("120"));
    let (status, _, _) = gw.chat(&key, &hello("gpt-4o"), &[]).await;
    assert_eq!(status, 200);
    let open_secs: f64 = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT extract(epoch FROM breaker_open_until - now())::float8 FROM llm_providers WHERE provider_slug = 'openai'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        (100.0..=121.0).contains(&open_secs),
        "cooldown follows Retry-After: {open_secs}"
    );

    // OpenRouter: 6 recent calls, 4 failed → the first new failure opens it at once.
    let client = gw.db.connect().await;
    client
        .batch_execute(
            "INSERT INTO llm_usage_logs (user_id, provider_id, request_id, status_code)
             SELECT 'ratey', id, 'old-' || n, CASE WHEN n <= 4 THEN 500 ELSE 200 END
             FROM llm_providers, generate_series(1, 6) n WHERE provider_slug = 'openrouter'",
        )
        .await
        .unwrap();
    let opened = switchboard_core::breaker::record_failure(
        &client,
        client
            .query_one(
                "SELECT id FROM llm_providers WHERE provider_slug = 'openrouter'",
                &[],
            )
            .await
            .unwrap()
            .get(0),
        None,
        &switchboard_core::config::BreakerSettings::default(),
    )
    .await
    .unwrap();
    assert!(opened);
    assert_eq!(breaker_state(&gw, "openrouter").await, (1, true));
    gw.assert_ledger_consistent("ratey").await;
}
