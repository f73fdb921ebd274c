-- The hot path's server-side functions, made cheaper under load (issue 10, measured with
-- `scripts/bench`). Same signatures, verdicts and money rules as 0005/0006; what changes is
-- which locks are held, for how long, and how many statements run:
--
-- * A hold no longer locks the account row. Holds of one account are still placed one at a
--   time (a transaction-scoped advisory lock per account), and each reads the balance, the
--   month spend and the active holds in ONE statement, i.e. one consistent snapshot. A
--   capture, release or top-up only lowers what is held, or moves the balance by what a
--   capture charges, and decides nothing, so a hold that does not see one that commits
--   concurrently is equivalent to the hold placed just before it: the result is the same
--   as some serial order. What this buys: a hold never waits for a capture's durable
--   commit (its WAL flush), which used to serialise every request of an account behind
--   every capture's fsync.
-- * Admission (rate-limit windows + the hold) commits asynchronously: it moves no money.
--   A PostgreSQL crash can lose the last fraction of a second of holds and counter
--   increments; a capture without its hold still charges what was used (0005), so money is
--   never lost, and the capture itself stays synchronous (durable before the answer). The
--   rate-limit row of a hot key and the hold are then locked only while the function runs,
--   not through a WAL flush.
-- * A rate-limit slot is one INSERT … ON CONFLICT DO UPDATE … WHERE (the conditional update
--   still re-checks the newest row version), not an INSERT followed by an UPDATE.
-- * A capture locks the account row only by the balance UPDATE (FOR NO KEY UPDATE, which
--   the foreign-key checks of concurrent holds and entries do not wait for), as its last
--   statement, so the row is held only through the commit; the idempotent ledger entry
--   comes first. The usage rows are inserted by PL/pgSQL, whose plan is cached per
--   connection (a LANGUAGE sql function is parsed and planned again on every call).
-- * A release no longer locks the account row (it only closes a hold).

CREATE OR REPLACE FUNCTION sb_take_slot(
    p_bucket text, p_rpm integer, p_tokens bigint, p_tpm bigint,
    OUT admitted boolean, OUT retry_after_secs integer
)
LANGUAGE plpgsql AS $$
DECLARE
    w timestamptz := date_trunc('minute', now());
BEGIN
    retry_after_secs := 0;
    IF p_bucket IS NULL OR (p_rpm IS NULL AND p_tpm IS NULL) THEN
        admitted := true;
        RETURN;
    END IF;
    IF p_rpm IS NOT NULL AND p_rpm <= 0 THEN
        admitted := false;
    ELSE
        -- A new window admits its first request whatever its size (as 0006: a request larger
        -- than the whole TPM budget is admitted into an empty window).
        INSERT INTO rate_limit_counters AS c (bucket, window_start, requests, tokens)
        VALUES (p_bucket, w, 1, GREATEST(p_tokens, 0))
        ON CONFLICT (bucket, window_start) DO UPDATE
        SET requests = c.requests + 1, tokens = c.tokens + GREATEST(p_tokens, 0)
        WHERE (p_rpm IS NULL OR c.requests < p_rpm)
          AND (p_tpm IS NULL OR c.tokens = 0 OR c.tokens + GREATEST(p_tokens, 0) <= p_tpm);
        admitted := FOUND;
    END IF;
    IF NOT admitted THEN
        retry_after_secs := GREATEST(1, ceil(extract(epoch FROM (w + interval '1 minute' - now())))::integer);
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION sb_authorize(
    p_user_id text, p_request_id text, p_amount numeric, p_ttl interval,
    OUT verdict text, OUT balance numeric, OUT held numeric, OUT month_spend numeric, OUT cap numeric
)
LANGUAGE plpgsql AS $$
DECLARE
    acct_status text;
    existing credit_holds%ROWTYPE;
