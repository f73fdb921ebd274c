//! An in-process fake of the three upstream LLM provider APIs (OpenAI Chat
//! Completions, Anthropic Messages, Google Gemini), used by integration tests in
//! place of the real providers.
//!
//! The server records every request it receives and answers completion requests
//! from a script of [`Step`]s (one step per completion request, in any format),
//! falling back to a default [`Reply`] when the script is empty. A [`Reply`] is
//! format-independent: it is rendered in whichever wire format the request came
//! in, streamed (SSE) or not according to the request.
//!
//! Routes:
//! - OpenAI: `POST /v1/chat/completions`, `POST /v1/responses` (the Responses API, JSON
//!   and its SSE event sequence; a reply's thinking is a `reasoning` item whose
//!   `encrypted_content` is sent when the request's `include` asks for it),
//!   `GET /v1/models`, `GET /v1/models/{id}`
//! - Anthropic: `POST /v1/messages`, `GET /v1/models`, `GET /v1/models/{id}`
//!   (a `GET /v1/models` carrying an `anthropic-version` or `x-api-key` header gets
//!   the Anthropic list shape, anything else the OpenAI shape)
//! - Gemini: `POST /v1beta/models/{model}:generateContent`,
//!   `POST /v1beta/models/{model}:streamGenerateContent[?alt=sse]`,
//!   `GET /v1beta/models`, `GET /v1beta/models/{model}`
//! - Bedrock: `POST /bedrock/model/{modelId}/converse` and `.../converse-stream`, every
//!   SigV4 signature checked, answered in Converse JSON or event-stream frames
//!   ([`bedrock`])
//! - Embeddings: OpenAI `POST /v1/embeddings` and Gemini
//!   `POST /v1beta/models/{model}:batchEmbedContents`, scripted by the same steps (a
//!   [`Reply`] is rendered as one vector per input, see [`fake_embedding`]; OpenAI's
//!   answer reports the reply's `prompt_tokens` as its usage, Gemini's reports none, as
//!   the real API does)
//!
//! Usage accounting: [`Usage::prompt_tokens`] is the *total* number of input
//! tokens, cached ones included (the OpenAI and Gemini convention). On the
//! Anthropic wire `input_tokens` is therefore
//! `prompt_tokens - cached_tokens - cache_creation_tokens`, with the two cache
//! counts reported in `cache_read_input_tokens` / `cache_creation_input_tokens`,
//! so a gateway that normalises correctly sees the same totals in all three
//! formats, streamed or not.
//!
//! A reply built with [`Reply::billed_from_request`] reports instead the input the real
//! provider would bill for the request received (images, PDF pages, prompt-cache writes:
//! see [`crate::fake_billing`]); files the provider would fetch by URL are served from
//! [`FakeUpstream::host`].
//!
//! Request validation mirrors the real APIs loosely: a body that is not a JSON
//! object, or lacks the fields the provider requires (OpenAI `model` + `messages`,
//! Responses `model` + `input`,
//! Anthropic `model` + `messages` + `max_tokens`, Gemini `contents`), gets a 400 in
//! that provider's error shape and does not consume a scripted step.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::fake_billing::{Wire, billed_input};

pub mod bedrock;

/// Text of the default reply.
pub const DEFAULT_TEXT: &str = "Hello from the fake upstream.";
/// Prompt tokens reported by a reply built without `with_usage`.
pub const DEFAULT_PROMPT_TOKENS: u64 = 11;
/// Completion tokens reported by a reply built without `with_usage`.
pub const DEFAULT_COMPLETION_TOKENS: u64 = 7;

/// Default model ids served by the models endpoints, per format.
pub const DEFAULT_OPENAI_MODELS: &[&str] = &["gpt-4o-mini", "gpt-4o"];
pub const DEFAULT_ANTHROPIC_MODELS: &[&str] = &["claude-sonnet-4-5", "claude-haiku-4-5"];
pub const DEFAULT_GEMINI_MODELS: &[&str] = &["gemini-2.0-flash", "gemini-2.5-pro"];

// ---------------------------------------------------------------------------
// Public scripting types
// ---------------------------------------------------------------------------

/// Why the model stopped, rendered natively per format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// OpenAI `stop`, Anthropic `end_turn`, Gemini `STOP`.
    Stop,
    /// OpenAI `length`, Anthropic `max_tokens`, Gemini `MAX_TOKENS`.
    Length,
    /// OpenAI `tool_calls`, Anthropic `tool_use`, Gemini `STOP`.
    ToolCalls,
    /// OpenAI `content_filter`, Anthropic `refusal`, Gemini `SAFETY`.
    ContentFilter,
}

impl FinishReason {
    fn openai(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }

    fn anthropic(self) -> &'static str {
        match self {
            FinishReason::Stop => "end_turn",
            FinishReason::Length => "max_tokens",
            FinishReason::ToolCalls => "tool_use",
            FinishReason::ContentFilter => "refusal",
        }
    }

    fn gemini(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::ToolCalls => "STOP",
            FinishReason::Length => "MAX_TOKENS",
            FinishReason::ContentFilter => "SAFETY",
        }
    }
}

/// Token usage of a reply. `prompt_tokens` includes `cached_tokens` and
/// `cache_creation_tokens` (see the module docs for the Anthropic mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens read from the provider's cache (OpenAI
    /// `prompt_tokens_details.cached_tokens`, Anthropic `cache_read_input_tokens`,
    /// Gemini `cachedContentTokenCount`).
    pub cached_tokens: u64,
    /// Anthropic `cache_creation_input_tokens`; not rendered by the other formats.
    pub cache_creation_tokens: u64,
    /// The part of `cache_creation_tokens` written to the 1-hour cache: when not zero,
    /// Anthropic's `cache_creation` object splits the writes by lifetime.
    pub cache_creation_1h_tokens: u64,
    /// The part of `completion_tokens` spent reasoning (OpenAI
    /// `completion_tokens_details.reasoning_tokens`, Responses
    /// `output_tokens_details.reasoning_tokens`); not rendered by the other formats.
    pub reasoning_tokens: u64,
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            prompt_tokens: DEFAULT_PROMPT_TOKENS,
            completion_tokens: DEFAULT_COMPLETION_TOKENS,
            cached_tokens: 0,
            cache_creation_tokens: 0,
            cache_creation_1h_tokens: 0,
            reasoning_tokens: 0,
        }
    }
}

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// Anthropic `input_tokens`: the prompt tokens that were neither read from
    /// nor written to the cache.
    pub fn anthropic_input_tokens(&self) -> u64 {
        self.prompt_tokens
            .saturating_sub(self.cached_tokens)
            .saturating_sub(self.cache_creation_tokens)
    }
}

/// One tool (function) call requested by the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// Call id; when `None` a deterministic one is generated per format
    /// (`call_fake_{i}` for OpenAI, `toolu_fake_{i}` for Anthropic; Gemini has none).
    pub id: Option<String>,
    pub name: String,
    /// The arguments as a JSON value (OpenAI renders it as a JSON string).
    pub arguments: Value,
}

/// A successful answer, independent of the wire format.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Assistant text; when empty and tool calls are present, no text block is sent.
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    /// `None`: `ToolCalls` when there are tool calls, `Stop` otherwise.
    pub finish_reason: Option<FinishReason>,
    pub usage: Usage,
    /// Extended thinking (text, signature): Anthropic renders it as a `thinking` block
    /// before the text (streamed as `thinking_delta` and `signature_delta`); the OpenAI
    /// Responses API as a `reasoning` item before the message, the text as its summary and
    /// the signature as its `encrypted_content` (sent only when the request's `include`
    /// asks for `reasoning.encrypted_content`, as the real API does); chat completions and
    /// Gemini do not send it.
    pub thinking: Option<(String, String)>,
    /// Report the input the provider would bill for the request received
    /// ([`Reply::billed_from_request`]) instead of `usage`'s prompt and cache counts.
    pub bill_from_request: bool,
}

impl Default for Reply {
    fn default() -> Self {
        Reply::text(DEFAULT_TEXT)
    }
}

