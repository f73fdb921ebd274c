//! HTTP pieces every function shares: the error type and its OpenAI shape, the JSON
//! extractor, request ids and the body limit, fallbacks for unknown routes, and running a
//! router either under AWS Lambda or on a local listener.

pub mod caller;
pub mod error;
pub mod json;
pub mod sse;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

pub use crate::timing::RequestTiming;
pub use caller::AdminCaller;
pub use error::{ApiError, ErrorShape};
pub use json::AppJson;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request id of the current request (taken from a sane `x-request-id`, else generated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Accepts a client-supplied request id only if it is a short, printable token.
pub fn sane_request_id(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Adds what every router needs: request ids, the body limit (413 in our error shape),
/// and OpenAI-shaped answers for unknown routes and wrong methods.
pub fn finish_router(router: Router, max_body_bytes: usize) -> Router {
    router
        .route_layer(middleware::from_fn(note_route))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(
            max_body_bytes,
            request_context,
        ))
}

async fn request_context(
    State(max_body_bytes): State<usize>,
    mut req: Request,
    next: Next,
) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    req.extensions_mut().insert(RequestId(id.clone()));
    // Every answer is counted in the metrics; `/v1` answers also say where their time went
    // (api.md, "Metrics and timing").
    let is_v1 = req.uri().path().starts_with("/v1/");
    let method = req.method().clone();
    // `/v1` requests are traced when OpenTelemetry export is on (continuing the caller's
    // `traceparent`).
    let trace = is_v1
        .then(|| {
            crate::otel::Trace::start(
                req.headers()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok()),
            )
        })
        .flatten();
    if let Some(trace) = &trace {
        trace.set_root("http.request.method", req.method().as_str());
    }
    let timing = RequestTiming::traced(trace);
    req.extensions_mut().insert(timing.clone());
    let started = std::time::Instant::now();

    let declared_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut response = match declared_length {
        Some(len) if len > max_body_bytes as u64 => ApiError::RequestTooLarge(format!(
            "request body of {len} bytes exceeds the limit of {max_body_bytes} bytes"
        ))
        .into_response(),
        _ => {
            let response = next.run(req).instrument(span.clone()).await;
            span.in_scope(|| {
                tracing::info!(
                    status = response.status().as_u16(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "handled"
                );
            });
            response
        }
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let at_headers = started.elapsed();
    if is_v1 {
        timing.write_headers(at_headers, response.headers_mut());
    }
    let finish = Finish {
        method,
        split: is_v1.then(|| timing.split(at_headers)),
        timing,
        status: response.status().as_u16(),
        started,
    };
    let streamed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !streamed {
        if let Some(export) = finish.record() {
            // Lambda: the spans are sent before the answer leaves.
            export.await;
        }
        return response;
    }
    // A stream is counted when its last byte has been handed over (or it was dropped):
    // still before it ends, so a Lambda function's EMF lines are written in time.
    let (parts, body) = response.into_parts();
    let observed = Observed {
        inner: body.into_data_stream(),
        finish: Some(finish),
        export: None,
    };
    Response::from_parts(parts, axum::body::Body::from_stream(observed))
}

/// Puts the matched route (a template such as `/admin/users/{user_id}`: bounded, never a
/// user's value) where the metrics find it.
async fn note_route(
    matched: Option<axum::extract::MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    if let (Some(matched), Some(timing)) = (matched, req.extensions().get::<RequestTiming>()) {
        timing.set_route(matched.as_str());
    }
    next.run(req).await
}

/// What the metrics record of one answer, once it is over.
struct Finish {
    timing: RequestTiming,
    method: Method,
    status: u16,
    started: std::time::Instant,
    /// `/v1`: (upstream, gateway, db) when the headers left.
    split: Option<(
        std::time::Duration,
        std::time::Duration,
        std::time::Duration,
    )>,
}

type Export = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl Finish {
    /// Records the answer's metrics (and writes them as EMF in Lambda) and ends its trace.
    /// `Some`: the trace's export, to await before the answer ends (Lambda).
    fn record(self) -> Option<Export> {
        let labels = self.timing.labels();
        let route = self.timing.route();
        crate::metrics::record_request(&crate::metrics::RequestRecord {
            route,
            status: self.status,
            labels: labels.as_ref(),
            total: self.started.elapsed(),
            split: self.split,
        });
        crate::metrics::flush_emf();
        let trace = self.timing.trace()?;
        trace.set_root("http.route", route);
        trace.set_root("http.response.status_code", i64::from(self.status));
        let error = (self.status >= 500).then(|| self.status.to_string());
        crate::otel::submit(trace.finish(format!("{} {route}", self.method), error))
    }
}

/// A streamed body that records its [`Finish`] when it ends or is dropped; in Lambda it
/// sends the trace before it ends.
struct Observed<S> {
    inner: S,
    finish: Option<Finish>,
    export: Option<Export>,
}

impl<S: futures_util::Stream + Unpin> futures_util::Stream for Observed<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        if self.export.is_none() {
            let polled = std::pin::Pin::new(&mut self.inner).poll_next(cx);
            let std::task::Poll::Ready(None) = polled else {
                return polled;
            };
            match self.finish.take().and_then(Finish::record) {
                Some(export) => self.export = Some(export),
                None => return std::task::Poll::Ready(None),
            }
        }
        match self.export.as_mut().map(|export| export.as_mut().poll(cx)) {
            Some(std::task::Poll::Pending) => std::task::Poll::Pending,
            _ => {
                self.export = None;
                std::task::Poll::Ready(None)
            }
        }
    }
}

