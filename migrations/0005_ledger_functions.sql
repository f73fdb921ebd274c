-- The ledger's hot-path operations as server-side functions, so each is one round trip and
-- one transaction (ledger.md). Every function locks the account row first: that single lock
-- order (account, then its holds) serialises concurrent operations on one account and
-- cannot deadlock. In READ COMMITTED each statement after the lock sees everything that
-- committed before the lock was granted, which a single CTE statement would not.

-- Month spend kept in lockstep with captures (UTC calendar month), so caps need no scan.
ALTER TABLE accounts
    ADD COLUMN month_spend_usd numeric(20, 9) NOT NULL DEFAULT 0 CHECK (month_spend_usd >= 0),
    ADD COLUMN month_spend_period date NOT NULL DEFAULT date_trunc('month', now() AT TIME ZONE 'UTC')::date;

CREATE OR REPLACE FUNCTION sb_current_period() RETURNS date
LANGUAGE sql STABLE AS $$
    SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date
$$;

-- authorize(user, request_id, amount, ttl): place a hold if
--   balance - active holds >= amount, and (cap set) month_spend + active holds + amount <= cap.
-- Returns one row: verdict ('ok', 'duplicate', 'insufficient_credits', 'monthly_cap_exceeded',
-- 'account_disabled', 'no_account', 'request_id_reused') and the figures it decided on.
CREATE OR REPLACE FUNCTION sb_authorize(
    p_user_id text, p_request_id text, p_amount numeric, p_ttl interval,
    OUT verdict text, OUT balance numeric, OUT held numeric, OUT month_spend numeric, OUT cap numeric
)
LANGUAGE plpgsql AS $$
DECLARE
    acct accounts%ROWTYPE;
    existing credit_holds%ROWTYPE;
BEGIN
    IF p_amount < 0 THEN
        RAISE EXCEPTION 'hold amount must not be negative' USING ERRCODE = 'check_violation';
    END IF;

    SELECT * INTO acct FROM accounts WHERE user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        verdict := 'no_account';
        RETURN;
    END IF;

    -- Holds a crashed or frozen instance left behind stop counting once expired.
    UPDATE credit_holds SET state = 'expired', closed_at = now()
    WHERE user_id = p_user_id AND state = 'active' AND expires_at <= now();

    IF acct.month_spend_period <> sb_current_period() THEN
        acct.month_spend_usd := 0;
    END IF;
    balance := acct.balance_usd;
    month_spend := acct.month_spend_usd;
    cap := acct.monthly_cap_usd;
    SELECT COALESCE(sum(amount_usd), 0) INTO held
    FROM credit_holds WHERE user_id = p_user_id AND state = 'active';

    SELECT * INTO existing FROM credit_holds WHERE request_id = p_request_id;
    IF FOUND THEN
        IF existing.user_id = p_user_id AND existing.amount_usd = p_amount THEN
            verdict := 'duplicate';
        ELSE
            verdict := 'request_id_reused';
        END IF;
        RETURN;
    END IF;

    IF acct.status <> 'active' THEN
        verdict := 'account_disabled';
    ELSIF balance - held < p_amount THEN
        verdict := 'insufficient_credits';
    ELSIF cap IS NOT NULL AND month_spend + held + p_amount > cap THEN
        verdict := 'monthly_cap_exceeded';
    ELSE
        INSERT INTO credit_holds (request_id, user_id, amount_usd, expires_at)
        VALUES (p_request_id, p_user_id, p_amount, now() + p_ttl);
        held := held + p_amount;
        verdict := 'ok';
    END IF;
END;
$$;

-- capture(request_id, user, amount, kind, usage logs, billing event): charge the actual cost,
-- close the hold, write the attempts' usage rows and the billing event — atomically and
-- idempotently (a second capture of the same request changes nothing and returns
-- 'duplicate'). Works without a hold too (BYOK fee, or a hold that already expired): the
-- money actually used is never dropped.
CREATE OR REPLACE FUNCTION sb_capture(
    p_request_id text, p_user_id text, p_amount numeric, p_kind text,
    p_usage_logs jsonb, p_billing_properties jsonb,
    OUT verdict text, OUT balance numeric
)
LANGUAGE plpgsql AS $$
DECLARE
    acct accounts%ROWTYPE;
    inserted bigint;
