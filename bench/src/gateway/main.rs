//! `gateway-bench`: what Switchboard adds to every request, measured against a baseline
//! taken in the same run — the same load sent straight to the fake upstream.
//!
//! One run starts a private PostgreSQL cluster (durable: `fsync` and `synchronous_commit`
//! on), migrates a fresh database with `switchboard migrate`, starts `bench-upstream`
//! (a canned OpenAI completion and SSE stream) and `switchboard serve` with the full ledger
//! path on (key auth, rate limits, hold, capture, usage log, billing event), then reports:
//! non-streamed latency direct vs through the gateway at concurrency 1, 32 and 128;
//! streamed time to first token; the highest request rate whose overhead p99 stays
//! ≤ 10 ms; peak RSS; PostgreSQL statements and commits per request; CPU per request of
//! each process; cold starts (`switchboard serve`, and the chat Lambda binary under a fake
//! Runtime API); release binary sizes.
//!
//! Run it with `scripts/bench` (which builds the release binaries and installs `oha`).
//! `gateway-bench --help` lists the options.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)] // a benchmark driver, not a service: failing loudly is the right answer

mod cargo_lambda;
mod lambda;
mod load;
mod peer;
mod pg;
mod procs;
mod ttft;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use switchboard_core::auth::generate_api_key;
use switchboard_core::ledger::{self, CreditKind};
use tokio::process::Command;
use tokio_postgres::Client;

use load::{LoadResult, Shape, Target};
use procs::Proc;

const BENCH_DB: &str = "switchboard_bench";
const BENCH_USER: &str = "bench";
const UPSTREAM_KEY: &str = "sk-bench-upstream-0123456789abcdef";
const ADMIN_KEY: &str = "sk-sb-benchadmin0123456789abcdef0123456789abcdef";
/// The bench reads `serve`'s `/metrics` with it (the time split of the profile run).
const METRICS_TOKEN: &str = "bench-metrics-token-0123456789";
/// The overhead p99 a sustained rate must keep (the definition of "sustained").
const RATE_OVERHEAD_P99_MS: f64 = 10.0;

/// A typical small chat request: a system prompt, one user turn, a short answer.
fn chat_body(stream: bool) -> String {
    let mut body = serde_json::json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a concise assistant for a travel booking site. Answer in one short paragraph and never invent prices."},
            {"role": "user", "content": "Which documents do I need to bring for a domestic flight, and how early should I arrive at the airport?"}
        ],
        "max_tokens": 64,
        "temperature": 0.2
    });
    if stream {
        body["stream"] = serde_json::Value::Bool(true);
    }
    body.to_string()
}

struct Options {
    duration: Duration,
    rate_duration: Duration,
    rates: Vec<u32>,
    cold_runs: usize,
    ttft_requests: usize,
    bin_dir: PathBuf,
    work_dir: PathBuf,
    out: PathBuf,
    serve_env: Vec<(String, String)>,
    skip_info: bool,
    /// Only a closed loop at concurrency 32 for this long (run a profiler beside it).
    profile: Option<Duration>,
    /// `switchboard` binary to serve with (default: BIN_DIR/switchboard).
    serve_bin: Option<PathBuf>,
    /// The upstream's latency in the second closed-loop set.
    upstream_latency: Duration,
    /// With `--profile`: an open loop at this rate instead of the closed loop.
    profile_rate: Option<u32>,
    /// With `--profile`: the upstream answers after `--upstream-latency`.
    profile_slow_upstream: bool,
    /// With `--profile`: streamed requests.
    profile_stream: bool,
    /// With `--profile --profile-rate`: no direct baseline run first.
    no_direct: bool,
    /// The port `switchboard serve` listens on (default: a free one).
    serve_port: Option<u16>,
}

const HELP: &str = "gateway-bench [options]
  --duration SECS        each closed-loop load run (default 10)
  --rate-duration SECS   each step of the rate search (default 6)
  --rates LIST           rates to try in order, comma-separated; the search stops after two
                         failures in a row (default 200,400,600,800,1000,1200,1500,2000,2500)
  --cold-runs N          cold starts to time, each kind (default 5)
  --ttft N               streamed requests each way for time to first token (default 300)
  --quick                short runs (3 s, 3 cold starts, 100 streams): a smoke test of the benchmark
  --bin-dir DIR          where the release binaries are (default target/release)
  --work-dir DIR         cluster, logs and results (default target/bench)
  --out FILE             the Markdown report (default WORK_DIR/results.md)
  --serve-env K=V        extra environment for `switchboard serve` (repeatable)
  --serve-bin FILE       the `switchboard` binary to serve with (a build with symbols, to profile)
  --skip-info            skip the run with RUST_LOG=info
  --upstream-latency MS  the fake upstream's latency in the second closed-loop set (default 50)
  --profile SECS         only warm up, then a closed loop at concurrency 32 for SECS (to profile
                         beside it: the pids are printed first)
  --profile-rate RATE    with --profile: an open loop at RATE requests/s instead
  --profile-slow-upstream  with --profile: the upstream answers after --upstream-latency
  --profile-stream       with --profile: streamed requests
  --no-direct            with --profile-rate: skip the direct baseline run
  --serve-port PORT      the port serve listens on (default: a free one; a scraper's target)
Environment: BENCH_DATABASE_URL (use that server's maintenance database instead of a private
cluster), OHA (path of oha).";

fn options() -> Options {
    let mut o = Options {
        duration: Duration::from_secs(10),
        rate_duration: Duration::from_secs(6),
        rates: vec![200, 400, 600, 800, 1000, 1200, 1500, 2000, 2500],
        cold_runs: 5,
        ttft_requests: 300,
        bin_dir: PathBuf::from("target/release"),
        work_dir: PathBuf::from("target/bench"),
        out: PathBuf::new(),
        serve_env: Vec::new(),
        skip_info: false,
        profile: None,
        serve_bin: None,
        upstream_latency: Duration::from_millis(50),
        profile_rate: None,
        profile_slow_upstream: false,
        profile_stream: false,
        no_direct: false,
        serve_port: None,
    };
    let mut args = std::env::args().skip(1);
    let secs = |v: Option<String>| Duration::from_secs_f64(v.unwrap().parse().unwrap());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--duration" => o.duration = secs(args.next()),
            "--rate-duration" => o.rate_duration = secs(args.next()),
            "--rates" => {
                o.rates = args
                    .next()
                    .unwrap()
                    .split(',')
                    .map(|r| r.trim().parse().unwrap())
                    .collect()
            }
            "--cold-runs" => o.cold_runs = args.next().unwrap().parse().unwrap(),
            "--ttft" => o.ttft_requests = args.next().unwrap().parse().unwrap(),
            "--quick" => {
                o.duration = Duration::from_secs(3);
                o.rate_duration = Duration::from_secs(3);
                o.cold_runs = 3;
                o.ttft_requests = 100;
            }
            "--bin-dir" => o.bin_dir = PathBuf::from(args.next().unwrap()),
            "--work-dir" => o.work_dir = PathBuf::from(args.next().unwrap()),
            "--out" => o.out = PathBuf::from(args.next().unwrap()),
            "--serve-env" => {
                let pair = args.next().unwrap();
                let (k, v) = pair.split_once('=').expect("--serve-env K=V");
                o.serve_env.push((k.to_string(), v.to_string()));
            }
            "--skip-info" => o.skip_info = true,
            "--profile" => o.profile = Some(secs(args.next())),
            "--profile-rate" => o.profile_rate = Some(args.next().unwrap().parse().unwrap()),
            "--profile-slow-upstream" => o.profile_slow_upstream = true,
            "--profile-stream" => o.profile_stream = true,
            "--no-direct" => o.no_direct = true,
            "--serve-port" => o.serve_port = Some(args.next().unwrap().parse().unwrap()),
            "--serve-bin" => o.serve_bin = Some(PathBuf::from(args.next().unwrap())),
            "--upstream-latency" => {
                o.upstream_latency = Duration::from_millis(args.next().unwrap().parse().unwrap())
            }
            "--help" | "-h" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => panic!("unknown option {other}\n{HELP}"),
        }
    }
    // Absolute paths: the cluster runs as another user from `/`.
    std::fs::create_dir_all(&o.work_dir).unwrap();
    o.work_dir = o.work_dir.canonicalize().unwrap();
    o.bin_dir = o.bin_dir.canonicalize().unwrap_or(o.bin_dir);
    if o.out.as_os_str().is_empty() {
        o.out = o.work_dir.join("results.md");
    }
    o
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part / whole
    } else {
        0.0
    }
}

