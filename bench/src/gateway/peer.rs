//! A peer gateway measured in the same run: Portkey's open-source gateway (npm
//! `@portkey-ai/gateway`, which keeps no ledger), in front of the same fake upstream, so
//! that the report shows Switchboard's overhead next to a peer's and not only next to the
//! direct baseline. `scripts/bench` installs it into `target/bench/portkey` when Node.js
//! is present; without it the peer columns say so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Command;

use super::load::Target;
use super::procs::{self, Proc};

/// The version `scripts/bench` installs (the one the table was measured with).
pub const PORTKEY_VERSION: &str = "1.15.2";

pub struct Portkey {
    pub proc: Proc,
    port: u16,
}

/// Portkey's entry point: `PORTKEY_GATEWAY_JS`, else under `target/bench/portkey`.
fn entry() -> Option<PathBuf> {
    let path = std::env::var_os("PORTKEY_GATEWAY_JS").map_or_else(
        || {
            PathBuf::from(
                "target/bench/portkey/node_modules/@portkey-ai/gateway/build/start-server.js",
            )
        },
        PathBuf::from,
    );
    path.is_file().then_some(path)
}

impl Portkey {
    /// Starts Portkey on a free port and waits until it proxies a request to `upstream`;
    /// `None` (with the reason on stderr) when Node.js or the package is missing.
    pub async fn start(upstream_base: &str, body: &str, logs: &Path) -> Option<Portkey> {
        let Some(entry) = entry() else {
            eprintln!(
                "peer: Portkey is not installed (scripts/bench installs it when npm is present); skipped"
            );
            return None;
        };
        let port = procs::free_port();
        let mut command = Command::new("node");
        command
            .arg(entry)
            .arg(format!("--port={port}"))
            .arg("--headless");
        let proc = Proc::spawn("portkey", command, &logs.join("portkey.log"));
        let portkey = Portkey { proc, port };
        let target = portkey.target(upstream_base, body.to_string());
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let mut request = client.post(&target.url).body(target.body.clone());
            for header in &target.headers {
                if let Some((name, value)) = header.split_once(": ") {
                    request = request.header(name, value);
                }
            }
            if let Ok(response) = request.send().await
                && response.status().is_success()
            {
                return Some(portkey);
            }
            if started.elapsed() > Duration::from_secs(30) {
                eprintln!("peer: Portkey did not answer within 30 s; skipped");
                portkey.proc.stop(Duration::from_secs(2)).await;
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The same request as the direct run, through Portkey to the same upstream.
    pub fn target(&self, upstream_base: &str, body: String) -> Target {
        Target {
            url: format!("http://127.0.0.1:{}/v1/chat/completions", self.port),
            headers: vec![
                "content-type: application/json".into(),
                "x-portkey-provider: openai".into(),
                format!("x-portkey-custom-host: {upstream_base}"),
                format!("authorization: Bearer {}", super::UPSTREAM_KEY),
            ],
            body,
        }
    }
}
