//! Money in: Stripe Checkout top-ups.
//!
//! - [`create_checkout`]: a Checkout Session for an amount (`POST /v1/checkout/sessions`,
//!   form-encoded, `mode=payment`, one USD line item in cents), whose URL the user opens.
//! - [`verify_signature`]: a webhook's `Stripe-Signature` header (`t=<unix>,v1=<hex>`,
//!   HMAC-SHA256 of `"<t>.<raw body>"` with the endpoint secret, 300 s tolerance, several
//!   `v1` entries allowed), compared in constant time.
//! - [`handle_event`]: `checkout.session.completed` with `payment_status: "paid"` credits
//!   the account once per session id; `charge.refunded` debits what was refunded since
//!   the last refund event of that charge, once per refunded amount. Amounts arrive in
//!   cents and become exact decimal dollars.

use std::time::{Duration, SystemTime};

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::config::BillingSettings;
use crate::db::{DbError, DbPool};
use crate::ledger::{self, CreditKind, LedgerError};

/// How old a signed webhook may be.
pub const SIGNATURE_TOLERANCE: Duration = Duration::from_secs(300);
/// One call to Stripe's API waits at most this long.
const STRIPE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error(
        "Stripe is not configured: set SWITCHBOARD_STRIPE_API_KEY, SWITCHBOARD_STRIPE_SUCCESS_URL and SWITCHBOARD_STRIPE_CANCEL_URL"
    )]
    NotConfigured,
    #[error("{0}")]
    InvalidAmount(String),
    /// Stripe could not be reached or refused the call (the message never holds a key).
    #[error("Stripe: {0}")]
    Upstream(String),
    #[error("the webhook signature is {0}")]
    BadSignature(&'static str),
    #[error("the webhook body is not a Stripe event")]
    MalformedEvent,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<LedgerError> for StripeError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::Db(db) => Self::Db(db),
            other => Self::Db(DbError::Corrupt(other.to_string())),
        }
    }
}

impl From<tokio_postgres::Error> for StripeError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Db(DbError::from(error))
    }
}

impl From<deadpool_postgres::PoolError> for StripeError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::Db(DbError::from(error))
    }
}

/// `201 {"id", "url"}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckoutSession {
    /// Stripe's Checkout Session id (`cs_…`).
    pub id: String,
    /// Where the user pays.
    pub url: String,
}

/// Checks the amount against the configured range; 2 decimals at most (cents).
pub fn checkout_amount(settings: &BillingSettings, amount: Decimal) -> Result<i64, StripeError> {
    let cents = amount * Decimal::from(100);
    if cents.fract() != Decimal::ZERO {
        return Err(StripeError::InvalidAmount(
            "amount_usd has at most 2 decimal places (cents)".into(),
        ));
    }
    if amount < settings.stripe_min_usd || amount > settings.stripe_max_usd {
        return Err(StripeError::InvalidAmount(format!(
            "amount_usd must be between {} and {}",
            settings.stripe_min_usd, settings.stripe_max_usd
        )));
    }
    rust_decimal::prelude::ToPrimitive::to_i64(&cents.trunc())
        .ok_or_else(|| StripeError::InvalidAmount("amount_usd is too large".into()))
}

