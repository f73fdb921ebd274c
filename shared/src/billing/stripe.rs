//! Money in: Stripe Checkout top-ups.
//!
//! - [`create_checkout`]: a Checkout Session for an amount (`POST /v1/checkout/sessions`,
//!   form-encoded, `mode=payment`, one USD line item in cents), whose URL the user opens;
//!   the session (id, user, cents, `usd`) is recorded before the URL is answered.
//! - [`verify_signature`]: a webhook's `Stripe-Signature` header (`t=<unix>,v1=<hex>`,
//!   HMAC-SHA256 of `"<t>.<raw body>"` with the endpoint secret, 300 s tolerance, several
//!   `v1` entries allowed), compared in constant time.
//! - [`handle_event`]: only recorded sessions move money, to the account that recorded
//!   them. A paid session (`checkout.session.completed` paid, or
//!   `checkout.session.async_payment_succeeded`) credits once; `charge.refunded` and
//!   `charge.dispute.*` act on the payments of recorded sessions, matched by payment
//!   intent, and wait for the credit when they arrive first ([`settle`]). A session this
//!   Switchboard did not create, or in another currency than `usd`, is ignored with a WARN.
//!   Events are applied one at a time, each in one transaction. Amounts arrive in cents
//!   and become exact decimal dollars at the ledger.

mod error;
mod event;
mod settle;
mod store;

use std::time::{Duration, SystemTime};

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

pub use self::error::StripeError;
use self::event::{DisputeReport, Event, RefundReport, SessionReport};
use self::settle::Moved;
use self::store::Session;
use crate::config::BillingSettings;
use crate::db::DbPool;

/// How old a signed webhook may be.
pub const SIGNATURE_TOLERANCE: Duration = Duration::from_secs(300);
/// One call to Stripe's API waits at most this long.
const STRIPE_TIMEOUT: Duration = Duration::from_secs(15);

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

/// Creates a Checkout Session for `amount` USD, for `user_id`, and records it (only
/// recorded sessions are credited). If the record cannot be written, the URL is not
/// answered, so no one pays a session that would not be credited.
pub async fn create_checkout(
    http: &reqwest::Client,
    pool: &DbPool,
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
        // The session stays in USD: Adaptive Pricing would let the customer pay in another
        // currency, and such a session is not credited.
        .append_pair("adaptive_pricing[enabled]", "false")
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
    let session = match (body["id"].as_str(), body["url"].as_str()) {
        (Some(id), Some(url)) if !id.is_empty() && id.len() <= event::MAX_ID_LEN => {
            CheckoutSession {
                id: id.to_string(),
                url: url.to_string(),
            }
        }
        _ => {
            return Err(StripeError::Upstream(
                "the answer has no session id or url".into(),
            ));
        }
    };
    let client = pool.get().await?;
    store::record_session(&**client, &session.id, user_id, cents).await?;
    tracing::info!(session = %session.id, user = user_id, cents, "Stripe checkout created");
    Ok(session)
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
    /// Money added (a top-up, a won dispute given back), possibly with what waited for it
    /// netted in the same transaction.
    Credited,
    /// Money taken (a refund, a dispute).
    Debited,
    /// Kept, moving no money now: an unpaid or failed session, a refund or dispute whose
    /// session is not paid (or not known) yet.
    Recorded,
    /// Already known: a replay or a second event saying the same.
    Duplicate,
    /// Not an event that moves money here, or a session this Switchboard did not create,
    /// or another currency than `usd`.
    Ignored,
}

fn outcome(changed: bool, moved: Moved) -> EventOutcome {
    if moved.credited_cents > 0 {
        EventOutcome::Credited
    } else if moved.debited_cents > 0 {
        EventOutcome::Debited
    } else if changed {
        EventOutcome::Recorded
    } else {
        EventOutcome::Duplicate
    }
}

fn other_currency(currency: Option<&String>) -> Option<&str> {
    currency.map(String::as_str).filter(|c| *c != "usd")
}

