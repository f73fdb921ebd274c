//! Chaos: two real `switchboard serve` processes on one database, a fake provider that
//! answers hundreds of randomly chosen faults (5xx, 429, connection resets, cut and
//! malformed streams, slow answers and slow streams), and 700 mixed requests (half of them
//! streamed) from clients of which about one in five gives up early. Afterwards the money
//! must be exact: no hold left active, every account's balance equal to the sum of its
//! entries, every answer the client fully received charged exactly once and at the cost it
//! was told, no request charged twice, nothing charged that the client was refused, and
//! the ledger, the usage log and the billing events in agreement to the last decimal.
//!
//! The fault plan is random but reproducible: the seed is printed, and `CHAOS_SEED=<n>`
//! replays it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchboard_tests::fake_upstream::{FakeUpstream, Reply, Step};
use switchboard_tests::gateway::system_key_for;
use switchboard_tests::test_db::TestDb;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

const ACCOUNTS: usize = 10;
const FAULT_STEPS: usize = 600;
const REQUESTS: usize = 700;
const CONCURRENCY: usize = 16;

const MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4-turbo",
    "claude-3-5-sonnet-20241022",
    "meta-llama/llama-3-70b-instruct",
    "gemini-2.0-flash",
    "auto",
];

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
}

async fn start_serve(db: &TestDb, name: &str) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data_dir = std::env::temp_dir().join(format!("sb-chaos-{}-{name}", std::process::id()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .arg("serve")
        .env("DATABASE_URL", db.url())
        .env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("SWITCHBOARD_DATA_DIR", &data_dir)
        .env("SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS", "1")
        .env("SWITCHBOARD_REQUEST_TIMEOUT_SECS", "4")
        .env("SWITCHBOARD_MAX_STREAM_SECS", "6")
        .env("SWITCHBOARD_BREAKER_THRESHOLD", "10")
        .env("SWITCHBOARD_BREAKER_COOLDOWN_SECS", "1")
        .env("SWITCHBOARD_HEALTH_CHECK_INTERVAL_SECS", "86400")
        .env_remove("SWITCHBOARD_KMS_KEY_ID")
        .env_remove("SWITCHBOARD_ADMIN_KEY")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for slug in ["openai", "anthropic", "google", "openrouter"] {
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
            "serve {name} did not start:\n{}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Server { child, base, log }
}

async fn healthy(base: &str) -> bool {
    match reqwest::get(format!("{base}/healthz")).await {
        Ok(response) => response.status() == 200,
        Err(_) => false,
    }
}

/// Points the seeded providers at the fake upstream, adds a Gemini model so that all three
/// wire formats are exercised, and creates the accounts; returns their gateway keys.
async fn prepare(db: &TestDb, upstream: &FakeUpstream) -> Vec<(String, String)> {
    let client = db.connect().await;
    for (slug, url) in [
        ("openai", upstream.openai_base_url()),
        ("anthropic", upstream.anthropic_base_url()),
        ("google", upstream.gemini_base_url()),
        ("openrouter", upstream.openai_base_url()),
    ] {
        client
            .execute(
                "UPDATE llm_providers SET base_url = $2, health_url = $2 || '/models' WHERE provider_slug = $1",
                &[&slug, &url],
            )
            .await
            .unwrap();
    }
    client
        .batch_execute(
            "UPDATE llm_providers SET is_active = false
                 WHERE provider_slug NOT IN ('openai', 'anthropic', 'google', 'openrouter');
             INSERT INTO llm_models (provider_id, model_name, model_id, context_window, max_tokens,
                 cost_per_1m_input_tokens, cost_per_1m_output_tokens, cost_per_1m_tokens_cached,
                 power_level, power_level_priority)
             SELECT id, 'Gemini 2.0 Flash', 'gemini-2.0-flash', 1000000, 8192, 0.10, 0.40, 0.025,
                 'eco', 20
             FROM llm_providers WHERE provider_slug = 'google';
             -- A second offer of gpt-4o, so that failures there fall back across providers.
             INSERT INTO llm_models (provider_id, model_name, model_id, context_window, max_tokens,
                 cost_per_1m_input_tokens, cost_per_1m_output_tokens, cost_per_1m_tokens_cached,
                 power_level_priority)
             SELECT id, 'GPT-4o (OpenRouter)', 'gpt-4o', 128000, 16384, 2.50, 10.00, 1.25, 50
             FROM llm_providers WHERE provider_slug = 'openrouter';",
        )
        .await
        .unwrap();
    let pooled = db.pool().get().await.unwrap();
    let mut keys = Vec::new();
    for i in 0..ACCOUNTS {
        let user = format!("chaos-{i}");
        client
            .execute(
                "INSERT INTO accounts (user_id, tier) VALUES ($1, 'enterprise')",
                &[&user],
            )
            .await
            .unwrap();
        switchboard_core::ledger::credit(
            &**pooled,
            &user,
            d("50"),
            switchboard_core::ledger::CreditKind::TopUp,
            &format!("chaos-topup-{i}"),
            None,
            None,
        )
        .await
        .unwrap();
        let key = switchboard_core::auth::generate_api_key();
        client
            .execute(
                "INSERT INTO gateway_api_keys (id, user_id, key_hash, key_prefix) VALUES ($1, $2, $3, $4)",
                &[&uuid::Uuid::new_v4(), &user, &key.hash.as_slice(), &key.display_prefix],
            )
            .await
            .unwrap();
        keys.push((user, key.plaintext.expose().to_string()));
    }
    keys
}

fn random_reply(rng: &mut StdRng) -> Reply {
    Reply::text("chaos ".repeat(rng.random_range(1..12))).with_usage(
        rng.random_range(5..3000),
        rng.random_range(1..400),
        0,
    )
}

/// One random provider behaviour; about two in three are faults.
fn random_step(rng: &mut StdRng) -> Step {
    let reply = random_reply(rng);
    match rng.random_range(0..100) {
        0..=33 => Step::reply(reply),
        34..=43 => Step::status(500),
        44..=50 => Step::status(503),
        51..=57 => Step::rate_limited("1"),
        58..=65 => Step::reset(),
        66..=73 => Step::cut_stream(reply, rng.random_range(1..5)),
        74..=78 => Step::Malformed,
        79..=88 => Step::delayed_reply(Duration::from_millis(rng.random_range(50..900)), reply),
        89..=96 => Step::slow_stream(reply, Duration::from_millis(rng.random_range(10..120))),
        _ => Step::status(400),
    }
}

/// What the client saw.
#[derive(Debug)]
enum Seen {
    /// A 200 fully received, with the cost the gateway reported for it.
    Charged(Decimal),
    /// A complete answer with a status other than 200 (nothing may be charged).
    Refused(u16),
    /// The client hung up before the answer was complete.
    GaveUp,
    /// The connection failed, or the stream ended with an error event.
    Unknown,
}

struct Plan {
    server: usize,
    user: usize,
    body: Value,
    power_level: Option<&'static str>,
    /// Give up after this long (buffered) or after this many chunks (streamed).
    abandon_after: Option<(Duration, usize)>,
}

fn random_plan(rng: &mut StdRng, servers: usize) -> Plan {
    let model = MODELS[rng.random_range(0..MODELS.len())];
    let stream = rng.random_bool(0.5);
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "chaos ".repeat(rng.random_range(1..40))}],
        "max_tokens": rng.random_range(16..512),
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    Plan {
        server: rng.random_range(0..servers),
        user: rng.random_range(0..ACCOUNTS),
        body,
        power_level: (model == "auto")
            .then(|| ["eco", "balanced", "precision"][rng.random_range(0..3)]),
        abandon_after: rng.random_bool(0.2).then(|| {
            (
                Duration::from_millis(rng.random_range(5..400)),
                rng.random_range(0..3),
            )
        }),
    }
}

