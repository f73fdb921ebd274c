//! [`ProviderError`], the one error type of the providers module: invalid requests,
//! translations a format cannot express, and upstream failures classified for routing
//! (retry on the next candidate or not, auth failures, `Retry-After`). Every message that
//! quotes the upstream is sanitized so that no provider key can leak through it.

use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::catalog::{ApiFormat, AuthType};
use crate::local_failure::LocalFailure;
use crate::secret::Secret;

/// Longest upstream message quoted in an error.
const MAX_MESSAGE_CHARS: usize = 300;
/// `Retry-After` values beyond this are treated as this (a day is already "not now").
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// Which time limit an attempt ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// TCP/TLS connection not established in time.
    Connect,
    /// Connected, but the response headers did not arrive in time.
    FirstByte,
    /// The whole non-streamed attempt (headers and body) took too long.
    Attempt,
    /// A stream went silent for too long between two reads.
    StreamIdle,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "connect timeout",
            TimeoutPhase::FirstByte => "first-byte timeout",
            TimeoutPhase::Attempt => "attempt deadline",
            TimeoutPhase::StreamIdle => "stream idle timeout",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The client's request is invalid (answer 400 with `param`).
    #[error("{message}")]
    InvalidRequest {
        param: Option<String>,
        message: String,
    },
    /// The request uses something this upstream format cannot express. No call was made;
    /// another candidate of another format may serve it.
    #[error("{message}")]
    Unsupported {
        format: ApiFormat,
        param: Option<String>,
        message: String,
    },
    /// The target needs a key and none was given. No call was made.
    #[error("no provider key available for auth type `{auth_type}`")]
    MissingCredential { auth_type: AuthType },
    /// The target itself is unusable (bad base URL, a key that is not a valid header).
    #[error("invalid upstream configuration: {0}")]
    Configuration(String),
    #[error("could not connect to the upstream: {message}")]
    Connect { message: String },
    /// The gateway's own resources failed the call (out of file descriptors, ports,
    /// memory, or its DNS resolver): says nothing about the provider. `detail` is the
    /// cause chain, for logs and the usage row.
    #[error("{failure}; the upstream was not reached ({detail})")]
    Local {
        failure: LocalFailure,
        detail: String,
    },
    #[error("the upstream did not answer in time ({phase})")]
    Timeout { phase: TimeoutPhase },
    /// A non-2xx answer. `message` is the provider's own error text, sanitized.
    #[error("upstream returned HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        /// The provider's error type/code (`rate_limit_error`, `RESOURCE_EXHAUSTED`...).
        error_type: Option<String>,
        retry_after: Option<Duration>,
    },
    /// A 2xx answer that is not what the format promises (malformed JSON, no choices...).
    #[error("invalid upstream response: {message}")]
    InvalidResponse { message: String },
    /// The stream ended (connection lost, or closed) before its end marker.
    #[error("upstream stream broke off: {message}")]
    StreamInterrupted { message: String },
    /// The provider sent an error event inside a 200 stream (Anthropic `error` event,
    /// an OpenAI-compatible `{"error": ...}` chunk).
    #[error("upstream reported an error mid-stream: {message}")]
    StreamError {
        message: String,
        error_type: Option<String>,
        retryable: bool,
    },
}

impl ProviderError {
    /// Whether to move on to the next candidate (routing.md "Attempts"): connection
    /// errors, timeouts, 408, 409, 429, 5xx (529 included), 401/403 (the next candidate
    /// may hold a working key), broken or garbled answers, and requests this format cannot
    /// express. Never on the client's own invalid request nor on an upstream 400/404/422,
    /// nor when the gateway itself is out of descriptors or memory (every other call would
    /// fail the same way; [`LocalFailure::affects_every_call`]).
    pub fn retryable(&self) -> bool {
        match self {
            ProviderError::InvalidRequest { .. } => false,
            ProviderError::Local { failure, .. } => !failure.affects_every_call(),
            ProviderError::Unsupported { .. }
            | ProviderError::MissingCredential { .. }
            | ProviderError::Configuration(_)
            | ProviderError::Connect { .. }
            | ProviderError::Timeout { .. }
            | ProviderError::InvalidResponse { .. }
            | ProviderError::StreamInterrupted { .. } => true,
            ProviderError::Status { status, .. } => status_is_retryable(*status),
            ProviderError::StreamError { retryable, .. } => *retryable,
        }
    }

