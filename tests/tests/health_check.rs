//! The provider health check against fake upstreams and real Postgres: each
//! classification, two strikes disabling, recovery re-enabling, admin-disabled and system
//! providers left alone, the passive signal, overlapping runs, hold expiry and pruning, the
//! Lambda handler with the sample scheduled event, `POST /admin/health-check`, and the
//! `serve` timer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod admin_common;

use std::str::FromStr;
use std::time::Duration;

use admin_common::*;
use http::StatusCode;
use rust_decimal::Decimal;
use serde_json::Value;
use switchboard_core::credentials::SystemKeys;
use switchboard_core::health::{self, HealthAction, HealthRunSummary, Trigger};
use switchboard_core::ledger::{self, CreditKind};
use switchboard_tests::fake_upstream::{FakeUpstream, Reply, Step};

const OPENAI_KEY: &str = "sk-health-openai-0123456789abcdef";

/// A harness whose catalog holds only the providers each test adds (the seed's point at
/// real hosts), with system keys for `keys` (slug, key).
async fn harness(env: &[(&str, &str)], keys: &[(&str, &str)]) -> Harness {
    // The first value of a name wins: the test's own settings, then the defaults here.
    let mut vars = env.to_vec();
    vars.push(("SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS", "1"));
    let system_keys = SystemKeys::from_env_vars(keys.iter().map(|(slug, key)| {
        (
            switchboard_core::credentials::provider_key_env_name(slug),
            key.to_string(),
        )
    }));
    let h = Harness::start_with(config_with(&vars), system_keys).await;
    h.db.connect()
        .await
        .batch_execute("DELETE FROM llm_providers")
        .await
        .unwrap();
    h
}

/// Adds a provider; returns its id.
async fn add_provider(
    h: &Harness,
    slug: &str,
    api_format: &str,
    auth_type: &str,
    base_url: &str,
    health_url: Option<&str>,
    is_system_provider: bool,
) -> i32 {
    h.db.connect()
        .await
        .query_one(
            "INSERT INTO llm_providers (provider_name, provider_slug, api_format, auth_type, base_url, health_url, is_system_provider)
             VALUES ($1, $1, $2, $3, $4, $5, $6) RETURNING id",
            &[&slug, &api_format, &auth_type, &base_url, &health_url, &is_system_provider],
        )
        .await
        .unwrap()
        .get(0)
}

/// A non-system OpenAI-format provider with a bearer key.
async fn openai_provider(h: &Harness, slug: &str, upstream: &FakeUpstream) -> i32 {
    add_provider(
        h,
        slug,
        "openai",
        "bearer",
        &upstream.openai_base_url(),
        None,
        false,
    )
    .await
}

async fn run(h: &Harness) -> HealthRunSummary {
    health::run(&h.state.health(), Trigger::Manual)
        .await
        .unwrap()
}

#[derive(Debug)]
struct ProviderRow {
    health_status: String,
    is_active: bool,
    disabled_reason: Option<String>,
    consecutive_down: i32,
    response_time_ms: Option<i32>,
    checked: bool,
}

async fn provider_row(h: &Harness, id: i32) -> ProviderRow {
    let row =
        h.db.connect()
            .await
            .query_one(
                "SELECT health_status, is_active, disabled_reason, health_consecutive_down,
                    health_response_time_ms, health_last_checked IS NOT NULL
             FROM llm_providers WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
    ProviderRow {
        health_status: row.get(0),
        is_active: row.get(1),
        disabled_reason: row.get(2),
        consecutive_down: row.get(3),
        response_time_ms: row.get(4),
        checked: row.get(5),
    }
}

#[derive(Debug)]
struct HistoryRow {
    status: String,
    http_status: Option<i32>,
    error: Option<String>,
    response_time_ms: Option<i32>,
}

/// The provider's history rows, oldest first.
async fn history(h: &Harness, id: i32) -> Vec<HistoryRow> {
    h.db.connect()
        .await
        .query(
            "SELECT status, http_status, error, response_time_ms FROM provider_health_checks
             WHERE provider_id = $1 ORDER BY id",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| HistoryRow {
            status: row.get(0),
            http_status: row.get(1),
            error: row.get(2),
            response_time_ms: row.get(3),
        })
        .collect()
}

