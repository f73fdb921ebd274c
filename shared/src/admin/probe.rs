//! `POST /admin/providers/{id}/test`: a minimal live call to a provider with the platform's
//! system key, reporting the upstream status and the latency.
//!
//! - When the provider offers a model, the call is a one-token chat completion (`"ping"`,
//!   `max_tokens: 1`) through the provider adapter ([`ProviderClient::complete`]): it proves
//!   the URL, the key, the auth scheme and the wire format. The model chosen is the
//!   cheapest active one.
//! - Without a model, it is a `GET {base_url}/models` with the provider's auth header
//!   (`Authorization: Bearer`, `x-api-key` + `anthropic-version`, or `x-goog-api-key`).
//!
//! The URL passes the SSRF check again right before the call (DNS answers change); the
//! shared upstream client does not follow redirects. Keys never appear in the result.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::AdminError;
use super::providers::ProviderView;
use crate::catalog::{ApiFormat, AuthType};
use crate::credentials::provider_key_env_name;
use crate::providers::{ChatRequest, ProviderClient, UpstreamTarget};
use crate::secret::Secret;
use crate::ssrf::check_upstream_url;

/// How long the test call may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The outcome of a test call.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProbeResult {
    pub provider_id: i32,
    pub provider_slug: String,
    /// True when the provider answered successfully (2xx, and for a chat call a
    /// completion that could be read).
    pub ok: bool,
    /// The upstream HTTP status, when it answered.
    pub status: Option<u16>,
    /// Time until the upstream's answer (0 when no call was made).
    pub latency_ms: u64,
    /// What was called (`POST chat completion: model gpt-4o-mini, max_tokens 1` or
    /// `GET https://api.openai.com/v1/models`); never contains the key.
    pub request: String,
    /// The model of the chat call (null for the models endpoint).
    pub model_id: Option<String>,
    /// Whether a system key was sent.
    pub used_system_key: bool,
    /// Why the test failed, when it did.
    pub error: Option<String>,
}

