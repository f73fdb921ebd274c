//! The live check of a provider key: `GET {base_url}/models` with the key sent the way the
//! provider expects it (always a header, never the URL), within 10 s. Only the status is
//! used: provider error bodies can quote part of the key, so they are never stored.

use std::time::Duration;

use reqwest::Url;

use crate::catalog::AuthType;
use crate::secret::Secret;
use crate::ssrf::{UrlRefused, check_upstream_url};

/// How long a key check may take.
pub const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of a key check, as stored on the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    Valid,
    /// The provider refused the key (401/403) or the check could not be made; the message
    /// is stored as `validation_error` and never contains the key.
    Invalid(String),
}

impl KeyCheck {
    pub fn is_valid(&self) -> bool {
        matches!(self, Self::Valid)
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            Self::Valid => None,
            Self::Invalid(message) => Some(message),
        }
    }
}

/// Checks `key` against the provider's models endpoint; the whole check (name
/// resolution included) takes at most [`VALIDATION_TIMEOUT`].
pub async fn check_key_live(
    http: &reqwest::Client,
    base_url: &str,
    auth_type: AuthType,
    key: &Secret,
    allow_private_upstreams: bool,
) -> KeyCheck {
    let check = check_once(http, base_url, auth_type, key, allow_private_upstreams);
    tokio::time::timeout(VALIDATION_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| timed_out())
}

fn timed_out() -> KeyCheck {
    KeyCheck::Invalid(format!(
        "the provider did not answer the key check within {} s",
        VALIDATION_TIMEOUT.as_secs()
    ))
}

async fn check_once(
    http: &reqwest::Client,
    base_url: &str,
    auth_type: AuthType,
    key: &Secret,
    allow_private_upstreams: bool,
) -> KeyCheck {
    let url = match models_url(base_url) {
        Some(url) => url,
        None => return KeyCheck::Invalid("the provider's base URL is not a valid URL".into()),
    };
    // security.md's SSRF rule, checked again right before the call (DNS answers change).
    let url = match check_upstream_url(url.as_str(), allow_private_upstreams).await {
        Ok(url) => url,
        Err(UrlRefused::Unresolvable(_)) => {
            return KeyCheck::Invalid("could not resolve the provider's host name".into());
        }
        Err(refused) => {
            return KeyCheck::Invalid(format!("the provider's URL is not allowed: {refused}"));
        }
    };
    let request = http.get(url).timeout(VALIDATION_TIMEOUT);
    let request = match auth_type {
        AuthType::Bearer => request.bearer_auth(key.expose()),
        AuthType::XApiKey => request
            .header("x-api-key", key.expose())
            .header("anthropic-version", "2023-06-01"),
        AuthType::XGoogApiKey => request.header("x-goog-api-key", key.expose()),
        AuthType::None | AuthType::AwsSigv4 => request,
    };
    match request.send().await {
        Ok(response) => classify_status(response.status().as_u16()),
        Err(error) if error.is_timeout() => timed_out(),
        // reqwest's message can name the URL (never the key, which is in a header).
        Err(error) if error.is_connect() => {
            tracing::warn!(error = %error.without_url(), "key check: provider unreachable");
            KeyCheck::Invalid("could not connect to the provider for the key check".into())
        }
        Err(error) => {
            tracing::warn!(error = %error.without_url(), "key check failed");
            KeyCheck::Invalid("the key check failed before the provider answered".into())
        }
    }
}

/// 2xx: valid; 401/403: refused; anything else: not validated, with the status.
pub fn classify_status(status: u16) -> KeyCheck {
    match status {
        200..=299 => KeyCheck::Valid,
        401 | 403 => KeyCheck::Invalid(format!("the provider rejected the key (HTTP {status})")),
        429 => KeyCheck::Invalid(
            "the provider is rate limiting the key check (HTTP 429); try again later".into(),
        ),
        other => KeyCheck::Invalid(format!(
            "the provider answered the key check with HTTP {other}"
        )),
    }
}

/// `{base_url}/models`, keeping any path of the base URL.
fn models_url(base_url: &str) -> Option<Url> {
    let trimmed = base_url.trim_end_matches('/');
    let url = Url::parse(&format!("{trimmed}/models")).ok()?;
    matches!(url.scheme(), "http" | "https").then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert!(classify_status(200).is_valid());
        assert!(classify_status(204).is_valid());
        assert!(classify_status(401).error().unwrap().contains("401"));
        assert!(classify_status(403).error().unwrap().contains("rejected"));
        assert!(classify_status(500).error().unwrap().contains("500"));
    }

    #[test]
    fn models_url_keeps_the_base_path() {
        assert_eq!(
            models_url("https://api.openai.com/v1").unwrap().as_str(),
            "https://api.openai.com/v1/models"
        );
        assert_eq!(
            models_url("https://x.example/v1beta/").unwrap().as_str(),
            "https://x.example/v1beta/models"
        );
        assert!(models_url("ftp://x.example").is_none());
        assert!(models_url("not a url").is_none());
    }
}