impl Reply {
    /// A plain text answer with the default usage.
    pub fn text(text: impl Into<String>) -> Reply {
        Reply {
            text: text.into(),
            tool_calls: Vec::new(),
            finish_reason: None,
            usage: Usage::default(),
            thinking: None,
            bill_from_request: false,
        }
    }

    /// Reports as its usage what the real provider would bill for the request received:
    /// its text, its images by size, its PDFs by page and (Anthropic) its prompt-cache
    /// writes, by the documented formulas (`fake_billing`). The completion tokens stay
    /// this reply's.
    pub fn billed_from_request(mut self) -> Reply {
        self.bill_from_request = true;
        self
    }

    /// Adds an Anthropic thinking block with its signature.
    pub fn with_thinking(mut self, text: impl Into<String>, signature: impl Into<String>) -> Reply {
        self.thinking = Some((text.into(), signature.into()));
        self
    }

    /// An answer consisting of one tool call (no text), finish reason tool calls.
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Reply {
        Reply::text("").with_tool_call(name, arguments)
    }

    /// Replaces the text.
    pub fn with_text(mut self, text: impl Into<String>) -> Reply {
        self.text = text.into();
        self
    }

    /// Adds a tool call (several calls make a parallel tool call).
    pub fn with_tool_call(mut self, name: impl Into<String>, arguments: Value) -> Reply {
        self.tool_calls.push(ToolCall {
            id: None,
            name: name.into(),
            arguments,
        });
        self
    }

    /// Adds a tool call with an explicit id (used verbatim by OpenAI and Anthropic).
    pub fn with_tool_call_id(
        mut self,
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: Value,
    ) -> Reply {
        self.tool_calls.push(ToolCall {
            id: Some(id.into()),
            name: name.into(),
            arguments,
        });
        self
    }

    /// Sets prompt, completion and cached prompt tokens (cache creation reset to 0).
    pub fn with_usage(mut self, prompt: u64, completion: u64, cached: u64) -> Reply {
        self.usage = Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: cached,
            cache_creation_tokens: 0,
            cache_creation_1h_tokens: 0,
            reasoning_tokens: 0,
        };
        self
    }

    /// Sets the reasoning tokens (part of `completion_tokens`).
    pub fn with_reasoning_tokens(mut self, tokens: u64) -> Reply {
        self.usage.reasoning_tokens = tokens;
        self
    }

    /// Sets the Anthropic cache-creation tokens (part of `prompt_tokens`).
    pub fn with_cache_creation(mut self, tokens: u64) -> Reply {
        self.usage.cache_creation_tokens = tokens;
        self
    }

    /// Sets the Anthropic cache-creation tokens split by lifetime: `five_minutes` and
    /// `one_hour` (both part of `prompt_tokens`).
    pub fn with_cache_creation_split(mut self, five_minutes: u64, one_hour: u64) -> Reply {
        self.usage.cache_creation_tokens = five_minutes + one_hour;
        self.usage.cache_creation_1h_tokens = one_hour;
        self
    }

    pub fn with_finish_reason(mut self, reason: FinishReason) -> Reply {
        self.finish_reason = Some(reason);
        self
    }

    /// The finish reason actually rendered.
    pub fn effective_finish_reason(&self) -> FinishReason {
        match self.finish_reason {
            Some(reason) => reason,
            None if !self.tool_calls.is_empty() => FinishReason::ToolCalls,
            None => FinishReason::Stop,
        }
    }

    fn has_text_block(&self) -> bool {
        !self.text.is_empty() || self.tool_calls.is_empty()
    }
}

/// One scripted behaviour; each completion request pops the next one.
#[derive(Debug, Clone)]
pub enum Step {
    /// Answer normally.
    Reply(Reply),
    /// Answer with this HTTP status. `body: None` renders the provider's own
    /// error JSON shape for the request's format.
    Status {
        status: u16,
        body: Option<Value>,
        retry_after: Option<String>,
    },
    /// Sleep, then perform `then`.
    Delay { delay: Duration, then: Box<Step> },
    /// Headers at once, then the stream frames with `frame_delay` between them.
    /// For a non-streamed request: sleep `frame_delay`, then answer normally.
    SlowStream { reply: Reply, frame_delay: Duration },
    /// 200 with a body that is not valid JSON: `application/json` with a
    /// truncated object, or for a stream request one SSE frame whose data is not
    /// JSON (then a clean end of the body, without the end marker).
    Malformed,
    /// Send the first `after_frames` frames of the stream (never the end marker),
    /// then abort the connection. For a non-streamed request: half of the JSON
    /// body, then abort.
    CutStream { reply: Reply, after_frames: usize },
    /// Close the connection without any response (no status line, no headers), as a
    /// provider whose load balancer resets the connection does.
    Reset,
    /// Anything else, verbatim.
    Raw {
        status: u16,
        content_type: String,
        body: Bytes,
    },
}

impl From<Reply> for Step {
    fn from(reply: Reply) -> Step {
        Step::Reply(reply)
    }
}

impl Step {
    pub fn reply(reply: Reply) -> Step {
        Step::Reply(reply)
    }

    /// This status with the provider's error body.
    pub fn status(status: u16) -> Step {
        Step::Status {
            status,
            body: None,
            retry_after: None,
        }
    }

    /// This status with a custom JSON body.
    pub fn status_with_body(status: u16, body: Value) -> Step {
        Step::Status {
            status,
            body: Some(body),
            retry_after: None,
        }
    }

    /// 429 with a `Retry-After` header and the provider's rate-limit error body.
    pub fn rate_limited(retry_after: impl Into<String>) -> Step {
        Step::Status {
            status: 429,
            body: None,
            retry_after: Some(retry_after.into()),
        }
    }

    pub fn delay(delay: Duration, then: Step) -> Step {
        Step::Delay {
            delay,
            then: Box::new(then),
        }
    }

    /// The reply, after `delay`.
    pub fn delayed_reply(delay: Duration, reply: Reply) -> Step {
        Step::delay(delay, Step::Reply(reply))
    }

    pub fn slow_stream(reply: Reply, frame_delay: Duration) -> Step {
        Step::SlowStream { reply, frame_delay }
    }

    pub fn cut_stream(reply: Reply, after_frames: usize) -> Step {
        Step::CutStream {
            reply,
            after_frames,
        }
    }

    pub fn reset() -> Step {
        Step::Reset
    }

    pub fn raw(status: u16, content_type: impl Into<String>, body: impl Into<Bytes>) -> Step {
        Step::Raw {
            status,
            content_type: content_type.into(),
            body: body.into(),
        }
    }
}

/// A request as the fake server received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Header names are lowercase; values are lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON; `Null` when empty or not JSON.
    pub body: Value,
    pub raw_body: Bytes,
}

impl RecordedRequest {
    /// First value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Value of the query parameter `name` (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.as_deref().and_then(|query| {
            query.split('&').find_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (key == name).then_some(value)
            })
        })
    }
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

struct Inner {
    steps: VecDeque<Step>,
    model_steps: VecDeque<Step>,
    default: Reply,
    requests: Vec<RecordedRequest>,
    models: Option<Vec<String>>,
    /// Files the provider "fetches" by URL, by URL.
    hosted: HashMap<String, Vec<u8>>,
    bedrock_signatures: bedrock::SignatureCounts,
}

