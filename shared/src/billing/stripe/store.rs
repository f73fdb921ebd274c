//! The Stripe tables (`migrations/0021_stripe_sessions.sql`): recorded Checkout Sessions,
//! refunds per charge and disputes, each with what the ledger already holds of it. Plain
//! reads and writes; the rules are in the callers.

use tokio_postgres::{GenericClient, Row};

use super::event::{DisputeReport, RefundReport, SessionStatus};
use crate::db::DbError;

/// Arbitrary constant naming the lock under which Stripe events are applied.
const EVENTS_LOCK_KEY: i64 = 0x5354_5249_5045;

/// Applies Stripe events one at a time, until the transaction ends. Stripe sends few
/// events; one at a time, a duplicate delivered concurrently sees what the first did, and
/// a refund never slips between a session's credit and the read of its refunds.
pub(super) async fn lock_events(client: &impl GenericClient) -> Result<(), DbError> {
    client
        .execute("SELECT pg_advisory_xact_lock($1)", &[&EVENTS_LOCK_KEY])
        .await?;
    Ok(())
}

/// Records a session the checkout created.
pub(super) async fn record_session(
    client: &impl GenericClient,
    session_id: &str,
    user_id: &str,
    amount_cents: i64,
) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO stripe_checkout_sessions (session_id, user_id, amount_cents, currency)
             VALUES ($1, $2, $3, 'usd')",
            &[&session_id, &user_id, &amount_cents],
        )
        .await?;
    Ok(())
}

/// A recorded session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Session {
    pub session_id: String,
    pub user_id: String,
    pub amount_cents: i64,
    pub currency: String,
    pub status: SessionStatus,
    pub amount_total_cents: Option<i64>,
    pub payment_intent: Option<String>,
    pub credited_cents: Option<i64>,
}

impl Session {
    /// What a paid session credits: the recorded amount, or less if Stripe reports less
    /// (never more than recorded, never more than paid).
    pub fn credit_cents(&self) -> Option<i64> {
        match (self.status, self.amount_total_cents) {
            (SessionStatus::Paid, Some(total)) => Some(total.min(self.amount_cents)),
            _ => None,
        }
    }
}

const SESSION_COLUMNS: &str = "session_id, user_id, amount_cents, currency, status,
    amount_total_cents, payment_intent, credited_cents";

fn session_row(row: &Row) -> Result<Session, DbError> {
    let status: String = row.get(4);
    Ok(Session {
        session_id: row.get(0),
        user_id: row.get(1),
        amount_cents: row.get(2),
        currency: row.get(3),
        status: SessionStatus::parse(&status).ok_or_else(|| {
            DbError::Corrupt(format!("stripe_checkout_sessions.status `{status}`"))
        })?,
        amount_total_cents: row.get(5),
        payment_intent: row.get(6),
        credited_cents: row.get(7),
    })
}

pub(super) async fn session(
    client: &impl GenericClient,
    session_id: &str,
) -> Result<Option<Session>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {SESSION_COLUMNS} FROM stripe_checkout_sessions WHERE session_id = $1"
            ),
            &[&session_id],
        )
        .await?;
    row.as_ref().map(session_row).transpose()
}

pub(super) async fn session_by_intent(
    client: &impl GenericClient,
    payment_intent: &str,
) -> Result<Option<Session>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {SESSION_COLUMNS} FROM stripe_checkout_sessions WHERE payment_intent = $1"
            ),
            &[&payment_intent],
        )
        .await?;
    row.as_ref().map(session_row).transpose()
}

/// Writes what a session event told (`after`: `before` with the event's news); true when
/// anything changed.
pub(super) async fn update_session(
    client: &impl GenericClient,
    before: &Session,
    after: &Session,
) -> Result<bool, DbError> {
    if after == before {
        return Ok(false);
    }
    client
        .execute(
            "UPDATE stripe_checkout_sessions
             SET status = $2, amount_total_cents = $3, payment_intent = $4
             WHERE session_id = $1",
            &[
                &before.session_id,
                &after.status.as_str(),
                &after.amount_total_cents,
                &after.payment_intent,
            ],
        )
        .await?;
    Ok(true)
}

pub(super) async fn set_credited(
    client: &impl GenericClient,
    session_id: &str,
    cents: i64,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE stripe_checkout_sessions SET credited_cents = $2 WHERE session_id = $1",
            &[&session_id, &cents],
        )
        .await?;
    Ok(())
}

/// One charge's refunds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refund {
    pub charge_id: String,
    pub amount_refunded_cents: i64,
    pub debited_cents: i64,
}

