//! Logs captured while keys are stored, validated, used and refused (TRACE level, every
//! crate) never contain a stored provider key or a gateway key. Its own test binary, so
//! the global subscriber captures only this test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod keys_common;

use http::StatusCode;
use keys_common::*;
use serde_json::json;
use switchboard_core::keys::byok;
use switchboard_tests::fake_upstream::Step;
use switchboard_tests::log_capture::Captured;

#[tokio::test]
async fn logs_never_contain_a_stored_key() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    // The only test of this binary: a global subscriber sees every thread.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let h = Harness::start().await;
    let alice = h.user("alice").await;
    let bob = h.user("bob").await;
    let openai = h.provider_id("openai").await;
    let key = random_key("sk-proj-");
    let anthropic_key = random_key("sk-ant-");

    let (status, _) = h
        .call(
            "PUT",
            "/v1/byok/openai",
            Some(&alice),
            Some(json!({"api_key": key, "validate": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    h.upstream.push_models(Step::status(401));
    h.call("POST", "/v1/byok/openai/validate", Some(&alice), None)
        .await;
    h.call(
        "PUT",
        "/v1/byok/anthropic",
        Some(&alice),
        Some(json!({"api_key": anthropic_key, "validate": true})),
    )
    .await;
    // Refused keys and failing paths log too.
    h.call(
        "PUT",
        "/v1/byok/anthropic",
        Some(&alice),
        Some(json!({"api_key": format!("pk-{}", &key[8..])})),
    )
    .await;
    let client = h.db.connect().await;
    byok::byok_key_for_use(&client, &h.cold_vault(), "alice", openai)
        .await
        .unwrap();
    // A ciphertext copied onto Bob's row fails (and logs the failure).
    h.call(
        "PUT",
        "/v1/byok/openai",
        Some(&bob),
        Some(json!({"api_key": random_key("sk-")})),
    )
    .await;
    client
        .execute(
            "UPDATE user_api_keys b SET encrypted_api_key = a.encrypted_api_key,
                 wrapped_data_key = a.wrapped_data_key, nonce = a.nonce, kms_key_id = a.kms_key_id
             FROM user_api_keys a
             WHERE a.user_id = 'alice' AND b.user_id = 'bob' AND a.provider_id = b.provider_id",
            &[],
        )
        .await
        .unwrap();
    let (status, _) = h
        .call("POST", "/v1/byok/openai/validate", Some(&bob), None)
        .await;
    assert!(status.is_client_error() || status.is_server_error());
    let (status, created) = h
        .call(
            "POST",
            "/v1/api-keys",
            Some(&alice),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let gateway_key = created["key"].as_str().unwrap().to_owned();
    h.call("GET", "/v1/byok", Some(&gateway_key), None).await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("handled"), "the subscriber captured nothing");
    assert!(logs.contains("cannot be decrypted"), "{logs}");
    for secret in [&key, &anthropic_key, &gateway_key] {
        for window in secret.as_bytes().windows(12) {
            let window = std::str::from_utf8(window).unwrap();
            assert!(
                !logs.contains(window),
                "the logs contain a piece of a key: {window}"
            );
        }
    }
    for secret in [&alice, &bob] {
        assert!(!logs.contains(&secret[10..]));
    }
}
