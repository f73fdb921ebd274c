//! `GET /metrics` on `switchboard serve` (api.md, "Metrics and timing"), read with the
//! official Prometheus client's text parser: after a known mix of requests (successes, a
//! fallback, streams, a 402 and a 429) each counter moved by exactly the number of matching
//! requests, tokens and cost match the usage rows to the last digit, and no label carries
//! a user id or a key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use support::{Serve, admin_key, python_with, user_key};
use switchboard_tests::fake_upstream::{FakeUpstream, Reply, Step};
use switchboard_tests::moto::workspace_root;
use switchboard_tests::test_db::TestDb;

const TOKEN: &str = "metrics-scraper-token-0123456789";
const ROUTE: &str = "/v1/chat/completions";

/// The scrape, parsed by `prometheus_client.parser`, and its raw text.
struct Scrape {
    types: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
    text: String,
}

impl Scrape {
    /// The sum of `name`'s samples whose labels include every pair of `with`.
    fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, value)| value)
            .sum()
    }

    /// A counter in exact dollars, summed over its samples (from the raw text, as written).
    fn dollars(&self, name: &str) -> Decimal {
        self.text
            .lines()
            .filter(|line| line.starts_with(&format!("{name}{{")))
            .map(|line| line.rsplit_once(' ').unwrap().1.parse::<Decimal>().unwrap())
            .sum()
    }
}

async fn scrape(python: &Path, base: &str, bearer: &str) -> Scrape {
    let response = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let mut child = tokio::process::Command::new(python)
        .arg(workspace_root().join("tests/tools/parse_prometheus.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).await.unwrap();
    }
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let types = parsed["types"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let samples = parsed["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            (
                s["name"].as_str().unwrap().to_string(),
                labels,
                s["value"].as_f64().unwrap(),
            )
        })
        .collect();
    Scrape {
        types,
        samples,
        text,
    }
}

