//! The chat function's cold start through cargo-lambda's emulator: `cargo lambda watch
//! --release` starts the function (with `cargo run`) on its first invocation, so the first
//! `cargo lambda invoke` pays the start, the init and a cold database connection, and the
//! second one does not. Both are timed end to end (the invoke command's own start included,
//! the same in both), so their difference is the cold-start penalty as a developer sees it.
//! A first, untimed round (its own `cargo lambda watch`) lets `cargo run` build the binary
//! if it is stale, so the timed round measures a start, not a build.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::procs;

pub struct Invokes {
    pub first: Duration,
    pub second: Duration,
}

/// The process group of `cargo lambda watch` (with the functions it started), ended on drop.
struct Watch(std::process::Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &group])
            .status();
        std::thread::sleep(Duration::from_millis(300));
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .status();
        let _ = self.0.wait();
    }
}

async fn invoke(
    cargo_lambda: &Path,
    root: &Path,
    port: u16,
    event: &Path,
    limit: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let output = tokio::time::timeout(
        limit,
        tokio::process::Command::new(cargo_lambda)
            .current_dir(root)
            .args([
                "lambda",
                "invoke",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
            ])
            .arg(port.to_string())
            .arg("--data-file")
            .arg(event)
            .args(["--color", "never", "chat"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("no answer within {} s", limit.as_secs()))?
    .map_err(|e| e.to_string())?;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !stdout.contains("chat.completion") {
        return Err(format!(
            "cargo lambda invoke failed: {stdout:.300} {:.300}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(took)
}

/// Starts `cargo lambda watch --release` on a free port, ready to invoke.
async fn start_watch(
    cargo_lambda: &Path,
    root: &Path,
    env: &HashMap<String, String>,
    log: &Path,
) -> Result<(Watch, u16), String> {
    let port = procs::free_port();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| e.to_string())?;
    let mut command = std::process::Command::new(cargo_lambda);
    // The function gets exactly these variables, as a deployed one gets the template's.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if ["SWITCHBOARD_", "DATABASE_", "AWS_", "RUST_LOG"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
        {
            command.env_remove(name);
        }
    }
    command
        .current_dir(root)
        .args(["lambda", "watch", "--release", "--ignore-changes"])
        .args(["--invoke-address", "127.0.0.1", "--invoke-port"])
        .arg(port.to_string());
    for (key, value) in env {
        command.arg("--env-var").arg(format!("{key}={value}"));
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| e.to_string())?;
    let watch = Watch(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("cargo lambda watch did not listen within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((watch, port))
}

pub async fn measure(
    cargo_lambda: &Path,
    root: &Path,
    env: &HashMap<String, String>,
    event: &str,
    work_dir: &Path,
) -> Result<Invokes, String> {
    let log = work_dir.join("logs/cargo-lambda-watch.log");
    let _ = std::fs::remove_file(&log);
    let event_file = work_dir.join("chat-event.json");
    std::fs::write(&event_file, event).map_err(|e| e.to_string())?;
    {
        // Untimed: builds the function if `cargo run` finds it stale.
        let (_watch, port) = start_watch(cargo_lambda, root, env, &log).await?;
        invoke(
            cargo_lambda,
            root,
            port,
            &event_file,
            Duration::from_secs(900),
        )
        .await?;
    }
    let (_watch, port) = start_watch(cargo_lambda, root, env, &log).await?;
    let limit = Duration::from_secs(120);
    let first = invoke(cargo_lambda, root, port, &event_file, limit).await?;
    let second = invoke(cargo_lambda, root, port, &event_file, limit).await?;
    Ok(Invokes { first, second })
}
