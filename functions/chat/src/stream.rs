//! Streamed chat completions (SSE). Candidates are tried until one produces its first
//! content chunk (fallback is possible until then); from that moment the stream is
//! committed. The capture (or the partial capture of a stream cut short) is written before
//! the last chunk and `[DONE]` are sent, so nothing is left to do after the response ends.
//! A client that disconnects is charged for what was produced: the dropped body settles
//! from a guard (best effort; the hold's expiry is the backstop).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::{Value, json};
use switchboard_core::http::ApiError;
use switchboard_core::providers::{
    ChatCompletionChunk, ChunkStream, ProviderError, StreamEnd, StreamEvent, TimeoutPhase, Usage,
};
use switchboard_core::routing::Candidate;

use crate::complete::{fallback_admitted, provider_headers};
use crate::flow::{self, Prepared};

/// A committed stream: the chosen candidate and the chunks read while choosing it.
struct Committed {
    candidate: Candidate,
    user_key_id: Option<i32>,
    started: Instant,
    chunks: ChunkStream,
    pending: VecDeque<ChatCompletionChunk>,
    /// The stream already ended while choosing (a short answer).
    ended: Option<StreamEnd>,
}

pub async fn stream(mut prepared: Prepared) -> Result<Response, ApiError> {
    let deadline = prepared.started + prepared.state.config.request_timeout;
    let candidates = prepared.candidates.clone();
    let mut last_error: Option<ProviderError> = None;
    let mut deadline_passed = false;

    for (index, candidate) in candidates.iter().enumerate() {
        if prepared
            .rate_limited_providers
            .contains(&candidate.provider.id)
        {
            continue;
        }
        if Instant::now() >= deadline {
            deadline_passed = true;
            break;
        }
        if index > 0 && !fallback_admitted(&prepared, candidate).await {
            continue;
        }
        let (target, user_key_id) = match flow::upstream_target(&prepared, candidate).await {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(error) => {
                flow::settle_failure(&prepared).await;
                return Err(error);
            }
        };
        let started = Instant::now();
        let opened = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            prepared.state.providers.stream(&target, &prepared.request),
        )
        .await;
        drop(target);
        let outcome = match opened {
            Err(_) => Err(ProviderError::Timeout {
                phase: TimeoutPhase::FirstByte,
            }),
            Ok(Err(error)) => Err(error),
            Ok(Ok(chunks)) => first_content(chunks, deadline).await,
        };
        match outcome {
            Ok((chunks, pending, ended)) => {
                let committed = Committed {
                    candidate: candidate.clone(),
                    user_key_id,
                    started,
                    chunks,
                    pending,
                    ended,
                };
                return Ok(sse_response(prepared, committed));
            }
            Err(error) => {
                tracing::info!(upstream = %flow::describe(candidate), error = %error, "stream attempt failed before content");
                let timed_out =
                    matches!(error, ProviderError::Timeout { .. }) && Instant::now() >= deadline;
                flow::record_failure(
                    &mut prepared,
                    candidate,
                    user_key_id,
                    started.elapsed(),
                    &error,
                )
                .await;
                if flow::is_final(&error) {
                    flow::settle_failure(&prepared).await;
                    return Err(error.into());
                }
                last_error = Some(error);
                if timed_out {
                    deadline_passed = true;
                    break;
                }
            }
        }
    }
    flow::settle_failure(&prepared).await;
    Err(flow::exhausted_error(last_error, deadline_passed))
}

type FirstContent = (
    ChunkStream,
    VecDeque<ChatCompletionChunk>,
    Option<StreamEnd>,
);

/// Reads until the first content chunk (or a clean end). An error before any content is a
/// failed attempt: the caller may fall back.
async fn first_content(
    mut chunks: ChunkStream,
    deadline: Instant,
) -> Result<FirstContent, ProviderError> {
    let mut pending = VecDeque::new();
    loop {
        let next = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            chunks.next(),
        )
        .await;
        match next {
            Err(_) => {
                return Err(ProviderError::Timeout {
                    phase: TimeoutPhase::FirstByte,
                });
            }
            Ok(Some(StreamEvent::Chunk(chunk))) => {
                let content = chunk.has_content();
                pending.push_back(chunk);
                if content {
                    return Ok((chunks, pending, None));
                }
            }
            Ok(Some(StreamEvent::End(end))) => {
                return match end.error {
                    Some(error) => Err(error),
                    None => Ok((chunks, pending, Some(end))),
                };
            }
            Ok(None) => {
                return Err(ProviderError::StreamInterrupted {
                    message: "the stream ended without a final event".into(),
                });
            }
        }
    }
}

fn sse_frame(value: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("data: {json}\n\n"))
}

fn sse_error_frame(error: &ApiError) -> Bytes {
    Bytes::from(format!("event: error\ndata: {}\n\n", error.body()))
}

const DONE: &[u8] = b"data: [DONE]\n\n";

/// The state of a committed stream while the body is being sent.
struct Sse {
    prepared: Option<Prepared>,
    committed: Committed,
    /// Frames ready to go out, in order.
    out: VecDeque<Bytes>,
    finished: bool,
    wants_usage: bool,
    last_chunk_shape: Option<(String, u64, String)>,
}