struct Shared {
    inner: Mutex<Inner>,
    counter: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_id(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The fake provider server. Serves in a background task until dropped.
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for FakeUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeUpstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeUpstream {
    /// Binds 127.0.0.1 on a free port and serves in a background tokio task.
    ///
    /// Panics if no local port can be bound (use [`FakeUpstream::try_start`] to
    /// handle that).
    #[allow(clippy::expect_used)]
    pub async fn start() -> FakeUpstream {
        FakeUpstream::try_start()
            .await
            .expect("fake upstream: cannot bind a port on 127.0.0.1")
    }

    /// Like [`FakeUpstream::start`], returning the bind error.
    pub async fn try_start() -> io::Result<FakeUpstream> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                steps: VecDeque::new(),
                model_steps: VecDeque::new(),
                default: Reply::default(),
                requests: Vec::new(),
                models: None,
                hosted: HashMap::new(),
                bedrock_signatures: bedrock::SignatureCounts::default(),
            }),
            counter: AtomicU64::new(0),
        });
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::clone(&shared));
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // A dropped sender is a shutdown too.
                    let _ = shutdown_rx.await;
                })
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "fake upstream server stopped with an error");
            }
        });
        Ok(FakeUpstream {
            addr,
            shared,
            shutdown: Some(shutdown),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `base_url + "/v1"`
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.base_url())
    }

    /// `base_url + "/v1"`
    pub fn anthropic_base_url(&self) -> String {
        format!("{}/v1", self.base_url())
    }

    /// `base_url + "/v1beta"`
    pub fn gemini_base_url(&self) -> String {
        format!("{}/v1beta", self.base_url())
    }

    /// `base_url + "/bedrock"`: the fake Bedrock runtime (sign with [`bedrock`]'s test
    /// credentials, region `us-east-1`).
    pub fn bedrock_base_url(&self) -> String {
        format!("{}{}", self.base_url(), bedrock::PREFIX)
    }

    /// The SigV4 signatures the fake Bedrock runtime verified and refused so far.
    pub fn bedrock_signatures(&self) -> bedrock::SignatureCounts {
        self.shared.lock().bedrock_signatures
    }

    /// Queues one behaviour for the next completion request (any format).
    /// Serves `bytes` at an `https` URL a provider can "fetch" (the fake looks it up when
    /// it bills a request that refers to it); returns the URL. `name` ends it
    /// (`chart.png`).
    pub fn host(&self, name: &str, bytes: Vec<u8>) -> String {
        let url = format!(
            "https://files.fake-upstream.test/{}/{name}",
            self.shared.next_id()
        );
        self.shared.lock().hosted.insert(url.clone(), bytes);
        url
    }

    pub fn push(&self, step: impl Into<Step>) {
        self.shared.lock().steps.push_back(step.into());
    }

    /// Queues one behaviour for the next models-endpoint request (any format).
    /// `Reply`, `SlowStream` and `CutStream` steps answer with the model list
    /// (slowed down by `frame_delay`, resp. cut in the middle).
    pub fn push_models(&self, step: impl Into<Step>) {
        self.shared.lock().model_steps.push_back(step.into());
    }

    /// Completion steps still queued.
    pub fn pending_steps(&self) -> usize {
        self.shared.lock().steps.len()
    }

    /// Models-endpoint steps still queued.
    pub fn pending_model_steps(&self) -> usize {
        self.shared.lock().model_steps.len()
    }

    /// What completion requests get when the queue is empty.
    pub fn set_default(&self, reply: Reply) {
        self.shared.lock().default = reply;
    }

    /// Replaces the model ids listed by every format's models endpoint.
    pub fn set_models<S: AsRef<str>>(&self, ids: &[S]) {
        self.shared.lock().models = Some(ids.iter().map(|id| id.as_ref().to_owned()).collect());
    }

    /// Every request received (completions, models, unknown paths), in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.lock().requests.last().cloned()
    }

    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    OpenAi,
    Anthropic,
    Gemini,
}

enum Route {
    Completion {
        format: Format,
        /// Gemini: the model from the path.
        path_model: Option<String>,
        /// Gemini: `streamGenerateContent`.
        path_stream: bool,
        /// OpenAI's Responses API (`/v1/responses`) rather than chat completions.
        responses: bool,
    },
    Embeddings {
        format: Format,
    },
    Models(Format),
    Model(Format, String),
    MethodNotAllowed(Format),
    NotFound(Format),
}

fn header_format(headers: &HeaderMap) -> Format {
    if headers.contains_key("anthropic-version") || headers.contains_key("x-api-key") {
        Format::Anthropic
    } else {
        Format::OpenAi
    }
}

fn route(method: &Method, path: &str, headers: &HeaderMap) -> Route {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let post = |format: Format, completion: Route| {
        if method == Method::POST {
            completion
        } else {
            Route::MethodNotAllowed(format)
        }
    };
    let get = |format: Format, found: Route| {
        if method == Method::GET {
            found
        } else {
            Route::MethodNotAllowed(format)
        }
    };
    match path {
        "/v1/chat/completions" => post(
            Format::OpenAi,
            Route::Completion {
                format: Format::OpenAi,
                path_model: None,
                path_stream: false,
                responses: false,
            },
        ),
        "/v1/responses" => post(
            Format::OpenAi,
            Route::Completion {
                format: Format::OpenAi,
                path_model: None,
                path_stream: false,
                responses: true,
            },
        ),
        "/v1/messages" => post(
            Format::Anthropic,
            Route::Completion {
                format: Format::Anthropic,
                path_model: None,
                path_stream: false,
                responses: false,
            },
        ),
        "/v1/embeddings" => post(
            Format::OpenAi,
            Route::Embeddings {
                format: Format::OpenAi,
            },
        ),
        "/v1/models" => {
            let format = header_format(headers);
            get(format, Route::Models(format))
        }
        "/v1beta/models" => get(Format::Gemini, Route::Models(Format::Gemini)),
        _ => {
            if let Some(rest) = path.strip_prefix("/v1beta/models/") {
                gemini_model_route(method, rest)
            } else if let Some(rest) = path.strip_prefix("/v1/models/") {
                if rest.contains(':') {
                    // Gemini's stable `v1` surface.
                    gemini_model_route(method, rest)
                } else {
                    let format = header_format(headers);
                    get(format, Route::Model(format, rest.to_owned()))
                }
            } else if path.starts_with("/v1beta") {
                Route::NotFound(Format::Gemini)
            } else {
                Route::NotFound(header_format(headers))
            }
        }
    }
}

fn gemini_model_route(method: &Method, last: &str) -> Route {
    match last.rsplit_once(':') {
        Some((model, "batchEmbedContents")) if !model.is_empty() => {
            if method == Method::POST {
                Route::Embeddings {
                    format: Format::Gemini,
                }
            } else {
                Route::MethodNotAllowed(Format::Gemini)
            }
        }
        Some((model, action)) if !model.is_empty() => {
            let path_stream = match action {
                "generateContent" => false,
                "streamGenerateContent" => true,
                _ => return Route::NotFound(Format::Gemini),
            };
            if method == Method::POST {
                Route::Completion {
                    format: Format::Gemini,
                    path_model: Some(model.to_owned()),
                    path_stream,
                    responses: false,
                }
            } else {
                Route::MethodNotAllowed(Format::Gemini)
            }
        }
        Some(_) => Route::NotFound(Format::Gemini),
        None if method == Method::GET && !last.is_empty() && !last.contains('/') => {
            Route::Model(Format::Gemini, last.to_owned())
        }
        None => Route::NotFound(Format::Gemini),
    }
}

/// What the renderers need to know about a completion request.
struct Completion {
    format: Format,
    model: String,
    stream: bool,
    /// OpenAI `stream_options.include_usage`.
    include_usage: bool,
    /// Gemini `alt=sse` (otherwise a stream is a streamed JSON array).
    sse: bool,
    /// A Responses API request (`/v1/responses`), and what it asks of the answer.
    responses: Option<ResponsesOptions>,
    id: u64,
    created: u64,
}

fn optional_bool(body: &Value, key: &str) -> Result<bool, String> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(_) => Err(format!("'{key}' must be a boolean")),
    }
}

fn required_model(body: &Value) -> Result<String, String> {
    match body.get("model") {
        Some(Value::String(model)) if !model.is_empty() => Ok(model.clone()),
        Some(_) => Err("'model' must be a non-empty string".to_owned()),
        None => Err("'model' is required".to_owned()),
    }
}

fn required_array(body: &Value, key: &str) -> Result<(), String> {
    match body.get(key) {
        Some(Value::Array(_)) => Ok(()),
        Some(_) => Err(format!("'{key}' must be an array")),
        None => Err(format!("'{key}' is required")),
    }
}

