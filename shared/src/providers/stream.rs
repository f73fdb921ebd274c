//! [`ChunkStream`]: an upstream event stream turned into OpenAI chunks, ending with one
//! [`StreamEnd`] that carries the usage (reported, or counted so far when the stream was
//! cut), the finish reason, and the error if the stream broke.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::error::{ProviderError, TimeoutPhase};
use super::eventstream::EventStreamDecoder;
use super::response::{ChatCompletionChunk, FinishReason, Usage};
use super::sse::{SseEvent, SseParser};

/// How an upstream frames its stream: Server-Sent Events, or (Bedrock) the AWS
/// event-stream binary framing, whose messages reach the decoders as events too
/// ([`super::eventstream::Message::into_event`]).
pub(crate) enum Framing {
    Sse(SseParser),
    EventStream(EventStreamDecoder),
}

impl Framing {
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, ProviderError> {
        match self {
            Framing::Sse(parser) => parser.push(bytes),
            Framing::EventStream(decoder) => Ok(decoder
                .push(bytes)?
                .into_iter()
                .map(|message| message.into_event())
                .collect()),
        }
    }

    /// The end of the body: a last SSE event, or an error when it came inside a binary
    /// message.
    fn finish(&mut self) -> Result<Option<SseEvent>, ProviderError> {
        match self {
            Framing::Sse(parser) => Ok(parser.finish()),
            Framing::EventStream(decoder) => decoder.finish().map(|()| None),
        }
    }
}

/// One item of a [`ChunkStream`].
#[derive(Debug)]
pub enum StreamEvent {
    /// An OpenAI `chat.completion.chunk`, ready to forward. Usage-only chunks are never
    /// emitted: usage comes with [`StreamEvent::End`].
    Chunk(ChatCompletionChunk),
    /// Always the last item, exactly once.
    End(StreamEnd),
}

/// How a stream ended.
#[derive(Debug)]
pub struct StreamEnd {
    /// What to bill. When the upstream reported its final usage this is that; otherwise
    /// (stream cut, or an OpenAI-compatible server that sends no usage) the input is the
    /// upstream's reported input if it sent one (Anthropic does at the start) or the
    /// request's estimate, and the output is the larger of any reported count and
    /// ⌈characters streamed / 4⌉ (text, refusal, tool names and arguments).
    pub usage: Usage,
    /// `true` when `usage` is (partly) counted by Switchboard rather than reported.
    pub usage_estimated: bool,
    pub finish_reason: Option<FinishReason>,
    /// `Some` when the stream broke: connection lost, idle timeout, an error event, a
    /// garbled frame, or the end of the body before the end marker.
    pub error: Option<ProviderError>,
}

/// Usage and progress of a stream, fed by the decoders and by every emitted chunk.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamTally {
    prompt_estimate: u64,
    reported: Option<Usage>,
    reported_final: bool,
    output_chars: u64,
    pub(crate) finish_reason: Option<FinishReason>,
    content_started: bool,
}

impl StreamTally {
    pub(crate) fn new(prompt_estimate: u64) -> StreamTally {
        StreamTally {
            prompt_estimate,
            ..StreamTally::default()
        }
    }

    /// Usage as the upstream reports it; `is_final` once the count covers the whole answer.
    pub(crate) fn set_usage(&mut self, usage: Usage, is_final: bool) {
        self.reported = Some(usage);
        self.reported_final = is_final;
    }

    fn observe(&mut self, chunk: &ChatCompletionChunk) {
        for choice in &chunk.choices {
            self.output_chars += choice.delta.output_chars();
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason);
            }
        }
        self.content_started |= chunk.has_content();
    }

    /// See [`StreamEnd::usage`] for the rule.
    pub(crate) fn usage(&self) -> (Usage, bool) {
        let counted_output = self.output_chars.div_ceil(4);
        match self.reported {
            Some(usage) if self.reported_final => (usage, false),
            Some(mut usage) => {
                usage.output_tokens = usage.output_tokens.max(counted_output);
                if usage.input_tokens() == 0 {
                    usage.uncached_input_tokens = self.prompt_estimate;
                }
                (usage, true)
            }
            None => (
                Usage {
                    uncached_input_tokens: self.prompt_estimate,
                    output_tokens: counted_output,
                    ..Usage::default()
                },
                true,
            ),
        }
    }
}

/// Turns the events of one upstream format into OpenAI chunks.
pub(crate) trait EventDecoder: Send {
    /// Handles one event, pushing the chunks it yields. Returns `true` once the stream's
    /// end marker was seen (nothing after it is read).
    fn on_event(
        &mut self,
        event: SseEvent,
        tally: &mut StreamTally,
        out: &mut Vec<ChatCompletionChunk>,
    ) -> Result<bool, ProviderError>;

