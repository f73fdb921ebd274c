//! Brings one recorded session's ledger entries in line with what Stripe reported of it:
//! the top-up once it is paid, then every refund of its payment and every dispute. What
//! arrived before the credit (a refund, a dispute) is applied when the credit lands, in the
//! same transaction, so the account never keeps both. Each piece is written once (its own
//! idempotency key, and the Stripe row noting it in the same transaction), so running this
//! again after any event changes only what is new.
//!
//! Bounds: a refund takes at most what the session credited (per charge, cumulative), a
//! dispute at most the same; a won dispute gives back exactly what it took. A debit may take
//! the balance below zero (the ledger allows negative adjustments; such an account is refused
//! holds until topped up).

use rust_decimal::Decimal;
use tokio_postgres::GenericClient;

use super::error::StripeError;
use super::store::{self, Session};
use crate::ledger::{self, CreditKind};

/// What one settlement wrote, in cents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Moved {
    /// The session's top-up was written now.
    pub topped_up: bool,
    pub credited_cents: i64,
    pub debited_cents: i64,
}

impl Moved {
    pub fn any(&self) -> bool {
        self.credited_cents > 0 || self.debited_cents > 0
    }
}

fn dollars(cents: i64) -> Decimal {
    Decimal::new(cents, 2)
}

/// One ledger entry for `session`'s account (`cents` signed).
async fn post(
    client: &impl GenericClient,
    session: &Session,
    cents: i64,
    kind: CreditKind,
    key: &str,
    reason: &str,
) -> Result<(), StripeError> {
    ledger::credit(
        client,
        &session.user_id,
        dollars(cents),
        kind,
        key,
        Some(reason),
        Some("stripe"),
    )
    .await?;
    Ok(())
}

pub(super) async fn settle(
    client: &impl GenericClient,
    session: &Session,
) -> Result<Moved, StripeError> {
    let mut moved = Moved::default();
    let credit = match (session.credited_cents, session.credit_cents()) {
        (Some(credited), _) => credited,
        (None, Some(credit)) => {
            if credit > 0 {
                post(
                    client,
                    session,
                    credit,
                    CreditKind::TopUp,
                    &format!("stripe:checkout:{}", session.session_id),
                    &format!("Stripe checkout {}", session.session_id),
                )
                .await?;
                moved.credited_cents += credit;
            }
            store::set_credited(client, &session.session_id, credit).await?;
            moved.topped_up = true;
            credit
        }
        // Not paid (yet): refunds and disputes wait.
        (None, None) => return Ok(moved),
    };
    let Some(intent) = &session.payment_intent else {
        return Ok(moved);
    };

    for refund in store::refunds_for(client, intent).await? {
        let target = refund.amount_refunded_cents.min(credit);
        if target <= refund.debited_cents {
            continue;
        }
        post(
            client,
            session,
            refund.debited_cents - target,
            CreditKind::Adjustment,
            &format!(
                "stripe:refund:{}:{}",
                refund.charge_id,
                dollars(target).normalize()
            ),
            &format!("Stripe refund of charge {}", refund.charge_id),
        )
        .await?;
        store::set_refund_debited(client, &refund.charge_id, target).await?;
        moved.debited_cents += target - refund.debited_cents;
    }

    for dispute in store::disputes_for(client, intent).await? {
        let mut debited = dispute.debited_cents;
        let mut returned = dispute.returned;
        let key = format!("stripe:dispute:{}", dispute.dispute_id);
        let amount = dispute.amount_cents.min(credit);
        if debited.is_none() && dispute.withdraws_funds() && amount > 0 {
            post(
                client,
                session,
                -amount,
                CreditKind::Adjustment,
                &key,
                &format!("Stripe dispute {}", dispute.dispute_id),
            )
            .await?;
            moved.debited_cents += amount;
            debited = Some(amount);
        }
        if let Some(taken) = debited
            && dispute.won()
            && !returned
        {
            post(
                client,
                session,
                taken,
                CreditKind::Adjustment,
                &format!("{key}:won"),
                &format!("Stripe dispute {} won", dispute.dispute_id),
            )
            .await?;
            moved.credited_cents += taken;
            returned = true;
        }
        if (debited, returned) != (dispute.debited_cents, dispute.returned) {
            store::set_dispute_applied(client, &dispute.dispute_id, debited, returned).await?;
        }
    }
    Ok(moved)
}
