//! Every cost priced: only fields the ledger can price reach a provider on the platform's
//! key (price-raising ones are refused, unknown ones dropped; the user's own key forwards
//! them), the hold's output limit goes upstream when the request sets none, and Anthropic
//! prompt-cache writes are charged at their 5-minute and 1-hour prices, streamed or not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchboard_tests::fake_upstream::Reply;
use switchboard_tests::gateway::Gateway;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello."}]})
}

async fn active_holds(gw: &Gateway) -> i64 {
    gw.db
        .connect()
        .await
        .query_one(
            "SELECT count(*) FROM credit_holds WHERE state = 'active'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn price_raising_fields_are_refused_on_the_platform_key() {
    let gw = Gateway::start().await;
    let key = gw.user("tiered", "starter", "5").await;
    for (field, value) in [
        ("service_tier", json!("priority")),
        ("service_tier", json!("flex")),
        ("web_search_options", json!({})),
        ("audio", json!({"voice": "alloy", "format": "wav"})),
        ("modalities", json!(["text", "audio"])),
    ] {
        let mut body = hello("gpt-4o");
        body[field] = value.clone();
        let (status, _, answer) = gw.chat(&key, &body, &[]).await;
        assert_eq!(status, 400, "{field}={value}: {answer}");
        assert_eq!(answer["error"]["param"], field, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(field) && message.contains("BYOK"),
            "{message}"
        );
    }
    assert_eq!(gw.upstream.request_count(), 0, "nothing reached a provider");
    assert_eq!(active_holds(&gw).await, 0);
    assert_eq!(gw.balance("tiered").await, d("5"));
}

#[tokio::test]
async fn unknown_fields_are_dropped_and_known_free_ones_forwarded() {
    let gw = Gateway::start().await;
    let key = gw.user("fields", "starter", "5").await;
    let mut body = hello("openai/gpt-4o");
    body["x_made_up_field"] = json!("surprise");
    body["service_tier"] = json!("auto");
    body["logprobs"] = json!(true);
    body["max_tokens"] = json!(50);
    let (status, _, answer) = gw.chat(&key, &body, &[]).await;
    assert_eq!(status, 200, "{answer}");
    let sent = gw.upstream.last_request().unwrap().body;
    assert!(sent.get("x_made_up_field").is_none(), "{sent}");
    assert_eq!(sent["service_tier"], "auto");
    assert_eq!(sent["logprobs"], true);
    assert_eq!(sent["max_tokens"], 50, "the client's own limit is kept");
    gw.assert_ledger_consistent("fields").await;
}

#[tokio::test]
async fn the_users_own_key_may_send_what_the_platform_would_not_pay_for() {
    let gw = Gateway::start().await;
    let key = gw.user("own", "starter", "5").await;
    let users_key = "sk-proj-users-own-key-0123456789abcdef";
    let request = http::Request::builder()
        .method("PUT")
        .uri("/v1/byok/openai")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({"api_key": users_key}).to_string(),
        ))
        .unwrap();
    assert_eq!(gw.send(request).await.status(), 200);

    let mut body = hello("openai/gpt-4o");
    body["service_tier"] = json!("priority");
    body["x_made_up_field"] = json!(1);
    let (status, _, answer) = gw.chat(&key, &body, &[]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["_metadata"]["byok"], true);
    let sent = gw.upstream.last_request().unwrap();
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {users_key}").as_str())
    );
    assert_eq!(sent.body["service_tier"], "priority");
    assert_eq!(sent.body["x_made_up_field"], 1);
    gw.assert_ledger_consistent("own").await;
}

#[tokio::test]
async fn the_output_limit_the_hold_assumed_goes_upstream() {
    let gw = Gateway::start().await;
    gw.db
        .connect()
        .await
        .batch_execute(
            "INSERT INTO llm_models (provider_id, model_name, model_id, context_window, max_tokens,
                 cost_per_1m_input_tokens, cost_per_1m_output_tokens)
             SELECT id, 'Gemini 2.0 Flash', 'gemini-2.0-flash', 1000000, 8192, 0.10, 0.40
             FROM llm_providers WHERE provider_slug = 'google'",
        )
        .await
        .unwrap();
    gw.state.catalog.invalidate();
    let key = gw.user("limits", "starter", "5").await;

    // OpenAI format: the catalog's max output for gpt-4o (16384).
    let (status, _, answer) = gw.chat(&key, &hello("openai/gpt-4o"), &[]).await;
    assert_eq!(status, 200, "{answer}");
    let sent = gw.upstream.last_request().unwrap().body;
    assert_eq!(sent["max_tokens"], 16384, "{sent}");
    // Gemini format: generationConfig.maxOutputTokens.
    let (status, _, answer) = gw.chat(&key, &hello("gemini-2.0-flash"), &[]).await;
    assert_eq!(status, 200, "{answer}");
    let sent = gw.upstream.last_request().unwrap().body;
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 8192, "{sent}");
    // The held amount covered exactly that limit: 16384 × $10 per 1M plus the prompt.
    let held: Decimal = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT max(amount_usd) FROM credit_holds WHERE user_id = 'limits'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(held >= d("0.16384"), "{held}");
    gw.assert_ledger_consistent("limits").await;
}

/// A Claude request that asks for prompt caching.
fn cached_claude(stream: bool) -> Value {
    json!({
        "model": "anthropic/claude-3-5-sonnet-20241022",
        "stream": stream,
        "stream_options": {"include_usage": true},
        "max_tokens": 100,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "A long document to cache.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            {"type": "text", "text": "Summarise it."}
        ]}]
    })
}