/// Creates a Checkout Session for `amount` USD, for `user_id`.
pub async fn create_checkout(
    http: &reqwest::Client,
    settings: &BillingSettings,
    user_id: &str,
    amount: Decimal,
) -> Result<CheckoutSession, StripeError> {
    let (Some(key), Some(success), Some(cancel)) = (
        &settings.stripe_api_key,
        &settings.stripe_success_url,
        &settings.stripe_cancel_url,
    ) else {
        return Err(StripeError::NotConfigured);
    };
    let cents = checkout_amount(settings, amount)?;
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("mode", "payment")
        .append_pair("client_reference_id", user_id)
        .append_pair("metadata[user_id]", user_id)
        .append_pair("line_items[0][quantity]", "1")
        .append_pair("line_items[0][price_data][currency]", "usd")
        .append_pair("line_items[0][price_data][unit_amount]", &cents.to_string())
        .append_pair(
            "line_items[0][price_data][product_data][name]",
            "Switchboard credits",
        )
        .append_pair("success_url", success)
        .append_pair("cancel_url", cancel)
        .finish();
    let response = http
        .post(format!("{}/v1/checkout/sessions", settings.stripe_api_url))
        .bearer_auth(key.expose())
        .header("content-type", "application/x-www-form-urlencoded")
        .timeout(STRIPE_TIMEOUT)
        .body(form)
        .send()
        .await
        .map_err(|e| {
            StripeError::Upstream(if e.is_timeout() {
                "no answer in time".into()
            } else {
                "could not be reached".into()
            })
        })?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or("the call was refused")
            .replace(key.expose(), "[redacted]");
        return Err(StripeError::Upstream(format!(
            "HTTP {}: {}",
            status.as_u16(),
            message.chars().take(200).collect::<String>()
        )));
    }
    match (body["id"].as_str(), body["url"].as_str()) {
        (Some(id), Some(url)) => Ok(CheckoutSession {
            id: id.to_string(),
            url: url.to_string(),
        }),
        _ => Err(StripeError::Upstream(
            "the answer has no session id or url".into(),
        )),
    }
}

/// Checks `Stripe-Signature` for `body` at `now`.
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    now: SystemTime,
) -> Result<(), StripeError> {
    super::signature::verify(header, body, secret, now, SIGNATURE_TOLERANCE)
        .map_err(StripeError::BadSignature)
}

/// `t=<timestamp>,v1=<signature>` for `body`: how Stripe signs (and how Switchboard signs
/// its own webhooks), for tests and tools.
pub use super::signature::sign;

/// What a verified event did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventOutcome {
    Credited,
    Debited,
    /// Already applied (a replay or a second event for the same payment).
    Duplicate,
    /// Not an event that moves money (or an unpaid session, an unknown user).
    Ignored,
}

fn cents(value: &Value) -> Option<Decimal> {
    value
        .as_i64()
        .filter(|c| *c > 0)
        .map(|c| Decimal::new(c, 2))
}

