//! The admin function through its HTTP API, in-process, against real Postgres: for each
//! route success, validation failures, auth failures, the audit row and pagination; the
//! SSRF rules on provider URLs; the live provider test against the fake upstream; and the
//! OpenAPI document covering every mounted route.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod admin_common;

use admin_common::*;
use http::StatusCode;
use serde_json::{Value, json};
use switchboard_core::credentials::SystemKeys;
use switchboard_tests::fake_upstream::{FakeUpstream, Step};

fn provider_body(slug: &str, base_url: &str) -> Value {
    json!({
        "provider_name": format!("Provider {slug}"),
        "provider_slug": slug,
        "api_format": "openai",
        "base_url": base_url,
        "auth_type": "bearer",
    })
}

async fn create_provider(h: &Harness, slug: &str) -> Value {
    let (status, body) = h
        .admin(
            "POST",
            "/admin/providers",
            Some(provider_body(slug, "https://1.1.1.1/v1")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn create_model(h: &Harness, provider_id: i64, model_id: &str) -> Value {
    let (status, body) = h
        .admin(
            "POST",
            "/admin/models",
            Some(json!({
                "provider_id": provider_id,
                "model_id": model_id,
                "context_window": 8192,
                "cost_per_1m_input_tokens": "1.00",
                "cost_per_1m_output_tokens": "2.00",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

// ---------------------------------------------------------------- authentication

#[tokio::test]
async fn every_admin_route_needs_an_admin_key() {
    let h = Harness::start().await;
    let user_key = h.account_with_key("plain-user", "enterprise", "user").await;
    let revoked_admin = h.account_with_key("old-admin", "enterprise", "admin").await;
    h.db.connect()
        .await
        .execute(
            "UPDATE gateway_api_keys SET revoked_at = now() WHERE user_id = 'old-admin'",
            &[],
        )
        .await
        .unwrap();
    let bogus = "sk-sb-0123456789abcdef0123456789abcdef0123456789abcdef";
    for (method, template) in ADMIN_ROUTES {
        let path = sample_path(template);
        let body = (*method == "POST" || *method == "PATCH").then(|| json!({}));
        let (status, reply) = h.call(method, &path, None, body.clone()).await;
        assert_error(
            status,
            &reply,
            StatusCode::UNAUTHORIZED,
            "authentication_error",
        );
        let (status, reply) = h.call(method, &path, Some(bogus), body.clone()).await;
        assert_error(
            status,
            &reply,
            StatusCode::UNAUTHORIZED,
            "authentication_error",
        );
        let (status, reply) = h
            .call(method, &path, Some(&revoked_admin), body.clone())
            .await;
        assert_error(
            status,
            &reply,
            StatusCode::UNAUTHORIZED,
            "authentication_error",
        );
        let (status, reply) = h.call(method, &path, Some(&user_key), body).await;
        assert_error(status, &reply, StatusCode::FORBIDDEN, "permission_error");
    }
    // Nothing was written by any refused request.
    assert_eq!(h.audit_count().await, 0);
}

// ---------------------------------------------------------------- providers

#[tokio::test]
async fn providers_create_read_update_delete_with_audit_rows() {
    let h = Harness::start().await;
    let (status, created) = h
        .admin(
            "POST",
            "/admin/providers",
            Some(json!({
                "provider_name": "Acme AI",
                "provider_slug": "acme",
                "api_format": "anthropic",
                "base_url": "https://1.1.1.1/v1",
                "health_url": "https://1.1.1.1/v1/models",
                "auth_type": "x-api-key",
                "rate_limit_rpm": 600,
                "is_system_provider": true,
                "min_tier_required": "starter",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["provider_slug"], "acme");
    assert_eq!(created["api_format"], "anthropic");
    assert_eq!(created["auth_type"], "x-api-key");
    assert_eq!(created["rate_limit_rpm"], 600);
    assert_eq!(created["rate_limit_tpm"], Value::Null);
    // Defaults of the schema.
    assert_eq!(created["supports_streaming"], true);
    assert_eq!(created["supports_vision"], false);
    assert_eq!(created["is_active"], true);
    assert_eq!(created["is_byok_supported"], true);
    assert_eq!(created["health_status"], "unknown");
    assert_eq!(created["disabled_reason"], Value::Null);
    assert_eq!(created["min_tier_required"], "starter");

    let audit = h.audit_rows("provider.create").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["entity_type"], "provider");
    assert_eq!(audit[0]["entity_id"], id.to_string());
    assert_eq!(audit[0]["actor"], "admin");
    assert_eq!(audit[0]["actor_key_id"], h.admin_key_id.to_string());
    assert_eq!(audit[0]["before"], Value::Null);
    assert_eq!(audit[0]["after"]["provider_slug"], "acme");

    let (status, read) = h
        .admin("GET", &format!("/admin/providers/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, created);

    // Duplicate slug.
    let (status, body) = h
        .admin(
            "POST",
            "/admin/providers",
            Some(provider_body("acme", "https://1.1.1.1")),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");

    // PATCH is partial; null clears a nullable field.
    let (status, patched) = h
        .admin(
            "PATCH",
            &format!("/admin/providers/{id}"),
            Some(json!({"provider_name": "Acme 2", "health_url": null, "rate_limit_tpm": 1000})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["provider_name"], "Acme 2");
    assert_eq!(patched["health_url"], Value::Null);
    assert_eq!(patched["rate_limit_tpm"], 1000);
    assert_eq!(patched["rate_limit_rpm"], 600);
    assert_eq!(patched["api_format"], "anthropic");
    assert_eq!(patched["base_url"], created["base_url"]);
    let audit = h.audit_rows("provider.update").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["before"]["provider_name"], "Acme AI");
    assert_eq!(audit[0]["after"]["provider_name"], "Acme 2");

    // A PATCH that changes nothing writes nothing.
    let (status, _) = h
        .admin(
            "PATCH",
            &format!("/admin/providers/{id}"),
            Some(json!({"provider_name": "Acme 2"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.audit_rows("provider.update").await.len(), 1);

    // Disabling records the admin as the reason; enabling clears it.
    let (_, disabled) = h
        .admin(
            "PATCH",
            &format!("/admin/providers/{id}"),
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(disabled["is_active"], false);
    assert_eq!(disabled["disabled_reason"], "admin");
    let (_, enabled) = h
        .admin(
            "PATCH",
            &format!("/admin/providers/{id}"),
            Some(json!({"is_active": true})),
        )
        .await;
    assert_eq!(enabled["disabled_reason"], Value::Null);

    // A provider with models is only deleted with cascade.
    let model = create_model(&h, id, "acme-large").await;
    let (status, body) = h
        .admin("DELETE", &format!("/admin/providers/{id}"), None)
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cascade=true")
    );
    let (status, _) = h
        .admin(
            "DELETE",
            &format!("/admin/providers/{id}?cascade=true"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = h
        .admin("GET", &format!("/admin/providers/{id}"), None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, _) = h
        .admin("GET", &format!("/admin/models/{}", model["id"]), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let audit = h.audit_rows("provider.delete").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["before"]["provider_slug"], "acme");
    assert_eq!(audit[0]["before"]["deleted_with_it"]["models"], 1);
    assert_eq!(audit[0]["after"], Value::Null);

    // A provider without models is deleted directly; a second delete is a 404.
    let lone = create_provider(&h, "lone").await;
    let (status, _) = h
        .admin("DELETE", &format!("/admin/providers/{}", lone["id"]), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = h
        .admin("DELETE", &format!("/admin/providers/{}", lone["id"]), None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn provider_lists_paginate_and_filter() {
    let h = Harness::start().await;
    // The seed has 8 providers (Bedrock's inactive).
    let (status, page) = h
        .admin("GET", "/admin/providers?limit=3&offset=0", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["data"].as_array().unwrap().len(), 3);
    assert_eq!(page["total"], 8);
    assert_eq!(page["limit"], 3);
    assert_eq!(page["offset"], 0);
    assert_eq!(page["has_more"], true);
    let (_, last) = h
        .admin("GET", "/admin/providers?limit=3&offset=6", None)
        .await;
    assert_eq!(last["data"].as_array().unwrap().len(), 2);
    assert_eq!(last["has_more"], false);
    let (_, beyond) = h.admin("GET", "/admin/providers?offset=100", None).await;
    assert_eq!(beyond["data"].as_array().unwrap().len(), 0);
    assert_eq!(beyond["total"], 8);
    let (_, all) = h.admin("GET", "/admin/providers", None).await;
    assert_eq!(all["limit"], 50);
    let ids: Vec<i64> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "stable order by id");

    let groq = h.provider_id("groq").await;
    h.admin(
        "PATCH",
        &format!("/admin/providers/{groq}"),
        Some(json!({"is_active": false})),
    )
    .await;
    let (_, inactive) = h
        .admin("GET", "/admin/providers?is_active=false", None)
        .await;
    // Groq, and the seeded Bedrock provider (an admin turns it on).
    assert_eq!(inactive["total"], 2);
    assert_eq!(inactive["data"][0]["provider_slug"], "groq");
    h.db.connect()
        .await
        .execute(
            "UPDATE llm_providers SET health_status = 'down' WHERE provider_slug = 'openai'",
            &[],
        )
        .await
        .unwrap();
    let (_, down) = h
        .admin("GET", "/admin/providers?health_status=down", None)
        .await;
    assert_eq!(down["total"], 1);
    assert_eq!(down["data"][0]["provider_slug"], "openai");

    for bad in [
        "limit=0",
        "limit=501",
        "limit=abc",
        "offset=-1",
        "is_active=maybe",
        "health_status=sleepy",
        "unknown_param=1",
    ] {
        let (status, body) = h
            .admin("GET", &format!("/admin/providers?{bad}"), None)
            .await;
        assert_invalid(status, &body, None);
    }
}

#[tokio::test]
async fn providers_responses_api_flag_is_read_written_and_only_for_openai() {
    let h = Harness::start().await;
    // Off by default, and readable.
    let plain = create_provider(&h, "plain-openai").await;
    assert_eq!(plain["supports_responses_api"], false);

    let mut body = provider_body("native", "https://1.1.1.1/v1");
    body["supports_responses_api"] = json!(true);
    let (status, created) = h.admin("POST", "/admin/providers", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["supports_responses_api"], true);
    let id = created["id"].as_i64().unwrap();
    let (_, read) = h
        .admin("GET", &format!("/admin/providers/{id}"), None)
        .await;
    assert_eq!(read["supports_responses_api"], true);
    assert_eq!(
        h.audit_rows("provider.create").await[1]["after"]["supports_responses_api"],
        true
    );
    // The routing catalog sees it (what the chat run hands the OpenAI adapter).
    let client = h.db.connect().await;
    let catalog = switchboard_core::catalog::load_catalog(&client)
        .await
        .unwrap();
    assert!(
        catalog
            .provider_by_slug("native")
            .unwrap()
            .supports_responses_api
    );
    assert!(
        !catalog
            .provider_by_slug("plain-openai")
            .unwrap()
            .supports_responses_api
    );

    // Only an OpenAI-format provider may serve it: a 400 naming the field, nothing written.
    let writes = h.audit_count().await;
    let mut anthropic = provider_body("claude-native", "https://1.1.1.1/v1");
    anthropic["api_format"] = json!("anthropic");
    anthropic["supports_responses_api"] = json!(true);
    let (status, reply) = h.admin("POST", "/admin/providers", Some(anthropic)).await;
    assert_invalid(status, &reply, Some("supports_responses_api"));
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("openai"),
        "{reply}"
    );
    let mut wrong_type = provider_body("typed", "https://1.1.1.1/v1");
    wrong_type["supports_responses_api"] = json!("yes");
    let (status, reply) = h.admin("POST", "/admin/providers", Some(wrong_type)).await;
    assert_invalid(status, &reply, None);

    // PATCH: off and on again; a format change the flag no longer fits names the format;
    // the flag set on a provider of another format names the flag; null is refused.
    let path = format!("/admin/providers/{id}");
    let (status, off) = h
        .admin(
            "PATCH",
            &path,
            Some(json!({"supports_responses_api": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{off}");
    assert_eq!(off["supports_responses_api"], false);
    let audit = h.audit_rows("provider.update").await;
    assert_eq!(
        audit.last().unwrap()["before"]["supports_responses_api"],
        true
    );
    assert_eq!(
        audit.last().unwrap()["after"]["supports_responses_api"],
        false
    );
    let (_, on) = h
        .admin(
            "PATCH",
            &path,
            Some(json!({"supports_responses_api": true})),
        )
        .await;
    assert_eq!(on["supports_responses_api"], true);
    let writes_before_refusals = h.audit_count().await;
    let (status, reply) = h
        .admin("PATCH", &path, Some(json!({"api_format": "gemini"})))
        .await;
    assert_invalid(status, &reply, Some("api_format"));
    let (status, reply) = h
        .admin(
            "PATCH",
            &path,
            Some(json!({"api_format": "anthropic", "supports_responses_api": true})),
        )
        .await;
    assert_invalid(status, &reply, Some("supports_responses_api"));
    let (status, reply) = h
        .admin(
            "PATCH",
            &path,
            Some(json!({"supports_responses_api": null})),
        )
        .await;
    assert_invalid(status, &reply, None);
    let (_, unchanged) = h.admin("GET", &path, None).await;
    assert_eq!(unchanged["api_format"], "openai");
    assert_eq!(unchanged["supports_responses_api"], true);
    assert_eq!(h.audit_count().await, writes_before_refusals);
    // Both in one request: the flag goes with the format change.
    let (status, moved) = h
        .admin(
            "PATCH",
            &path,
            Some(json!({"api_format": "anthropic", "supports_responses_api": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["api_format"], "anthropic");
    assert_eq!(moved["supports_responses_api"], false);
    let (status, reply) = h
        .admin(
            "PATCH",
            &path,
            Some(json!({"supports_responses_api": true})),
        )
        .await;
    assert_invalid(status, &reply, Some("supports_responses_api"));
    assert!(h.audit_count().await > writes);
}

#[tokio::test]
async fn provider_input_is_validated_and_nothing_is_written_on_failure() {
    let h = Harness::start_with(config(false), SystemKeys::none()).await;
    let before = h.scalar_i64("SELECT count(*) FROM llm_providers").await;
    let ok = provider_body("fine", "https://1.1.1.1/v1");
    let with = |field: &str, value: Value| {
        let mut body = ok.clone();
        body[field] = value;
        body
    };
    let cases: Vec<(Value, Option<&str>)> = vec![
        (with("unexpected", json!(1)), None),
        (
            with("provider_slug", json!("Not A Slug")),
            Some("provider_slug"),
        ),
        (
            with("provider_slug", json!("-leading")),
            Some("provider_slug"),
        ),
        (
            with("provider_slug", json!("a".repeat(64))),
            Some("provider_slug"),
        ),
        (with("provider_name", json!("")), Some("provider_name")),
        (with("api_format", json!("soap")), None),
        (with("auth_type", json!("cookie")), None),
        (with("min_tier_required", json!("platinum")), None),
        (with("rate_limit_rpm", json!(0)), Some("rate_limit_rpm")),
        (with("rate_limit_tpm", json!(-5)), Some("rate_limit_tpm")),
        (with("rate_limit_rpd", json!(1e12)), None),
        (with("supports_vision", json!("yes")), None),
        (with("health_status", json!("healthy")), None), // read-only
        (with("id", json!(5)), None),
        // SSRF rules.
        (
            with("base_url", json!("http://1.1.1.1/v1")),
            Some("base_url"),
        ),
        (
            with("base_url", json!("https://127.0.0.1/v1")),
            Some("base_url"),
        ),
        (
            with("base_url", json!("https://localhost/v1")),
            Some("base_url"),
        ),
        (
            with("base_url", json!("https://169.254.169.254/latest")),
            Some("base_url"),
        ),
        (
            with("base_url", json!("https://10.0.0.8/v1")),
            Some("base_url"),
        ),
        (
            with("base_url", json!("https://[::1]/v1")),
            Some("base_url"),
        ),
        (
            with("base_url", json!("https://[fd00:ec2::254]/")),
            Some("base_url"),
        ),
        (
            with("base_url", json!("https://0.0.0.0/")),
            Some("base_url"),
        ),
        (
            with("base_url", json!("https://user:pw@1.1.1.1/")),
            Some("base_url"),
        ),
        (with("base_url", json!("ftp://1.1.1.1/")), Some("base_url")),
        (with("base_url", json!("not a url")), Some("base_url")),
        (
            with("health_url", json!("https://192.168.1.10/health")),
            Some("health_url"),
        ),
    ];
    for (body, param) in cases {
        let (status, reply) = h
            .admin("POST", "/admin/providers", Some(body.clone()))
            .await;
        assert_invalid(status, &reply, param);
        assert!(
            !reply["error"]["message"].as_str().unwrap().is_empty(),
            "{body}"
        );
    }
    // Missing required fields, malformed and truncated JSON, wrong content.
    let (status, reply) = h
        .admin(
            "POST",
            "/admin/providers",
            Some(json!({"provider_slug": "x"})),
        )
        .await;
    assert_invalid(status, &reply, None);
    for raw in ["{", "{\"provider_slug\": ", "[]", "null", "\"text\""] {
        let (status, reply) = h.admin_raw("POST", "/admin/providers", raw).await;
        assert_invalid(status, &reply, None);
    }
    // PATCH: unknown fields, null for a non-nullable field, SSRF, bad ids.
    let openai = h.provider_id("openai").await;
    for (body, param) in [
        (json!({"nope": true}), None),
        (json!({"provider_name": null}), None),
        (json!({"is_active": null}), None),
        (json!({"base_url": "https://127.0.0.1/"}), Some("base_url")),
        (json!({"health_status": "down"}), None),
    ] {
        let (status, reply) = h
            .admin("PATCH", &format!("/admin/providers/{openai}"), Some(body))
            .await;
        assert_invalid(status, &reply, param);
    }
    let (status, reply) = h.admin("GET", "/admin/providers/abc", None).await;
    assert_invalid(status, &reply, Some("id"));
    let (status, reply) = h.admin("GET", "/admin/providers/99999999999", None).await;
    assert_invalid(status, &reply, Some("id"));
    let (status, reply) = h
        .admin(
            "PATCH",
            "/admin/providers/424242",
            Some(json!({"provider_name": "x"})),
        )
        .await;
    assert_error(status, &reply, StatusCode::NOT_FOUND, "not_found");

    assert_eq!(
        h.scalar_i64("SELECT count(*) FROM llm_providers").await,
        before
    );
    assert_eq!(h.audit_count().await, 0);

    // A public address passes; the stored seed URL (https, public host) can be kept while
    // other fields change.
    let (status, body) = h.admin("POST", "/admin/providers", Some(ok)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = h
        .admin(
            "PATCH",
            &format!("/admin/providers/{openai}"),
            Some(json!({"rate_limit_rpm": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn private_upstreams_are_accepted_only_when_allowed() {
    let h = Harness::start().await; // SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS=1
    for url in [
        "http://127.0.0.1:11434/v1",
        "http://localhost:8080/v1",
        "https://10.0.0.8/v1",
    ] {
        let slug = format!("p{}", url.len());
        let (status, body) = h
            .admin("POST", "/admin/providers", Some(provider_body(&slug, url)))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{url}: {body}");
    }
    // Still only http(s), still no credentials in the URL.
    let (status, body) = h
        .admin(
            "POST",
            "/admin/providers",
            Some(provider_body("ftp", "ftp://127.0.0.1/")),
        )
        .await;
    assert_invalid(status, &body, Some("base_url"));
}

#[tokio::test]
async fn provider_health_lists_recent_checks_newest_first() {
    let h = Harness::start().await;
    let openai = h.provider_id("openai").await;
    let client = h.db.connect().await;
    for (i, status) in ["healthy", "degraded", "down", "healthy", "healthy"]
        .iter()
        .enumerate()
    {
        client
            .execute(
                "INSERT INTO provider_health_checks (provider_id, status, response_time_ms, http_status, checked_at)
                 VALUES ($1, $2, $3, 200, now() - ($4 || ' minutes')::interval)",
                &[&openai, status, &(100 + i as i32), &(10 - i as i32).to_string()],
            )
            .await
            .unwrap();
    }
    client
        .execute(
            "UPDATE llm_providers SET health_status = 'healthy' WHERE id = $1",
            &[&openai],
        )
        .await
        .unwrap();
    let (status, body) = h
        .admin(
            "GET",
            &format!("/admin/providers/{openai}/health?limit=2"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["provider_slug"], "openai");
    assert_eq!(body["health_status"], "healthy");
    assert_eq!(body["total"], 5);
    assert_eq!(body["has_more"], true);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["response_time_ms"], 104);
    assert_eq!(data[1]["response_time_ms"], 103);
    let (_, next) = h
        .admin(
            "GET",
            &format!("/admin/providers/{openai}/health?limit=2&offset=4"),
            None,
        )
        .await;
    assert_eq!(next["data"][0]["response_time_ms"], 100);
    assert_eq!(next["data"][0]["status"], "healthy");
    let (status, body) = h.admin("GET", "/admin/providers/99999/health", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = h
        .admin(
            "GET",
            &format!("/admin/providers/{openai}/health?limit=9999"),
            None,
        )
        .await;
    assert_invalid(status, &body, Some("limit"));
}

#[tokio::test]
async fn provider_test_calls_the_upstream_with_the_system_key() {
    let upstream = FakeUpstream::start().await;
    let keys = SystemKeys::from_env_vars([
        (
            "SWITCHBOARD_PROVIDER_KEY_FAKE_OAI".to_string(),
            "sk-oai-secret-1234".to_string(),
        ),
        (
            "SWITCHBOARD_PROVIDER_KEY_FAKE_ANT".to_string(),
            "sk-ant-secret-5678".to_string(),
        ),
        (
            "SWITCHBOARD_PROVIDER_KEY_FAKE_GEM".to_string(),
            "gem-secret-9012".to_string(),
        ),
    ]);
    let h = Harness::start_with(config(true), keys).await;
    let mut ids = Vec::new();
    for (slug, format, auth, base) in [
        ("fake_oai", "openai", "bearer", upstream.openai_base_url()),
        (
            "fake_ant",
            "anthropic",
            "x-api-key",
            upstream.anthropic_base_url(),
        ),
        (
            "fake_gem",
            "gemini",
            "x-goog-api-key",
            upstream.gemini_base_url(),
        ),
        ("nokey", "openai", "bearer", upstream.openai_base_url()),
    ] {
        let (status, body) = h
            .admin(
                "POST",
                "/admin/providers",
                Some(
                    json!({"provider_name": slug, "provider_slug": slug, "api_format": format,
                            "auth_type": auth, "base_url": base, "is_system_provider": true}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["id"].as_i64().unwrap());
    }

    let (status, result) = h
        .admin("POST", &format!("/admin/providers/{}/test", ids[0]), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["status"], 200);
    assert!(result["latency_ms"].is_u64());
    assert_eq!(result["used_system_key"], true);
    assert_eq!(result["error"], Value::Null);
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/v1/models");
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-oai-secret-1234")
    );
    assert!(!result.to_string().contains("sk-oai-secret"));

    let (_, result) = h
        .admin("POST", &format!("/admin/providers/{}/test", ids[1]), None)
        .await;
    assert_eq!(result["ok"], true, "{result}");
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.header("x-api-key"), Some("sk-ant-secret-5678"));
    assert!(seen.header("anthropic-version").is_some());
    assert_eq!(seen.header("authorization"), None);

    let (_, result) = h
        .admin("POST", &format!("/admin/providers/{}/test", ids[2]), None)
        .await;
    assert_eq!(result["ok"], true, "{result}");
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.path, "/v1beta/models");
    assert_eq!(seen.header("x-goog-api-key"), Some("gem-secret-9012"));
    assert_eq!(seen.query, None, "the key never goes in the URL");

    // The provider refuses the key.
    upstream.push_models(Step::status(401));
    let (_, result) = h
        .admin("POST", &format!("/admin/providers/{}/test", ids[0]), None)
        .await;
    assert_eq!(result["ok"], false);
    assert_eq!(result["status"], 401);
    assert!(result["error"].as_str().unwrap().contains("401"));

    // With a model, the test is a one-token chat call through the provider adapter.
    for (provider, model) in [(ids[0], "gpt-4o-mini"), (ids[1], "claude-haiku-4-5")] {
        let (status, body) = h
            .admin(
                "POST",
                "/admin/models",
                Some(
                    json!({"provider_id": provider, "model_id": model, "context_window": 1000,
                            "cost_per_1m_input_tokens": 1, "cost_per_1m_output_tokens": 2}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (_, result) = h
        .admin("POST", &format!("/admin/providers/{}/test", ids[0]), None)
        .await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["status"], 200);
    assert_eq!(result["model_id"], "gpt-4o-mini");
    let seen = upstream.last_request().unwrap();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(seen.body["model"], "gpt-4o-mini");
    assert_eq!(seen.body["max_tokens"], 1);
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-oai-secret-1234")
    );
    let (_, result) = h
        .admin("POST", &format!("/admin/providers/{}/test", ids[1]), None)
        .await;
    assert_eq!(result["ok"], true, "{result}");
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.body["max_tokens"], 1);
    assert_eq!(seen.header("x-api-key"), Some("sk-ant-secret-5678"));
    upstream.push(Step::status(503));
    let (status, result) = h
        .admin("POST", &format!("/admin/providers/{}/test", ids[0]), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result["ok"], false, "{result}");
    assert_eq!(result["status"], 503);
    assert!(!result.to_string().contains("sk-oai-secret"));

    // No system key: no call, and the answer says which variable to set.
    let calls = upstream.request_count();
    let (status, result) = h
        .admin("POST", &format!("/admin/providers/{}/test", ids[3]), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result["ok"], false);
    assert_eq!(result["status"], Value::Null);
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("SWITCHBOARD_PROVIDER_KEY_NOKEY"),
        "{result}"
    );
    assert_eq!(upstream.request_count(), calls);

    // Unreachable upstream: reported, not a 5xx of ours.
    let dead = upstream.base_url();
    drop(upstream);
    let (_, body) = h
        .admin(
            "PATCH",
            &format!("/admin/providers/{}", ids[0]),
            Some(json!({"base_url": format!("{dead}/v1")})),
        )
        .await;
    assert_eq!(body["base_url"], format!("{dead}/v1"));
    let (status, result) = h
        .admin("POST", &format!("/admin/providers/{}/test", ids[0]), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result["ok"], false);
    assert!(result["error"].is_string());

    let (status, body) = h.admin("POST", "/admin/providers/99999/test", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    // Not a write: no audit row for the tests.
    assert!(h.audit_rows("provider.test").await.is_empty());
}

#[tokio::test]
async fn provider_test_refuses_a_url_that_now_points_inside() {
    let keys = SystemKeys::from_env_vars([(
        "SWITCHBOARD_PROVIDER_KEY_OPENAI".to_string(),
        "sk-secret".to_string(),
    )]);
    let h = Harness::start_with(config(false), keys).await;
    let openai = h.provider_id("openai").await;
    // As if the URL had been stored before the rules (or by hand).
    h.db.connect()
        .await
        .execute(
            "UPDATE llm_providers SET base_url = 'https://169.254.169.254/v1' WHERE id = $1",
            &[&openai],
        )
        .await
        .unwrap();
    let (status, result) = h
        .admin("POST", &format!("/admin/providers/{openai}/test"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result["ok"], false);
    assert!(
        result["error"].as_str().unwrap().contains("link-local"),
        "{result}"
    );
}

#[tokio::test]
async fn catalog_writes_refresh_this_instances_catalog_cache_at_once() {
    // A TTL far longer than the test: only the invalidation can make the writes visible.
    let h = Harness::start_with(
        config_with(&[
            ("SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS", "1"),
            ("SWITCHBOARD_CATALOG_TTL_SECS", "300"),
        ]),
        SystemKeys::none(),
    )
    .await;
    let cache = h.state.catalog.clone();
    let pool = h.state.pool.clone();
    let before = cache.get(&pool).await.unwrap();
    assert!(before.provider_by_slug("acme").is_none());

    let provider = create_provider(&h, "acme").await;
    let snapshot = cache.get(&pool).await.unwrap();
    assert!(snapshot.provider_by_slug("acme").is_some());
    let model = create_model(&h, provider["id"].as_i64().unwrap(), "acme-1").await;
    let model_id = model["id"].as_i64().unwrap() as i32;
    assert!(cache.get(&pool).await.unwrap().model(model_id).is_some());

    h.admin(
        "PATCH",
        &format!("/admin/models/{model_id}"),
        Some(json!({"cost_per_1m_output_tokens": "9.75"})),
    )
    .await;
    let price = cache
        .get(&pool)
        .await
        .unwrap()
        .model(model_id)
        .unwrap()
        .cost_per_1m_output_tokens;
    assert_eq!(price, "9.75".parse::<rust_decimal::Decimal>().unwrap());

    let (_, rule) = h
        .admin(
            "POST",
            "/admin/routing-rules",
            Some(json!({"model_id": model_id, "power_level": "eco"})),
        )
        .await;
    let rule_count = cache.get(&pool).await.unwrap().rules().len();
    h.admin(
        "DELETE",
        &format!("/admin/routing-rules/{}", rule["id"]),
        None,
    )
    .await;
    assert_eq!(
        cache.get(&pool).await.unwrap().rules().len(),
        rule_count - 1
    );

    h.admin(
        "DELETE",
        &format!("/admin/providers/{}?cascade=true", provider["id"]),
        None,
    )
    .await;
    let after = cache.get(&pool).await.unwrap();
    assert!(after.provider_by_slug("acme").is_none());
    assert!(after.model(model_id).is_none());
}

// ---------------------------------------------------------------- models

#[tokio::test]
async fn models_keep_exact_prices_and_validate_input() {
    let h = Harness::start().await;
    let provider = create_provider(&h, "acme").await;
    let pid = provider["id"].as_i64().unwrap();
    // Prices as JSON numbers and strings.
    let (status, model) = h
        .admin(
            "POST",
            "/admin/models",
            Some(json!({
                "provider_id": pid,
                "model_id": "acme-1",
                "model_name": "Acme One",
                "display_name": "Acme One (2025)",
                "context_window": 128000,
                "max_tokens": 4096,
                "supports_function_calling": true,
                "cost_per_1m_input_tokens": 2.50,
                "cost_per_1m_output_tokens": 0.1,
                "cost_per_1m_tokens_cached": "0.000000001",
                "power_level": "balanced",
                "power_level_priority": 5,
                "min_tier_required": "professional",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{model}");
    let id = model["id"].as_i64().unwrap();
    assert_eq!(model["provider_slug"], "acme");
    assert_eq!(model["cost_per_1m_input_tokens"], "2.50");
    assert_eq!(model["cost_per_1m_output_tokens"], "0.10");
    assert_eq!(model["cost_per_1m_tokens_cached"], "0.000000001");
    assert_eq!(model["supports_streaming"], true);
    assert_eq!(model["supports_json_mode"], false);
    assert_eq!(model["is_active"], true);
    assert_eq!(model["power_level"], "balanced");
    let stored: String = h
        .db
        .connect()
        .await
        .query_one(
            "SELECT cost_per_1m_input_tokens::text || ' ' || cost_per_1m_output_tokens::text FROM llm_models WHERE id = $1",
            &[&(id as i32)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "2.500000000 0.100000000");
    assert_eq!(h.audit_rows("model.create").await.len(), 1);

    // model_name defaults to model_id.
    let other = create_model(&h, pid, "acme-2").await;
    assert_eq!(other["model_name"], "acme-2");
    assert_eq!(other["cost_per_1m_tokens_cached"], Value::Null);

    let ok = json!({"provider_id": pid, "model_id": "x", "context_window": 10,
                    "cost_per_1m_input_tokens": "1", "cost_per_1m_output_tokens": "1"});
    let with = |field: &str, value: Value| {
        let mut body = ok.clone();
        body[field] = value;
        body
    };
    for (body, param) in [
        (
            with("cost_per_1m_input_tokens", json!("-0.01")),
            Some("cost_per_1m_input_tokens"),
        ),
        (
            with("cost_per_1m_output_tokens", json!(-3)),
            Some("cost_per_1m_output_tokens"),
        ),
        (
            with("cost_per_1m_input_tokens", json!("0.0000000001")),
            Some("cost_per_1m_input_tokens"),
        ),
        (
            with("cost_per_1m_input_tokens", json!("1000000000")),
            Some("cost_per_1m_input_tokens"),
        ),
        (with("cost_per_1m_input_tokens", json!("cheap")), None),
        (
            with("cost_per_1m_input_tokens", json!(0.12345678901234567)),
            None,
        ),
        (with("cost_per_1m_tokens_cached", json!(true)), None),
        (with("context_window", json!(0)), Some("context_window")),
        (with("max_tokens", json!(-1)), Some("max_tokens")),
        (with("power_level", json!("turbo")), None),
        (with("min_tier_required", json!("gold")), None),
        (with("provider_id", json!(987654)), Some("provider_id")),
        (
            with("replacement_model_id", json!(987654)),
            Some("replacement_model_id"),
        ),
        (with("model_id", json!("")), Some("model_id")),
        (with("model_id", json!("has space")), Some("model_id")),
        (with("avg_latency_ms", json!(5)), None),
    ] {
        let (status, reply) = h.admin("POST", "/admin/models", Some(body.clone())).await;
        assert_invalid(status, &reply, param);
    }
    // The same model id twice for one provider.
    let (status, reply) = h
        .admin(
            "POST",
            "/admin/models",
            Some(with("model_id", json!("acme-1"))),
        )
        .await;
    assert_error(status, &reply, StatusCode::CONFLICT, "conflict");

    // PATCH: one price changes, the rest stays; null clears the cached price.
    let (status, patched) = h
        .admin(
            "PATCH",
            &format!("/admin/models/{id}"),
            Some(json!({"cost_per_1m_output_tokens": "12.5", "cost_per_1m_tokens_cached": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["cost_per_1m_output_tokens"], "12.50");
    assert_eq!(patched["cost_per_1m_input_tokens"], "2.50");
    assert_eq!(patched["cost_per_1m_tokens_cached"], Value::Null);
    assert_eq!(patched["max_tokens"], 4096);
    let audit = h.audit_rows("model.update").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["before"]["cost_per_1m_output_tokens"], "0.10");
    assert_eq!(audit[0]["after"]["cost_per_1m_output_tokens"], "12.50");
    for (body, param) in [
        (json!({"cost_per_1m_input_tokens": null}), None),
        (
            json!({"replacement_model_id": id}),
            Some("replacement_model_id"),
        ),
        (json!({"provider_id": 5555}), Some("provider_id")),
        (json!({"context_window": 0}), Some("context_window")),
    ] {
        let (status, reply) = h
            .admin("PATCH", &format!("/admin/models/{id}"), Some(body))
            .await;
        assert_invalid(status, &reply, param);
    }
    let (status, reply) = h
        .admin(
            "PATCH",
            &format!("/admin/models/{id}"),
            Some(json!({"model_id": "acme-2"})),
        )
        .await;
    assert_error(status, &reply, StatusCode::CONFLICT, "conflict");

    // Filters and pagination.
    let (_, list) = h
        .admin("GET", &format!("/admin/models?provider_id={pid}"), None)
        .await;
    assert_eq!(list["total"], 2);
    let (_, list) = h
        .admin("GET", "/admin/models?power_level=balanced&limit=1", None)
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(list["total"].as_i64().unwrap() >= 2);
    let (_, list) = h.admin("GET", "/admin/models?model_id=acme-1", None).await;
    assert_eq!(list["total"], 1);
    let (status, body) = h
        .admin("GET", "/admin/models?power_level=turbo", None)
        .await;
    assert_invalid(status, &body, None);

    // A model routing rules point at is only deleted with cascade.
    let (status, rule) = h
        .admin(
            "POST",
            "/admin/routing-rules",
            Some(json!({"model_id": id, "power_level": "eco"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");
    let (status, body) = h
        .admin("DELETE", &format!("/admin/models/{id}"), None)
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    let (status, _) = h
        .admin("DELETE", &format!("/admin/models/{id}?cascade=true"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = h
        .admin("GET", &format!("/admin/routing-rules/{}", rule["id"]), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let audit = h.audit_rows("model.delete").await;
    assert_eq!(audit[0]["before"]["deleted_with_it"]["routing_rules"], 1);
    let (status, body) = h
        .admin(
            "DELETE",
            &format!("/admin/models/{id}?cascade=perhaps"),
            None,
        )
        .await;
    assert_invalid(status, &body, None);
}

// ---------------------------------------------------------------- routing rules

#[tokio::test]
async fn routing_rules_are_validated_and_audited() {
    let h = Harness::start().await;
    let provider = create_provider(&h, "acme").await;
    let model = create_model(&h, provider["id"].as_i64().unwrap(), "acme-1").await;
    let mid = model["id"].as_i64().unwrap();
    let (status, rule) = h
        .admin(
            "POST",
            "/admin/routing-rules",
            Some(
                json!({"model_id": mid, "power_level": "precision", "user_tier": "professional",
                        "task_type": "code", "priority": 2, "weight": 30, "min_tokens": 0,
                        "max_tokens": 50000, "is_fallback": true, "fallback_order": 1}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");
    let id = rule["id"].as_i64().unwrap();
    assert_eq!(rule["model_id"], mid);
    assert_eq!(rule["model_name"], "acme-1");
    assert_eq!(rule["provider_slug"], "acme");
    assert_eq!(rule["user_tier"], "professional");
    assert_eq!(rule["task_type"], "code");
    assert_eq!(rule["weight"], 30);
    assert_eq!(rule["requires_byok"], false);
    assert_eq!(rule["is_active"], true);
    let (_, defaults) = h
        .admin(
            "POST",
            "/admin/routing-rules",
            Some(json!({"model_id": mid, "power_level": "eco"})),
        )
        .await;
    assert_eq!(defaults["priority"], 100);
    assert_eq!(defaults["weight"], 100);
    assert_eq!(defaults["user_tier"], Value::Null);

    for (body, param) in [
        (
            json!({"model_id": mid, "power_level": "eco", "weight": 0}),
            Some("weight"),
        ),
        (
            json!({"model_id": mid, "power_level": "eco", "weight": -1}),
            Some("weight"),
        ),
        (
            json!({"model_id": mid, "power_level": "eco", "min_tokens": 10, "max_tokens": 5}),
            Some("min_tokens"),
        ),
        (
            json!({"model_id": mid, "power_level": "eco", "min_tokens": -1}),
            Some("min_tokens"),
        ),
        (
            json!({"model_id": mid, "power_level": "eco", "max_tokens": 0}),
            Some("max_tokens"),
        ),
        (
            json!({"model_id": 777777, "power_level": "eco"}),
            Some("model_id"),
        ),
        (json!({"model_id": mid, "power_level": "turbo"}), None),
        (
            json!({"model_id": mid, "power_level": "eco", "task_type": "poetry"}),
            None,
        ),
        (
            json!({"model_id": mid, "power_level": "eco", "user_tier": "vip"}),
            None,
        ),
        (json!({"model_id": mid}), None),
        (
            json!({"model_id": mid, "power_level": "eco", "extra": 1}),
            None,
        ),
        (json!({"model_id": "one", "power_level": "eco"}), None),
        (
            json!({"model_id": mid, "power_level": "eco", "weight": 3000000000u64}),
            None,
        ),
    ] {
        let (status, reply) = h
            .admin("POST", "/admin/routing-rules", Some(body.clone()))
            .await;
        assert_invalid(status, &reply, param);
    }

    let (status, patched) = h
        .admin(
            "PATCH",
            &format!("/admin/routing-rules/{id}"),
            Some(json!({"weight": 70, "user_tier": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["weight"], 70);
    assert_eq!(patched["user_tier"], Value::Null);
    assert_eq!(patched["task_type"], "code");
    let (status, reply) = h
        .admin(
            "PATCH",
            &format!("/admin/routing-rules/{id}"),
            Some(json!({"min_tokens": 60000})),
        )
        .await;
    assert_invalid(status, &reply, Some("min_tokens"));
    let (status, reply) = h
        .admin(
            "PATCH",
            &format!("/admin/routing-rules/{id}"),
            Some(json!({"model_id": 4444})),
        )
        .await;
    assert_invalid(status, &reply, Some("model_id"));

    let (_, list) = h
        .admin("GET", "/admin/routing-rules?power_level=precision", None)
        .await;
    // The seed's precision rules (one chat, two embedding) plus ours.
    assert_eq!(list["total"], 4);
    let (_, list) = h
        .admin(
            "GET",
            &format!("/admin/routing-rules?model_id={mid}&limit=1"),
            None,
        )
        .await;
    assert_eq!(list["total"], 2);
    assert_eq!(list["has_more"], true);

    let (status, _) = h
        .admin("DELETE", &format!("/admin/routing-rules/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = h
        .admin("GET", &format!("/admin/routing-rules/{id}"), None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(h.audit_rows("routing_rule.create").await.len(), 2);
    assert_eq!(h.audit_rows("routing_rule.update").await.len(), 1);
    let deleted = h.audit_rows("routing_rule.delete").await;
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["before"]["weight"], 70);
}

// ---------------------------------------------------------------- users and credits

#[tokio::test]
async fn users_credits_and_the_ledger() {
    let h = Harness::start().await;
    let (status, user) = h
        .admin(
            "POST",
            "/admin/users",
            Some(json!({"id": "alice", "tier": "starter", "monthly_cap_usd": "100.00"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["id"], "alice");
    assert_eq!(user["tier"], "starter");
    assert_eq!(user["status"], "active");
    assert_eq!(user["monthly_cap_usd"], "100.00");
    assert_eq!(user["credits_balance"], "0.00");
    assert_eq!(user["credits_held"], "0.00");
    assert_eq!(user["month_spend"], "0.00");
    assert_eq!(h.audit_rows("user.create").await.len(), 1);

    let (status, body) = h
        .admin("POST", "/admin/users", Some(json!({"id": "alice"})))
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    for (body, param) in [
        (json!({"id": "has space"}), Some("id")),
        (json!({"id": ""}), Some("id")),
        (json!({"id": "bob", "tier": "platinum"}), None),
        (
            json!({"id": "bob", "monthly_cap_usd": "-1"}),
            Some("monthly_cap_usd"),
        ),
        (
            json!({"id": "bob", "monthly_cap_usd": "1e20"}),
            Some("monthly_cap_usd"),
        ),
        (json!({"id": "bob", "credits": 5}), None),
        (json!({"tier": "free"}), None),
    ] {
        let (status, reply) = h.admin("POST", "/admin/users", Some(body)).await;
        assert_invalid(status, &reply, param);
    }
    let (status, bob) = h
        .admin(
            "POST",
            "/admin/users",
            Some(json!({"user_id": "bob", "monthly_cap_usd": 25.5})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bob}");
    assert_eq!(bob["tier"], "free");
    assert_eq!(bob["monthly_cap_usd"], "25.50");

    // A top-up as a string, then the same request again: nothing changes.
    let topup =
        json!({"amount_usd": "10.00", "reason": "purchase #1", "idempotency_key": "order-1"});
    let (status, first) = h
        .admin("POST", "/admin/users/alice/credits", Some(topup.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["kind"], "topup");
    assert_eq!(first["amount_usd"], "10.00");
    assert_eq!(first["credits_balance"], "10.00");
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["idempotency_key"], "order-1");
    assert_eq!(first["reason"], "purchase #1");
    let (status, again) = h
        .admin("POST", "/admin/users/alice/credits", Some(topup))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["credits_balance"], "10.00");
    // The key reused for something else.
    let (status, body) = h
        .admin(
            "POST",
            "/admin/users/alice/credits",
            Some(json!({"amount_usd": "11", "idempotency_key": "order-1"})),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    let (status, body) = h
        .admin(
            "POST",
            "/admin/users/bob/credits",
            Some(json!({"amount_usd": "10.00", "idempotency_key": "order-1"})),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");

    // An adjustment down, as a JSON number; 0.1 stays 0.1.
    let (status, adj) = h
        .admin(
            "POST",
            "/admin/users/alice/credits",
            Some(json!({"amount_usd": -2.5, "reason": "refund error"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{adj}");
    assert_eq!(adj["kind"], "adjustment");
    assert_eq!(adj["amount_usd"], "-2.50");
    assert_eq!(adj["credits_balance"], "7.50");
    let (_, small) = h
        .admin(
            "POST",
            "/admin/users/alice/credits",
            Some(json!({"amount_usd": 0.1, "idempotency_key": "tiny"})),
        )
        .await;
    assert_eq!(small["credits_balance"], "7.60");
    let stored: String =
        h.db.connect()
            .await
            .query_one(
                "SELECT amount_usd::text FROM ledger_entries WHERE idempotency_key = 'tiny'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(stored, "0.100000000");

    for (body, param) in [
        (json!({"amount_usd": 0}), Some("amount_usd")),
        (json!({"amount_usd": "0.0000000001"}), Some("amount_usd")),
        (json!({"amount_usd": "lots"}), None),
        (json!({"amount_usd": null}), None),
        (json!({}), None),
        (
            json!({"amount_usd": "1", "idempotency_key": ""}),
            Some("idempotency_key"),
        ),
        (
            json!({"amount_usd": "1", "idempotency_key": "k".repeat(201)}),
            Some("idempotency_key"),
        ),
        (json!({"amount_usd": "1", "currency": "EUR"}), None),
    ] {
        let (status, reply) = h
            .admin("POST", "/admin/users/alice/credits", Some(body))
            .await;
        assert_invalid(status, &reply, param);
    }
    let (status, body) = h
        .admin(
            "POST",
            "/admin/users/nobody/credits",
            Some(json!({"amount_usd": "1"})),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    assert_eq!(h.audit_rows("credits.topup").await.len(), 2);
    let adjustments = h.audit_rows("credits.adjustment").await;
    assert_eq!(adjustments.len(), 1);
    assert_eq!(adjustments[0]["entity_id"], "alice");
    assert_eq!(adjustments[0]["before"]["credits_balance"], "10.00");
    assert_eq!(adjustments[0]["after"]["credits_balance"], "7.50");

    // The ledger, newest first, paginated; filters.
    let (status, ledger) = h
        .admin("GET", "/admin/users/alice/ledger?limit=2", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{ledger}");
    assert_eq!(ledger["total"], 3);
    assert_eq!(ledger["has_more"], true);
    assert_eq!(ledger["data"][0]["idempotency_key"], "tiny");
    assert_eq!(ledger["data"][1]["kind"], "adjustment");
    let (_, rest) = h
        .admin("GET", "/admin/users/alice/ledger?limit=2&offset=2", None)
        .await;
    assert_eq!(rest["data"][0]["idempotency_key"], "order-1");
    let (_, topups) = h
        .admin("GET", "/admin/users/alice/ledger?kind=topup", None)
        .await;
    assert_eq!(topups["total"], 2);
    let (status, body) = h
        .admin("GET", "/admin/users/alice/ledger?kind=gift", None)
        .await;
    assert_invalid(status, &body, Some("kind"));
    let (status, body) = h.admin("GET", "/admin/users/nobody/ledger", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    // Reading and listing users, with their money.
    let (_, alice) = h.admin("GET", "/admin/users/alice", None).await;
    assert_eq!(alice["credits_balance"], "7.60");
    let (status, body) = h.admin("GET", "/admin/users/nobody", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (_, list) = h.admin("GET", "/admin/users?tier=starter", None).await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["data"][0]["id"], "alice");
    let (_, list) = h.admin("GET", "/admin/users?limit=1", None).await;
    // The bootstrap admin account, alice and bob.
    assert_eq!(list["total"], 3);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (status, body) = h.admin("GET", "/admin/users?status=gone", None).await;
    assert_invalid(status, &body, None);

    // PATCH: partial, null removes the cap.
    let (status, patched) = h
        .admin(
            "PATCH",
            "/admin/users/alice",
            Some(json!({"tier": "professional", "monthly_cap_usd": null, "default_power_level": "eco"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["tier"], "professional");
    assert_eq!(patched["monthly_cap_usd"], Value::Null);
    assert_eq!(patched["default_power_level"], "eco");
    assert_eq!(patched["status"], "active");
    assert_eq!(patched["credits_balance"], "7.60");
    for body in [
        json!({"tier": null}),
        json!({"status": "deleted"}),
        json!({"credits_balance": "100"}),
        json!({"monthly_cap_usd": "-5"}),
    ] {
        let (status, reply) = h.admin("PATCH", "/admin/users/alice", Some(body)).await;
        assert_invalid(status, &reply, None);
    }
    let (status, body) = h
        .admin(
            "PATCH",
            "/admin/users/nobody",
            Some(json!({"tier": "free"})),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let audit = h.audit_rows("user.update").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["before"]["tier"], "starter");
    assert_eq!(audit[0]["after"]["tier"], "professional");
}

#[tokio::test]
async fn suspending_a_user_refuses_their_keys_at_once() {
    let h = Harness::start().await;
    let key = h.account_with_key("carol", "starter", "user").await;
    // Warm the key cache: a user key on an admin route is a 403.
    let (status, _) = h.call("GET", "/admin/providers", Some(&key), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = h
        .admin(
            "PATCH",
            "/admin/users/carol",
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = h.call("GET", "/admin/providers", Some(&key), None).await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("suspended")
    );
}

// ---------------------------------------------------------------- gateway keys

#[tokio::test]
async fn gateway_keys_are_issued_once_listed_and_revoked() {
    let h = Harness::start().await;
    h.admin(
        "POST",
        "/admin/users",
        Some(json!({"id": "dave", "tier": "starter"})),
    )
    .await;
    let (status, issued) = h
        .admin(
            "POST",
            "/admin/users/dave/api-keys",
            Some(json!({"name": "ci", "role": "user", "rpm_limit": 60})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let key = issued["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk-sb-"));
    assert!(key.starts_with(issued["key_prefix"].as_str().unwrap()));
    assert_eq!(issued["name"], "ci");
    assert_eq!(issued["role"], "user");
    assert_eq!(issued["rpm_limit"], 60);
    assert_eq!(issued["user_id"], "dave");
    assert_eq!(issued["revoked_at"], Value::Null);
    // Stored only as a hash.
    let stored: i64 =
        h.db.connect()
            .await
            .query_one(
                "SELECT count(*) FROM gateway_api_keys WHERE key_hash = sha256($1::text::bytea)",
                &[&key],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(stored, 1);
    // The audit row never holds the key.
    let audit = h.audit_rows("api_key.create").await;
    assert_eq!(audit.len(), 1);
    assert!(!audit[0].to_string().contains(&key[6..]));

    // Defaults: empty name, user role, the tier's rpm.
    let (status, second) = h
        .admin("POST", "/admin/users/dave/api-keys", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["name"], "");
    assert_eq!(second["rpm_limit"], Value::Null);
    let (status, admin_key) = h
        .admin(
            "POST",
            "/admin/users/dave/api-keys",
            Some(json!({"name": "ops", "role": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let admin_key_plain = admin_key["key"].as_str().unwrap().to_string();

    // The user key is refused on admin routes; the new admin key works.
    let (status, _) = h.call("GET", "/admin/users", Some(&key), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = h
        .call("GET", "/admin/users", Some(&admin_key_plain), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    for (body, param) in [
        (json!({"role": "root"}), None),
        (json!({"rpm_limit": 0}), Some("rpm_limit")),
        (json!({"name": "x".repeat(201)}), Some("name")),
        (json!({"key": "sk-sb-mine"}), None),
    ] {
        let (status, reply) = h
            .admin("POST", "/admin/users/dave/api-keys", Some(body))
            .await;
        assert_invalid(status, &reply, param);
    }
    let (status, body) = h
        .admin("POST", "/admin/users/nobody/api-keys", Some(json!({})))
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    // Listing never shows keys; newest first; paginated.
    let (status, list) = h
        .admin("GET", "/admin/users/dave/api-keys?limit=2", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["total"], 3);
    assert_eq!(list["has_more"], true);
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("key").is_none())
    );
    assert!(!list.to_string().contains(&key[10..]));

    // Revocation: immediate in this process, idempotent, audited.
    let id = issued["id"].as_str().unwrap();
    let (status, _) = h
        .admin("DELETE", &format!("/admin/api-keys/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = h.call("GET", "/admin/users", Some(&key), None).await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
    );
    let (status, _) = h
        .admin("DELETE", &format!("/admin/api-keys/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let audit = h.audit_rows("api_key.revoke").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["before"]["revoked_at"], Value::Null);
    assert!(audit[0]["after"]["revoked_at"].is_string());
    let (_, active) = h
        .admin(
            "GET",
            "/admin/users/dave/api-keys?include_revoked=false",
            None,
        )
        .await;
    assert_eq!(active["total"], 2);

    let (status, body) = h
        .admin(
            "DELETE",
            "/admin/api-keys/00000000-0000-4000-8000-000000000000",
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = h.admin("DELETE", "/admin/api-keys/not-a-uuid", None).await;
    assert_invalid(status, &body, Some("id"));

    // The last active admin key cannot be revoked (revoking the other one first is fine).
    let bootstrap = h.admin_key_id.to_string();
    let (status, _) = h
        .call(
            "DELETE",
            &format!("/admin/api-keys/{bootstrap}"),
            Some(&admin_key_plain),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = h
        .call(
            "DELETE",
            &format!("/admin/api-keys/{}", admin_key["id"].as_str().unwrap()),
            Some(&admin_key_plain),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
}

// ---------------------------------------------------------------- usage and audit

#[allow(clippy::too_many_arguments)]
async fn insert_usage(
    h: &Harness,
    user: &str,
    request_id: &str,
    provider: &str,
    model: &str,
    days_ago: i32,
    latency_ms: i32,
    status_code: Option<i32>,
    cost: &str,
) {
    h.db.connect()
        .await
        .execute(
            "INSERT INTO llm_usage_logs (user_id, request_id, provider_slug, model_name, prompt_tokens,
                 completion_tokens, total_tokens, cost_total_usd, charged_usd, latency_ms, status_code,
                 request_ip, created_at)
             VALUES ($1, $2, $3, $4, 100, 20, 120, $5::text::numeric, $5::text::numeric, $6, $7, '10.1.2.3',
                     (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '12 hours'
                      - ($8 || ' days')::interval) AT TIME ZONE 'UTC')",
            &[&user, &request_id, &provider, &model, &cost, &latency_ms, &status_code, &days_ago.to_string()],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn usage_rows_and_summaries() {
    let h = Harness::start().await;
    insert_usage(
        &h,
        "alice",
        "r1",
        "openai",
        "gpt-4o",
        0,
        100,
        Some(200),
        "0.001",
    )
    .await;
    insert_usage(
        &h,
        "alice",
        "r2",
        "openai",
        "gpt-4o",
        0,
        300,
        Some(500),
        "0",
    )
    .await;
    insert_usage(
        &h,
        "alice",
        "r2",
        "anthropic",
        "claude",
        0,
        200,
        Some(200),
        "0.002",
    )
    .await;
    insert_usage(
        &h,
        "bob",
        "r3",
        "anthropic",
        "claude",
        1,
        400,
        Some(200),
        "0.0005",
    )
    .await;
    insert_usage(&h, "bob", "r4", "anthropic", "claude", 2, 1000, None, "0").await;

    let (status, all) = h.admin("GET", "/admin/usage", None).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["total"], 5);
    let first = &all["data"][0];
    assert_eq!(first["request_ip"], "10.1.2.3");
    assert!(first["cost_total_usd"].is_string());
    // Newest first.
    let times: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["created_at"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted);

    let (_, alice) = h
        .admin("GET", "/admin/usage?user=alice&limit=2", None)
        .await;
    assert_eq!(alice["total"], 3);
    assert_eq!(alice["data"].as_array().unwrap().len(), 2);
    assert_eq!(alice["has_more"], true);
    let (_, claude) = h
        .admin("GET", "/admin/usage?provider=anthropic&model=claude", None)
        .await;
    assert_eq!(claude["total"], 3);
    let (_, one) = h.admin("GET", "/admin/usage?request_id=r2", None).await;
    assert_eq!(one["total"], 2);
    let from = (chrono::Utc::now() - chrono::Duration::hours(36))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let (status, recent) = h
        .admin("GET", &format!("/admin/usage?from={from}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{recent}");
    assert_eq!(recent["total"], 4);
    let (_, old) = h
        .admin("GET", &format!("/admin/usage?to={from}"), None)
        .await;
    assert_eq!(old["total"], 1);

    let (status, by_user) = h
        .admin("GET", "/admin/usage/summary?group_by=user", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{by_user}");
    assert_eq!(by_user["group_by"], "user");
    assert_eq!(by_user["total"], 2);
    let a = &by_user["data"][0];
    assert_eq!(a["key"], "alice");
    assert_eq!(a["requests"], 2);
    assert_eq!(a["attempts"], 3);
    assert_eq!(a["errors"], 1);
    assert_eq!(a["error_rate"], 0.3333);
    assert_eq!(a["prompt_tokens"], 300);
    assert_eq!(a["total_tokens"], 360);
    assert_eq!(a["cost_usd"], "0.003");
    assert_eq!(a["p50_latency_ms"], 200);
    assert_eq!(a["p95_latency_ms"], 300);
    let b = &by_user["data"][1];
    assert_eq!(b["key"], "bob");
    assert_eq!(b["error_rate"], 0.5);
    assert_eq!(b["cost_usd"], "0.0005");

    let (_, by_provider) = h
        .admin("GET", "/admin/usage/summary?group_by=provider", None)
        .await;
    let keys: Vec<&str> = by_provider["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["anthropic", "openai"]);
    assert_eq!(by_provider["data"][0]["attempts"], 3);
    let (_, by_model) = h
        .admin("GET", "/admin/usage/summary?group_by=model&user=bob", None)
        .await;
    assert_eq!(by_model["total"], 1);
    assert_eq!(by_model["data"][0]["key"], "claude");
    let (_, by_day) = h
        .admin("GET", "/admin/usage/summary?group_by=day&limit=2", None)
        .await;
    assert_eq!(by_day["total"], 3);
    assert_eq!(by_day["has_more"], true);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let (_, last_day) = h
        .admin("GET", "/admin/usage/summary?group_by=day&offset=2", None)
        .await;
    assert_eq!(last_day["data"][0]["key"], today);
    assert_eq!(last_day["data"][0]["attempts"], 3);
    let (_, default) = h.admin("GET", "/admin/usage/summary", None).await;
    assert_eq!(default["group_by"], "day");

    for bad in [
        "/admin/usage/summary?group_by=week",
        "/admin/usage?from=yesterday",
        "/admin/usage?limit=0",
        "/admin/usage?users=alice",
        "/admin/usage?from=2025-02-01T00:00:00Z&to=2025-01-01T00:00:00Z",
    ] {
        let (status, body) = h.admin("GET", bad, None).await;
        assert_invalid(status, &body, None);
    }
}

#[tokio::test]
async fn the_audit_log_lists_every_admin_write_with_filters() {
    let h = Harness::start().await;
    let request = http::Request::builder()
        .method("POST")
        .uri("/admin/users")
        .header("authorization", format!("Bearer {}", h.admin_key))
        .header("content-type", "application/json")
        .header("x-request-id", "req-audit-1")
        .body(axum::body::Body::from(json!({"id": "erin"}).to_string()))
        .unwrap();
    let (status, _) = send(h.app(), request).await;
    assert_eq!(status, StatusCode::CREATED);
    h.admin(
        "POST",
        "/admin/users/erin/credits",
        Some(json!({"amount_usd": "5"})),
    )
    .await;
    h.admin(
        "POST",
        "/admin/users/erin/api-keys",
        Some(json!({"name": "k"})),
    )
    .await;
    create_provider(&h, "acme").await;
    // Failed writes and reads leave no row.
    h.admin("POST", "/admin/users", Some(json!({"id": "erin"})))
        .await;
    h.admin("GET", "/admin/users", None).await;

    let (status, log) = h.admin("GET", "/admin/audit-log", None).await;
    assert_eq!(status, StatusCode::OK, "{log}");
    assert_eq!(log["total"], 4);
    let actions: Vec<&str> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "provider.create",
            "api_key.create",
            "credits.topup",
            "user.create"
        ]
    );
    let created = &log["data"][3];
    assert_eq!(created["request_id"], "req-audit-1");
    assert_eq!(created["actor"], "admin");
    assert_eq!(created["actor_key_id"], h.admin_key_id.to_string());
    assert_eq!(created["entity_type"], "user");
    assert_eq!(created["entity_id"], "erin");
    assert_eq!(created["after"]["tier"], "free");
    assert!(created["created_at"].is_string());

    let (_, users) = h
        .admin("GET", "/admin/audit-log?entity_type=user", None)
        .await;
    assert_eq!(users["total"], 2);
    let (_, erin) = h
        .admin(
            "GET",
            "/admin/audit-log?entity_type=user&entity_id=erin&action=credits.topup",
            None,
        )
        .await;
    assert_eq!(erin["total"], 1);
    let (_, page) = h
        .admin("GET", "/admin/audit-log?limit=1&offset=1", None)
        .await;
    assert_eq!(page["data"][0]["action"], "api_key.create");
    assert_eq!(page["has_more"], true);
    let (_, by_key) = h
        .admin(
            "GET",
            &format!("/admin/audit-log?actor_key_id={}", h.admin_key_id),
            None,
        )
        .await;
    assert_eq!(by_key["total"], 4);
    for bad in ["actor_key_id=abc", "from=never", "limit=-1", "entity=user"] {
        let (status, body) = h
            .admin("GET", &format!("/admin/audit-log?{bad}"), None)
            .await;
        assert_invalid(status, &body, None);
    }
}

// ---------------------------------------------------------------- OpenAPI

fn documented_methods(doc: &Value, path: &str) -> Vec<String> {
    doc["paths"][path]
        .as_object()
        .map(|item| {
            item.keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(|k| k.to_uppercase())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn openapi_documents_every_mounted_admin_route() {
    let h = Harness::start().await;
    let (status, doc) = h.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["components"]["securitySchemes"]["admin_key"].is_object());

    // Every admin route of the contract is documented, with its method...
    for (method, path) in ADMIN_ROUTES {
        assert!(
            documented_methods(&doc, path).contains(&method.to_string()),
            "{method} {path} is not in the OpenAPI document"
        );
    }
    // ...and everything documented is mounted, and nothing else is mounted on those paths.
    let paths: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(paths.len(), 20, "{paths:?}");
    for path in &paths {
        let documented = documented_methods(&doc, path);
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let (status, body) = h
                .admin(
                    method,
                    &sample_path(path),
                    (method == "POST" || method == "PATCH").then(|| json!({})),
                )
                .await;
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
                || (status == StatusCode::NOT_FOUND && message.starts_with("no route"));
            assert_eq!(
                !unrouted,
                documented.contains(&method.to_string()),
                "{method} {path}: {status} {body}"
            );
        }
        for method in &documented {
            let operation = &doc["paths"][path][method.to_lowercase()];
            assert!(
                operation["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .any(|s| s.starts_with('2') || s == "501"),
                "{method} {path}"
            );
            for status in ["400", "401", "403"] {
                assert!(
                    operation["responses"][status].is_object(),
                    "{method} {path} lacks {status}"
                );
            }
            assert!(operation["security"].is_array(), "{method} {path}");
            if method == "PATCH" || (method == "POST" && operation["requestBody"].is_object()) {
                assert!(
                    operation["requestBody"]["content"]["application/json"]["schema"].is_object(),
                    "{method} {path}"
                );
            }
        }
    }
    // Request and response schemas are generated from the code.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "NewProvider",
        "ProviderPatch",
        "ProviderView",
        "NewModel",
        "ModelPatch",
        "ModelView",
        "NewRule",
        "RulePatch",
        "RuleView",
        "NewUser",
        "UserPatch",
        "UserView",
        "CreditRequest",
        "CreditResult",
        "LedgerEntryView",
        "NewApiKey",
        "IssuedApiKey",
        "ApiKeyView",
        "UsageRowView",
        "UsageSummary",
        "AuditEntryView",
        "ProbeResult",
        "ProviderHealth",
        "ErrorBody",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    assert_eq!(
        schemas["NewProvider"]["additionalProperties"], false,
        "unknown fields are refused"
    );
    let api_formats = &schemas["ProviderView"]["properties"]["api_format"]["enum"];
    assert_eq!(
        api_formats,
        &json!(["openai", "anthropic", "gemini", "bedrock"])
    );
    for schema in ["ProviderView", "NewProvider", "ProviderPatch"] {
        assert!(
            schemas[schema]["properties"]["supports_responses_api"].is_object(),
            "{schema} documents supports_responses_api"
        );
    }
    for required in [
        "provider_id",
        "model_id",
        "context_window",
        "cost_per_1m_input_tokens",
    ] {
        assert!(
            schemas["NewModel"]["required"]
                .as_array()
                .unwrap()
                .contains(&json!(required))
        );
    }

    // `switchboard serve` answers one merged document with the same admin routes.
    let (status, merged) = call(h.serve_app(), "GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for path in &paths {
        assert_eq!(merged["paths"][path], doc["paths"][path], "{path}");
    }
    assert!(merged["components"]["schemas"]["ProviderView"].is_object());
    assert_eq!(merged["info"]["title"], "Switchboard");
    assert_eq!(
        serde_json::to_value(switchboard_admin::openapi()).unwrap()["paths"],
        doc["paths"]
    );
}
