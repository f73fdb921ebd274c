//! The billing export to Lago.

use std::time::Duration;

use super::ConfigError;
use super::env::Env;
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct BillingSettings {
    /// `SWITCHBOARD_LAGO_API_URL` (e.g. `https://api.getlago.com`); unset turns the
    /// export off (with a log line saying so).
    pub lago_api_url: Option<String>,
    /// `SWITCHBOARD_LAGO_API_KEY`: Lago's API key, sent as `Authorization: Bearer`.
    pub lago_api_key: Option<Secret>,
    /// `SWITCHBOARD_LAGO_METRIC_CODE`: the billable metric's code, default `llm_usage`.
    pub metric_code: String,
    /// How often `serve` exports (`SWITCHBOARD_BILLING_EXPORT_INTERVAL_SECS`, default 60;
    /// in AWS the `billing-export` function's schedule decides).
    pub export_interval: Duration,
}

impl BillingSettings {
    pub(super) fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let lago_api_url = env
            .get("SWITCHBOARD_LAGO_API_URL")
            .map(|url| url.trim().trim_end_matches('/').to_string());
        if let Some(url) = &lago_api_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError {
                variable: "SWITCHBOARD_LAGO_API_URL",
                reason: format!("`{url}` is not an http(s) URL"),
            });
        }
        let metric_code = env
            .get("SWITCHBOARD_LAGO_METRIC_CODE")
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|| "llm_usage".into());
        if metric_code.len() > 200 || metric_code.chars().any(char::is_whitespace) {
            return Err(ConfigError {
                variable: "SWITCHBOARD_LAGO_METRIC_CODE",
                reason: "a billable metric code has no whitespace and at most 200 characters"
                    .into(),
            });
        }
        Ok(Self {
            lago_api_url,
            lago_api_key: env.get("SWITCHBOARD_LAGO_API_KEY").map(Secret::new),
            metric_code,
            export_interval: env.seconds(
                "SWITCHBOARD_BILLING_EXPORT_INTERVAL_SECS",
                5,
                86_400,
                Duration::from_secs(60),
            )?,
        })
    }
}
