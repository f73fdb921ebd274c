//! A long database outage under load (issue 28): `switchboard serve` on a private
//! PostgreSQL cluster that is stopped for 15 s while clients keep sending chat completions
//! (JSON and streamed) and Messages API requests, and probing other routes.
//!
//! - No answer is a 500: the database being down is a 503 `service_unavailable` with
//!   `Retry-After`, on every route and in every format.
//! - No charge is lost: the answers delivered while the database was down carry
//!   `charge_pending: true`; their captures are kept in the spool and written once the
//!   database is back, so every fully delivered answer is charged exactly once, at the cost
//!   the client was told, and every account's balance equals the sum of its entries.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::HashMap;
use std::process::Stdio;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchboard::embedded_pg::EmbeddedPostgres;
use switchboard_tests::fake_upstream::{FakeUpstream, Reply, Step};
use switchboard_tests::gateway::system_key_for;
use tokio::io::AsyncBufReadExt;

const ACCOUNTS: usize = 4;
const CLIENTS: usize = 8;
const BEFORE: Duration = Duration::from_secs(4);
const OUTAGE: Duration = Duration::from_secs(15);
const AFTER: Duration = Duration::from_secs(5);

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// What a client saw of one request.
#[derive(Debug, Clone)]
enum Seen {
    /// Fully delivered, at this cost; `pending` when the answer said `charge_pending`.
    Delivered { cost: Decimal, pending: bool },
    /// An error status (with whether a 503 carried `Retry-After`).
    Refused { status: u16, retry_after: bool },
    /// The connection broke or the stream ended without its last frame.
    Broken,
}

async fn chat(http: &reqwest::Client, base: &str, key: &str, id: &str, kind: usize) -> Seen {
    let (path, body) = match kind % 3 {
        0 => (
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "max_tokens": 50,
                   "messages": [{"role": "user", "content": "Say hello."}]}),
        ),
        1 => (
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "max_tokens": 50, "stream": true,
                   "messages": [{"role": "user", "content": "Say hello."}]}),
        ),
        _ => (
            "/v1/messages",
            json!({"model": "claude-3-5-sonnet-20241022", "max_tokens": 50,
                   "messages": [{"role": "user", "content": "Say hello."}]}),
        ),
    };
    let Ok(response) = http
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .header("x-request-id", id)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
    else {
        return Seen::Broken;
    };
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    let streamed = body["stream"] == true;
    if status != 200 {
        let _ = response.bytes().await;
        return Seen::Refused {
            status,
            retry_after,
        };
    }
    if !streamed {
        let Ok(answer) = response.json::<Value>().await else {
            return Seen::Broken;
        };
        let metadata = &answer["_metadata"];
        return match metadata["cost_usd"].as_str() {
            Some(cost) => Seen::Delivered {
                cost: d(cost),
                pending: metadata["charge_pending"] == true,
            },
            None => Seen::Broken,
        };
    }
    let mut chunks = response.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = chunks.next().await {
        let Ok(chunk) = chunk else {
            return Seen::Broken;
        };
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let events = switchboard_tests::gateway::parse_sse(&text);
    let finished = events.last().is_some_and(|(_, data)| data == "[DONE]");
    let errored = events.iter().any(|(_, data)| data.contains("\"error\""));
    let metadata = events
        .iter()
        .filter_map(|(_, data)| serde_json::from_str::<Value>(data).ok())
        .find_map(|v| v.get("_metadata").cloned());
    match (finished, errored, metadata) {
        (true, false, Some(metadata)) => Seen::Delivered {
            cost: d(metadata["cost_usd"].as_str().unwrap()),
            pending: metadata["charge_pending"] == true,
        },
        _ => Seen::Broken,
    }
}

