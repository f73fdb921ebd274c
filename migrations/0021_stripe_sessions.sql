-- Stripe: only sessions Switchboard created move money (issue 27).
--
-- What Stripe said is kept here, with what of it the ledger holds (each piece under its own
-- idempotency key, written in the same transaction). Every webhook event updates these rows,
-- then the session's ledger entries are brought in line with them, so the same events in any
-- order end in the same balance:
--   top-up          `stripe:checkout:<session>`           + min(amount, amount_total) once paid
--   refund          `stripe:refund:<charge>:<cumulative>` − what was refunded since the last
--   dispute         `stripe:dispute:<dispute>`            − the disputed amount, once
--   dispute won     `stripe:dispute:<dispute>:won`        + what the dispute debited, once
-- Refunds and disputes are matched to a session by payment intent; one that arrives before
-- its session was paid (or before the session's payment intent is known) waits here and is
-- applied when the credit lands.

-- Each Checkout Session the checkout created, recorded when Stripe answered.
CREATE TABLE stripe_checkout_sessions (
    session_id         text PRIMARY KEY CHECK (length(session_id) BETWEEN 1 AND 255),
    user_id            text NOT NULL REFERENCES accounts (user_id) ON DELETE RESTRICT,
    -- The one line item: what the user asked for, in cents.
    amount_cents       bigint NOT NULL CHECK (amount_cents > 0),
    currency           text NOT NULL DEFAULT 'usd' CHECK (currency = 'usd'),
    -- open → processing (completed, a delayed payment method pending) → paid | failed.
    -- Paid is final; the state only moves forward, whatever order events arrive in.
    status             text NOT NULL DEFAULT 'open'
                       CHECK (status IN ('open', 'processing', 'paid', 'failed')),
    -- `amount_total` as Stripe first reported it.
    amount_total_cents bigint CHECK (amount_total_cents IS NULL OR amount_total_cents >= 0),
    -- Known from the first session event that carries it (for delayed payment methods,
    -- possibly only a later one).
    payment_intent     text UNIQUE CHECK (length(payment_intent) BETWEEN 1 AND 255),
    -- The top-up written to the ledger (NULL: none yet).
    credited_cents     bigint CHECK (credited_cents IS NULL OR credited_cents BETWEEN 0 AND amount_cents),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_checkout_sessions_user_idx ON stripe_checkout_sessions (user_id);
CREATE TRIGGER stripe_checkout_sessions_updated_at BEFORE UPDATE ON stripe_checkout_sessions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- The sessions credited before this migration (0014's table) were credited under
-- `stripe:checkout:<session>`: they become paid sessions, so their refunds and disputes
-- still find them.
INSERT INTO stripe_checkout_sessions
    (session_id, user_id, amount_cents, status, amount_total_cents, payment_intent,
     credited_cents, created_at)
SELECT session_id, user_id, (amount_usd * 100)::bigint, 'paid', (amount_usd * 100)::bigint,
       payment_intent, (amount_usd * 100)::bigint, created_at
FROM stripe_payments;
DROP TABLE stripe_payments;

-- `charge.refunded`: the largest cumulative `amount_refunded` seen per charge, and what the
-- ledger debited for it.
CREATE TABLE stripe_charge_refunds (
    charge_id             text PRIMARY KEY CHECK (length(charge_id) BETWEEN 1 AND 255),
    -- NULL only for refunds debited before this migration (their events named no intent
    -- that was kept); the next event of the charge fills it.
    payment_intent        text CHECK (length(payment_intent) BETWEEN 1 AND 255),
    amount_refunded_cents bigint NOT NULL CHECK (amount_refunded_cents >= 0),
    debited_cents         bigint NOT NULL DEFAULT 0
                          CHECK (debited_cents BETWEEN 0 AND amount_refunded_cents),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_charge_refunds_intent_idx ON stripe_charge_refunds (payment_intent);
CREATE TRIGGER stripe_charge_refunds_updated_at BEFORE UPDATE ON stripe_charge_refunds
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Refunds debited before this migration (keys `stripe:refund:<charge>:<cumulative>`): what
-- each charge already took, so a later event of the same charge debits only the rest.
INSERT INTO stripe_charge_refunds (charge_id, amount_refunded_cents, debited_cents)
SELECT split_part(idempotency_key, ':', 3), round(-sum(amount_usd) * 100)::bigint,
       round(-sum(amount_usd) * 100)::bigint
FROM ledger_entries
WHERE kind = 'adjustment' AND starts_with(idempotency_key, 'stripe:refund:')
GROUP BY split_part(idempotency_key, ':', 3);

-- `charge.dispute.*`: each dispute's latest amount and status (`won` and `lost` are final),
-- what the ledger debited for it and whether a won dispute gave it back.
CREATE TABLE stripe_disputes (
    dispute_id     text PRIMARY KEY CHECK (length(dispute_id) BETWEEN 1 AND 255),
    payment_intent text NOT NULL CHECK (length(payment_intent) BETWEEN 1 AND 255),
    charge_id      text,
    amount_cents   bigint NOT NULL CHECK (amount_cents >= 0),
    status         text NOT NULL CHECK (length(status) BETWEEN 1 AND 64),
    debited_cents  bigint CHECK (debited_cents IS NULL OR debited_cents > 0),
    returned       boolean NOT NULL DEFAULT false CHECK (NOT returned OR debited_cents IS NOT NULL),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_disputes_intent_idx ON stripe_disputes (payment_intent);
CREATE TRIGGER stripe_disputes_updated_at BEFORE UPDATE ON stripe_disputes
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