/// Applies a verified event (see the module docs): one transaction, one event at a time.
pub async fn handle_event(pool: &DbPool, event: &Value) -> Result<EventOutcome, StripeError> {
    let event = event::parse(event)?;
    if event == Event::Other {
        return Ok(EventOutcome::Ignored);
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    store::lock_events(&*tx).await?;
    let outcome = match &event {
        Event::Session(report) => apply_session(&*tx, report).await?,
        Event::Refund(report) => apply_refund(&*tx, report).await?,
        Event::Dispute(report) => apply_dispute(&*tx, report).await?,
        Event::Other => EventOutcome::Ignored,
    };
    tx.commit().await?;
    Ok(outcome)
}

async fn apply_session(
    client: &impl GenericClient,
    report: &SessionReport,
) -> Result<EventOutcome, StripeError> {
    let id = report.session_id.as_str();
    let Some(before) = store::session(client, id).await? else {
        tracing::warn!(
            session = id,
            "a Stripe Checkout Session this Switchboard did not create (a Payment Link, another product); ignored, not credited"
        );
        return Ok(EventOutcome::Ignored);
    };
    if let Some(currency) = other_currency(report.currency.as_ref()) {
        tracing::warn!(
            session = id,
            currency,
            "a Stripe Checkout Session in another currency than usd; ignored, not credited"
        );
        return Ok(EventOutcome::Ignored);
    }
    let mut after = Session {
        status: before.status.merge(report.status),
        amount_total_cents: before.amount_total_cents.or(report.amount_total_cents),
        ..before.clone()
    };
    if after.payment_intent.is_none()
        && let Some(intent) = &report.payment_intent
    {
        match store::session_by_intent(client, intent).await? {
            Some(other) => tracing::warn!(
                session = id,
                other = %other.session_id,
                "a Stripe payment intent already belongs to another session; not linked"
            ),
            None => after.payment_intent = Some(intent.clone()),
        }
    }
    let changed = store::update_session(client, &before, &after).await?;
    if after.status == event::SessionStatus::Paid && after.amount_total_cents.is_none() {
        tracing::warn!(
            session = id,
            "a paid Stripe Checkout Session without amount_total; not credited"
        );
    }
    let moved = settle::settle(client, &after).await?;
    if moved.topped_up {
        let credited = after.credit_cents().unwrap_or_default();
        if after.amount_total_cents != Some(after.amount_cents) {
            tracing::warn!(
                session = id,
                recorded_cents = after.amount_cents,
                amount_total_cents = ?after.amount_total_cents,
                credited_cents = credited,
                "a Stripe Checkout Session's amount_total differs from the recorded amount; credited the smaller"
            );
        }
        tracing::info!(
            session = id,
            user = %after.user_id,
            credited_cents = credited,
            netted_cents = moved.debited_cents,
            "Stripe top-up"
        );
    }
    Ok(outcome(changed, moved))
}

/// Settles the session whose payment intent is `intent`, if one is recorded.
async fn settle_intent(client: &impl GenericClient, intent: &str) -> Result<Moved, StripeError> {
    match store::session_by_intent(client, intent).await? {
        Some(session) => settle::settle(client, &session).await,
        None => Ok(Moved::default()),
    }
}

async fn apply_refund(
    client: &impl GenericClient,
    report: &RefundReport,
) -> Result<EventOutcome, StripeError> {
    let charge = report.charge_id.as_str();
    if let Some(currency) = other_currency(report.currency.as_ref()) {
        tracing::warn!(
            charge,
            currency,
            "a Stripe refund in another currency than usd; ignored"
        );
        return Ok(EventOutcome::Ignored);
    }
    let Some(intent) = report.payment_intent.as_deref() else {
        tracing::warn!(charge, "a Stripe refund without a payment intent; ignored");
        return Ok(EventOutcome::Ignored);
    };
    let changed = store::record_refund(client, report, intent).await?;
    let moved = settle_intent(client, intent).await?;
    if moved.debited_cents > 0 {
        tracing::info!(
            charge,
            debited_cents = moved.debited_cents,
            "Stripe refund debited"
        );
    } else if changed {
        tracing::info!(
            charge,
            payment_intent = intent,
            "a Stripe refund kept: it debits only when a recorded session with this payment intent is credited"
        );
    }
    Ok(outcome(changed, moved))
}

async fn apply_dispute(
    client: &impl GenericClient,
    report: &DisputeReport,
) -> Result<EventOutcome, StripeError> {
    let dispute = report.dispute_id.as_str();
    if let Some(currency) = other_currency(report.currency.as_ref()) {
        tracing::warn!(
            dispute,
            currency,
            "a Stripe dispute in another currency than usd; ignored"
        );
        return Ok(EventOutcome::Ignored);
    }
    let Some(intent) = report.payment_intent.as_deref() else {
        tracing::warn!(
            dispute,
            "a Stripe dispute without a payment intent; ignored"
        );
        return Ok(EventOutcome::Ignored);
    };
    let changed = store::record_dispute(client, report, intent).await?;
    let moved = settle_intent(client, intent).await?;
    if moved.any() {
        tracing::info!(
            dispute,
            status = %report.status,
            debited_cents = moved.debited_cents,
            credited_cents = moved.credited_cents,
            "Stripe dispute applied"
        );
    } else if changed {
        tracing::info!(
            dispute,
            status = %report.status,
            payment_intent = intent,
            "a Stripe dispute kept: it moves money only for a credited recorded session"
        );
    }
    Ok(outcome(changed, moved))
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
