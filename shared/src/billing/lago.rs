//! Lago's `POST /api/v1/events/batch`: one call per batch of events, and what its answer
//! means for each event.
//!
//! Lago (lago-api's `Events::CreateBatchService`) validates every event, then stores the
//! batch in one transaction: any refused event, a duplicate `transaction_id` included,
//! stores nothing and answers 422 with `error_details` keyed by the event's index in the
//! batch, e.g. `{"3": {"transaction_id": ["value_already_exist"]}}`.

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
    /// Lago is unavailable (5xx, 429, 408, a timeout, no connection): try again later.
    Unavailable(String),
    /// Lago refused the call itself (401, 403, 404, or another 4xx that is not about the
    /// events): the key, the URL or Lago's setup is wrong, and no event is at fault.
    Configuration { status: u16, message: String },
    /// Lago refused events of the batch (422, or 413 for its size). `events` names them
    /// by index when Lago's answer does; empty when it does not.
    Rejected {
        status: u16,
        message: String,
        events: Vec<(usize, EventRefusal)>,
    },
}

/// Why Lago refused one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventRefusal {
    /// Lago already holds an event with this `transaction_id`: an earlier call delivered
    /// it (its answer was lost), so it counts as delivered.
    AlreadyExists,
    /// Lago refused the event itself (`HTTP 422: <its errors>`).
    Invalid(String),
}

/// Where and how to call Lago.
pub struct LagoClient<'a> {
    pub http: &'a reqwest::Client,
    /// The API's base URL, without a trailing slash.
    pub api_url: &'a str,
    pub api_key: &'a Secret,
}

impl LagoClient<'_> {
    /// Sends `events` (each already in Lago's event shape) in one call, waiting at most
    /// `timeout` (at most [`LAGO_TIMEOUT`]).
    pub async fn send(&self, events: &[Value], timeout: Duration) -> Result<(), LagoFailure> {
        let timeout = timeout.min(LAGO_TIMEOUT);
        let url = format!("{}/api/v1/events/batch", self.api_url);
        let response = self
            .http
            .post(&url)
            .bearer_auth(self.api_key.expose())
            .timeout(timeout)
            .json(&json!({ "events": events }))
            .send()
            .await
            .map_err(|e| {
                LagoFailure::Unavailable(if e.is_timeout() {
                    format!("Lago did not answer within {} ms", timeout.as_millis())
                } else {
                    "Lago could not be reached".to_string()
                })
            })?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(classify(status, &body, events.len(), self.api_key))
    }
}

/// What a non-2xx answer means.
fn classify(status: u16, body: &str, batch_len: usize, key: &Secret) -> LagoFailure {
    let message = describe(status, body, key);
    match status {
        408 | 429 | 500.. => LagoFailure::Unavailable(message),
        413 | 422 => LagoFailure::Rejected {
            status,
            events: refusals(status, body, batch_len, key),
            message,
        },
        _ => LagoFailure::Configuration { status, message },
    }
}

/// The events a 422 names (`error_details` keyed by index; a batch of one may also be
/// answered in the single-event shape, without an index). Empty when the answer names
/// none, or names an index outside the batch (then the answer is not understood).
fn refusals(status: u16, body: &str, batch_len: usize, key: &Secret) -> Vec<(usize, EventRefusal)> {
    let Ok(body) = serde_json::from_str::<Value>(body) else {
        return Vec::new();
    };
    let Some(details) = body.get("error_details").and_then(Value::as_object) else {
        return Vec::new();
    };
    if details.is_empty() {
        return Vec::new();
    }
    let indexed: Option<Vec<(usize, &Value)>> = details
        .iter()
        .map(|(index, errors)| {
            let index = index.parse::<usize>().ok().filter(|i| *i < batch_len)?;
            Some((index, errors))
        })
        .collect();
    match indexed {
        Some(events) => events
            .into_iter()
            .map(|(index, errors)| (index, refusal(status, errors, key)))
            .collect(),
        None if batch_len == 1 => vec![(0, refusal(status, &Value::Object(details.clone()), key))],
        None => Vec::new(),
    }
}

/// One event's errors: a `transaction_id` that already exists means Lago holds it.
fn refusal(status: u16, errors: &Value, key: &Secret) -> EventRefusal {
    let exists = errors
        .get("transaction_id")
        .and_then(Value::as_array)
        .is_some_and(|codes| {
            codes.iter().any(|code| {
                // The second is older Lago's code for the same check (the id is never
                // missing here: every event carries one).
                matches!(
                    code.as_str(),
                    Some("value_already_exist" | "value_is_missing_or_already_exists")
                )
            })
        });
    if exists {
        EventRefusal::AlreadyExists
    } else {
        EventRefusal::Invalid(short(status, &errors.to_string(), key))
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
    short(status, &detail, key)
}

fn short(status: u16, detail: &str, key: &Secret) -> String {
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

    #[test]
    fn statuses_are_sorted_by_who_is_at_fault() {
        let key = Secret::new("k");
        for status in [401, 403, 404, 400, 405] {
            assert!(
                matches!(classify(status, "", 3, &key), LagoFailure::Configuration { status: s, .. } if s == status),
                "{status}"
            );
        }
        for status in [408, 429, 500, 502, 503] {
            assert!(matches!(
                classify(status, "", 3, &key),
                LagoFailure::Unavailable(_)
            ));
        }
        assert!(matches!(
            classify(413, "", 3, &key),
            LagoFailure::Rejected { ref events, .. } if events.is_empty()
        ));
    }

    #[test]
    fn a_422_names_its_events_and_tells_a_duplicate_apart() {
        let key = Secret::new("k");
        // Lago's answer for a batch whose event 2 already exists and event 0 is invalid.
        let body = r#"{"status":422,"error":"Unprocessable Entity","code":"validation_errors",
            "error_details":{"0":{"code":["value_is_mandatory"]},"2":{"transaction_id":["value_already_exist"]}},
            "error_extra":{}}"#;
        let LagoFailure::Rejected { mut events, .. } = classify(422, body, 3, &key) else {
            panic!("a 422 is a rejection");
        };
        events.sort_by_key(|(index, _)| *index);
        assert_eq!(
            events,
            vec![
                (
                    0,
                    EventRefusal::Invalid(r#"HTTP 422: {"code":["value_is_mandatory"]}"#.into())
                ),
                (2, EventRefusal::AlreadyExists),
            ]
        );
        // The single-event shape, for a batch of one.
        let single = r#"{"status":422,"error":"Unprocessable Entity","code":"validation_errors",
            "error_details":{"transaction_id":["value_already_exist"]}}"#;
        assert!(matches!(
            classify(422, single, 1, &key),
            LagoFailure::Rejected { ref events, .. } if events == &[(0, EventRefusal::AlreadyExists)]
        ));
        // An index outside the batch, or no details: not understood, no event named.
        for body in [
            r#"{"error_details":{"7":{"code":["x"]}}}"#,
            r#"{"error":"Unprocessable Entity"}"#,
            "not json",
        ] {
            assert!(matches!(
                classify(422, body, 3, &key),
                LagoFailure::Rejected { ref events, .. } if events.is_empty()
            ));
        }
    }
}