BEGIN
    IF p_amount < 0 THEN
        RAISE EXCEPTION 'hold amount must not be negative' USING ERRCODE = 'check_violation';
    END IF;

    -- One hold at a time per account (see the top of this file); 1397246028 is an arbitrary
    -- constant naming this lock, the account's hash the other half of its key.
    PERFORM pg_advisory_xact_lock(1397246028, hashtext(p_user_id));

    -- Holds a crashed or frozen instance left behind stop counting once expired.
    UPDATE credit_holds SET state = 'expired', closed_at = now()
    WHERE user_id = p_user_id AND state = 'active' AND expires_at <= now();

    -- One statement: the account and its active holds from the same snapshot.
    SELECT a.status, a.balance_usd,
           CASE WHEN a.month_spend_period = sb_current_period() THEN a.month_spend_usd ELSE 0 END,
           a.monthly_cap_usd,
           (SELECT COALESCE(sum(h.amount_usd), 0) FROM credit_holds h
            WHERE h.user_id = a.user_id AND h.state = 'active')
    INTO acct_status, balance, month_spend, cap, held
    FROM accounts a WHERE a.user_id = p_user_id;
    IF NOT FOUND THEN
        verdict := 'no_account';
        RETURN;
    END IF;

    IF acct_status <> 'active' THEN
        verdict := 'account_disabled';
    ELSIF balance - held < p_amount THEN
        verdict := 'insufficient_credits';
    ELSIF cap IS NOT NULL AND month_spend + held + p_amount > cap THEN
        verdict := 'monthly_cap_exceeded';
    ELSE
        INSERT INTO credit_holds (request_id, user_id, amount_usd, expires_at)
        VALUES (p_request_id, p_user_id, p_amount, now() + p_ttl)
        ON CONFLICT (request_id) DO NOTHING;
        IF FOUND THEN
            held := held + p_amount;
            verdict := 'ok';
            RETURN;
        END IF;
    END IF;

    -- A request id seen before wins over any refusal: a retried call, or a reuse.
    SELECT * INTO existing FROM credit_holds WHERE request_id = p_request_id;
    IF FOUND THEN
        IF existing.user_id = p_user_id AND existing.amount_usd = p_amount THEN
            verdict := 'duplicate';
        ELSE
            verdict := 'request_id_reused';
        END IF;
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION sb_admit(
    p_user_id text, p_request_id text, p_amount numeric, p_ttl interval,
    p_key_bucket text, p_key_rpm integer,
    p_provider_bucket text, p_provider_rpm integer, p_provider_tokens bigint, p_provider_tpm bigint,
    OUT verdict text, OUT balance numeric, OUT held numeric, OUT month_spend numeric, OUT cap numeric,
    OUT retry_after_secs integer
)
LANGUAGE plpgsql AS $$
DECLARE
    slot record;
BEGIN
    -- No money moves here (see the top of this file): commit without waiting for the flush.
    PERFORM set_config('synchronous_commit', 'off', true);
    retry_after_secs := 0;
    SELECT * INTO slot FROM sb_take_slot(p_key_bucket, p_key_rpm, 0, NULL);
    IF NOT slot.admitted THEN
        verdict := 'key_rate_limited';
        retry_after_secs := slot.retry_after_secs;
        RETURN;
    END IF;
    SELECT * INTO slot FROM sb_take_slot(p_provider_bucket, p_provider_rpm, p_provider_tokens, p_provider_tpm);
    IF NOT slot.admitted THEN
        verdict := 'provider_rate_limited';
        retry_after_secs := slot.retry_after_secs;
        RETURN;
    END IF;
    SELECT a.verdict, a.balance, a.held, a.month_spend, a.cap
    INTO verdict, balance, held, month_spend, cap
    FROM sb_authorize(p_user_id, p_request_id, p_amount, p_ttl) a;
END;
$$;

