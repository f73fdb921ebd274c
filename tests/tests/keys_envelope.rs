//! BYOK envelope encryption against KMS (moto) and the local master key: ciphertexts bound
//! to their row, wrong or disabled KMS keys failing cleanly, the data-key cache sparing
//! KMS calls, and `rewrap-keys` leaving every key usable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod keys_common;

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use keys_common::*;
use serde_json::json;
use switchboard_core::keys::byok::byok_key_for_use;
use switchboard_core::keys::envelope::WrappedDataKey;
use switchboard_core::keys::kms::KmsCipher;
use switchboard_core::keys::local::LocalCipher;
use switchboard_core::keys::master_key::ensure_master_key_file;
use switchboard_core::keys::rewrap::rewrap_all;
use switchboard_core::keys::{
    EncryptionContext, EnvelopeCipher, EnvelopeError, KeyVault, KeysError,
};
use switchboard_tests::test_db::TestDb;

async fn store(h: &Harness, user_key: &str, slug: &str, api_key: &str) {
    let (status, body) = h
        .call(
            "PUT",
            &format!("/v1/byok/{slug}"),
            Some(user_key),
            Some(json!({"api_key": api_key})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Copies the envelope of `(from_user, from_provider)` onto `(to_user, to_provider)`.
async fn copy_envelope(db: &TestDb, from: (&str, i32), to: (&str, i32)) {
    let changed = db
        .connect()
        .await
        .execute(
            "UPDATE user_api_keys t SET encrypted_api_key = s.encrypted_api_key,
                 wrapped_data_key = s.wrapped_data_key, nonce = s.nonce, kms_key_id = s.kms_key_id,
                 alg_version = s.alg_version
             FROM user_api_keys s
             WHERE s.user_id = $1 AND s.provider_id = $2 AND t.user_id = $3 AND t.provider_id = $4",
            &[&from.0, &from.1, &to.0, &to.1],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
}

fn assert_undecryptable(result: Result<switchboard_core::keys::byok::ByokUse, KeysError>) {
    match result {
        Err(KeysError::Envelope(error)) => assert!(error.is_data_error(), "{error:?}"),
        Err(other) => panic!("expected a decryption failure, got {other:?}"),
        Ok(found) => panic!(
            "a copied ciphertext decrypted: {:?}",
            found.ready().map(|f| f.0)
        ),
    }
}

#[tokio::test]
async fn a_ciphertext_copied_to_another_row_does_not_decrypt() {
    let h = Harness::start().await;
    let alice = h.user("alice").await;
    let bob = h.user("bob").await;
    let openai = h.provider_id("openai").await;
    let groq = h.provider_id("groq").await;
    let alice_key = random_key("sk-");
    store(&h, &alice, "openai", &alice_key).await;
    store(&h, &alice, "groq", &random_key("gsk_")).await;
    store(&h, &bob, "openai", &random_key("sk-")).await;

    // Warm the cache with Alice's data key first: the copy must fail anyway.
    let client = h.db.connect().await;
    let (_, opened) = byok_key_for_use(&client, &h.state.vault, "alice", openai)
        .await
        .unwrap()
        .ready()
        .unwrap();
    assert_eq!(opened.expose(), alice_key);

    copy_envelope(&h.db, ("alice", openai), ("bob", openai)).await;
    copy_envelope(&h.db, ("alice", openai), ("alice", groq)).await;
    for vault in [&h.state.vault, &Arc::new(h.cold_vault())] {
        assert_undecryptable(byok_key_for_use(&client, vault, "bob", openai).await);
        assert_undecryptable(byok_key_for_use(&client, vault, "alice", groq).await);
    }
    // Through the API: our error shape, not a 500, and Alice's own key still works.
    for (user, slug) in [(&bob, "openai"), (&alice, "groq")] {
        let (status, body) = h
            .call(
                "POST",
                &format!("/v1/byok/{slug}/validate"),
                Some(user),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_error_shape(&body);
        assert!(!body.to_string().contains(&alice_key[3..]));
    }
    let (_, opened) = byok_key_for_use(&client, &h.cold_vault(), "alice", openai)
        .await
        .unwrap()
        .ready()
        .unwrap();
    assert_eq!(opened.expose(), alice_key);
}

#[tokio::test]
async fn a_wrong_missing_or_unreachable_kms_key_fails_cleanly() {
    let h = Harness::start().await;
    let alice = h.user("alice").await;
    let openai = h.provider_id("openai").await;
    store(&h, &alice, "openai", &random_key("sk-")).await;
    let client = h.db.connect().await;

    // The row names another (existing) KMS key than the one that wrapped it.
    let (_, other_arn) = create_kms_key(&h.kms_client).await;
    client
        .execute(
            "UPDATE user_api_keys SET kms_key_id = $1 WHERE user_id = 'alice'",
            &[&other_arn],
        )
        .await
        .unwrap();
    let result = byok_key_for_use(&client, &h.cold_vault(), "alice", openai).await;
    assert!(
        matches!(result, Err(KeysError::Envelope(_))),
        "{:?}",
        result.map(|r| r.ready().map(|k| k.0))
    );
    let (status, body) = h
        .call("POST", "/v1/byok/openai/validate", Some(&alice), None)
        .await;
    assert!(
        status == StatusCode::CONFLICT || status == StatusCode::SERVICE_UNAVAILABLE,
        "{status} {body}"
    );
    assert_error_shape(&body);

    // A key id that does not exist at all.
    client
        .execute(
            "UPDATE user_api_keys SET kms_key_id = 'arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000'
             WHERE user_id = 'alice'",
            &[],
        )
        .await
        .unwrap();
    let result = byok_key_for_use(&client, &h.cold_vault(), "alice", openai).await;
    match result {
        Err(KeysError::Envelope(EnvelopeError::KeyUnavailable { code, .. })) => {
            assert_eq!(code, "NotFoundException")
        }
        other => panic!("{:?}", other.map(|r| r.ready().map(|k| k.0))),
    }
    let (status, body) = h
        .call("POST", "/v1/byok/openai/validate", Some(&alice), None)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_error_shape(&body);

    // KMS unreachable: 503 in our shape, for reading and for storing (nothing written).
    client
        .execute(
            "UPDATE user_api_keys SET kms_key_id = $1 WHERE user_id = 'alice'",
            &[&h.kms_key_arn],
        )
        .await
        .unwrap();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = Arc::new(KmsCipher::new(
        kms_client(&format!("http://127.0.0.1:{closed_port}")),
        h.kms_key_arn.clone(),
    ));
    let result = byok_key_for_use(
        &client,
        &KeyVault::new(unreachable.clone(), Duration::from_secs(60), 10),
        "alice",
        openai,
    )
    .await;
    assert!(
        matches!(result, Err(KeysError::Envelope(EnvelopeError::Service(_)))),
        "{:?}",
        result.map(|r| r.ready().map(|k| k.0))
    );
    let fresh = state_with_cipher(&h.db, test_config(), unreachable);
    let (status, body) = call(
        switchboard_keys::app(fresh.clone()),
        "POST",
        "/v1/byok/openai/validate",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_error_shape(&body);
    // Storing needs GenerateDataKey: refused cleanly too, and nothing is written.
    let (status, body) = call(
        switchboard_keys::app(fresh),
        "PUT",
        "/v1/byok/groq",
        Some(&alice),
        Some(json!({"api_key": random_key("gsk_")})),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (_, list) = h.call("GET", "/v1/byok", Some(&alice), None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_data_key_cache_spares_kms_on_a_warm_instance() {
    let h = Harness::start().await;
    let alice = h.user("alice").await;
    let openai = h.provider_id("openai").await;
    let anthropic = h.provider_id("anthropic").await;
    store(&h, &alice, "openai", &random_key("sk-")).await;
    store(&h, &alice, "anthropic", &random_key("sk-ant-")).await;
    assert_eq!(h.kms.kms_calls(), 2, "one GenerateDataKey per stored key");

    let client = h.db.connect().await;
    let vault = h.cold_vault();
    let first = byok_key_for_use(&client, &vault, "alice", openai)
        .await
        .unwrap()
        .ready()
        .unwrap();
    assert_eq!(h.kms.kms_calls(), 3, "a cold instance decrypts once");
    for _ in 0..5 {
        let again = byok_key_for_use(&client, &vault, "alice", openai)
            .await
            .unwrap()
            .ready()
            .unwrap();
        assert_eq!(again.1, first.1);
    }
    assert_eq!(h.kms.kms_calls(), 3, "a warm instance makes no KMS call");
    byok_key_for_use(&client, &vault, "alice", anthropic)
        .await
        .unwrap()
        .ready()
        .unwrap();
    assert_eq!(h.kms.kms_calls(), 4, "each data key is cached on its own");

    // Through the API: the state's vault warms on the first validate.
    h.call("POST", "/v1/byok/openai/validate", Some(&alice), None)
        .await;
    let warm = h.kms.kms_calls();
    h.call("POST", "/v1/byok/openai/validate", Some(&alice), None)
        .await;
    h.call("POST", "/v1/byok/openai/validate", Some(&alice), None)
        .await;
    assert_eq!(h.kms.kms_calls(), warm);

    // Without a cache every use is a KMS call (the counter really counts).
    let uncached = KeyVault::new(h.kms.clone(), Duration::ZERO, 0);
    byok_key_for_use(&client, &uncached, "alice", openai)
        .await
        .unwrap();
    byok_key_for_use(&client, &uncached, "alice", openai)
        .await
        .unwrap();
    assert_eq!(h.kms.kms_calls(), warm + 2);
    // An expired entry is fetched again.
    let short = KeyVault::new(h.kms.clone(), Duration::from_millis(50), 10);
    byok_key_for_use(&client, &short, "alice", openai)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    byok_key_for_use(&client, &short, "alice", openai)
        .await
        .unwrap();
    assert_eq!(h.kms.kms_calls(), warm + 4);
}

type EnvelopeRow = (i32, String, Vec<u8>, Vec<u8>, Vec<u8>);

async fn snapshot(client: &tokio_postgres::Client) -> Vec<EnvelopeRow> {
    client
        .query(
            "SELECT id, kms_key_id, wrapped_data_key, encrypted_api_key, nonce
             FROM user_api_keys ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

#[tokio::test]
async fn rewrap_moves_every_data_key_and_leaves_every_key_usable() {
    let h = Harness::start().await;
    let alice = h.user("alice").await;
    let bob = h.user("bob").await;
    let mut stored = vec![
        ("alice", "openai", random_key("sk-")),
        ("alice", "groq", random_key("gsk_")),
        ("bob", "openai", random_key("sk-")),
    ];
    for (user, slug, key) in &stored {
        let user_key = if *user == "alice" { &alice } else { &bob };
        store(&h, user_key, slug, key).await;
    }
    // One row sealed with a local master key (a development database moving to KMS).
    let local = Arc::new(LocalCipher::new([5; 32]));
    let local_state = state_with_cipher(&h.db, test_config(), local.clone());
    let local_key = random_key("fw_");
    let (status, _) = call(
        switchboard_keys::app(local_state),
        "PUT",
        "/v1/byok/fireworks",
        Some(&bob),
        Some(json!({"api_key": local_key})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    stored.push(("bob", "fireworks", local_key));

    let client = h.db.connect().await;
    let before = snapshot(&client).await;
    assert_eq!(before.len(), 4);

    let (_, new_arn) = create_kms_key(&h.kms_client).await;
    let report = rewrap_all(&client, &h.kms, Some(&local), &new_arn)
        .await
        .unwrap();
    assert_eq!(report.rewrapped, 4, "{report:?}");
    assert_eq!(report.failed, 0);

    let after = snapshot(&client).await;
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old.0, new.0);
        assert_eq!(new.1, new_arn);
        assert_ne!(old.2, new.2, "the data key is wrapped anew");
        assert_eq!(old.3, new.3, "the stored API key is untouched");
        assert_eq!(old.4, new.4);
    }
    // The new wrapping belongs to the new key: under the old key id it does not open.
    let context = EncryptionContext::new("alice", h.provider_id("openai").await);
    let alice_openai = &after[0];
    let under_old = WrappedDataKey {
        key_id: h.kms_key_arn.clone(),
        blob: alice_openai.2.clone(),
    };
    assert!(h.kms.decrypt_data_key(&under_old, &context).await.is_err());
    for (user, slug, key) in &stored {
        let provider = h.provider_id(slug).await;
        let (_, opened) = byok_key_for_use(&client, &h.cold_vault(), user, provider)
            .await
            .unwrap()
            .ready()
            .unwrap();
        assert_eq!(opened.expose(), key.as_str(), "{user}/{slug}");
    }
    // Through the API too (a new instance).
    let fresh = state_with_cipher(&h.db, test_config(), h.kms.clone());
    let (status, body) = call(
        switchboard_keys::app(fresh),
        "POST",
        "/v1/byok/fireworks/validate",
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["is_validated"], true);

    // A second run has nothing to do.
    let again = rewrap_all(&client, &h.kms, None, &new_arn).await.unwrap();
    assert_eq!(again.already_current, 4);
    assert_eq!(again.rewrapped, 0);
    let audit: i64 = client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'byok.rewrap' AND actor = 'system:rewrap-keys'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audit, 2);

    // A local row without the local key counts as failed, and is left as it was.
    let local_key2 = random_key("sk-");
    let local_state = state_with_cipher(&h.db, test_config(), local.clone());
    call(
        switchboard_keys::app(local_state),
        "PUT",
        "/v1/byok/openai",
        Some(&alice),
        Some(json!({"api_key": local_key2})),
    )
    .await;
    let report = rewrap_all(&client, &h.kms, None, &new_arn).await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    let openai = h.provider_id("openai").await;
    let local_vault = KeyVault::new(local.clone(), Duration::from_secs(60), 10);
    let (_, opened) = byok_key_for_use(&client, &local_vault, "alice", openai)
        .await
        .unwrap()
        .ready()
        .unwrap();
    assert_eq!(opened.expose(), local_key2);
}

#[tokio::test]
async fn the_local_master_key_cipher_round_trips_through_the_api() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!(
        "sb-keys-local-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    let path = dir.join("master.key");
    let (_, master) = ensure_master_key_file(&path).unwrap();
    let cipher = Arc::new(LocalCipher::new(master));
    let state = state_with_cipher(&db, test_config(), cipher.clone());
    let alice = new_user(&db, "alice").await;
    let key = random_key("sk-ant-");
    let (status, body) = call(
        switchboard_keys::app(state.clone()),
        "PUT",
        "/v1/byok/anthropic",
        Some(&alice),
        Some(json!({"api_key": key})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let client = db.connect().await;
    let kms_key_id: String = client
        .query_one("SELECT kms_key_id FROM user_api_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kms_key_id, cipher.key_id());
    assert!(kms_key_id.starts_with("local:"));
    let anthropic = provider_id(&db, "anthropic").await;
    // The same key file, read again by a new process, opens it.
    let (_, reread) = ensure_master_key_file(&path).unwrap();
    let vault = KeyVault::new(
        Arc::new(LocalCipher::new(reread)),
        Duration::from_secs(60),
        10,
    );
    let (_, opened) = byok_key_for_use(&client, &vault, "alice", anthropic)
        .await
        .unwrap()
        .ready()
        .unwrap();
    assert_eq!(opened.expose(), key);
    // Another master key cannot.
    let other = KeyVault::new(
        Arc::new(LocalCipher::new([1; 32])),
        Duration::from_secs(60),
        10,
    );
    assert!(
        byok_key_for_use(&client, &other, "alice", anthropic)
            .await
            .is_err()
    );
    assert_database_never_holds(&db, &key).await;
    let _ = std::fs::remove_dir_all(dir);
}