async fn charged(gw: &Gateway, request_id: &str) -> Decimal {
    gw.db
        .connect()
        .await
        .query_one(
            "SELECT charged_usd FROM llm_usage_logs WHERE request_id = $1 AND status_code = 200",
            &[&request_id],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn cache_writes_are_charged_at_their_lifetime_prices_streamed_or_not() {
    let gw = Gateway::start().await;
    let key = gw.user("cacher", "starter", "5").await;
    // 3,500 prompt tokens: 500 plain, 1,000 written for 5 minutes, 2,000 for 1 hour.
    let reply = || {
        Reply::text("A summary.")
            .with_usage(3500, 100, 0)
            .with_cache_creation_split(1000, 2000)
    };
    // The seed's list prices: input $3, 5-minute write $3.75, 1-hour write $6, output $15:
    // 500 × 3 + 1000 × 3.75 + 2000 × 6 + 100 × 15 = 18,750 per 1M.
    let expected = d("0.01875");
    for (stream, id) in [(false, "cache-json"), (true, "cache-sse")] {
        gw.upstream.push(reply());
        let headers = [("x-request-id", id)];
        if stream {
            let (status, _, events) = gw.chat_stream(&key, &cached_claude(true), &headers).await;
            assert_eq!(status, 200);
            assert_eq!(events.last().unwrap().1, "[DONE]");
        } else {
            let (status, _, answer) = gw.chat(&key, &cached_claude(false), &headers).await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["_metadata"]["cost_usd"], "0.01875");
        }
        assert_eq!(charged(&gw, id).await, expected, "{id}");
    }
    let sent = gw.upstream.last_request().unwrap().body;
    assert_eq!(
        sent["messages"][0]["content"][0]["cache_control"]["ttl"], "1h",
        "{sent}"
    );
    // Each usage row records the prices it was charged at.
    let prices: Vec<Decimal> = {
        let row = gw
            .db
            .connect()
            .await
            .query_one(
                "SELECT price_input_per_1m, price_cached_input_per_1m, price_cache_write_per_1m,
                        price_cache_write_1h_per_1m, price_output_per_1m
                 FROM llm_usage_logs WHERE request_id = 'cache-json'",
                &[],
            )
            .await
            .unwrap();
        (0..5).map(|i| row.get(i)).collect()
    };
    assert_eq!(prices, [d("3"), d("0.3"), d("3.75"), d("6"), d("15")]);

    // Without catalog prices, Anthropic's rule: 1.25 × and 2 × the input price; with an
    // admin's own prices, those.
    let client = gw.db.connect().await;
    client
        .batch_execute(
            "UPDATE llm_models SET cost_per_1m_cache_write_tokens = NULL,
                 cost_per_1m_cache_write_1h_tokens = NULL
             WHERE model_id = 'claude-3-5-sonnet-20241022'",
        )
        .await
        .unwrap();
    gw.state.catalog.invalidate();
    gw.upstream.push(reply());
    let (status, _, answer) = gw
        .chat(
            &key,
            &cached_claude(false),
            &[("x-request-id", "cache-rule")],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(charged(&gw, "cache-rule").await, expected);
    client
        .batch_execute(
            "UPDATE llm_models SET cost_per_1m_cache_write_tokens = 4,
                 cost_per_1m_cache_write_1h_tokens = 7
             WHERE model_id = 'claude-3-5-sonnet-20241022'",
        )
        .await
        .unwrap();
    gw.state.catalog.invalidate();
    gw.upstream.push(reply());
    let (status, _, answer) = gw
        .chat(
            &key,
            &cached_claude(false),
            &[("x-request-id", "cache-own")],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    // 500 × 3 + 1000 × 4 + 2000 × 7 + 100 × 15 = 21,000 per 1M.
    assert_eq!(charged(&gw, "cache-own").await, d("0.021"));
    gw.assert_ledger_consistent("cacher").await;
}

#[tokio::test]
async fn admins_set_cache_write_prices_and_bad_ones_are_refused() {
    let gw = Gateway::start().await;
    gw.user("boss", "enterprise", "0").await;
    let admin = gw.key_for("boss", "admin", None).await;
    let claude: i32 = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT id FROM llm_models WHERE model_id = 'claude-3-5-sonnet-20241022'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (status, view) = gw.get(&admin, &format!("/admin/models/{claude}")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["cost_per_1m_cache_write_tokens"], "3.75");
    assert_eq!(view["cost_per_1m_cache_write_1h_tokens"], "6.00");

    let patch = |body: Value| {
        http::Request::builder()
            .method("PATCH")
            .uri(format!("/admin/models/{claude}"))
            .header("authorization", format!("Bearer {admin}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap()
    };
    let response = gw
        .send(patch(json!({"cost_per_1m_cache_write_tokens": "-1"})))
        .await;
    assert_eq!(response.status(), 400);
    let response = gw
        .send(patch(
            json!({"cost_per_1m_cache_write_tokens": "4.5", "cost_per_1m_cache_write_1h_tokens": null}),
        ))
        .await;
    assert_eq!(response.status(), 200);
    let (_, view) = gw.get(&admin, &format!("/admin/models/{claude}")).await;
    assert_eq!(view["cost_per_1m_cache_write_tokens"], "4.50");
    assert_eq!(view["cost_per_1m_cache_write_1h_tokens"], Value::Null);
    let document = serde_json::to_value(switchboard_admin::openapi()).unwrap();
    assert!(
        document
            .to_string()
            .contains("cost_per_1m_cache_write_1h_tokens"),
        "the OpenAPI document names the new fields"
    );
}