    /// 401/403: the key was refused. For a BYOK key, mark it invalid.
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            ProviderError::Status {
                status: 401 | 403,
                ..
            }
        )
    }

    /// Whether this failure says something about the provider's health (for the circuit
    /// breaker): connection errors, timeouts, 408/429/5xx, broken answers. Not our own
    /// translation or configuration problems, not a refused key, not a rejected request,
    /// never the gateway's own resource failures ([`ProviderError::Local`]).
    pub fn is_provider_failure(&self) -> bool {
        match self {
            ProviderError::Connect { .. }
            | ProviderError::Timeout { .. }
            | ProviderError::InvalidResponse { .. }
            | ProviderError::StreamInterrupted { .. }
            | ProviderError::StreamError { .. } => true,
            ProviderError::Status { status, .. } => matches!(status, 408 | 429) || *status >= 500,
            ProviderError::Local { .. } => false,
            _ => false,
        }
    }

    /// How long the upstream asked us to wait (`Retry-After`, `retry-after-ms`, Anthropic's
    /// rate-limit reset headers, Gemini's `RetryInfo`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The gateway's own failure behind this error, if it is one.
    pub fn local_failure(&self) -> Option<LocalFailure> {
        match self {
            ProviderError::Local { failure, .. } => Some(*failure),
            _ => None,
        }
    }

    /// The HTTP status the upstream answered with, for non-2xx answers.
    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            ProviderError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The request parameter at fault, for client errors.
    pub fn param(&self) -> Option<&str> {
        match self {
            ProviderError::InvalidRequest { param, .. }
            | ProviderError::Unsupported { param, .. } => param.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn unsupported(
        format: ApiFormat,
        param: impl Into<String>,
        message: impl Into<String>,
    ) -> ProviderError {
        ProviderError::Unsupported {
            format,
            param: Some(param.into()),
            message: message.into(),
        }
    }

    pub(crate) fn invalid_response(message: impl Into<String>) -> ProviderError {
        ProviderError::InvalidResponse {
            message: message.into(),
        }
    }

    /// A transport error, without its URL (which never holds a key, but has no business
    /// in a client-facing message either). The gateway's own resource failures found in
    /// its cause chain come first ([`LocalFailure::find`]).
    pub(crate) fn from_transport(error: &reqwest::Error, phase: TimeoutPhase) -> ProviderError {
        if let Some(failure) = LocalFailure::find(error) {
            return ProviderError::Local {
                failure,
                detail: describe_transport(error),
            };
        }
        if error.is_timeout() {
            let phase = if error.is_connect() {
                TimeoutPhase::Connect
            } else {
                phase
            };
            return ProviderError::Timeout { phase };
        }
        let message = describe_transport(error);
        if error.is_connect() {
            ProviderError::Connect { message }
        } else if error.is_builder() {
            ProviderError::Configuration(message)
        } else if error.is_body() || error.is_decode() {
            ProviderError::StreamInterrupted { message }
        } else {
            ProviderError::Connect { message }
        }
    }
}

/// Statuses worth another candidate: 401/403 (the next candidate may hold a working key),
/// 408, 409, 429, every 5xx (529 included), and 3xx (redirects are not followed, so a
/// redirect means a misconfigured base URL).
pub fn status_is_retryable(status: u16) -> bool {
    matches!(status, 300..=399 | 401 | 403 | 408 | 409 | 429) || status >= 500
}

/// The error's cause chain, without the URL reqwest puts in front.
fn describe_transport(error: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    if parts.is_empty() {
        parts.push(if error.is_connect() {
            "connection failed".to_owned()
        } else {
            "request failed".to_owned()
        });
    }
    truncate(&parts.join(": "), MAX_MESSAGE_CHARS)
}

/// Builds the error for a non-2xx upstream answer.
pub(crate) fn status_error(
    format: ApiFormat,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    key: Option<&Secret>,
) -> ProviderError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let (message, error_type) = match &json {
        Some(value) => error_text(format, value),
        None => (None, None),
    };
    // Gemini answers a wrong key with 400 INVALID_ARGUMENT / API_KEY_INVALID; it is an
    // auth failure like any 401 (next candidate; a BYOK key is marked invalid).
    let status = if format == ApiFormat::Gemini
        && status == 400
        && json.as_ref().is_some_and(gemini_key_invalid)
    {
        401
    } else {
        status
    };
    // Bedrock names the error in a header (`x-amzn-ErrorType`) and says `Message` or
    // `message` in the body.
    let (message, error_type) = if format == ApiFormat::Bedrock {
        (
            message.or_else(|| {
                json.as_ref()
                    .and_then(|v| v.get("Message"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }),
            bedrock_error_type(headers, json.as_ref()).or(error_type),
        )
    } else {
        (message, error_type)
    };
    let message = message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            "no error message".to_owned()
        } else {
            text.to_owned()
        }
    });
    ProviderError::Status {
        status,
        message: sanitize(&message, key),
        error_type: error_type.map(|kind| sanitize(&kind, key)),
        retry_after: retry_after(headers, json.as_ref(), SystemTime::now()),
    }
}