impl Sse {
    fn remember_shape(&mut self, chunk: &ChatCompletionChunk) {
        if self.last_chunk_shape.is_none() {
            self.last_chunk_shape = Some((chunk.id.clone(), chunk.created, chunk.model.clone()));
        }
    }

    /// Settles the ledger for the end of the stream and queues the closing frames.
    async fn finish(&mut self, end: StreamEnd) {
        self.finished = true;
        let Some(mut prepared) = self.prepared.take() else {
            return;
        };
        let candidate = self.committed.candidate.clone();
        let latency = self.committed.started.elapsed();
        let settlement = flow::price(&prepared, &candidate, &end.usage);
        let stream_error = end.error.as_ref().map(|e| e.to_string());
        let settled = flow::settle_success_with_note(
            &mut prepared,
            &candidate,
            self.committed.user_key_id,
            latency,
            &settlement,
            stream_error.as_deref(),
        )
        .await;
        match (settled, end.error) {
            (Ok(balance), error) => {
                let (id, created, model) = self.last_chunk_shape.clone().unwrap_or_default();
                let mut last = json!({
                    "id": id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "_metadata": flow::metadata(&prepared, &candidate, &settlement, balance),
                });
                if self.wants_usage {
                    last["usage"] =
                        serde_json::to_value(settlement.usage.to_openai()).unwrap_or(Value::Null);
                }
                if let Some(error) = error {
                    if error.is_provider_failure()
                        && let Ok(client) = prepared.state.pool.get().await
                    {
                        let _ = switchboard_core::breaker::record_failure(
                            &**client,
                            candidate.provider.id,
                            error.retry_after(),
                            &prepared.state.config.breaker,
                        )
                        .await;
                    }
                    self.out.push_back(sse_frame(&last));
                    self.out
                        .push_back(sse_error_frame(&ApiError::Upstream(format!(
                            "the upstream stream failed after it began: {error}"
                        ))));
                } else {
                    self.out.push_back(sse_frame(&last));
                }
            }
            (Err(error), _) => {
                flow::settle_failure(&prepared).await;
                self.out.push_back(sse_error_frame(&error));
            }
        }
        self.out.push_back(Bytes::from_static(DONE));
    }

    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.out.pop_front() {
                return Some(frame);
            }
            if self.finished {
                return None;
            }
            if let Some(chunk) = self.committed.pending.pop_front() {
                self.remember_shape(&chunk);
                return Some(sse_frame(&chunk));
            }
            if let Some(end) = self.committed.ended.take() {
                self.finish(end).await;
                continue;
            }
            match self.committed.chunks.next().await {
                Some(StreamEvent::Chunk(chunk)) => {
                    self.remember_shape(&chunk);
                    return Some(sse_frame(&chunk));
                }
                Some(StreamEvent::End(end)) => self.finish(end).await,
                None => {
                    let (usage, _) = self.committed.chunks.usage_so_far();
                    self.finish(StreamEnd {
                        usage,
                        usage_estimated: true,
                        finish_reason: None,
                        error: Some(ProviderError::StreamInterrupted {
                            message: "the stream ended early".into(),
                        }),
                    })
                    .await;
                }
            }
        }
    }
}

impl Drop for Sse {
    /// The client went away before the end: charge what was produced, release the rest.
    fn drop(&mut self) {
        let Some(mut prepared) = self.prepared.take() else {
            return;
        };
        let (usage, _) = self.committed.chunks.usage_so_far();
        let candidate = self.committed.candidate.clone();
        let user_key_id = self.committed.user_key_id;
        let latency = self.committed.started.elapsed();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            settle_disconnect(&mut prepared, &candidate, user_key_id, latency, usage).await;
        });
    }
}

async fn settle_disconnect(
    prepared: &mut Prepared,
    candidate: &Candidate,
    user_key_id: Option<i32>,
    latency: Duration,
    usage: Usage,
) {
    let settlement = flow::price(prepared, candidate, &usage);
    let note = "the client disconnected before the stream ended";
    if let Err(error) = flow::settle_success_with_note(
        prepared,
        candidate,
        user_key_id,
        latency,
        &settlement,
        Some(note),
    )
    .await
    {
        tracing::error!(%error, "could not settle a disconnected stream; its hold will expire");
        flow::settle_failure(prepared).await;
    }
}

fn sse_response(prepared: Prepared, committed: Committed) -> Response {
    let wants_usage = prepared.request.client_wants_stream_usage();
    let candidate = committed.candidate.clone();
    let state = Sse {
        prepared: Some(prepared),
        committed,
        out: VecDeque::new(),
        finished: false,
        wants_usage,
        last_chunk_shape: None,
    };
    let body = futures_util::stream::unfold(state, |mut state| async move {
        let frame = state.next_frame().await?;
        Some((Ok::<Bytes, Infallible>(frame), state))
    });
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        axum::http::HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    provider_headers(&mut response, &candidate);
    response
}