/// Keeps the largest cumulative refund seen for the charge; true when it grew (or is new).
pub(super) async fn record_refund(
    client: &impl GenericClient,
    report: &RefundReport,
    payment_intent: &str,
) -> Result<bool, DbError> {
    let row = client
        .query_opt(
            "INSERT INTO stripe_charge_refunds AS r (charge_id, payment_intent, amount_refunded_cents)
             VALUES ($1, $2, $3)
             ON CONFLICT (charge_id) DO UPDATE
                 SET amount_refunded_cents = GREATEST(r.amount_refunded_cents, EXCLUDED.amount_refunded_cents),
                     payment_intent = COALESCE(r.payment_intent, EXCLUDED.payment_intent)
                 WHERE r.amount_refunded_cents < EXCLUDED.amount_refunded_cents
                    OR r.payment_intent IS NULL
             RETURNING 1",
            &[&report.charge_id, &payment_intent, &report.amount_refunded_cents],
        )
        .await?;
    Ok(row.is_some())
}

pub(super) async fn refunds_for(
    client: &impl GenericClient,
    payment_intent: &str,
) -> Result<Vec<Refund>, DbError> {
    let rows = client
        .query(
            "SELECT charge_id, amount_refunded_cents, debited_cents FROM stripe_charge_refunds
             WHERE payment_intent = $1 ORDER BY charge_id",
            &[&payment_intent],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Refund {
            charge_id: r.get(0),
            amount_refunded_cents: r.get(1),
            debited_cents: r.get(2),
        })
        .collect())
}

pub(super) async fn set_refund_debited(
    client: &impl GenericClient,
    charge_id: &str,
    cents: i64,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE stripe_charge_refunds SET debited_cents = $2 WHERE charge_id = $1",
            &[&charge_id, &cents],
        )
        .await?;
    Ok(())
}

/// A dispute as last reported, and what the ledger holds of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Dispute {
    pub dispute_id: String,
    pub amount_cents: i64,
    pub status: String,
    pub debited_cents: Option<i64>,
    pub returned: bool,
}

impl Dispute {
    /// Stripe took the money from the platform: a chargeback, not an inquiry
    /// (`warning_*`, where no funds move), and not (yet) won.
    pub fn withdraws_funds(&self) -> bool {
        !self.status.starts_with("warning_") && !self.won()
    }

    pub fn won(&self) -> bool {
        self.status == "won"
    }
}

/// Keeps a dispute's latest amount and status (`won` and `lost` are final); true when
/// anything changed (or it is new).
pub(super) async fn record_dispute(
    client: &impl GenericClient,
    report: &DisputeReport,
    payment_intent: &str,
) -> Result<bool, DbError> {
    let row = client
        .query_opt(
            "INSERT INTO stripe_disputes AS d (dispute_id, payment_intent, charge_id, amount_cents, status)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (dispute_id) DO UPDATE
                 SET amount_cents = EXCLUDED.amount_cents,
                     status = CASE WHEN d.status IN ('won', 'lost') THEN d.status ELSE EXCLUDED.status END,
                     charge_id = COALESCE(d.charge_id, EXCLUDED.charge_id)
                 WHERE d.status NOT IN ('won', 'lost')
                   AND (d.status <> EXCLUDED.status OR d.amount_cents <> EXCLUDED.amount_cents
                        OR d.charge_id IS DISTINCT FROM COALESCE(d.charge_id, EXCLUDED.charge_id))
             RETURNING 1",
            &[
                &report.dispute_id,
                &payment_intent,
                &report.charge_id,
                &report.amount_cents,
                &report.status,
            ],
        )
        .await?;
    Ok(row.is_some())
}

pub(super) async fn disputes_for(
    client: &impl GenericClient,
    payment_intent: &str,
) -> Result<Vec<Dispute>, DbError> {
    let rows = client
        .query(
            "SELECT dispute_id, amount_cents, status, debited_cents, returned FROM stripe_disputes
             WHERE payment_intent = $1 ORDER BY dispute_id",
            &[&payment_intent],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Dispute {
            dispute_id: r.get(0),
            amount_cents: r.get(1),
            status: r.get(2),
            debited_cents: r.get(3),
            returned: r.get(4),
        })
        .collect())
}

pub(super) async fn set_dispute_applied(
    client: &impl GenericClient,
    dispute_id: &str,
    debited_cents: Option<i64>,
    returned: bool,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE stripe_disputes SET debited_cents = $2, returned = $3 WHERE dispute_id = $1",
            &[&dispute_id, &debited_cents, &returned],
        )
        .await?;
    Ok(())
}
