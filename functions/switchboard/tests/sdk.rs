//! The official Python SDKs against `switchboard serve`, unchanged but for their base URL:
//! - `openai`: completion, stream with usage, tools, typed errors, embeddings (float,
//!   base64, batch, fallback);
//! - `anthropic`: `/v1/messages` (message, streamed message assembled by the SDK's
//!   helpers, tool-use round trip, count_tokens, the models list, every error class the
//!   SDK maps) with Anthropic-, OpenAI- and Gemini-format providers behind it.
//!
//! - Claude Code itself (`claude -p`), with `ANTHROPIC_BASE_URL` and
//!   `ANTHROPIC_AUTH_TOKEN` pointing at `serve`.
//!
//! The SDKs are installed in `.venv` by the test script, Claude Code in
//! `.tools/claude-code` when npm is there; the upstream is the in-process fake provider;
//! each test checks the ledger afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use support::{Serve, python_with, user_key};
use switchboard_tests::fake_upstream::{FakeUpstream, Reply, Step};
use switchboard_tests::moto::workspace_root;
use switchboard_tests::test_db::TestDb;

async fn assert_ledger_exact(db: &TestDb, user_id: &str) {
    let client = db.pool().get().await.unwrap();
    let report = switchboard_core::ledger::check_invariants(&**client, user_id)
        .await
        .unwrap();
    assert!(report.holds() && report.active_holds == 0, "{report:?}");
}

#[tokio::test]
async fn the_official_openai_sdk_works_unchanged() {
    let Some(python) = python_with("openai") else {
        return;
    };
    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    let key = user_key(&db, "sdk-user", 5, None).await;

    // Replies in the order the script asks: completion, stream, tool call, then the
    // embeddings (default replies; the fallback's first attempt gets a 503).
    upstream.push(Reply::text("Hello!"));
    upstream.push(Reply::text("1 2 3 4 5").with_usage(20, 9, 0));
    upstream.push(Reply::tool_call("get_weather", json!({"city": "Paris"})));
    upstream.push(Reply::default());
    upstream.push(Reply::default());
    upstream.push(Step::status(503));

    let serve = Serve::start(&db, &upstream, "openai").await;
    let base = format!("{}/v1", serve.base);
    serve
        .run(&python, "openai_sdk_check.py", &[&base, &key])
        .await;

    assert_ledger_exact(&db, "sdk-user").await;
    assert_eq!(
        upstream.request_count(),
        7,
        "three chat calls and four embedding calls: the unknown and the wrong models never left the gateway"
    );
}

#[tokio::test]
async fn the_official_anthropic_sdk_works_unchanged() {
    let Some(python) = python_with("anthropic") else {
        return;
    };
    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    // A Gemini chat model, so that a Gemini-format provider serves /v1/messages too.
    db.connect()
        .await
        .batch_execute(
            "INSERT INTO llm_models (provider_id, model_name, model_id, context_window, max_tokens,
                 supports_streaming, supports_function_calling, cost_per_1m_input_tokens,
                 cost_per_1m_output_tokens)
             SELECT id, 'Gemini 2.0 Flash', 'gemini-2.0-flash', 1000000, 8192, true, true, 0.10, 0.40
             FROM llm_providers WHERE provider_slug = 'google'",
        )
        .await
        .unwrap();
    let key = user_key(&db, "claude-sdk", 5, None).await;
    let poor = user_key(&db, "claude-poor", 0, None).await;
    let limited = user_key(&db, "claude-limited", 5, Some(1)).await;

    // In the script's order.
    upstream.push(
        Reply::text("Hello from Claude.")
            .with_usage(300, 12, 40)
            .with_cache_creation(60),
    );
    upstream.push(
        Reply::text("1 2 3 4 5")
            .with_thinking("Counting from one.", "sig-sdk-1")
            .with_usage(20, 9, 0),
    );
    upstream.push(Reply::tool_call("get_weather", json!({"city": "Paris"})));
    upstream.push(Reply::text("It is 18 C and sunny in Paris."));
    upstream.push(Reply::tool_call("get_weather", json!({"city": "Rome"})));
    upstream.push(Reply::default()); // the rate-limited key's one request
    upstream.push(Step::status(500)); // the provider failing

    let serve = Serve::start(&db, &upstream, "anthropic").await;
    let base = serve.base.clone();
    serve
        .run(
            &python,
            "anthropic_sdk_check.py",
            &[&base, &key, &poor, &limited],
        )
        .await;

    for user in ["claude-sdk", "claude-poor", "claude-limited"] {
        assert_ledger_exact(&db, user).await;
    }
    let requests = upstream.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1/messages",
            "/v1/messages",
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
            "/v1/messages",
            "/v1/messages",
        ],
        "count_tokens, the models list and the refused requests never reached a provider"
    );
    // The system prompt's cache_control went to Anthropic as it came.
    assert_eq!(
        requests[0].body["system"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    // The tool result went back to the OpenAI-format provider as a tool message.
    let second_turn = &requests[3].body["messages"];
    assert!(
        second_turn
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["role"] == "tool" && m["content"] == "18 C, sunny"),
        "{second_turn}"
    );
}