/// What a Responses API request asks of the answer.
#[derive(Debug, Clone, Copy)]
struct ResponsesOptions {
    /// `include` has `reasoning.encrypted_content`.
    encrypted_reasoning: bool,
}

/// A Responses API request: `model` and `input` (a string or an array of items) are
/// required, and `stream`, `store` and `include` must be well-formed.
fn parse_responses(body: &Value) -> Result<(String, bool, ResponsesOptions), String> {
    if !body.is_object() {
        return Err("the request body must be a JSON object".to_owned());
    }
    let model = required_model(body)?;
    match body.get("input") {
        Some(Value::String(_) | Value::Array(_)) => {}
        Some(_) => return Err("'input' must be a string or an array of items".to_owned()),
        None => return Err("'input' is required".to_owned()),
    }
    let stream = optional_bool(body, "stream")?;
    optional_bool(body, "store")?;
    let include = match body.get("include") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return Err("'include' must be an array".to_owned()),
    };
    let encrypted_reasoning = include
        .iter()
        .any(|item| item.as_str() == Some("reasoning.encrypted_content"));
    Ok((
        model,
        stream,
        ResponsesOptions {
            encrypted_reasoning,
        },
    ))
}

fn parse_completion(
    format: Format,
    path_model: Option<String>,
    path_stream: bool,
    query: Option<&str>,
    body: &Value,
) -> Result<(String, bool, bool, bool), String> {
    if !body.is_object() {
        return Err("the request body must be a JSON object".to_owned());
    }
    match format {
        Format::OpenAi => {
            let model = required_model(body)?;
            required_array(body, "messages")?;
            let stream = optional_bool(body, "stream")?;
            let include_usage = match body.get("stream_options") {
                None | Some(Value::Null) => false,
                Some(options @ Value::Object(_)) => optional_bool(options, "include_usage")?,
                Some(_) => return Err("'stream_options' must be an object".to_owned()),
            };
            Ok((model, stream, include_usage, true))
        }
        Format::Anthropic => {
            let model = required_model(body)?;
            required_array(body, "messages")?;
            match body.get("max_tokens") {
                Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => {}
                Some(_) => return Err("max_tokens: must be a positive integer".to_owned()),
                None => return Err("max_tokens: Field required".to_owned()),
            }
            let stream = optional_bool(body, "stream")?;
            Ok((model, stream, false, true))
        }
        Format::Gemini => {
            required_array(body, "contents")?;
            let model = path_model.unwrap_or_default();
            let sse = query.is_some_and(|query| query.split('&').any(|pair| pair == "alt=sse"));
            Ok((model, path_stream, false, sse))
        }
    }
}

// ---------------------------------------------------------------------------
// Handler
// ---------------------------------------------------------------------------

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    raw_body: Bytes,
) -> Response {
    let body = if raw_body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&raw_body).unwrap_or(Value::Null)
    };
    let recorded = RecordedRequest {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.clone(),
        raw_body,
    };
    let raw_body = recorded.raw_body.clone();
    shared.lock().requests.push(recorded);
    if uri.path().starts_with(&format!("{}/", bedrock::PREFIX)) {
        return bedrock::handle(&shared, method.as_str(), uri.path(), &headers, &raw_body).await;
    }

    match route(&method, uri.path(), &headers) {
        Route::Completion {
            format,
            path_model,
            path_stream,
            responses,
        } => {
            let parsed = if responses {
                parse_responses(&body)
                    .map(|(model, stream, options)| (model, stream, false, true, Some(options)))
            } else {
                parse_completion(format, path_model, path_stream, uri.query(), &body)
                    .map(|(model, stream, usage, sse)| (model, stream, usage, sse, None))
            };
            let (model, stream, include_usage, sse, responses) = match parsed {
                Ok(parsed) => parsed,
                Err(message) => return error_response(format, 400, None, None, Some(&message)),
            };
            let step = {
                let mut inner = shared.lock();
                let mut step = match inner.steps.pop_front() {
                    Some(step) => step,
                    None => Step::Reply(inner.default.clone()),
                };
                if let Step::Reply(reply) = &mut step
                    && reply.bill_from_request
                {
                    let wire = match format {
                        Format::OpenAi => Wire::OpenAi,
                        Format::Anthropic => Wire::Anthropic,
                        Format::Gemini => Wire::Gemini,
                    };
                    let billed = billed_input(wire, &model, &body, &inner.hosted);
                    reply.usage = Usage {
                        prompt_tokens: billed.prompt_tokens,
                        completion_tokens: reply.usage.completion_tokens,
                        cached_tokens: 0,
                        cache_creation_tokens: billed.cache_write_tokens,
                        cache_creation_1h_tokens: billed.cache_write_1h_tokens,
                        reasoning_tokens: reply.usage.reasoning_tokens,
                    };
                }
                step
            };
            let request = Completion {
                format,
                model,
                stream,
                include_usage,
                sse,
                responses,
                id: shared.next_id(),
                created: unix_now(),
            };
            completion_response(&request, resolve_delays(step).await).await
        }
        Route::Embeddings { format } => {
            let inputs = match embedding_inputs(format, &body) {
                Ok(inputs) => inputs,
                Err(message) => return error_response(format, 400, None, None, Some(&message)),
            };
            let step = {
                let mut inner = shared.lock();
                match inner.steps.pop_front() {
                    Some(step) => step,
                    None => Step::Reply(inner.default.clone()),
                }
            };
            embeddings_response(format, &body, &inputs, resolve_delays(step).await).await
        }
        Route::Models(format) => {
            let (step, ids) = {
                let mut inner = shared.lock();
                (inner.model_steps.pop_front(), inner.models.clone())
            };
            let list = models_list(format, ids.as_deref());
            match step {
                None => json_response(StatusCode::OK, &list),
                Some(step) => models_response(format, &list, resolve_delays(step).await).await,
            }
        }
        Route::Model(format, id) => {
            let ids = shared.lock().models.clone();
            let ids = model_ids(format, ids.as_deref());
            match ids.iter().find(|known| **known == id) {
                Some(id) => json_response(StatusCode::OK, &model_object(format, id)),
                None => error_response(
                    format,
                    404,
                    None,
                    None,
                    Some(&format!("The model '{id}' does not exist")),
                ),
            }
        }
        Route::MethodNotAllowed(format) => error_response(format, 405, None, None, None),
        Route::NotFound(format) => error_response(format, 404, None, None, None),
    }
}

async fn resolve_delays(mut step: Step) -> Step {
    loop {
        match step {
            Step::Delay { delay, then } => {
                tokio::time::sleep(delay).await;
                step = *then;
            }
            other => return other,
        }
    }
}

