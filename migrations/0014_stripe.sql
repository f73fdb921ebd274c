-- Stripe top-ups (issue 16). A paid Checkout Session credits the account once (the ledger
-- entry's idempotency key is `stripe:checkout:<session id>`); this table remembers which
-- account a payment intent belongs to, so that a later `charge.refunded` event (which
-- carries the payment intent, not the session's metadata) debits the right account.
CREATE TABLE stripe_payments (
    session_id     text PRIMARY KEY CHECK (length(session_id) BETWEEN 1 AND 255),
    payment_intent text UNIQUE,
    user_id        text NOT NULL REFERENCES accounts (user_id) ON DELETE RESTRICT,
    amount_usd     numeric(20, 9) NOT NULL CHECK (amount_usd > 0),
    created_at     timestamptz NOT NULL DEFAULT now()
);
