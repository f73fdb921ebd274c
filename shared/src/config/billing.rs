//! The billing export to Lago.

use std::time::Duration;

use rust_decimal::Decimal;

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
    /// `SWITCHBOARD_LAGO_API_KEY_SECRET_ARN`: the key from Secrets Manager instead (AWS);
    /// the secret holds `{"api_key": "..."}` or the key itself.
    pub lago_api_key_secret_arn: Option<String>,
    /// `SWITCHBOARD_LAGO_METRIC_CODE`: the billable metric's code, default `llm_usage`.
    pub metric_code: String,
    /// How often `serve` exports (`SWITCHBOARD_BILLING_EXPORT_INTERVAL_SECS`, default 60;
    /// in AWS the `billing-export` function's schedule decides).
    pub export_interval: Duration,
    /// `SWITCHBOARD_STRIPE_API_URL`, default `https://api.stripe.com`.
    pub stripe_api_url: String,
    /// `SWITCHBOARD_STRIPE_API_KEY` (a secret key, `sk_…`); unset turns checkout off.
    pub stripe_api_key: Option<Secret>,
    /// `SWITCHBOARD_STRIPE_WEBHOOK_SECRET` (`whsec_…`); unset refuses every webhook.
    pub stripe_webhook_secret: Option<Secret>,
    /// `SWITCHBOARD_STRIPE_SUCCESS_URL` / `_CANCEL_URL`: where Checkout sends the user.
    pub stripe_success_url: Option<String>,
    pub stripe_cancel_url: Option<String>,
    /// `SWITCHBOARD_STRIPE_MIN_USD` / `_MAX_USD`: a top-up's range (default 5 to 1000).
    pub stripe_min_usd: Decimal,
    pub stripe_max_usd: Decimal,
    /// `SWITCHBOARD_ALERT_WEBHOOK_URL`: where budget alerts are POSTed; unset keeps them
    /// queued.
    pub alert_webhook_url: Option<String>,
    /// `SWITCHBOARD_ALERT_WEBHOOK_SECRET`: signs each alert (required with the URL).
    pub alert_webhook_secret: Option<Secret>,
    /// `SWITCHBOARD_BILLING_SECRETS_ARN`: a Secrets Manager secret `{"stripe_api_key",
    /// "stripe_webhook_secret", "alert_webhook_secret"}` filling those of the three that
    /// the environment leaves unset (AWS).
    pub billing_secrets_arn: Option<String>,
}

impl Default for BillingSettings {
    fn default() -> Self {
        Self {
            lago_api_url: None,
            lago_api_key: None,
            lago_api_key_secret_arn: None,
            metric_code: "llm_usage".into(),
            export_interval: Duration::from_secs(60),
            stripe_api_url: "https://api.stripe.com".into(),
            stripe_api_key: None,
            stripe_webhook_secret: None,
            stripe_success_url: None,
            stripe_cancel_url: None,
            stripe_min_usd: Decimal::from(5),
            stripe_max_usd: Decimal::from(1000),
            alert_webhook_url: None,
            alert_webhook_secret: None,
            billing_secrets_arn: None,
        }
    }
}

/// A positive amount of dollars, or the default.
fn dollars(env: &Env, variable: &'static str, default: Decimal) -> Result<Decimal, ConfigError> {
    match env.get(variable) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<Decimal>()
            .ok()
            .filter(|d| *d > Decimal::ZERO)
            .ok_or_else(|| ConfigError {
                variable,
                reason: format!("`{v}` is not a positive amount of dollars"),
            }),
    }
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
        let defaults = Self::default();
        let stripe_min_usd = dollars(env, "SWITCHBOARD_STRIPE_MIN_USD", defaults.stripe_min_usd)?;
        let stripe_max_usd = dollars(env, "SWITCHBOARD_STRIPE_MAX_USD", defaults.stripe_max_usd)?;
        if stripe_min_usd > stripe_max_usd {
            return Err(ConfigError {
                variable: "SWITCHBOARD_STRIPE_MIN_USD",
                reason: "is above SWITCHBOARD_STRIPE_MAX_USD".into(),
            });
        }
        let alert_webhook_url = env.get("SWITCHBOARD_ALERT_WEBHOOK_URL");
        let alert_webhook_secret = env.get("SWITCHBOARD_ALERT_WEBHOOK_SECRET").map(Secret::new);
        let billing_secrets_arn = env.get("SWITCHBOARD_BILLING_SECRETS_ARN");
        if alert_webhook_url.is_some()
            && alert_webhook_secret.is_none()
            && billing_secrets_arn.is_none()
        {
            return Err(ConfigError {
                variable: "SWITCHBOARD_ALERT_WEBHOOK_SECRET",
                reason: "required with SWITCHBOARD_ALERT_WEBHOOK_URL (every alert is signed), here or in SWITCHBOARD_BILLING_SECRETS_ARN"
                    .into(),
            });
        }
        Ok(Self {
            alert_webhook_url,
            alert_webhook_secret,
            billing_secrets_arn,
            stripe_api_url: env
                .get("SWITCHBOARD_STRIPE_API_URL")
                .map(|u| u.trim().trim_end_matches('/').to_string())
                .unwrap_or(defaults.stripe_api_url),
            stripe_api_key: env.get("SWITCHBOARD_STRIPE_API_KEY").map(Secret::new),
            stripe_webhook_secret: env
                .get("SWITCHBOARD_STRIPE_WEBHOOK_SECRET")
                .map(Secret::new),
            stripe_success_url: env.get("SWITCHBOARD_STRIPE_SUCCESS_URL"),
            stripe_cancel_url: env.get("SWITCHBOARD_STRIPE_CANCEL_URL"),
            stripe_min_usd,
            stripe_max_usd,
            lago_api_url,
            lago_api_key: env.get("SWITCHBOARD_LAGO_API_KEY").map(Secret::new),
            lago_api_key_secret_arn: env.get("SWITCHBOARD_LAGO_API_KEY_SECRET_ARN"),
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
