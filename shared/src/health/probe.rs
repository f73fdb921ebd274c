//! One unbilled probe of one provider and its classification.
//!
//! - URL: the provider's `health_url` when set, else `{base_url}/models` (every supported
//!   format lists its models there, for free).
//! - Auth: the platform's system key, per `auth_type`, always in a header marked sensitive
//!   (`Authorization: Bearer`, `x-api-key` with `anthropic-version: 2023-06-01`,
//!   `x-goog-api-key`); never in the URL. A provider that needs a key the platform does not
//!   hold is not called: `unknown`.
//! - The URL passes the SSRF rules again right before the call (DNS answers change), and
//!   the shared upstream client follows no redirect.
//! - Only the status line and the time to the answer's headers are used: the body is never
//!   read, so no upstream text (which could quote a key) reaches the history or the logs.
//!
//! [`classify`] is the whole rule, as a pure function:
//!
//! | answer | status |
//! |---|---|
//! | 2xx within the degraded threshold | `healthy` |
//! | 2xx slower than the threshold | `degraded` |
//! | 429 | `degraded` (up, but throttling us) |
//! | 401 / 403 | `degraded`, noted as a key problem: the provider answered, so it is up; our system key is what fails, and disabling the provider would not fix that (users' BYOK keys may still work) |
//! | 408, 5xx, timeout, connection error, unresolvable host | `down` |
//! | other statuses (404, 3xx, ...) | `unknown`: the health URL is wrong, which says nothing about the provider |
//! | no system key, URL refused by the SSRF rules, key unusable in a header | `unknown`, not called |
//! | the gateway's own failure: out of file descriptors, ports or memory, its DNS resolver unavailable ([`crate::local_failure`]) | `unknown`, and the provider's status is left as it was: the provider was never reached |

use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderName, HeaderValue};

use crate::catalog::{ApiFormat, AuthType, HealthStatus};
use crate::credentials::provider_key_env_name;
use crate::local_failure::LocalFailure;
use crate::providers::{
    AwsCredentialSource, ChatRequest, ProviderClient, ProviderError, Timeouts, UpstreamTarget,
};
use crate::secret::Secret;
use crate::ssrf::{UrlRefused, check_upstream_url};

/// The `anthropic-version` sent with `x-api-key` probes.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Longest note stored in a history row.
const MAX_NOTE_CHARS: usize = 500;

/// What to probe: one provider's URL and credentials. `Debug` never shows the key.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub provider_id: i32,
    pub provider_slug: String,
    pub api_format: ApiFormat,
    pub auth_type: AuthType,
    /// `health_url`, else `{base_url}/models`.
    pub url: String,
    /// The platform's key for this provider, if it holds one.
    pub key: Option<Secret>,
    /// Bedrock: probed with a signed Converse call instead of a GET of `url` (which is
    /// then the base URL).
    pub bedrock: Option<BedrockProbe>,
}

/// What a Bedrock probe needs: the model it calls and the credentials it signs with.
#[derive(Debug, Clone)]
pub struct BedrockProbe {
    /// The provider's cheapest active chat model; `None`: not probed.
    pub model: Option<String>,
    pub aws: AwsCredentialSource,
}

impl ProbeTarget {
    /// The URL a provider is probed at: `health_url` when set, else `{base_url}/models`.
    pub fn probe_url(base_url: &str, health_url: Option<&str>) -> String {
        match health_url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => url.to_string(),
            None => format!("{}/models", base_url.trim_end_matches('/')),
        }
    }
}

/// What happened when a provider was probed, before classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// The provider answered with this status after `elapsed` (time to the headers).
    Answered { status: u16, elapsed: Duration },
    /// No answer within the probe timeout.
    TimedOut,
    /// The connection could not be made (refused, reset, TLS failure).
    ConnectFailed,
    /// The request failed after connecting, before an answer.
    RequestFailed,
    /// The host name does not resolve.
    Unresolvable,
    /// The URL breaks the SSRF rules (the reason is safe to show an admin).
    UrlRefused(String),
    /// The provider needs a key and the platform holds none; `env` names the variable
    /// that would supply it.
    NoKey { env: String },
    /// The key cannot be sent in an HTTP header (control characters).
    UnusableKey,
    /// The gateway's own resources failed the probe (descriptors, ports, memory, its DNS
    /// resolver): the provider was not reached.
    LocalFailure(LocalFailure),
    /// Bedrock: no active model to make the signed call with.
    NoModel,
    /// Bedrock: the AWS credential chain gave no credentials.
    NoAwsCredentials,
}

