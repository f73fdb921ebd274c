-- Lago's transaction_id is the request id (api.md). A client may reuse an X-Request-Id, so
-- the exporter makes the second and later events of one request id unique by appending
-- their ledger id; this index finds the earlier events of a request id.
CREATE INDEX billing_events_request_id_idx ON billing_events ((properties->>'request_id'), id);
