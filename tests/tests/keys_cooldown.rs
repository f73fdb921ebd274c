//! A user's own keys (BYOK) under change and under rate limits: a key stored, deactivated
//! or deleted is used (or not) from the very next request in the same process, without
//! waiting for the key cache to expire; a key the provider rate limits cools down by
//! itself, visibly in the masked view, never shortened, scoped to its owner, and cleared
//! when the user stores a new key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_core::keys::byok::{self, ByokUse};
use switchboard_core::secret::Secret;
use switchboard_tests::fake_upstream::{Reply, Step};
use switchboard_tests::gateway::{Gateway, system_key_for};

const USERS_KEY: &str = "sk-proj-users-own-key-0123456789abcdef";

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 50})
}

async fn byok_call(gw: &Gateway, key: &str, method: &str, body: Option<Value>) -> (u16, Value) {
    let request = http::Request::builder()
        .method(method)
        .uri("/v1/byok/openai")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        ))
        .unwrap();
    let response = gw.send(request).await;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The `authorization` header the provider received on the last call.
fn last_upstream_key(gw: &Gateway) -> String {
    gw.upstream
        .last_request()
        .unwrap()
        .header("authorization")
        .unwrap()
        .to_string()
}

async fn chat_ok(gw: &Gateway, key: &str) -> Value {
    let (status, _, body) = gw.chat(key, &hello("openai/gpt-4o"), &[]).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn key_id(gw: &Gateway, user: &str) -> i32 {
    gw.db
        .connect()
        .await
        .query_one("SELECT id FROM user_api_keys WHERE user_id = $1", &[&user])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn byok_changes_show_on_the_next_request_in_the_same_process() {
    let gw = Gateway::start().await;
    gw.upstream
        .set_default(Reply::text("hi").with_usage(10, 5, 0));
    let key = gw.user("changer", "starter", "5").await;
    let platform = format!("Bearer {}", system_key_for("openai"));
    let own = format!("Bearer {USERS_KEY}");

    // The key lookup (with the user's BYOK providers) is now cached in this process.
    assert_eq!(chat_ok(&gw, &key).await["_metadata"]["byok"], false);
    assert_eq!(last_upstream_key(&gw), platform);

    // Stored: the very next request uses it, with no wait for the cache's TTL.
    let (status, body) = byok_call(&gw, &key, "PUT", Some(json!({"api_key": USERS_KEY}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(chat_ok(&gw, &key).await["_metadata"]["byok"], true);
    assert_eq!(last_upstream_key(&gw), own);

    // Deactivated: back to the platform key at once.
    let (status, body) = byok_call(&gw, &key, "PATCH", Some(json!({"is_active": false}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["is_active"], false);
    assert_eq!(chat_ok(&gw, &key).await["_metadata"]["byok"], false);
    assert_eq!(last_upstream_key(&gw), platform);

    // Reactivated, then deleted.
    let (status, _) = byok_call(&gw, &key, "PATCH", Some(json!({"is_active": true}))).await;
    assert_eq!(status, 200);
    assert_eq!(chat_ok(&gw, &key).await["_metadata"]["byok"], true);
    assert_eq!(last_upstream_key(&gw), own);
    let (status, _) = byok_call(&gw, &key, "DELETE", None).await;
    assert_eq!(status, 204);
    assert_eq!(chat_ok(&gw, &key).await["_metadata"]["byok"], false);
    assert_eq!(last_upstream_key(&gw), platform);
    gw.assert_ledger_consistent("changer").await;
}

#[tokio::test]
async fn a_rate_limited_key_shows_its_cooldown_and_a_new_key_clears_it() {
    let gw = Gateway::start().await;
    let key = gw.user("limited", "starter", "5").await;
    let (status, body) = byok_call(&gw, &key, "PUT", Some(json!({"api_key": USERS_KEY}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cooldown_until"], Value::Null);

    // Pinned to OpenAI, where the user's key is the only credential: every candidate
    // failed (api.md: 502 naming the upstream's 429), and the key starts cooling down.
    gw.upstream.push(Step::rate_limited("30"));
    let (status, _, body) = gw.chat(&key, &hello("openai/gpt-4o"), &[]).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("429"));

    let (status, view) = byok_call(&gw, &key, "GET", None).await;
    assert_eq!(status, 200);
    let until: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(view["cooldown_until"].clone()).unwrap();
    let left = until - chrono::Utc::now();
    assert!(
        (20..=31).contains(&left.num_seconds()),
        "cooling for about 30 s: {left:?}"
    );

    // While it cools down the key is not tried: our own 429 with the time left, and no
    // call reaches the provider.
    let before = gw.upstream.request_count();
    let (status, headers, body) = gw.chat(&key, &hello("openai/gpt-4o"), &[]).await;
    assert_eq!(status, 429, "{body}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((20..=31).contains(&retry_after), "{retry_after}");
    assert_eq!(gw.upstream.request_count(), before);

    // A new key is a new key: no cooldown, used at once.
    let replacement = "sk-proj-replacement-key-0123456789abcd";
    let (status, body) = byok_call(&gw, &key, "PUT", Some(json!({"api_key": replacement}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cooldown_until"], Value::Null);
    assert_eq!(chat_ok(&gw, &key).await["_metadata"]["byok"], true);
    assert_eq!(last_upstream_key(&gw), format!("Bearer {replacement}"));
    gw.assert_ledger_consistent("limited").await;
}

#[tokio::test]
async fn a_cooldown_is_never_shortened_and_touches_only_its_owners_key() {
    let gw = Gateway::start().await;
    let alice = gw.user("alice", "starter", "5").await;
    let bob = gw.user("bob", "starter", "5").await;
    for key in [&alice, &bob] {
        let (status, _) = byok_call(&gw, key, "PUT", Some(json!({"api_key": USERS_KEY}))).await;
        assert_eq!(status, 200);
    }
    let openai: i32 = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT id FROM llm_providers WHERE provider_slug = 'openai'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let alices = key_id(&gw, "alice").await;
    let client = gw.db.connect().await;

    assert!(
        byok::cool_down_byok_key(&client, "alice", alices, Duration::from_secs(120))
            .await
            .unwrap()
    );
    // A shorter Retry-After later does not shorten it.
    assert!(
        byok::cool_down_byok_key(&client, "alice", alices, Duration::from_secs(5))
            .await
            .unwrap()
    );
    // Bob cannot cool down Alice's key by its id.
    assert!(
        !byok::cool_down_byok_key(&client, "bob", alices, Duration::from_secs(5))
            .await
            .unwrap()
    );
    match byok::byok_key_for_use(&client, &gw.state.vault, "alice", openai)
        .await
        .unwrap()
    {
        ByokUse::CoolingDown { retry_after } => {
            assert!(retry_after > Duration::from_secs(110), "{retry_after:?}")
        }
        other => panic!("expected a cooldown, got {other:?}"),
    }
    // Bob's key (same provider, same plaintext) is ready.
    let (_, opened) = byok::byok_key_for_use(&client, &gw.state.vault, "bob", openai)
        .await
        .unwrap()
        .ready()
        .expect("bob's key is usable");
    assert_eq!(opened.expose(), USERS_KEY);

    // An absurd Retry-After is capped (a day).
    assert!(
        byok::cool_down_byok_key(&client, "alice", alices, Duration::from_secs(10_000_000))
            .await
            .unwrap()
    );
    let capped: bool = client
        .query_one(
            "SELECT cooldown_until <= now() + interval '24 hours' FROM user_api_keys WHERE id = $1",
            &[&alices],
        )
        .await
        .unwrap()
        .get(0);
    assert!(capped);
}

#[test]
fn what_the_chat_path_gets_never_prints_the_key() {
    let ready = ByokUse::Ready {
        key_id: 7,
        key: Secret::new(USERS_KEY.to_string()),
    };
    let printed = format!("{ready:?}");
    assert!(printed.contains("key_id: 7"), "{printed}");
    assert!(!printed.contains("users-own-key"), "{printed}");
    assert!(!printed.contains("sk-proj"), "{printed}");
}
