-- Quota grants (issue 31; ledger.md, "Quota grants"): a `serve` instance holds one credit
-- hold per busy account — a grant — and admits that account's requests against it in
-- memory; their captures are written in batches that shrink the grant by what they charged.
-- Rate limits leave the hot path the same way: an instance takes a share of a window.
--
-- A grant is an ordinary `credit_holds` row (its request_id `grant:…`): every admission,
-- per-request or granted, still sees it among the account's active holds, so the sum of
-- grants and holds never exceeds the balance, and a grant a crashed instance left behind
-- expires like any hold.

-- Takes (or extends) a grant: up to p_want, and at most p_fraction of the account's room
-- (balance and monthly cap, less every other active hold; never less than p_threshold),
-- while that room is at least p_threshold. Below that the account is
-- low: the grant first gives back what it holds beyond p_keep (what its instance has in
-- flight and not yet written), then takes exactly p_floor (one request's worst case) if the
-- room allows — so a low account is admitted request by request, exactly as with
-- per-request holds, and never refused while this instance sits on its money.
CREATE OR REPLACE FUNCTION sb_grant(
    p_user_id text, p_grant_id text, p_want numeric, p_floor numeric, p_threshold numeric,
    p_keep numeric, p_ttl interval, p_fraction numeric,
    OUT verdict text, OUT held numeric, OUT delta numeric, OUT room numeric,
    OUT balance numeric, OUT month_spend numeric, OUT cap numeric
)
LANGUAGE plpgsql AS $$
DECLARE
    acct_status text;
    others numeric;
    mine numeric;
    granted numeric := 0;
BEGIN
    IF p_want < 0 OR p_floor < 0 OR p_keep < 0 THEN
        RAISE EXCEPTION 'grant amounts must not be negative' USING ERRCODE = 'check_violation';
    END IF;
    -- The same per-account lock as every hold (sb_authorize).
    PERFORM pg_advisory_xact_lock(1397246028, hashtext(p_user_id));
    UPDATE credit_holds SET state = 'expired', closed_at = now()
    WHERE user_id = p_user_id AND state = 'active' AND expires_at <= now();

    SELECT a.status, a.balance_usd,
           CASE WHEN a.month_spend_period = sb_current_period() THEN a.month_spend_usd ELSE 0 END,
           a.monthly_cap_usd,
           (SELECT COALESCE(sum(h.amount_usd), 0) FROM credit_holds h
            WHERE h.user_id = a.user_id AND h.state = 'active' AND h.request_id <> p_grant_id),
           (SELECT h.amount_usd FROM credit_holds h
            WHERE h.request_id = p_grant_id AND h.state = 'active')
    INTO acct_status, balance, month_spend, cap, others, mine
    FROM accounts a WHERE a.user_id = p_user_id;
    IF NOT FOUND THEN
        verdict := 'no_account';
        RETURN;
    END IF;
    IF acct_status <> 'active' THEN
        verdict := 'account_disabled';
        RETURN;
    END IF;
    mine := COALESCE(mine, 0);

    room := balance - others - mine;
    IF cap IS NOT NULL THEN
        room := LEAST(room, cap - month_spend - others - mine);
    END IF;

    IF room >= p_threshold THEN
        granted := LEAST(p_want, GREATEST(room * p_fraction, p_threshold), room);
        held := mine + granted;
        verdict := 'granted';
    ELSE
        -- Low: give back what is not in flight, then one request's worth if it fits.
        room := room + GREATEST(mine - p_keep, 0);
        held := LEAST(mine, p_keep);
        IF room >= p_floor THEN
            granted := p_floor;
            held := held + p_floor;
            verdict := 'single';
        ELSIF cap IS NOT NULL AND cap - month_spend - others - held < p_floor
              AND balance - others - held >= p_floor THEN
            verdict := 'monthly_cap_exceeded';
        ELSE
            verdict := 'insufficient_credits';
        END IF;
    END IF;
    room := room - granted;
    -- What this call changed the grant by: the instance adds it to its own count, which
    -- its batches' captures lower concurrently (adding changes commutes; overwriting with
    -- a total read here would not).
    delta := held - mine;
    IF held = 0 AND mine = 0 THEN
        RETURN;  -- nothing held, nothing to write
    END IF;

    INSERT INTO credit_holds (request_id, user_id, amount_usd, expires_at)
    VALUES (p_grant_id, p_user_id, held, now() + p_ttl)
    ON CONFLICT (request_id) DO UPDATE
    SET amount_usd = EXCLUDED.amount_usd, expires_at = EXCLUDED.expires_at
    WHERE credit_holds.state = 'active' AND credit_holds.user_id = p_user_id;
    IF NOT FOUND THEN
        -- The id names a hold that is closed (expired, returned) or someone else's.
        verdict := 'grant_closed';
        held := NULL;
        delta := 0;
    END IF;