fn check(summary: &HealthRunSummary, id: i32) -> &health::ProviderCheck {
    summary
        .providers
        .iter()
        .find(|c| c.provider_id == id)
        .unwrap_or_else(|| panic!("provider {id} not in {summary:?}"))
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------- classification

#[tokio::test]
async fn every_classification_is_recorded_with_status_latency_and_history() {
    let keys: Vec<(String, String)> = [
        "fast",
        "slow",
        "throttled",
        "refused",
        "failing",
        "hanging",
        "unreachable",
        "claude",
        "gemini",
        "by-health-url",
        "wrong-path",
    ]
    .iter()
    .map(|slug| (slug.to_string(), format!("sk-health-{slug}-0123456789")))
    .collect();
    let key_refs: Vec<(&str, &str)> = keys.iter().map(|(s, k)| (s.as_str(), k.as_str())).collect();
    let h = harness(
        &[
            ("SWITCHBOARD_HEALTH_PROBE_TIMEOUT_SECS", "2"),
            ("SWITCHBOARD_HEALTH_DEGRADED_LATENCY_MS", "800"),
        ],
        &key_refs,
    )
    .await;
    let upstream = |_: &str| FakeUpstream::start();

    let fast_up = upstream("fast").await;
    let fast = openai_provider(&h, "fast", &fast_up).await;

    let slow_up = upstream("slow").await;
    slow_up.push_models(Step::delay(
        Duration::from_millis(1300),
        Reply::default().into(),
    ));
    let slow = openai_provider(&h, "slow", &slow_up).await;

    let throttled_up = upstream("throttled").await;
    throttled_up.push_models(Step::rate_limited("5"));
    let throttled = openai_provider(&h, "throttled", &throttled_up).await;

    let refused_up = upstream("refused").await;
    refused_up.push_models(Step::status(401));
    let refused = openai_provider(&h, "refused", &refused_up).await;

    let failing_up = upstream("failing").await;
    failing_up.push_models(Step::status(503));
    let failing = openai_provider(&h, "failing", &failing_up).await;

    let hanging_up = upstream("hanging").await;
    hanging_up.push_models(Step::delay(Duration::from_secs(5), Reply::default().into()));
    let hanging = openai_provider(&h, "hanging", &hanging_up).await;

    let unreachable = add_provider(
        &h,
        "unreachable",
        "openai",
        "bearer",
        &format!("http://127.0.0.1:{}/v1", closed_port()),
        None,
        false,
    )
    .await;

    let claude_up = upstream("claude").await;
    let claude = add_provider(
        &h,
        "claude",
        "anthropic",
        "x-api-key",
        &claude_up.anthropic_base_url(),
        None,
        false,
    )
    .await;

    let gemini_up = upstream("gemini").await;
    let gemini = add_provider(
        &h,
        "gemini",
        "gemini",
        "x-goog-api-key",
        &gemini_up.gemini_base_url(),
        None,
        false,
    )
    .await;

    let open_up = upstream("open").await;
    let open = add_provider(
        &h,
        "open",
        "openai",
        "none",
        &open_up.openai_base_url(),
        None,
        false,
    )
    .await;

    // health_url wins over base_url (which points nowhere).
    let by_url_up = upstream("by-health-url").await;
    let by_health_url = add_provider(
        &h,
        "by-health-url",
        "openai",
        "bearer",
        &format!("http://127.0.0.1:{}/v1", closed_port()),
        Some(&format!("{}/models", by_url_up.openai_base_url())),
        false,
    )
    .await;

    let wrong_path_up = upstream("wrong-path").await;
    let wrong_path = add_provider(
        &h,
        "wrong-path",
        "openai",
        "bearer",
        &wrong_path_up.openai_base_url(),
        Some(&format!("{}/no-such-endpoint", wrong_path_up.base_url())),
        false,
    )
    .await;

    let keyless_up = upstream("keyless").await;
    let keyless = openai_provider(&h, "keyless", &keyless_up).await;

    let summary = run(&h).await;
    assert!(!summary.skipped);
    assert_eq!(summary.checked, 13, "{summary:#?}");

    let expect = [
        (fast, "healthy", Some(200)),
        (slow, "degraded", Some(200)),
        (throttled, "degraded", Some(429)),
        (refused, "degraded", Some(401)),
        (failing, "down", Some(503)),
        (hanging, "down", None),
        (unreachable, "down", None),
        (claude, "healthy", Some(200)),
        (gemini, "healthy", Some(200)),
        (open, "healthy", Some(200)),
        (by_health_url, "healthy", Some(200)),
        (wrong_path, "unknown", Some(404)),
        (keyless, "unknown", None),
    ];
    for (id, status, http_status) in expect {
        let row = provider_row(&h, id).await;
        let rows = history(&h, id).await;
        assert_eq!(row.health_status, status, "provider {id}: {rows:?}");
        assert!(row.checked);
        assert_eq!(rows.len(), 1, "provider {id}");
        assert_eq!(rows[0].status, status, "provider {id}");
        assert_eq!(rows[0].http_status, http_status, "provider {id}");
        assert_eq!(check(&summary, id).status.as_str(), status);
        // Answers have a latency; no answer has none.
        assert_eq!(
            rows[0].response_time_ms.is_some(),
            http_status.is_some(),
            "provider {id}"
        );
        assert_eq!(row.response_time_ms, rows[0].response_time_ms);
        // A healthy result needs no explanation; every other one has one.
        assert_eq!(rows[0].error.is_none(), status == "healthy", "{rows:?}");
        // No key ever reaches the history.
        assert!(
            !rows[0].error.as_deref().unwrap_or_default().contains("sk-"),
            "{rows:?}"
        );
        // One result is not a strike count that disables anything.
        assert!(row.is_active);
    }
    assert_eq!(
        (
            summary.healthy,
            summary.degraded,
            summary.down,
            summary.unknown
        ),
        (5, 3, 3, 2),
        "{summary:#?}"
    );
    // `down` counts a strike; nothing else does.
    assert_eq!(provider_row(&h, failing).await.consecutive_down, 1);
    assert_eq!(provider_row(&h, fast).await.consecutive_down, 0);
    assert_eq!(provider_row(&h, keyless).await.consecutive_down, 0);

    let note = |id| history(&h, id);
    assert!(
        note(slow).await[0]
            .error
            .as_deref()
            .unwrap()
            .contains("slow")
    );
    assert!(
        note(refused).await[0]
            .error
            .as_deref()
            .unwrap()
            .contains("key")
    );
    assert!(
        note(hanging).await[0]
            .error
            .as_deref()
            .unwrap()
            .contains("no answer within 2 s")
    );
    assert!(
        note(keyless).await[0]
            .error
            .as_deref()
            .unwrap()
            .contains("SWITCHBOARD_PROVIDER_KEY_KEYLESS")
    );

    // Auth per auth_type, always in a header, never in the URL.
    let request = fast_up.last_request().unwrap();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/v1/models")
    );
    assert_eq!(
        request.header("authorization"),
        Some("Bearer sk-health-fast-0123456789")
    );
    assert!(request.query.is_none());
    let request = claude_up.last_request().unwrap();
    assert_eq!(request.path, "/v1/models");
    assert_eq!(
        request.header("x-api-key"),
        Some("sk-health-claude-0123456789")
    );
    assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(request.header("authorization"), None);
    let request = gemini_up.last_request().unwrap();
    assert_eq!(request.path, "/v1beta/models");
    assert_eq!(
        request.header("x-goog-api-key"),
        Some("sk-health-gemini-0123456789")
    );
    assert!(request.query.is_none());
    let request = open_up.last_request().unwrap();
    assert_eq!(request.header("authorization"), None);
    assert_eq!(by_url_up.last_request().unwrap().path, "/v1/models");
    // No key, no call.
    assert_eq!(keyless_up.request_count(), 0);
}