/// Applies a verified event (see the module docs).
pub async fn handle_event(pool: &DbPool, event: &Value) -> Result<EventOutcome, StripeError> {
    let object = &event["data"]["object"];
    match event["type"].as_str() {
        Some("checkout.session.completed") => {
            if object["payment_status"].as_str() != Some("paid") {
                return Ok(EventOutcome::Ignored);
            }
            let (Some(session), Some(amount)) =
                (object["id"].as_str(), cents(&object["amount_total"]))
            else {
                return Err(StripeError::MalformedEvent);
            };
            let Some(user) = object["client_reference_id"]
                .as_str()
                .or_else(|| object["metadata"]["user_id"].as_str())
            else {
                tracing::warn!(session, "a paid Stripe session names no user; not credited");
                return Ok(EventOutcome::Ignored);
            };
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let credited = match ledger::credit(
                &*tx,
                user,
                amount,
                CreditKind::TopUp,
                &format!("stripe:checkout:{session}"),
                Some(&format!("Stripe checkout {session}")),
                Some("stripe"),
            )
            .await
            {
                Ok(credited) => credited,
                Err(LedgerError::NoAccount) => {
                    tracing::warn!(
                        session,
                        "a paid Stripe session names an unknown user; not credited"
                    );
                    return Ok(EventOutcome::Ignored);
                }
                Err(other) => return Err(other.into()),
            };
            tx.execute(
                "INSERT INTO stripe_payments (session_id, payment_intent, user_id, amount_usd)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&session, &object["payment_intent"].as_str(), &user, &amount],
            )
            .await?;
            tx.commit().await?;
            tracing::info!(session, user, %amount, duplicate = credited.duplicate, "Stripe top-up");
            Ok(if credited.duplicate {
                EventOutcome::Duplicate
            } else {
                EventOutcome::Credited
            })
        }
        Some("charge.refunded") => {
            let (Some(charge), Some(refunded)) =
                (object["id"].as_str(), cents(&object["amount_refunded"]))
            else {
                return Err(StripeError::MalformedEvent);
            };
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let user: Option<String> = match object["payment_intent"].as_str() {
                Some(intent) => tx
                    .query_opt(
                        "SELECT user_id FROM stripe_payments WHERE payment_intent = $1",
                        &[&intent],
                    )
                    .await?
                    .map(|r| r.get(0)),
                None => None,
            }
            .or_else(|| object["metadata"]["user_id"].as_str().map(str::to_string));
            let Some(user) = user else {
                tracing::warn!(
                    charge,
                    "a Stripe refund for an unknown payment; not debited"
                );
                return Ok(EventOutcome::Ignored);
            };
            // One refund of a charge at a time: what was debited before is read under lock.
            let prefix = format!("stripe:refund:{charge}:");
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&prefix])
                .await?;
            let before: Decimal = tx
                .query_one(
                    "SELECT COALESCE(-sum(amount_usd), 0) FROM ledger_entries
                     WHERE user_id = $1 AND idempotency_key LIKE $2 || '%'",
                    &[&user, &prefix],
                )
                .await?
                .get(0);
            let delta = refunded - before;
            if delta <= Decimal::ZERO {
                return Ok(EventOutcome::Duplicate);
            }
            let debited = ledger::credit(
                &*tx,
                &user,
                -delta,
                CreditKind::Adjustment,
                &format!("{prefix}{}", refunded.normalize()),
                Some(&format!("Stripe refund of charge {charge}")),
                Some("stripe"),
            )
            .await?;
            tx.commit().await?;
            tracing::info!(charge, user, %delta, "Stripe refund debited");
            Ok(if debited.duplicate {
                EventOutcome::Duplicate
            } else {
                EventOutcome::Debited
            })
        }
        Some(_) => Ok(EventOutcome::Ignored),
        None => Err(StripeError::MalformedEvent),
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn signatures_verify_as_stripe_signs_them() {
        let body = br#"{"id":"evt_1","type":"checkout.session.completed"}"#;
        let now = UNIX_EPOCH + Duration::from_secs(1_764_720_000);
        let header = sign(body, "whsec_test", 1_764_720_000);
        assert!(verify_signature(Some(&header), body, "whsec_test", now).is_ok());
        // Several v1 entries (a secret being rolled): one valid one is enough.
        let rolled = format!("{header},v1={}", "00".repeat(32));
        assert!(verify_signature(Some(&rolled), body, "whsec_test", now).is_ok());
        for (header, why) in [
            (None, "missing"),
            (Some("v1=abc".to_string()), "no timestamp"),
            (Some(sign(body, "other", 1_764_720_000)), "wrong secret"),
            (
                Some(sign(b"tampered", "whsec_test", 1_764_720_000)),
                "other body",
            ),
            (Some(sign(body, "whsec_test", 1_764_720_000 - 301)), "stale"),
        ] {
            assert!(
                verify_signature(header.as_deref(), body, "whsec_test", now).is_err(),
                "{why}"
            );
        }
    }

    #[test]
    fn amounts_are_whole_cents_within_the_range() {
        let settings = BillingSettings::default();
        assert_eq!(
            checkout_amount(&settings, Decimal::new(2000, 2)).unwrap(),
            2000
        );
        assert_eq!(checkout_amount(&settings, Decimal::new(5, 0)).unwrap(), 500);
        assert!(checkout_amount(&settings, Decimal::new(20001, 3)).is_err());
        assert!(checkout_amount(&settings, Decimal::new(4, 0)).is_err());
        assert!(checkout_amount(&settings, Decimal::new(1001, 0)).is_err());
    }
}
