//! An inbound format's stream ([`crate::inbound::FrameStream`]) as a `text/event-stream`
//! response: `event:` / `data:` frames as they come, an error frame in the format's error
//! shape, OpenAI's `data: [DONE]`. Dropping the body (the client left) drops the frames,
//! which tells the run to stop reading upstream.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;

use super::error::{ApiError, ErrorShape};
use crate::inbound::{FrameStream, SseFrame};

fn bytes(frame: SseFrame, shape: ErrorShape) -> Bytes {
    match frame {
        SseFrame::Data {
            event: Some(name),
            data,
        } => Bytes::from(format!("event: {name}\ndata: {data}\n\n")),
        SseFrame::Data { event: None, data } => Bytes::from(format!("data: {data}\n\n")),
        SseFrame::Error(error) => {
            let body = ApiError::from(error).stream_error_body(shape);
            Bytes::from(format!("event: error\ndata: {body}\n\n"))
        }
        SseFrame::Done => Bytes::from_static(b"data: [DONE]\n\n"),
    }
}

/// The 200 answer streaming `frames`, errors written in `shape`.
pub fn event_stream(frames: FrameStream, shape: ErrorShape) -> Response {
    let body = frames.map(move |frame| Ok::<Bytes, Infallible>(bytes(frame, shape)));
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    response
}
