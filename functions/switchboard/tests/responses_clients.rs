//! Real clients of the Responses API (`POST /v1/responses`) against `switchboard serve`,
//! each unchanged but for its base URL and key (the scripts in `tests/clients/`):
//! - the official `openai` SDK: `responses.create` (plain, with `instructions`, a function
//!   tool round trip through `previous_response_id` and `function_call_output`),
//!   `responses.stream`, `responses.parse` (a pydantic model as `text.format`), and a stored
//!   response read back, listed and deleted;
//! - the OpenAI Agents SDK with its default model class (`Runner.run`, `Runner.run_streamed`,
//!   a `@function_tool`, also with `auto_previous_response_id`);
//! - the Vercel AI SDK's `openai('gpt-4o')` (`generateText`, `streamText`, a tool, streamed
//!   and not, and a step whose text it sends back as an `item_reference`);
//! - LangChain's `ChatOpenAI(use_responses_api=True)` (`invoke`, `stream`, `bind_tools`);
//! - Codex CLI (`codex exec` with a custom provider: a plain prompt, and one where the model
//!   has Codex run `echo hi` with its shell tool).
//!
//! The upstream is the in-process fake provider speaking chat completions (the seeded
//! `gpt-4o`), told what to answer in the order each script asks
//! (`tests/clients/scenarios.json`, shared with the recording in
//! `tests/fixtures/responses-clients/`). Afterwards: every answer came from the upstream,
//! each model call was captured exactly once on the ledger, at the usage the client was
//! shown (the scripts check it), with a `/v1/responses` usage row; the balance is the sum
//! of the entries and no hold is left.
//!
//! The Python clients are in `.venv` (required when the test script ran); Codex CLI and the
//! AI SDK in `.tools` where npm is (required under `SWITCHBOARD_REQUIRE_RESPONSES_CLIENTS`,
//! which CI sets), otherwise their tests skip with one line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::Value;
use support::{Serve, python_with, user_key};
use switchboard_tests::fake_upstream::{
    DEFAULT_COMPLETION_TOKENS, DEFAULT_PROMPT_TOKENS, FakeUpstream, RecordedRequest, Reply,
};
use switchboard_tests::moto::workspace_root;
use switchboard_tests::test_db::TestDb;

/// The calls of one client in `tests/clients/scenarios.json`, record-only ones left out.
fn scenario(client: &str) -> Vec<Value> {
    let path = workspace_root().join("tests/clients/scenarios.json");
    let all: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    all[client]
        .as_array()
        .unwrap_or_else(|| panic!("{client} in {}", path.display()))
        .iter()
        .filter(|call| call["record_only"] != Value::Bool(true))
        .cloned()
        .collect()
}

/// One scenario reply as the fake upstream's [`Reply`].
fn reply(spec: &Value) -> Reply {
    let mut calls: Vec<&Value> = spec["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    if spec["tool_call"].is_object() {
        calls.push(&spec["tool_call"]);
    }
    let mut reply = Reply::text(spec["text"].as_str().unwrap_or_default());
    for call in calls {
        reply = reply.with_tool_call(call["name"].as_str().unwrap(), call["arguments"].clone());
    }
    reply
}

/// Tells the upstream every reply of `client`'s calls, in order; the number of model calls.
fn script_upstream(upstream: &FakeUpstream, client: &str) -> usize {
    let mut count = 0;
    for call in scenario(client) {
        for spec in call["replies"].as_array().unwrap() {
            upstream.push(reply(spec));
            count += 1;
        }
    }
    count
}

/// A Node.js client installed by the test script in `.tools`, or `None` (the test skips)
/// when it is missing and `SWITCHBOARD_REQUIRE_RESPONSES_CLIENTS` is not set.
fn node_client(what: &str, path: PathBuf) -> Option<PathBuf> {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if node && path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("SWITCHBOARD_REQUIRE_RESPONSES_CLIENTS").is_none(),
        "{what} is missing at {} (./scripts/test installs it when npm is available)",
        path.display()
    );
    eprintln!(
        "skipped: {what} is not installed at {} (it needs npm; run ./scripts/test)",
        path.display()
    );
    None
}

