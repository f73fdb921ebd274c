//! The listener `serve` answers on: HTTP/1.1 with keep-alive, and the limits that keep slow
//! or idle clients from holding the server (issue 28): a header read timeout, a body read
//! timeout ([`super::body_deadline`]) and a cap on concurrent connections below the
//! open-files limit. On Ctrl-C / SIGTERM it stops accepting and lets the requests in
//! flight, streams included, finish.
//!
//! Each connection is served by hyper's HTTP/1 connection (axum's `serve` sets no timer, so
//! it has no header timeout: a client that sent half a request line kept its descriptor
//! forever, and 1,100 of them took every descriptor the process had).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use switchboard_core::config::{MAX_CONNECTIONS_LIMIT, ServerSettings};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Descriptors kept aside, besides the database pool, for everything that is not a client
/// or upstream socket: stdio, the listener, the runtime's epoll and wakers, the data
/// directory's files, DNS lookups, the health check's probes, the embedded cluster's pipes.
const RESERVED_DESCRIPTORS: u64 = 64;
/// The open-files limit assumed where it cannot be read (no `/proc`).
const ASSUMED_OPEN_FILES: u64 = 1024;
/// Under this many connections the cap is logged as too low at start.
const LOW_CAP: usize = 64;
/// How often a repeated warning (refusals, accept errors) is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Longest pause after an accept error (the descriptors may be gone for a while).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// What `serve`'s listener allows a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
}

impl ListenerLimits {
    /// The configured limits; the connection cap, when not configured, derived from the
    /// process's open-files limit (see [`default_max_connections`]).
    pub fn from_settings(server: &ServerSettings, pool_size: usize) -> Self {
        let open_files = open_files_limit();
        let derived = default_max_connections(open_files, pool_size);
        let max_connections = match server.max_connections {
            Some(configured) => {
                if configured > derived {
                    tracing::warn!(
                        configured,
                        open_files_limit = open_files,
                        "SWITCHBOARD_MAX_CONNECTIONS={configured} leaves less room than {derived} connections would for upstream sockets and the database pool under the open-files limit: raise the limit (ulimit -n) or lower the setting"
                    );
                }
                configured
            }
            None => {
                if derived < LOW_CAP {
                    tracing::warn!(
                        open_files_limit = open_files,
                        "the open-files limit leaves room for only {derived} client connections: raise it (ulimit -n) or set SWITCHBOARD_MAX_CONNECTIONS"
                    );
                }
                derived
            }
        };
        Self {
            header_read_timeout: server.header_read_timeout,
            body_read_timeout: server.body_read_timeout,
            max_connections,
        }
    }
}

/// The default connection cap: half of what the open-files limit leaves after the database
/// pool and [`RESERVED_DESCRIPTORS`], since each client connection may need one upstream
/// socket of its own. `None` (the limit unreadable) assumes 1,024; `u64::MAX` is
/// "unlimited". At least 1, at most [`MAX_CONNECTIONS_LIMIT`].
pub fn default_max_connections(open_files: Option<u64>, pool_size: usize) -> usize {
    let limit = open_files.unwrap_or(ASSUMED_OPEN_FILES);
    let spare = limit
        .saturating_sub(RESERVED_DESCRIPTORS)
        .saturating_sub(pool_size as u64);
    usize::try_from(spare / 2)
        .unwrap_or(usize::MAX)
        .clamp(1, MAX_CONNECTIONS_LIMIT)
}

/// The soft open-files limit (`RLIMIT_NOFILE`) from `/proc/self/limits` (`u64::MAX` when
/// unlimited); `None` where there is no such file.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_limit(&limits)
}

fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let soft = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves, then waits for
/// the connections still open to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let max = limits.max_connections;
    let permits = Arc::new(Semaphore::new(max));
    // Dropped to tell every connection to finish its request and close.
    let (stop, stopped) = watch::channel(());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    switchboard_core::metrics::record_listener(max);
    tracing::info!(
        max_connections = max,
        header_read_timeout_secs = limits.header_read_timeout.as_secs(),
        body_read_timeout_secs = limits.body_read_timeout.as_secs(),
        "client limits"
    );

    let mut refusals = Throttled::default();
    let mut accept_errors = Throttled::default();
    let mut backoff = Duration::ZERO;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = Duration::ZERO;
                stream
            }
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Out of descriptors (EMFILE, ENFILE) or memory: accepting again at once
                // would spin. Pause, longer while it lasts, and say so now and then.
                backoff = (backoff * 2).clamp(Duration::from_millis(50), MAX_ACCEPT_BACKOFF);
                if let Some(unlogged) = accept_errors.note() {
                    tracing::warn!(
                        %error,
                        failures = unlogged + 1,
                        pause_ms = backoff.as_millis() as u64,
                        "cannot accept connections"
                    );
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(backoff) => continue,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(stream);
            switchboard_core::metrics::record_connection_refused();
            if let Some(unlogged) = refusals.note() {
                // `refused`: this one and those since the last line.
                tracing::warn!(
                    max_connections = max,
                    refused = unlogged + 1,
                    "connection limit reached: refusing new connections (SWITCHBOARD_MAX_CONNECTIONS)"
                );
            }
            continue;
        };
        // Without Nagle's algorithm: each SSE frame of a stream would otherwise wait for the
        // client's delayed ACK, up to 40 ms (`switchboard_core::http::without_nagle`).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY on a connection");
        }
        let mid_request = Arc::new(AtomicBool::new(false));
        let io = TokioIo::new(Watched {
            stream,
            mid_request: mid_request.clone(),
        });
        let (app, body_timeout) = (app.clone(), limits.body_read_timeout);
        let service = hyper::service::service_fn(move |request| {
            super::body_deadline::answer(app.clone(), body_timeout, request)
        });
        let connection = http.serve_connection(io, service);
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = OpenConnection::count();
            let mut connection = std::pin::pin!(connection);
            let mut stopping = false;
            let result = loop {
                tokio::select! {
                    result = connection.as_mut() => break result,
                    _ = stopped.changed(), if !stopping => {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            };
            if let Err(error) = result {
                connection_ended(&error, mid_request.load(Ordering::Relaxed));
            }
        });
    }

    // New connections are refused by the kernel from here on; those open finish their
    // request (a stream to its end) and close.
    drop(listener);
    drop(stop);
    let open = max - permits.available_permits();
    if open > 0 {
        tracing::info!(open, "waiting for the connections still open to finish");
    }
    let _ = permits
        .acquire_many(u32::try_from(max).unwrap_or(u32::MAX))
        .await;
}

