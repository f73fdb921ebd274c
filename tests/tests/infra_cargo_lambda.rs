//! cargo-lambda smoke test: `cargo lambda watch` serves every function of the workspace
//! under its Lambda runtime emulator, and `cargo lambda invoke <fn> --data-file events/...`
//! runs each on its sample event against a fresh database, moto (KMS) and the fake
//! upstream, exactly as a developer would by hand:
//!
//! - `migrate` on `{}`: applies every migration to an empty database and inserts the
//!   admin key of `events/admin-list-providers.json` (from `SWITCHBOARD_ADMIN_KEY`);
//! - `chat` on the REST proxy event and the Function URL events (streamed and not);
//! - `admin` on `GET /admin/providers`; `keys` on `PUT /v1/byok/groq` (KMS envelope);
//! - `health-check` on the scheduled event;
//! - `chat` once more while every capture fails in the database: the answer is delivered
//!   with its charge pending and the capture sent to the pending-charge queue (moto's SQS);
//! - `billing-export` on its scheduled event (Lago key from Secrets Manager, a fake Lago),
//!   first draining that pending charge into the ledger, then exporting it to Lago with
//!   the rest.
//!
//! Skipped with a message when cargo-lambda is not installed, unless
//! `SWITCHBOARD_REQUIRE_CARGO_LAMBDA` is set (scripts/test sets it and installs
//! cargo-lambda into .venv). The function binaries are built once, in debug, beforehand.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::Value;
use switchboard_core::auth::hash_api_key;
use switchboard_core::ledger::{self, CreditKind, PendingCharge};
use switchboard_tests::fake_upstream::FakeUpstream;
use switchboard_tests::gateway::system_key_for;
use switchboard_tests::moto::{MotoServer, workspace_root};
use switchboard_tests::test_db::TestDb;

/// The keys written into the sample events.
const CHAT_KEY: &str = "sk-sb-e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0";
const ADMIN_KEY: &str = "sk-sb-a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0";
const BYOK_USER_KEY: &str = "sk-sb-b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";

const FUNCTIONS: [&str; 6] = [
    "migrate",
    "chat",
    "admin",
    "keys",
    "health-check",
    "billing-export",
];
const INVOKE_TIMEOUT: Duration = Duration::from_secs(180);

/// `$CARGO_LAMBDA`, else `.venv/bin/cargo-lambda`, else `cargo-lambda` on PATH.
fn find_cargo_lambda() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CARGO_LAMBDA").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let venv = workspace_root().join(".venv/bin/cargo-lambda");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("cargo-lambda"))
            .find(|p| p.is_file())
    })
}

fn required() -> bool {
    std::env::var_os("SWITCHBOARD_REQUIRE_CARGO_LAMBDA").is_some_and(|v| !v.is_empty())
}

