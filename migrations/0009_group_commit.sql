-- Group commit of the hot path (issue 10): the admissions, and separately the captures,
-- that one process has waiting at the same moment are written by ONE statement instead of
-- one each. Measured with `scripts/bench`, PostgreSQL spent most of its time per request on
-- work paid per statement, not per row: the executor's start, every written table's CHECK
-- constraints read back from their stored text, two PL/pgSQL calls, the transaction, its
-- commit and WAL flush, the sockets and wake-ups. A batch pays them once.
--
-- Both functions give each item the verdict the single-request function (0008) would give
-- if the items were called one after another in array order; the Rust side calls the
-- single-request functions for a batch of one (every Lambda invocation), and falls back
-- to them one by one if a batch statement fails, so a bad item never fails its neighbours.
--
-- Locks are taken in one global order, so two batches (or a batch and a single call) never
-- deadlock: rate-limit windows in bucket order ('key:…' < 'provider:…', the order in which
-- sb_admit takes them), then accounts in user order; a capture batch inserts its ledger
-- entries in request order and updates account rows last, in user order.

-- Admission of a batch: rate-limit windows and holds, in array order.
CREATE OR REPLACE FUNCTION sb_admit_many(
    p_user_ids text[], p_request_ids text[], p_amounts numeric[], p_ttl_secs bigint[],
    p_key_buckets text[], p_key_rpms integer[],
    p_provider_buckets text[], p_provider_rpms integer[], p_provider_tokens bigint[],
    p_provider_tpms bigint[]
)
RETURNS TABLE (
    verdict text, balance numeric, held numeric, month_spend numeric, cap numeric,
    retry_after_secs integer
)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := cardinality(p_request_ids);
    w timestamptz := date_trunc('minute', now());
    retry integer;
    -- The batch's rate-limit windows: name, requests and tokens counted so far.
    b_names text[];
    b_req bigint[];
    b_tok bigint[];
    b_dirty boolean[];
    -- The batch's accounts: what sb_authorize reads, kept up to date item by item.
    a_ids text[];
    a_status text[];
    a_balance numeric[];
    a_spend numeric[];
    a_cap numeric[];
    a_held numeric[];
    r record;
    i integer;
    k integer;
    t bigint;
    existing credit_holds%ROWTYPE;