BEGIN
    IF p_amount < 0 THEN
        RAISE EXCEPTION 'capture amount must not be negative' USING ERRCODE = 'check_violation';
    END IF;
    IF p_kind NOT IN ('capture', 'byok_fee') THEN
        RAISE EXCEPTION 'unknown capture kind %', p_kind USING ERRCODE = 'check_violation';
    END IF;

    SELECT * INTO acct FROM accounts WHERE user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        verdict := 'no_account';
        RETURN;
    END IF;

    INSERT INTO ledger_entries (user_id, kind, amount_usd, idempotency_key, request_id, reason)
    VALUES (p_user_id, p_kind, -p_amount, 'capture:' || p_request_id, p_request_id, 'llm usage')
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id INTO inserted;

    IF inserted IS NULL THEN
        verdict := 'duplicate';
        balance := acct.balance_usd;
        RETURN;
    END IF;

    UPDATE accounts SET
        balance_usd = balance_usd - p_amount,
        month_spend_usd = CASE WHEN month_spend_period = sb_current_period()
                               THEN month_spend_usd + p_amount ELSE p_amount END,
        month_spend_period = sb_current_period()
    WHERE user_id = p_user_id
    RETURNING balance_usd INTO balance;

    UPDATE credit_holds SET state = 'captured', captured_usd = p_amount, closed_at = now()
    WHERE request_id = p_request_id AND user_id = p_user_id AND state = 'active';

    PERFORM sb_insert_usage_logs(p_usage_logs);

    INSERT INTO billing_events (transaction_id, external_customer_id, properties)
    VALUES (p_request_id, p_user_id, COALESCE(p_billing_properties, '{}'::jsonb))
    ON CONFLICT (transaction_id) DO NOTHING;

    verdict := 'ok';
END;
$$;

-- release(request_id, usage logs): close an active hold without charging (every failure
-- path), writing the failed attempts' usage rows in the same transaction. Idempotent.
CREATE OR REPLACE FUNCTION sb_release(p_request_id text, p_usage_logs jsonb, OUT verdict text)
LANGUAGE plpgsql AS $$
DECLARE
    hold_user text;
BEGIN
    SELECT user_id INTO hold_user FROM credit_holds WHERE request_id = p_request_id;
    IF FOUND THEN
        PERFORM 1 FROM accounts WHERE user_id = hold_user FOR UPDATE;
        UPDATE credit_holds SET state = 'released', closed_at = now()
        WHERE request_id = p_request_id AND state = 'active';
        verdict := CASE WHEN FOUND THEN 'ok' ELSE 'not_active' END;
    ELSE
        verdict := 'no_hold';
    END IF;
    -- Logs are written once per request: a repeated release adds none.
    IF verdict <> 'not_active' THEN
        PERFORM sb_insert_usage_logs(p_usage_logs);
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION sb_insert_usage_logs(p_usage_logs jsonb) RETURNS void
LANGUAGE sql AS $$
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
    FROM jsonb_populate_recordset(NULL::llm_usage_logs, COALESCE(p_usage_logs, '[]'::jsonb))
$$;

-- credit(user, amount, kind, idempotency key): top-ups, adjustments and refunds. Returns
-- 'ok', 'duplicate' (same key, same request: nothing changes), 'idempotency_key_reused'
-- (same key, different request), or 'no_account'.
CREATE OR REPLACE FUNCTION sb_credit(
    p_user_id text, p_amount numeric, p_kind text, p_idempotency_key text, p_reason text, p_actor text,
    OUT verdict text, OUT balance numeric, OUT entry_id bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    acct accounts%ROWTYPE;
    prior ledger_entries%ROWTYPE;
BEGIN
    IF p_kind NOT IN ('topup', 'adjustment', 'refund') THEN
        RAISE EXCEPTION 'unknown credit kind %', p_kind USING ERRCODE = 'check_violation';
    END IF;
    SELECT * INTO acct FROM accounts WHERE user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        verdict := 'no_account';
        RETURN;
    END IF;
    INSERT INTO ledger_entries (user_id, kind, amount_usd, idempotency_key, reason, actor)
    VALUES (p_user_id, p_kind, p_amount, p_idempotency_key, p_reason, p_actor)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id INTO entry_id;
    IF entry_id IS NULL THEN
        SELECT * INTO prior FROM ledger_entries WHERE idempotency_key = p_idempotency_key;
        entry_id := prior.id;
        balance := acct.balance_usd;
        verdict := CASE WHEN prior.user_id = p_user_id AND prior.amount_usd = p_amount AND prior.kind = p_kind
                        THEN 'duplicate' ELSE 'idempotency_key_reused' END;
        RETURN;
    END IF;
    UPDATE accounts SET balance_usd = balance_usd + p_amount
    WHERE user_id = p_user_id
    RETURNING balance_usd INTO balance;
    verdict := 'ok';
END;
$$;

-- expire_holds(): release holds past their expiry (the scheduled job). Returns how many.
CREATE OR REPLACE FUNCTION sb_expire_holds() RETURNS bigint
LANGUAGE sql AS $$
    WITH expired AS (
        UPDATE credit_holds SET state = 'expired', closed_at = now()
        WHERE state = 'active' AND expires_at <= now()
        RETURNING 1
    )
    SELECT count(*) FROM expired
$$;