/// A probe's verdict: status, what the history row records, and a short note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub status: HealthStatus,
    pub http_status: Option<u16>,
    /// Time to the answer's headers; `None` when there was no answer.
    pub response_time_ms: Option<i32>,
    /// Why it is not `healthy` (our own words; never upstream text, never a key).
    pub note: Option<String>,
    /// The gateway's own failure kept the probe from the provider: the result is
    /// `unknown` and the provider's recorded status stays as it was.
    pub local_failure: Option<LocalFailure>,
}

/// Classifies an answer (see the module table). `degraded_latency` is the slow threshold;
/// `probe_timeout` only names the limit in the note of a timeout.
pub fn classify(
    answer: &ProbeAnswer,
    degraded_latency: Duration,
    probe_timeout: Duration,
) -> ProbeOutcome {
    let outcome = |status, http_status, response_time_ms, note: Option<String>| ProbeOutcome {
        status,
        http_status,
        response_time_ms,
        note: note.map(|n| n.chars().take(MAX_NOTE_CHARS).collect()),
        local_failure: None,
    };
    match answer {
        ProbeAnswer::Answered { status, elapsed } => {
            let ms = Some(millis(*elapsed));
            let code = Some(*status);
            match status {
                200..=299 if *elapsed > degraded_latency => outcome(
                    HealthStatus::Degraded,
                    code,
                    ms,
                    Some(format!(
                        "slow: answered in {} ms (degraded above {} ms)",
                        elapsed.as_millis(),
                        degraded_latency.as_millis()
                    )),
                ),
                200..=299 => outcome(HealthStatus::Healthy, code, ms, None),
                429 => outcome(
                    HealthStatus::Degraded,
                    code,
                    ms,
                    Some("rate limited (HTTP 429)".into()),
                ),
                401 | 403 => outcome(
                    HealthStatus::Degraded,
                    code,
                    ms,
                    Some(format!(
                        "the provider refused the platform's key (HTTP {status}): the provider is up, the system key needs attention"
                    )),
                ),
                408 | 500..=599 => outcome(
                    HealthStatus::Down,
                    code,
                    ms,
                    Some(format!("the provider answered HTTP {status}")),
                ),
                _ => outcome(
                    HealthStatus::Unknown,
                    code,
                    ms,
                    Some(format!(
                        "unexpected HTTP {status} from the health URL (check health_url); not counted"
                    )),
                ),
            }
        }
        ProbeAnswer::TimedOut => outcome(
            HealthStatus::Down,
            None,
            None,
            Some(format!("no answer within {} s", probe_timeout.as_secs())),
        ),
        ProbeAnswer::ConnectFailed => outcome(
            HealthStatus::Down,
            None,
            None,
            Some("could not connect to the provider".into()),
        ),
        ProbeAnswer::RequestFailed => outcome(
            HealthStatus::Down,
            None,
            None,
            Some("the request failed before the provider answered".into()),
        ),
        ProbeAnswer::Unresolvable => outcome(
            HealthStatus::Down,
            None,
            None,
            Some("the provider's host name does not resolve".into()),
        ),
        ProbeAnswer::UrlRefused(reason) => outcome(
            HealthStatus::Unknown,
            None,
            None,
            Some(format!("not probed: the health URL {reason}")),
        ),
        ProbeAnswer::NoKey { env } => outcome(
            HealthStatus::Unknown,
            None,
            None,
            Some(format!(
                "not probed: the platform holds no key for this provider (set {env} or add it to the provider keys secret)"
            )),
        ),
        ProbeAnswer::NoModel => outcome(
            HealthStatus::Unknown,
            None,
            None,
            Some("not probed: the provider has no active chat model to call".into()),
        ),
        ProbeAnswer::NoAwsCredentials => outcome(
            HealthStatus::Unknown,
            None,
            None,
            Some("not probed: no AWS credentials (the function's role, or AWS_* variables)".into()),
        ),
        ProbeAnswer::UnusableKey => outcome(
            HealthStatus::Unknown,
            None,
            None,
            Some("not probed: the system key contains characters not allowed in a header".into()),
        ),
        ProbeAnswer::LocalFailure(failure) => ProbeOutcome {
            local_failure: Some(*failure),
            ..outcome(
                HealthStatus::Unknown,
                None,
                None,
                Some(format!(
                    "not probed: {failure}; the provider was not reached and its status is unchanged"
                )),
            )
        },
    }
}