/// The error type of a Bedrock error answer: the `x-amzn-ErrorType` header
/// (`ThrottlingException:http://internal.amazon.com/...`), else the body's `__type`
/// (`com.amazon...#ValidationException`).
pub(crate) fn bedrock_error_type(
    headers: &reqwest::header::HeaderMap,
    body: Option<&Value>,
) -> Option<String> {
    let from_header = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(':').next().unwrap_or(v).trim().to_owned());
    let from_body = || {
        body.and_then(|b| b.get("__type"))
            .and_then(Value::as_str)
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_owned())
    };
    from_header.filter(|t| !t.is_empty()).or_else(from_body)
}

/// The message and type/code of a provider's error body:
/// OpenAI `{"error": {"message", "type", "code"}}`, Anthropic
/// `{"type": "error", "error": {"type", "message"}}`, Gemini
/// `{"error": {"code", "message", "status"}}`, and the looser shapes of compatible servers
/// (`{"error": "text"}`, `{"message": ...}`, `{"detail": ...}`).
pub(crate) fn error_text(format: ApiFormat, body: &Value) -> (Option<String>, Option<String>) {
    let error = body.get("error");
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .or_else(|| error.and_then(Value::as_str))
        .or_else(|| body.get("message").and_then(Value::as_str))
        .or_else(|| body.get("detail").and_then(Value::as_str))
        .map(str::to_owned);
    let type_key = match format {
        ApiFormat::Gemini => "status",
        ApiFormat::OpenAi | ApiFormat::Anthropic | ApiFormat::Bedrock => "type",
    };
    let error_type = error
        .and_then(|e| e.get(type_key).or_else(|| e.get("code")))
        .and_then(|kind| match kind {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        });
    (message, error_type)
}

fn gemini_key_invalid(body: &Value) -> bool {
    let error = body.get("error");
    let reason_invalid = error
        .and_then(|e| e.get("details"))
        .and_then(Value::as_array)
        .is_some_and(|details| {
            details
                .iter()
                .any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"))
        });
    let message_invalid = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .is_some_and(|m| m.contains("API key not valid"));
    reason_invalid || message_invalid
}

/// Removes the key (and anything shaped like a key) from upstream text, flattens control
/// characters and caps the length.
pub(crate) fn sanitize(text: &str, key: Option<&Secret>) -> String {
    let mut text = text.to_owned();
    if let Some(key) = key {
        let key = key.expose().trim();
        if key.len() >= 4 {
            text = text.replace(key, "[redacted]");
        }
    }
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    truncate(&redact_key_shapes(&cleaned), MAX_MESSAGE_CHARS)
}

/// Prefixes of provider keys in the wild (OpenAI and Anthropic `sk-`, Google `AIza`,
/// Groq `gsk_`, xAI `xai-`, Fireworks `fw_`, Switchboard's own `sk-sb-`, Stripe-like `sk_`).
const KEY_PREFIXES: &[&str] = &["sk-", "sk_", "AIza", "gsk_", "xai-", "fw_", "pk-", "rk-"];