async fn run_one(http: &reqwest::Client, base: &str, key: &str, id: &str, plan: &Plan) -> Seen {
    let stream = plan.body["stream"] == true;
    let mut request = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-request-id", id)
        .json(&plan.body);
    if let Some(level) = plan.power_level {
        request = request.header("x-power-level", level);
    }
    if !stream {
        if let Some((after, _)) = plan.abandon_after {
            request = request.timeout(after);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) if error.is_timeout() => return Seen::GaveUp,
            Err(_) => return Seen::Unknown,
        };
        let status = response.status().as_u16();
        let body = match response.json::<Value>().await {
            Ok(body) => body,
            Err(error) if error.is_timeout() => return Seen::GaveUp,
            Err(_) => return Seen::Unknown,
        };
        if status != 200 {
            return Seen::Refused(status);
        }
        return Seen::Charged(d(body["_metadata"]["cost_usd"].as_str().unwrap()));
    }
    let Ok(response) = request.send().await else {
        return Seen::Unknown;
    };
    let status = response.status().as_u16();
    if status != 200 {
        return match response.json::<Value>().await {
            Ok(_) => Seen::Refused(status),
            Err(_) => Seen::Unknown,
        };
    }
    let mut chunks = response.bytes_stream();
    let mut text = String::new();
    let mut received = 0usize;
    let started = Instant::now();
    while let Some(chunk) = chunks.next().await {
        let Ok(chunk) = chunk else {
            return Seen::Unknown;
        };
        text.push_str(&String::from_utf8_lossy(&chunk));
        received += 1;
        if let Some((after, chunks_before_leaving)) = plan.abandon_after
            && (received > chunks_before_leaving || started.elapsed() >= after)
        {
            // Hang up mid-stream: the body is dropped here.
            return Seen::GaveUp;
        }
    }
    let events = switchboard_tests::gateway::parse_sse(&text);
    let finished = events.last().is_some_and(|(_, data)| data == "[DONE]");
    let errored = events.iter().any(|(_, data)| data.contains("\"error\""));
    let metadata = events
        .iter()
        .filter_map(|(_, data)| serde_json::from_str::<Value>(data).ok())
        .find_map(|v| v.get("_metadata").cloned());
    match (finished, errored, metadata) {
        (true, false, Some(metadata)) => Seen::Charged(d(metadata["cost_usd"].as_str().unwrap())),
        _ => Seen::Unknown,
    }
}