/// Claude Code's binary: `CLAUDE_CODE_BIN`, else where the test script installs it.
/// `None` (the test skips) when it is missing and the test script did not require it.
fn claude_code() -> Option<PathBuf> {
    let path = std::env::var_os("CLAUDE_CODE_BIN").map_or_else(
        || workspace_root().join(".tools/claude-code/node_modules/.bin/claude"),
        PathBuf::from,
    );
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("SWITCHBOARD_REQUIRE_CLAUDE_CODE").is_none(),
        "Claude Code is missing at {} (./scripts/test installs it when npm is available)",
        path.display()
    );
    eprintln!("skipped: no Claude Code at {}", path.display());
    None
}

#[tokio::test]
async fn claude_code_runs_through_serve_and_spends_credits() {
    let Some(claude) = claude_code() else {
        return;
    };
    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    let key = user_key(&db, "claude-code-user", 5, None).await;
    upstream.set_default(Reply::text("Hi from Switchboard!").with_usage(900, 6, 0));
    let serve = Serve::start(&db, &upstream, "claude-code").await;
    let home = std::env::temp_dir().join(format!("sb-claude-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let output = tokio::process::Command::new(&claude)
        .args(["-p", "say hi"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("ANTHROPIC_BASE_URL", &serve.base)
        .env("ANTHROPIC_AUTH_TOKEN", &key)
        .env("ANTHROPIC_MODEL", "claude-3-5-sonnet-20241022")
        .env(
            "ANTHROPIC_DEFAULT_HAIKU_MODEL",
            "claude-3-5-sonnet-20241022",
        )
        .env("DISABLE_AUTOUPDATER", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .expect("claude -p answered within 120 s")
        .unwrap();
    let _ = std::fs::remove_dir_all(&home);
    serve.stop().await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("Hi from Switchboard!"),
        "claude -p failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // It went to the Anthropic provider with the platform's key, as Claude Code sent it
    // (its tools and system prompt included), and was charged.
    let requests = upstream.requests();
    let call = requests
        .iter()
        .find(|r| r.path == "/v1/messages")
        .expect("a /v1/messages call upstream");
    assert_eq!(
        call.header("x-api-key"),
        Some("sk-ant-test-system-key-0123456789")
    );
    assert!(
        call.body["tools"].as_array().is_some_and(|t| !t.is_empty()),
        "Claude Code's tools"
    );
    let client = db.connect().await;
    let rows = client
        .query(
            "SELECT route, charged_usd FROM llm_usage_logs WHERE user_id = 'claude-code-user' AND status_code = 200",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for row in &rows {
        assert_eq!(
            row.get::<_, Option<String>>(0).as_deref(),
            Some("/v1/messages")
        );
        assert!(row.get::<_, rust_decimal::Decimal>(1) > rust_decimal::Decimal::ZERO);
    }
    assert_ledger_exact(&db, "claude-code-user").await;
}
