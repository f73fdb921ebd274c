//! The gateway's own resource failures are not the providers' (issue 28, STYLE rule 15):
//! a real `switchboard serve` runs out of file descriptors (its open-files limit lowered
//! with `prlimit`, then idle client connections take what is left, as slow clients did in
//! the issue), and good requests that reach it must answer 503 `service_unavailable` with
//! `Retry-After`, not 502; no provider's circuit breaker may count a failure, the health
//! check run meanwhile must record no `down` and leave every provider's status as it was,
//! and the log and the metrics must say it was the gateway's own failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_tests::fake_upstream::{FakeUpstream, Reply};
use switchboard_tests::gateway::system_key_for;
use switchboard_tests::test_db::TestDb;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

const METRICS_TOKEN: &str = "local-errors-metrics-token";
/// Providers the test keeps active, all served by the fake upstream.
const PROVIDERS: [&str; 4] = ["openai", "anthropic", "google", "openrouter"];

struct Server {
    child: Child,
    pid: u32,
    base: String,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The numbers of the descriptors the process has open now.
    fn fds(&self) -> Vec<u64> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// Descriptor numbers below the soft limit still free: a new descriptor takes the
    /// lowest free number, and fails with EMFILE when none is below the limit.
    fn free_fds(&self) -> u64 {
        let limit = self.soft_nofile();
        let used = self.fds().into_iter().filter(|&fd| fd < limit).count() as u64;
        limit - used
    }

    /// The soft open-files limit (`RLIMIT_NOFILE`), as the kernel reports it.
    fn soft_nofile(&self) -> u64 {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid)).unwrap();
        let line = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .unwrap();
        line.split_whitespace().nth(3).unwrap().parse().unwrap()
    }

    /// Sets the soft open-files limit of the running process (util-linux `prlimit`; the
    /// hard limit is left alone, so no privilege is needed to raise it back).
    fn set_soft_nofile(&self, soft: u64) {
        let status = std::process::Command::new("prlimit")
            .args(["--pid", &self.pid.to_string(), &format!("--nofile={soft}:")])
            .status()
            .expect("prlimit (util-linux) must be installed");
        assert!(status.success(), "prlimit failed: {status}");
        assert_eq!(self.soft_nofile(), soft);
    }
}

async fn start_serve(db: &TestDb) -> Server {
    start_serve_with(db, &[], &[]).await
}

