//! [`ProviderClient`]: the one HTTP client for every upstream call, with per-attempt
//! timeouts, authentication per `auth_type`, and dispatch to the format adapters.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

use super::aws_credentials::AwsCredentialSource;
use super::call::{ResponseContext, UpstreamCall, UpstreamTarget, unix_now};
use super::embeddings::{self, Embedded, EmbeddingList, EmbeddingRequest, EmbeddingUsage};
use super::error::{self, ProviderError, TimeoutPhase};
use super::eventstream::EventStreamDecoder;
use super::request::ChatRequest;
use super::response::{ChatCompletion, Usage};
use super::sse::SseParser;
use super::stream::{ChunkStream, EventDecoder, Framing};
use super::{anthropic, bedrock, gemini, openai, openai_responses, sigv4};
use crate::catalog::{ApiFormat, AuthType};

/// Largest non-streamed answer read (a completion is text; this is far above any real one).
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Largest error body read: enough for any provider's error JSON.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Time limits of one attempt. The overall deadline across attempts is the caller's
/// (wrap the call in `tokio::time::timeout`; dropping the future cancels the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP + TLS connection.
    pub connect: Duration,
    /// Streams: from sending the request to the response headers.
    pub first_byte: Duration,
    /// Non-streamed calls: the whole attempt, headers and body. (A non-streamed answer's
    /// first byte comes when the whole answer is ready, so a separate first-byte limit
    /// would only be this one again.)
    pub attempt: Duration,
    /// Streams: the longest silence between two reads of the body.
    pub stream_idle: Duration,
}

impl Default for Timeouts {
    /// Sized for API Gateway's 29 s limit on non-streamed answers (routing.md: 25 s
    /// overall deadline).
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(20),
            attempt: Duration::from_secs(25),
            stream_idle: Duration::from_secs(30),
        }
    }
}

/// A non-streamed answer.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The answer in OpenAI's shape; its `usage` is `usage.to_openai()` (for an
    /// OpenAI-compatible upstream: the upstream's own usage object).
    pub response: ChatCompletion,
    /// What to bill, in disjoint buckets.
    pub usage: Usage,
    /// `true` when the upstream sent no usage and it was estimated (characters / 4).
    pub usage_estimated: bool,
}

/// The shared client. Build it once per process (it holds the connection pool) and clone
/// it freely.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    http: reqwest::Client,
    timeouts: Timeouts,
    /// What `aws_sigv4` providers (Bedrock) are signed with.
    aws: AwsCredentialSource,
}