BEGIN
    -- No money moves here (0008): commit without waiting for the flush.
    PERFORM set_config('synchronous_commit', 'off', true);
    IF n IS NULL OR n = 0 THEN
        RETURN;
    END IF;
    IF cardinality(p_user_ids) <> n OR cardinality(p_amounts) <> n OR cardinality(p_ttl_secs) <> n
       OR cardinality(p_key_buckets) <> n OR cardinality(p_key_rpms) <> n
       OR cardinality(p_provider_buckets) <> n OR cardinality(p_provider_rpms) <> n
       OR cardinality(p_provider_tokens) <> n OR cardinality(p_provider_tpms) <> n THEN
        RAISE EXCEPTION 'sb_admit_many: arrays of different lengths' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(p_amounts) a WHERE a IS NULL OR a < 0) THEN
        RAISE EXCEPTION 'hold amount must not be negative' USING ERRCODE = 'check_violation';
    END IF;
    retry := GREATEST(1, ceil(extract(epoch FROM (w + interval '1 minute' - now())))::integer);

    -- Every window a slot may be taken from (as sb_take_slot: a bucket with no limit counts
    -- nothing, a limit of 0 refuses without counting), created if new, locked in order.
    SELECT array_agg(b ORDER BY b) INTO b_names FROM (
        SELECT DISTINCT b FROM (
            SELECT p_key_buckets[g] AS b FROM generate_series(1, n) g
            WHERE p_key_buckets[g] IS NOT NULL AND p_key_rpms[g] IS NOT NULL AND p_key_rpms[g] > 0
            UNION ALL
            SELECT p_provider_buckets[g] FROM generate_series(1, n) g
            WHERE p_provider_buckets[g] IS NOT NULL
              AND (p_provider_rpms[g] IS NOT NULL OR p_provider_tpms[g] IS NOT NULL)
              AND (p_provider_rpms[g] IS NULL OR p_provider_rpms[g] > 0)
        ) s
    ) d;
    IF b_names IS NOT NULL THEN
        -- One pass in bucket order, each window created or locked (by a no-op update)
        -- before the next, as sb_admit does: a window is never held while waiting for an
        -- earlier one.
        WITH l AS (
            INSERT INTO rate_limit_counters AS c (bucket, window_start, requests, tokens)
            SELECT b, w, 0, 0 FROM unnest(b_names) b ORDER BY b
            ON CONFLICT (bucket, window_start) DO UPDATE SET requests = c.requests
            RETURNING c.bucket, c.requests, c.tokens
        )
        SELECT array_agg(l.requests ORDER BY l.bucket), array_agg(l.tokens ORDER BY l.bucket)
        INTO b_req, b_tok
        FROM l;
        b_dirty := array_fill(false, ARRAY[cardinality(b_names)]);
    END IF;

    -- Every account of the batch: one hold-placer at a time per account (0008's advisory
    -- lock), expired holds closed, then the account and its active holds in one snapshot.
    FOR r IN SELECT DISTINCT u FROM unnest(p_user_ids) u ORDER BY u LOOP
        PERFORM pg_advisory_xact_lock(1397246028, hashtext(r.u));
    END LOOP;
    UPDATE credit_holds SET state = 'expired', closed_at = now()
    WHERE user_id = ANY (p_user_ids) AND state = 'active' AND expires_at <= now();
    SELECT array_agg(a.user_id), array_agg(a.status), array_agg(a.balance_usd),
           array_agg(CASE WHEN a.month_spend_period = sb_current_period() THEN a.month_spend_usd ELSE 0 END),
           array_agg(a.monthly_cap_usd),
           array_agg((SELECT COALESCE(sum(h.amount_usd), 0) FROM credit_holds h
                      WHERE h.user_id = a.user_id AND h.state = 'active'))
    INTO a_ids, a_status, a_balance, a_spend, a_cap, a_held
    FROM accounts a WHERE a.user_id = ANY (p_user_ids);

    FOR i IN 1 .. n LOOP
        verdict := NULL; balance := NULL; held := NULL; month_spend := NULL; cap := NULL;
        retry_after_secs := 0;

        -- The key's window (requests only).
        IF p_key_buckets[i] IS NOT NULL AND p_key_rpms[i] IS NOT NULL THEN
            IF p_key_rpms[i] <= 0 THEN
                verdict := 'key_rate_limited';
            ELSE
                k := array_position(b_names, p_key_buckets[i]);
                IF b_req[k] < p_key_rpms[i] THEN
                    b_req[k] := b_req[k] + 1;
                    b_dirty[k] := true;
                ELSE
                    verdict := 'key_rate_limited';
                END IF;
            END IF;
        END IF;

        -- The provider's window (requests and tokens).
        IF verdict IS NULL AND p_provider_buckets[i] IS NOT NULL
           AND (p_provider_rpms[i] IS NOT NULL OR p_provider_tpms[i] IS NOT NULL) THEN
            IF p_provider_rpms[i] IS NOT NULL AND p_provider_rpms[i] <= 0 THEN
                verdict := 'provider_rate_limited';
            ELSE
                k := array_position(b_names, p_provider_buckets[i]);
                t := GREATEST(p_provider_tokens[i], 0);
                IF (p_provider_rpms[i] IS NULL OR b_req[k] < p_provider_rpms[i])
                   AND (p_provider_tpms[i] IS NULL OR b_tok[k] = 0 OR b_tok[k] + t <= p_provider_tpms[i]) THEN
                    b_req[k] := b_req[k] + 1;
                    b_tok[k] := b_tok[k] + t;
                    b_dirty[k] := true;
                ELSE
                    verdict := 'provider_rate_limited';
                END IF;
            END IF;
        END IF;

        IF verdict IS NOT NULL THEN
            retry_after_secs := retry;
            RETURN NEXT;
            CONTINUE;
        END IF;

        -- The hold (sb_authorize's rules).
        k := array_position(a_ids, p_user_ids[i]);
        IF k IS NULL THEN
            verdict := 'no_account';
        ELSE
            balance := a_balance[k];
            held := a_held[k];
            month_spend := a_spend[k];
            cap := a_cap[k];
            IF a_status[k] <> 'active' THEN
                verdict := 'account_disabled';
            ELSIF balance - held < p_amounts[i] THEN
                verdict := 'insufficient_credits';
            ELSIF cap IS NOT NULL AND month_spend + held + p_amounts[i] > cap THEN
                verdict := 'monthly_cap_exceeded';
            ELSE
                INSERT INTO credit_holds (request_id, user_id, amount_usd, expires_at)
                VALUES (p_request_ids[i], p_user_ids[i], p_amounts[i],
                        now() + p_ttl_secs[i] * interval '1 second')
                ON CONFLICT (request_id) DO NOTHING;
                IF FOUND THEN
                    a_held[k] := a_held[k] + p_amounts[i];
                    held := a_held[k];
                    verdict := 'ok';
                END IF;
            END IF;
        END IF;

        IF k IS NOT NULL AND verdict IS DISTINCT FROM 'ok' THEN
            -- A request id seen before wins over any refusal: a retried call, or a reuse.
            SELECT * INTO existing FROM credit_holds WHERE request_id = p_request_ids[i];
            IF FOUND THEN
                IF existing.user_id = p_user_ids[i] AND existing.amount_usd = p_amounts[i] THEN
                    verdict := 'duplicate';
                ELSE
                    verdict := 'request_id_reused';
                END IF;
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;

    -- Each window written once, whatever the number of slots the batch took from it.
    IF b_names IS NOT NULL THEN
        UPDATE rate_limit_counters c SET requests = v.requests, tokens = v.tokens
        FROM unnest(b_names, b_req, b_tok, b_dirty) AS v(bucket, requests, tokens, dirty)
        WHERE v.dirty AND c.bucket = v.bucket AND c.window_start = w;
    END IF;
END;
$$;

-- Capture of a batch: one statement per table for the whole batch, the account rows last.
-- An item whose request was captured before (in an earlier call, or earlier in the same
-- batch) is `duplicate` and writes nothing; one whose user has no account is `no_account`.
CREATE OR REPLACE FUNCTION sb_capture_many(
    p_request_ids text[], p_user_ids text[], p_amounts numeric[], p_kinds text[],
    p_usage_logs jsonb[], p_billing_properties jsonb[]
)
RETURNS TABLE (verdict text, balance numeric)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := cardinality(p_request_ids);
    done integer[];
    r record;
BEGIN
    IF n IS NULL OR n = 0 THEN
        RETURN;
    END IF;
    IF cardinality(p_user_ids) <> n OR cardinality(p_amounts) <> n OR cardinality(p_kinds) <> n
       OR cardinality(p_usage_logs) <> n OR cardinality(p_billing_properties) <> n THEN
        RAISE EXCEPTION 'sb_capture_many: arrays of different lengths' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(p_amounts) a WHERE a IS NULL OR a < 0) THEN
        RAISE EXCEPTION 'capture amount must not be negative' USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(p_kinds) k WHERE k IS NULL OR k NOT IN ('capture', 'byok_fee')) THEN
        RAISE EXCEPTION 'unknown capture kind' USING ERRCODE = 'check_violation';
    END IF;

    -- The entries first (first occurrence of each request, existing accounts only), in
    -- request order; `done` lists the positions that were charged now.
    WITH items AS (
        SELECT DISTINCT ON (b.request_id) b.request_id, b.user_id, b.amount, b.kind, b.ord
        FROM unnest(p_request_ids, p_user_ids, p_amounts, p_kinds) WITH ORDINALITY
             AS b(request_id, user_id, amount, kind, ord)
        ORDER BY b.request_id, b.ord
    ), inserted AS (
        INSERT INTO ledger_entries (user_id, kind, amount_usd, idempotency_key, request_id, reason)
        SELECT a.user_id, i.kind, -i.amount, 'capture:' || i.request_id, i.request_id, 'llm usage'
        FROM items i JOIN accounts a ON a.user_id = i.user_id
        ORDER BY i.request_id
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING request_id
    )
    SELECT array_agg(i.ord::integer) INTO done
    FROM items i JOIN inserted x ON x.request_id = i.request_id;

    IF done IS NOT NULL THEN
        UPDATE credit_holds h SET state = 'captured', captured_usd = p_amounts[d], closed_at = now()
        FROM unnest(done) d
        WHERE h.request_id = p_request_ids[d] AND h.user_id = p_user_ids[d] AND h.state = 'active';

        INSERT INTO llm_usage_logs (
            user_id, provider_id, model_id, user_key_id, request_id, attempt, provider_slug, model_name,
            power_level, task_type, prompt_tokens, completion_tokens, total_tokens, cached_tokens,
            cost_input_usd, cost_output_usd, cost_total_usd, charged_usd, used_byok, stream,
            latency_ms, tokens_per_second, status_code, error_message, was_fallback, fallback_reason,
            request_ip, user_agent, session_id)
        SELECT
            l.user_id, l.provider_id, l.model_id, l.user_key_id, l.request_id, COALESCE(l.attempt, 1),
            l.provider_slug, l.model_name, l.power_level, l.task_type, COALESCE(l.prompt_tokens, 0),
            COALESCE(l.completion_tokens, 0), COALESCE(l.total_tokens, 0), COALESCE(l.cached_tokens, 0),
            COALESCE(l.cost_input_usd, 0), COALESCE(l.cost_output_usd, 0), COALESCE(l.cost_total_usd, 0),
            COALESCE(l.charged_usd, 0), COALESCE(l.used_byok, false), COALESCE(l.stream, false),
            l.latency_ms, l.tokens_per_second, l.status_code, l.error_message,
            COALESCE(l.was_fallback, false), l.fallback_reason, l.request_ip, l.user_agent, l.session_id
        FROM unnest(done) d
        CROSS JOIN LATERAL jsonb_populate_recordset(
            NULL::llm_usage_logs, COALESCE(p_usage_logs[d], '[]'::jsonb)) l;

        INSERT INTO billing_events (transaction_id, external_customer_id, properties)
        SELECT p_request_ids[d], p_user_ids[d], COALESCE(p_billing_properties[d], '{}'::jsonb)
        FROM unnest(done) d
        ORDER BY p_request_ids[d]
        ON CONFLICT (transaction_id) DO NOTHING;

        -- The account rows last, one update per account, in user order.
        FOR r IN SELECT p_user_ids[d] AS user_id, sum(p_amounts[d]) AS total
                 FROM unnest(done) d GROUP BY 1 ORDER BY 1 LOOP
            UPDATE accounts SET
                balance_usd = balance_usd - r.total,
                month_spend_usd = CASE WHEN month_spend_period = sb_current_period()
                                       THEN month_spend_usd + r.total ELSE r.total END,
                month_spend_period = sb_current_period()
            WHERE user_id = r.user_id;
        END LOOP;
    END IF;

    RETURN QUERY
    SELECT CASE WHEN b.ord = ANY (COALESCE(done, '{}')) THEN 'ok'
                WHEN a.user_id IS NULL THEN 'no_account'
                ELSE 'duplicate' END,
           a.balance_usd
    FROM unnest(p_user_ids) WITH ORDINALITY AS b(user_id, ord)
    LEFT JOIN accounts a ON a.user_id = b.user_id
    ORDER BY b.ord;
END;
$$;