/// Replaces words that look like keys: a known prefix followed by at least 12 key
/// characters, or any run of 32+ letters and digits mixing both (keys, tokens). Ids in
/// error texts (request ids) may go too; a message loses little by that.
fn redact_key_shapes(text: &str) -> String {
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if looks_like_key(word) {
            out.push_str("[redacted]");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_key_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn looks_like_key(word: &str) -> bool {
    let word = word.trim_end_matches('.');
    let prefixed = KEY_PREFIXES
        .iter()
        .any(|prefix| word.starts_with(prefix) && word.len() >= prefix.len() + 12);
    let long_mixed = word.len() >= 32
        && word.chars().any(|c| c.is_ascii_digit())
        && word.chars().any(|c| c.is_ascii_alphabetic());
    prefixed || long_mixed
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max_chars).collect();
    cut.push('…');
    cut
}

/// The wait an upstream asks for, in this order: `retry-after-ms` (OpenAI), `Retry-After`
/// (seconds or an HTTP date), Gemini's `RetryInfo.retryDelay` in the body, then the
/// earliest of Anthropic's `anthropic-ratelimit-*-reset` timestamps (RFC 3339).
pub(crate) fn retry_after(
    headers: &HeaderMap,
    body: Option<&Value>,
    now: SystemTime,
) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let found = header("retry-after-ms")
        .and_then(|ms| ms.trim().parse::<f64>().ok())
        .and_then(|ms| duration_from_secs(ms / 1000.0))
        .or_else(|| header("retry-after").and_then(|value| parse_retry_after(value, now)))
        .or_else(|| body.and_then(gemini_retry_delay))
        .or_else(|| {
            [
                "anthropic-ratelimit-requests-reset",
                "anthropic-ratelimit-tokens-reset",
                "anthropic-ratelimit-input-tokens-reset",
                "anthropic-ratelimit-output-tokens-reset",
            ]
            .iter()
            .filter_map(|name| header(name))
            .filter_map(|value| chrono::DateTime::parse_from_rfc3339(value.trim()).ok())
            .map(|reset| {
                let reset: SystemTime = reset.into();
                reset.duration_since(now).unwrap_or(Duration::ZERO)
            })
            .min()
        });
    found.map(|wait| wait.min(MAX_RETRY_AFTER))
}

/// `Retry-After`: delay-seconds (decimals tolerated) or an HTTP date.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return duration_from_secs(seconds);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

fn duration_from_secs(seconds: f64) -> Option<Duration> {
    if seconds.is_finite() && seconds >= 0.0 {
        Some(Duration::from_secs_f64(
            seconds.min(MAX_RETRY_AFTER.as_secs_f64()),
        ))
    } else {
        None
    }
}