/// `serve`, run through `wrapper` (a command that ends by running its arguments), with
/// `env` over the settings below.
async fn start_serve_with(db: &TestDb, wrapper: &[&str], env: &[(&str, &str)]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data_dir =
        std::env::temp_dir().join(format!("sb-local-errors-{}-{port}", std::process::id()));
    let binary = env!("CARGO_BIN_EXE_switchboard");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command
        .arg("serve")
        .env("DATABASE_URL", db.url())
        .env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("SWITCHBOARD_DATA_DIR", &data_dir)
        .env("SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS", "1")
        // Two pooled database connections, opened before the descriptors run out, so the
        // ledger and a health-check run (its lock on one, its work on the other) keep
        // working while no new socket can be made.
        .env("SWITCHBOARD_DB_POOL_SIZE", "2")
        // One counted failure would open a breaker: the old code did at once.
        .env("SWITCHBOARD_BREAKER_THRESHOLD", "1")
        .env("SWITCHBOARD_HEALTH_DOWN_STRIKES", "1")
        .env("SWITCHBOARD_HEALTH_CHECK_INTERVAL_SECS", "86400")
        .env("SWITCHBOARD_METRICS_TOKEN", METRICS_TOKEN)
        .env_remove("SWITCHBOARD_KMS_KEY_ID")
        .env_remove("SWITCHBOARD_ADMIN_KEY")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .envs(env.iter().copied())
        .kill_on_drop(true);
    for slug in PROVIDERS {
        command.env(
            format!("SWITCHBOARD_PROVIDER_KEY_{}", slug.to_uppercase()),
            system_key_for(slug),
        );
    }
    let mut child = command.spawn().unwrap();
    let pid = child.id().unwrap();
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
    loop {
        if let Ok(response) = reqwest::get(format!("{base}/healthz")).await
            && response.status() == 200
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve did not start:\n{}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Server {
        child,
        pid,
        base,
        port,
        log,
    }
}

/// The providers the test uses point at the fake upstream and were last seen healthy;
/// the others are off. `gpt-4o` gets a second offer (OpenRouter), so that a fallback
/// exists that a gateway out of descriptors must not bother trying.
async fn prepare(db: &TestDb, upstream: &FakeUpstream) {
    let client = db.connect().await;
    for (slug, url) in [
        ("openai", upstream.openai_base_url()),
        ("anthropic", upstream.anthropic_base_url()),
        ("google", upstream.gemini_base_url()),
        ("openrouter", upstream.openai_base_url()),
    ] {
        client
            .execute(
                "UPDATE llm_providers SET base_url = $2, health_url = $2 || '/models',
                     health_status = 'healthy', health_consecutive_down = 0
                 WHERE provider_slug = $1",
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
                 power_level_priority)
             SELECT id, 'GPT-4o (OpenRouter)', 'gpt-4o', 128000, 16384, 2.50, 10.00, 1.25, 50
             FROM llm_providers WHERE provider_slug = 'openrouter';",
        )
        .await
        .unwrap();
}

async fn user_key(db: &TestDb, user_id: &str, tier: &str, role: &str) -> String {
    let key = db.account_with_key(user_id, tier, role, None).await;
    let client = db.pool().get().await.unwrap();
    switchboard_core::ledger::credit(
        &**client,
        user_id,
        rust_decimal::Decimal::from(10),
        switchboard_core::ledger::CreditKind::TopUp,
        &format!("topup-{user_id}"),
        None,
        None,
    )
    .await
    .unwrap();
    key
}

/// Every active provider's breaker and health columns.
async fn provider_rows(db: &TestDb) -> Vec<(String, i32, bool, String, i32, bool)> {
    db.connect()
        .await
        .query(
            "SELECT provider_slug, breaker_consecutive_failures, breaker_open_until IS NOT NULL,
                    health_status, health_consecutive_down, is_active
             FROM llm_providers WHERE provider_slug = ANY($1) ORDER BY provider_slug",
            &[&PROVIDERS.as_slice()],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| {
            (
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
                row.get(5),
            )
        })
        .collect()
}

/// A counter's value in the Prometheus text, summed over the series matching `labels`.
fn counter(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One HTTP/1.1 connection to `serve`, kept open: requests on it need no new descriptor
/// in `serve` (a pooling client may race a new connection against the idle one, and a
/// new connection cannot be accepted while the descriptors are gone).
struct Connection {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
}

/// An answer read off a [`Connection`].
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

impl Connection {
    async fn open(port: u16) -> Connection {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        Connection {
            stream: tokio::io::BufReader::new(stream),
        }
    }

    /// Sends one request and reads its whole answer (`Content-Length` or chunked).
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Answer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let exchange = async {
            let stream = self.stream.get_mut();
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(body.as_bytes()).await.unwrap();
            let mut line = String::new();
            self.stream.read_line(&mut line).await.unwrap();
            let status: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok())
                .unwrap_or_else(|| panic!("no status line: {line:?}"));
            let mut headers = Vec::new();
            loop {
                line.clear();
                self.stream.read_line(&mut line).await.unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap();
                headers.push((name.trim().to_lowercase(), value.trim().to_string()));
            }
            let find = |name: &str| {
                headers
                    .iter()
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| value.clone())
            };
            let mut bytes = Vec::new();
            if let Some(length) = find("content-length") {
                bytes.resize(length.parse().unwrap(), 0);
                self.stream.read_exact(&mut bytes).await.unwrap();
            } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                loop {
                    line.clear();
                    self.stream.read_line(&mut line).await.unwrap();
                    let size = usize::from_str_radix(line.trim(), 16).unwrap();
                    let mut chunk = vec![0; size + 2];
                    self.stream.read_exact(&mut chunk).await.unwrap();
                    if size == 0 {
                        break;
                    }
                    bytes.extend_from_slice(&chunk[..size]);
                }
            }
            Answer {
                status,
                headers,
                body: String::from_utf8(bytes).unwrap(),
            }
        };
        tokio::time::timeout(Duration::from_secs(30), exchange)
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer within 30 s"))
    }
}

/// A `serve` out of file descriptors, and the one connection accepted before that.
struct Exhausted {
    db: TestDb,
    upstream: FakeUpstream,
    server: Server,
    /// Accepted before the descriptors ran out: the requests made meanwhile travel on it.
    connection: Connection,
    /// For after the descriptors are back.
    client: reqwest::Client,
    key: String,
    admin: String,
    /// The providers' rows before.
    before: Vec<(String, i32, bool, String, i32, bool)>,
    idle: Vec<tokio::net::TcpStream>,
    original_soft: u64,
}