/// Errors of one connection that came and went before it was accepted: accept the next.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Over the cap: a 503 with `Retry-After` (in OpenAI's error shape), written without
/// waiting (a fresh socket's send buffer has room; if not, the client only sees the close),
/// then the connection is closed. Nothing of the request is read, so it costs the
/// descriptor for an instant only.
fn refuse(stream: TcpStream) {
    use std::io::{Read, Write};
    let body = r#"{"error":{"message":"the server is at its connection limit, try again shortly","type":"service_unavailable","code":"service_unavailable","param":null}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nx-request-id: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        uuid::Uuid::new_v4(),
        body.len()
    );
    // A std socket writes at once (tokio's would wait for the reactor to see it writable).
    let Ok(mut stream) = stream.into_std() else {
        return;
    };
    let _ = stream.write(response.as_bytes());
    // What the client already sent is read off (non-blocking), so that the close is a FIN
    // after the answer rather than a reset that could discard it.
    let mut discard = [0u8; 4096];
    let _ = stream.read(&mut discard);
}

/// Logged once, then at most every [`WARN_EVERY`] with how many were not.
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    /// `Some(events not logged since the last line)` when this one should be logged.
    fn note(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < WARN_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The open-connections gauge, while the connection lives.
struct OpenConnection;

impl OpenConnection {
    fn count() -> Self {
        switchboard_core::metrics::connections_open(1.0);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        switchboard_core::metrics::connections_open(-1.0);
    }
}

fn connection_ended(error: &hyper::Error, mid_request: bool) {
    if !error.is_timeout() {
        tracing::debug!(%error, "connection ended with an error");
    } else if mid_request {
        // Part of a request had come, not all of its headers.
        switchboard_core::metrics::record_client_timeout("headers");
        tracing::debug!("request headers not received in time: connection closed");
    } else {
        tracing::debug!("idle connection closed");
    }
}

/// The client's socket, noting whether part of a request has arrived since the last answer
/// was written (a header timeout then means a slow client, not an idle keep-alive).
struct Watched {
    stream: TcpStream,
    mid_request: Arc<AtomicBool>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.mid_request.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.mid_request.store(false, Ordering::Relaxed);
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.mid_request.store(false, Ordering::Relaxed);
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
        Max open files            1024                 1048576              files     \n\
        Max locked memory         8388608              8388608              bytes     \n";

    #[test]
    fn reads_the_soft_open_files_limit() {
        assert_eq!(parse_open_files_limit(LIMITS), Some(1024));
        let unlimited = LIMITS.replace("1024  ", "unlimited");
        assert_eq!(parse_open_files_limit(&unlimited), Some(u64::MAX));
        assert_eq!(parse_open_files_limit("Max cpu time  unlimited"), None);
    }

    #[test]
    fn the_default_cap_leaves_room_for_upstreams_and_the_pool() {
        // (1024 − 64 − 16) / 2
        assert_eq!(default_max_connections(Some(1024), 16), 472);
        assert_eq!(default_max_connections(None, 16), 472);
        assert_eq!(default_max_connections(Some(65_536), 16), 32_728);
        assert_eq!(default_max_connections(Some(50), 16), 1);
        assert_eq!(
            default_max_connections(Some(u64::MAX), 16),
            MAX_CONNECTIONS_LIMIT
        );
    }

    #[test]
    fn repeated_warnings_are_throttled() {
        let mut throttled = Throttled::default();
        assert_eq!(throttled.note(), Some(0));
        assert_eq!(throttled.note(), None);
        assert_eq!(throttled.note(), None);
        throttled.last = Some(Instant::now() - WARN_EVERY);
        assert_eq!(throttled.note(), Some(2));
    }
}