/// `cargo lambda watch` in its own process group, ended (with the functions it started)
/// when dropped.
struct Watch {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

impl Watch {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // The whole group: cargo-lambda and the function processes it spawned.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// This process's environment for cargo (RUSTFLAGS and the like stay, so nothing is
/// rebuilt), less everything that would configure the functions: they get exactly the
/// `--env-var`s, as a deployed function gets exactly the template's variables.
fn toolchain_env(command: &mut std::process::Command) {
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if [
            "SWITCHBOARD_",
            "DATABASE_",
            "AWS_",
            "TEST_DATABASE",
            "MOTO_",
            "RUST_LOG",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        {
            command.env_remove(name);
        }
    }
}

fn build_functions(root: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    toolchain_env(&mut command);
    command
        .current_dir(root)
        .args(["build", "--locked", "--quiet"]);
    for f in FUNCTIONS {
        command.args(["--bin", f]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "building the functions failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn start_watch(cargo_lambda: &Path, root: &Path, env: &[(String, String)]) -> Watch {
    use std::os::unix::process::CommandExt;
    let port = free_port();
    let log = std::env::temp_dir().join(format!("switchboard-cargo-lambda-{port}.log"));
    let log_file = std::fs::File::create(&log).unwrap();
    let mut command = std::process::Command::new(cargo_lambda);
    toolchain_env(&mut command);
    command
        .current_dir(root)
        .args([
            "lambda",
            "watch",
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
        ])
        .arg(port.to_string())
        .arg("--ignore-changes");
    for (key, value) in env {
        command.arg("--env-var").arg(format!("{key}={value}"));
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .unwrap();
    let watch = Watch { child, port, log };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "cargo lambda watch did not listen on {port}:\n{}",
            watch.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    watch
}

/// `cargo lambda invoke <function> --data-file events/<event>`: the function's answer.
async fn invoke(cargo_lambda: &Path, watch: &Watch, function: &str, event: &str) -> String {
    let mut command = tokio::process::Command::new(cargo_lambda);
    command
        .current_dir(workspace_root())
        .args([
            "lambda",
            "invoke",
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
        ])
        .arg(watch.port.to_string())
        .arg("--data-file")
        .arg(format!("events/{event}"))
        .arg("--color")
        .arg("never")
        .arg(function)
        .kill_on_drop(true);
    let output = tokio::time::timeout(INVOKE_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{function} did not answer:\n{}", watch.log_tail()))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "cargo lambda invoke {function} --data-file events/{event} failed:\n{stdout}\n{}\n--- watch log ---\n{}",
        String::from_utf8_lossy(&output.stderr),
        watch.log_tail()
    );
    stdout
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// An API Gateway proxy answer: status, and the body as JSON.
fn proxy_answer(text: &str) -> (u64, Value, Value) {
    let answer = json(text);
    let status = answer["statusCode"].as_u64().unwrap();
    let body = json(answer["body"].as_str().unwrap());
    (status, answer["multiValueHeaders"].clone(), body)
}

#[tokio::test]
async fn every_function_answers_its_sample_event_under_cargo_lambda() {
    let Some(cargo_lambda) = find_cargo_lambda() else {
        assert!(
            !required(),
            "SWITCHBOARD_REQUIRE_CARGO_LAMBDA is set but cargo-lambda was not found (pip install cargo-lambda into .venv, or set CARGO_LAMBDA)"
        );
        eprintln!(
            "skipped: cargo-lambda not found (run ./scripts/test, or pip install cargo-lambda into .venv)"
        );
        return;
    };
    let moto = match MotoServer::start().await {
        Ok(moto) => moto,
        Err(error) if !required() => {
            eprintln!("skipped: the cargo-lambda smoke test needs moto for KMS ({error})");
            return;
        }
        Err(error) => panic!("the cargo-lambda smoke test needs moto for KMS: {error}"),
    };
    let root = workspace_root();
    let build = tokio::task::spawn_blocking({
        let root = root.clone();
        move || build_functions(&root)
    });

    let kms = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::Config::builder()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .endpoint_url(moto.endpoint_url())
            .build(),
    );
    let key_arn = kms
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .arn
        .unwrap();
    let db = TestDb::empty().await;
    let upstream = FakeUpstream::start().await;
    // billing-export reads Lago's key from Secrets Manager, as in AWS.
    let lago = switchboard_tests::fake_lago::FakeLago::start().await;
    let secrets = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::Config::builder()
            .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
            .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .endpoint_url(moto.endpoint_url())
            .build(),
    );
    let lago_secret = secrets
        .create_secret()
        .name("switchboard/lago-api-key")
        .secret_string(
            serde_json::json!({"api_key": switchboard_tests::fake_lago::LAGO_TEST_KEY}).to_string(),
        )
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();

    // The pending-charge queue (SQS), as the template's PendingChargesQueue.
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .endpoint_url(moto.endpoint_url())
            .build(),
    );
    let queue_url = sqs
        .create_queue()
        .queue_name("sb-pending-charges")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();

    let mut env: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), db.url().to_owned()),
        ("SWITCHBOARD_KMS_KEY_ID".into(), key_arn.clone()),
        ("SWITCHBOARD_ADMIN_KEY".into(), ADMIN_KEY.into()),
        ("SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS".into(), "1".into()),
        ("AWS_ENDPOINT_URL".into(), moto.endpoint_url()),
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH".into(), "true".into()),
        ("RUST_LOG".into(), "info".into()),
        ("SWITCHBOARD_LAGO_API_URL".into(), lago.url()),
        ("SWITCHBOARD_LAGO_API_KEY_SECRET_ARN".into(), lago_secret),
        (
            "SWITCHBOARD_PENDING_CHARGES_QUEUE_URL".into(),
            queue_url.clone(),
        ),
    ];
    for slug in ["openai", "anthropic", "google", "openrouter"] {
        env.push((
            format!("SWITCHBOARD_PROVIDER_KEY_{}", slug.to_uppercase()),
            system_key_for(slug),
        ));
    }
    build.await.unwrap();
    let watch = start_watch(&cargo_lambda, &root, &env);

