-- Lago's transaction_id fixed when the capture is written (issue 27, finding 7).
--
-- Until now the exporter derived each event's Lago transaction_id at send time: the
-- client's request id (`properties->>'request_id'`), or `<request id>:<ledger id>` when an
-- event with a lower id had the same request id. That answer could change between passes:
-- two captures of one reused X-Request-Id committing out of id order, the later one sent
-- first, both got the bare request id and Lago kept only one of them.
--
-- Now every billing event gets `lago_transaction_id` in the transaction that writes it (a
-- trigger, so every writer of billing_events, the capture functions included, gets it
-- without change): the request id if no event has claimed it yet, else
-- `<request id>:<ledger id>`. The claim is an insert into `billing_transaction_ids`
-- (primary key) with ON CONFLICT DO NOTHING: a second capture of the same request id
-- waits for the first one's commit and then takes the suffixed id, so two concurrent
-- captures never share one. The claim rolls back with its capture.

CREATE TABLE billing_transaction_ids (
    lago_transaction_id text PRIMARY KEY
);

ALTER TABLE billing_events ADD COLUMN lago_transaction_id text;

-- Existing events keep exactly what an export pass computed for them until now (it may
-- already have sent them, billed or not: Lago deduplicates on this id, so it must not
-- change).
UPDATE billing_events e
SET lago_transaction_id = CASE
        WHEN e.properties->>'request_id' IS NULL THEN e.transaction_id
        WHEN r.n > 1 THEN (e.properties->>'request_id') || ':' || e.transaction_id
        ELSE e.properties->>'request_id'
    END
FROM (SELECT id, row_number() OVER (PARTITION BY properties->>'request_id' ORDER BY id) AS n
      FROM billing_events) r
WHERE r.id = e.id;

INSERT INTO billing_transaction_ids (lago_transaction_id)
SELECT DISTINCT lago_transaction_id FROM billing_events
ON CONFLICT DO NOTHING;

ALTER TABLE billing_events ALTER COLUMN lago_transaction_id SET NOT NULL;

CREATE OR REPLACE FUNCTION sb_billing_transaction_id() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    candidate text := COALESCE(NULLIF(NEW.properties->>'request_id', ''), NEW.transaction_id);
BEGIN
    IF NEW.lago_transaction_id IS NOT NULL THEN
        -- Given by the writer (a data import): claimed all the same, never refused.
        INSERT INTO billing_transaction_ids VALUES (NEW.lago_transaction_id) ON CONFLICT DO NOTHING;
        RETURN NEW;
    END IF;
    -- The first event of a request id takes it bare; the others append their ledger id
    -- (unique per event). A client can only collide with that by guessing a ledger id not
    -- yet shown to anyone; the loop keeps even that from failing the capture.
    FOR attempt IN 1..5 LOOP
        INSERT INTO billing_transaction_ids VALUES (candidate) ON CONFLICT DO NOTHING;
        IF FOUND THEN
            NEW.lago_transaction_id := candidate;
            RETURN NEW;
        END IF;
        candidate := candidate || ':' || NEW.transaction_id;
    END LOOP;
    RAISE EXCEPTION 'no free Lago transaction id for billing event %', NEW.transaction_id
        USING ERRCODE = 'unique_violation';
END;
$$;

CREATE TRIGGER billing_events_transaction_id
    BEFORE INSERT ON billing_events
    FOR EACH ROW EXECUTE FUNCTION sb_billing_transaction_id();

-- The exporter no longer looks up earlier events of a request id: one index less to
-- maintain on every capture (0016 created it for that lookup).
DROP INDEX IF EXISTS billing_events_request_id_idx;
