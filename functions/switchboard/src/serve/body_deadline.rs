//! The body read timeout of `serve` (`SWITCHBOARD_BODY_READ_TIMEOUT_SECS`): a request whose
//! body has not fully arrived that long after its headers is answered 408
//! `request_timeout` (OpenAI's error shape) with `Connection: close`, and its connection is
//! closed.
//!
//! The deadline lives in the request body itself ([`DeadlineBody`]), so it only runs while
//! someone reads the body: the extractors do that before a handler runs (after
//! authentication, which keeps no database connection, and before admission places a
//! hold), so a slow body never holds either. The answer, a stream included, is not
//! touched: a slow reader of a long answer is fine.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use serde_json::json;
use switchboard_core::http::{BoxError, REQUEST_ID_HEADER};
use tokio::time::{Instant, Sleep};

/// What a body that missed its deadline yields instead of its next frame.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub(crate) struct BodyTimedOut;

/// A request body that fails with [`BodyTimedOut`] once its deadline passes before its end,
/// and marks `expired` so that the request is answered 408.
pub(crate) struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    /// Made on the first read that has to wait: a request without a body, or whose body
    /// had arrived by then, costs no timer.
    sleep: Option<Pin<Box<Sleep>>>,
    expired: Arc<AtomicBool>,
}

impl DeadlineBody {
    fn new(inner: Incoming, deadline: Instant, expired: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            deadline,
            sleep: None,
            expired,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if frame.is_none() {
                this.sleep = None;
            }
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Answers one request through `app`, its body due within `timeout` of now (its headers
/// have just arrived).
pub(crate) async fn answer(
    app: Router,
    timeout: Duration,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let expired = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + timeout;
    let request = request.map(|body| DeadlineBody::new(body, deadline, expired.clone()));
    let response = tower::ServiceExt::oneshot(app, request).await?;
    if !expired.load(Ordering::Relaxed) {
        return Ok(response);
    }
    // The extractor that read the body failed (with a 400 of its own); the client is told
    // why instead, and the connection, whose body is half read, is closed.
    switchboard_core::metrics::record_client_timeout("body");
    let request_id = response.headers().get(REQUEST_ID_HEADER).cloned();
    tracing::info!(
        request_id = request_id.as_ref().and_then(|v| v.to_str().ok()),
        timeout_secs = timeout.as_secs(),
        "request body not received in time: answered 408 and closed the connection"
    );
    Ok(timed_out(timeout, request_id))
}

fn timed_out(timeout: Duration, request_id: Option<HeaderValue>) -> Response<Body> {
    let body = json!({ "error": {
        "message": format!(
            "the request body did not arrive within {} s of its headers",
            timeout.as_secs()
        ),
        "type": "request_timeout",
        "code": "request_timeout",
        "param": null,
    }});
    let mut response = (StatusCode::REQUEST_TIMEOUT, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Some(id) = request_id {
        headers.insert(REQUEST_ID_HEADER, id);
    }
    response
}