/// What one gateway load run cost, beyond its latencies.
#[derive(Default, Clone)]
struct Costs {
    /// Captures written (billing events): the successful requests the ledger saw.
    captured: i64,
    statements: i64,
    commits: i64,
    top_statements: Vec<(i64, f64, String)>,
    functions: Vec<(String, i64)>,
    cpu_gateway: Duration,
    cpu_postgres: Duration,
    cpu_upstream: Duration,
    cpu_oha: Duration,
    machine_busy: f64,
    /// From `serve`'s own metrics (`None` with metrics off): mean ms per chat request of
    /// (total, gateway overhead, upstream wait, ledger wait).
    split: Option<(f64, f64, f64, f64)>,
}

/// (sum, count) of each histogram of the chat route in a `/metrics` scrape.
async fn chat_histograms(port: u16) -> Option<HashMap<String, (f64, f64)>> {
    let text = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .text()
        .await
        .ok()?;
    let mut out: HashMap<String, (f64, f64)> = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || !line.contains("route=\"/v1/chat/completions\"") {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or_default();
        if let Some(base) = name.strip_suffix("_sum") {
            out.entry(base.to_string()).or_default().0 += value;
        } else if let Some(base) = name.strip_suffix("_count") {
            out.entry(base.to_string()).or_default().1 += value;
        }
    }
    Some(out)
}

/// Mean ms per request of each histogram between two scrapes, per chat request counted.
fn split_between(
    before: &HashMap<String, (f64, f64)>,
    after: &HashMap<String, (f64, f64)>,
) -> Option<(f64, f64, f64, f64)> {
    let delta = |name: &str| {
        let (s1, c1) = after.get(name).copied().unwrap_or_default();
        let (s0, c0) = before.get(name).copied().unwrap_or_default();
        (s1 - s0, c1 - c0)
    };
    let (total, n) = delta("switchboard_request_duration_seconds");
    if n <= 0.0 {
        return None;
    }
    let ms = |name: &str| delta(name).0 / n * 1000.0;
    Some((
        total / n * 1000.0,
        ms("switchboard_gateway_overhead_seconds"),
        ms("switchboard_upstream_duration_seconds"),
        ms("switchboard_db_duration_seconds"),
    ))
}

struct Bench {
    options: Options,
    oha: PathBuf,
    postgres: pg::Postgres,
    admin: Client,
    bench: Client,
    upstream: Proc,
    upstream_url: String,
    /// The upstream's answer delay for the direct baseline (`None`: instant).
    upstream_delay: Option<Duration>,
    key: String,
    serve_port: u16,
    logs: PathBuf,
    report: String,
}

