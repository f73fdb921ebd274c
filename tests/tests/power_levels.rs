//! Power levels as the seed defines them (issue 18): measured latency and throughput on
//! each model, the latency ceiling of `auto`, `prefer_cached` ordering, and the prompt-cache
//! breakpoints added to Anthropic calls of levels that prefer cached prompts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::join_all;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use switchboard_core::catalog::{
    PERFORMANCE_WINDOW, PowerLevel, TaskType, Tier, load_catalog, refresh_model_performance,
};
use switchboard_core::config::PowerLevelCeilings;
use switchboard_core::routing::{
    RequiredCapabilities, RoutingContext, RoutingRequest, plan_candidates,
};
use switchboard_tests::fake_upstream::{Reply, Step};
use switchboard_tests::gateway::{Gateway, GatewayOptions};
use switchboard_tests::test_db::TestDb;

/// Three chat models on the OpenAI provider (cheap enough for every ceiling) and `auto`
/// rules: precision → slow and slower (priority 1), fast (priority 2); eco → slow.
const MODELS: &str = "
    DELETE FROM llm_routing_rules;
    INSERT INTO llm_models (provider_id, model_name, model_id, context_window, supports_streaming,
                            cost_per_1m_input_tokens, cost_per_1m_output_tokens)
    SELECT p.id, m, m, 100000, true, 0.10, 0.10
    FROM llm_providers p, unnest(ARRAY['slow-model', 'slower-model', 'fast-model']) AS m
    WHERE p.provider_slug = 'openai';
    INSERT INTO llm_routing_rules (model_id, power_level, priority, weight)
    SELECT m.id, r.level, r.priority, 100
    FROM (VALUES ('slow-model', 'precision', 1), ('slower-model', 'precision', 1),
                 ('fast-model', 'precision', 2), ('slow-model', 'eco', 1)) AS r (model, level, priority)
    JOIN llm_models m ON m.model_id = r.model;";

async fn routed(gw: &Gateway, key: &str, level: &str, stream: bool) -> String {
    let body = json!({"model": "auto", "stream": stream,
                      "messages": [{"role": "user", "content": "hi"}]});
    let (status, headers, answer) = if stream {
        let (status, headers, _) = gw
            .chat_stream(key, &body, &[("x-power-level", level)])
            .await;
        (status, headers, Value::Null)
    } else {
        gw.chat(key, &body, &[("x-power-level", level)]).await
    };
    assert_eq!(status.as_u16(), 200, "{answer}");
    headers["x-switchboard-model"].to_str().unwrap().to_string()
}

/// Sends `n` concurrent calls to `model`, each answered after `delay`.
async fn measure(gw: &Gateway, key: &str, model: &str, n: usize, delay: Duration, stream: bool) {
    for _ in 0..n {
        gw.upstream.push(Step::delayed_reply(
            delay,
            Reply::text("measured answer").with_usage(20, 40, 0),
        ));
    }
    let body = json!({"model": model, "stream": stream,
                      "messages": [{"role": "user", "content": "hi"}]});
    let calls = (0..n).map(|_| async {
        if stream {
            gw.chat_stream(key, &body, &[]).await.0
        } else {
            gw.chat(key, &body, &[]).await.0
        }
    });
    for status in join_all(calls).await {
        assert_eq!(status.as_u16(), 200);
    }
}

async fn refresh(gw: &Gateway) {
    let client = gw.db.connect().await;
    assert!(
        refresh_model_performance(&client, PERFORMANCE_WINDOW, Duration::ZERO)
            .await
            .unwrap()
    );
    gw.state.catalog.invalidate();
}

async fn model_view(gw: &Gateway, admin: &str, model_id: &str) -> Value {
    let id: i32 = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT id FROM llm_models WHERE model_id = $1",
            &[&model_id],
        )
        .await
        .unwrap()
        .get(0);
    let (status, view) = gw.get(admin, &format!("/admin/models/{id}")).await;
    assert_eq!(status.as_u16(), 200, "{view}");
    view
}