/// Probes `target` within `timeout` (URL check included) and reports what happened.
/// Never fails: every problem is an answer.
pub async fn probe(
    http: &reqwest::Client,
    target: &ProbeTarget,
    timeout: Duration,
    allow_private_upstreams: bool,
) -> ProbeAnswer {
    let answer = tokio::time::timeout(
        timeout,
        probe_once(http, target, timeout, allow_private_upstreams),
    )
    .await
    .unwrap_or(ProbeAnswer::TimedOut);
    if let ProbeAnswer::LocalFailure(failure) = answer {
        tracing::error!(
            provider = %target.provider_slug,
            kind = failure.kind(),
            "health check: {failure}; the probe was not made and the provider is not counted down"
        );
        crate::metrics::record_local_error(failure);
    }
    answer
}

async fn probe_once(
    http: &reqwest::Client,
    target: &ProbeTarget,
    timeout: Duration,
    allow_private_upstreams: bool,
) -> ProbeAnswer {
    if let Some(bedrock) = &target.bedrock {
        return probe_bedrock(http, target, bedrock, timeout, allow_private_upstreams).await;
    }
    let auth = match auth_header(target) {
        Ok(auth) => auth,
        Err(answer) => return answer,
    };
    let url = match check_upstream_url(&target.url, allow_private_upstreams).await {
        Ok(url) => url,
        Err(UrlRefused::Unresolvable(_)) => return ProbeAnswer::Unresolvable,
        Err(UrlRefused::LookupFailed { failure, .. }) => {
            return ProbeAnswer::LocalFailure(failure);
        }
        Err(refused) => return ProbeAnswer::UrlRefused(refused.to_string()),
    };
    let mut request = http
        .get(url)
        .timeout(timeout)
        .header(ACCEPT, HeaderValue::from_static("application/json"));
    if let Some((name, value)) = auth {
        request = request.header(name, value);
    }
    if target.api_format == ApiFormat::Anthropic || target.auth_type == AuthType::XApiKey {
        request = request.header(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
    }
    let started = Instant::now();
    match request.send().await {
        // The body is dropped unread: only the status and the latency count.
        Ok(response) => ProbeAnswer::Answered {
            status: response.status().as_u16(),
            elapsed: started.elapsed(),
        },
        // A local failure first: it is not the provider's (local_failure.rs).
        Err(error) => match LocalFailure::find(&error) {
            Some(failure) => ProbeAnswer::LocalFailure(failure),
            None if error.is_timeout() => ProbeAnswer::TimedOut,
            None if error.is_connect() => ProbeAnswer::ConnectFailed,
            None => ProbeAnswer::RequestFailed,
        },
    }
}

/// A Bedrock probe: a 1-token Converse call, signed like every Bedrock call, through the
/// provider adapter. Only its status and time count, as for the other probes.
async fn probe_bedrock(
    http: &reqwest::Client,
    target: &ProbeTarget,
    bedrock: &BedrockProbe,
    timeout: Duration,
    allow_private_upstreams: bool,
) -> ProbeAnswer {
    let Some(model) = &bedrock.model else {
        return ProbeAnswer::NoModel;
    };
    match check_upstream_url(&target.url, allow_private_upstreams).await {
        Ok(_) => {}
        Err(UrlRefused::Unresolvable(_)) => return ProbeAnswer::Unresolvable,
        Err(UrlRefused::LookupFailed { failure, .. }) => return ProbeAnswer::LocalFailure(failure),
        Err(refused) => return ProbeAnswer::UrlRefused(refused.to_string()),
    }
    let request = match serde_json::from_value::<ChatRequest>(serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 1,
    })) {
        Ok(request) => request,
        Err(_) => return ProbeAnswer::RequestFailed,
    };
    let upstream = UpstreamTarget {
        api_format: target.api_format,
        base_url: target.url.clone(),
        auth_type: target.auth_type,
        model_id: model.clone(),
        api_key: None,
        max_output_tokens: Some(1),
        forward_unpriced_fields: false,
        auto_cache_control: false,
        traceparent: None,
        responses_api: false,
        account_tag: None,
    };
    let client = ProviderClient::from_http(
        http.clone(),
        Timeouts {
            connect: timeout,
            first_byte: timeout,
            attempt: timeout,
            stream_idle: timeout,
        },
    )
    .with_aws_credentials(bedrock.aws.clone());
    let started = Instant::now();
    let outcome = client.complete(&upstream, &request).await;
    let elapsed = started.elapsed();
    match outcome {
        Ok(_) => ProbeAnswer::Answered {
            status: 200,
            elapsed,
        },
        Err(error) => match (error.upstream_status(), error) {
            (Some(status), _) => ProbeAnswer::Answered { status, elapsed },
            (None, ProviderError::Local { failure, .. }) => ProbeAnswer::LocalFailure(failure),
            (None, ProviderError::Timeout { .. }) => ProbeAnswer::TimedOut,
            (None, ProviderError::Connect { .. }) => ProbeAnswer::ConnectFailed,
            (None, ProviderError::Configuration(_)) => ProbeAnswer::NoAwsCredentials,
            (None, _) => ProbeAnswer::RequestFailed,
        },
    }
}