    // migrate: the empty database gets every migration and the events' admin key.
    let summary = json(&invoke(&cargo_lambda, &watch, "migrate", "migrate-direct.json").await);
    assert!(
        !summary["applied"].as_array().unwrap().is_empty(),
        "{summary}"
    );
    assert_eq!(summary["admin_key"], "inserted", "{summary}");
    let summary = json(&invoke(&cargo_lambda, &watch, "migrate", "migrate-direct.json").await);
    assert_eq!(
        summary["applied"],
        serde_json::json!([]),
        "a second run changes nothing"
    );
    assert_eq!(summary["admin_key"], "present");

    // The events' users, and the providers pointed at the fake upstream.
    let client = db.connect().await;
    for (slug, url) in [
        ("openai", upstream.openai_base_url()),
        ("anthropic", upstream.anthropic_base_url()),
        ("google", upstream.gemini_base_url()),
        ("openrouter", upstream.openai_base_url()),
        ("together", upstream.openai_base_url()),
        ("groq", upstream.openai_base_url()),
        ("fireworks", upstream.openai_base_url()),
    ] {
        client
            .execute(
                "UPDATE llm_providers SET base_url = $2, health_url = $2 || '/models' WHERE provider_slug = $1",
                &[&slug, &url],
            )
            .await
            .unwrap();
    }
    for (user, key) in [("lambda-user", CHAT_KEY), ("byok-user", BYOK_USER_KEY)] {
        client
            .execute(
                "INSERT INTO accounts (user_id, tier) VALUES ($1, 'starter')",
                &[&user],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO gateway_api_keys (id, user_id, name, key_hash, key_prefix) VALUES ($1, $2, 'events', $3, $4)",
                &[&uuid::Uuid::new_v4(), &user, &hash_api_key(key).as_slice(), &&key[..10]],
            )
            .await
            .unwrap();
    }
    ledger::credit(
        &client,
        "lambda-user",
        Decimal::from_str("5").unwrap(),
        CreditKind::TopUp,
        "cargo-lambda-smoke",
        None,
        None,
    )
    .await
    .unwrap();