CREATE OR REPLACE FUNCTION sb_insert_usage_logs(p_usage_logs jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO llm_usage_logs (
        user_id, provider_id, model_id, user_key_id, request_id, attempt, provider_slug, model_name,
        power_level, task_type, prompt_tokens, completion_tokens, total_tokens, cached_tokens,
        cost_input_usd, cost_output_usd, cost_total_usd, charged_usd, used_byok, stream,
        latency_ms, tokens_per_second, status_code, error_message, was_fallback, fallback_reason,
        request_ip, user_agent, session_id)
    SELECT
        user_id, provider_id, model_id, user_key_id, request_id, COALESCE(attempt, 1), provider_slug, model_name,
        power_level, task_type, COALESCE(prompt_tokens, 0), COALESCE(completion_tokens, 0),
        COALESCE(total_tokens, 0), COALESCE(cached_tokens, 0),
        COALESCE(cost_input_usd, 0), COALESCE(cost_output_usd, 0), COALESCE(cost_total_usd, 0),
        COALESCE(charged_usd, 0), COALESCE(used_byok, false), COALESCE(stream, false),
        latency_ms, tokens_per_second, status_code, error_message, COALESCE(was_fallback, false), fallback_reason,
        request_ip, user_agent, session_id
    FROM jsonb_populate_recordset(NULL::llm_usage_logs, COALESCE(p_usage_logs, '[]'::jsonb));
END;
$$;

CREATE OR REPLACE FUNCTION sb_capture(
    p_request_id text, p_user_id text, p_amount numeric, p_kind text,
    p_usage_logs jsonb, p_billing_properties jsonb,
    OUT verdict text, OUT balance numeric
)
LANGUAGE plpgsql AS $$
DECLARE
    inserted bigint;
BEGIN
    IF p_amount < 0 THEN
        RAISE EXCEPTION 'capture amount must not be negative' USING ERRCODE = 'check_violation';
    END IF;
    IF p_kind NOT IN ('capture', 'byok_fee') THEN
        RAISE EXCEPTION 'unknown capture kind %', p_kind USING ERRCODE = 'check_violation';
    END IF;

    -- The entry first (only for an existing account): a second capture of the same request
    -- waits here for the first and then changes nothing.
    INSERT INTO ledger_entries (user_id, kind, amount_usd, idempotency_key, request_id, reason)
    SELECT a.user_id, p_kind, -p_amount, 'capture:' || p_request_id, p_request_id, 'llm usage'
    FROM accounts a WHERE a.user_id = p_user_id
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id INTO inserted;

    IF inserted IS NULL THEN
        SELECT a.balance_usd INTO balance FROM accounts a WHERE a.user_id = p_user_id;
        verdict := CASE WHEN FOUND THEN 'duplicate' ELSE 'no_account' END;
        RETURN;
    END IF;

    UPDATE credit_holds SET state = 'captured', captured_usd = p_amount, closed_at = now()
    WHERE request_id = p_request_id AND user_id = p_user_id AND state = 'active';

    -- sb_insert_usage_logs, inlined (one PL/pgSQL call less on every capture).
    INSERT INTO llm_usage_logs (
        user_id, provider_id, model_id, user_key_id, request_id, attempt, provider_slug, model_name,
        power_level, task_type, prompt_tokens, completion_tokens, total_tokens, cached_tokens,
        cost_input_usd, cost_output_usd, cost_total_usd, charged_usd, used_byok, stream,
        latency_ms, tokens_per_second, status_code, error_message, was_fallback, fallback_reason,
        request_ip, user_agent, session_id)
    SELECT
        user_id, provider_id, model_id, user_key_id, request_id, COALESCE(attempt, 1), provider_slug, model_name,
        power_level, task_type, COALESCE(prompt_tokens, 0), COALESCE(completion_tokens, 0),
        COALESCE(total_tokens, 0), COALESCE(cached_tokens, 0),
        COALESCE(cost_input_usd, 0), COALESCE(cost_output_usd, 0), COALESCE(cost_total_usd, 0),
        COALESCE(charged_usd, 0), COALESCE(used_byok, false), COALESCE(stream, false),
        latency_ms, tokens_per_second, status_code, error_message, COALESCE(was_fallback, false), fallback_reason,
        request_ip, user_agent, session_id
    FROM jsonb_populate_recordset(NULL::llm_usage_logs, COALESCE(p_usage_logs, '[]'::jsonb));

    INSERT INTO billing_events (transaction_id, external_customer_id, properties)
    VALUES (p_request_id, p_user_id, COALESCE(p_billing_properties, '{}'::jsonb))
    ON CONFLICT (transaction_id) DO NOTHING;

    -- The account row last: it is locked from here to the end of the commit, and every
    -- capture of the account waits for it.
    UPDATE accounts SET
        balance_usd = balance_usd - p_amount,
        month_spend_usd = CASE WHEN month_spend_period = sb_current_period()
                               THEN month_spend_usd + p_amount ELSE p_amount END,
        month_spend_period = sb_current_period()
    WHERE user_id = p_user_id
    RETURNING balance_usd INTO balance;

    verdict := 'ok';
END;
$$;

CREATE OR REPLACE FUNCTION sb_release(p_request_id text, p_usage_logs jsonb, OUT verdict text)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE credit_holds SET state = 'released', closed_at = now()
    WHERE request_id = p_request_id AND state = 'active';
    IF FOUND THEN
        verdict := 'ok';
    ELSIF EXISTS (SELECT 1 FROM credit_holds WHERE request_id = p_request_id) THEN
        verdict := 'not_active';
    ELSE
        verdict := 'no_hold';
    END IF;
    -- Logs are written once per request: a repeated release adds none.
    IF verdict <> 'not_active' THEN
        PERFORM sb_insert_usage_logs(p_usage_logs);
    END IF;
END;
$$;

-- Same results for every input (a CASE of a NULL tier is NULL, as STRICT answered), but no
-- longer STRICT, so PostgreSQL inlines it: the CHECK constraints that use it (the account
-- row, updated by every capture) no longer run a SQL function, parsed again at each call.
CREATE OR REPLACE FUNCTION tier_rank(tier text) RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE tier
        WHEN 'free' THEN 0
        WHEN 'starter' THEN 1
        WHEN 'professional' THEN 2
        WHEN 'enterprise' THEN 3
    END
$$;