/// `(request id, amount)` rows as a map.
async fn amounts_by_request(
    client: &tokio_postgres::Client,
    sql: &str,
) -> HashMap<String, Decimal> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn scalar_decimal(client: &tokio_postgres::Client, sql: &str) -> Decimal {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_stays_exact_under_random_faults_across_two_processes() {
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("chaos seed: {seed} (replay with CHAOS_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    let keys = prepare(&db, &upstream).await;
    for _ in 0..FAULT_STEPS {
        upstream.push(random_step(&mut rng));
    }
    upstream.set_default(Reply::text("calm again").with_usage(40, 12, 0));
    let mut servers = vec![start_serve(&db, "a").await, start_serve(&db, "b").await];

    let plans: Vec<Plan> = (0..REQUESTS)
        .map(|_| random_plan(&mut rng, servers.len()))
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let started = Instant::now();
    let seen: Vec<(String, Seen)> = futures_util::stream::iter(plans.iter().enumerate())
        .map(|(i, plan)| {
            let (http, bases, keys) = (&http, &bases, &keys);
            async move {
                let id = format!("chaos-req-{i}");
                let seen = run_one(http, &bases[plan.server], &keys[plan.user].1, &id, plan).await;
                (id, seen)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let charged: Vec<(&str, Decimal)> = seen
        .iter()
        .filter_map(|(id, s)| match s {
            Seen::Charged(cost) => Some((id.as_str(), *cost)),
            _ => None,
        })
        .collect();
    let refused: Vec<(&str, u16)> = seen
        .iter()
        .filter_map(|(id, s)| match s {
            Seen::Refused(status) => Some((id.as_str(), *status)),
            _ => None,
        })
        .collect();
    let unknown = seen
        .iter()
        .filter(|(_, s)| matches!(s, Seen::Unknown))
        .count();
    let gave_up = seen
        .iter()
        .filter(|(_, s)| matches!(s, Seen::GaveUp))
        .count();
    let abandoned = plans.iter().filter(|p| p.abandon_after.is_some()).count();
    eprintln!(
        "{REQUESTS} requests in {:?}: {} charged, {} refused ({:?}), {gave_up} abandoned by the client ({abandoned} planned), {unknown} broken; {} upstream calls, {} fault steps left",
        started.elapsed(),
        charged.len(),
        refused.len(),
        refused
            .iter()
            .fold(HashMap::<u16, usize>::new(), |mut m, (_, s)| {
                *m.entry(*s).or_default() += 1;
                m
            }),
        upstream.request_count(),
        upstream.pending_steps()
    );
    // The run must have exercised what it claims to.
    assert!(charged.len() >= 100, "too few answers to judge");
    assert!(!refused.is_empty(), "no request was refused");
    assert!(
        gave_up >= 30,
        "too few requests abandoned mid-way: {gave_up}"
    );
    assert_eq!(upstream.pending_steps(), 0, "every fault was served");

    // Abandoned work settles by itself, promptly.
    let client = db.connect().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let active: i64 = client
            .query_one(
                "SELECT count(*) FROM credit_holds WHERE state = 'active'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if active == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{active} holds still active 30 s after the last request"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every account: balance = sum of its entries, month spend = its captures.
    for (user, _) in &keys {
        let report = switchboard_core::ledger::check_invariants(&client, user)
            .await
            .unwrap();
        assert_eq!(report.balance, report.sum_of_entries, "{user}: {report:?}");
        assert_eq!(
            report.month_spend, report.month_captures,
            "{user}: {report:?}"
        );
        assert_eq!(report.active_holds, 0, "{user}: {report:?}");
    }

    // No request charged twice: one successful usage row and one billing event at most.
    let twice = client
        .query(
            "SELECT request_id FROM llm_usage_logs WHERE status_code = 200
             GROUP BY request_id HAVING count(*) > 1
             UNION ALL
             SELECT properties->>'request_id' FROM billing_events
             GROUP BY 1 HAVING count(*) > 1",
            &[],
        )
        .await
        .unwrap();
    assert!(
        twice.is_empty(),
        "charged twice: {:?}",
        twice
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    );

    // Every fully received 200: charged exactly once, at the cost the client was told.
    let events = amounts_by_request(
        &client,
        "SELECT properties->>'request_id', (properties->>'charged_usd')::numeric FROM billing_events",
    )
    .await;
    let successes = amounts_by_request(
        &client,
        "SELECT request_id, charged_usd FROM llm_usage_logs WHERE status_code = 200",
    )
    .await;
    for (id, cost) in &charged {
        assert_eq!(events.get(*id), Some(cost), "{id}: billing event");
        assert_eq!(successes.get(*id), Some(cost), "{id}: usage row");
    }
    // A request the client was refused with a status is charged nothing.
    let refused_ids: HashSet<&str> = refused.iter().map(|(id, _)| *id).collect();
    for id in &refused_ids {
        assert!(!events.contains_key(*id), "{id} was refused yet billed");
        assert!(
            !successes.contains_key(*id),
            "{id} was refused yet logged as a success"
        );
    }

    // The ledger, the usage log and the billing events agree to the last decimal.
    let ledger_charged = scalar_decimal(
        &client,
        "SELECT coalesce(-sum(amount_usd), 0) FROM ledger_entries WHERE kind IN ('capture', 'byok_fee')",
    )
    .await;
    let usage_charged = scalar_decimal(
        &client,
        "SELECT coalesce(sum(charged_usd), 0) FROM llm_usage_logs",
    )
    .await;
    let billed: Decimal = events.values().copied().sum();
    assert_eq!(ledger_charged, usage_charged);
    assert_eq!(ledger_charged, billed);
    let told: Decimal = charged.iter().map(|(_, c)| *c).sum();
    assert!(
        ledger_charged >= told,
        "the ledger holds at least what clients were told ({ledger_charged} < {told})"
    );
    let topped_up = Decimal::from(50 * ACCOUNTS as i64);
    let balances = scalar_decimal(&client, "SELECT sum(balance_usd) FROM accounts").await;
    assert_eq!(balances, topped_up - ledger_charged);

    // Both processes survived, and no charge was left pending (the database was fine).
    for server in &mut servers {
        assert!(healthy(&server.base).await, "a server died");
        assert!(server.child.try_wait().unwrap().is_none());
        let log = server.log.lock().unwrap().clone();
        assert!(
            !log.contains("pending_charge"),
            "a charge was left pending:\n{log}"
        );
        assert!(!log.contains("panicked"), "{log}");
    }
}
