//! The run after its plan, in its own task: admission, candidate attempts in order (one
//! driver for buffered and streamed answers), then settlement. The door waits on `reply`;
//! when it is gone (the client left) the run still ends settled.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::attempt::{Failure, Health, Run, Success, describe};
use super::error::ChatError;
use super::settle::{Hold, SETTLE_BUDGET};
use super::work::Work;
use super::{
    Answered, ChatAnswer, ChatStream, Completed, EmbeddingsAnswer, Routed, StreamEnd, StreamItem,
};
use crate::providers::{
    ChatCompletionChunk, ChatRequest, ChunkStream, Completion, Embedded, EmbeddingUsage,
    ProviderError, StreamEvent, TimeoutPhase,
};
use crate::routing::Candidate;

type Reply = oneshot::Sender<Result<Answered, ChatError>>;

/// Chunks a stream may have waiting for a slow client before the run waits for it.
const STREAM_BUFFER: usize = 64;

const CLIENT_GONE: &str = "the client disconnected before the answer was delivered";

/// What a successful attempt returned.
enum Answer {
    Buffered(Buffered),
    /// A stream that produced its first content (or ended cleanly before any).
    Stream(Box<Opened>),
}

/// A whole answer, read at once.
enum Buffered {
    Chat(Box<Completion>),
    Embeddings(Embedded),
}

/// A stream read up to its first content chunk.
struct Opened {
    chunks: ChunkStream,
    pending: VecDeque<ChatCompletionChunk>,
    /// The stream already ended while it was opened (a short answer).
    ended: Option<crate::providers::StreamEnd>,
}

pub(super) async fn drive(mut run: Run, reply: Reply) {
    let hold = match run.admit().await {
        Ok(hold) => hold,
        Err(error) => {
            let _ = reply.send(Err(error));
            return;
        }
    };
    let candidates = run.candidates.clone();
    let mut last_error: Option<ProviderError> = None;
    let mut deadline_passed = false;
    // The gateway's own failure is logged at ERROR once per request (later ones at INFO).
    let mut local_logged = false;
    for (index, candidate) in candidates.iter().enumerate() {
        if reply.is_closed() {
            // Nobody waits for an answer: no new attempt.
            tracing::info!(request_id = %run.request_id, "the client left before an attempt; releasing the hold");
            release(&run, hold).await;
            return;
        }
        if run
            .rate_limited
            .contains(&(candidate.provider.id, candidate.byok))
        {
            continue;
        }
        let remaining = run.attempts_end.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            deadline_passed = true;
            break;
        }
        if index > 0 && !run.fallback_admitted(candidate).await {
            continue;
        }
        let (mut target, user_key_id) = match run.upstream_target(candidate).await {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(error) => {
                release(&run, hold).await;
                let _ = reply.send(Err(error));
                return;
            }
        };
        run.attempt_span = crate::otel::child(
            run.timing.trace(),
            format!("{} {}", run.work.operation_name(), candidate.model.model_id),
            crate::otel::SpanKind::Client,
        )
        .map(|mut span| {
            span.set("gen_ai.operation.name", run.work.operation_name());
            span.set("gen_ai.request.model", candidate.model.model_id.as_str());
            span.set(
                "gen_ai.provider.name",
                candidate.provider.provider_slug.as_str(),
            );
            span.set("switchboard.attempt", (index + 1) as i64);
            span.set("switchboard.byok", candidate.byok);
            target.traceparent = Some(span.traceparent());
            span
        });
        let started = Instant::now();
        let providers = &run.services.providers;
        let outcome = match &run.work {
            Work::Chat(request) if request.is_stream() => {
                open_stream(&run, request, &target, remaining).await
            }
            Work::Chat(request) => within(remaining, providers.complete(&target, request))
                .await
                .map(|c| Answer::Buffered(Buffered::Chat(Box::new(c)))),
            Work::Embed(request) => within(remaining, providers.embed(&target, request))
                .await
                .map(|e| Answer::Buffered(Buffered::Embeddings(e))),
        };
        drop(target);
        // Until the answer (buffered) or its first content (streams).
        run.timing.add_upstream(started.elapsed());
        match outcome {
            Ok(Answer::Buffered(answer)) => {
                let latency = started.elapsed();
                return answer_buffered(run, hold, candidate, user_key_id, latency, answer, reply)
                    .await;
            }
            Ok(Answer::Stream(opened)) => {
                return answer_stream(run, hold, candidate, user_key_id, started, *opened, reply)
                    .await;
            }
            Err(failure) => {
                match failure.error.local_failure() {
                    Some(local) if !local_logged => {
                        local_logged = true;
                        tracing::error!(
                            request_id = %run.request_id,
                            upstream = %describe(candidate),
                            kind = local.kind(),
                            error = %failure.error,
                            "{local}: the gateway's own failure, not the provider's (not counted against it)"
                        );
                    }
                    Some(_) => {
                        tracing::info!(upstream = %describe(candidate), error = %failure.error, "attempt failed (the gateway's own failure)");
                    }
                    None => {
                        tracing::info!(upstream = %describe(candidate), error = %failure.error, "attempt failed");
                    }
                }
                run.record_failure(candidate, user_key_id, started.elapsed(), &failure)
                    .await;
                if !failure.error.retryable() {
                    release(&run, hold).await;
                    let _ = reply.send(Err(failure.error.into()));
                    return;
                }
                if failure.gateway_deadline {
                    deadline_passed = true;
                    break;
                }
                last_error = Some(failure.error);
            }
        }
    }
    release(&run, hold).await;
    let _ = reply.send(Err(run.exhausted_error(last_error, deadline_passed)));
}