impl ProviderClient {
    pub fn new(timeouts: Timeouts) -> Result<ProviderClient, ProviderError> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            // Redirects are refused: a redirect would carry custom key headers
            // (x-api-key, x-goog-api-key) to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| {
                ProviderError::Configuration(format!("cannot build the HTTP client: {e}"))
            })?;
        Ok(ProviderClient {
            http,
            timeouts,
            aws: AwsCredentialSource::default_chain(),
        })
    }

    /// Shares an existing client (the process's one upstream client); it must not follow
    /// redirects.
    pub fn from_http(http: reqwest::Client, timeouts: Timeouts) -> ProviderClient {
        ProviderClient {
            http,
            timeouts,
            aws: AwsCredentialSource::default_chain(),
        }
    }

    /// Signs `aws_sigv4` calls with these credentials instead of the default chain's.
    pub fn with_aws_credentials(mut self, source: AwsCredentialSource) -> ProviderClient {
        self.aws = source;
        self
    }

    /// The AWS credentials `aws_sigv4` calls are signed with (health probes share them).
    pub fn aws_credentials(&self) -> &AwsCredentialSource {
        &self.aws
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The underlying client, for other upstream calls (health probes, key validation)
    /// that should share its connection pool.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// One non-streamed attempt. The request is validated and translated for the
    /// target's format; `stream` in the request is ignored.
    pub async fn complete(
        &self,
        target: &UpstreamTarget,
        request: &ChatRequest,
    ) -> Result<Completion, ProviderError> {
        request.validate()?;
        let native = openai_responses::serves_natively(target, request);
        let call = translate(target, request, false)?;
        let context = response_context(target, request);
        let attempt = async {
            let builder = self.prepare(target, &call, false).await?;
            let outcome = self.read_answer(target, builder).await;
            match outcome {
                Err(error) if native && retry_without_encrypted_reasoning(&error, request) => {
                    let call = openai_responses::build_request(target, request, false, false)?;
                    self.read_answer(target, self.prepare(target, &call, false).await?)
                        .await
                }
                outcome => outcome,
            }
        };
        let body = tokio::time::timeout(self.timeouts.attempt, attempt)
            .await
            .map_err(|_| ProviderError::Timeout {
                phase: TimeoutPhase::Attempt,
            })??;
        let (mut response, usage) = match target.api_format {
            ApiFormat::OpenAi if native => openai_responses::parse_completion(&body, &context)?,
            ApiFormat::OpenAi => openai::parse_completion(&body, &context)?,
            ApiFormat::Anthropic => anthropic::parse_completion(&body, &context)?,
            ApiFormat::Gemini => gemini::parse_completion(&body, &context)?,
            ApiFormat::Bedrock => bedrock::parse_completion(&body, &context)?,
        };
        let (usage, usage_estimated) = match usage {
            Some(usage) => (usage, false),
            None => (estimate_usage(&response, context.prompt_estimate), true),
        };
        if response.usage.is_none() || target.api_format != ApiFormat::OpenAi {
            response.usage = Some(usage.to_openai());
        }
        Ok(Completion {
            response,
            usage,
            usage_estimated,
        })
    }

    /// One embeddings attempt (Gemini: one call per 100 inputs, all within the attempt's
    /// time limit). The usage is the provider's, or the counted input where it reports
    /// none.
    pub async fn embed(
        &self,
        target: &UpstreamTarget,
        request: &EmbeddingRequest,
    ) -> Result<Embedded, ProviderError> {
        request.validate()?;
        let calls = embeddings::build_calls(target, request)?;
        let context = ResponseContext {
            model: target.model_id.clone(),
            created: unix_now(),
            prompt_estimate: 0,
            key: target.api_key.clone(),
        };
        let attempt = async {
            let mut bodies = Vec::with_capacity(calls.len());
            for call in &calls {
                let response = self
                    .prepare(target, call, false)
                    .await?
                    .send()
                    .await
                    .map_err(|e| ProviderError::from_transport(&e, TimeoutPhase::Attempt))?;
                if !response.status().is_success() {
                    return Err(read_error(target, response, self.aws.default_region()).await);
                }
                bodies.push(read_limited(response, MAX_BODY_BYTES).await?);
            }
            Ok(bodies)
        };
        let bodies = tokio::time::timeout(self.timeouts.attempt, attempt)
            .await
            .map_err(|_| ProviderError::Timeout {
                phase: TimeoutPhase::Attempt,
            })??;
        let (data, reported) =
            embeddings::parse_answers(target.api_format, &bodies, request, &context)?;
        let (input_tokens, usage_estimated) = match reported {
            Some(tokens) => (tokens, false),
            None => (
                u64::from(request.estimated_input_tokens(&target.model_id)),
                true,
            ),
        };
        Ok(Embedded {
            response: EmbeddingList {
                object: "list".into(),
                data,
                model: target.model_id.clone(),
                usage: EmbeddingUsage {
                    prompt_tokens: input_tokens,
                    total_tokens: input_tokens,
                },
            },
            usage: Usage {
                uncached_input_tokens: input_tokens,
                ..Usage::default()
            },
            usage_estimated,
        })
    }

    /// One streamed attempt: returns once the upstream answered 2xx with its headers
    /// (within the first-byte timeout); errors before that are returned here, errors
    /// after it end the stream (see [`super::StreamEnd`]).
    pub async fn stream(
        &self,
        target: &UpstreamTarget,
        request: &ChatRequest,
    ) -> Result<ChunkStream, ProviderError> {
        request.validate()?;
        let native = openai_responses::serves_natively(target, request);
        let call = translate(target, request, true)?;
        let context = response_context(target, request);
        let response = match self.open_stream(target, &call).await {
            Err(error) if native && retry_without_encrypted_reasoning(&error, request) => {
                let call = openai_responses::build_request(target, request, true, false)?;
                self.open_stream(target, &call).await?
            }
            outcome => outcome?,
        };
        let prompt_estimate = context.prompt_estimate;
        let decoder: Box<dyn EventDecoder> = match target.api_format {
            ApiFormat::OpenAi if native => Box::new(openai_responses::StreamDecoder::new(context)),
            ApiFormat::OpenAi => Box::new(openai::StreamDecoder::new(context)),
            ApiFormat::Anthropic => Box::new(anthropic::StreamDecoder::new(context)),
            ApiFormat::Gemini => Box::new(gemini::StreamDecoder::new(context)),
            ApiFormat::Bedrock => Box::new(bedrock::StreamDecoder::new(context)),
        };
        let framing = match target.api_format {
            ApiFormat::Bedrock => Framing::EventStream(EventStreamDecoder::new()),
            _ => Framing::Sse(SseParser::new()),
        };
        Ok(ChunkStream::new(
            Box::pin(response.bytes_stream()),
            framing,
            decoder,
            prompt_estimate,
            self.timeouts.stream_idle,
        ))
    }

    /// Sends a non-streamed call and reads its whole answer (or its classified error).
    async fn read_answer(
        &self,
        target: &UpstreamTarget,
        builder: reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, ProviderError> {
        let response = builder
            .send()
            .await
            .map_err(|e| ProviderError::from_transport(&e, TimeoutPhase::Attempt))?;
        if !response.status().is_success() {
            return Err(read_error(target, response, self.aws.default_region()).await);
        }
        read_limited(response, MAX_BODY_BYTES).await
    }

    /// Sends a streamed call and waits for its headers (within the first-byte timeout); a
    /// non-2xx answer is read as the classified error.
    async fn open_stream(
        &self,
        target: &UpstreamTarget,
        call: &UpstreamCall,
    ) -> Result<reqwest::Response, ProviderError> {
        let builder = self.prepare(target, call, true).await?;
        let response = tokio::time::timeout(self.timeouts.first_byte, builder.send())
            .await
            .map_err(|_| ProviderError::Timeout {
                phase: TimeoutPhase::FirstByte,
            })?
            .map_err(|e| ProviderError::from_transport(&e, TimeoutPhase::FirstByte))?;
        if !response.status().is_success() {
            let read = tokio::time::timeout(
                self.timeouts.first_byte,
                read_error(target, response, self.aws.default_region()),
            );
            return Err(read.await.unwrap_or(ProviderError::Timeout {
                phase: TimeoutPhase::FirstByte,
            }));
        }
        Ok(response)
    }

    async fn prepare(
        &self,
        target: &UpstreamTarget,
        call: &UpstreamCall,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let url = reqwest::Url::parse(&call.url).map_err(|_| {
            ProviderError::Configuration("the provider's base URL is not a valid URL".to_owned())
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ProviderError::Configuration(
                "the provider's base URL must be http or https".to_owned(),
            ));
        }
        let mut headers = request_headers(target, stream)?;
        if target.auth_type == AuthType::AwsSigv4 {
            // The signature covers the exact body bytes, so they are serialized here.
            let body = serde_json::to_vec(&call.body).map_err(|e| {
                ProviderError::Configuration(format!("cannot serialize the request: {e}"))
            })?;
            self.sign(target, &url, &body, &mut headers).await?;
            return Ok(self.http.post(url).headers(headers).body(body));
        }
        Ok(self.http.post(url).headers(headers).json(&call.body))
    }

    /// Adds SigV4's `x-amz-date`, `x-amz-security-token` and `Authorization` (marked
    /// sensitive) for a POST of `body` to `url`, with the region the endpoint names.
    async fn sign(
        &self,
        target: &UpstreamTarget,
        url: &reqwest::Url,
        body: &[u8],
        headers: &mut HeaderMap,
    ) -> Result<(), ProviderError> {
        let credentials = self
            .aws
            .credentials()
            .await
            .map_err(|error| ProviderError::Configuration(error.to_string()))?;
        let region = bedrock::signing_region(&target.base_url, self.aws.default_region());
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => {
                return Err(ProviderError::Configuration(
                    "the provider's base URL has no host".to_owned(),
                ));
            }
        };
        let signed_headers = [
            ("content-type", "application/json"),
            ("host", host.as_str()),
        ];
        let request = sigv4::SignableRequest {
            method: "POST",
            path: url.path(),
            headers: &signed_headers,
            body,
        };
        let signature = sigv4::sign(
            &request,
            &credentials,
            &region,
            bedrock::SIGNING_SERVICE,
            &sigv4::amz_date(chrono::Utc::now()),
        );
        let unusable = || {
            ProviderError::Configuration(
                "the AWS credentials contain characters not allowed in an HTTP header".to_owned(),
            )
        };
        let sensitive = |value: &str| {
            let mut value = HeaderValue::from_str(value).map_err(|_| unusable())?;
            value.set_sensitive(true);
            Ok::<_, ProviderError>(value)
        };
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            HeaderName::from_static("x-amz-date"),
            HeaderValue::from_str(&signature.amz_date).map_err(|_| unusable())?,
        );
        if let Some(token) = &credentials.session_token {
            headers.insert(
                HeaderName::from_static("x-amz-security-token"),
                sensitive(token.expose().trim())?,
            );
        }
        headers.insert(AUTHORIZATION, sensitive(&signature.authorization)?);
        Ok(())
    }
}