async fn completion_response(request: &Completion, step: Step) -> Response {
    match step {
        Step::Reply(reply) => reply_response(request, &reply, None),
        Step::SlowStream { reply, frame_delay } => {
            if request.stream {
                reply_response(request, &reply, Some(frame_delay))
            } else {
                tokio::time::sleep(frame_delay).await;
                reply_response(request, &reply, None)
            }
        }
        Step::CutStream {
            reply,
            after_frames,
        } => {
            if request.stream {
                let (content_type, mut frames) = stream_frames(request, &reply);
                // Never send the end marker (the last frame).
                let keep = after_frames.min(frames.len().saturating_sub(1));
                frames.truncate(keep);
                streaming_response(content_type, frames, None, true)
            } else {
                let full = reply_json(request, &reply).to_string();
                let half: String = full.chars().take(full.chars().count() / 2).collect();
                streaming_response("application/json", vec![half], None, true)
            }
        }
        Step::Status {
            status,
            body,
            retry_after,
        } => error_response(request.format, status, body, retry_after.as_deref(), None),
        Step::Malformed => {
            if request.stream {
                let frame = match (request.format, request.sse) {
                    (Format::OpenAi, _) if request.responses.is_some() => {
                        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"delta\":\"Hel\n\n"
                    }
                    (Format::OpenAi, _) => {
                        "data: {\"id\":\"chatcmpl-malformed\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":{\"content\":\"Hel\n\n"
                    }
                    (Format::Anthropic, _) => {
                        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_del\n\n"
                    }
                    (Format::Gemini, true) => {
                        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hel\r\n\r\n"
                    }
                    (Format::Gemini, false) => {
                        "[{\"candidates\": [{\"content\": {\"parts\": [{\"te"
                    }
                };
                let content_type = if request.format == Format::Gemini && !request.sse {
                    "application/json"
                } else {
                    "text/event-stream"
                };
                streaming_response(content_type, vec![frame.to_owned()], None, false)
            } else {
                malformed_json_response()
            }
        }
        Step::Raw {
            status,
            content_type,
            body,
        } => raw_response(status, &content_type, body),
        Step::Reset => reset_connection(),
        // `resolve_delays` never returns a delay.
        Step::Delay { .. } => error_response(request.format, 500, None, None, None),
    }
}

/// The length of each input of an embeddings request (characters of a text, or tokens
/// of a token array), in order; an error in the provider's words for a bad body.
fn embedding_inputs(format: Format, body: &Value) -> Result<Vec<usize>, String> {
    let item_len = |item: &Value| match item {
        Value::String(text) => Some(text.chars().count()),
        Value::Array(tokens) if tokens.iter().all(Value::is_u64) => Some(tokens.len()),
        _ => None,
    };
    match format {
        Format::OpenAi => {
            required_model(body)?;
            let inputs = match body.get("input") {
                Some(Value::String(text)) => vec![text.chars().count()],
                Some(Value::Array(items)) if items.iter().all(Value::is_u64) => vec![items.len()],
                Some(Value::Array(items)) => items
                    .iter()
                    .map(item_len)
                    .collect::<Option<Vec<_>>>()
                    .ok_or("'input' must be a string, an array of strings or token arrays")?,
                Some(_) => return Err("'input' is invalid".to_owned()),
                None => return Err("'input' is required".to_owned()),
            };
            if inputs.is_empty() || inputs.contains(&0) {
                return Err("'input' must not be empty".to_owned());
            }
            Ok(inputs)
        }
        _ => {
            let requests = body
                .get("requests")
                .and_then(Value::as_array)
                .ok_or("'requests' is required")?;
            if requests.is_empty() || requests.len() > 100 {
                return Err("at most 100 requests can be in one batch".to_owned());
            }
            requests
                .iter()
                .map(|r| {
                    r["content"]["parts"][0]["text"]
                        .as_str()
                        .map(|t| t.chars().count())
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| "each request needs content.parts[0].text".to_owned())
        }
    }
}

/// The vector the fake answers for input `index` of `len` characters (or tokens) in
/// `dimensions` numbers: `[index + 0.25, len, 0.125, 0.25, …]`, every value exact in
/// `f32`, so that tests can check the float and base64 forms exactly.
pub fn fake_embedding(index: usize, len: usize, dimensions: usize) -> Vec<f32> {
    (0..dimensions.max(2))
        .map(|j| match j {
            0 => index as f32 + 0.25,
            1 => len as f32,
            _ => (j - 1) as f32 * 0.125,
        })
        .collect()
}

/// Default vector size of the fake's embeddings.
pub const DEFAULT_EMBEDDING_DIMENSIONS: usize = 8;

async fn embeddings_response(
    format: Format,
    body: &Value,
    inputs: &[usize],
    step: Step,
) -> Response {
    let dimensions = match format {
        Format::Gemini => body["requests"][0]["outputDimensionality"].as_u64(),
        _ => body["dimensions"].as_u64(),
    }
    .map_or(DEFAULT_EMBEDDING_DIMENSIONS, |d| d as usize);
    let render = |reply: &Reply| {
        let vectors = inputs
            .iter()
            .enumerate()
            .map(|(i, len)| fake_embedding(i, *len, dimensions));
        match format {
            Format::Gemini => json!({
                "embeddings": vectors.map(|values| json!({"values": values})).collect::<Vec<_>>()
            }),
            _ => {
                let base64 = body["encoding_format"] == "base64";
                let data: Vec<Value> = vectors
                    .enumerate()
                    .map(|(index, values)| {
                        let embedding = if base64 {
                            use base64::Engine as _;
                            let bytes: Vec<u8> =
                                values.iter().flat_map(|v| v.to_le_bytes()).collect();
                            json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                        } else {
                            json!(values)
                        };
                        json!({"object": "embedding", "index": index, "embedding": embedding})
                    })
                    .collect();
                json!({
                    "object": "list",
                    "data": data,
                    "model": body["model"],
                    "usage": {
                        "prompt_tokens": reply.usage.prompt_tokens,
                        "total_tokens": reply.usage.prompt_tokens,
                    },
                })
            }
        }
    };
    match step {
        Step::Reply(reply) => json_response(StatusCode::OK, &render(&reply)),
        Step::SlowStream { reply, frame_delay } => {
            tokio::time::sleep(frame_delay).await;
            json_response(StatusCode::OK, &render(&reply))
        }
        Step::CutStream { reply, .. } => {
            let full = render(&reply).to_string();
            let half: String = full.chars().take(full.chars().count() / 2).collect();
            streaming_response("application/json", vec![half], None, true)
        }
        Step::Status {
            status,
            body,
            retry_after,
        } => error_response(format, status, body, retry_after.as_deref(), None),
        Step::Malformed => malformed_json_response(),
        Step::Raw {
            status,
            content_type,
            body,
        } => raw_response(status, &content_type, body),
        Step::Reset => reset_connection(),
        Step::Delay { .. } => error_response(format, 500, None, None, None),
    }
}

async fn models_response(format: Format, list: &Value, step: Step) -> Response {
    match step {
        Step::Reply(_) => json_response(StatusCode::OK, list),
        Step::SlowStream { frame_delay, .. } => {
            tokio::time::sleep(frame_delay).await;
            json_response(StatusCode::OK, list)
        }
        Step::CutStream { .. } => {
            let full = list.to_string();
            let half: String = full.chars().take(full.chars().count() / 2).collect();
            streaming_response("application/json", vec![half], None, true)
        }
        Step::Status {
            status,
            body,
            retry_after,
        } => error_response(format, status, body, retry_after.as_deref(), None),
        Step::Malformed => malformed_json_response(),
        Step::Raw {
            status,
            content_type,
            body,
        } => raw_response(status, &content_type, body),
        Step::Reset => reset_connection(),
        Step::Delay { .. } => error_response(format, 500, None, None, None),
    }
}

/// Ends the connection this request came on without answering: the server runs each
/// connection in its own task, so unwinding that task drops the socket before any byte
/// of a response is written. `resume_unwind` skips the panic hook, so nothing is printed,
/// and the listener keeps serving other connections.
fn reset_connection() -> Response {
    std::panic::resume_unwind(Box::new("fake upstream: connection reset by script"))
}

fn reply_response(request: &Completion, reply: &Reply, frame_delay: Option<Duration>) -> Response {
    if request.stream {
        let (content_type, frames) = stream_frames(request, reply);
        streaming_response(content_type, frames, frame_delay, false)
    } else {
        json_response(StatusCode::OK, &reply_json(request, reply))
    }
}

fn reply_json(request: &Completion, reply: &Reply) -> Value {
    match request.format {
        Format::OpenAi if request.responses.is_some() => responses_json(request, reply),
        Format::OpenAi => openai_json(request, reply),
        Format::Anthropic => anthropic_json(request, reply),
        Format::Gemini => gemini_json(request, reply),
    }
}

/// The content type and the frames (each a complete SSE event, or a piece of a
/// streamed JSON array for Gemini without `alt=sse`); the last frame is the end
/// marker.
fn stream_frames(request: &Completion, reply: &Reply) -> (&'static str, Vec<String>) {
    match request.format {
        Format::OpenAi if request.responses.is_some() => (
            "text/event-stream; charset=utf-8",
            responses_frames(request, reply),
        ),
        Format::OpenAi => (
            "text/event-stream; charset=utf-8",
            openai_frames(request, reply),
        ),
        Format::Anthropic => (
            "text/event-stream; charset=utf-8",
            anthropic_frames(request, reply),
        ),
        Format::Gemini => {
            let chunks = gemini_chunks(request, reply);
            if request.sse {
                let frames = chunks
                    .iter()
                    .map(|chunk| format!("data: {chunk}\r\n\r\n"))
                    .collect();
                ("text/event-stream", frames)
            } else {
                let last = chunks.len().saturating_sub(1);
                let frames = chunks
                    .iter()
                    .enumerate()
                    .map(|(i, chunk)| {
                        let open = if i == 0 { "[" } else { ",\r\n" };
                        let close = if i == last { "]" } else { "" };
                        format!("{open}{chunk}{close}")
                    })
                    .collect();
                ("application/json; charset=UTF-8", frames)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

fn respond(status: StatusCode, content_type: HeaderValue, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    respond(
        status,
        HeaderValue::from_static("application/json"),
        Body::from(body.to_string()),
    )
}

fn malformed_json_response() -> Response {
    respond(
        StatusCode::OK,
        HeaderValue::from_static("application/json"),
        Body::from(
            "{\"id\": \"malformed\", \"object\": \"chat.completion\", \"choices\": [{\"index\": 0, \"message\": {\"role\": \"assistant\", \"content\": \"Hel",
        ),
    )
}

fn raw_response(status: u16, content_type: &str, body: Bytes) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = HeaderValue::from_str(content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    respond(status, content_type, Body::from(body))
}

/// A body sent frame by frame; `abort` ends it with an error, which makes the
/// server drop the connection without terminating the chunked body.
fn streaming_response(
    content_type: &'static str,
    frames: Vec<String>,
    frame_delay: Option<Duration>,
    abort: bool,
) -> Response {
    struct State {
        frames: std::vec::IntoIter<String>,
        first: bool,
    }
    let state = Some(State {
        frames: frames.into_iter(),
        first: true,
    });
    let stream = futures_util::stream::unfold(state, move |state| async move {
        let mut state = state?;
        match state.frames.next() {
            Some(frame) => {
                if !state.first
                    && let Some(delay) = frame_delay
                {
                    tokio::time::sleep(delay).await;
                }
                state.first = false;
                Some((Ok(Bytes::from(frame)), Some(state)))
            }
            None if abort => {
                // Let the frames already produced reach the socket first.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "fake upstream: stream cut",
                    )),
                    None,
                ))
            }
            None => None,
        }
    });
    let mut response = respond(
        StatusCode::OK,
        HeaderValue::from_static(content_type),
        Body::from_stream(stream),
    );
    if content_type.starts_with("text/event-stream") {
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

fn error_response(
    format: Format,
    status: u16,
    body: Option<Value>,
    retry_after: Option<&str>,
    message: Option<&str>,
) -> Response {
    let status_code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = body.unwrap_or_else(|| error_body(format, status_code.as_u16(), message));
    let mut response = json_response(status_code, &body);
    if let Some(retry_after) = retry_after
        && let Ok(value) = HeaderValue::from_str(retry_after)
    {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    if format == Format::Anthropic {
        response.headers_mut().insert(
            HeaderName::from_static("request-id"),
            HeaderValue::from_static("req_fake_error"),
        );
    }
    response
}

fn default_error_message(status: u16) -> &'static str {
    match status {
        400 => "Invalid request.",
        401 => "Incorrect API key provided.",
        403 => "You do not have access to this resource.",
        404 => "The requested resource was not found.",
        405 => "Method not allowed.",
        408 => "Request timed out.",
        413 => "Request too large.",
        429 => "Rate limit reached. Please try again later.",
        500 => "The server had an error while processing your request.",
        502 => "Bad gateway.",
        503 => "The service is temporarily unavailable.",
        504 => "Gateway timeout.",
        529 => "Overloaded.",
        _ => "Upstream error.",
    }
}

/// The provider's own error JSON for this status.
fn error_body(format: Format, status: u16, message: Option<&str>) -> Value {
    let message = message.unwrap_or_else(|| default_error_message(status));
    match format {
        Format::OpenAi => {
            let (kind, code) = match status {
                400 | 404 | 405 | 413 => ("invalid_request_error", Value::Null),
                401 => ("invalid_request_error", json!("invalid_api_key")),
                403 => ("permission_error", Value::Null),
                429 => ("requests", json!("rate_limit_exceeded")),
                _ => ("server_error", Value::Null),
            };
            json!({
                "error": {"message": message, "type": kind, "param": null, "code": code}
            })
        }
        Format::Anthropic => {
            let kind = match status {
                400 | 405 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                408 | 504 => "timeout_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 | 503 => "overloaded_error",
                _ => "api_error",
            };
            json!({
                "type": "error",
                "error": {"type": kind, "message": message},
                "request_id": "req_fake_error",
            })
        }
        Format::Gemini => {
            let grpc_status = match status {
                400 | 405 => "INVALID_ARGUMENT",
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                409 => "ABORTED",
                429 => "RESOURCE_EXHAUSTED",
                499 => "CANCELLED",
                501 => "UNIMPLEMENTED",
                503 => "UNAVAILABLE",
                504 => "DEADLINE_EXCEEDED",
                _ => "INTERNAL",
            };
            json!({"error": {"code": status, "message": message, "status": grpc_status}})
        }
    }
}

// ---------------------------------------------------------------------------
// Rendering helpers
// ---------------------------------------------------------------------------

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Splits text into several stream pieces (word by word; a single word in two).
fn split_text(text: &str) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    let words: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
    if words.len() >= 2 {
        return words;
    }
    split_chars(text, 2)
}

/// Splits into at most `parts` pieces of (nearly) equal char count.
fn split_chars(text: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let size = chars.len().div_ceil(parts.max(1));
    chars
        .chunks(size)
        .map(|chunk| chunk.iter().collect())
        .collect()
}

fn tool_call_id(call: &ToolCall, prefix: &str, index: usize) -> String {
    call.id
        .clone()
        .unwrap_or_else(|| format!("{prefix}_fake_{index}"))
}

// --- OpenAI ----------------------------------------------------------------

fn openai_id(request: &Completion) -> String {
    format!("chatcmpl-fake{:06}", request.id)
}

fn openai_usage(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens(),
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

fn openai_json(request: &Completion, reply: &Reply) -> Value {
    let content = if reply.has_text_block() {
        json!(reply.text)
    } else {
        Value::Null
    };
    let mut message = json!({
        "role": "assistant",
        "content": content,
        "refusal": null,
        "annotations": []
    });
    if !reply.tool_calls.is_empty() {
        let calls: Vec<Value> = reply
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, call)| {
                json!({
                    "id": tool_call_id(call, "call", i),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments.to_string()}
                })
            })
            .collect();
        message["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": openai_id(request),
        "object": "chat.completion",
        "created": request.created,
        "model": request.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": reply.effective_finish_reason().openai()
        }],
        "usage": openai_usage(&reply.usage),
        "service_tier": "default",
        "system_fingerprint": "fp_fake"
    })
}