/// Releases the hold (nothing charged), with the failed attempts' usage rows.
async fn release(run: &Run, hold: Hold) {
    let mut span = crate::otel::child(
        run.timing.trace(),
        "settlement",
        crate::otel::SpanKind::Internal,
    );
    if let Some(span) = span.as_mut() {
        span.set("switchboard.settlement", "released");
    }
    hold.release(&run.attempts).await;
}

/// One buffered call within `remaining`: past it, the gateway's own deadline.
async fn within<T>(
    remaining: Duration,
    call: impl std::future::Future<Output = Result<T, ProviderError>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(remaining, call).await {
        Err(_) => Err(Failure::deadline(TimeoutPhase::Attempt)),
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(Failure::upstream(error)),
    }
}

/// Opens a stream and reads it up to its first content chunk, within `remaining`. An error
/// before any content is a failed attempt: the run may fall back.
async fn open_stream(
    run: &Run,
    request: &ChatRequest,
    target: &crate::providers::UpstreamTarget,
    remaining: Duration,
) -> Result<Answer, Failure> {
    let deadline = Instant::now() + remaining;
    let mut chunks =
        match tokio::time::timeout(remaining, run.services.providers.stream(target, request)).await
        {
            Err(_) => return Err(Failure::deadline(TimeoutPhase::FirstByte)),
            Ok(Err(error)) => return Err(Failure::upstream(error)),
            Ok(Ok(chunks)) => chunks,
        };
    let mut pending = VecDeque::new();
    loop {
        let next = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            chunks.next(),
        )
        .await;
        match next {
            Err(_) => return Err(Failure::deadline(TimeoutPhase::FirstByte)),
            Ok(Some(StreamEvent::Chunk(chunk))) => {
                let content = chunk.has_content();
                pending.push_back(chunk);
                if content {
                    return Ok(Answer::Stream(Box::new(Opened {
                        chunks,
                        pending,
                        ended: None,
                    })));
                }
            }
            Ok(Some(StreamEvent::End(end))) => {
                return match end.error {
                    Some(error) => Err(Failure::upstream(error)),
                    None => Ok(Answer::Stream(Box::new(Opened {
                        chunks,
                        pending,
                        ended: Some(end),
                    }))),
                };
            }
            Ok(None) => {
                return Err(Failure::upstream(ProviderError::StreamInterrupted {
                    message: "the stream ended without a final event".into(),
                }));
            }
        }
    }
}

async fn answer_buffered(
    mut run: Run,
    hold: Hold,
    candidate: &Candidate,
    user_key_id: Option<i32>,
    latency: Duration,
    answer: Buffered,
    reply: Reply,
) {
    let usage = match &answer {
        Buffered::Chat(completion) => completion.usage,
        Buffered::Embeddings(embedded) => embedded.usage,
    };
    let settlement = run.price(candidate, &usage);
    let note = reply.is_closed().then_some(CLIENT_GONE);
    let settled = run
        .settle_success(
            hold,
            candidate,
            user_key_id,
            Success {
                latency,
                ttft: None,
                settlement: &settlement,
                note,
                health: Health::Answered,
            },
        )
        .await;
    let metadata = run.metadata(candidate, &settlement, &settled);
    let routed = Routed::of(candidate);
    let answered = match answer {
        Buffered::Chat(completion) => {
            let mut response = completion.response;
            response.usage = Some(settlement.usage.to_openai());
            Answered::Chat(ChatAnswer::Complete(Box::new(Completed {
                routed,
                response,
                metadata,
                usage: settlement.usage,
            })))
        }
        Buffered::Embeddings(embedded) => {
            let mut response = embedded.response;
            let billed = settlement.usage.input_tokens();
            response.usage = EmbeddingUsage {
                prompt_tokens: billed,
                total_tokens: billed,
            };
            Answered::Embeddings(Box::new(EmbeddingsAnswer {
                routed,
                response,
                metadata,
            }))
        }
    };
    let _ = reply.send(Ok(answered));
}

