//! The types one upstream call is made of, shared by the client and the three format
//! adapters (which the client dispatches to): where to call with which key, the
//! translated request, and what an adapter needs to read the answer.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::error;
use crate::catalog::{ApiFormat, AuthType};
use crate::secret::Secret;

/// Where and how to call: one offer (provider + model) of the candidate plan.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    pub api_format: ApiFormat,
    /// The provider's base URL including its version segment, as in the catalog
    /// (`https://api.openai.com/v1`, `https://api.anthropic.com/v1`,
    /// `https://generativelanguage.googleapis.com/v1beta`).
    pub base_url: String,
    pub auth_type: AuthType,
    /// The upstream's own model id (replaces the client's `model`).
    pub model_id: String,
    /// System or BYOK key; `None` only for `auth_type = none`.
    pub api_key: Option<Secret>,
    /// `max_tokens` to send when the client gave none and the format requires one
    /// (Anthropic): the model's max output from the catalog. Falls back to 4096.
    pub default_max_tokens: Option<u32>,
}

/// What an adapter needs to read an answer.
#[derive(Debug, Clone)]
pub(crate) struct ResponseContext {
    pub model: String,
    pub created: u64,
    pub prompt_estimate: u64,
    pub key: Option<Secret>,
}

impl ResponseContext {
    pub fn sanitize(&self, text: &str) -> String {
        error::sanitize(text, self.key.as_ref())
    }
}

/// A translated upstream request.
#[derive(Debug)]
pub(crate) struct UpstreamCall {
    pub url: String,
    pub body: Value,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// `base_url` joined with `path` (exactly one slash between them).
pub(crate) fn join_url(base_url: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base_url.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_url_has_one_slash() {
        assert_eq!(
            join_url("https://a/v1/", "/messages"),
            "https://a/v1/messages"
        );
        assert_eq!(
            join_url("https://a/v1", "messages"),
            "https://a/v1/messages"
        );
    }
}