fn openai_frames(request: &Completion, reply: &Reply) -> Vec<String> {
    let id = openai_id(request);
    let chunk = |delta: Value, finish: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": request.created,
            "model": request.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        });
        if request.include_usage {
            chunk["usage"] = Value::Null;
        }
        format!("data: {chunk}\n\n")
    };
    let tool_start = |i: usize, call: &ToolCall| {
        json!([{
            "index": i,
            "id": tool_call_id(call, "call", i),
            "type": "function",
            "function": {"name": call.name, "arguments": ""}
        }])
    };

    let mut frames = Vec::new();
    if reply.has_text_block() {
        frames.push(chunk(
            json!({"role": "assistant", "content": "", "refusal": null}),
            Value::Null,
        ));
        for piece in split_text(&reply.text) {
            frames.push(chunk(json!({"content": piece}), Value::Null));
        }
    }
    let mut first = !reply.has_text_block();
    for (i, call) in reply.tool_calls.iter().enumerate() {
        let delta = if first {
            json!({"role": "assistant", "content": null, "tool_calls": tool_start(i, call), "refusal": null})
        } else {
            json!({"tool_calls": tool_start(i, call)})
        };
        first = false;
        frames.push(chunk(delta, Value::Null));
        for piece in split_chars(&call.arguments.to_string(), 3) {
            frames.push(chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                Value::Null,
            ));
        }
    }
    frames.push(chunk(
        json!({}),
        json!(reply.effective_finish_reason().openai()),
    ));
    if request.include_usage {
        let usage_chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": request.created,
            "model": request.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
            "choices": [],
            "usage": openai_usage(&reply.usage)
        });
        frames.push(format!("data: {usage_chunk}\n\n"));
    }
    frames.push("data: [DONE]\n\n".to_owned());
    frames
}

