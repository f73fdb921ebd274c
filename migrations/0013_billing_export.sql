-- The billing export to Lago (issue 16). Every capture writes one `billing_events` row
-- (the outbox); the exporter sends unbilled rows to Lago in batches and sets `billed_at`
-- only after Lago answered 2xx. A transient failure (5xx, timeout) schedules the next
-- try (`next_attempt_at`, with backoff); an event Lago refuses (4xx, found by splitting
-- the batch) records `billing_error` and is not retried until an admin re-queues it.
ALTER TABLE billing_events
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN billing_error text;

-- What the exporter reads: the unbilled, unfailed events, oldest first.
DROP INDEX IF EXISTS billing_events_unbilled_idx;
CREATE INDEX billing_events_unbilled_idx ON billing_events (id)
    WHERE billed_at IS NULL AND billing_error IS NULL;
CREATE INDEX billing_events_failed_idx ON billing_events (id)
    WHERE billed_at IS NULL AND billing_error IS NOT NULL;

-- Lago's external_subscription_id per account (api.md); NULL means the user id.
ALTER TABLE accounts
    ADD COLUMN billing_subscription_id text
        CHECK (billing_subscription_id IS NULL OR length(billing_subscription_id) BETWEEN 1 AND 200);

-- The usage rows of an exported request are marked billed with their event.
CREATE INDEX llm_usage_logs_unbilled_request_idx ON llm_usage_logs (request_id)
    WHERE billed_at IS NULL;