    // chat, through API Gateway REST (stage in the path) and the Function URL.
    for (event, request_id) in [
        ("chat-apigw-rest.json", "evt-rest-0001"),
        ("chat-function-url.json", "evt-url-0001"),
    ] {
        let body = json(&invoke(&cargo_lambda, &watch, "chat", event).await);
        assert_eq!(body["object"], "chat.completion", "{event}: {body}");
        assert_eq!(body["_metadata"]["provider_used"], "openai", "{event}");
        assert_eq!(body["_metadata"]["request_id"], request_id, "{event}");
        assert!(
            !body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .is_empty()
        );
    }
    let stream = invoke(
        &cargo_lambda,
        &watch,
        "chat",
        "chat-function-url-stream.json",
    )
    .await;
    assert!(stream.contains("data: "), "{stream}");
    assert!(stream.trim_end().ends_with("data: [DONE]"), "{stream}");
    assert!(
        stream.contains("evt-url-0002"),
        "_metadata on the last chunk: {stream}"
    );
    let authorization = upstream.last_request().unwrap();
    assert_eq!(
        authorization.header("authorization"),
        Some(format!("Bearer {}", system_key_for("openai")).as_str())
    );
    // The Messages API (streamed, Anthropic's events) and embeddings, on the same function.
    let messages = invoke(
        &cargo_lambda,
        &watch,
        "chat",
        "messages-function-url-stream.json",
    )
    .await;
    assert!(messages.contains("event: message_start"), "{messages}");
    assert!(
        messages
            .trim_end()
            .ends_with("data: {\"type\":\"message_stop\"}"),
        "{messages}"
    );
    // The Responses API, streamed, stored before `response.completed`.
    let responses = invoke(
        &cargo_lambda,
        &watch,
        "chat",
        "responses-function-url-stream.json",
    )
    .await;
    assert!(responses.contains("event: response.created"), "{responses}");
    let completed = responses
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("data: "))
        .and_then(|data| serde_json::from_str::<serde_json::Value>(data).ok())
        .unwrap_or_default();
    assert_eq!(completed["type"], "response.completed", "{responses}");
    assert_eq!(
        completed["response"]["_metadata"]["request_id"],
        "evt-url-0005"
    );
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM responses WHERE user_id = 'lambda-user'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1, "the streamed response was stored");
    let embeddings =
        json(&invoke(&cargo_lambda, &watch, "chat", "embeddings-apigw-rest.json").await);
    assert_eq!(embeddings["object"], "list", "{embeddings}");
    assert_eq!(
        embeddings["data"].as_array().unwrap().len(),
        2,
        "{embeddings}"
    );
    assert_eq!(embeddings["_metadata"]["request_id"], "evt-rest-0002");
    let usage_rows: i64 = client
        .query_one(
            "SELECT count(*) FROM llm_usage_logs WHERE user_id = 'lambda-user'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(usage_rows, 6);
    let report = ledger::check_invariants(&client, "lambda-user")
        .await
        .unwrap();
    assert_eq!(report.balance, report.sum_of_entries, "{report:?}");
    assert!(
        report.balance < Decimal::from(5),
        "the calls were charged: {report:?}"
    );

    // admin: GET /admin/providers with the admin key the migration step inserted.
    let (status, headers, body) =
        proxy_answer(&invoke(&cargo_lambda, &watch, "admin", "admin-list-providers.json").await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-request-id"][0], "evt-admin-0001");
    let slugs: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["provider_slug"].as_str().unwrap())
        .collect();
    assert!(
        slugs.contains(&"openai") && slugs.contains(&"groq"),
        "{body}"
    );

    // keys: PUT /v1/byok/groq, sealed under the KMS key (moto).
    let (status, _, body) =
        proxy_answer(&invoke(&cargo_lambda, &watch, "keys", "keys-byok-put.json").await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider_slug"], "groq");
    assert_eq!(body["key_hint"], "gsk_...WXYZ");
    assert!(body.get("api_key").is_none(), "never the plaintext");
    let sealed_under: String = client
        .query_one(
            "SELECT k.kms_key_id FROM user_api_keys k JOIN llm_providers p ON p.id = k.provider_id
             WHERE k.user_id = 'byok-user' AND p.provider_slug = 'groq'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sealed_under, key_arn);

    // health-check: the scheduled event probes the providers it holds keys for.
    let summary = json(
        &invoke(
            &cargo_lambda,
            &watch,
            "health-check",
            "health-check-scheduled.json",
        )
        .await,
    );
    assert!(summary.is_object(), "{summary}");
    let checked: i64 = client
        .query_one(
            "SELECT count(*) FROM llm_providers WHERE health_last_checked IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(checked >= 1, "no provider was checked: {summary}");

    // An outage as the chat function sees it: every capture fails inside the database
    // (a trigger). The answer is delivered with its charge pending, and the function (its
    // own main, under cargo-lambda) sent the capture to the pending-charge queue.
    let balance_before = ledger::check_invariants(&client, "lambda-user")
        .await
        .unwrap()
        .balance;
    client
        .batch_execute(
            "CREATE FUNCTION fail_capture() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'injected capture failure'; END $$;
             CREATE TRIGGER fail_capture BEFORE INSERT ON billing_events
                 FOR EACH ROW EXECUTE FUNCTION fail_capture();",
        )
        .await
        .unwrap();
    let pending = json(&invoke(&cargo_lambda, &watch, "chat", "chat-function-url.json").await);
    assert_eq!(pending["_metadata"]["charge_pending"], true, "{pending}");
    let pending_cost =
        Decimal::from_str(pending["_metadata"]["cost_usd"].as_str().unwrap()).unwrap();
    assert!(pending_cost > Decimal::ZERO);
    let queued = sqs
        .receive_message()
        .queue_url(&queue_url)
        .visibility_timeout(0)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    assert_eq!(
        queued.messages().len(),
        1,
        "one message for the pending charge"
    );
    let message: PendingCharge =
        serde_json::from_str(queued.messages()[0].body().unwrap()).unwrap();
    assert_eq!(message.capture.user_id, "lambda-user");
    assert_eq!(message.capture.amount, pending_cost);
    assert_eq!(
        ledger::check_invariants(&client, "lambda-user")
            .await
            .unwrap()
            .balance,
        balance_before,
        "nothing charged yet"
    );
    client
        .batch_execute("DROP TRIGGER fail_capture ON billing_events; DROP FUNCTION fail_capture();")
        .await
        .unwrap();

    // billing-export: the scheduled event first writes the pending charge (the database is
    // back), then sends every capture, that one included, to Lago.
    let report = json(
        &invoke(
            &cargo_lambda,
            &watch,
            "billing-export",
            "billing-export-scheduled.json",
        )
        .await,
    );
    let captures: i64 = client
        .query_one("SELECT count(*) FROM billing_events", &[])
        .await
        .unwrap()
        .get(0);
    assert!(captures >= 1, "the chat invocations above were charged");
    let drained = &report["pending_charges"];
    assert_eq!(drained["received"], 1, "{report}");
    assert_eq!(drained["captured"], 1, "{report}");
    assert_eq!(drained["remaining"], 0, "{report}");
    let after = ledger::check_invariants(&client, "lambda-user")
        .await
        .unwrap();
    assert_eq!(after.balance, after.sum_of_entries, "{after:?}");
    assert_eq!(after.active_holds, 0, "{after:?}");
    assert_eq!(
        after.balance,
        balance_before - pending_cost,
        "the pending charge was written once, at the cost the answer told"
    );
    let usage_rows: i64 = client
        .query_one(
            "SELECT count(*) FROM llm_usage_logs WHERE user_id = 'lambda-user'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(usage_rows, 7, "the six answers above and the pending one");
    let left = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    assert_eq!(
        left.attributes().unwrap()
            [&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages],
        "0",
        "the message is deleted once written"
    );
    // The drained charge's billing event went to Lago in the same run.
    // (The pass report's fields are at the top level since the billing pass became one
    // report of its parts; `export` is its status.)
    assert_eq!(report["export"], "finished", "{report}");
    assert_eq!(report["sent"], captures, "{report}");
    assert_eq!(lago.events().len() as i64, captures);

    // CloudWatch metrics: each function printed EMF lines (on stdout, which the watch
    // log holds) before its invocation ended; each line is valid EMF.
    let emf = emf_lines(&std::fs::read_to_string(&watch.log).unwrap());
    // Counters: the sum of their values; histograms (`count`): how many values.
    let values = |metric: &str, route: Option<&str>| -> Vec<f64> {
        emf.iter()
            .filter(|line| route.is_none_or(|r| line["route"] == r))
            .filter_map(|line| line.get(metric))
            .flat_map(|v| match v {
                Value::Array(values) => values.iter().map(|v| v.as_f64().unwrap()).collect(),
                other => vec![other.as_f64().unwrap()],
            })
            .collect()
    };
    let total = |metric: &str, route: Option<&str>| values(metric, route).iter().sum::<f64>();
    let count = |metric: &str, route: Option<&str>| values(metric, route).len() as f64;
    assert_eq!(
        total("switchboard_requests_total", Some("/v1/chat/completions")),
        4.0,
        "three answers (one with its charge pending) and one stream: {emf:#?}"
    );
    assert_eq!(
        total("switchboard_requests_total", Some("/v1/messages")),
        1.0
    );
    assert_eq!(
        total("switchboard_requests_total", Some("/v1/embeddings")),
        1.0
    );
    assert_eq!(
        total("switchboard_requests_total", Some("/v1/responses")),
        1.0
    );
    assert_eq!(
        count(
            "switchboard_request_duration_seconds",
            Some("/v1/chat/completions")
        ),
        4.0
    );
    // Three streams: chat, messages, responses.
    assert_eq!(count("switchboard_time_to_first_token_seconds", None), 3.0);
    assert!(total("switchboard_cost_usd_total", None) > 0.0);
    assert!(total("switchboard_health_checks_total", None) >= 1.0);
    assert!(
        emf.iter()
            .any(|line| line.get("switchboard_billing_export_backlog").is_some())
    );
    assert_eq!(
        total("switchboard_pending_charges_written_total", None),
        1.0,
        "the drained charge: {emf:#?}"
    );
    drop(watch);
}

/// The EMF lines in `log`, each checked against the format's structure: `_aws` with a
/// millisecond `Timestamp` and `CloudWatchMetrics` directives, each naming a namespace,
/// dimension sets whose every key is a string member of the line, and metric definitions
/// whose every name is a numeric member (a number, or up to 100 numbers).
fn emf_lines(log: &str) -> Vec<Value> {
    let mut lines = Vec::new();
    for text in log.lines() {
        let Some(start) = text.find("{\"_aws\"") else {
            continue;
        };
        let line: Value = serde_json::from_str(&text[start..])
            .unwrap_or_else(|e| panic!("an EMF line that is not JSON ({e}): {text}"));
        let aws = &line["_aws"];
        assert!(
            aws["Timestamp"].as_u64().unwrap() > 1_600_000_000_000,
            "{line}"
        );
        let directives = aws["CloudWatchMetrics"].as_array().unwrap();
        assert!(!directives.is_empty(), "{line}");
        for directive in directives {
            assert_eq!(directive["Namespace"], "Switchboard", "{line}");
            for set in directive["Dimensions"].as_array().unwrap() {
                let set = set.as_array().unwrap();
                assert!(set.len() <= 30, "{line}");
                for key in set {
                    let key = key.as_str().unwrap();
                    assert!(
                        ["route", "model", "provider", "status_class"].contains(&key),
                        "dimension {key} is not one of the four: {line}"
                    );
                    assert!(
                        line[key].is_string(),
                        "dimension {key} has no value: {line}"
                    );
                }
            }
            let metrics = directive["Metrics"].as_array().unwrap();
            assert!(!metrics.is_empty() && metrics.len() <= 100, "{line}");
            for metric in metrics {
                let name = metric["Name"].as_str().unwrap();
                assert!(
                    ["Seconds", "Count", "Bytes", "None"]
                        .contains(&metric["Unit"].as_str().unwrap()),
                    "{line}"
                );
                match &line[name] {
                    Value::Number(_) => {}
                    Value::Array(values) => {
                        assert!(!values.is_empty() && values.len() <= 100, "{line}");
                        assert!(values.iter().all(Value::is_number), "{line}");
                    }
                    other => panic!("metric {name} has no numeric value ({other}): {line}"),
                }
            }
        }
        lines.push(line);
    }
    lines
}