// --- OpenAI Responses API -------------------------------------------------

fn responses_usage(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens()
    })
}

/// The response's `status` and `incomplete_details` for the reply's finish reason.
fn responses_status(reply: &Reply) -> (&'static str, Value) {
    match reply.effective_finish_reason() {
        FinishReason::Stop | FinishReason::ToolCalls => ("completed", Value::Null),
        FinishReason::Length => ("incomplete", json!({"reason": "max_output_tokens"})),
        FinishReason::ContentFilter => ("incomplete", json!({"reason": "content_filter"})),
    }
}

/// The finished output items: a reasoning item when the reply has thinking (its
/// `encrypted_content` only when the request included it), the message when it has text,
/// then one `function_call` per tool call.
fn responses_items(request: &Completion, reply: &Reply) -> Vec<Value> {
    let (status, _) = responses_status(reply);
    let mut items = Vec::new();
    if let Some((thinking, signature)) = &reply.thinking {
        let mut item = json!({
            "id": format!("rs_fake{:06}", request.id),
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": thinking}]
        });
        if request
            .responses
            .is_some_and(|options| options.encrypted_reasoning)
        {
            item["encrypted_content"] = json!(signature);
        }
        items.push(item);
    }
    if reply.has_text_block() {
        items.push(json!({
            "id": format!("msg_fake{:06}", request.id),
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [{"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}]
        }));
    }
    for (i, call) in reply.tool_calls.iter().enumerate() {
        items.push(json!({
            "id": format!("fc_fake{:06}_{i}", request.id),
            "type": "function_call",
            "status": "completed",
            "call_id": tool_call_id(call, "call", i),
            "name": call.name,
            "arguments": call.arguments.to_string()
        }));
    }
    items
}

/// The Response object with this status, output and usage.
fn responses_object(
    request: &Completion,
    status: &str,
    incomplete_details: Value,
    output: Vec<Value>,
    usage: Option<&Usage>,
) -> Value {
    json!({
        "id": format!("resp_fake{:06}", request.id),
        "object": "response",
        "created_at": request.created,
        "status": status,
        "error": null,
        "incomplete_details": incomplete_details,
        "model": request.model,
        "output": output,
        "parallel_tool_calls": true,
        "store": false,
        "tool_choice": "auto",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "usage": usage.map(responses_usage),
        "metadata": {}
    })
}

fn responses_json(request: &Completion, reply: &Reply) -> Value {
    let (status, incomplete) = responses_status(reply);
    responses_object(
        request,
        status,
        incomplete,
        responses_items(request, reply),
        Some(&reply.usage),
    )
}

/// The Responses event sequence: `response.created`, `response.in_progress`, per output
/// item `output_item.added`, its part and deltas (reasoning summary text, output text,
/// function-call arguments), `output_item.done`; the last frame (the end marker) is
/// `response.completed`, or `response.incomplete` for a length or content-filter stop.
fn responses_frames(request: &Completion, reply: &Reply) -> Vec<String> {
    struct Events {
        frames: Vec<String>,
        sequence: u64,
    }
    impl Events {
        fn push(&mut self, mut data: Value) {
            data["sequence_number"] = json!(self.sequence);
            self.sequence += 1;
            let kind = data["type"].as_str().unwrap_or("unknown").to_owned();
            self.frames.push(format!("event: {kind}\ndata: {data}\n\n"));
        }
    }
    let mut events = Events {
        frames: Vec::new(),
        sequence: 0,
    };
    let opened = responses_object(request, "in_progress", Value::Null, Vec::new(), None);
    events.push(json!({"type": "response.created", "response": opened}));
    events.push(json!({"type": "response.in_progress", "response": opened}));
    let items = responses_items(request, reply);
    for (output_index, item) in items.iter().enumerate() {
        let item_id = item["id"].clone();
        let mut added = item.clone();
        match item["type"].as_str() {
            Some("reasoning") => {
                added["summary"] = json!([]);
                if let Some(fields) = added.as_object_mut() {
                    fields.remove("encrypted_content");
                }
            }
            Some("message") => {
                added["content"] = json!([]);
                added["status"] = json!("in_progress");
            }
            _ => {
                added["arguments"] = json!("");
                added["status"] = json!("in_progress");
            }
        }
        events.push(json!({"type": "response.output_item.added", "output_index": output_index, "item": added}));
        match item["type"].as_str() {
            Some("reasoning") => {
                let text = item["summary"][0]["text"].as_str().unwrap_or_default();
                let at =
                    json!({"item_id": item_id, "output_index": output_index, "summary_index": 0});
                let with = |kind: &str, extra: Value| {
                    let mut data = at.clone();
                    data["type"] = json!(kind);
                    if let (Some(data), Some(extra)) = (data.as_object_mut(), extra.as_object()) {
                        data.extend(extra.clone());
                    }
                    data
                };
                events.push(with(
                    "response.reasoning_summary_part.added",
                    json!({"part": {"type": "summary_text", "text": ""}}),
                ));
                for piece in split_text(text) {
                    events.push(with(
                        "response.reasoning_summary_text.delta",
                        json!({"delta": piece}),
                    ));
                }
                events.push(with(
                    "response.reasoning_summary_text.done",
                    json!({"text": text}),
                ));
                events.push(with(
                    "response.reasoning_summary_part.done",
                    json!({"part": {"type": "summary_text", "text": text}}),
                ));
            }
            Some("message") => {
                let at =
                    json!({"item_id": item_id, "output_index": output_index, "content_index": 0});
                let with = |kind: &str, extra: Value| {
                    let mut data = at.clone();
                    data["type"] = json!(kind);
                    if let (Some(data), Some(extra)) = (data.as_object_mut(), extra.as_object()) {
                        data.extend(extra.clone());
                    }
                    data
                };
                events.push(with(
                    "response.content_part.added",
                    json!({"part": {"type": "output_text", "text": "", "annotations": []}}),
                ));
                for piece in split_text(&reply.text) {
                    events.push(with(
                        "response.output_text.delta",
                        json!({"delta": piece, "logprobs": []}),
                    ));
                }
                events.push(with(
                    "response.output_text.done",
                    json!({"text": reply.text, "logprobs": []}),
                ));
                events.push(with(
                    "response.content_part.done",
                    json!({"part": item["content"][0]}),
                ));
            }
            _ => {
                let arguments = item["arguments"].as_str().unwrap_or_default();
                for piece in split_chars(arguments, 3) {
                    events.push(json!({
                        "type": "response.function_call_arguments.delta",
                        "item_id": item_id, "output_index": output_index, "delta": piece
                    }));
                }
                events.push(json!({
                    "type": "response.function_call_arguments.done",
                    "item_id": item_id, "output_index": output_index,
                    "name": item["name"], "arguments": arguments
                }));
            }
        }
        events.push(json!({"type": "response.output_item.done", "output_index": output_index, "item": item}));
    }
    let (status, incomplete) = responses_status(reply);
    let finished = responses_object(request, status, incomplete, items, Some(&reply.usage));
    events.push(json!({"type": format!("response.{status}"), "response": finished}));
    events.frames
}

// --- Anthropic -------------------------------------------------------------

fn anthropic_id(request: &Completion) -> String {
    format!("msg_fake{:06}", request.id)
}

fn anthropic_usage(usage: &Usage, output_tokens: u64) -> Value {
    let mut value = json!({
        "input_tokens": usage.anthropic_input_tokens(),
        "cache_creation_input_tokens": usage.cache_creation_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": output_tokens,
        "service_tier": "standard"
    });
    if usage.cache_creation_1h_tokens > 0 {
        value["cache_creation"] = json!({
            "ephemeral_5m_input_tokens": usage.cache_creation_tokens - usage.cache_creation_1h_tokens,
            "ephemeral_1h_input_tokens": usage.cache_creation_1h_tokens,
        });
    }
    value
}

fn anthropic_json(request: &Completion, reply: &Reply) -> Value {
    let mut content = Vec::new();
    if let Some((thinking, signature)) = &reply.thinking {
        content.push(json!({"type": "thinking", "thinking": thinking, "signature": signature}));
    }
    if reply.has_text_block() {
        content.push(json!({"type": "text", "text": reply.text}));
    }
    for (i, call) in reply.tool_calls.iter().enumerate() {
        content.push(json!({
            "type": "tool_use",
            "id": tool_call_id(call, "toolu", i),
            "name": call.name,
            "input": call.arguments
        }));
    }
    json!({
        "id": anthropic_id(request),
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": content,
        "stop_reason": reply.effective_finish_reason().anthropic(),
        "stop_sequence": null,
        "usage": anthropic_usage(&reply.usage, reply.usage.completion_tokens)
    })
}

fn anthropic_frames(request: &Completion, reply: &Reply) -> Vec<String> {
    fn event(data: Value) -> String {
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        format!("event: {kind}\ndata: {data}\n\n")
    }
    let mut frames = vec![event(json!({
        "type": "message_start",
        "message": {
            "id": anthropic_id(request),
            "type": "message",
            "role": "assistant",
            "model": request.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            // Like the real API: the final output count comes in message_delta.
            "usage": anthropic_usage(&reply.usage, reply.usage.completion_tokens.min(1))
        }
    }))];
    let mut index = 0usize;
    let mut pinged = false;
    let mut ping = |frames: &mut Vec<String>| {
        if !pinged {
            frames.push(event(json!({"type": "ping"})));
            pinged = true;
        }
    };
    if let Some((thinking, signature)) = &reply.thinking {
        frames.push(event(json!({
            "type": "content_block_start",
            "index": index,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""}
        })));
        ping(&mut frames);
        for piece in split_text(thinking) {
            frames.push(event(json!({
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "thinking_delta", "thinking": piece}
            })));
        }
        frames.push(event(json!({
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "signature_delta", "signature": signature}
        })));
        frames.push(event(json!({"type": "content_block_stop", "index": index})));
        index += 1;
    }
    if reply.has_text_block() {
        frames.push(event(json!({
            "type": "content_block_start",
            "index": index,
            "content_block": {"type": "text", "text": ""}
        })));
        ping(&mut frames);
        for piece in split_text(&reply.text) {
            frames.push(event(json!({
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "text_delta", "text": piece}
            })));
        }
        frames.push(event(json!({"type": "content_block_stop", "index": index})));
        index += 1;
    }
    for (i, call) in reply.tool_calls.iter().enumerate() {
        frames.push(event(json!({
            "type": "content_block_start",
            "index": index,
            "content_block": {
                "type": "tool_use",
                "id": tool_call_id(call, "toolu", i),
                "name": call.name,
                "input": {}
            }
        })));
        ping(&mut frames);
        for piece in split_chars(&call.arguments.to_string(), 3) {
            frames.push(event(json!({
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": piece}
            })));
        }
        frames.push(event(json!({"type": "content_block_stop", "index": index})));
        index += 1;
    }
    frames.push(event(json!({
        "type": "message_delta",
        "delta": {"stop_reason": reply.effective_finish_reason().anthropic(), "stop_sequence": null},
        "usage": {"output_tokens": reply.usage.completion_tokens}
    })));
    frames.push(event(json!({"type": "message_stop"})));
    frames
}

