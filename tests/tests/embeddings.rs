//! `POST /v1/embeddings`: OpenAI's shape, routed to embedding models only, to an OpenAI or
//! a Gemini upstream (`batchEmbedContents`), float or base64, billed through the same
//! ledger as chat (hold from the input's estimate, capture from the reported usage or
//! the estimate), with fallbacks. Also the model kinds on `/v1/models` and the route on
//! usage rows, and the mixed-traffic ledger test of issue 17.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;

use futures_util::future::join_all;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchboard_core::providers::decode_base64;
use switchboard_tests::fake_upstream::{Reply, Step, fake_embedding};
use switchboard_tests::gateway::Gateway;

async fn post(gw: &Gateway, key: &str, path: &str, body: Value) -> (u16, http::HeaderMap, Value) {
    let request = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("authorization", format!("Bearer {key}"))
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let response = gw.send(request).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, body)
}

async fn embed(gw: &Gateway, key: &str, body: Value) -> (u16, http::HeaderMap, Value) {
    post(gw, key, "/v1/embeddings", body).await
}

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

async fn usage_rows(
    gw: &Gateway,
    user: &str,
) -> Vec<(String, Option<String>, i32, Option<i32>, Decimal)> {
    gw.db
        .connect()
        .await
        .query(
            "SELECT provider_slug, route, prompt_tokens, status_code, charged_usd
             FROM llm_usage_logs WHERE user_id = $1 ORDER BY id",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

#[tokio::test]
async fn an_openai_embedding_is_answered_in_floats_and_charged_from_the_reported_usage() {
    let gw = Gateway::start().await;
    let key = gw.user("embedder", "free", "1").await;
    gw.upstream.push(Reply::text("").with_usage(12, 0, 0));
    let (status, headers, answer) = embed(
        &gw,
        &key,
        json!({"model": "text-embedding-3-small", "input": ["hello", "world!"], "dimensions": 4, "user": "end-user-7"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "list");
    assert_eq!(answer["model"], "text-embedding-3-small");
    assert_eq!(answer["data"].as_array().unwrap().len(), 2);
    for (index, text) in ["hello", "world!"].iter().enumerate() {
        let item = &answer["data"][index];
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], index);
        assert_eq!(
            item["embedding"],
            json!(fake_embedding(index, text.len(), 4))
        );
    }
    assert_eq!(
        answer["usage"],
        json!({"prompt_tokens": 12, "total_tokens": 12})
    );
    assert_eq!(headers["x-switchboard-provider"], "openai");
    assert_eq!(headers["x-switchboard-model"], "text-embedding-3-small");
    // 12 tokens at $0.02 per million.
    assert_eq!(answer["_metadata"]["cost_usd"], "0.00000024");
    assert_eq!(gw.balance("embedder").await, dec("0.99999976"));
    let sent = gw.upstream.last_request().unwrap();
    assert_eq!(sent.path, "/v1/embeddings");
    assert_eq!(sent.body["dimensions"], 4);
    assert_eq!(sent.body["user"], "end-user-7");
    let rows = usage_rows(&gw, "embedder").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1.as_deref(), Some("/v1/embeddings"));
    assert_eq!(rows[0].2, 12);
    assert_eq!(rows[0].4, dec("0.00000024"));
    gw.assert_ledger_consistent("embedder").await;
}

#[tokio::test]
async fn a_gemini_embedding_in_base64_is_charged_from_the_counted_input() {
    let gw = Gateway::start().await;
    let key = gw.user("gem-embedder", "free", "1").await;
    let texts = ["a first sentence to embed", "and a second one"];
    let (status, headers, answer) = embed(
        &gw,
        &key,
        json!({"model": "text-embedding-004", "input": texts, "encoding_format": "base64", "dimensions": 3}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(headers["x-switchboard-provider"], "google");
    for (index, text) in texts.iter().enumerate() {
        let encoded = answer["data"][index]["embedding"].as_str().unwrap();
        assert_eq!(
            decode_base64(encoded).unwrap(),
            fake_embedding(index, text.len(), 3)
        );
    }
    let sent = gw.upstream.last_request().unwrap();
    assert!(
        sent.path
            .ends_with("/models/text-embedding-004:batchEmbedContents"),
        "{}",
        sent.path
    );
    assert_eq!(
        sent.body["requests"][1]["content"]["parts"][0]["text"],
        texts[1]
    );
    assert_eq!(sent.body["requests"][0]["outputDimensionality"], 3);
    // Gemini reports no usage: the counted input is billed, at $0.10 per million.
    let tokens = answer["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(tokens >= 8, "{tokens}");
    let cost = Decimal::from(tokens) * dec("0.10") / Decimal::from(1_000_000);
    assert_eq!(dec(answer["_metadata"]["cost_usd"].as_str().unwrap()), cost);
    assert_eq!(gw.balance("gem-embedder").await, Decimal::ONE - cost);
    gw.assert_ledger_consistent("gem-embedder").await;
}

#[tokio::test]
async fn auto_falls_back_from_a_failing_openai_to_gemini_and_charges_once() {
    let gw = Gateway::start().await;
    let key = gw.user("fallback-embedder", "free", "1").await;
    gw.upstream.push(Step::status(503));
    let (status, headers, answer) = embed(
        &gw,
        &key,
        json!({"model": "auto", "input": "fall back please"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(headers["x-switchboard-provider"], "google");
    assert_eq!(answer["_metadata"]["attempts"], 2);
    let rows = usage_rows(&gw, "fallback-embedder").await;
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].0.as_str(), rows[0].3), ("openai", Some(503)));
    assert_eq!(rows[0].4, Decimal::ZERO);
    assert_eq!((rows[1].0.as_str(), rows[1].3), ("google", Some(200)));
    assert!(
        rows.iter()
            .all(|r| r.1.as_deref() == Some("/v1/embeddings"))
    );
    assert_eq!(
        gw.balance("fallback-embedder").await,
        Decimal::ONE - rows[1].4
    );
    gw.assert_ledger_consistent("fallback-embedder").await;
}

#[tokio::test]
async fn token_arrays_go_only_to_an_openai_format_provider() {
    let gw = Gateway::start().await;
    let key = gw.user("token-embedder", "free", "1").await;
    gw.upstream.push(Reply::text("").with_usage(5, 0, 0));
    let (status, _, answer) = embed(
        &gw,
        &key,
        json!({"model": "auto", "input": [[1, 2, 3], [4, 5]]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["data"][1]["embedding"],
        json!(fake_embedding(1, 2, 8))
    );
    // Gemini cannot take tokens: asked by name, routing says why.
    let (status, _, answer) = embed(
        &gw,
        &key,
        json!({"model": "text-embedding-004", "input": [1, 2, 3]}),
    )
    .await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("token-array input"),
        "{answer}"
    );
    gw.assert_ledger_consistent("token-embedder").await;
}

#[tokio::test]
async fn chat_routes_never_pick_embedding_models_and_the_reverse() {
    let gw = Gateway::start().await;
    let key = gw.user("kinds", "starter", "1").await;
    let (status, _, answer) = embed(&gw, &key, json!({"model": "gpt-4o", "input": "x"})).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["param"], "model");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is a chat model"),
        "{answer}"
    );
    let (status, _, answer) = gw
        .chat(
            &key,
            &json!({"model": "text-embedding-3-small", "messages": [{"role": "user", "content": "hi"}]}),
            &[],
        )
        .await;
    assert_eq!(status.as_u16(), 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is an embedding model"),
        "{answer}"
    );
    let (status, _, answer) = post(
        &gw,
        &key,
        "/v1/messages",
        json!({"model": "openai/text-embedding-3-small", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["type"], "error");
    // `auto` chat still routes to chat models although embedding rules now exist.
    let (status, headers, answer) = gw
        .chat(
            &key,
            &json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}),
            &[],
        )
        .await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    assert_ne!(headers["x-switchboard-model"], "text-embedding-3-small");
    let rows = usage_rows(&gw, "kinds").await;
    assert_eq!(
        rows.last().unwrap().1.as_deref(),
        Some("/v1/chat/completions")
    );
    gw.assert_ledger_consistent("kinds").await;
}

#[tokio::test]
async fn bad_embedding_requests_are_clear_400s_and_credits_are_checked() {
    let gw = Gateway::start().await;
    let key = gw.user("bad-embedder", "free", "1").await;
    for (body, param) in [
        (
            json!({"model": "text-embedding-3-small", "input": []}),
            Some("input"),
        ),
        (
            json!({"model": "text-embedding-3-small", "input": ["ok", ""]}),
            Some("input"),
        ),
        (
            json!({"model": "text-embedding-3-small", "input": "x", "dimensions": 0}),
            Some("dimensions"),
        ),
        (
            json!({"model": "text-embedding-3-small", "input": 42}),
            None,
        ),
        (
            json!({"model": "text-embedding-3-small", "input": "x", "encoding_format": "int8"}),
            None,
        ),
        (json!({"input": "x"}), None),
    ] {
        let (status, _, answer) = embed(&gw, &key, body.clone()).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");
        if let Some(param) = param {
            assert_eq!(answer["error"]["param"], param, "{answer}");
        }
    }
    assert_eq!(
        gw.upstream.request_count(),
        0,
        "nothing invalid went upstream"
    );
    let (status, _, answer) = embed(
        &gw,
        &key,
        json!({"model": "no-such-embedder", "input": "x"}),
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    let broke = gw.user("broke-embedder", "free", "0").await;
    let (status, _, answer) = embed(
        &gw,
        &broke,
        json!({"model": "text-embedding-3-small", "input": "x"}),
    )
    .await;
    assert_eq!(status, 402, "{answer}");
    assert_eq!(gw.upstream.request_count(), 0);
}

#[tokio::test]
async fn the_model_list_marks_embedding_models_and_speaks_anthropic_when_asked() {
    let gw = Gateway::start().await;
    let key = gw.user("lister", "starter", "1").await;
    let (status, list) = gw.get(&key, "/v1/models").await;
    assert_eq!(status.as_u16(), 200);
    let kind = |id: &str| {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .map(|m| m["model_type"].clone())
    };
    assert_eq!(kind("text-embedding-3-small"), Some(json!("embedding")));
    assert_eq!(kind("google/text-embedding-004"), Some(json!("embedding")));
    assert_eq!(kind("gpt-4o"), Some(json!("chat")));

    let anthropic = |query: &'static str| {
        let key = key.clone();
        let gw = &gw;
        async move {
            let request = http::Request::builder()
                .uri(format!("/v1/models{query}"))
                .header("x-api-key", key)
                .header("anthropic-version", "2023-06-01")
                .body(axum::body::Body::empty())
                .unwrap();
            let response = gw.send(request).await;
            let status = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let (status, page) = anthropic("").await;
    assert_eq!(status, 200, "{page}");
    let data = page["data"].as_array().unwrap();
    assert!(data.iter().all(|m| m["type"] == "model"), "{page}");
    assert!(
        data.iter().any(|m| m["id"] == "claude-3-5-sonnet-20241022"),
        "{page}"
    );
    assert!(
        !data.iter().any(|m| m["id"] == "text-embedding-3-small"),
        "{page}"
    );
    assert!(data[0]["display_name"].is_string() && data[0]["created_at"].is_string());
    assert_eq!(page["first_id"], data[0]["id"]);
    assert_eq!(page["has_more"], false);
    let (_, first) = anthropic("?limit=2").await;
    assert_eq!(first["data"].as_array().unwrap().len(), 2);
    assert_eq!(first["has_more"], true);
    let after = first["last_id"].as_str().unwrap().replace('/', "%2F");
    let (_, second) = anthropic(Box::leak(
        format!("?limit=2&after_id={after}").into_boxed_str(),
    ))
    .await;
    assert_eq!(second["data"][0]["id"], data[2]["id"], "{second}");
    let (status, _) = anthropic("?limit=0").await;
    assert_eq!(status, 400);
}

/// Issue 17's ledger test: 100 concurrent requests — `/v1/messages` streamed and not,
/// and `/v1/embeddings` — against a balance that covers exactly K of them. Each costs
/// the same amount, held and captured (a chat model with a zero output price, and an
/// embedding of as many tokens as the message's prompt), so exactly K succeed, whatever
/// the order.
#[tokio::test]
async fn mixed_concurrent_messages_and_embeddings_spend_exactly_the_balance() {
    const REQUESTS: usize = 100;
    const K: usize = 37;
    let gw = Gateway::start().await;
    let client = gw.db.connect().await;
    client
        .batch_execute(
            "INSERT INTO llm_models (provider_id, model_name, model_id, context_window,
                 cost_per_1m_input_tokens, cost_per_1m_output_tokens, model_type, supports_streaming)
             SELECT id, 'flat-chat', 'flat-chat', 100000, 1, 0, 'chat', true
             FROM llm_providers WHERE provider_slug = 'openai';
             INSERT INTO llm_models (provider_id, model_name, model_id, context_window,
                 cost_per_1m_input_tokens, cost_per_1m_output_tokens, model_type, supports_streaming)
             SELECT id, 'flat-embed', 'flat-embed', 100000, 1, 0, 'embedding', false
             FROM llm_providers WHERE provider_slug = 'openai';",
        )
        .await
        .unwrap();
    gw.state.catalog.invalidate();
    let setup = gw.user("setup", "free", "1").await;
    let message = json!({"model": "flat-chat", "max_tokens": 50,
                         "messages": [{"role": "user", "content": "Count these words for me please."}]});
    let (status, _, counted) =
        post(&gw, &setup, "/v1/messages/count_tokens", message.clone()).await;
    assert_eq!(status, 200, "{counted}");
    let n = counted["input_tokens"].as_u64().unwrap();
    // Every answer reports exactly the estimate as its input, so capture = hold.
    gw.upstream
        .set_default(Reply::text("ok").with_usage(n, 3, 0));
    let cost = Decimal::from(n) / Decimal::from(1_000_000);
    let balance = cost * Decimal::from(K);
    let key = gw
        .user_with("mixed", "free", &balance.to_string(), None, Some(10_000))
        .await;
    let tokens: Vec<u32> = (0..n as u32).collect();
    let requests = (0..REQUESTS).map(|i| {
        let (path, body) = match i % 3 {
            0 => (
                "/v1/embeddings",
                json!({"model": "flat-embed", "input": tokens}),
            ),
            1 => ("/v1/messages", message.clone()),
            _ => {
                let mut streamed = message.clone();
                streamed["stream"] = json!(true);
                ("/v1/messages", streamed)
            }
        };
        let gw = &gw;
        let key = key.clone();
        async move {
            let request = http::Request::builder()
                .method("POST")
                .uri(path)
                .header("x-api-key", key)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap();
            let response = gw.send(request).await;
            let status = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            (status, text)
        }
    });
    let results = join_all(requests).await;
    let ok = results.iter().filter(|(status, _)| *status == 200).count();
    let refused = results.iter().filter(|(status, _)| *status == 402).count();
    for (status, text) in &results {
        assert!(*status == 200 || *status == 402, "{status}: {text}");
        if *status == 200 && text.starts_with("event:") {
            assert!(text.contains("event: message_stop"), "{text}");
        }
    }
    assert_eq!((ok, refused), (K, REQUESTS - K));
    assert_eq!(gw.balance("mixed").await, Decimal::ZERO);
    gw.assert_ledger_consistent("mixed").await;
    let routes: Vec<String> = client
        .query(
            "SELECT DISTINCT route FROM llm_usage_logs WHERE user_id = 'mixed' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(routes, ["/v1/embeddings", "/v1/messages"]);
}

async fn admin(
    gw: &Gateway,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            body.map_or_else(String::new, |b| b.to_string()),
        ))
        .unwrap();
    let response = gw.send(request).await;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn admins_set_filter_and_change_a_models_kind() {
    let gw = Gateway::start().await;
    gw.user("catalog-admin", "free", "0").await;
    let key = gw.key_for("catalog-admin", "admin", None).await;
    let (status, listed) =
        admin(&gw, &key, "GET", "/admin/models?model_type=embedding", None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["total"], 2, "{listed}");
    let (status, created) = admin(
        &gw,
        &key,
        "POST",
        "/admin/models",
        Some(json!({"provider_id": 1, "model_id": "text-embedding-3-large", "model_type": "embedding",
                    "context_window": 8191, "cost_per_1m_input_tokens": "0.13", "cost_per_1m_output_tokens": "0"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["model_type"], "embedding");
    let id = created["id"].as_i64().unwrap();
    let (status, chat) = admin(
        &gw,
        &key,
        "POST",
        "/admin/models",
        Some(
            json!({"provider_id": 1, "model_id": "some-chat", "context_window": 8191,
                    "cost_per_1m_input_tokens": "1", "cost_per_1m_output_tokens": "2"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{chat}");
    assert_eq!(chat["model_type"], "chat", "the default");
    let (status, patched) = admin(
        &gw,
        &key,
        "PATCH",
        &format!("/admin/models/{id}"),
        Some(json!({"model_type": "chat"})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["model_type"], "chat");
    let (status, refused) = admin(
        &gw,
        &key,
        "PATCH",
        &format!("/admin/models/{id}"),
        Some(json!({"model_type": "vector"})),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("model_type")
            || refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("vector"),
        "{refused}"
    );
}
