//! The official `openai` Python SDK against `switchboard serve`, unchanged but for its
//! base URL: completion, stream with usage, tools, typed errors. The SDK is installed in
//! `.venv` by the test script; the upstream is the in-process fake provider.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_tests::fake_upstream::{FakeUpstream, Reply};
use switchboard_tests::moto::workspace_root;
use switchboard_tests::test_db::TestDb;

#[tokio::test]
async fn the_official_openai_sdk_works_unchanged() {
    let python = workspace_root().join(".venv/bin/python");
    let has_sdk = std::process::Command::new(&python)
        .args(["-c", "import openai"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !has_sdk {
        assert!(
            std::env::var_os("SWITCHBOARD_REQUIRE_SDK").is_none(),
            "the openai SDK is missing from .venv (./scripts/test installs it)"
        );
        eprintln!("skipped: no openai SDK in .venv (run ./scripts/test)");
        return;
    }

    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    let client = db.connect().await;
    client
        .execute(
            "UPDATE llm_providers SET base_url = $1 WHERE provider_slug = 'openai'",
            &[&upstream.openai_base_url()],
        )
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO accounts (user_id, tier) VALUES ('sdk-user', 'starter')")
        .await
        .unwrap();
    let client_pool = db.pool().get().await.unwrap();
    switchboard_core::ledger::credit(
        &**client_pool,
        "sdk-user",
        rust_decimal::Decimal::from(5),
        switchboard_core::ledger::CreditKind::TopUp,
        "sdk-topup",
        None,
        None,
    )
    .await
    .unwrap();
    let key = switchboard_core::auth::generate_api_key();
    client
        .execute(
            "INSERT INTO gateway_api_keys (id, user_id, key_hash, key_prefix) VALUES ($1, 'sdk-user', $2, $3)",
            &[&uuid::Uuid::new_v4(), &key.hash.as_slice(), &key.display_prefix],
        )
        .await
        .unwrap();

    // Replies in the order the script asks: completion, stream, tool call.
    upstream.push(Reply::text("Hello!"));
    upstream.push(Reply::text("1 2 3 4 5").with_usage(20, 9, 0));
    upstream.push(Reply::tool_call("get_weather", json!({"city": "Paris"})));

    let data_dir = std::env::temp_dir().join(format!("sb-sdk-{}", std::process::id()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("serve")
        .env("DATABASE_URL", db.url())
        .env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("SWITCHBOARD_DATA_DIR", &data_dir)
        .env("SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS", "1")
        .env(
            "SWITCHBOARD_PROVIDER_KEY_OPENAI",
            "sk-test-openai-system-key-0123456789",
        )
        .env_remove("SWITCHBOARD_KMS_KEY_ID")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let script = workspace_root().join("tests/sdk/openai_sdk_check.py");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(format!("{base}/v1"))
        .arg(key.plaintext.expose())
        .output()
        .await
        .unwrap();
    let _ = serve.kill().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    assert!(
        output.status.success(),
        "openai SDK check failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let report = switchboard_core::ledger::check_invariants(&**client_pool, "sdk-user")
        .await
        .unwrap();
    assert!(report.holds() && report.active_holds == 0, "{report:?}");
    assert_eq!(
        upstream.request_count(),
        3,
        "three upstream calls: the unknown model never left the gateway"
    );
}