    /// The body ended without the end marker. Accepted when the answer is evidently
    /// complete (a finish reason arrived: some OpenAI-compatible servers omit `[DONE]`,
    /// and Gemini has no marker besides its last chunk); a broken stream otherwise.
    fn on_eof(&mut self, tally: &StreamTally) -> Result<(), ProviderError> {
        if tally.finish_reason.is_some() {
            Ok(())
        } else {
            Err(ProviderError::StreamInterrupted {
                message: "the stream ended before its end marker".to_owned(),
            })
        }
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

enum Phase {
    Reading,
    Ending(Option<ProviderError>),
    Ended,
}

/// The upstream's answer as a stream of [`StreamEvent`]s: chunks, then one `End`.
///
/// Dropping it closes the upstream connection. A caller that stops early (the client went
/// away) reads what to bill from [`ChunkStream::usage_so_far`].
pub struct ChunkStream {
    body: ByteStream,
    parser: Framing,
    decoder: Box<dyn EventDecoder>,
    tally: StreamTally,
    queue: VecDeque<ChatCompletionChunk>,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    /// The idle clock starts at the first poll: the caller may do its own work (a ledger
    /// hold, response headers) between receiving the stream and reading it.
    polled: bool,
    phase: Phase,
}

impl std::fmt::Debug for ChunkStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStream")
            .field("tally", &self.tally)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl ChunkStream {
    pub(crate) fn new(
        body: ByteStream,
        framing: Framing,
        decoder: Box<dyn EventDecoder>,
        prompt_estimate: u64,
        idle_timeout: Duration,
    ) -> ChunkStream {
        ChunkStream {
            body,
            parser: framing,
            decoder,
            tally: StreamTally::new(prompt_estimate),
            queue: VecDeque::new(),
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            polled: false,
            phase: Phase::Reading,
        }
    }

    /// Usage so far (see [`StreamEnd::usage`]) and whether it is estimated.
    pub fn usage_so_far(&self) -> (Usage, bool) {
        self.tally.usage()
    }

    /// Whether a chunk with generated output has been emitted (no fallback after that).
    pub fn content_started(&self) -> bool {
        self.tally.content_started
    }

    fn end(&mut self, error: Option<ProviderError>) {
        self.phase = Phase::Ending(error);
    }

    fn ingest(&mut self, events: Vec<SseEvent>) {
        let mut produced = Vec::new();
        for event in events {
            match self.decoder.on_event(event, &mut self.tally, &mut produced) {
                Ok(done) => {
                    self.enqueue(&mut produced);
                    if done {
                        self.end(None);
                        return;
                    }
                }
                Err(error) => {
                    self.enqueue(&mut produced);
                    self.end(Some(error));
                    return;
                }
            }
        }
    }

    fn enqueue(&mut self, produced: &mut Vec<ChatCompletionChunk>) {
        for chunk in produced.drain(..) {
            self.tally.observe(&chunk);
            self.queue.push_back(chunk);
        }
    }

    fn finish_body(&mut self) {
        match self.parser.finish() {
            Ok(Some(event)) => {
                self.ingest(vec![event]);
                if !matches!(self.phase, Phase::Reading) {
                    return;
                }
            }
            Ok(None) => {}
            Err(error) => {
                self.end(Some(error));
                return;
            }
        }
        let outcome = self.decoder.on_eof(&self.tally);
        self.end(outcome.err());
    }
}

impl Stream for ChunkStream {
    type Item = StreamEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamEvent>> {
        let this = self.get_mut();
        if !this.polled {
            this.polled = true;
            let deadline = Instant::now() + this.idle_timeout;
            this.idle.as_mut().reset(deadline);
        }
        loop {
            if let Some(chunk) = this.queue.pop_front() {
                return Poll::Ready(Some(StreamEvent::Chunk(chunk)));
            }
            match std::mem::replace(&mut this.phase, Phase::Ended) {
                Phase::Ended => return Poll::Ready(None),
                Phase::Ending(error) => {
                    let (usage, usage_estimated) = this.tally.usage();
                    return Poll::Ready(Some(StreamEvent::End(StreamEnd {
                        usage,
                        usage_estimated,
                        finish_reason: this.tally.finish_reason,
                        error,
                    })));
                }
                Phase::Reading => this.phase = Phase::Reading,
            }
            match this.body.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    let deadline = Instant::now() + this.idle_timeout;
                    this.idle.as_mut().reset(deadline);
                    match this.parser.push(&bytes) {
                        Ok(events) => this.ingest(events),
                        Err(error) => this.end(Some(error)),
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    let error = ProviderError::from_transport(&error, TimeoutPhase::StreamIdle);
                    let error = match error {
                        ProviderError::Connect { message } => {
                            ProviderError::StreamInterrupted { message }
                        }
                        other => other,
                    };
                    this.end(Some(error));
                }
                Poll::Ready(None) => this.finish_body(),
                Poll::Pending => {
                    if this.idle.as_mut().poll(cx).is_ready() {
                        this.end(Some(ProviderError::Timeout {
                            phase: TimeoutPhase::StreamIdle,
                        }));
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::response::Delta;

    #[test]
    fn counted_usage_when_nothing_was_reported() {
        let mut tally = StreamTally::new(50);
        tally.observe(&ChatCompletionChunk::new(
            "id",
            0,
            "m",
            Delta {
                content: Some("abcdefghi".into()),
                ..Delta::default()
            },
            None,
        ));
        let (usage, estimated) = tally.usage();
        assert!(estimated);
        assert_eq!(usage.uncached_input_tokens, 50);
        assert_eq!(usage.output_tokens, 3);
    }

    #[test]
    fn reported_input_with_counted_output_when_cut() {
        let mut tally = StreamTally::new(50);
        tally.set_usage(
            Usage {
                uncached_input_tokens: 7,
                cached_input_tokens: 3,
                output_tokens: 1,
                ..Usage::default()
            },
            false,
        );
        tally.observe(&ChatCompletionChunk::new(
            "id",
            0,
            "m",
            Delta {
                content: Some("a".repeat(40)),
                ..Delta::default()
            },
            None,
        ));
        let (usage, estimated) = tally.usage();
        assert!(estimated);
        assert_eq!(usage.uncached_input_tokens, 7);
        assert_eq!(usage.cached_input_tokens, 3);
        assert_eq!(usage.output_tokens, 10);
        tally.set_usage(
            Usage {
                uncached_input_tokens: 7,
                cached_input_tokens: 3,
                output_tokens: 12,
                ..Usage::default()
            },
            true,
        );
        assert_eq!(tally.usage().0.output_tokens, 12);
        assert!(!tally.usage().1);
    }
}