/// Gemini puts the wait in `error.details[]` as `{"@type": ".../google.rpc.RetryInfo",
/// "retryDelay": "37s"}`.
fn gemini_retry_delay(body: &Value) -> Option<Duration> {
    body.get("error")?
        .get("details")?
        .as_array()?
        .iter()
        .filter(|detail| {
            detail
                .get("@type")
                .and_then(Value::as_str)
                .is_some_and(|kind| kind.ends_with("RetryInfo"))
        })
        .find_map(|detail| {
            let delay = detail.get("retryDelay")?.as_str()?;
            duration_from_secs(delay.trim().strip_suffix('s')?.parse().ok()?)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_failure::testing::reqwest_error_with_errno;
    use reqwest::header::HeaderValue;
    use serde_json::json;

    #[tokio::test]
    async fn the_gateways_own_resource_errors_are_local_not_the_providers() {
        for (errno, failure) in [
            (libc::EMFILE, LocalFailure::FileDescriptors),
            (libc::ENFILE, LocalFailure::FileDescriptors),
            (libc::EADDRNOTAVAIL, LocalFailure::EphemeralPorts),
            (libc::ENOBUFS, LocalFailure::Memory),
        ] {
            let transport = reqwest_error_with_errno(errno).await;
            assert!(transport.is_connect(), "{transport:?}");
            let error = ProviderError::from_transport(&transport, TimeoutPhase::Attempt);
            assert_eq!(
                error.local_failure(),
                Some(failure),
                "errno {errno}: {error}"
            );
            assert!(!error.is_provider_failure(), "{error}");
            assert!(!error.is_auth_failure());
            assert_eq!(error.upstream_status(), None);
            // Out of descriptors or memory: the next candidate would fail alike.
            assert_eq!(error.retryable(), !failure.affects_every_call(), "{error}");
            assert!(error.to_string().starts_with(failure.describe()), "{error}");
        }
        let emfile = ProviderError::from_transport(
            &reqwest_error_with_errno(libc::EMFILE).await,
            TimeoutPhase::Attempt,
        );
        assert!(
            emfile.to_string().contains("Too many open files"),
            "{emfile}"
        );
        assert!(!emfile.retryable());
    }

    #[tokio::test]
    async fn a_refused_connection_is_the_providers_failure() {
        // Real: a port nobody listens on (ECONNREFUSED from the kernel).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let transport = reqwest::Client::new()
            .get(format!("http://{address}/v1/models"))
            .send()
            .await
            .unwrap_err();
        let error = ProviderError::from_transport(&transport, TimeoutPhase::Attempt);
        assert!(matches!(error, ProviderError::Connect { .. }), "{error:?}");
        assert_eq!(error.local_failure(), None);
        assert!(error.is_provider_failure());
        assert!(error.retryable());
        // The same path with the refusal injected: still the provider's.
        let injected = ProviderError::from_transport(
            &reqwest_error_with_errno(libc::ECONNREFUSED).await,
            TimeoutPhase::Attempt,
        );
        assert!(
            matches!(injected, ProviderError::Connect { .. }),
            "{injected:?}"
        );
    }

    #[test]
    fn classification_follows_routing_rules() {
        let status = |status: u16| ProviderError::Status {
            status,
            message: String::new(),
            error_type: None,
            retry_after: None,
        };
        for code in [401, 403, 408, 409, 429, 500, 502, 503, 504, 529] {
            assert!(status(code).retryable(), "{code}");
        }
        for code in [400, 404, 413, 422] {
            assert!(!status(code).retryable(), "{code}");
        }
        assert!(status(401).is_auth_failure());
        assert!(status(403).is_auth_failure());
        assert!(!status(429).is_auth_failure());
        assert!(status(429).is_provider_failure());
        assert!(!status(401).is_provider_failure());
        assert!(!status(400).is_provider_failure());
        assert_eq!(status(503).upstream_status(), Some(503));
        assert!(
            ProviderError::Timeout {
                phase: TimeoutPhase::FirstByte
            }
            .retryable()
        );
        assert!(
            !ProviderError::InvalidRequest {
                param: None,
                message: String::new()
            }
            .retryable()
        );
    }

    #[test]
    fn retry_after_seconds_date_ms_and_gemini() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        // 1445412480 is Wed, 21 Oct 2015 07:28:00 GMT.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);

        let mut headers = HeaderMap::new();
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        headers.insert("retry-after", HeaderValue::from_static("9"));
        assert_eq!(
            retry_after(&headers, None, now),
            Some(Duration::from_millis(250))
        );

        let body = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure"},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}
        ]}});
        assert_eq!(
            retry_after(&HeaderMap::new(), Some(&body), now),
            Some(Duration::from_secs(37))
        );

        let mut anthropic = HeaderMap::new();
        anthropic.insert(
            "anthropic-ratelimit-requests-reset",
            HeaderValue::from_static("2015-10-21T07:28:12Z"),
        );
        assert_eq!(
            retry_after(&anthropic, None, now),
            Some(Duration::from_secs(12))
        );
        let mut huge = HeaderMap::new();
        huge.insert("retry-after", HeaderValue::from_static("99999999999"));
        assert_eq!(retry_after(&huge, None, now), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn sanitize_removes_the_key_and_key_shapes() {
        let key = Secret::new("my-very-private-provider-key-123");
        let text = "Incorrect API key provided: my-very-private-provider-key-123.\nAlso sk-proj-abcdefghijklmnop and AIzaSyA1234567890abcdef.";
        let clean = sanitize(text, Some(&key));
        assert!(!clean.contains("my-very-private"), "{clean}");
        assert!(!clean.contains("sk-proj-abcdef"), "{clean}");
        assert!(!clean.contains("AIzaSy"), "{clean}");
        assert!(!clean.contains('\n'));
        assert!(
            clean.starts_with("Incorrect API key provided: [redacted]"),
            "{clean}"
        );
        // Ordinary words survive.
        assert_eq!(
            sanitize("Rate limit reached for gpt-4o.", None),
            "Rate limit reached for gpt-4o."
        );
        let long = "x".repeat(1000);
        assert!(sanitize(&long, None).chars().count() <= MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn error_text_reads_each_format() {
        let openai = json!({"error": {"message": "bad", "type": "invalid_request_error", "param": null, "code": null}});
        assert_eq!(
            error_text(ApiFormat::OpenAi, &openai),
            (Some("bad".into()), Some("invalid_request_error".into()))
        );
        let anthropic = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        assert_eq!(
            error_text(ApiFormat::Anthropic, &anthropic),
            (Some("Overloaded".into()), Some("overloaded_error".into()))
        );
        let gemini =
            json!({"error": {"code": 400, "message": "nope", "status": "INVALID_ARGUMENT"}});
        assert_eq!(
            error_text(ApiFormat::Gemini, &gemini),
            (Some("nope".into()), Some("INVALID_ARGUMENT".into()))
        );
        let loose = json!({"error": "model not loaded"});
        assert_eq!(
            error_text(ApiFormat::OpenAi, &loose).0,
            Some("model not loaded".into())
        );
    }
}