impl Exhausted {
    async fn start() -> Exhausted {
        let db = TestDb::new().await;
        let upstream = FakeUpstream::start().await;
        upstream.set_default(Reply::text("fine").with_usage(12, 3, 0));
        prepare(&db, &upstream).await;
        let key = user_key(&db, "fd-user", "enterprise", "user").await;
        let admin = user_key(&db, "fd-admin", "enterprise", "admin").await;
        let server = start_serve(&db).await;
        // One keep-alive connection, accepted before the descriptors run out, as a request
        // already accepted would be when the process hits its limit. /healthz opens a
        // pooled database connection, and a health-check run the second one (a run holds its
        // lock on one and works on the other), as a server that has been running has. The
        // providers are off for that run: nothing is probed, so no keep-alive connection to
        // the upstream is left for the requests made once the descriptors are gone.
        let mut connection = Connection::open(server.port).await;
        let healthz = connection.request("GET", "/healthz", &[], None).await;
        assert_eq!(healthz.status, 200, "{}", healthz.body);
        let sql = db.connect().await;
        let active: Vec<i32> = sql
            .query(
                "UPDATE llm_providers SET is_active = false WHERE is_active RETURNING id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let authorization = format!("Bearer {admin}");
        let run = connection
            .request(
                "POST",
                "/admin/health-check",
                &[("authorization", &authorization)],
                None,
            )
            .await;
        assert_eq!(run.status, 200, "{}", run.body);
        assert_eq!(run.json()["providers"], json!([]), "{}", run.body);
        sql.execute(
            "UPDATE llm_providers SET is_active = true WHERE id = ANY($1)",
            &[&active],
        )
        .await
        .unwrap();
        let before = provider_rows(&db).await;
        assert_eq!(before.len(), PROVIDERS.len());
        let client = reqwest::Client::new();
        let mut exhausted = Exhausted {
            db,
            upstream,
            server,
            connection,
            client,
            key,
            admin,
            before,
            idle: Vec::new(),
            original_soft: 0,
        };
        exhausted.exhaust().await;
        exhausted
    }

    async fn exhaust(&mut self) {
        // The limit where eight descriptor numbers are still free below it (a process
        // may hold inherited descriptors far above: they stay open, but a new descriptor
        // takes the lowest free number), then idle clients take those eight.
        self.original_soft = self.server.soft_nofile();
        let open = self.server.fds();
        let mut limit = 0;
        let mut free = 0;
        while free < 8 {
            if !open.contains(&limit) {
                free += 1;
            }
            limit += 1;
        }
        self.server.set_soft_nofile(limit);
        let idle = &mut self.idle;
        let filling = Instant::now();
        while self.server.free_fds() > 0 && filling.elapsed() < Duration::from_secs(10) {
            let free = self.server.free_fds();
            idle.push(
                tokio::net::TcpStream::connect(("127.0.0.1", self.server.port))
                    .await
                    .unwrap(),
            );
            let accepted = Instant::now();
            while self.server.free_fds() >= free && accepted.elapsed() < Duration::from_millis(300)
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        if self.server.free_fds() > 0 {
            // Something keeps descriptors in reserve (a connection cap): take the rest by
            // putting the limit just above the highest one open.
            eprintln!(
                "serve kept {} descriptors free after {} idle connections; limit lowered",
                self.server.free_fds(),
                idle.len()
            );
            let fds = self.server.fds();
            let mut limit = 0;
            while fds.contains(&limit) {
                limit += 1;
            }
            self.server.set_soft_nofile(limit);
        }
        assert_eq!(self.server.free_fds(), 0, "serve is not out of descriptors");
    }

    /// Descriptors back: the idle clients leave and the limit is restored.
    fn restore(&mut self) {
        self.idle.clear();
        self.server.set_soft_nofile(self.original_soft);
    }

    /// The providers' rows are as they were: no breaker failure, no strike, no status
    /// or activation changed.
    async fn assert_no_provider_blamed(&self) {
        let after = provider_rows(&self.db).await;
        assert_eq!(after, self.before, "the providers' rows changed");
        let down: i64 = self
            .db
            .connect()
            .await
            .query_one(
                "SELECT count(*) FROM provider_health_checks WHERE status = 'down'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(down, 0);
    }

    async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.server.base))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn stop(self) {
        let Exhausted { server, .. } = self;
        let Server { mut child, .. } = server;
        let _ = child.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_chat_answers_503_and_blames_no_provider() {
    let mut fd = Exhausted::start().await;
    let key = fd.key.clone();
    let authorization = format!("Bearer {key}");
    // Good requests: buffered (two offers), streamed, and the Anthropic inbound format.
    let mut request_ids = Vec::new();
    let requests = [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "claude-3-5-sonnet-20241022", "stream": true,
                   "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "gpt-4o", "max_tokens": 64,
                   "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ];
    for (index, (path, body)) in requests.iter().enumerate() {
        let request_id = format!("fd-request-{index}");
        let answer = fd
            .connection
            .request(
                "POST",
                path,
                &[
                    ("authorization", &authorization),
                    ("x-request-id", &request_id),
                ],
                Some(body),
            )
            .await;
        let text = &answer.body;
        assert_eq!(
            answer.status,
            503,
            "{path} {body}: {text}\n{}",
            fd.server.log()
        );
        let json = answer.json();
        if *path == "/v1/messages" {
            // Anthropic's shape: a 503 is `overloaded_error`.
            assert_eq!(json["error"]["type"], "overloaded_error", "{text}");
        } else {
            assert_eq!(json["error"]["code"], "service_unavailable", "{text}");
        }
        assert!(text.contains("out of file descriptors"), "{text}");
        assert!(
            answer.header("retry-after").is_some(),
            "503 without Retry-After: {text}"
        );
        request_ids.push(request_id);
    }
    assert_eq!(
        fd.upstream.request_count(),
        0,
        "no call can have reached the provider"
    );

    fd.restore();
    fd.assert_no_provider_blamed().await;
    let (server, client, key) = (&fd.server, &fd.client, &fd.key);
    let db_client = fd.db.connect().await;
    // One attempt per request (out of descriptors, the second gpt-4o offer was not
    // tried), recorded as the gateway's own: no provider id, so neither the breaker's
    // window nor the passive health signal counts it.
    let rows = db_client
        .query(
            "SELECT request_id, provider_id, provider_slug, status_code, error_message
             FROM llm_usage_logs WHERE request_id = ANY($1) ORDER BY request_id, attempt",
            &[&request_ids],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), request_ids.len(), "one attempt per request");
    for row in &rows {
        let provider_id: Option<i32> = row.get(1);
        let slug: Option<String> = row.get(2);
        let status: Option<i32> = row.get(3);
        let message: Option<String> = row.get(4);
        assert_eq!(provider_id, None);
        assert!(slug.is_some());
        assert_eq!(status, None);
        let message = message.unwrap_or_default();
        assert!(
            message.contains("the gateway's own failure")
                && message.contains("Too many open files"),
            "{message}"
        );
    }

    // Served again at once: no breaker keeps the providers out.
    let response = client
        .post(format!("{}/v1/chat/completions", server.base))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}\n{}", server.log());

    // The metrics and the log say whose failure it was.
    let metrics = fd.metrics().await;
    let local = counter(
        &metrics,
        "switchboard_local_errors_total",
        &[("kind", "file_descriptors")],
    );
    assert_eq!(
        local as usize,
        requests.len(),
        "one per failed call:\n{metrics}"
    );
    assert_eq!(
        counter(
            &metrics,
            "switchboard_upstream_attempts_total",
            &[("outcome", "local")]
        ) as usize,
        requests.len()
    );
    assert_eq!(
        counter(
            &metrics,
            "switchboard_upstream_attempts_total",
            &[("outcome", "network")]
        ),
        0.0
    );
    let log = server.log();
    assert!(!log.contains("circuit breaker open"), "{log}");
    let errors = log
        .lines()
        .filter(|line| {
            line.contains("ERROR")
                && line
                    .contains("the gateway is out of file descriptors: the gateway's own failure")
        })
        .count();
    assert_eq!(errors, requests.len(), "one ERROR line per request:\n{log}");

    fd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_health_check_records_no_down() {
    let mut fd = Exhausted::start().await;
    let authorization = format!("Bearer {}", fd.admin);
    // The health check, run now: its probes cannot open a socket either.
    let run = fd
        .connection
        .request(
            "POST",
            "/admin/health-check",
            &[("authorization", &authorization)],
            None,
        )
        .await;
    let summary = run.json();
    assert_eq!(run.status, 200, "{summary}");
    assert_eq!(summary["down"], 0, "{summary}");
    assert_eq!(summary["disabled"], 0, "{summary}");
    let checks = summary["providers"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks in {summary}"));
    assert!(!checks.is_empty(), "{summary}");
    for check in checks {
        assert_eq!(check["probe_status"], "unknown", "{check}");
        assert!(
            check["error"]
                .as_str()
                .unwrap_or_default()
                .contains("out of file descriptors"),
            "{check}"
        );
    }

    assert_eq!(
        fd.upstream.request_count(),
        0,
        "no probe can have been made"
    );
    fd.restore();
    fd.assert_no_provider_blamed().await;
    let noted: i64 = fd
        .db
        .connect()
        .await
        .query_one(
            "SELECT count(*) FROM provider_health_checks
             WHERE status = 'unknown' AND error LIKE '%out of file descriptors%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(noted as usize, checks.len());
    let metrics = fd.metrics().await;
    assert_eq!(
        counter(
            &metrics,
            "switchboard_local_errors_total",
            &[("kind", "file_descriptors")]
        ) as usize,
        checks.len(),
        "one per probe:\n{metrics}"
    );
    fd.stop().await;
}

/// `sh -c` running its arguments in a mount namespace where /etc/resolv.conf is empty:
/// the C library's resolver falls back to a name server on 127.0.0.1 that does not exist,
/// and every lookup fails with `EAI_AGAIN` ("Temporary failure in name resolution"), as
/// when the gateway's resolver is unreadable or unreachable.
const WITHOUT_RESOLVER: [&str; 5] = [
    "unshare",
    "--mount",
    "sh",
    "-c",
    "mount --bind /dev/null /etc/resolv.conf && exec \"$0\" \"$@\"",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_dns_resolver_is_the_gateways_failure_not_the_providers() {
    // A mount namespace needs CAP_SYS_ADMIN (root in the test containers).
    let hidden = std::process::Command::new(WITHOUT_RESOLVER[0])
        .args(&WITHOUT_RESOLVER[1..])
        .arg("true")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !hidden {
        assert!(
            std::env::var_os("SWITCHBOARD_REQUIRE_NAMESPACES").is_none(),
            "unshare --mount is not permitted here"
        );
        eprintln!("skipped: cannot hide /etc/resolv.conf (unshare --mount needs root)");
        return;
    }
    let db = TestDb::new().await;
    // The seeded providers keep their real https host names; they were last seen healthy.
    let client = db.connect().await;
    client
        .execute(
            "UPDATE llm_providers SET health_status = 'healthy', health_consecutive_down = 0,
                 is_active = provider_slug = ANY($1)",
            &[&PROVIDERS.as_slice()],
        )
        .await
        .unwrap();
    let key = user_key(&db, "dns-user", "enterprise", "user").await;
    let admin = user_key(&db, "dns-admin", "enterprise", "admin").await;
    // Private upstreams off: the health probe resolves each host (the SSRF check) first.
    let server = start_serve_with(
        &db,
        &WITHOUT_RESOLVER,
        &[("SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS", "0")],
    )
    .await;
    let before = provider_rows(&db).await;
    let http = reqwest::Client::new();

    // The health check: each probe's SSRF check resolves the provider's host first.
    let summary: Value = http
        .post(format!("{}/admin/health-check", server.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(summary["down"], 0, "{summary}");
    let checks = summary["providers"].as_array().unwrap();
    assert_eq!(checks.len(), PROVIDERS.len(), "{summary}");
    for check in checks {
        assert_eq!(check["probe_status"], "unknown", "{check}");
        assert!(
            check["error"]
                .as_str()
                .unwrap_or_default()
                .contains("DNS resolver is unavailable"),
            "{check}"
        );
    }
    // A chat call: reqwest's own lookup.
    let response = http
        .post(format!("{}/v1/chat/completions", server.base))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response.headers().contains_key("retry-after");
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 503, "{body}\n{}", server.log());
    assert_eq!(body["error"]["code"], "service_unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DNS resolver is unavailable"),
        "{body}"
    );
    assert!(retry_after);

    assert_eq!(
        provider_rows(&db).await,
        before,
        "the providers' rows changed"
    );

    let metrics = http
        .get(format!("{}/metrics", server.base))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        counter(
            &metrics,
            "switchboard_local_errors_total",
            &[("kind", "dns_resolver")]
        ) as usize,
        1 + checks.len(),
        "{metrics}"
    );
    let Server { mut child, .. } = server;
    let _ = child.kill().await;
}
