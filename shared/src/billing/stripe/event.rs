//! A verified Stripe event, read into what the handler acts on: a Checkout Session's
//! progress, a charge's cumulative refund, a dispute's state. Other event types are
//! [`Event::Other`]. Reading is strict about what must be there (ids, amounts) and lenient
//! about what Stripe always sends but a handler can do without (a currency is checked when
//! present; recorded sessions are `usd` anyway).

use serde_json::Value;

use super::error::StripeError;

/// Stripe ids are far shorter; the cap keeps every idempotency key within the ledger's
/// 200 characters.
pub(super) const MAX_ID_LEN: usize = 150;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Event {
    Session(SessionReport),
    Refund(RefundReport),
    Dispute(DisputeReport),
    /// A type that moves no money here.
    Other,
}

/// Where a Checkout Session's payment stands, as one event tells it. Ordered: a session
/// only moves forward (see [`SessionStatus::merge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum SessionStatus {
    Open,
    /// Completed, paid with a delayed method (bank debit) whose outcome comes later.
    Processing,
    Failed,
    Paid,
}

impl SessionStatus {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Processing => "processing",
            Self::Failed => "failed",
            Self::Paid => "paid",
        }
    }

    pub(super) fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "open" => Self::Open,
            "processing" => Self::Processing,
            "failed" => Self::Failed,
            "paid" => Self::Paid,
            _ => return None,
        })
    }

    /// The state after `self` learns `reported`: paid is final (the money arrived); a
    /// failure is final but for a payment that then arrives. So replays and late or
    /// reordered events never move a session back.
    pub(super) fn merge(self, reported: Self) -> Self {
        self.max(reported)
    }
}

/// `checkout.session.completed`, `…async_payment_succeeded`, `…async_payment_failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SessionReport {
    pub session_id: String,
    pub status: SessionStatus,
    /// Lower case; `None` when the event has none.
    pub currency: Option<String>,
    pub amount_total_cents: Option<i64>,
    pub payment_intent: Option<String>,
}

/// `charge.refunded`: `amount_refunded` is the charge's cumulative refunded amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RefundReport {
    pub charge_id: String,
    pub payment_intent: Option<String>,
    pub amount_refunded_cents: i64,
    pub currency: Option<String>,
}

/// `charge.dispute.*`: the dispute object as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DisputeReport {
    pub dispute_id: String,
    pub payment_intent: Option<String>,
    pub charge_id: Option<String>,
    pub amount_cents: i64,
    pub status: String,
    pub currency: Option<String>,
}

/// A Stripe id: a string, or an expanded object's `id`.
fn id(value: &Value) -> Result<Option<String>, StripeError> {
    let text = match value {
        Value::Null => return Ok(None),
        Value::String(s) => s.as_str(),
        Value::Object(o) => match o.get("id") {
            Some(Value::String(s)) => s.as_str(),
            _ => return Err(StripeError::MalformedEvent),
        },
        _ => return Err(StripeError::MalformedEvent),
    };
    if text.is_empty() || text.len() > MAX_ID_LEN || text.chars().any(char::is_control) {
        return Err(StripeError::MalformedEvent);
    }
    Ok(Some(text.to_string()))
}

fn required_id(value: &Value) -> Result<String, StripeError> {
    id(value)?.ok_or(StripeError::MalformedEvent)
}

/// A whole, non-negative number of cents.
fn cents(value: &Value) -> Option<i64> {
    value.as_i64().filter(|c| *c >= 0)
}

fn currency(value: &Value) -> Option<String> {
    value.as_str().map(str::to_ascii_lowercase)
}