/// Runs a client script of `tests/clients/` with `serve`'s `/v1` base URL and the key;
/// panics with its output when it fails. `serve` is stopped afterwards.
async fn run_client(serve: Serve, program: impl Into<OsString>, script: &str, key: &str) {
    let base = format!("{}/v1", serve.base);
    let output = tokio::process::Command::new(program.into())
        .arg(workspace_root().join("tests/clients").join(script))
        .args([&base, key])
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_DEFAULT_MODEL")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), output).await;
    serve.stop().await;
    let output = output
        .unwrap_or_else(|_| panic!("{script} did not finish within 300 s"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
}

/// After a client's run: every model call reached the upstream as a chat completion and
/// was captured once, with its usage row on `/v1/responses`; the ledger holds.
async fn assert_billed_once_per_call(
    db: &TestDb,
    upstream: &FakeUpstream,
    user_id: &str,
    calls: usize,
) {
    let requests = upstream.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["/v1/chat/completions"; calls],
        "one upstream chat completion per model call"
    );
    assert_eq!(
        upstream.pending_steps(),
        0,
        "every scripted reply was asked for"
    );

    let client = db.connect().await;
    let captures = client
        .query_one(
            "SELECT count(*), count(DISTINCT request_id), COALESCE(sum(amount_usd), 0)
             FROM ledger_entries WHERE user_id = $1 AND kind = 'capture'",
            &[&user_id],
        )
        .await
        .unwrap();
    let (count, distinct, captured): (i64, i64, Decimal) =
        (captures.get(0), captures.get(1), captures.get(2));
    assert_eq!(count, calls as i64, "one capture per model call");
    assert_eq!(distinct, count, "each capture for its own request");
    assert!(
        captured < Decimal::ZERO,
        "the calls cost something: {captured}"
    );

    let usage = client
        .query_one(
            "SELECT count(*), COALESCE(sum(charged_usd), 0) FROM llm_usage_logs
             WHERE user_id = $1 AND route = '/v1/responses' AND status_code = 200",
            &[&user_id],
        )
        .await
        .unwrap();
    let (rows, charged): (i64, Decimal) = (usage.get(0), usage.get(1));
    assert_eq!(
        rows, calls as i64,
        "one /v1/responses usage row per model call"
    );
    assert_eq!(
        charged, -captured,
        "usage rows charge what the ledger captured"
    );

    // Each call is charged the usage the upstream reported (the fake's default, which the
    // scripts also check the client was shown) at gpt-4o's prices: what the answer said is
    // what the ledger took.
    let prices = client
        .query_one(
            "SELECT cost_per_1m_input_tokens, cost_per_1m_output_tokens FROM llm_models
             WHERE model_id = 'gpt-4o'",
            &[],
        )
        .await
        .unwrap();
    let (input_price, output_price): (Decimal, Decimal) = (prices.get(0), prices.get(1));
    let per_call = (Decimal::from(DEFAULT_PROMPT_TOKENS) * input_price
        + Decimal::from(DEFAULT_COMPLETION_TOKENS) * output_price)
        / Decimal::from(1_000_000);
    let amounts = client
        .query(
            "SELECT amount_usd FROM ledger_entries WHERE user_id = $1 AND kind = 'capture'",
            &[&user_id],
        )
        .await
        .unwrap();
    for row in amounts {
        let amount: Decimal = row.get(0);
        assert_eq!(
            -amount.normalize(),
            per_call.normalize(),
            "the capture of one call"
        );
    }
    let tokens = client
        .query(
            "SELECT prompt_tokens, completion_tokens FROM llm_usage_logs
             WHERE user_id = $1 AND route = '/v1/responses' AND status_code = 200",
            &[&user_id],
        )
        .await
        .unwrap();
    for row in tokens {
        let (prompt, completion): (i32, i32) = (row.get(0), row.get(1));
        assert_eq!(
            (
                u64::try_from(prompt).unwrap(),
                u64::try_from(completion).unwrap()
            ),
            (DEFAULT_PROMPT_TOKENS, DEFAULT_COMPLETION_TOKENS),
            "the usage row of one call"
        );
    }

    let report = switchboard_core::ledger::check_invariants(&client, user_id)
        .await
        .unwrap();
    assert!(report.holds() && report.active_holds == 0, "{report:?}");
}

/// The upstream request that carried a tool's result back: a `tool` message answering
/// the assistant's call, whose content contains `result`.
fn tool_result_reached_upstream(requests: &[RecordedRequest], result: &str) -> bool {
    requests.iter().any(|request| {
        let messages = request.body["messages"].as_array().into_iter().flatten();
        let mut asked = false;
        for message in messages {
            if message["role"] == "assistant" && message["tool_calls"].is_array() {
                asked = true;
            }
            let content = match &message["content"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            if asked && message["role"] == "tool" && content.contains(result) {
                return true;
            }
        }
        false
    })
}

#[tokio::test]
async fn the_openai_sdk_responses_api_works_unchanged() {
    let Some(python) = python_with("openai") else {
        return;
    };
    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    let key = user_key(&db, "responses-openai", 5, None).await;
    let calls = script_upstream(&upstream, "openai");
    let serve = Serve::start(&db, &upstream, "responses-openai").await;
    run_client(serve, &python, "openai_responses_check.py", &key).await;

    assert_billed_once_per_call(&db, &upstream, "responses-openai", calls).await;
    let requests = upstream.requests();
    // `previous_response_id` + `function_call_output`: the continuation sent upstream the
    // stored turn (the question and the call) with the tool's result.
    assert!(
        tool_result_reached_upstream(&requests, "18 C, sunny"),
        "{:#?}",
        requests.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    let continuation = &requests[3].body["messages"];
    assert!(
        continuation
            .to_string()
            .contains("What is the weather in Paris?"),
        "the stored question went upstream with the continuation: {continuation}"
    );
}

#[tokio::test]
async fn the_agents_sdk_runs_through_serve() {
    let Some(python) = python_with("agents") else {
        return;
    };
    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    let key = user_key(&db, "responses-agents", 5, None).await;
    let calls = script_upstream(&upstream, "agents");
    let serve = Serve::start(&db, &upstream, "responses-agents").await;
    run_client(serve, &python, "agents_check.py", &key).await;

    assert_billed_once_per_call(&db, &upstream, "responses-agents", calls).await;
    let requests = upstream.requests();
    assert!(tool_result_reached_upstream(&requests, "18 C, sunny"));
    // function-tool-chained (auto_previous_response_id): its continuation sent only the
    // tool's output; the stored question and call went upstream with it.
    let chained = &requests[calls - 1].body["messages"];
    assert!(
        tool_result_reached_upstream(&requests[calls - 1..], "18 C, sunny")
            && chained
                .to_string()
                .contains("What is the weather in Paris?"),
        "{chained}"
    );
}

#[tokio::test]
async fn langchain_chat_openai_with_the_responses_api_runs_through_serve() {
    let Some(python) = python_with("langchain_openai") else {
        return;
    };
    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    let key = user_key(&db, "responses-langchain", 5, None).await;
    let calls = script_upstream(&upstream, "langchain");
    let serve = Serve::start(&db, &upstream, "responses-langchain").await;
    run_client(serve, &python, "langchain_check.py", &key).await;

    assert_billed_once_per_call(&db, &upstream, "responses-langchain", calls).await;
    assert!(tool_result_reached_upstream(
        &upstream.requests(),
        "18 C, sunny"
    ));
}

#[tokio::test]
async fn the_ai_sdk_openai_provider_runs_through_serve() {
    let Some(_) = node_client(
        "the AI SDK",
        workspace_root().join(".tools/ai-sdk/node_modules/@ai-sdk/openai/package.json"),
    ) else {
        return;
    };
    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    let key = user_key(&db, "responses-ai-sdk", 5, None).await;
    let calls = script_upstream(&upstream, "ai-sdk");
    let serve = Serve::start(&db, &upstream, "responses-ai-sdk").await;
    run_client(serve, "node", "ai_sdk_check.mjs", &key).await;

    assert_billed_once_per_call(&db, &upstream, "responses-ai-sdk", calls).await;
    let requests = upstream.requests();
    assert!(tool_result_reached_upstream(&requests, "18 C, sunny"));
    // tools-with-text: the SDK sent the model's first message back as an `item_reference`
    // to the stored output item; the gateway resolved it to the text.
    let last = &requests[calls - 1].body["messages"];
    assert!(
        last.as_array().into_iter().flatten().any(|m| m["role"] == "assistant"
            && m["content"].to_string().contains("Let me check.")),
        "the referenced message reached the upstream: {last}"
    );
}

#[tokio::test]
async fn codex_exec_runs_through_serve_and_its_shell_tool_round_trips() {
    let Some(_) = node_client(
        "Codex CLI",
        workspace_root().join(".tools/codex/node_modules/.bin/codex"),
    ) else {
        return;
    };
    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    let key = user_key(&db, "responses-codex", 5, None).await;
    let calls = script_upstream(&upstream, "codex");
    let serve = Serve::start(&db, &upstream, "responses-codex").await;
    run_client(serve, "bash", "codex_check.sh", &key).await;

    assert_billed_once_per_call(&db, &upstream, "responses-codex", calls).await;
    // Codex ran `echo hi` and its output went back upstream as the tool's result; its own
    // tools (exec_command among them) reached the provider as functions.
    let requests = upstream.requests();
    assert!(tool_result_reached_upstream(&requests, "\nhi\n"));
    assert!(
        requests[1].body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|tool| tool["function"]["name"] == "exec_command"),
        "{}",
        requests[1].body["tools"]
    );
}

/// Every call of `scenarios.json` has its recorded fixture, with the key redacted, and the
/// fixtures' README names it: re-record with `tests/clients/record_fixtures.py`.
#[test]
fn every_client_call_has_a_recorded_fixture() {
    let root = workspace_root();
    let dir = root.join("tests/fixtures/responses-clients");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let all: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/clients/scenarios.json")).unwrap(),
    )
    .unwrap();
    for (client, calls) in all.as_object().unwrap() {
        if client.starts_with('_') {
            continue;
        }
        for call in calls.as_array().unwrap() {
            let name = format!("{client}-{}", call["call"].as_str().unwrap());
            let path = dir.join(format!("{name}.json"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let fixture: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                fixture["replies"], call["replies"],
                "{name}: the replies recorded"
            );
            let requests = fixture["requests"].as_array().unwrap();
            assert!(!requests.is_empty(), "{name}: no request recorded");
            for request in requests {
                let auth = request["headers"]["authorization"].as_str();
                assert_eq!(auth, Some("Bearer <redacted>"), "{name}: {auth:?}");
            }
            assert!(!text.contains("sk-sb-recording"), "{name}: the key leaked");
            assert!(readme.contains(&name), "README.md names {name}");
        }
    }
}