/// A log line without its terminal colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn healthy(base: &str) -> bool {
    reqwest::get(format!("{base}/healthz"))
        .await
        .is_ok_and(|r| r.status() == 200)
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Accounts with credits and a key each, and the providers pointed at the fake upstream.
async fn prepare(url: &str, upstream: &FakeUpstream) -> Vec<(String, String)> {
    let client = connect(url).await;
    for (slug, base) in [
        ("openai", upstream.openai_base_url()),
        ("anthropic", upstream.anthropic_base_url()),
    ] {
        client
            .execute(
                "UPDATE llm_providers SET base_url = $2 WHERE provider_slug = $1",
                &[&slug, &base],
            )
            .await
            .unwrap();
    }
    let mut keys = Vec::new();
    for i in 0..ACCOUNTS {
        let user = format!("outage-{i}");
        client
            .execute(
                "INSERT INTO accounts (user_id, tier) VALUES ($1, 'professional')",
                &[&user],
            )
            .await
            .unwrap();
        switchboard_core::ledger::credit(
            &client,
            &user,
            Decimal::from(50),
            switchboard_core::ledger::CreditKind::TopUp,
            &format!("outage-topup-{user}"),
            None,
            None,
        )
        .await
        .unwrap();
        let key = switchboard_core::auth::generate_api_key();
        client
            .execute(
                "INSERT INTO gateway_api_keys (id, user_id, name, key_hash, key_prefix, role)
                 VALUES ($1, $2, 'outage', $3, $4, 'user')",
                &[
                    &uuid::Uuid::new_v4(),
                    &user,
                    &key.hash.as_slice(),
                    &key.display_prefix,
                ],
            )
            .await
            .unwrap();
        keys.push((user, key.plaintext.expose().to_string()));
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifteen_second_database_outage_answers_503_and_loses_no_charge() {
    let root = std::env::temp_dir().join(format!("sb-outage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut cluster = EmbeddedPostgres::start(&root, None).await.unwrap();
    let url = cluster.database_url();
    let upstream = FakeUpstream::start().await;
    // Answers take a moment, so that some are in flight when the database goes.
    for _ in 0..5_000 {
        upstream.push(Step::delay(
            Duration::from_millis(150),
            Step::reply(Reply::text("Hello there, friend.").with_usage(30, 8, 0)),
        ));
    }
    upstream.set_default(Reply::text("Hello again.").with_usage(30, 8, 0));

    let admin = switchboard_core::auth::generate_api_key();
    let admin_key = admin.plaintext.expose().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data_dir = root.join("serve");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("SWITCHBOARD_DATA_DIR", &data_dir)
        .env("SWITCHBOARD_ADMIN_KEY", &admin_key)
        .env("SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS", "1")
        .env("SWITCHBOARD_HEALTH_CHECK_INTERVAL_SECS", "86400")
        .env_remove("SWITCHBOARD_KMS_KEY_ID")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env(
            "RUST_LOG",
            "warn,switchboard::pending_charge=info,switchboard_core::ledger::spool=info",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for slug in ["openai", "anthropic"] {
        command.env(
            format!("SWITCHBOARD_PROVIDER_KEY_{}", slug.to_uppercase()),
            system_key_for(slug),
        );
    }
    let mut child = command.spawn().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
    }
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while !healthy(&base).await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve did not start:\n{}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keys = prepare(&url, &upstream).await;

    // The load: chat (JSON, streamed) and Messages requests in a loop per client, and a
    // prober of other routes, until told to stop.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let running = Arc::new(AtomicBool::new(true));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (http, base, running) = (http.clone(), base.clone(), running.clone());
        let key = keys[c % ACCOUNTS].1.clone();
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut n = 0usize;
            while running.load(Ordering::Relaxed) {
                let id = format!("outage-{c}-{n}");
                let outcome = chat(&http, &base, &key, &id, c + n).await;
                if matches!(outcome, Seen::Refused { .. }) {
                    // Clients back off a little on a refusal.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                seen.push((id, outcome));
                n += 1;
            }
            seen
        }));
    }
    let prober = {
        let (http, base, running) = (http.clone(), base.clone(), running.clone());
        let (user_key, admin_key) = (keys[0].1.clone(), admin_key.clone());
        tokio::spawn(async move {
            let mut statuses: Vec<(String, u16, bool)> = Vec::new();
            while running.load(Ordering::Relaxed) {
                for (path, key) in [
                    ("/v1/account", &user_key),
                    ("/v1/models", &user_key),
                    ("/v1/byok", &user_key),
                    ("/v1/usage", &user_key),
                    ("/admin/users", &admin_key),
                    ("/admin/providers", &admin_key),
                    ("/admin/usage/summary?group_by=model", &admin_key),
                ] {
                    if let Ok(response) = http
                        .get(format!("{base}{path}"))
                        .bearer_auth(key)
                        .send()
                        .await
                    {
                        let retry_after = response.headers().contains_key("retry-after");
                        statuses.push((path.to_string(), response.status().as_u16(), retry_after));
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            statuses
        })
    };

    tokio::time::sleep(BEFORE).await;
    let outage_started = Instant::now();
    cluster.stop().unwrap();
    tokio::time::sleep(OUTAGE).await;
    cluster.resume().unwrap();
    eprintln!("database down for {:?}", outage_started.elapsed());
    tokio::time::sleep(AFTER).await;
    running.store(false, Ordering::Relaxed);
    let mut seen: Vec<(String, Seen)> = Vec::new();
    for client in clients {
        seen.extend(client.await.unwrap());
    }
    let probes = prober.await.unwrap();

    // What the clients saw.
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for (_, outcome) in &seen {
        if let Seen::Refused { status, .. } = outcome {
            *statuses.entry(*status).or_default() += 1;
        }
    }
    let delivered: Vec<(&str, Decimal, bool)> = seen
        .iter()
        .filter_map(|(id, s)| match s {
            Seen::Delivered { cost, pending } => Some((id.as_str(), *cost, *pending)),
            _ => None,
        })
        .collect();
    let pending = delivered.iter().filter(|(_, _, p)| *p).count();
    let broken = seen
        .iter()
        .filter(|(_, s)| matches!(s, Seen::Broken))
        .count();
    let mut probe_statuses: HashMap<u16, usize> = HashMap::new();
    for (_, status, _) in &probes {
        *probe_statuses.entry(*status).or_default() += 1;
    }
    eprintln!(
        "{} requests: {} delivered ({pending} with charge_pending), refused {statuses:?}, {broken} broken; {} probes {probe_statuses:?}",
        seen.len(),
        delivered.len(),
        probes.len()
    );

    // No 500 anywhere; every 503 asks the client to come back.
    assert_eq!(statuses.get(&500), None, "500s from the chat routes");
    assert_eq!(
        probe_statuses.get(&500),
        None,
        "500s from other routes: {probes:?}"
    );
    let unavailable = statuses.get(&503).copied().unwrap_or(0);
    assert!(unavailable > 0, "the outage was not seen: {statuses:?}");
    for (id, outcome) in &seen {
        if let Seen::Refused {
            status: 503,
            retry_after,
        } = outcome
        {
            assert!(retry_after, "{id}: a 503 without Retry-After");
        }
    }
    for (path, status, retry_after) in &probes {
        assert!(
            matches!(status, 200 | 503),
            "{path} answered {status} during the outage"
        );
        if *status == 503 {
            assert!(retry_after, "{path}: a 503 without Retry-After");
        }
    }
    assert_eq!(broken, 0, "broken answers: {seen:?}");

    // The spool drains once the database is back: no hold left, nothing kept.
    let client = connect(&url).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let spool = data_dir.join("spool");
    loop {
        let active: i64 = client
            .query_one(
                "SELECT count(*) FROM credit_holds WHERE state = 'active'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let kept = std::fs::read_dir(&spool)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name.starts_with("pending") || name.starts_with("draining"))
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            })
            .count();
        if active == 0 && kept == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{active} holds active and {kept} spool files 60 s after the outage:\n{}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        !spool.join("rejected.jsonl").exists(),
        "the ledger refused a pending charge"
    );
    // The spool was used: answers delivered while the database was down (per-request
    // holds: `charge_pending`; quota grants: their batch could not be written) were kept
    // there and written from it.
    let from_spool: u64 = log
        .lock()
        .unwrap()
        .lines()
        .filter(|line| line.contains("pending charges written from the spool"))
        .map(strip_ansi)
        .filter_map(|line| {
            let at = line.find("captured=")? + "captured=".len();
            let line = &line;
            line[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        pending > 0 || from_spool > 0,
        "no charge went through the spool: the outage was not exercised:\n{}",
        log.lock().unwrap()
    );

    // Every fully delivered answer is charged exactly once, at the cost it was told.
    let events: HashMap<String, Decimal> = client
        .query(
            "SELECT properties->>'request_id', (properties->>'charged_usd')::numeric FROM billing_events",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let successes: HashMap<String, Decimal> = client
        .query(
            "SELECT request_id, charged_usd FROM llm_usage_logs WHERE status_code = 200",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let twice = client
        .query(
            "SELECT request_id FROM llm_usage_logs WHERE status_code = 200
             GROUP BY request_id HAVING count(*) > 1
             UNION ALL
             SELECT properties->>'request_id' FROM billing_events GROUP BY 1 HAVING count(*) > 1",
            &[],
        )
        .await
        .unwrap();
    assert!(twice.is_empty(), "charged twice");
    for (id, cost, _) in &delivered {
        assert_eq!(events.get(*id), Some(cost), "{id}: billing event");
        assert_eq!(successes.get(*id), Some(cost), "{id}: usage row");
    }
    let recovered = delivered
        .iter()
        .filter(|(id, _, pending)| *pending && events.contains_key(*id))
        .count();
    for (user, _) in &keys {
        let report = switchboard_core::ledger::check_invariants(&client, user)
            .await
            .unwrap();
        assert_eq!(report.balance, report.sum_of_entries, "{user}: {report:?}");
        assert_eq!(report.active_holds, 0, "{user}: {report:?}");
    }
    let charged: Decimal = client
        .query_one(
            "SELECT coalesce(-sum(amount_usd), 0) FROM ledger_entries WHERE kind = 'capture'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let told: Decimal = delivered.iter().map(|(_, c, _)| *c).sum();
    assert_eq!(
        charged, told,
        "the ledger charged exactly what clients were told"
    );
    eprintln!(
        "0 × 500; {} answers charged exactly once; {pending} answered with charge_pending; {from_spool} captures written from the spool",
        delivered.len()
    );
    let _ = recovered;
    let log = log.lock().unwrap().clone();
    assert!(!log.contains("panicked"), "{log}");

    let _ = child.kill().await;
    cluster.stop().unwrap();
    let _ = std::fs::remove_dir_all(&root);
}