/// The auth header for the target's `auth_type`, marked sensitive; `None` for `none`.
fn auth_header(target: &ProbeTarget) -> Result<Option<(HeaderName, HeaderValue)>, ProbeAnswer> {
    let (name, prefix) = match target.auth_type {
        AuthType::None | AuthType::AwsSigv4 => return Ok(None),
        AuthType::Bearer => (AUTHORIZATION, "Bearer "),
        AuthType::XApiKey => (HeaderName::from_static("x-api-key"), ""),
        AuthType::XGoogApiKey => (HeaderName::from_static("x-goog-api-key"), ""),
    };
    let key = target
        .key
        .as_ref()
        .map(|k| k.expose().trim())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ProbeAnswer::NoKey {
            env: provider_key_env_name(&target.provider_slug),
        })?;
    let mut value =
        HeaderValue::from_str(&format!("{prefix}{key}")).map_err(|_| ProbeAnswer::UnusableKey)?;
    value.set_sensitive(true);
    Ok(Some((name, value)))
}

fn millis(elapsed: Duration) -> i32 {
    i32::try_from(elapsed.as_millis()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOW: Duration = Duration::from_millis(2000);
    const TIMEOUT: Duration = Duration::from_secs(10);

    fn answered(status: u16, ms: u64) -> ProbeOutcome {
        classify(
            &ProbeAnswer::Answered {
                status,
                elapsed: Duration::from_millis(ms),
            },
            SLOW,
            TIMEOUT,
        )
    }

    #[test]
    fn answers_are_classified() {
        let fast = answered(200, 120);
        assert_eq!(fast.status, HealthStatus::Healthy);
        assert_eq!(fast.http_status, Some(200));
        assert_eq!(fast.response_time_ms, Some(120));
        assert_eq!(fast.note, None);
        assert_eq!(answered(204, 2000).status, HealthStatus::Healthy);
        let slow = answered(200, 2001);
        assert_eq!(slow.status, HealthStatus::Degraded);
        assert!(slow.note.unwrap().contains("2001 ms"));
        assert_eq!(answered(429, 10).status, HealthStatus::Degraded);
        for status in [401, 403] {
            let refused = answered(status, 10);
            assert_eq!(refused.status, HealthStatus::Degraded);
            assert!(refused.note.unwrap().contains("key"));
        }
        for status in [408, 500, 502, 503, 529] {
            assert_eq!(answered(status, 10).status, HealthStatus::Down, "{status}");
        }
        for status in [301, 400, 404, 405] {
            assert_eq!(
                answered(status, 10).status,
                HealthStatus::Unknown,
                "{status}"
            );
        }
    }

    #[test]
    fn failures_without_an_answer() {
        for answer in [
            ProbeAnswer::TimedOut,
            ProbeAnswer::ConnectFailed,
            ProbeAnswer::RequestFailed,
            ProbeAnswer::Unresolvable,
        ] {
            let outcome = classify(&answer, SLOW, TIMEOUT);
            assert_eq!(outcome.status, HealthStatus::Down, "{answer:?}");
            assert_eq!(outcome.http_status, None);
            assert_eq!(outcome.response_time_ms, None);
        }
        assert!(
            classify(&ProbeAnswer::TimedOut, SLOW, TIMEOUT)
                .note
                .unwrap()
                .contains("10 s")
        );
        for answer in [
            ProbeAnswer::UrlRefused("must use https".into()),
            ProbeAnswer::NoKey {
                env: "SWITCHBOARD_PROVIDER_KEY_ACME".into(),
            },
            ProbeAnswer::UnusableKey,
        ] {
            let outcome = classify(&answer, SLOW, TIMEOUT);
            assert_eq!(outcome.status, HealthStatus::Unknown, "{answer:?}");
            assert!(outcome.note.unwrap().starts_with("not probed"));
        }
    }

    #[test]
    fn the_gateways_own_failure_is_unknown_never_down() {
        for failure in LocalFailure::ALL {
            let outcome = classify(&ProbeAnswer::LocalFailure(failure), SLOW, TIMEOUT);
            assert_eq!(outcome.status, HealthStatus::Unknown, "{failure:?}");
            assert_eq!(outcome.local_failure, Some(failure));
            assert_eq!(outcome.http_status, None);
            let note = outcome.note.unwrap();
            assert!(note.contains(failure.describe()), "{note}");
        }
        assert_eq!(
            classify(&ProbeAnswer::ConnectFailed, SLOW, TIMEOUT).local_failure,
            None
        );
    }

    #[tokio::test]
    async fn a_probe_the_gateway_could_not_make_is_not_the_providers() {
        let target = ProbeTarget {
            url: "http://127.0.0.1:9/v1/models".into(),
            ..target(AuthType::None, None)
        };
        for (errno, expected) in [
            (libc::EMFILE, LocalFailure::FileDescriptors),
            (libc::EADDRNOTAVAIL, LocalFailure::EphemeralPorts),
        ] {
            let http = crate::local_failure::testing::client_failing_with(errno);
            let answer = probe(&http, &target, TIMEOUT, true).await;
            assert_eq!(answer, ProbeAnswer::LocalFailure(expected));
            assert_eq!(
                classify(&answer, SLOW, TIMEOUT).status,
                HealthStatus::Unknown
            );
        }
        // The provider's own refusal stays a connection failure: down.
        let http = crate::local_failure::testing::client_failing_with(libc::ECONNREFUSED);
        let answer = probe(&http, &target, TIMEOUT, true).await;
        assert_eq!(answer, ProbeAnswer::ConnectFailed);
        assert_eq!(classify(&answer, SLOW, TIMEOUT).status, HealthStatus::Down);
    }

    fn target(auth_type: AuthType, key: Option<&str>) -> ProbeTarget {
        ProbeTarget {
            provider_id: 1,
            provider_slug: "acme-ai".into(),
            api_format: ApiFormat::OpenAi,
            auth_type,
            url: "https://example.test/v1/models".into(),
            key: key.map(Secret::new),
            bedrock: None,
        }
    }

    #[test]
    fn auth_headers_per_auth_type_and_never_in_debug() {
        let (name, value) = auth_header(&target(AuthType::Bearer, Some("sk-1")))
            .unwrap()
            .unwrap();
        assert_eq!(name, AUTHORIZATION);
        assert_eq!(value.to_str().unwrap(), "Bearer sk-1");
        assert!(value.is_sensitive());
        let (name, _) = auth_header(&target(AuthType::XApiKey, Some("sk-2")))
            .unwrap()
            .unwrap();
        assert_eq!(name.as_str(), "x-api-key");
        let (name, _) = auth_header(&target(AuthType::XGoogApiKey, Some("sk-3")))
            .unwrap()
            .unwrap();
        assert_eq!(name.as_str(), "x-goog-api-key");
        assert!(
            auth_header(&target(AuthType::None, None))
                .unwrap()
                .is_none()
        );
        assert_eq!(
            auth_header(&target(AuthType::Bearer, None)).unwrap_err(),
            ProbeAnswer::NoKey {
                env: "SWITCHBOARD_PROVIDER_KEY_ACME_AI".into()
            }
        );
        assert_eq!(
            auth_header(&target(AuthType::Bearer, Some("bad\nsk-secret"))).unwrap_err(),
            ProbeAnswer::UnusableKey
        );
        let debug = format!("{:?}", target(AuthType::Bearer, Some("sk-very-secret")));
        assert!(!debug.contains("sk-very-secret"), "{debug}");
    }

    #[test]
    fn probe_url_prefers_health_url() {
        assert_eq!(
            ProbeTarget::probe_url("https://api.x.test/v1/", None),
            "https://api.x.test/v1/models"
        );
        assert_eq!(
            ProbeTarget::probe_url("https://api.x.test/v1", Some(" ")),
            "https://api.x.test/v1/models"
        );
        assert_eq!(
            ProbeTarget::probe_url("https://api.x.test/v1", Some("https://status.x.test/ok")),
            "https://status.x.test/ok"
        );
    }
}