/// Why a committed stream stopped before the upstream's end.
enum Stop {
    ClientGone,
    TimeLimit,
}

/// Hands a committed stream to the door and pumps it: every chunk through the channel,
/// until the upstream ends, the client leaves (the body, and so the receiver, is dropped)
/// or the time limit comes. Then settles and sends the end.
async fn answer_stream(
    mut run: Run,
    hold: Hold,
    candidate: &Candidate,
    user_key_id: Option<i32>,
    started: Instant,
    opened: Opened,
    reply: Reply,
) {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let stream = ChatStream {
        routed: Routed::of(candidate),
        events: rx,
    };
    // The stream is committed at its first content: the time to first token.
    let ttft = started.elapsed();
    let Opened {
        mut chunks,
        mut pending,
        mut ended,
    } = opened;
    let deadline = tokio::time::Instant::from_std(run.stream_end);
    let mut stop = reply
        .send(Ok(Answered::Chat(ChatAnswer::Stream(stream))))
        .is_err()
        .then_some(Stop::ClientGone);
    while stop.is_none() {
        if let Some(chunk) = pending.pop_front() {
            stop = forward(&tx, chunk, deadline).await;
            continue;
        }
        if ended.is_some() {
            break;
        }
        tokio::select! {
            biased;
            () = tx.closed() => stop = Some(Stop::ClientGone),
            () = tokio::time::sleep_until(deadline) => stop = Some(Stop::TimeLimit),
            event = chunks.next() => match event {
                Some(StreamEvent::Chunk(chunk)) => pending.push_back(chunk),
                Some(StreamEvent::End(end)) => ended = Some(end),
                None => {
                    let (usage, usage_estimated) = chunks.usage_so_far();
                    ended = Some(crate::providers::StreamEnd {
                        usage,
                        usage_estimated,
                        finish_reason: None,
                        error: Some(ProviderError::StreamInterrupted {
                            message: "the stream ended early".into(),
                        }),
                    });
                }
            },
        }
    }
    // What was produced; dropping the upstream stream closes its connection at once.
    let (usage, upstream_error) = match (stop.is_some(), ended) {
        (false, Some(end)) => (end.usage, end.error),
        _ => (chunks.usage_so_far().0, None),
    };
    drop(chunks);
    let latency = started.elapsed();
    let settlement = run.price(candidate, &usage);
    let limit_secs = run
        .stream_end
        .saturating_duration_since(run.started)
        .as_secs();
    let (note, health, error) = match (&stop, &upstream_error) {
        (Some(Stop::ClientGone), _) => (
            Some("the client disconnected before the stream ended".to_string()),
            Health::Unknown,
            None,
        ),
        (Some(Stop::TimeLimit), _) => (
            Some(format!(
                "the stream reached its time limit of {limit_secs} s"
            )),
            Health::Unknown,
            Some(ChatError::UpstreamTimeout(format!(
                "the stream reached the gateway's time limit of {limit_secs} s and was ended; the tokens sent are charged"
            ))),
        ),
        (None, Some(error)) => (
            Some(error.to_string()),
            if error.is_provider_failure() {
                Health::BrokeMidStream
            } else {
                Health::Unknown
            },
            Some(match error.local_failure() {
                Some(local) => {
                    ChatError::Unavailable(format!("{local}; the stream was cut after it began"))
                }
                None => ChatError::Upstream(format!(
                    "the upstream stream failed after it began: {error}"
                )),
            }),
        ),
        (None, None) => (None, Health::Answered, None),
    };
    let settled = run
        .settle_success(
            hold,
            candidate,
            user_key_id,
            Success {
                latency,
                ttft: Some(ttft),
                settlement: &settlement,
                note: note.as_deref(),
                health,
            },
        )
        .await;
    if matches!(stop, Some(Stop::ClientGone)) {
        return;
    }
    let end = StreamEnd {
        usage: settlement.usage,
        metadata: run.metadata(candidate, &settlement, &settled),
        error,
    };
    // The client is slow or gone if this waits: the stream is settled either way.
    let _ = tokio::time::timeout(SETTLE_BUDGET, tx.send(StreamItem::End(end))).await;
}

/// Sends one chunk, waiting for room no later than the time limit.
async fn forward(
    tx: &mpsc::Sender<StreamItem>,
    chunk: ChatCompletionChunk,
    deadline: tokio::time::Instant,
) -> Option<Stop> {
    tokio::select! {
        sent = tx.send(StreamItem::Chunk(chunk)) => sent.is_err().then_some(Stop::ClientGone),
        () = tokio::time::sleep_until(deadline) => Some(Stop::TimeLimit),
    }
}
