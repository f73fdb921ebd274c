//! End to end through the admin API only: from an empty catalog, create a provider
//! pointing at the fake upstream, a model, a routing rule, a user, credits and a key —
//! then a chat completion succeeds and shows up in usage and in the ledger.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod admin_common;

use admin_common::*;
use http::StatusCode;
use serde_json::json;
use switchboard_core::credentials::SystemKeys;
use switchboard_tests::fake_upstream::{DEFAULT_TEXT, FakeUpstream};

const UPSTREAM_KEY: &str = "sk-upstream-e2e-0123456789";
const USER: &str = "e2e-user";

struct Built {
    key: String,
    provider_id: i64,
}

fn harness_keys() -> SystemKeys {
    SystemKeys::from_env_vars([(
        "SWITCHBOARD_PROVIDER_KEY_FAKE".to_string(),
        UPSTREAM_KEY.to_string(),
    )])
}

/// Empties the seeded catalog and builds a working one, all through `/admin`.
async fn build_through_the_admin_api(h: &Harness, upstream: &FakeUpstream) -> Built {
    // An empty catalog: delete every seeded provider (and with it models and rules).
    let (status, providers) = h.admin("GET", "/admin/providers?limit=500", None).await;
    assert_eq!(status, StatusCode::OK, "{providers}");
    for provider in providers["data"].as_array().unwrap() {
        let (status, body) = h
            .admin(
                "DELETE",
                &format!("/admin/providers/{}?cascade=true", provider["id"]),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    for list in ["/admin/providers", "/admin/models", "/admin/routing-rules"] {
        let (_, body) = h.admin("GET", list, None).await;
        assert_eq!(body["total"], 0, "{list}: {body}");
    }

    let (status, provider) = h
        .admin(
            "POST",
            "/admin/providers",
            Some(json!({
                "provider_name": "Fake upstream",
                "provider_slug": "fake",
                "api_format": "openai",
                "base_url": upstream.openai_base_url(),
                "auth_type": "bearer",
                "supports_function_calling": true,
                "is_system_provider": true,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{provider}");
    let provider_id = provider["id"].as_i64().unwrap();
    let (_, probe) = h
        .admin(
            "POST",
            &format!("/admin/providers/{provider_id}/test"),
            None,
        )
        .await;
    assert_eq!(probe["ok"], true, "{probe}");

    let (status, model) = h
        .admin(
            "POST",
            "/admin/models",
            Some(json!({
                "provider_id": provider_id,
                "model_id": "gpt-4o-mini",
                "model_name": "GPT-4o mini",
                "context_window": 128000,
                "max_tokens": 4096,
                "supports_function_calling": true,
                "cost_per_1m_input_tokens": "0.15",
                "cost_per_1m_output_tokens": 0.60,
                "power_level": "balanced",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{model}");
    let (status, rule) = h
        .admin(
            "POST",
            "/admin/routing-rules",
            Some(json!({"model_id": model["id"], "power_level": "balanced", "priority": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");

    let (status, user) = h
        .admin(
            "POST",
            "/admin/users",
            Some(json!({"id": USER, "tier": "starter"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let (status, credit) = h
        .admin(
            "POST",
            &format!("/admin/users/{USER}/credits"),
            Some(json!({"amount_usd": "5.00", "reason": "e2e", "idempotency_key": "e2e-topup-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{credit}");
    assert_eq!(credit["credits_balance"], "5.00");
    let (status, issued) = h
        .admin(
            "POST",
            &format!("/admin/users/{USER}/api-keys"),
            Some(json!({"name": "e2e"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    Built {
        key: issued["key"].as_str().unwrap().to_string(),
        provider_id,
    }
}

#[tokio::test]
async fn the_admin_api_alone_builds_a_catalog_a_user_and_a_key_from_nothing() {
    let upstream = FakeUpstream::start().await;
    let h = Harness::start_with(config(true), harness_keys()).await;
    let built = build_through_the_admin_api(&h, &upstream).await;

    // The key is live (authenticated, not an admin).
    let (status, _) = h
        .call("GET", "/admin/providers", Some(&built.key), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The provider test reached the fake upstream with the system key.
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.path, "/v1/models");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );

    let (_, catalog) = h.admin("GET", "/admin/routing-rules", None).await;
    assert_eq!(catalog["total"], 1);
    assert_eq!(catalog["data"][0]["provider_slug"], "fake");
    assert_eq!(catalog["data"][0]["model_name"], "gpt-4o-mini");
    let (_, user) = h.admin("GET", &format!("/admin/users/{USER}"), None).await;
    assert_eq!(user["credits_balance"], "5.00");
    assert_eq!(user["tier"], "starter");
    let (_, keys) = h
        .admin("GET", &format!("/admin/users/{USER}/api-keys"), None)
        .await;
    assert_eq!(keys["total"], 1);

    // Every write is in the audit log.
    let (_, log) = h.admin("GET", "/admin/audit-log?limit=500", None).await;
    let actions: Vec<&str> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions[actions.len() - 6..],
        [
            "provider.create",
            "model.create",
            "routing_rule.create",
            "user.create",
            "credits.topup",
            "api_key.create"
        ]
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "provider.delete").count(),
        8,
        "the seed's providers (Bedrock's included)"
    );
}

#[tokio::test]
async fn a_chat_completion_through_an_admin_built_catalog_is_billed_and_logged() {
    let upstream = FakeUpstream::start().await;
    let h = Harness::start_with(config(true), harness_keys()).await;
    let built = build_through_the_admin_api(&h, &upstream).await;

    let (status, completion) = call(
        h.serve_app(),
        "POST",
        "/v1/chat/completions",
        Some(&built.key),
        Some(json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 16,
        })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{completion}");
    assert_eq!(completion["choices"][0]["message"]["content"], DEFAULT_TEXT);
    assert_eq!(completion["_metadata"]["provider_used"], "fake");
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );

    // Usage: one attempt, on our provider, with the fake upstream's token counts.
    let (status, usage) = h
        .admin("GET", &format!("/admin/usage?user={USER}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    assert_eq!(usage["total"], 1, "{usage}");
    let row = &usage["data"][0];
    assert_eq!(row["provider_slug"], "fake");
    assert_eq!(row["provider_id"], built.provider_id);
    assert_eq!(row["status_code"], 200);
    assert_eq!(row["prompt_tokens"], 11);
    assert_eq!(row["completion_tokens"], 7);
    // 11 × 0.15 / 1M + 7 × 0.60 / 1M = 0.00000585 USD.
    assert_eq!(row["cost_total_usd"], "0.00000585");
    assert_eq!(row["charged_usd"], "0.00000585");
    let (_, summary) = h
        .admin("GET", "/admin/usage/summary?group_by=provider", None)
        .await;
    assert_eq!(summary["data"][0]["key"], "fake");
    assert_eq!(summary["data"][0]["requests"], 1);
    assert_eq!(summary["data"][0]["error_rate"], 0.0);

    // The ledger: the top-up and one capture of exactly that cost.
    let (_, ledger) = h
        .admin(
            "GET",
            &format!("/admin/users/{USER}/ledger?kind=capture"),
            None,
        )
        .await;
    assert_eq!(ledger["total"], 1, "{ledger}");
    assert_eq!(ledger["data"][0]["amount_usd"], "-0.00000585");
    let (_, user) = h.admin("GET", &format!("/admin/users/{USER}"), None).await;
    assert_eq!(user["credits_balance"], "4.99999415");
    assert_eq!(user["credits_held"], "0.00");
    assert_eq!(user["month_spend"], "0.00000585");
}
