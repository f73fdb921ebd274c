//! The keys function through its HTTP API, in-process, with KMS (moto) and real Postgres:
//! BYOK round trip and masked view, tenant isolation, authentication, input validation,
//! the live key check against the fake upstream, and self-service gateway keys.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod keys_common;

use http::StatusCode;
use keys_common::*;
use serde_json::{Value, json};
use switchboard_core::keys::byok;
use switchboard_tests::fake_upstream::Step;

#[tokio::test]
async fn byok_round_trip_keeps_the_plaintext_out_of_the_database_and_responses() {
    let h = Harness::start().await;
    let alice = h.user("alice").await;
    let openai = h.provider_id("openai").await;
    let first = random_key("sk-proj-");

    let (status, body) = h
        .call(
            "PUT",
            "/v1/byok/openai",
            Some(&alice),
            Some(json!({"api_key": first})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let hint = format!("sk-...{}", &first[first.len() - 4..]);
    assert_eq!(body["provider_slug"], "openai");
    assert_eq!(body["key_hint"], hint);
    assert_eq!(body["is_active"], true);
    assert_eq!(body["is_validated"], false);
    assert_eq!(body["validation_error"], Value::Null);
    assert_eq!(body["total_requests"], 0);
    assert_eq!(body["total_tokens"], 0);
    assert_eq!(body["total_cost_usd"], "0.00");
    for field in ["created_at", "updated_at"] {
        assert!(body[field].is_string(), "{field}: {body}");
    }
    for field in ["last_validated_at", "last_used_at"] {
        assert!(body.get(field).is_some(), "{field}: {body}");
    }
    assert!(!body.to_string().contains(&first[8..]));

    let (status, list) = h.call("GET", "/v1/byok", Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0], body);
    let (status, one) = h.call("GET", "/v1/byok/openai", Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one, body);

    // The chat path gets the plaintext back, and only while the key is active.
    let client = h.db.connect().await;
    let (key_id, used) = byok::byok_key_for_use(&client, &h.state.vault, "alice", openai)
        .await
        .unwrap()
        .ready()
        .unwrap();
    assert_eq!(used.expose(), first);
    assert_eq!(
        byok::active_byok_provider_ids(&client, "alice")
            .await
            .unwrap(),
        vec![openai]
    );
    let (status, patched) = h
        .call(
            "PATCH",
            "/v1/byok/openai",
            Some(&alice),
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["is_active"], false);
    assert!(
        byok::byok_key_for_use(&client, &h.state.vault, "alice", openai)
            .await
            .unwrap()
            .ready()
            .is_none()
    );
    assert!(
        byok::active_byok_provider_ids(&client, "alice")
            .await
            .unwrap()
            .is_empty()
    );

    // Usage counters and a refusal upstream show in the masked view.
    byok::record_byok_usage(&client, "alice", key_id, 1234, "0.0005".parse().unwrap())
        .await
        .unwrap();
    assert!(
        byok::mark_byok_key_invalid(&client, "alice", key_id, 401)
            .await
            .unwrap()
    );
    let (_, view) = h.call("GET", "/v1/byok/openai", Some(&alice), None).await;
    assert_eq!(view["total_requests"], 1);
    assert_eq!(view["total_tokens"], 1234);
    assert_eq!(view["total_cost_usd"], "0.0005");
    assert!(view["last_used_at"].is_string());
    assert_eq!(view["is_validated"], false);
    assert!(view["validation_error"].as_str().unwrap().contains("401"));

    // PUT replaces the key (one per user and provider), reactivates it, resets validation.
    let second = random_key("sk-");
    let (status, replaced) = h
        .call(
            "PUT",
            "/v1/byok/openai",
            Some(&alice),
            Some(json!({"api_key": second, "validate": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        replaced["key_hint"],
        format!("sk-...{}", &second[second.len() - 4..])
    );
    assert_eq!(replaced["is_active"], true);
    assert_eq!(replaced["validation_error"], Value::Null);
    let (_, list) = h.call("GET", "/v1/byok", Some(&alice), None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (_, used) = byok::byok_key_for_use(&client, &h.state.vault, "alice", openai)
        .await
        .unwrap()
        .ready()
        .unwrap();
    assert_eq!(used.expose(), second);

    assert_database_never_holds(&h.db, &first).await;
    assert_database_never_holds(&h.db, &second).await;
    let actions: Vec<String> = client
        .query(
            "SELECT action FROM audit_log WHERE actor = 'alice' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(actions, ["byok.create", "byok.update", "byok.replace"]);

    let (status, body) = h
        .call("DELETE", "/v1/byok/openai", Some(&alice), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = h.call("GET", "/v1/byok/openai", Some(&alice), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error_shape(&body);
    let (status, _) = h
        .call("DELETE", "/v1/byok/openai", Some(&alice), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = h.call("GET", "/v1/byok", Some(&alice), None).await;
    assert_eq!(list, json!({"data": []}));
}

#[tokio::test]
async fn another_user_can_neither_see_change_delete_nor_use_a_key() {
    let h = Harness::start().await;
    let alice = h.user("alice").await;
    let bob = h.user("bob").await;
    let openai = h.provider_id("openai").await;
    let key = random_key("sk-");
    let (status, _) = h
        .call(
            "PUT",
            "/v1/byok/openai",
            Some(&alice),
            Some(json!({"api_key": key})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, created) = h
        .call(
            "POST",
            "/v1/api-keys",
            Some(&alice),
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let alice_key_id = created["id"].as_str().unwrap().to_owned();

    let (status, list) = h.call("GET", "/v1/byok", Some(&bob), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!({"data": []}));
    for (method, path, body) in [
        ("GET", "/v1/byok/openai", None),
        (
            "PATCH",
            "/v1/byok/openai",
            Some(json!({"is_active": false})),
        ),
        ("POST", "/v1/byok/openai/validate", None),
        ("DELETE", "/v1/byok/openai", None),
        (
            "DELETE",
            &format!("/v1/api-keys/{alice_key_id}") as &str,
            None,
        ),
    ] {
        let (status, body) = h.call(method, path, Some(&bob), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert_error_shape(&body);
    }
    let (_, bob_keys) = h.call("GET", "/v1/api-keys", Some(&bob), None).await;
    assert_eq!(bob_keys["data"].as_array().unwrap().len(), 1);
    assert!(!bob_keys.to_string().contains(&alice_key_id));

    let client = h.db.connect().await;
    assert!(
        byok::byok_key_for_use(&client, &h.state.vault, "bob", openai)
            .await
            .unwrap()
            .ready()
            .is_none()
    );
    assert!(
        byok::active_byok_provider_ids(&client, "bob")
            .await
            .unwrap()
            .is_empty()
    );
    let (alice_row, _) = byok::byok_key_for_use(&client, &h.state.vault, "alice", openai)
        .await
        .unwrap()
        .ready()
        .unwrap();
    assert!(
        !byok::mark_byok_key_invalid(&client, "bob", alice_row, 401)
            .await
            .unwrap()
    );
    assert!(
        !byok::record_byok_usage(&client, "bob", alice_row, 1, "1".parse().unwrap())
            .await
            .unwrap()
    );

    // Alice's key and gateway key are untouched.
    let (status, view) = h.call("GET", "/v1/byok/openai", Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["is_active"], true);
    assert_eq!(view["validation_error"], Value::Null);
    assert_eq!(view["total_requests"], 0);
    let (_, alice_keys) = h.call("GET", "/v1/api-keys", Some(&alice), None).await;
    let revoked: Vec<&Value> = alice_keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| !k["revoked_at"].is_null())
        .collect();
    assert!(revoked.is_empty());
}

#[tokio::test]
async fn missing_unknown_and_revoked_keys_get_401() {
    let h = Harness::start().await;
    let alice = h.user("alice").await;
    let unknown = switchboard_core::auth::generate_api_key();
    for key in [
        None,
        Some("sk-sb-not-a-real-key"),
        Some(unknown.plaintext.expose()),
    ] {
        for (method, path) in [
            ("GET", "/v1/byok"),
            ("GET", "/v1/byok/openai"),
            ("PUT", "/v1/byok/openai"),
            ("GET", "/v1/api-keys"),
            ("POST", "/v1/api-keys"),
        ] {
            // Authentication comes before the body is even looked at.
            let (status, body) = h.call(method, path, key, Some(json!("garbage"))).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            assert_error_shape(&body);
            assert_eq!(body["error"]["type"], "authentication_error");
        }
    }

    // A key created and then revoked through the API stops working at once here.
    let (status, created) = h
        .call(
            "POST",
            "/v1/api-keys",
            Some(&alice),
            Some(json!({"name": "temp"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let temp = created["key"].as_str().unwrap().to_owned();
    let (status, _) = h.call("GET", "/v1/byok", Some(&temp), None).await;
    assert_eq!(status, StatusCode::OK);
    let id = created["id"].as_str().unwrap();
    let (status, _) = h
        .call("DELETE", &format!("/v1/api-keys/{id}"), Some(&temp), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = h.call("GET", "/v1/byok", Some(&temp), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
}

#[tokio::test]
async fn bad_input_is_a_400_and_writes_nothing() {
    let h = Harness::start().await;
    let alice = h.user("alice").await;
    let app = h.app();

    let raw = |body: &'static str| {
        http::Request::builder()
            .method("PUT")
            .uri("/v1/byok/openai")
            .header("authorization", format!("Bearer {alice}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap()
    };
    for body in ["{not json", "", "[1,2", "{\"api_key\": \"sk-abc"] {
        let (status, response) = send(app.clone(), raw(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {response}");
        assert_error_shape(&response);
        assert_eq!(response["error"]["type"], "invalid_request_error");
    }

    let google_ok = format!("AIza{}", "x".repeat(35));
    let bad_bodies = [
        json!({"api_key": 5}),
        json!({"api_key": null}),
        json!({}),
        json!({"api_key": ["sk-abc"]}),
        json!({"api_key": random_key("sk-"), "validate": "yes"}),
        json!({"api_key": "pk-abcdefghijklmnopqrstuvwxyz"}),
        json!({"api_key": "sk-with space-abcdefghijklmnop"}),
        json!({"api_key": "sk-tab\tabcdefghijklmnop"}),
        json!({"api_key": "sk-ünïcödé-abcdefghijklmnop"}),
        json!({"api_key": "sk-"}),
        json!({"api_key": format!("sk-{}", "a".repeat(600))}),
    ];
    for body in &bad_bodies {
        let (status, response) = h
            .call("PUT", "/v1/byok/openai", Some(&alice), Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {response}");
        assert_error_shape(&response);
        if let Some(piece) = body["api_key"].as_str().and_then(|k| k.get(3..12)) {
            assert!(
                !response.to_string().contains(piece),
                "the error echoes the key: {response}"
            );
        }
    }
    for (slug, key) in [
        ("anthropic", random_key("sk-")),
        ("google", format!("{google_ok}x")),
        ("groq", random_key("sk-")),
        ("openrouter", random_key("sk-")),
        ("fireworks", random_key("sk-")),
    ] {
        let (status, response) = h
            .call(
                "PUT",
                &format!("/v1/byok/{slug}"),
                Some(&alice),
                Some(json!({"api_key": key})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{slug}: {response}");
        assert_eq!(response["error"]["param"], "api_key");
    }
    let (_, list) = h.call("GET", "/v1/byok", Some(&alice), None).await;
    assert_eq!(list, json!({"data": []}), "nothing may be stored");

    // Unknown fields are ignored on /v1 routes.
    let (status, response) = h
        .call(
            "PUT",
            "/v1/byok/google",
            Some(&alice),
            Some(json!({"api_key": google_ok, "note": "mine", "extra": {"a": 1}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["key_hint"], "AIza...xxxx");

    // Unknown provider → 404; a provider without BYOK → 400.
    let (status, response) = h
        .call(
            "PUT",
            "/v1/byok/nope",
            Some(&alice),
            Some(json!({"api_key": random_key("sk-")})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{response}");
    assert_error_shape(&response);
    h.db.connect()
        .await
        .execute(
            "UPDATE llm_providers SET is_byok_supported = false WHERE provider_slug = 'together'",
            &[],
        )
        .await
        .unwrap();
    let (status, response) = h
        .call(
            "PUT",
            "/v1/byok/together",
            Some(&alice),
            Some(json!({"api_key": random_key("tg-")})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{response}");
    assert_error_shape(&response);

    // PATCH needs a boolean is_active.
    for body in [
        json!({}),
        json!({"is_active": "no"}),
        json!({"is_active": 1}),
    ] {
        let (status, response) = h
            .call("PATCH", "/v1/byok/google", Some(&alice), Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {response}");
    }

    // Gateway key names: a string of at most 200 characters.
    for body in [
        json!({"name": 5}),
        json!({"name": "x".repeat(201)}),
        json!({"name": "bad\nname"}),
    ] {
        let (status, response) = h
            .call("POST", "/v1/api-keys", Some(&alice), Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {response}");
        assert_error_shape(&response);
    }
    for id in ["not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        let (status, response) = h
            .call("DELETE", &format!("/v1/api-keys/{id}"), Some(&alice), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}: {response}");
        assert_error_shape(&response);
    }
}

#[tokio::test]
async fn validation_calls_the_models_endpoint_and_stores_the_result() {
    let h = Harness::start().await;
    let alice = h.user("alice").await;

    // OpenAI style: bearer; PUT with validate answers after the check.
    let key = random_key("sk-");
    let (status, view) = h
        .call(
            "PUT",
            "/v1/byok/openai",
            Some(&alice),
            Some(json!({"api_key": key, "validate": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["is_validated"], true, "{view}");
    assert_eq!(view["validation_error"], Value::Null);
    assert!(view["last_validated_at"].is_string());
    let request = h.upstream.last_request().unwrap();
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/v1/models");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {key}").as_str())
    );
    assert!(!request.query.unwrap_or_default().contains(&key[3..]));

    // 401 from the provider: invalid, with a message.
    h.upstream.push_models(Step::status(401));
    let (status, view) = h
        .call("POST", "/v1/byok/openai/validate", Some(&alice), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["is_validated"], false);
    let error = view["validation_error"].as_str().unwrap();
    assert!(error.contains("401"), "{error}");
    assert!(!error.contains(&key[3..10]));

    // Another failure: not validated, status named.
    h.upstream.push_models(Step::status(503));
    let (_, view) = h
        .call("POST", "/v1/byok/openai/validate", Some(&alice), None)
        .await;
    assert_eq!(view["is_validated"], false);
    assert!(view["validation_error"].as_str().unwrap().contains("503"));

    // And back to valid.
    let (_, view) = h
        .call("POST", "/v1/byok/openai/validate", Some(&alice), None)
        .await;
    assert_eq!(view["is_validated"], true);
    assert_eq!(view["validation_error"], Value::Null);

    // Anthropic: x-api-key and anthropic-version.
    let key = random_key("sk-ant-api03-");
    let (_, view) = h
        .call(
            "PUT",
            "/v1/byok/anthropic",
            Some(&alice),
            Some(json!({"api_key": key, "validate": true})),
        )
        .await;
    assert_eq!(view["is_validated"], true, "{view}");
    let request = h.upstream.last_request().unwrap();
    assert_eq!(request.path, "/v1/models");
    assert_eq!(request.header("x-api-key"), Some(key.as_str()));
    assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(request.header("authorization"), None);

    // Gemini: x-goog-api-key, never in the URL.
    let key = format!("AIza{}", &random_key("")[..35]);
    let (_, view) = h
        .call(
            "PUT",
            "/v1/byok/google",
            Some(&alice),
            Some(json!({"api_key": key, "validate": true})),
        )
        .await;
    assert_eq!(view["is_validated"], true, "{view}");
    let request = h.upstream.last_request().unwrap();
    assert_eq!(request.path, "/v1beta/models");
    assert_eq!(request.header("x-goog-api-key"), Some(key.as_str()));
    assert!(request.query.is_none(), "{:?}", request.query);

    // Without SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS the loopback fake is refused unasked.
    let strict = keys_common::state_with_cipher(
        &h.db,
        switchboard_core::config::Config::from_lookup(|_| None).unwrap(),
        h.kms.clone(),
    );
    let before = h.upstream.request_count();
    let (status, view) = call(
        switchboard_keys::app(strict),
        "POST",
        "/v1/byok/openai/validate",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["is_validated"], false);
    assert!(
        view["validation_error"]
            .as_str()
            .unwrap()
            .contains("not allowed")
    );
    assert_eq!(h.upstream.request_count(), before);
}

#[tokio::test]
async fn users_manage_their_own_gateway_keys() {
    let h = Harness::start().await;
    let alice = h.user("alice").await;

    let (status, created) = h
        .call(
            "POST",
            "/v1/api-keys",
            Some(&alice),
            Some(json!({"name": "laptop", "role": "admin", "rpm_limit": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-sb-"));
    assert_eq!(created["name"], "laptop");
    assert_eq!(
        created["role"], "user",
        "self-service keys are always user keys"
    );
    assert_eq!(created["rpm_limit"], Value::Null);
    assert_eq!(created["prefix"], &key[..10]);
    assert!(created.get("key_hash").is_none());

    // The new key authenticates as Alice and sees both keys; never a key or hash.
    let (status, list) = h.call("GET", "/v1/api-keys", Some(&key), None).await;
    assert_eq!(status, StatusCode::OK);
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for item in data {
        for field in [
            "id",
            "name",
            "prefix",
            "role",
            "rpm_limit",
            "created_at",
            "last_used_at",
            "revoked_at",
        ] {
            assert!(item.get(field).is_some(), "{field}: {item}");
        }
        assert!(item.get("key").is_none());
        assert!(item.get("key_hash").is_none());
    }
    assert!(!list.to_string().contains(&key[10..]));

    let id = created["id"].as_str().unwrap();
    let (status, _) = h
        .call("DELETE", &format!("/v1/api-keys/{id}"), Some(&alice), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = h.call("GET", "/v1/api-keys", Some(&key), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, list) = h.call("GET", "/v1/api-keys", Some(&alice), None).await;
    let revoked = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap();
    assert!(revoked["revoked_at"].is_string());
    // Revoking twice is harmless.
    let (status, _) = h
        .call("DELETE", &format!("/v1/api-keys/{id}"), Some(&alice), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Both are audit-logged, with the key masked.
    let client = h.db.connect().await;
    let rows = client
        .query(
            "SELECT action, entity_id, actor, actor_key_id IS NOT NULL, before::text, after::text
             FROM audit_log WHERE entity_type = 'gateway_api_key' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let actions: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(actions, ["api_key.create", "api_key.revoke"]);
    for row in &rows {
        assert_eq!(row.get::<_, String>(1), id);
        assert_eq!(row.get::<_, String>(2), "alice");
        assert!(row.get::<_, bool>(3));
        for text in [
            row.get::<_, Option<String>>(4),
            row.get::<_, Option<String>>(5),
        ]
        .into_iter()
        .flatten()
        {
            assert!(!text.contains(&key[10..]), "{text}");
        }
    }
}

#[tokio::test]
async fn a_provider_that_does_not_answer_within_10_s_fails_the_check() {
    let h = Harness::start().await;
    let alice = h.user("alice").await;
    let (status, _) = h
        .call(
            "PUT",
            "/v1/byok/openai",
            Some(&alice),
            Some(json!({"api_key": random_key("sk-")})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    h.upstream.push_models(Step::delay(
        std::time::Duration::from_secs(15),
        Step::status(200),
    ));
    let started = std::time::Instant::now();
    let (status, view) = h
        .call("POST", "/v1/byok/openai/validate", Some(&alice), None)
        .await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["is_validated"], false);
    assert!(
        view["validation_error"]
            .as_str()
            .unwrap()
            .contains("within 10 s"),
        "{view}"
    );
    assert!(elapsed >= std::time::Duration::from_secs(10), "{elapsed:?}");
    assert!(elapsed < std::time::Duration::from_secs(14), "{elapsed:?}");
}

#[tokio::test]
async fn the_keys_function_describes_every_route_in_openapi() {
    let db = switchboard_tests::test_db::TestDb::new().await;
    let state = state_with_cipher(
        &db,
        test_config(),
        std::sync::Arc::new(switchboard_core::keys::local::LocalCipher::new([3; 32])),
    );
    let (status, doc) = call(
        switchboard_keys::app(state),
        "GET",
        "/openapi.json",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for (path, methods) in [
        ("/v1/byok", &["get"][..]),
        (
            "/v1/byok/{provider_slug}",
            &["get", "put", "patch", "delete"][..],
        ),
        ("/v1/byok/{provider_slug}/validate", &["post"][..]),
        ("/v1/api-keys", &["get", "post"][..]),
        ("/v1/api-keys/{id}", &["delete"][..]),
    ] {
        for method in methods {
            let operation = &doc["paths"][path][method];
            assert!(operation.is_object(), "{method} {path} is not documented");
            assert!(operation["responses"]["401"].is_object(), "{method} {path}");
            assert!(operation["security"].is_array(), "{method} {path}");
        }
    }
    let schemas = &doc["components"]["schemas"];
    for schema in [
        "MaskedByokKey",
        "PutByokRequest",
        "CreatedGatewayKey",
        "ErrorBody",
    ] {
        assert!(schemas[schema].is_object(), "{schema} missing");
    }
    assert_eq!(
        schemas["PutByokRequest"]["properties"]["api_key"]["type"],
        "string"
    );
}

#[tokio::test]
async fn a_user_reads_only_their_own_usage() {
    let gw = switchboard_tests::gateway::Gateway::start().await;
    let alice = gw.user("usage-alice", "starter", "5").await;
    let bob = gw.user("usage-bob", "starter", "5").await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    for key in [&alice, &alice, &bob] {
        assert_eq!(gw.chat(key, &body, &[]).await.0, StatusCode::OK);
    }
    gw.upstream.push(Step::status(400));
    assert_eq!(gw.chat(&alice, &body, &[]).await.0, StatusCode::BAD_REQUEST);

    let (status, rows) = gw.get(&alice, "/v1/usage").await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_eq!(rows["total"], 3, "alice's rows only: {rows}");
    assert!(
        rows["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["user_id"] == "usage-alice")
    );
    let (_, ok) = gw.get(&alice, "/v1/usage?status=ok").await;
    assert_eq!(ok["total"], 2);
    let (_, failed) = gw.get(&alice, "/v1/usage?status=error").await;
    assert_eq!(failed["total"], 1);
    let (status, summary) = gw.get(&bob, "/v1/usage/summary?group_by=model").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary["data"][0]["key"], "gpt-4o");
    assert_eq!(summary["data"][0]["requests"], 1, "bob's own: {summary}");
    // Another user's rows cannot be asked for, nor grouped by user.
    let (status, error) = gw.get(&alice, "/v1/usage?user=usage-bob").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (status, error) = gw.get(&alice, "/v1/usage/summary?group_by=user").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["param"], "group_by");
    let (status, _) = gw.get("sk-sb-nope", "/v1/usage").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