impl Bench {
    fn serve_env(&self, rust_log: &str) -> HashMap<String, String> {
        let mut env: HashMap<String, String> = [
            ("DATABASE_URL", self.postgres.url_of(BENCH_DB)),
            (
                "SWITCHBOARD_LISTEN",
                format!("127.0.0.1:{}", self.serve_port),
            ),
            ("SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS", "1".into()),
            ("SWITCHBOARD_PROVIDER_KEY_OPENAI", UPSTREAM_KEY.into()),
            ("SWITCHBOARD_ADMIN_KEY", ADMIN_KEY.into()),
            (
                "SWITCHBOARD_DATA_DIR",
                self.options.work_dir.join("data").to_string_lossy().into(),
            ),
            ("SWITCHBOARD_HEALTH_CHECK_INTERVAL_SECS", "86400".into()),
            ("SWITCHBOARD_METRICS_TOKEN", METRICS_TOKEN.into()),
            ("RUST_LOG", rust_log.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in &self.options.serve_env {
            env.insert(k.clone(), v.clone());
        }
        env
    }

    fn gateway_target(&self, stream: bool) -> Target {
        Target {
            url: format!("http://127.0.0.1:{}/v1/chat/completions", self.serve_port),
            headers: vec![
                "content-type: application/json".into(),
                format!("authorization: Bearer {}", self.key),
            ],
            body: chat_body(stream),
        }
    }

    /// The upstream base URL the gateway is pointed at (with the current delay).
    fn upstream_base(&self) -> String {
        match self.upstream_delay {
            None => self.upstream_url.clone(),
            Some(delay) => self
                .upstream_url
                .replace("/v1", &format!("/delay/{}/v1", delay.as_millis())),
        }
    }

    /// Points the OpenAI provider at the upstream with `delay` (applies to servers started
    /// afterwards: the catalog is loaded at the first request).
    async fn set_upstream_delay(&mut self, delay: Option<Duration>) {
        self.upstream_delay = delay;
        let base = self.upstream_base();
        self.bench
            .execute(
                "UPDATE llm_providers SET base_url = $1 WHERE provider_slug = 'openai'",
                &[&base],
            )
            .await
            .unwrap();
    }

    fn direct_target(&self, stream: bool) -> Target {
        Target {
            url: format!("{}/chat/completions", self.upstream_base()),
            headers: vec![
                "content-type: application/json".into(),
                format!("authorization: Bearer {UPSTREAM_KEY}"),
            ],
            body: chat_body(stream),
        }
    }

    fn spawn_serve(&self, rust_log: &str, label: &str, extra: &[(&str, &str)]) -> Proc {
        let binary = self
            .options
            .serve_bin
            .clone()
            .unwrap_or_else(|| self.options.bin_dir.join("switchboard"));
        let mut command = Command::new(binary);
        command.arg("serve").env_clear();
        for key in ["PATH", "HOME"] {
            if let Ok(value) = std::env::var(key) {
                command.env(key, value);
            }
        }
        command.envs(self.serve_env(rust_log));
        command.envs(extra.iter().copied());
        Proc::spawn(
            "switchboard serve",
            command,
            &self.logs.join(format!("serve-{label}.log")),
        )
    }

    /// Starts `switchboard serve` and waits for its first successful chat completion:
    /// (time to accept connections, time to the first 200).
    async fn start_serve(&self, rust_log: &str, label: &str) -> (Proc, Duration, Duration) {
        self.start_serve_with(rust_log, label, &[]).await
    }

    /// [`Self::start_serve`] with more environment (after `--serve-env`).
    async fn start_serve_with(
        &self,
        rust_log: &str,
        label: &str,
        extra: &[(&str, &str)],
    ) -> (Proc, Duration, Duration) {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let target = self.gateway_target(false);
        let started = Instant::now();
        let mut serve = self.spawn_serve(rust_log, label, extra);
        let mut listening = None;
        loop {
            if !serve.alive() {
                panic!("switchboard serve exited:\n{}", serve.log_tail());
            }
            if started.elapsed() > Duration::from_secs(60) {
                panic!(
                    "switchboard serve not ready after 60 s:\n{}",
                    serve.log_tail()
                );
            }
            let answer = client
                .post(&target.url)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {}", self.key))
                .body(target.body.clone())
                .send()
                .await;
            match answer {
                Ok(response) => {
                    let at = started.elapsed();
                    listening.get_or_insert(at);
                    let status = response.status();
                    if status.is_success() {
                        return (serve, listening.unwrap_or(at), at);
                    }
                    let text = response.text().await.unwrap_or_default();
                    panic!("switchboard serve answered {status}: {text}");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }

    async fn captured(&self) -> i64 {
        self.bench
            .query_one("SELECT count(*) FROM billing_events", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// The same load through the peer gateway, when it runs.
    async fn peer(&self, portkey: Option<&peer::Portkey>, shape: Shape) -> Option<LoadResult> {
        let target = portkey?.target(&self.upstream_base(), chat_body(false));
        Some(load::run(&self.oha, &target, shape).await)
    }

    async fn direct(&self, stream: bool, shape: Shape) -> (LoadResult, Costs) {
        let upstream_before = self.upstream.cpu();
        let machine_before = procs::machine_ticks();
        let result = load::run(&self.oha, &self.direct_target(stream), shape).await;
        let machine_after = procs::machine_ticks();
        let costs = Costs {
            cpu_upstream: self.upstream.cpu().saturating_sub(upstream_before),
            cpu_oha: result.oha_cpu,
            machine_busy: percent(
                (machine_after.0 - machine_before.0) as f64,
                (machine_after.1 - machine_before.1) as f64,
            ),
            ..Costs::default()
        };
        (result, costs)
    }

    async fn gateway(&self, serve: &Proc, stream: bool, shape: Shape) -> (LoadResult, Costs) {
        pg::settle_stats().await;
        pg::reset_stats(&self.admin).await;
        let before_stats = pg::statement_stats(&self.admin, BENCH_DB).await;
        let before_functions = pg::function_calls(&self.bench).await;
        let captured_before = self.captured().await;
        let pg_pid = self.postgres.postmaster_pid();
        let pg_before = pg_pid.map(procs::tree_cpu_time).unwrap_or_default();
        let serve_before = serve.cpu();
        let upstream_before = self.upstream.cpu();
        let machine_before = procs::machine_ticks();
        let metrics_before = chat_histograms(self.serve_port).await;

        let result = load::run(&self.oha, &self.gateway_target(stream), shape).await;
        let metrics_after = chat_histograms(self.serve_port).await;

        let machine_after = procs::machine_ticks();
        let serve_after = serve.cpu();
        let upstream_after = self.upstream.cpu();
        let pg_after = pg_pid.map(procs::tree_cpu_time).unwrap_or_default();
        let stats = pg::statement_stats(&self.admin, BENCH_DB).await;
        let captured = self.captured().await - captured_before;
        pg::settle_stats().await;
        let after_stats = pg::statement_stats(&self.admin, BENCH_DB).await;
        let after_functions = pg::function_calls(&self.bench).await;
        let functions = after_functions
            .iter()
            .map(|(name, calls)| {
                let before = before_functions
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, c)| *c)
                    .unwrap_or(0);
                (name.clone(), calls - before)
            })
            .filter(|(_, calls)| *calls > 0)
            .collect();
        // Our own statements (count(*), the function list) are on the bench database too:
        // subtract them.
        let own = stats
            .by_query
            .iter()
            .filter(|(_, _, q)| q.contains("billing_events") && q.contains("count"))
            .map(|(c, _, _)| c)
            .sum::<i64>();
        let costs = Costs {
            captured,
            statements: stats.total_calls - before_stats.total_calls - own,
            // 3 of our own statements commit on the bench database in between.
            commits: after_stats.xact_commit - before_stats.xact_commit - 3,
            top_statements: stats
                .by_query
                .iter()
                .filter(|(_, _, q)| !(q.contains("billing_events") && q.contains("count")))
                .take(6)
                .cloned()
                .collect(),
            functions,
            cpu_gateway: serve_after.saturating_sub(serve_before),
            cpu_postgres: pg_after.saturating_sub(pg_before),
            cpu_upstream: upstream_after.saturating_sub(upstream_before),
            cpu_oha: result.oha_cpu,
            machine_busy: percent(
                (machine_after.0 - machine_before.0) as f64,
                (machine_after.1 - machine_before.1) as f64,
            ),
            split: metrics_before
                .zip(metrics_after)
                .and_then(|(before, after)| split_between(&before, &after)),
        };
        (result, costs)
    }

    fn line(&mut self, text: impl AsRef<str>) {
        println!("{}", text.as_ref());
        self.report.push_str(text.as_ref());
        self.report.push('\n');
    }
}

/// The peer's overhead (against the same run's direct figures) and throughput cells.
fn peer_cells(peer: Option<&LoadResult>, direct: &LoadResult) -> String {
    match peer {
        Some(p) => format!(
            "{:.2} / {:.2} | {:.0}{}",
            p.p50_ms - direct.p50_ms,
            p.p99_ms - direct.p99_ms,
            p.rps,
            if p.failed > 0 {
                format!(" ({} errors)", p.failed)
            } else {
                String::new()
            }
        ),
        None => "— | —".into(),
    }
}

fn per_request_us(cpu: Duration, requests: i64) -> f64 {
    if requests > 0 {
        cpu.as_secs_f64() * 1e6 / requests as f64
    } else {
        f64::NAN
    }
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn setup_database(postgres: &pg::Postgres, bin_dir: &Path, logs: &Path) -> Duration {
    let admin = pg::connect(&postgres.admin_url).await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {BENCH_DB}"))
        .await
        .unwrap();
    let _ = admin
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await;
    let started = Instant::now();
    let output = std::process::Command::new(bin_dir.join("switchboard"))
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", postgres.url_of(BENCH_DB))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run switchboard migrate");
    let took = started.elapsed();
    std::fs::write(logs.join("migrate.log"), &output.stderr).unwrap();
    assert!(
        output.status.success(),
        "switchboard migrate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    took
}

/// Points the OpenAI provider at the fake upstream with limits far above the benchmark's
/// rates (the limits stay on: they are checked on every request), and creates the bench
/// account (a large balance) and its key (a high `rpm_limit`).
async fn seed(bench: &Client, upstream_url: &str) -> String {
    bench
        .execute(
            "UPDATE llm_providers SET base_url = $1, health_url = $1 || '/models',
                    rate_limit_rpm = 1000000000, rate_limit_tpm = 2000000000
             WHERE provider_slug = 'openai'",
            &[&upstream_url],
        )
        .await
        .unwrap();
    bench
        .execute(
            "INSERT INTO accounts (user_id, tier) VALUES ($1, 'enterprise')",
            &[&BENCH_USER],
        )
        .await
        .unwrap();
    ledger::credit(
        bench,
        BENCH_USER,
        Decimal::from_str("1000000").unwrap(),
        CreditKind::TopUp,
        "bench-topup",
        None,
        None,
    )
    .await
    .unwrap();
    let key = generate_api_key();
    bench
        .execute(
            "INSERT INTO gateway_api_keys (id, user_id, name, key_hash, key_prefix, role, rpm_limit)
             VALUES ($1, $2, 'bench', $3, $4, 'user', 1000000000)",
            &[
                &uuid::Uuid::new_v4(),
                &BENCH_USER,
                &key.hash.as_slice(),
                &key.display_prefix,
            ],
        )
        .await
        .unwrap();
    key.plaintext.expose().to_string()
}

async fn start_upstream(bin_dir: &Path, logs: &Path) -> (Proc, String) {
    let port = procs::free_port();
    let mut command = Command::new(bin_dir.join("bench-upstream"));
    command.arg(format!("127.0.0.1:{port}"));
    let upstream = Proc::spawn("bench-upstream", command, &logs.join("upstream.log"));
    let url = format!("http://127.0.0.1:{port}/v1");
    let client = reqwest::Client::new();
    for _ in 0..500 {
        if client
            .get(format!("{url}/models"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return (upstream, url);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("bench-upstream did not start:\n{}", upstream.log_tail());
}

#[tokio::main]
async fn main() {
    let options = options();
    let oha = load::find_oha().expect(
        "oha not found: `cargo install oha --version =1.16.0 --locked` (scripts/bench does it)",
    );
    for binary in ["switchboard", "bench-upstream", "chat"] {
        let path = options.bin_dir.join(binary);
        assert!(
            path.is_file(),
            "{} is missing: build it with `cargo build --release --workspace --bins` (scripts/bench does it)",
            path.display()
        );
    }
    let logs = options.work_dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let _ = std::fs::remove_dir_all(options.work_dir.join("data"));

    let still_busy = procs::wait_for_quiet(Duration::from_secs(600)).await;
    let load_before = procs::load_average();

    let postgres = pg::Postgres::start(&options.work_dir);
    let migrate_time = setup_database(&postgres, &options.bin_dir, &logs).await;
    let admin = pg::connect(&postgres.admin_url).await;
    let bench_client = pg::connect(&postgres.url_of(BENCH_DB)).await;
    let pg_settings = pg::settings(&admin).await;
    let (upstream, upstream_url) = start_upstream(&options.bin_dir, &logs).await;
    let key = seed(&bench_client, &upstream_url).await;

    let mut b = Bench {
        oha,
        postgres,
        admin,
        bench: bench_client,
        upstream,
        upstream_url,
        upstream_delay: None,
        key,
        serve_port: options.serve_port.unwrap_or_else(procs::free_port),
        logs,
        report: String::new(),
        options,
    };

    let now = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    b.line(format!("# Gateway benchmark, {now}"));
    b.line("");
    b.line(format!(
        "{cores} cores shared by the load generator (oha), the fake upstream, `switchboard serve` and PostgreSQL; \
         load average before: {load_before}{}.",
        if still_busy.is_empty() {
            String::new()
        } else {
            format!(" — **other heavy processes were running: {}**", still_busy.join(", "))
        }
    ));
    b.line(format!(
        "PostgreSQL: {} ({pg_settings}). Closed-loop runs: {} s each; rate steps: {} s each.",
        if b.postgres.is_private() {
            "private cluster"
        } else {
            "BENCH_DATABASE_URL"
        },
        b.options.duration.as_secs_f64(),
        b.options.rate_duration.as_secs_f64()
    ));
    let answer = reqwest::Client::new()
        .post(b.direct_target(false).url)
        .body(chat_body(false))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    b.line(format!(
        "Request: `gpt-4o`, a system and a user message, `max_tokens` 64 ({} bytes); the upstream's answer: {answer} bytes.",
        chat_body(false).len(),
    ));
    b.line("");

    if let Some(window) = b.options.profile {
        if b.options.profile_slow_upstream {
            b.set_upstream_delay(Some(b.options.upstream_latency)).await;
        }
        let (serve, _, _) = b.start_serve("warn", "profile").await;
        let warm = Shape {
            concurrency: 32,
            duration: Duration::from_secs(3),
            rate: None,
        };
        let stream = b.options.profile_stream;
        b.gateway(&serve, stream, warm).await;
        eprintln!(
            "profile window: {} s; switchboard serve pid {}, postmaster pid {}, bench-upstream pid {}",
            window.as_secs_f64(),
            serve.pid,
            b.postgres.postmaster_pid().unwrap_or(0),
            b.upstream.pid
        );
        let shape = Shape {
            concurrency: if b.options.profile_rate.is_some() {
                256
            } else {
                32
            },
            duration: window,
            rate: b.options.profile_rate,
        };
        if shape.rate.is_some() && !b.options.no_direct {
            let direct = b.direct(stream, shape).await.0;
            eprintln!(
                "direct at {:?}/s: p50 {:.2} ms, p99 {:.2} ms",
                shape.rate, direct.p50_ms, direct.p99_ms
            );
        }
        let (result, costs) = b.gateway(&serve, stream, shape).await;
        let n = costs.captured;
        eprintln!(
            "gateway: p50 {:.2} ms, p99 {:.2} ms, {:.0} req/s; CPU µs/req: gateway {:.0}, postgres {:.0}, upstream {:.0}, oha {:.0}; {:.2} statements/req; busy {:.0} %",
            result.p50_ms,
            result.p99_ms,
            result.rps,
            per_request_us(costs.cpu_gateway, n),
            per_request_us(costs.cpu_postgres, n),
            per_request_us(costs.cpu_upstream, n),
            per_request_us(costs.cpu_oha, n),
            costs.statements as f64 / n as f64,
            costs.machine_busy
        );
        for (calls, mean, query) in &costs.top_statements {
            eprintln!("  {calls} × {mean:.3} ms  {query:.100}");
        }
        if let Some((total, overhead, upstream, db)) = costs.split {
            eprintln!(
                "serve's own metrics, mean per request: total {total:.3} ms = upstream {upstream:.3} + gateway {overhead:.3} (of which waiting for the ledger {db:.3})"
            );
        }
        serve.stop(Duration::from_secs(5)).await;
        b.upstream.stop(Duration::from_secs(2)).await;
        return;
    }

    // ---------------------------------------------------------------- cold start
    let mut listening = Vec::new();
    let mut first_ok = Vec::new();
    let mut idle_rss = 0;
    for i in 0..b.options.cold_runs {
        let (serve, l, f) = b.start_serve("warn", &format!("cold-{i}")).await;
        idle_rss = serve.rss_kb();
        listening.push(l);
        first_ok.push(f);
        serve.stop(Duration::from_secs(5)).await;
    }

    // ---------------------------------------------------------------- closed-loop latency
    let (serve, _, _) = b.start_serve("warn", "load").await;
    // Warm-up: connections, pool, caches, allocator.
    let warm = Shape {
        concurrency: 32,
        duration: Duration::from_secs(3),
        rate: None,
    };
    b.direct(false, warm).await;
    b.gateway(&serve, false, warm).await;
    let portkey = peer::Portkey::start(&b.upstream_base(), &chat_body(false), &b.logs).await;
    b.peer(portkey.as_ref(), warm).await;

    let mut rows = Vec::new();
    for concurrency in [1usize, 32, 128] {
        let shape = Shape {
            concurrency,
            duration: b.options.duration,
            rate: None,
        };
        let direct = b.direct(false, shape).await;
        let gateway = b.gateway(&serve, false, shape).await;
        let peer = b.peer(portkey.as_ref(), shape).await;
        if let Some(p) = &peer {
            eprintln!(
                "c={concurrency}: Portkey p50 {:.3} p99 {:.3} ({:.0}/s) {}",
                p.p50_ms, p.p99_ms, p.rps, p.statuses
            );
        }
        eprintln!(
            "c={concurrency}: direct p50 {:.3} p99 {:.3} ({:.0}/s); gateway p50 {:.3} p99 {:.3} ({:.0}/s) {}",
            direct.0.p50_ms,
            direct.0.p99_ms,
            direct.0.rps,
            gateway.0.p50_ms,
            gateway.0.p99_ms,
            gateway.0.rps,
            gateway.0.statuses
        );
        rows.push((concurrency, direct, gateway, peer));
    }

    // ---------------------------------------------------------------- streaming
    let ttft = ttft::measure(
        &b.direct_target(true),
        &b.gateway_target(true),
        b.options.ttft_requests,
    )
    .await;
    let stream_shape = Shape {
        concurrency: 32,
        duration: b.options.duration,
        rate: None,
    };
    let stream_direct = b.direct(true, stream_shape).await;
    let stream_gateway = b.gateway(&serve, true, stream_shape).await;

    // ---------------------------------------------------------------- rate search
    let mut rate_rows = Vec::new();
    let mut best_rate = None;
    let mut failures = 0;
    for &rate in &b.options.rates.clone() {
        let shape = Shape {
            concurrency: 256,
            duration: b.options.rate_duration,
            rate: Some(rate),
        };
        let direct = b.direct(false, shape).await.0;
        let (gateway, costs) = b.gateway(&serve, false, shape).await;
        let overhead = gateway.p99_ms - direct.p99_ms;
        let kept_up = gateway.rps >= 0.95 * f64::from(rate) && gateway.failed == 0;
        let pass = kept_up && overhead <= RATE_OVERHEAD_P99_MS;
        eprintln!(
            "rate {rate}/s: direct p99 {:.2} ms, gateway p99 {:.2} ms ({:.0}/s achieved, {} failed): {}",
            direct.p99_ms,
            gateway.p99_ms,
            gateway.rps,
            gateway.failed,
            if pass { "ok" } else { "over" }
        );
        rate_rows.push((rate, direct, gateway, costs, pass));
        if pass {
            best_rate = Some(rate);
            failures = 0;
        } else {
            // One p99 over the line can be a stall of the shared machine: stop at the second.
            failures += 1;
            if failures == 2 {
                break;
            }
        }
    }
    let peak_rss = serve.peak_rss_kb();
    serve.stop(Duration::from_secs(5)).await;

    // ---------------------------------------------------------------- per-request holds
    // The ledger path without quota grants: what every request of a Lambda function takes
    // (one admission and one capture statement), and `serve` with grants off.
    let (serve, _, _) = b
        .start_serve_with("warn", "per-request", &[("SWITCHBOARD_LEDGER_GRANTS", "0")])
        .await;
    b.gateway(&serve, false, warm).await;
    let mut per_request_rows = Vec::new();
    for concurrency in [1usize, 32] {
        let shape = Shape {
            concurrency,
            duration: b.options.duration,
            rate: None,
        };
        let direct = b.direct(false, shape).await;
        let gateway = b.gateway(&serve, false, shape).await;
        eprintln!(
            "per-request holds, c={concurrency}: direct p50 {:.3} p99 {:.3} ({:.0}/s); gateway p50 {:.3} p99 {:.3} ({:.0}/s) {}",
            direct.0.p50_ms,
            direct.0.p99_ms,
            direct.0.rps,
            gateway.0.p50_ms,
            gateway.0.p99_ms,
            gateway.0.rps,
            gateway.0.statuses
        );
        per_request_rows.push((concurrency, direct, gateway));
    }
    serve.stop(Duration::from_secs(5)).await;

    // ---------------------------------------------------------------- upstream with latency
    b.set_upstream_delay(Some(b.options.upstream_latency)).await;
    let (serve, _, _) = b.start_serve("warn", "latency").await;
    b.gateway(&serve, false, warm).await;
    let mut latency_rows = Vec::new();
    for concurrency in [1usize, 32, 128] {
        let shape = Shape {
            concurrency,
            duration: b.options.duration,
            rate: None,
        };
        let direct = b.direct(false, shape).await;
        let gateway = b.gateway(&serve, false, shape).await;
        let peer = b.peer(portkey.as_ref(), shape).await;
        eprintln!(
            "upstream latency, c={concurrency}: direct p50 {:.3} p99 {:.3} ({:.0}/s); gateway p50 {:.3} p99 {:.3} ({:.0}/s) {}",
            direct.0.p50_ms,
            direct.0.p99_ms,
            direct.0.rps,
            gateway.0.p50_ms,
            gateway.0.p99_ms,
            gateway.0.rps,
            gateway.0.statuses
        );
        latency_rows.push((concurrency, direct, gateway, peer));
    }
    let latency_peak_rss = serve.peak_rss_kb();
    serve.stop(Duration::from_secs(5)).await;
    b.set_upstream_delay(None).await;
    let portkey_peak_rss = portkey.as_ref().map(|p| p.proc.peak_rss_kb());
    if let Some(portkey) = portkey {
        portkey.proc.stop(Duration::from_secs(2)).await;
    }

    // ---------------------------------------------------------------- info-level logging
    let info = if b.options.skip_info {
        None
    } else {
        let (serve, _, _) = b.start_serve("info", "info").await;
        let shape = Shape {
            concurrency: 32,
            duration: b.options.duration,
            rate: None,
        };
        b.gateway(&serve, false, warm).await;
        let direct = b.direct(false, shape).await.0;
        let gateway = b.gateway(&serve, false, shape).await;
        serve.stop(Duration::from_secs(5)).await;
        Some((direct, gateway))
    };

    // ---------------------------------------------------------------- Lambda init
    let mut lambda_env: HashMap<String, String> = b.serve_env("warn");
    lambda_env.remove("SWITCHBOARD_LISTEN");
    for (k, v) in [
        ("SWITCHBOARD_KMS_KEY_ID", "alias/switchboard-bench"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_LAMBDA_FUNCTION_NAME", "chat"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/chat"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench"),
    ] {
        lambda_env.insert(k.into(), v.into());
    }
    let lambda = lambda::measure(
        &b.options.bin_dir.join("chat"),
        &lambda_env,
        lambda::chat_event(&b.key, &chat_body(false)),
        b.options.cold_runs,
        &b.logs,
    )
    .await;

    // The same binary through cargo-lambda's emulator, when it is installed.
    let cargo_lambda_bin = std::env::var_os("CARGO_LAMBDA")
        .map(PathBuf::from)
        .or_else(|| {
            let venv = PathBuf::from(".venv/bin/cargo-lambda");
            venv.is_file().then_some(venv)
        });
    let through_cargo_lambda = match &cargo_lambda_bin {
        Some(binary) => {
            let mut env = lambda_env.clone();
            env.retain(|k, _| !k.starts_with("AWS_LAMBDA_"));
            let root = std::env::current_dir().unwrap();
            Some(
                cargo_lambda::measure(
                    &root.join(binary),
                    &root,
                    &env,
                    &lambda::chat_event(&b.key, &chat_body(false)),
                    &b.options.work_dir,
                )
                .await,
            )
        }
        None => None,
    };

    // ---------------------------------------------------------------- report
    b.line("## Non-streamed requests (closed loop)");
    b.line("");
    b.line(format!("The peer, in the same run: Portkey's gateway {} (npm, no ledger), in front of the same upstream{}.",
        peer::PORTKEY_VERSION,
        portkey_peak_rss.map_or_else(|| " — not installed, so its columns are empty".to_string(), |kb| format!(", peak RSS {:.1} MB", kb as f64 / 1024.0))));
    b.line("");
    b.line("| concurrency | direct p50 / p99 ms | through Switchboard p50 / p99 ms | overhead p50 / p99 ms | direct req/s | Switchboard req/s | errors | Portkey overhead p50 / p99 ms | Portkey req/s |");
    b.line("|---|---|---|---|---|---|---|---|---|");
    for (c, (d, _), (g, _), p) in &rows {
        b.line(format!(
            "| {c} | {:.2} / {:.2} | {:.2} / {:.2} | **{:.2} / {:.2}** | {:.0} | **{:.0}** | {} | {} |",
            d.p50_ms,
            d.p99_ms,
            g.p50_ms,
            g.p99_ms,
            g.p50_ms - d.p50_ms,
            g.p99_ms - d.p99_ms,
            d.rps,
            g.rps,
            g.failed,
            peer_cells(p.as_ref(), d)
        ));
    }
    b.line("");
    b.line(
        "## Per-request holds (`SWITCHBOARD_LEDGER_GRANTS=0`: the Lambda functions' ledger path)",
    );
    b.line("");
    b.line("The same requests through a `serve` with quota grants off: each request writes its own hold and its own capture, as every invocation of the chat Lambda function does.");
    b.line("");
    b.line("| concurrency | direct p50 / p99 ms | through Switchboard p50 / p99 ms | overhead p50 / p99 ms | Switchboard req/s | PG statements / req | PostgreSQL CPU µs / req | gateway CPU µs / req | errors |");
    b.line("|---|---|---|---|---|---|---|---|---|");
    for (c, (d, _), (g, costs)) in &per_request_rows {
        let n = costs.captured;
        b.line(format!(
            "| {c} | {:.2} / {:.2} | {:.2} / {:.2} | **{:.2} / {:.2}** | {:.0} | {:.2} | {:.0} | {:.0} | {} |",
            d.p50_ms,
            d.p99_ms,
            g.p50_ms,
            g.p99_ms,
            g.p50_ms - d.p50_ms,
            g.p99_ms - d.p99_ms,
            g.rps,
            costs.statements as f64 / n.max(1) as f64,
            per_request_us(costs.cpu_postgres, n),
            per_request_us(costs.cpu_gateway, n),
            g.failed,
        ));
    }
    b.line("");
    b.line(format!(
        "## Non-streamed requests, upstream answering after {} ms (closed loop)",
        b.options.upstream_latency.as_millis()
    ));
    b.line("");
    b.line("The same, with an upstream that takes the time of a (very fast) model: at a given concurrency the");
    b.line("offered rate is then about concurrency ÷ latency, so concurrency 32 no longer saturates the machine.");
    b.line("");
    b.line("| concurrency | direct p50 / p99 ms | through Switchboard p50 / p99 ms | overhead p50 / p99 ms | Switchboard req/s | machine busy | errors | Portkey overhead p50 / p99 ms | Portkey req/s |");
    b.line("|---|---|---|---|---|---|---|---|---|");
    for (c, (d, _), (g, costs), p) in &latency_rows {
        b.line(format!(
            "| {c} | {:.2} / {:.2} | {:.2} / {:.2} | **{:.2} / {:.2}** | {:.0} | {:.0} % | {} | {} |",
            d.p50_ms,
            d.p99_ms,
            g.p50_ms,
            g.p99_ms,
            g.p50_ms - d.p50_ms,
            g.p99_ms - d.p99_ms,
            g.rps,
            costs.machine_busy,
            g.failed,
            peer_cells(p.as_ref(), d)
        ));
    }
    b.line("");
    b.line("## Streamed requests");
    b.line("");
    b.line(format!(
        "Time to first token, one stream at a time ({} each way, alternating): direct p50 {:.2} / p99 {:.2} ms, \
         through Switchboard p50 {:.2} / p99 {:.2} ms: **added p50 {:.2} / p99 {:.2} ms**. \
         Whole stream (capture settled before `[DONE]`): direct p50 {:.2} ms, Switchboard p50 {:.2} ms.",
        b.options.ttft_requests,
        ttft::percentile_ms(&ttft.direct, 0.5),
        ttft::percentile_ms(&ttft.direct, 0.99),
        ttft::percentile_ms(&ttft.gateway, 0.5),
        ttft::percentile_ms(&ttft.gateway, 0.99),
        ttft::percentile_ms(&ttft.gateway, 0.5) - ttft::percentile_ms(&ttft.direct, 0.5),
        ttft::percentile_ms(&ttft.gateway, 0.99) - ttft::percentile_ms(&ttft.direct, 0.99),
        ttft::percentile_ms(&ttft.direct_total, 0.5),
        ttft::percentile_ms(&ttft.gateway_total, 0.5),
    ));
    b.line("");
    b.line(format!(
        "Concurrency 32, whole streams: direct p50 {:.2} / p99 {:.2} ms ({:.0}/s), through Switchboard p50 {:.2} / p99 {:.2} ms ({:.0}/s, {} errors).",
        stream_direct.0.p50_ms,
        stream_direct.0.p99_ms,
        stream_direct.0.rps,
        stream_gateway.0.p50_ms,
        stream_gateway.0.p99_ms,
        stream_gateway.0.rps,
        stream_gateway.0.failed
    ));
    b.line("");
    b.line(format!(
        "## Highest rate with overhead p99 ≤ {RATE_OVERHEAD_P99_MS} ms (open loop, oha -q with latency correction)"
    ));
    b.line("");
    b.line("| offered req/s | direct p99 ms | Switchboard p99 ms | overhead p99 ms | achieved req/s | errors | machine busy | verdict |");
    b.line("|---|---|---|---|---|---|---|---|");
    for (rate, d, g, costs, pass) in &rate_rows {
        b.line(format!(
            "| {rate} | {:.2} | {:.2} | {:.2} | {:.0} | {} | {:.0} % | {} |",
            d.p99_ms,
            g.p99_ms,
            g.p99_ms - d.p99_ms,
            g.rps,
            g.failed,
            costs.machine_busy,
            if *pass { "ok" } else { "**over**" }
        ));
    }
    b.line("");
    b.line(format!(
        "**Sustained: {} requests/s** through Switchboard with overhead p99 ≤ {RATE_OVERHEAD_P99_MS} ms.",
        best_rate.map(|r| r.to_string()).unwrap_or_else(|| "none of the rates tried".into())
    ));
    b.line("");

    b.line("## Cost per request (closed loop, through Switchboard)");
    b.line("");
    b.line("| concurrency | PG statements / req | PG commits / req | gateway CPU µs / req | PostgreSQL CPU µs / req | upstream CPU µs / req | oha CPU µs / req | machine busy |");
    b.line("|---|---|---|---|---|---|---|---|");
    for (c, (_, dcost), (_, g), _) in &rows {
        let n = g.captured;
        b.line(format!(
            "| {c} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} (direct: {:.0}) | {:.0} % |",
            g.statements as f64 / n as f64,
            g.commits as f64 / n as f64,
            per_request_us(g.cpu_gateway, n),
            per_request_us(g.cpu_postgres, n),
            per_request_us(g.cpu_upstream, n),
            per_request_us(g.cpu_oha, n),
            per_request_us(
                dcost.cpu_oha,
                rows.iter()
                    .find(|r| r.0 == *c)
                    .map(|r| r.1.0.ok as i64)
                    .unwrap_or(0)
            ),
            g.machine_busy
        ));
    }
    b.line("");
    for (c, _, (_, g), _) in rows.iter().filter(|r| r.0 == 1 || r.0 == 32) {
        b.line(format!(
            "Statements at concurrency {c} (`pg_stat_statements`, top level; per request, and mean server time, lock waits included):"
        ));
        b.line("");
        let n = g.captured.max(1) as f64;
        for (calls, mean, query) in &g.top_statements {
            let mut q: String = query.chars().take(110).collect();
            if q.len() < query.len() {
                q.push('…');
            }
            b.line(format!(
                "- {:.3} / req, {:.3} ms: `{q}`",
                *calls as f64 / n,
                mean
            ));
        }
        let mut functions = String::new();
        for (name, calls) in &g.functions {
            let _ = write!(functions, "{name} {:.2}, ", *calls as f64 / n);
        }
        b.line(format!(
            "- server-side function calls per request (`pg_stat_user_functions`): {}",
            functions.trim_end_matches(", ")
        ));
        b.line("");
    }

    b.line("## Memory, cold start, binaries");
    b.line("");
    b.line("| measurement | value |");
    b.line("|---|---|");
    b.line(format!(
        "| `switchboard serve` peak RSS (VmHWM) after every load above | **{:.1} MB** |",
        peak_rss as f64 / 1024.0
    ));
    b.line(format!(
        "| `switchboard serve` peak RSS in the run with upstream latency (more requests in flight) | {:.1} MB |",
        latency_peak_rss as f64 / 1024.0
    ));
    b.line(format!(
        "| `switchboard serve` RSS after its first request | {:.1} MB |",
        idle_rss as f64 / 1024.0
    ));
    b.line(format!(
        "| `switchboard serve` start → accepting connections (median of {}) | {:.0} ms |",
        listening.len(),
        ms(median(&mut listening))
    ));
    b.line(format!(
        "| `switchboard serve` start → first chat completion served, existing database (median of {}; min {:.0}, max {:.0}) | **{:.0} ms** |",
        first_ok.len(),
        ms(*first_ok.iter().min().unwrap()),
        ms(*first_ok.iter().max().unwrap()),
        ms(median(&mut first_ok))
    ));
    b.line(format!(
        "| `switchboard migrate` of a new database | {:.0} ms |",
        ms(migrate_time)
    ));
    match &lambda {
        Ok(runs) => {
            let mut init: Vec<Duration> = runs.iter().map(|r| r.init).collect();
            let mut first: Vec<Duration> = runs.iter().map(|r| r.first_response).collect();
            let rss = runs.iter().map(|r| r.peak_rss_kb).max().unwrap_or(0);
            b.line(format!(
                "| chat Lambda binary: init (start → first `invocation/next`), median of {} | **{:.0} ms** |",
                runs.len(),
                ms(median(&mut init))
            ));
            b.line(format!(
                "| chat Lambda binary: start → first invocation answered (cold DB connection included) | {:.0} ms |",
                ms(median(&mut first))
            ));
            b.line(format!(
                "| chat Lambda binary: peak RSS after the first invocation | {:.1} MB |",
                rss as f64 / 1024.0
            ));
        }
        Err(error) => b.line(format!(
            "| chat Lambda binary | failed: {} |",
            error.replace('\n', " ")
        )),
    }
    match &through_cargo_lambda {
        Some(Ok(invokes)) => b.line(format!(
            "| chat through `cargo lambda watch --release`: first `cargo lambda invoke` (starts the function) / second (warm) | {:.0} ms / {:.0} ms: **cold-start penalty {:.0} ms** |",
            ms(invokes.first),
            ms(invokes.second),
            ms(invokes.first.saturating_sub(invokes.second))
        )),
        Some(Err(error)) => b.line(format!(
            "| chat through cargo-lambda | failed: {} |",
            error.replace('\n', " ")
        )),
        None => b.line("| chat through cargo-lambda | not measured: cargo-lambda not found (.venv/bin/cargo-lambda or CARGO_LAMBDA) |"),
    }
    for binary in [
        "chat",
        "admin",
        "keys",
        "health-check",
        "migrate",
        "switchboard",
    ] {
        let size = std::fs::metadata(b.options.bin_dir.join(binary))
            .map(|m| m.len())
            .unwrap_or(0);
        b.line(format!(
            "| release binary `{binary}` (x86_64, stripped) | {} |",
            if size > 0 {
                format!("{:.2} MB", size as f64 / 1e6)
            } else {
                "not built".into()
            }
        ));
    }
    b.line("");
    if let Some((d, (g, _))) = &info {
        b.line(format!(
            "With `RUST_LOG=info` (one log line per request, to a file), concurrency 32: direct p50 {:.2} / p99 {:.2} ms, \
             Switchboard p50 {:.2} / p99 {:.2} ms (overhead {:.2} / {:.2} ms), {:.0} req/s.",
            d.p50_ms,
            d.p99_ms,
            g.p50_ms,
            g.p99_ms,
            g.p50_ms - d.p50_ms,
            g.p99_ms - d.p99_ms,
            g.rps
        ));
        b.line("");
    }
    b.line(format!(
        "Load average after: {}. Logs: `{}`.",
        procs::load_average(),
        b.logs.display()
    ));
    if let Some(parent) = b.options.out.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&b.options.out, &b.report).unwrap();
    eprintln!("report written to {}", b.options.out.display());
    b.upstream.stop(Duration::from_secs(2)).await;
}