#[tokio::test]
async fn a_url_refused_by_the_ssrf_rules_is_not_called() {
    let h = harness(
        &[("SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS", "0")],
        &[("local", OPENAI_KEY)],
    )
    .await;
    let upstream = FakeUpstream::start().await;
    let id = openai_provider(&h, "local", &upstream).await;
    let summary = run(&h).await;
    let result = check(&summary, id);
    assert_eq!(result.status.as_str(), "unknown");
    assert!(
        result.error.as_deref().unwrap().contains("not probed"),
        "{result:?}"
    );
    assert_eq!(upstream.request_count(), 0);
    assert_eq!(provider_row(&h, id).await.consecutive_down, 0);
}

// ---------------------------------------------------------------- hysteresis

#[tokio::test]
async fn two_strikes_disable_and_recovery_re_enables() {
    let h = harness(&[], &[("flaky", OPENAI_KEY)]).await;
    let upstream = FakeUpstream::start().await;
    let id = openai_provider(&h, "flaky", &upstream).await;

    // down, degraded, down: the degraded result in between starts the count over.
    upstream.push_models(Step::status(500));
    upstream.push_models(Step::rate_limited("1"));
    upstream.push_models(Step::status(502));
    for _ in 0..3 {
        let summary = run(&h).await;
        assert_eq!(summary.disabled, 0);
    }
    let row = provider_row(&h, id).await;
    assert!(row.is_active);
    assert_eq!(row.consecutive_down, 1);

    // Load the catalog now, so the next assertion proves the run invalidated it.
    let catalog = h.state.catalog.get(&h.state.pool).await.unwrap();
    assert!(catalog.provider(id).unwrap().is_active);

    // The second consecutive down disables it.
    upstream.push_models(Step::status(500));
    let summary = run(&h).await;
    assert_eq!(summary.disabled, 1, "{summary:#?}");
    assert_eq!(check(&summary, id).action, Some(HealthAction::Disabled));
    let row = provider_row(&h, id).await;
    assert!(!row.is_active);
    assert_eq!(row.disabled_reason.as_deref(), Some("health"));
    assert_eq!(row.consecutive_down, 2);
    assert_eq!(row.health_status, "down");
    let catalog = h.state.catalog.get(&h.state.pool).await.unwrap();
    assert!(!catalog.provider(id).unwrap().is_active);
    let audit = h.audit_rows("provider.health_disable").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["actor"], "system:health-check");
    assert_eq!(audit[0]["actor_key_id"], Value::Null);
    assert_eq!(audit[0]["entity_id"], id.to_string());
    assert_eq!(audit[0]["request_id"], summary.run_id.to_string());
    assert_eq!(audit[0]["before"]["is_active"], true);
    assert_eq!(audit[0]["after"]["is_active"], false);
    assert_eq!(audit[0]["after"]["disabled_reason"], "health");

    // Disabled by the monitor, it is still probed. Down again: nothing more happens.
    upstream.push_models(Step::status(500));
    let summary = run(&h).await;
    assert_eq!((summary.checked, summary.disabled), (1, 0));
    assert_eq!(provider_row(&h, id).await.consecutive_down, 3);
    // Degraded is not enough to come back.
    upstream.push_models(Step::rate_limited("1"));
    let summary = run(&h).await;
    assert_eq!(summary.re_enabled, 0);
    let row = provider_row(&h, id).await;
    assert!(!row.is_active);
    assert_eq!(row.health_status, "degraded");

    // Healthy: enabled again, with a fresh strike count and breaker.
    h.db.connect()
        .await
        .execute(
            "UPDATE llm_providers SET breaker_consecutive_failures = 4, breaker_open_until = now() + interval '1 minute' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let summary = run(&h).await;
    assert_eq!(summary.re_enabled, 1, "{summary:#?}");
    assert_eq!(check(&summary, id).action, Some(HealthAction::ReEnabled));
    let row = provider_row(&h, id).await;
    assert!(row.is_active);
    assert_eq!(row.disabled_reason, None);
    assert_eq!(row.consecutive_down, 0);
    assert_eq!(row.health_status, "healthy");
    let breaker: (i32, bool) = {
        let r = h
            .db
            .connect()
            .await
            .query_one(
                "SELECT breaker_consecutive_failures, breaker_open_until IS NULL FROM llm_providers WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(breaker, (0, true));
    let audit = h.audit_rows("provider.health_enable").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["before"]["disabled_reason"], "health");
    assert_eq!(audit[0]["after"]["is_active"], true);
    assert_eq!(history(&h, id).await.len(), 7);
}

#[tokio::test]
async fn a_provider_an_admin_disabled_stays_disabled() {
    let h = harness(
        &[],
        &[
            ("by-admin", OPENAI_KEY),
            ("no-reason", OPENAI_KEY),
            ("racing", OPENAI_KEY),
        ],
    )
    .await;
    let upstream = FakeUpstream::start().await;
    let by_admin = openai_provider(&h, "by-admin", &upstream).await;
    let no_reason = openai_provider(&h, "no-reason", &upstream).await;
    let client = h.db.connect().await;
    client
        .execute(
            "UPDATE llm_providers SET is_active = false, disabled_reason = 'admin' WHERE id = $1",
            &[&by_admin],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE llm_providers SET is_active = false, disabled_reason = NULL WHERE id = $1",
            &[&no_reason],
        )
        .await
        .unwrap();
    // The upstream is healthy, yet neither is probed nor enabled.
    let summary = run(&h).await;
    assert_eq!(summary.checked, 0, "{summary:#?}");
    assert_eq!(upstream.request_count(), 0);
    for id in [by_admin, no_reason] {
        let row = provider_row(&h, id).await;
        assert!(!row.is_active);
        assert!(!row.checked);
    }

    // An admin disables a provider while its (healthy) probe is in flight: the run decides
    // from the row it locks, not the list it read, and leaves the admin's decision alone.
    let slow = FakeUpstream::start().await;
    slow.push_models(Step::delay(
        Duration::from_millis(800),
        Reply::default().into(),
    ));
    let racing = openai_provider(&h, "racing", &slow).await;
    client
        .execute(
            "UPDATE llm_providers SET is_active = false, disabled_reason = 'health', health_consecutive_down = 2 WHERE id = $1",
            &[&racing],
        )
        .await
        .unwrap();
    let state = h.state.clone();
    let running = tokio::spawn(async move { health::run(&state.health(), Trigger::Manual).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .execute(
            "UPDATE llm_providers SET disabled_reason = 'admin' WHERE id = $1",
            &[&racing],
        )
        .await
        .unwrap();
    let summary = running.await.unwrap().unwrap();
    assert_eq!(check(&summary, racing).status.as_str(), "healthy");
    assert_eq!(summary.re_enabled, 0);
    let row = provider_row(&h, racing).await;
    assert!(!row.is_active);
    assert_eq!(row.disabled_reason.as_deref(), Some("admin"));
    assert!(h.audit_rows("provider.health_enable").await.is_empty());
}

#[tokio::test]
async fn a_system_provider_is_never_disabled() {
    let h = harness(&[], &[("platform", OPENAI_KEY)]).await;
    let upstream = FakeUpstream::start().await;
    let id = add_provider(
        &h,
        "platform",
        "openai",
        "bearer",
        &upstream.openai_base_url(),
        None,
        true,
    )
    .await;
    for _ in 0..3 {
        upstream.push_models(Step::status(503));
        let summary = run(&h).await;
        assert_eq!(summary.disabled, 0);
    }
    let row = provider_row(&h, id).await;
    assert!(row.is_active);
    assert_eq!(row.disabled_reason, None);
    assert_eq!(row.health_status, "down");
    assert_eq!(row.consecutive_down, 3);
    assert!(h.audit_rows("provider.health_disable").await.is_empty());
}

// ---------------------------------------------------------------- passive signal

/// Usage rows for `provider_id`: one per status (`None` = no answer), `age_secs` old.
async fn usage(h: &Harness, provider_id: i32, statuses: &[Option<i32>], age_secs: f64) {
    let client = h.db.connect().await;
    for (i, status) in statuses.iter().enumerate() {
        client
            .execute(
                "INSERT INTO llm_usage_logs (user_id, request_id, provider_id, status_code, created_at)
                 VALUES ('u', $1, $2, $3, now() - make_interval(secs => $4))",
                &[&format!("req-{provider_id}-{i}"), &provider_id, status, &age_secs],
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_passive_signal_escalates_a_probe_one_step() {
    let slugs = [
        "busy-ok",
        "busy-throttled",
        "old-errors",
        "few-calls",
        "mostly-fine",
    ];
    let keys: Vec<(&str, &str)> = slugs.iter().map(|s| (*s, OPENAI_KEY)).collect();
    let h = harness(&[], &keys).await;
    let mut upstreams = Vec::new();
    let mut ids = Vec::new();
    for slug in slugs {
        let upstream = FakeUpstream::start().await;
        ids.push(openai_provider(&h, slug, &upstream).await);
        upstreams.push(upstream);
    }
    let [busy_ok, busy_throttled, old_errors, few_calls, mostly_fine] = ids[..] else {
        unreachable!()
    };
    // 6 of 8 failed (no answer, 5xx, 429 count; 200 and 400 do not).
    let failing = [
        None,
        Some(500),
        Some(503),
        Some(429),
        None,
        Some(502),
        Some(200),
        Some(400),
    ];
    usage(&h, busy_ok, &failing, 30.0).await;
    usage(&h, busy_throttled, &failing, 30.0).await;
    // Outside the 5-minute window.
    usage(&h, old_errors, &failing, 600.0).await;
    // Below the minimum of 5 attempts.
    usage(&h, few_calls, &[None, None, None, None], 30.0).await;
    // 5 of 10: not more than half.
    usage(
        &h,
        mostly_fine,
        &[
            None,
            None,
            None,
            None,
            None,
            Some(200),
            Some(200),
            Some(200),
            Some(200),
            Some(200),
        ],
        30.0,
    )
    .await;
    upstreams[1].push_models(Step::rate_limited("1"));
    upstreams[1].push_models(Step::rate_limited("1"));

    let summary = run(&h).await;
    let ok = check(&summary, busy_ok);
    assert_eq!(
        (ok.probe_status.as_str(), ok.status.as_str()),
        ("healthy", "degraded")
    );
    assert!(
        ok.error.as_deref().unwrap().contains("passive: 6 of 8"),
        "{ok:?}"
    );
    assert_eq!(ok.consecutive_down, 0);
    let throttled = check(&summary, busy_throttled);
    assert_eq!(
        (throttled.probe_status.as_str(), throttled.status.as_str()),
        ("degraded", "down")
    );
    assert_eq!(throttled.consecutive_down, 1);
    assert!(throttled.error.as_deref().unwrap().contains("429"));
    for id in [old_errors, few_calls, mostly_fine] {
        assert_eq!(check(&summary, id).status.as_str(), "healthy", "{id}");
    }
    assert_eq!(history(&h, busy_ok).await[0].status, "degraded");

    // The passive signal turns the second throttled probe into the second strike; a
    // healthy probe alone never strikes, whatever the traffic says.
    let summary = run(&h).await;
    assert_eq!(
        check(&summary, busy_throttled).action,
        Some(HealthAction::Disabled)
    );
    assert!(!provider_row(&h, busy_throttled).await.is_active);
    assert!(provider_row(&h, busy_ok).await.is_active);
    assert_eq!(provider_row(&h, busy_ok).await.consecutive_down, 0);
}

#[tokio::test]
async fn the_passive_signal_can_be_turned_off() {
    let h = harness(
        &[("SWITCHBOARD_HEALTH_PASSIVE_WINDOW_SECS", "0")],
        &[("busy", OPENAI_KEY)],
    )
    .await;
    let upstream = FakeUpstream::start().await;
    let id = openai_provider(&h, "busy", &upstream).await;
    usage(&h, id, &[None; 10], 10.0).await;
    let summary = run(&h).await;
    assert_eq!(check(&summary, id).status.as_str(), "healthy");
}

// ---------------------------------------------------------------- overlap

#[tokio::test]
async fn overlapping_runs_count_one_strike() {
    let h = harness(&[], &[("slowfail", OPENAI_KEY)]).await;
    let upstream = FakeUpstream::start().await;
    let id = openai_provider(&h, "slowfail", &upstream).await;
    // Two failing answers queued: were both runs to probe, the strike would count twice
    // (and disable the provider).
    for _ in 0..2 {
        upstream.push_models(Step::delay(Duration::from_millis(800), Step::status(500)));
    }
    let services = h.state.health();
    let (first, second) = tokio::join!(health::run(&services, Trigger::Timer), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        health::run(&services, Trigger::Admin).await
    });
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_ne!(first.skipped, second.skipped, "{first:#?} {second:#?}");
    let skipped = if first.skipped { &first } else { &second };
    assert_eq!(skipped.checked, 0);
    assert!(skipped.providers.is_empty());
    let row = provider_row(&h, id).await;
    assert_eq!(row.consecutive_down, 1);
    assert!(row.is_active);
    assert_eq!(history(&h, id).await.len(), 1);
    assert_eq!(upstream.request_count(), 1);

    // The lock is free again right after a run.
    let next = run(&h).await;
    assert!(!next.skipped);
    assert_eq!(provider_row(&h, id).await.consecutive_down, 2);
}

/// The run lock is a transaction-level advisory lock (`pg_try_advisory_xact_lock`): while a
/// run probes, its holder is a backend inside a transaction (RDS Proxy pins a session that
/// takes a session-level lock, not one that takes a lock scoped to a transaction), and no
/// advisory lock is left once the run is over.
#[tokio::test]
async fn the_run_lock_is_held_by_a_transaction_not_a_session() {
    let h = harness(&[], &[("slowok", OPENAI_KEY)]).await;
    let upstream = FakeUpstream::start().await;
    openai_provider(&h, "slowok", &upstream).await;
    upstream.push_models(Step::delay(Duration::from_millis(800), Step::status(500)));
    let holder = "SELECT a.xact_start IS NOT NULL
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.granted
                   AND (l.classid::bigint << 32) | l.objid::bigint = $1";
    let key = health::store::RUN_LOCK_KEY;
    let services = h.state.health();
    let observer = h.db.connect().await;
    let (summary, in_transaction) = tokio::join!(health::run(&services, Trigger::Timer), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rows = observer.query(holder, &[&key]).await.unwrap();
        rows.iter().map(|r| r.get::<_, bool>(0)).collect::<Vec<_>>()
    });
    assert!(!summary.unwrap().skipped);
    assert_eq!(
        in_transaction,
        vec![true],
        "one holder, inside a transaction"
    );
    assert!(observer.query(holder, &[&key]).await.unwrap().is_empty());
}

// ---------------------------------------------------------------- housekeeping

#[tokio::test]
async fn expired_holds_are_released_and_old_rows_pruned() {
    let h = harness(&[], &[]).await;
    let upstream = FakeUpstream::start().await;
    let id = add_provider(
        &h,
        "open",
        "openai",
        "none",
        &upstream.openai_base_url(),
        None,
        false,
    )
    .await;
    let client = h.db.connect().await;
    client
        .execute(
            "INSERT INTO accounts (user_id, tier) VALUES ('sleepy', 'free')",
            &[],
        )
        .await
        .unwrap();
    let pooled = h.state.pool.get().await.unwrap();
    ledger::credit(
        &**pooled,
        "sleepy",
        Decimal::from(10),
        CreditKind::TopUp,
        "health-topup",
        None,
        None,
    )
    .await
    .unwrap();
    for request_id in ["frozen-lambda", "in-flight"] {
        ledger::authorize(
            &**pooled,
            "sleepy",
            request_id,
            Decimal::from_str("1.5").unwrap(),
            Duration::from_secs(900),
        )
        .await
        .unwrap();
    }
    client
        .execute(
            "UPDATE credit_holds SET expires_at = now() - interval '1 second' WHERE request_id = 'frozen-lambda'",
            &[],
        )
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO rate_limit_counters (bucket, window_start, requests) VALUES
                 ('key:old', now() - interval '20 minutes', 3),
                 ('key:new', now() - interval '1 minute', 2)",
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO provider_health_checks (provider_id, status, checked_at) VALUES
                 ($1, 'healthy', now() - interval '40 days'),
                 ($1, 'down', now() - interval '29 days')",
            &[&id],
        )
        .await
        .unwrap();

    let summary = run(&h).await;
    assert_eq!(summary.holds_released, 1, "{summary:#?}");
    assert_eq!(summary.counters_pruned, 1);
    assert_eq!(summary.history_pruned, 1);
    let states: Vec<(String, String)> = client
        .query(
            "SELECT request_id, state FROM credit_holds ORDER BY request_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        states,
        [
            ("frozen-lambda".to_string(), "expired".to_string()),
            ("in-flight".to_string(), "active".to_string())
        ]
    );
    let buckets: Vec<String> = client
        .query("SELECT bucket FROM rate_limit_counters", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(buckets, ["key:new"]);
    // The 29-day-old row and this run's row remain.
    assert_eq!(history(&h, id).await.len(), 2);
    // A second run finds nothing more to release.
    assert_eq!(run(&h).await.holds_released, 0);
}

// ---------------------------------------------------------------- triggers

#[tokio::test]
async fn the_lambda_handler_runs_on_the_scheduled_event() {
    let h = harness(&[], &[("scheduled", OPENAI_KEY)]).await;
    let upstream = FakeUpstream::start().await;
    let id = openai_provider(&h, "scheduled", &upstream).await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events/health-check-scheduled.json");
    let event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(event["detail-type"], "Scheduled Event");

    let summary = switchboard_health_check::handle_scheduled_event(&h.state, event)
        .await
        .unwrap();
    assert_eq!(summary.trigger, Trigger::Schedule);
    assert!(!summary.skipped);
    assert_eq!((summary.checked, summary.healthy), (1, 1));
    assert_eq!(provider_row(&h, id).await.health_status, "healthy");
    // What the Lambda returns: the summary as JSON.
    let json = serde_json::to_value(&summary).unwrap();
    for field in [
        "run_id",
        "checked",
        "healthy",
        "degraded",
        "down",
        "unknown",
        "disabled",
        "re_enabled",
        "holds_released",
        "counters_pruned",
        "history_pruned",
        "providers",
    ] {
        assert!(json.get(field).is_some(), "{field} missing from {json}");
    }
    assert_eq!(json["trigger"], "schedule");
    assert_eq!(json["providers"][0]["provider_slug"], "scheduled");
}

#[tokio::test]
async fn post_admin_health_check_runs_it_and_answers_the_summary() {
    let h = harness(&[], &[("manual", OPENAI_KEY)]).await;
    let upstream = FakeUpstream::start().await;
    let id = openai_provider(&h, "manual", &upstream).await;
    upstream.push_models(Step::status(500));
    let (status, body) = h.admin("POST", "/admin/health-check", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["trigger"], "admin");
    assert_eq!(body["skipped"], false);
    assert_eq!(body["checked"], 1);
    assert_eq!(body["down"], 1);
    assert_eq!(body["providers"][0]["provider_id"], id);
    assert_eq!(body["providers"][0]["status"], "down");
    assert_eq!(body["providers"][0]["http_status"], 500);
    assert_eq!(provider_row(&h, id).await.consecutive_down, 1);

    // A user key may not run it.
    let user = h.account_with_key("someone", "free", "user").await;
    let (status, body) = h
        .call("POST", "/admin/health-check", Some(&user), None)
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "permission_error");
    assert_eq!(upstream.request_count(), 1);

    // The OpenAPI document describes the 200 and its schema.
    let doc = serde_json::to_value(switchboard_admin::openapi()).unwrap();
    let ok = &doc["paths"]["/admin/health-check"]["post"]["responses"]["200"];
    assert!(ok.is_object(), "{ok}");
    assert!(doc["components"]["schemas"]["HealthRunSummary"].is_object());
}

#[tokio::test]
async fn the_serve_timer_runs_the_check_until_stopped() {
    let h = harness(&[], &[("timed", OPENAI_KEY)]).await;
    let upstream = FakeUpstream::start().await;
    let id = openai_provider(&h, "timed", &upstream).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let timer = tokio::spawn(health::run_every(
        h.state.health(),
        Duration::from_millis(200),
        async move {
            let _ = stopped.await;
        },
    ));
    let started = std::time::Instant::now();
    while history(&h, id).await.len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the timer did not run twice"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), timer)
        .await
        .expect("the timer stops when told")
        .unwrap();
    let after_stop = history(&h, id).await.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(history(&h, id).await.len(), after_stop);
    // The lock was left free.
    assert!(!run(&h).await.skipped);
}

#[tokio::test]
async fn an_admin_disabling_a_provider_the_monitor_disabled_keeps_it_disabled() {
    let h = harness(&[], &[("flaky", OPENAI_KEY)]).await;
    let upstream = FakeUpstream::start().await;
    let id = openai_provider(&h, "flaky", &upstream).await;
    h.db.connect()
        .await
        .execute(
            "UPDATE llm_providers SET is_active = false, disabled_reason = 'health', health_consecutive_down = 2 WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    // The admin says "off" explicitly: the reason becomes theirs.
    let (status, body) = h
        .admin(
            "PATCH",
            &format!("/admin/providers/{id}"),
            Some(serde_json::json!({"is_active": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["disabled_reason"], "admin");
    // The upstream is healthy again, but the monitor leaves the admin's decision alone.
    run(&h).await;
    let row = provider_row(&h, id).await;
    assert!(!row.is_active, "{row:?}");
    assert_eq!(row.disabled_reason.as_deref(), Some("admin"));
}
