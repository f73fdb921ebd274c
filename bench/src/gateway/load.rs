//! Load generation with `oha` (crates.io), one run per measurement, its JSON report parsed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use super::procs;

/// Where `oha` is: `OHA`, else `PATH`, else `~/.cargo/bin/oha`.
pub fn find_oha() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("OHA") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("oha"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let home = std::env::var_os("HOME")?;
        let path = Path::new(&home).join(".cargo/bin/oha");
        path.is_file().then_some(path)
    })
}

#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub headers: Vec<String>,
    pub body: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub concurrency: usize,
    pub duration: Duration,
    /// Open-loop rate (requests per second, with latency correction); `None` = closed loop.
    pub rate: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub ok: u64,
    /// Answers other than 200, and transport errors (deadline aborts excluded).
    pub failed: u64,
    pub oha_cpu: Duration,
    pub statuses: String,
}

fn ms(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN) * 1000.0
}

pub async fn run(oha: &Path, target: &Target, shape: Shape) -> LoadResult {
    let mut command = Command::new(oha);
    command
        .arg("--no-tui")
        .args(["--output-format", "json"])
        .args(["-z", &format!("{}ms", shape.duration.as_millis())])
        .args(["-c", &shape.concurrency.to_string()])
        .args(["-m", "POST"])
        .args(["-t", "30s"]);
    if let Some(rate) = shape.rate {
        command
            .args(["-q", &rate.to_string()])
            .arg("--latency-correction");
    }
    for header in &target.headers {
        command.args(["-H", header]);
    }
    command
        .args(["-d", &target.body])
        .arg(&target.url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("spawn oha");
    let pid = child.id().unwrap_or(0);
    // oha's own CPU, sampled just before it exits (its /proc entry goes with it).
    let sampler = tokio::spawn(async move {
        let mut last = Duration::ZERO;
        loop {
            let now = procs::cpu_time(pid);
            if now.is_zero() && !last.is_zero() {
                return last;
            }
            last = last.max(now);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let output = child.wait_with_output().await.expect("oha output");
    let oha_cpu = tokio::time::timeout(Duration::from_millis(200), sampler)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let json: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "oha gave no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let percentiles = &json["latencyPercentiles"];
    let statuses = json["statusCodeDistribution"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let ok = statuses.get("200").and_then(Value::as_u64).unwrap_or(0);
    let non_ok: u64 = statuses
        .iter()
        .filter(|(code, _)| code.as_str() != "200")
        .filter_map(|(_, n)| n.as_u64())
        .sum();
    let errors: u64 = json["errorDistribution"]
        .as_object()
        .map(|errors| {
            errors
                .iter()
                .filter(|(what, _)| !what.contains("deadline"))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    let mut status_text: Vec<String> = statuses
        .iter()
        .map(|(code, n)| format!("{code}×{}", n.as_u64().unwrap_or(0)))
        .collect();
    if errors > 0 {
        status_text.push(format!("errors: {}", json["errorDistribution"]));
    }
    LoadResult {
        rps: ok as f64 / shape.duration.as_secs_f64(),
        p50_ms: ms(&percentiles["p50"]),
        p99_ms: ms(&percentiles["p99"]),
        ok,
        failed: non_ok + errors,
        oha_cpu,
        statuses: status_text.join(", "),
    }
}