async fn chat(base: &str, key: &str, stream: bool) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{base}{ROUTE}"))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-4o", "stream": stream,
                      "messages": [{"role": "user", "content": "count the requests"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn metrics_count_exactly_the_requests_made_and_carry_no_user_data() {
    let Some(python) = python_with("prometheus_client") else {
        return;
    };
    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    // A second offer of gpt-4o (OpenRouter, also served by the fake) to fall back to.
    let client = db.connect().await;
    client
        .batch_execute(&format!(
            "UPDATE llm_providers SET base_url = '{}' WHERE provider_slug = 'openrouter';
             INSERT INTO llm_models (provider_id, model_name, model_id, context_window, max_tokens,
                 supports_function_calling, supports_vision, supports_json_mode,
                 cost_per_1m_input_tokens, cost_per_1m_output_tokens, cost_per_1m_tokens_cached, power_level_priority)
             SELECT id, 'GPT-4o (OpenRouter)', 'gpt-4o', 128000, 16384, true, true, true, 2.50, 10.00, 1.25, 50
             FROM llm_providers WHERE provider_slug = 'openrouter'",
            upstream.openai_base_url()
        ))
        .await
        .unwrap();
    let key = user_key(&db, "metrics-user", 5, None).await;
    let poor = user_key(&db, "metrics-poor", 0, None).await;
    let limited = user_key(&db, "metrics-limited", 5, Some(1)).await;
    let admin = admin_key(&db, "metrics-admin").await;
    let serve = Serve::start_with(
        &db,
        &upstream,
        "metrics",
        &[
            ("SWITCHBOARD_METRICS_TOKEN", TOKEN),
            (
                "SWITCHBOARD_PROVIDER_KEY_OPENROUTER",
                "sk-or-test-system-key-0123456789",
            ),
        ],
    )
    .await;
    let base = serve.base.clone();

    // Who may read it: the token or an admin key; a user key is refused, no key too.
    let http = reqwest::Client::new();
    let anonymous = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let as_user = http
        .get(format!("{base}/metrics"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(as_user.status(), 403);
    let before = scrape(&python, &base, &admin).await;

    // The mix: 3 answers, 1 fallback after a 503, 2 streams, the limited key's first
    // request (7 answered), a 402 and the limited key's second request (429).
    for _ in 0..3 {
        assert_eq!(chat(&base, &key, false).await.0, 200);
    }
    upstream.push(Step::status(503));
    let (status, body) = chat(&base, &key, false).await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["_metadata"]["attempts"], 2, "{body}");
    let fallback_provider = body["_metadata"]["provider_used"]
        .as_str()
        .unwrap()
        .to_string();
    upstream.push(Reply::text("one two three").with_usage(40, 3, 0));
    upstream.push(Reply::text("four five").with_usage(30, 2, 0));
    for _ in 0..2 {
        let (status, text) = chat(&base, &key, true).await;
        assert_eq!(status, 200);
        assert!(text.contains("[DONE]"), "{text}");
    }
    assert_eq!(chat(&base, &limited, false).await.0, 200);
    assert_eq!(chat(&base, &poor, false).await.0, 402);
    assert_eq!(chat(&base, &limited, false).await.0, 429);

    let after = scrape(&python, &base, TOKEN).await;
    let delta = |name: &str, with: &[(&str, &str)]| after.sum(name, with) - before.sum(name, with);
    let route = ("route", ROUTE);

    assert_eq!(after.types["switchboard_requests"], "counter");
    assert_eq!(
        after.types["switchboard_request_duration_seconds"],
        "histogram"
    );
    assert_eq!(
        after.types["switchboard_gateway_overhead_seconds"],
        "histogram"
    );
    assert_eq!(
        delta(
            "switchboard_requests_total",
            &[route, ("status_class", "2xx")]
        ),
        7.0
    );
    assert_eq!(
        delta(
            "switchboard_requests_total",
            &[route, ("status_class", "4xx")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "switchboard_requests_total",
            &[route, ("status_class", "2xx"), ("fallback", "true")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "switchboard_requests_total",
            &[
                route,
                ("fallback", "true"),
                ("provider", &fallback_provider),
                ("model", "gpt-4o")
            ]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "switchboard_requests_total",
            &[route, ("power_level", "balanced"), ("byok", "false")]
        ),
        9.0,
        "every request of the mix was routed (the refused ones too)"
    );
    assert_eq!(
        delta("switchboard_request_duration_seconds_count", &[route]),
        9.0
    );
    assert_eq!(
        delta("switchboard_gateway_overhead_seconds_count", &[route]),
        9.0
    );
    assert_eq!(
        delta("switchboard_time_to_first_token_seconds_count", &[route]),
        2.0
    );
    assert_eq!(
        delta("switchboard_upstream_attempts_total", &[("outcome", "5xx")]),
        1.0
    );
    assert_eq!(
        delta("switchboard_upstream_attempts_total", &[("outcome", "2xx")]),
        7.0
    );
    assert_eq!(
        delta(
            "switchboard_ledger_admissions_total",
            &[("outcome", "admitted")]
        ),
        7.0
    );
    assert_eq!(
        delta(
            "switchboard_ledger_admissions_total",
            &[("outcome", "insufficient_credits")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "switchboard_ledger_admissions_total",
            &[("outcome", "key_rate_limited")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "switchboard_ledger_captures_total",
            &[("outcome", "captured")]
        ),
        7.0
    );
    assert_eq!(after.sum("switchboard_ledger_holds_active", &[]), 0.0);

    // Tokens and cost: exactly what the usage rows say.
    let row = client
        .query_one(
            "SELECT sum(prompt_tokens - cached_tokens)::bigint, sum(cached_tokens)::bigint,
                    sum(completion_tokens)::bigint, sum(cost_total_usd), sum(charged_usd)
             FROM llm_usage_logs WHERE status_code = 200",
            &[],
        )
        .await
        .unwrap();
    let (input, cached, output): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        delta("switchboard_tokens_total", &[("bucket", "input")]),
        input as f64
    );
    assert_eq!(
        delta("switchboard_tokens_total", &[("bucket", "cached_input")]),
        cached as f64
    );
    assert_eq!(
        delta("switchboard_tokens_total", &[("bucket", "output")]),
        output as f64
    );
    assert!(input > 0 && output > 0);
    let (cost, charged): (Decimal, Decimal) = (row.get(3), row.get(4));
    assert_eq!(
        after.dollars("switchboard_cost_usd_total") - before.dollars("switchboard_cost_usd_total"),
        cost.normalize()
    );
    assert_eq!(
        after.dollars("switchboard_charged_usd_total")
            - before.dollars("switchboard_charged_usd_total"),
        charged.normalize()
    );
    assert!(cost > Decimal::ZERO);

    // The process's own, and the pool's.
    assert!(after.sum("process_resident_memory_bytes", &[]) > 1e6);
    assert!(after.sum("process_open_fds", &[]) > 0.0);
    assert!(after.sum("switchboard_db_pool_max_connections", &[]) > 0.0);
    assert_eq!(
        after.sum("switchboard_provider_enabled", &[("provider", "openai")]),
        1.0
    );

    // No label value is a user id or any part of a key.
    for (name, labels, _) in &after.samples {
        for value in labels.values() {
            assert!(!value.contains("metrics-"), "{name} carries {value}");
            for secret in [&key, &poor, &limited, &admin] {
                assert!(!value.contains(&secret[..12]), "{name} carries a key");
            }
        }
    }
    assert!(!after.text.contains(TOKEN));
    serve.stop().await;
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    let admin = admin_key(&db, "metrics-admin").await;
    let serve = Serve::start_with(
        &db,
        &upstream,
        "metrics-off",
        &[("SWITCHBOARD_METRICS", "0")],
    )
    .await;
    let response = reqwest::Client::new()
        .get(format!("{}/metrics", serve.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SWITCHBOARD_METRICS=0"),
        "{body}"
    );
    serve.stop().await;
}
