//! What the tests that run `switchboard serve` as a process share: an account with a key,
//! `serve` itself pointed at the fake upstream, and `.venv`'s Python.

#![allow(dead_code)] // each test binary uses its own part

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use switchboard_tests::fake_upstream::FakeUpstream;
use switchboard_tests::moto::workspace_root;
use switchboard_tests::test_db::TestDb;

/// `.venv`'s Python when it can import `module`; `None` (the test skips) when it cannot
/// and the test script did not require the SDKs.
pub fn python_with(module: &str) -> Option<PathBuf> {
    let python = workspace_root().join(".venv/bin/python");
    let has_sdk = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !has_sdk {
        assert!(
            std::env::var_os("SWITCHBOARD_REQUIRE_SDK").is_none(),
            "the {module} SDK is missing from .venv (./scripts/test installs it)"
        );
        eprintln!("skipped: no {module} SDK in .venv (run ./scripts/test)");
        return None;
    }
    Some(python)
}

/// An account with `balance` USD and a gateway key (limited to `rpm` requests a minute).
pub async fn user_key(db: &TestDb, user_id: &str, balance: i64, rpm: Option<i32>) -> String {
    let key = db.account_with_key(user_id, "starter", "user", rpm).await;
    if balance > 0 {
        let client = db.pool().get().await.unwrap();
        switchboard_core::ledger::credit(
            &**client,
            user_id,
            rust_decimal::Decimal::from(balance),
            switchboard_core::ledger::CreditKind::TopUp,
            &format!("sdk-topup-{user_id}"),
            None,
            None,
        )
        .await
        .unwrap();
    }
    key
}

/// `switchboard serve` on a free port, with the OpenAI, Anthropic and Google providers
/// pointed at `upstream` (each in its own wire format) and a system key for each.
pub struct Serve {
    pub base: String,
    child: tokio::process::Child,
    data_dir: PathBuf,
}

impl Serve {
    pub async fn start(db: &TestDb, upstream: &FakeUpstream, name: &str) -> Serve {
        Self::start_with(db, upstream, name, &[]).await
    }

    /// [`Serve::start`] with extra settings.
    pub async fn start_with(
        db: &TestDb,
        upstream: &FakeUpstream,
        name: &str,
        env: &[(&str, &str)],
    ) -> Serve {
        let client = db.connect().await;
        for (slug, url) in [
            ("openai", upstream.openai_base_url()),
            ("anthropic", upstream.anthropic_base_url()),
            ("google", upstream.gemini_base_url()),
        ] {
            client
                .execute(
                    "UPDATE llm_providers SET base_url = $2 WHERE provider_slug = $1",
                    &[&slug, &url],
                )
                .await
                .unwrap();
        }
        let data_dir = std::env::temp_dir().join(format!("sb-sdk-{name}-{}", std::process::id()));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("serve")
            .env("DATABASE_URL", db.url())
            .env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("SWITCHBOARD_DATA_DIR", &data_dir)
            .env("SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS", "1")
            .env(
                "SWITCHBOARD_PROVIDER_KEY_OPENAI",
                "sk-test-openai-system-key-0123456789",
            )
            .env(
                "SWITCHBOARD_PROVIDER_KEY_ANTHROPIC",
                "sk-ant-test-system-key-0123456789",
            )
            .env(
                "SWITCHBOARD_PROVIDER_KEY_GOOGLE",
                "AIza-test-google-system-key-0123",
            )
            .env_remove("SWITCHBOARD_KMS_KEY_ID")
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
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
        Serve {
            base,
            child,
            data_dir,
        }
    }

    /// The `serve` process's id (to signal it).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits up to `limit` for `serve` to exit on its own; `None` if it did not.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Stops `serve` as an operator would (SIGTERM): it writes the captures its quota
    /// grants still hold in memory and returns the grants before it exits (a SIGKILL would
    /// drop up to one flush delay of captures; `grants_crash.rs` tests that on purpose).
    /// Killed if it has not exited within 10 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
            let _ = self.wait_exit(Duration::from_secs(10)).await;
        }
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }

    /// Runs `tests/sdk/{script}` with `args`; panics with its output when it fails.
    pub async fn run(self, python: &PathBuf, script: &str, args: &[&str]) {
        let output = tokio::process::Command::new(python)
            .arg(workspace_root().join("tests/sdk").join(script))
            .args(args)
            .output()
            .await
            .unwrap();
        self.stop().await;
        assert!(
            output.status.success(),
            "{script} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// An admin account and its admin key.
pub async fn admin_key(db: &TestDb, user_id: &str) -> String {
    db.account_with_key(user_id, "enterprise", "admin", None)
        .await
}

/// Debian's chromium, or `None` (the test skips) unless the test script required it.
pub fn chromium() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/chromium".into());
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("SWITCHBOARD_REQUIRE_BROWSER").is_none(),
        "chromium is missing (./scripts/test installs it with apt-get)"
    );
    eprintln!("skipped: no chromium (run ./scripts/test)");
    None
}