END;
$$;

-- Captures a batch of granted requests: each as sb_capture_many would, and each grant
-- shrunk by what its captures charged now (a duplicate changes nothing), in one transaction.
CREATE OR REPLACE FUNCTION sb_capture_granted(
    p_grant_ids text[], p_request_ids text[], p_user_ids text[], p_amounts numeric[],
    p_kinds text[], p_usage_logs jsonb[], p_billing_properties jsonb[]
)
RETURNS TABLE (verdict text, balance numeric)
LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(p_grant_ids) IS DISTINCT FROM cardinality(p_request_ids) THEN
        RAISE EXCEPTION 'sb_capture_granted: arrays of different lengths' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The grants' UPDATE runs as part of the statement (a data-modifying CTE always runs);
    -- it touches only grant rows, which the captures themselves never update.
    RETURN QUERY
    WITH c AS (
        SELECT x.verdict, x.balance, x.ord
        FROM sb_capture_many(p_request_ids, p_user_ids, p_amounts, p_kinds, p_usage_logs,
                             p_billing_properties) WITH ORDINALITY AS x(verdict, balance, ord)
    ), shrunk AS (
        UPDATE credit_holds h SET amount_usd = GREATEST(h.amount_usd - s.total, 0)
        FROM (
            SELECT p_grant_ids[c.ord] AS grant_id, sum(p_amounts[c.ord]) AS total
            FROM c WHERE c.verdict = 'ok'
            GROUP BY 1
        ) s
        WHERE h.request_id = s.grant_id AND h.state = 'active'
        RETURNING 1
    )
    SELECT c.verdict, c.balance FROM c ORDER BY c.ord;
END;
$$;

-- A share of a rate-limit window: up to p_want_requests requests and p_want_tokens tokens
-- of the current minute's window, within the limits (NULL: no limit of that kind); refused
-- (nothing taken) when it cannot give at least one request, when one is wanted, and at
-- least p_min_tokens tokens. The first request of an empty window is admitted whatever its
-- size, as sb_take_slot does. The sum of the shares taken never exceeds a limit.
CREATE OR REPLACE FUNCTION sb_take_share(
    p_bucket text, p_rpm integer, p_want_requests integer, p_tpm bigint, p_want_tokens bigint,
    p_min_tokens bigint,
    OUT share_window timestamptz, OUT share_requests integer, OUT share_tokens bigint,
    OUT retry_after_secs integer
)
LANGUAGE plpgsql AS $$
DECLARE
    w timestamptz := date_trunc('minute', now());
    used_requests bigint;
    used_tokens bigint;
BEGIN
    share_window := w;
    retry_after_secs := 0;
    INSERT INTO rate_limit_counters AS c (bucket, window_start, requests, tokens)
    VALUES (p_bucket, w, 0, 0)
    ON CONFLICT ON CONSTRAINT rate_limit_counters_pkey DO NOTHING;
    SELECT c.requests, c.tokens INTO used_requests, used_tokens
    FROM rate_limit_counters c
    WHERE c.bucket = p_bucket AND c.window_start = w
    FOR UPDATE;

    share_requests := CASE WHEN p_rpm IS NULL THEN p_want_requests
                           ELSE GREATEST(0, LEAST(p_want_requests, p_rpm - used_requests))::integer END;
    share_tokens := CASE WHEN p_tpm IS NULL OR used_tokens = 0 THEN p_want_tokens
                         ELSE GREATEST(0, LEAST(p_want_tokens, p_tpm - used_tokens)) END;
    IF (p_want_requests > 0 AND share_requests <= 0) OR share_tokens < p_min_tokens THEN
        share_requests := 0;
        share_tokens := 0;
        retry_after_secs := GREATEST(1, ceil(extract(epoch FROM (w + interval '1 minute' - now())))::integer);
        RETURN;
    END IF;
    UPDATE rate_limit_counters c
    SET requests = c.requests + share_requests, tokens = c.tokens + share_tokens
    WHERE c.bucket = p_bucket AND c.window_start = w;
END;
$$;