#[tokio::test]
async fn measured_latency_steers_precision_away_from_slow_models_but_never_to_none() {
    let gw = Gateway::start_with(GatewayOptions {
        env: vec![
            ("SWITCHBOARD_PRECISION_MAX_LATENCY_MS", "300".into()),
            ("SWITCHBOARD_LATENCY_MIN_SAMPLES", "3".into()),
        ],
        ..GatewayOptions::default()
    })
    .await;
    gw.db.connect().await.batch_execute(MODELS).await.unwrap();
    gw.state.catalog.invalidate();
    let key = gw
        .user_with("latency", "free", "5", None, Some(10_000))
        .await;
    let admin = gw.key_for("latency", "admin", None).await;

    measure(
        &gw,
        &key,
        "slow-model",
        3,
        Duration::from_millis(450),
        false,
    )
    .await;
    measure(
        &gw,
        &key,
        "slower-model",
        3,
        Duration::from_millis(800),
        false,
    )
    .await;
    measure(&gw, &key, "fast-model", 3, Duration::ZERO, false).await;
    refresh(&gw).await;

    // The measurements, read-only through the admin API.
    let slow = model_view(&gw, &admin, "slow-model").await;
    assert!(slow["avg_latency_ms"].as_i64().unwrap() >= 450, "{slow}");
    assert!(slow["latency_samples"].as_i64().unwrap() >= 3, "{slow}");
    assert!(slow["avg_tokens_per_second"].is_string(), "{slow}");
    assert!(slow["tokens_per_second_samples"].as_i64().unwrap() >= 3);
    assert!(slow["performance_updated_at"].is_string());
    let fast = model_view(&gw, &admin, "fast-model").await;
    assert!(fast["avg_latency_ms"].as_i64().unwrap() < 300, "{fast}");
    let request = http::Request::builder()
        .method("PATCH")
        .uri(format!("/admin/models/{}", fast["id"]))
        .header("authorization", format!("Bearer {admin}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(r#"{"avg_latency_ms": 1}"#))
        .unwrap();
    assert_eq!(
        gw.send(request).await.status().as_u16(),
        400,
        "measured columns are read-only"
    );

    // Precision now skips both slow models; eco (10 s) still uses slow-model.
    for _ in 0..4 {
        assert_eq!(routed(&gw, &key, "precision", false).await, "fast-model");
        assert_eq!(routed(&gw, &key, "eco", false).await, "slow-model");
    }

    // Without the fast model every precision candidate is too slow: the fastest stays.
    gw.db
        .connect()
        .await
        .batch_execute("UPDATE llm_models SET is_active = false WHERE model_id = 'fast-model'")
        .await
        .unwrap();
    gw.state.catalog.invalidate();
    for _ in 0..6 {
        assert_eq!(routed(&gw, &key, "precision", false).await, "slow-model");
    }
    gw.assert_ledger_consistent("latency").await;
}

#[tokio::test]
async fn streams_are_measured_by_their_time_to_first_token() {
    let gw = Gateway::start_with(GatewayOptions {
        env: vec![("SWITCHBOARD_LATENCY_MIN_SAMPLES", "2".into())],
        ..GatewayOptions::default()
    })
    .await;
    gw.db.connect().await.batch_execute(MODELS).await.unwrap();
    gw.state.catalog.invalidate();
    let key = gw.user_with("ttft", "free", "5", None, Some(10_000)).await;
    let admin = gw.key_for("ttft", "admin", None).await;
    // The first token comes after the delay; the stream then takes 40 ms per frame.
    for _ in 0..2 {
        gw.upstream.push(Step::delay(
            Duration::from_millis(250),
            Step::slow_stream(Reply::text("one two three four"), Duration::from_millis(40)),
        ));
    }
    let body = json!({"model": "slow-model", "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..2 {
        assert_eq!(gw.chat_stream(&key, &body, &[]).await.0.as_u16(), 200);
    }
    let rows = gw
        .db
        .connect()
        .await
        .query(
            "SELECT ttft_ms, latency_ms FROM llm_usage_logs WHERE user_id = 'ttft' AND stream",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let (ttft, total): (Option<i32>, Option<i32>) = (row.get(0), row.get(1));
        let (ttft, total) = (ttft.unwrap(), total.unwrap());
        assert!(
            ttft >= 250 && ttft < total,
            "ttft {ttft} ms, total {total} ms"
        );
    }
    refresh(&gw).await;
    let view = model_view(&gw, &admin, "slow-model").await;
    assert_eq!(view["ttft_samples"], 2, "{view}");
    assert!(view["avg_ttft_ms"].as_i64().unwrap() >= 250, "{view}");
    assert_eq!(
        view["latency_samples"], 0,
        "no buffered call was measured: {view}"
    );
}

#[tokio::test]
async fn the_refresh_runs_at_most_once_per_interval_across_processes() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    let interval = Duration::from_secs(30);
    assert!(
        refresh_model_performance(&client, PERFORMANCE_WINDOW, interval)
            .await
            .unwrap()
    );
    assert!(
        !refresh_model_performance(&client, PERFORMANCE_WINDOW, interval)
            .await
            .unwrap()
    );
    // A catalog load (any process) triggers it when due and reads the result.
    client
        .batch_execute(
            "UPDATE model_performance_refresh SET refreshed_at = now() - interval '31 seconds'",
        )
        .await
        .unwrap();
    load_catalog(&client).await.unwrap();
    let fresh: bool = client
        .query_one(
            "SELECT refreshed_at > now() - interval '5 seconds' FROM model_performance_refresh",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(fresh);
}

#[tokio::test]
async fn prefer_cached_orders_cache_capable_offers_first_for_eco_and_balanced_only() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    // Two offers of one priority: `cached-model` has a cache discount and a tiny weight,
    // `plain-model` none and a huge weight.
    client
        .batch_execute(
            "DELETE FROM llm_routing_rules;
             INSERT INTO llm_models (provider_id, model_name, model_id, context_window,
                                     cost_per_1m_input_tokens, cost_per_1m_output_tokens,
                                     cost_per_1m_tokens_cached)
             SELECT p.id, m.name, m.name, 100000, 0.10, 0.10, m.cached
             FROM llm_providers p,
                  (VALUES ('cached-model', 0.01::numeric), ('plain-model', NULL)) AS m (name, cached)
             WHERE p.provider_slug = 'openai';
             INSERT INTO llm_routing_rules (model_id, power_level, priority, weight)
             SELECT m.id, l.level, 1, CASE m.model_id WHEN 'cached-model' THEN 1 ELSE 10000 END
             FROM llm_models m,
                  unnest(ARRAY['eco', 'balanced', 'precision']) AS l (level)
             WHERE m.model_id IN ('cached-model', 'plain-model');",
        )
        .await
        .unwrap();
    let catalog = load_catalog(&client).await.unwrap();
    let ceilings = PowerLevelCeilings::default();
    let first = |level: PowerLevel, prompt: u32, seed: u64| {
        let request = RoutingRequest {
            user_id: "u".into(),
            tier: Tier::Free,
            power_level: level,
            task_type: TaskType::Chat,
            model: "auto".into(),
            model_type: Default::default(),
            capabilities: RequiredCapabilities::default(),
            estimated_prompt_tokens: prompt,
            requested_output_tokens: Some(10),
            byok_providers: HashSet::new(),
        };
        let context = RoutingContext {
            now: chrono::Utc::now(),
            has_system_key: &|_: &str| true,
            ceilings: &ceilings,
        };
        let plan = plan_candidates(
            &catalog,
            &request,
            &context,
            &mut StdRng::seed_from_u64(seed),
        )
        .unwrap();
        assert_eq!(plan.candidates.len(), 2);
        plan.candidates[0].model.model_id.clone()
    };
    for seed in 0..20 {
        // A cacheable prompt: eco and balanced put the cache-capable offer first.
        assert_eq!(first(PowerLevel::Eco, 5_000, seed), "cached-model");
        assert_eq!(first(PowerLevel::Balanced, 5_000, seed), "cached-model");
        // Precision ignores it, and so does a prompt too short to be cached: the weights
        // decide (10,000 : 1).
        assert_eq!(first(PowerLevel::Precision, 5_000, seed), "plain-model");
        assert_eq!(first(PowerLevel::Eco, 200, seed), "plain-model");
    }
}

async fn claude(gw: &Gateway, key: &str, level: &str, reply: Reply) -> (Value, Value) {
    gw.upstream.push(reply);
    let body = json!({"model": "claude-3-5-sonnet-20241022", "max_tokens": 50, "messages": [
        {"role": "system", "content": "You are a careful assistant. ".repeat(200)},
        {"role": "user", "content": "First question?"},
        {"role": "assistant", "content": "First answer."},
        {"role": "user", "content": "Second question?"},
    ]});
    let (status, _, answer) = gw.chat(key, &body, &[("x-power-level", level)]).await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    (gw.upstream.last_request().unwrap().body, answer)
}

#[tokio::test]
async fn anthropic_calls_of_cache_preferring_levels_get_breakpoints_and_cached_prices() {
    let gw = Gateway::start().await;
    let key = gw.user("cacher", "starter", "5").await;
    // Balanced prefers cached prompts: the system prompt and the conversation before the
    // last turn get breakpoints. The first call writes the cache...
    let (sent, answer) = claude(
        &gw,
        &key,
        "balanced",
        Reply::text("ok")
            .with_usage(3_000, 10, 0)
            .with_cache_creation(2_000),
    )
    .await;
    let system = sent["system"].as_array().expect("system as blocks");
    assert_eq!(
        system.last().unwrap()["cache_control"],
        json!({"type": "ephemeral"})
    );
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(
        messages[1]["content"].as_array().unwrap().last().unwrap()["cache_control"],
        json!({"type": "ephemeral"})
    );
    assert!(
        messages[2].to_string().find("cache_control").is_none(),
        "{sent}"
    );
    // 1,000 uncached × $3 + 2,000 written × $3.75 + 10 out × $15, per million.
    assert_eq!(answer["_metadata"]["cost_usd"], "0.01065");
    // ... and the repeated prompt reads it, at the cached-input price.
    let (_, answer) = claude(
        &gw,
        &key,
        "balanced",
        Reply::text("ok").with_usage(3_000, 10, 2_000),
    )
    .await;
    // 1,000 × $3 + 2,000 × $0.30 + 10 × $15, per million.
    assert_eq!(answer["_metadata"]["cost_usd"], "0.00375");

    // Precision does not prefer cached prompts: the request goes as it came.
    let (sent, _) = claude(&gw, &key, "precision", Reply::text("ok")).await;
    assert!(!sent.to_string().contains("cache_control"), "{sent}");
    gw.assert_ledger_consistent("cacher").await;
}

#[tokio::test]
async fn breakpoints_are_off_with_the_setting() {
    let gw = Gateway::start_with(GatewayOptions {
        env: vec![("SWITCHBOARD_AUTO_CACHE_CONTROL", "0".into())],
        ..GatewayOptions::default()
    })
    .await;
    let key = gw.user("no-cacher", "starter", "5").await;
    let (sent, _) = claude(&gw, &key, "eco", Reply::text("ok")).await;
    assert!(!sent.to_string().contains("cache_control"), "{sent}");
}