/// Reads a verified event.
pub(super) fn parse(event: &Value) -> Result<Event, StripeError> {
    let object = &event["data"]["object"];
    let Some(kind) = event["type"].as_str() else {
        return Err(StripeError::MalformedEvent);
    };
    let paid = object["payment_status"].as_str() == Some("paid");
    let status = match kind {
        "checkout.session.completed" if paid => SessionStatus::Paid,
        "checkout.session.completed" => SessionStatus::Processing,
        // Stripe says `paid` here; a payment status that says otherwise is believed.
        "checkout.session.async_payment_succeeded"
            if paid || object["payment_status"].is_null() =>
        {
            SessionStatus::Paid
        }
        "checkout.session.async_payment_succeeded" => SessionStatus::Processing,
        "checkout.session.async_payment_failed" => SessionStatus::Failed,
        "charge.refunded" => {
            return Ok(Event::Refund(RefundReport {
                charge_id: required_id(&object["id"])?,
                payment_intent: id(&object["payment_intent"])?,
                amount_refunded_cents: cents(&object["amount_refunded"])
                    .ok_or(StripeError::MalformedEvent)?,
                currency: currency(&object["currency"]),
            }));
        }
        dispute if dispute.starts_with("charge.dispute.") => {
            let status = match &object["status"] {
                Value::Null => "needs_response",
                Value::String(s) if !s.is_empty() && s.len() <= 64 => s.as_str(),
                _ => return Err(StripeError::MalformedEvent),
            };
            return Ok(Event::Dispute(DisputeReport {
                dispute_id: required_id(&object["id"])?,
                payment_intent: id(&object["payment_intent"])?,
                charge_id: id(&object["charge"])?,
                amount_cents: cents(&object["amount"]).ok_or(StripeError::MalformedEvent)?,
                status: status.to_string(),
                currency: currency(&object["currency"]),
            }));
        }
        _ => return Ok(Event::Other),
    };
    Ok(Event::Session(SessionReport {
        session_id: required_id(&object["id"])?,
        status,
        currency: currency(&object["currency"]),
        amount_total_cents: cents(&object["amount_total"]),
        payment_intent: id(&object["payment_intent"])?,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn session(kind: &str, object: Value) -> Result<Event, StripeError> {
        parse(&json!({"type": kind, "data": {"object": object}}))
    }

    #[test]
    fn session_events_say_where_the_payment_stands() {
        let paid = session(
            "checkout.session.completed",
            json!({"id": "cs_1", "payment_status": "paid", "currency": "USD",
                   "amount_total": 2000, "payment_intent": "pi_1"}),
        )
        .unwrap();
        assert_eq!(
            paid,
            Event::Session(SessionReport {
                session_id: "cs_1".into(),
                status: SessionStatus::Paid,
                currency: Some("usd".into()),
                amount_total_cents: Some(2000),
                payment_intent: Some("pi_1".into()),
            })
        );
        let status = |kind: &str, object: Value| match session(kind, object).unwrap() {
            Event::Session(report) => report.status,
            other => panic!("{other:?}"),
        };
        let unpaid = json!({"id": "cs_1", "payment_status": "unpaid", "payment_intent": null});
        assert_eq!(
            status("checkout.session.completed", unpaid.clone()),
            SessionStatus::Processing
        );
        assert_eq!(
            status(
                "checkout.session.async_payment_succeeded",
                json!({"id": "cs_1"})
            ),
            SessionStatus::Paid
        );
        assert_eq!(
            status("checkout.session.async_payment_succeeded", unpaid.clone()),
            SessionStatus::Processing
        );
        assert_eq!(
            status("checkout.session.async_payment_failed", unpaid),
            SessionStatus::Failed
        );
        // An expanded payment intent is read by its id.
        let expanded = session(
            "checkout.session.completed",
            json!({"id": "cs_1", "payment_intent": {"id": "pi_9", "object": "payment_intent"}}),
        );
        assert!(
            matches!(expanded, Ok(Event::Session(SessionReport { payment_intent: Some(pi), .. })) if pi == "pi_9")
        );
    }

    #[test]
    fn a_session_only_moves_forward() {
        use SessionStatus::*;
        assert_eq!(Open.merge(Processing), Processing);
        assert_eq!(Processing.merge(Paid), Paid);
        assert_eq!(Paid.merge(Processing), Paid);
        assert_eq!(Paid.merge(Failed), Paid);
        assert_eq!(Failed.merge(Processing), Failed);
        assert_eq!(Failed.merge(Paid), Paid);
        for status in [Open, Processing, Failed, Paid] {
            assert_eq!(SessionStatus::parse(status.as_str()), Some(status));
        }
    }

    #[test]
    fn refunds_and_disputes_need_their_ids_and_amounts() {
        let refund = parse(&json!({"type": "charge.refunded", "data": {"object": {
            "id": "ch_1", "amount_refunded": 500, "payment_intent": "pi_1", "currency": "usd"}}}));
        assert!(matches!(
            refund,
            Ok(Event::Refund(RefundReport {
                amount_refunded_cents: 500,
                ..
            }))
        ));
        let dispute = parse(
            &json!({"type": "charge.dispute.created", "data": {"object": {
            "id": "dp_1", "amount": 2000, "payment_intent": "pi_1", "charge": "ch_1"}}}),
        );
        match dispute.unwrap() {
            Event::Dispute(d) => {
                assert_eq!(d.status, "needs_response");
                assert_eq!(d.charge_id.as_deref(), Some("ch_1"));
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            json!({"type": "charge.refunded", "data": {"object": {"id": "ch_1"}}}),
            json!({"type": "charge.refunded", "data": {"object": {"id": "ch_1", "amount_refunded": -1}}}),
            json!({"type": "charge.dispute.closed", "data": {"object": {"amount": 5}}}),
            json!({"type": "checkout.session.completed", "data": {"object": {"id": 7}}}),
            json!({"type": "checkout.session.completed", "data": {"object": {"id": "x".repeat(151)}}}),
            json!({"data": {}}),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse(&json!({"type": "customer.created", "data": {"object": {}}})).unwrap(),
            Event::Other
        );
    }
}