// --- Gemini ----------------------------------------------------------------

fn gemini_usage(usage: &Usage) -> Value {
    let mut metadata = json!({
        "promptTokenCount": usage.prompt_tokens,
        "candidatesTokenCount": usage.completion_tokens,
        "totalTokenCount": usage.total_tokens(),
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.prompt_tokens}]
    });
    // Like the real API (proto3 JSON), zero is omitted.
    if usage.cached_tokens > 0 {
        metadata["cachedContentTokenCount"] = json!(usage.cached_tokens);
    }
    metadata
}

fn gemini_response(
    request: &Completion,
    parts: Vec<Value>,
    finish: Option<&str>,
    usage: Option<&Usage>,
) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if let Some(finish) = finish {
        candidate["finishReason"] = json!(finish);
    }
    let mut response = json!({
        "candidates": [candidate],
        "modelVersion": request.model,
        "responseId": format!("fake-response-{:06}", request.id)
    });
    if let Some(usage) = usage {
        response["usageMetadata"] = gemini_usage(usage);
    }
    response
}

fn gemini_call_parts(reply: &Reply) -> Vec<Value> {
    reply
        .tool_calls
        .iter()
        .map(|call| json!({"functionCall": {"name": call.name, "args": call.arguments}}))
        .collect()
}

fn gemini_json(request: &Completion, reply: &Reply) -> Value {
    let mut parts = Vec::new();
    if reply.has_text_block() {
        parts.push(json!({"text": reply.text}));
    }
    parts.extend(gemini_call_parts(reply));
    gemini_response(
        request,
        parts,
        Some(reply.effective_finish_reason().gemini()),
        Some(&reply.usage),
    )
}

/// The stream chunks: one per text piece, then one with all function calls;
/// the last carries finishReason and usageMetadata.
fn gemini_chunks(request: &Completion, reply: &Reply) -> Vec<Value> {
    let mut groups: Vec<Vec<Value>> = split_text(&reply.text)
        .into_iter()
        .map(|piece| vec![json!({"text": piece})])
        .collect();
    if !reply.tool_calls.is_empty() {
        groups.push(gemini_call_parts(reply));
    }
    if groups.is_empty() {
        groups.push(vec![json!({"text": ""})]);
    }
    let last = groups.len() - 1;
    groups
        .into_iter()
        .enumerate()
        .map(|(i, parts)| {
            if i == last {
                gemini_response(
                    request,
                    parts,
                    Some(reply.effective_finish_reason().gemini()),
                    Some(&reply.usage),
                )
            } else {
                gemini_response(request, parts, None, None)
            }
        })
        .collect()
}

// --- Models ----------------------------------------------------------------

fn model_ids(format: Format, custom: Option<&[String]>) -> Vec<String> {
    match custom {
        Some(ids) => ids.to_vec(),
        None => {
            let defaults = match format {
                Format::OpenAi => DEFAULT_OPENAI_MODELS,
                Format::Anthropic => DEFAULT_ANTHROPIC_MODELS,
                Format::Gemini => DEFAULT_GEMINI_MODELS,
            };
            defaults.iter().map(|id| (*id).to_owned()).collect()
        }
    }
}

fn model_object(format: Format, id: &str) -> Value {
    match format {
        Format::OpenAi => json!({
            "id": id,
            "object": "model",
            "created": 1_715_367_049u64,
            "owned_by": "system"
        }),
        Format::Anthropic => json!({
            "type": "model",
            "id": id,
            "display_name": id,
            "created_at": "2025-02-19T00:00:00Z"
        }),
        Format::Gemini => json!({
            "name": format!("models/{id}"),
            "version": "001",
            "displayName": id,
            "description": format!("Fake {id}"),
            "inputTokenLimit": 1_048_576,
            "outputTokenLimit": 8_192,
            "supportedGenerationMethods": ["generateContent", "countTokens"]
        }),
    }
}

fn models_list(format: Format, custom: Option<&[String]>) -> Value {
    let ids = model_ids(format, custom);
    let data: Vec<Value> = ids.iter().map(|id| model_object(format, id)).collect();
    match format {
        Format::OpenAi => json!({"object": "list", "data": data}),
        Format::Anthropic => json!({
            "data": data,
            "has_more": false,
            "first_id": ids.first(),
            "last_id": ids.last()
        }),
        Format::Gemini => json!({"models": data}),
    }
}