fn translate(
    target: &UpstreamTarget,
    request: &ChatRequest,
    stream: bool,
) -> Result<UpstreamCall, ProviderError> {
    request.refuse_unbounded_inputs(target)?;
    match target.api_format {
        ApiFormat::OpenAi if openai_responses::serves_natively(target, request) => {
            openai_responses::build_request(target, request, stream, true)
        }
        ApiFormat::OpenAi => openai::build_request(target, request, stream),
        ApiFormat::Anthropic => anthropic::build_request(target, request, stream),
        ApiFormat::Gemini => gemini::build_request(target, request, stream),
        ApiFormat::Bedrock => bedrock::build_request(target, request, stream),
    }
}

/// A native Responses call whose model refused the encrypted reasoning Switchboard added
/// (models that do not reason): made once more without it. When the client asked for it
/// itself, the refusal is the answer.
fn retry_without_encrypted_reasoning(error: &ProviderError, request: &ChatRequest) -> bool {
    openai_responses::refuses_encrypted_reasoning(error)
        && !openai_responses::client_asked_encrypted_reasoning(request)
}

fn response_context(target: &UpstreamTarget, request: &ChatRequest) -> ResponseContext {
    ResponseContext {
        model: target.model_id.clone(),
        created: unix_now(),
        prompt_estimate: request.estimated_prompt_tokens(),
        key: target.api_key.clone(),
    }
}

