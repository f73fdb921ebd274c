//! Lago's `POST /api/v1/events/batch`: one call per batch of events.

use std::time::Duration;

use serde_json::{Value, json};

use crate::secret::Secret;

/// One call's longest wait; a slower Lago is a transient failure, retried later.
pub const LAGO_TIMEOUT: Duration = Duration::from_secs(10);
/// Lago's limit of events per batch call.
pub const MAX_BATCH: usize = 100;

/// How a batch call ended, when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LagoFailure {
    /// Lago is unavailable (5xx, 429, a timeout, no connection): try again later.
    Transient(String),
    /// Lago refused the batch (4xx): something in it is wrong; splitting finds what.
    Rejected { status: u16, message: String },
}

/// Where and how to call Lago.
pub struct LagoClient<'a> {
    pub http: &'a reqwest::Client,
    /// The API's base URL, without a trailing slash.
    pub api_url: &'a str,
    pub api_key: &'a Secret,
}

impl LagoClient<'_> {
    /// Sends `events` (each already in Lago's event shape) in one call.
    pub async fn send(&self, events: &[Value]) -> Result<(), LagoFailure> {
        let url = format!("{}/api/v1/events/batch", self.api_url);
        let response = self
            .http
            .post(&url)
            .bearer_auth(self.api_key.expose())
            .timeout(LAGO_TIMEOUT)
            .json(&json!({ "events": events }))
            .send()
            .await
            .map_err(|e| {
                LagoFailure::Transient(if e.is_timeout() {
                    format!("Lago did not answer within {} s", LAGO_TIMEOUT.as_secs())
                } else {
                    "Lago could not be reached".to_string()
                })
            })?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        let message = describe(status, &body, self.api_key);
        if status == 429 || status >= 500 || status == 408 {
            Err(LagoFailure::Transient(message))
        } else {
            Err(LagoFailure::Rejected { status, message })
        }
    }
}

/// `HTTP 422: <Lago's message>`, short, and never containing the key.
fn describe(status: u16, body: &str, key: &Secret) -> String {
    let detail = serde_json::from_str::<Value>(body)
        .ok()
        .map(|v| {
            let error = v.get("error").and_then(Value::as_str).unwrap_or_default();
            let details = v
                .get("error_details")
                .map(Value::to_string)
                .unwrap_or_default();
            format!("{error} {details}").trim().to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| body.chars().take(200).collect());
    let detail = detail.replace(key.expose(), "[redacted]");
    let detail: String = detail.chars().take(300).collect();
    if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lago_messages_are_short_and_never_hold_the_key() {
        let key = Secret::new("lago-key-123");
        assert_eq!(
            describe(
                422,
                r#"{"status":422,"error":"Unprocessable Entity","error_details":{"0":{"code":["metric_not_found"]}}}"#,
                &key
            ),
            r#"HTTP 422: Unprocessable Entity {"0":{"code":["metric_not_found"]}}"#
        );
        assert_eq!(
            describe(401, "bad key lago-key-123", &key),
            "HTTP 401: bad key [redacted]"
        );
        assert_eq!(describe(500, "", &key), "HTTP 500");
    }
}