impl<S> Drop for Observed<S> {
    fn drop(&mut self) {
        // The client left: the trace still goes (queued in `serve`; a Lambda invocation
        // whose client left may lose it).
        if let Some(finish) = self.finish.take() {
            let _ = finish.record();
        }
    }
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// A local listener whose connections have Nagle's algorithm off. Without it, a small write
/// that follows another (each SSE frame of a stream) waits for the client's delayed ACK, up
/// to 40 ms: measured with `scripts/bench`, a whole streamed answer took 44 ms instead of 2.
pub fn without_nagle(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    fn no_delay(stream: &mut tokio::net::TcpStream) {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY on a connection");
        }
    }
    axum::serve::ListenerExt::tap_io(listener, no_delay as fn(&mut tokio::net::TcpStream))
}

/// How a function answers under Lambda.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LambdaResponses {
    /// The whole response at once (admin, keys).
    Buffered,
    /// Response streaming (Function URL `RESPONSE_STREAM`, REST API transfer mode
    /// `STREAM`): chat's SSE reaches the client chunk by chunk.
    Streaming,
}

/// Runs `app` under the Lambda runtime when `AWS_LAMBDA_RUNTIME_API` is set (answering
/// buffered or streamed), else on a local listener until Ctrl-C / SIGTERM.
pub async fn run_function(
    app: Router,
    in_lambda: bool,
    listen: SocketAddr,
    responses: LambdaResponses,
) -> Result<(), BoxError> {
    if in_lambda {
        // Routes are stage-free. The template's AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH=true
        // has lambda_http take a REST event's `path`, which API Gateway sends without the
        // stage: the one place the stage is dropped. (Stripping it here as well took a
        // second segment off whenever the stage's name was also the path's first
        // segment, e.g. stage `v1`: `/v1/chat/completions` became `/chat/completions`.)
        match responses {
            LambdaResponses::Buffered => lambda_http::run(app).await,
            LambdaResponses::Streaming => lambda_http::run_with_streaming_response(app).await,
        }
    } else {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        tracing::info!(address = %listen, "listening");
        axum::serve(without_nagle(listener), app)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        Ok(())
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C, shutting down"),
        () = terminate => tracing::info!("received SIGTERM, shutting down"),
    }
}

/// The whole `main` of an HTTP function: tracing, config, state, then Lambda or a local
/// listener. Failures are logged (never with secrets) and turn into a non-zero exit.
pub async fn run_http_function(
    build: fn(crate::state::AppState) -> Router,
) -> std::process::ExitCode {
    run_http_function_with(build, LambdaResponses::Buffered).await
}

/// [`run_http_function`] with a choice of Lambda response mode.
pub async fn run_http_function_with(
    build: fn(crate::state::AppState) -> Router,
    responses: LambdaResponses,
) -> std::process::ExitCode {
    run_http_function_prepared(build, responses, std::future::ready).await
}

/// [`run_http_function_with`], the state passed through `prepare` before `build`: what
/// only one function needs, built once at start (the chat function's pending-charge
/// queue).
pub async fn run_http_function_prepared<Prepared>(
    build: fn(crate::state::AppState) -> Router,
    responses: LambdaResponses,
    prepare: impl FnOnce(crate::state::AppState) -> Prepared,
) -> std::process::ExitCode
where
    Prepared: std::future::Future<Output = crate::state::AppState>,
{
    crate::telemetry::init();
    let result: Result<(), BoxError> = async {
        let config = crate::config::Config::from_env()?;
        let (in_lambda, listen) = (config.server.in_lambda, config.server.listen);
        crate::metrics::install(if in_lambda {
            crate::metrics::Exposition::Emf
        } else {
            crate::metrics::Exposition::Prometheus
        });
        crate::otel::install(if in_lambda {
            crate::otel::ExportMode::PerRequest
        } else {
            crate::otel::ExportMode::Batched
        });
        let state = prepare(crate::state::AppState::load(config).await?).await;
        run_function(build(state), in_lambda, listen, responses).await
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %crate::report::error_chain(error.as_ref()), "function stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_sanitised() {
        assert!(sane_request_id("abc-123_x.y:z"));
        assert!(!sane_request_id(""));
        assert!(!sane_request_id("has space"));
        assert!(!sane_request_id("new\nline"));
        assert!(!sane_request_id(&"a".repeat(129)));
    }
}