/// Auth per `auth_type`, always in a header (never the URL), marked sensitive so that no
/// `Debug` of the request shows it; plus the format's own headers.
fn request_headers(target: &UpstreamTarget, stream: bool) -> Result<HeaderMap, ProviderError> {
    let mut headers = HeaderMap::new();
    let accept = match (stream, target.api_format) {
        (true, ApiFormat::Bedrock) => "application/vnd.amazon.eventstream",
        (true, _) => "text/event-stream",
        (false, _) => "application/json",
    };
    headers.insert(ACCEPT, HeaderValue::from_static(accept));
    if let Some(value) = target
        .traceparent
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert(HeaderName::from_static("traceparent"), value);
    }
    if target.api_format == ApiFormat::Anthropic {
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(anthropic::API_VERSION),
        );
    }
    let (name, prefix) = match target.auth_type {
        // aws_sigv4: signed once the body is known (`ProviderClient::sign`).
        AuthType::None | AuthType::AwsSigv4 => return Ok(headers),
        AuthType::Bearer => (AUTHORIZATION, "Bearer "),
        AuthType::XApiKey => (HeaderName::from_static("x-api-key"), ""),
        AuthType::XGoogApiKey => (HeaderName::from_static("x-goog-api-key"), ""),
    };
    let key = target
        .api_key
        .as_ref()
        .filter(|key| !key.expose().trim().is_empty())
        .ok_or(ProviderError::MissingCredential {
            auth_type: target.auth_type,
        })?;
    let mut value =
        HeaderValue::from_str(&format!("{prefix}{}", key.expose().trim())).map_err(|_| {
            ProviderError::Configuration(
                "the provider key contains characters not allowed in an HTTP header".to_owned(),
            )
        })?;
    value.set_sensitive(true);
    headers.insert(name, value);
    Ok(headers)
}

