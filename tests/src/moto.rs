//! A moto server (AWS service mock) in a child process, for the AWS code paths.
//!
//! The `moto_server` binary is looked up in `$MOTO_SERVER`, then
//! `<workspace root>/.venv/bin/moto_server` (the venv the test script creates),
//! then `PATH`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Environment variable naming the `moto_server` binary to use.
pub const MOTO_SERVER_ENV: &str = "MOTO_SERVER";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const HOW_TO_INSTALL: &str =
    "run ./scripts/test or pip install 'moto[server]' into .venv at the workspace root";

/// A running `moto_server`, killed when dropped.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    port: u16,
    log_path: PathBuf,
}

impl MotoServer {
    /// Finds `moto_server`, starts it on a free 127.0.0.1 port and waits (at most
    /// 20 s) until it answers HTTP.
    pub async fn start() -> Result<MotoServer, String> {
        let binary = MotoServer::find_binary()?;
        let mut last_error = String::new();
        // The free port is only reserved until we release it to moto, so another
        // process may grab it in between: retry a couple of times.
        for _ in 0..3 {
            match start_once(&binary).await {
                Ok(server) => return Ok(server),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    /// The `moto_server` binary that [`MotoServer::start`] would run.
    pub fn find_binary() -> Result<PathBuf, String> {
        if let Some(configured) = std::env::var_os(MOTO_SERVER_ENV).filter(|v| !v.is_empty()) {
            let configured = PathBuf::from(configured);
            let found = if configured.components().count() > 1 {
                is_executable(&configured).then_some(configured.clone())
            } else {
                search_path(&configured)
            };
            return found.ok_or_else(|| {
                format!(
                    "{MOTO_SERVER_ENV}={} is not an executable file; {HOW_TO_INSTALL}",
                    configured.display()
                )
            });
        }
        let venv = workspace_root().join(".venv/bin/moto_server");
        if is_executable(&venv) {
            return Ok(venv);
        }
        search_path(Path::new("moto_server")).ok_or_else(|| {
            format!(
                "moto_server not found (looked at ${MOTO_SERVER_ENV}, {} and PATH); {HOW_TO_INSTALL}",
                venv.display()
            )
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // kill_on_drop would kill it too, but reap it here (briefly blocking) so
        // no zombie is left behind and the port is free when drop returns.
        if self.child.start_kill().is_ok() {
            for _ in 0..200 {
                match self.child.try_wait() {
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    Ok(Some(_)) | Err(_) => break,
                }
            }
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// `<workspace root>`: the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

fn is_executable(path: &Path) -> bool {
    let Ok(metadata) = std::fs::metadata(path) else {
        return false;
    };
    if !metadata.is_file() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        metadata.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        true
    }
}

fn search_path(name: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot bind a free port on 127.0.0.1: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot read the bound port: {e}"))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(20);
    lines[start..].join("\n")
}

async fn start_once(binary: &Path) -> Result<MotoServer, String> {
    let port = free_port()?;
    let log_path = std::env::temp_dir().join(format!(
        "switchboard-moto-{}-{port}.log",
        std::process::id()
    ));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("cannot clone the log file handle: {e}"))?;
    let child = Command::new(binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}; {HOW_TO_INSTALL}", binary.display()))?;
    // From here on, dropping `server` kills the child and removes the log.
    let mut server = MotoServer {
        child,
        port,
        log_path,
    };

    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        match server.child.try_wait() {
            Ok(Some(status)) => {
                return Err(format!(
                    "{} exited ({status}) before answering on port {port}:\n{}",
                    binary.display(),
                    log_tail(&server.log_path)
                ));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("cannot poll the moto_server process: {e}")),
        }
        if answers_http(port).await {
            return Ok(server);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not answer HTTP on port {port} within {} s:\n{}",
                binary.display(),
                STARTUP_TIMEOUT.as_secs(),
                log_tail(&server.log_path)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether something on the port answers an HTTP request with an HTTP response.
async fn answers_http(port: u16) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let request = format!(
            "GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 5];
        stream.read_exact(&mut head).await.ok()?;
        Some(&head == b"HTTP/")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Some(true))
    )
}
