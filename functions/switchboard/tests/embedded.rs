//! `switchboard serve` and `switchboard migrate` as a newcomer runs them: no DATABASE_URL,
//! so the binary creates, starts, reuses and stops its own private PostgreSQL cluster.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A scratch directory the `postgres` user can enter (needed when tests run as root).
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-embedded-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn command(data_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("SWITCHBOARD_ADMIN_KEY")
        .env_remove("SWITCHBOARD_KMS_KEY_ID")
        .env_remove("SWITCHBOARD_MASTER_KEY_FILE")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("SWITCHBOARD_DATA_DIR", data_dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

struct Running {
    child: Child,
    stdout: Arc<Mutex<String>>,
    base: String,
}

async fn start_serve(data_dir: &Path) -> Running {
    let port = free_port();
    let mut child = command(data_dir, &["serve"])
        .env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = Arc::new(Mutex::new(String::new()));
    let sink = stdout.clone();
    let pipe = child.stdout.take().unwrap();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let client = reqwest::Client::new();
    loop {
        if let Ok(resp) = client.get(format!("{base}/healthz")).send().await {
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["database"], "ok");
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("switchboard serve exited early: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "/healthz not served within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Running {
        child,
        stdout,
        base,
    }
}

async fn terminate(mut running: Running) -> String {
    let pid = running.child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), running.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "serve exited with {exit}");
    running.stdout.lock().unwrap().clone()
}

fn postgres_processes_for(data_dir: &Path) -> Vec<String> {
    let needle = data_dir.join("pg").join("data").display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) && !cmdline.contains("sb-embedded-test-runner") {
                found.push(cmdline);
            }
        }
    }
    found
}

fn cluster_url(data_dir: &Path) -> String {
    let pid = std::fs::read_to_string(data_dir.join("pg/data/postmaster.pid")).unwrap();
    let port = pid.lines().nth(3).unwrap().trim();
    format!("postgres://postgres@127.0.0.1:{port}/switchboard")
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

fn extract_admin_key(stdout: &str) -> Option<String> {
    stdout
        .split_whitespace()
        .find(|w| w.starts_with("sk-sb-"))
        .map(str::to_owned)
}

#[tokio::test]
async fn serve_starts_reuses_and_stops_its_private_cluster() {
    let dir = scratch_dir("serve");

    // First start: initdb, migrations, seed, master key, generated admin key.
    let running = start_serve(&dir).await;
    let base = running.base.clone();
    let url = cluster_url(&dir);
    let db = connect(&url).await;
    let counts = db
        .query_one(
            "SELECT (SELECT count(*) FROM llm_providers), (SELECT count(*) FROM llm_models), (SELECT count(*) FROM llm_routing_rules)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            counts.get::<_, i64>(0),
            counts.get::<_, i64>(1),
            counts.get::<_, i64>(2)
        ),
        (8, 11, 9)
    );
    db.batch_execute("INSERT INTO accounts (user_id, tier) VALUES ('marker-user', 'starter')")
        .await
        .unwrap();

    // The master key file exists and is private.
    let key_file = dir.join("master.key");
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Unknown routes answer in OpenAI's error shape with a request id.
    let resp = reqwest::get(format!("{base}/v1/nothing-here"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.headers().contains_key("x-request-id"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    drop(db);

    let stdout = terminate(running).await;
    let admin_key = extract_admin_key(&stdout).expect("the generated admin key is printed once");
    assert!(admin_key.len() >= 38);
    assert!(
        postgres_processes_for(&dir).is_empty(),
        "postgres left running: {:?}",
        postgres_processes_for(&dir)
    );
    assert!(!dir.join("pg/data/postmaster.pid").exists());

    // Second start: same cluster and data, no new admin key printed.
    let running = start_serve(&dir).await;
    let db = connect(&cluster_url(&dir)).await;
    let marker = db
        .query_opt(
            "SELECT tier FROM accounts WHERE user_id = 'marker-user'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        marker.map(|r| r.get::<_, String>(0)).as_deref(),
        Some("starter")
    );
    let hash: Vec<u8> = switchboard_core::auth::hash_api_key(&admin_key).to_vec();
    let role: String = db
        .query_one(
            "SELECT role FROM gateway_api_keys WHERE key_hash = $1",
            &[&hash],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(role, "admin");
    drop(db);
    let stdout = terminate(running).await;
    assert!(
        extract_admin_key(&stdout).is_none(),
        "admin key printed again: {stdout}"
    );
    assert!(postgres_processes_for(&dir).is_empty());

    // `switchboard migrate` twice: both succeed, nothing changes.
    for _ in 0..2 {
        let out = command(&dir, &["migrate"]).output().await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        postgres_processes_for(&dir).is_empty(),
        "migrate must stop the cluster it started"
    );

    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn missing_postgres_binaries_fail_with_one_clear_line() {
    let dir = scratch_dir("nobin");
    let empty_bin = dir.join("bin");
    std::fs::create_dir_all(&empty_bin).unwrap();
    let out = command(&dir, &["serve"])
        .env("SWITCHBOARD_PG_BIN_DIR", &empty_bin)
        .env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("RUST_LOG", "off")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("initdb") && lines[0].contains("SWITCHBOARD_PG_BIN_DIR"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn with_database_url_nothing_is_started() {
    let db = switchboard_tests::test_db::TestDb::new().await;
    let dir = scratch_dir("external");
    let out = command(&dir, &["migrate"])
        .env("DATABASE_URL", db.url())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.join("pg").exists(),
        "no embedded cluster may be created when DATABASE_URL is set"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