async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ProviderError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ProviderError::from_transport(&e, TimeoutPhase::Attempt))?
    {
        if body.len() + chunk.len() > limit {
            return Err(ProviderError::invalid_response(format!(
                "the answer exceeds {} MiB",
                limit / (1024 * 1024)
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The classified error of a non-2xx answer; the body is read up to 64 KiB (a failure to
/// read it leaves the status alone to speak).
async fn read_error(
    target: &UpstreamTarget,
    response: reqwest::Response,
    default_region: &str,
) -> ProviderError {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = MAX_ERROR_BODY_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY_BYTES {
            break;
        }
    }
    let error = error::status_error(
        target.api_format,
        status,
        &headers,
        &body,
        target.api_key.as_ref(),
    );
    match target.api_format {
        ApiFormat::Bedrock => bedrock::explain_error(
            error,
            &target.model_id,
            &bedrock::signing_region(&target.base_url, default_region),
        ),
        _ => error,
    }
}

/// Output counted as characters / 4 when an upstream sends no usage.
fn estimate_usage(response: &ChatCompletion, prompt_estimate: u64) -> Usage {
    let mut chars = 0usize;
    for choice in &response.choices {
        let message = &choice.message;
        chars += message.content.as_deref().map_or(0, |t| t.chars().count());
        chars += message.refusal.as_deref().map_or(0, |t| t.chars().count());
        for call in message.tool_calls.iter().flatten() {
            chars += call.function.name.chars().count() + call.function.arguments.chars().count();
        }
    }
    Usage {
        uncached_input_tokens: prompt_estimate,
        output_tokens: (chars as u64).div_ceil(4),
        ..Usage::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn target(auth_type: AuthType, key: Option<&str>) -> UpstreamTarget {
        UpstreamTarget {
            api_format: ApiFormat::OpenAi,
            base_url: "https://example.test/v1".to_owned(),
            auth_type,
            model_id: "m".to_owned(),
            api_key: key.map(Secret::new),
            max_output_tokens: None,
            forward_unpriced_fields: false,
            auto_cache_control: false,
            traceparent: None,
            responses_api: false,
            account_tag: None,
        }
    }

    #[test]
    fn auth_headers_per_auth_type() {
        let headers = request_headers(&target(AuthType::Bearer, Some("k1")), false).unwrap();
        assert_eq!(headers[AUTHORIZATION], "Bearer k1");
        assert!(headers[AUTHORIZATION].is_sensitive());
        let headers = request_headers(&target(AuthType::XApiKey, Some("k2")), true).unwrap();
        assert_eq!(headers["x-api-key"], "k2");
        assert_eq!(headers[ACCEPT], "text/event-stream");
        let headers = request_headers(&target(AuthType::XGoogApiKey, Some("k3")), false).unwrap();
        assert_eq!(headers["x-goog-api-key"], "k3");
        let headers = request_headers(&target(AuthType::None, Some("k4")), false).unwrap();
        assert!(!headers.contains_key(AUTHORIZATION));
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn missing_or_unusable_key_is_an_error_without_the_key() {
        let error = request_headers(&target(AuthType::Bearer, None), false).unwrap_err();
        assert!(matches!(error, ProviderError::MissingCredential { .. }));
        assert!(error.retryable());
        let error =
            request_headers(&target(AuthType::Bearer, Some("bad\nkey-secret")), false).unwrap_err();
        assert!(!format!("{error} {error:?}").contains("key-secret"));
    }
}