/// The model a test chat call uses: the provider's cheapest active, non-deprecated model
/// (any model when none is active). `None` when the provider offers none.
pub async fn test_model(
    client: &impl GenericClient,
    provider_id: i32,
) -> Result<Option<String>, AdminError> {
    let row = client
        .query_opt(
            "SELECT model_id FROM llm_models WHERE provider_id = $1
             ORDER BY is_active DESC, is_deprecated, cost_per_1m_output_tokens, id LIMIT 1",
            &[&provider_id],
        )
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// The models endpoint under `base_url` (`…/v1` → `…/v1/models`).
pub fn models_url(base_url: &str) -> String {
    format!("{}/models", base_url.trim_end_matches('/'))
}

/// Makes the test call (a chat call with `model`, else the models endpoint) with `key`
/// and reports what happened. Never fails: every problem is reported in the result.
pub async fn probe(
    providers: &ProviderClient,
    provider: &ProviderView,
    model: Option<&str>,
    key: Option<&Secret>,
    allow_private_upstreams: bool,
) -> ProbeResult {
    let url = models_url(&provider.base_url);
    let mut result = ProbeResult {
        provider_id: provider.id,
        provider_slug: provider.provider_slug.clone(),
        ok: false,
        status: None,
        latency_ms: 0,
        request: match model {
            Some(model) => format!("POST chat completion: model {model}, max_tokens 1"),
            None => format!("GET {url}"),
        },
        model_id: model.map(str::to_string),
        used_system_key: false,
        error: None,
    };
    let needs_key = !matches!(provider.auth_type, AuthType::None | AuthType::AwsSigv4);
    if needs_key && key.is_none() {
        result.error = Some(format!(
            "the platform holds no key for provider `{}` (set {} or add it to the provider keys secret)",
            provider.provider_slug,
            provider_key_env_name(&provider.provider_slug)
        ));
        return result;
    }
    if let Err(refused) = check_upstream_url(&provider.base_url, allow_private_upstreams).await {
        result.error = Some(format!("the base_url {refused}"));
        return result;
    }
    let key = key.filter(|_| needs_key);
    result.used_system_key = key.is_some();
    match model {
        Some(model) => chat_call(providers, provider, model, key, &mut result).await,
        // Bedrock has no free models list on its runtime endpoint: only a signed call says
        // whether the role may invoke a model.
        None if provider.api_format == ApiFormat::Bedrock => {
            result.error = Some(
                "a Bedrock provider is tested with a model: pass `model_id` (a 1-token Converse call, signed with the function's AWS credentials)".to_owned(),
            );
        }
        None => models_call(providers.http(), provider, &url, key, &mut result).await,
    }
    result
}

async fn chat_call(
    providers: &ProviderClient,
    provider: &ProviderView,
    model: &str,
    key: Option<&Secret>,
    result: &mut ProbeResult,
) {
    let request = match serde_json::from_value::<ChatRequest>(json!({
        "model": model,
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 1,
    })) {
        Ok(request) => request,
        Err(error) => {
            result.error = Some(format!("cannot build the test request: {error}"));
            return;
        }
    };
    let target = UpstreamTarget {
        api_format: provider.api_format,
        base_url: provider.base_url.clone(),
        auth_type: provider.auth_type,
        model_id: model.to_string(),
        api_key: key.cloned(),
        max_output_tokens: Some(1),
        forward_unpriced_fields: false,
        auto_cache_control: false,
        traceparent: None,
        responses_api: false,
        account_tag: None,
    };
    let started = Instant::now();
    let outcome = tokio::time::timeout(PROBE_TIMEOUT, providers.complete(&target, &request)).await;
    result.latency_ms = elapsed_ms(started);
    match outcome {
        Ok(Ok(_)) => {
            result.ok = true;
            result.status = Some(200);
        }
        Ok(Err(error)) => {
            result.status = error.upstream_status();
            // The adapter's messages never contain the key (it sanitises upstream text).
            result.error = Some(error.to_string());
        }
        Err(_) => {
            result.error = Some(format!(
                "no answer within {} seconds",
                PROBE_TIMEOUT.as_secs()
            ));
        }
    }
}

async fn models_call(
    http: &reqwest::Client,
    provider: &ProviderView,
    url: &str,
    key: Option<&Secret>,
    result: &mut ProbeResult,
) {
    let mut request = http.get(url).timeout(PROBE_TIMEOUT);
    if let Some(key) = key {
        request = match provider.auth_type {
            AuthType::Bearer => request.bearer_auth(key.expose()),
            AuthType::XApiKey => request.header("x-api-key", key.expose()),
            AuthType::XGoogApiKey => request.header("x-goog-api-key", key.expose()),
            AuthType::None | AuthType::AwsSigv4 => request,
        };
    }
    if provider.api_format == ApiFormat::Anthropic {
        request = request.header("anthropic-version", ANTHROPIC_VERSION);
    }
    let started = Instant::now();
    let response = request.send().await;
    result.latency_ms = elapsed_ms(started);
    match response {
        Ok(response) => {
            let status = response.status();
            result.status = Some(status.as_u16());
            result.ok = status.is_success();
            if !result.ok {
                result.error = Some(format!("the provider answered HTTP {}", status.as_u16()));
            }
        }
        Err(error) => {
            result.error = Some(if error.is_timeout() {
                format!("no answer within {} seconds", PROBE_TIMEOUT.as_secs())
            } else if error.is_connect() {
                "could not connect to the provider".into()
            } else {
                "the request to the provider failed".into()
            });
        }
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_url_joins_cleanly() {
        assert_eq!(
            models_url("https://api.openai.com/v1"),
            "https://api.openai.com/v1/models"
        );
        assert_eq!(
            models_url("https://api.openai.com/v1/"),
            "https://api.openai.com/v1/models"
        );
    }
}
