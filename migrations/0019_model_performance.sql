-- Measured model performance (issue 18).
--
-- Usage rows of streams record the time to the first content (`ttft_ms`); `latency_ms`
-- stays the time to the complete answer. Each model (one offer of one provider) keeps the
-- p50 of its successful calls over a sliding window: `avg_latency_ms` (buffered calls,
-- time to the complete answer), `avg_ttft_ms` (streams, time to first token) and
-- `avg_tokens_per_second`, each with its sample count. `sb_refresh_model_performance`
-- recomputes them; the catalog load calls it, and it runs at most once per `p_min_age`
-- across all processes.
ALTER TABLE llm_usage_logs ADD COLUMN ttft_ms integer;

ALTER TABLE llm_models
    ADD COLUMN avg_ttft_ms integer,
    ADD COLUMN latency_samples integer NOT NULL DEFAULT 0,
    ADD COLUMN ttft_samples integer NOT NULL DEFAULT 0,
    ADD COLUMN tokens_per_second_samples integer NOT NULL DEFAULT 0,
    ADD COLUMN performance_updated_at timestamptz;

-- When the performance was last recomputed (one row).
CREATE TABLE model_performance_refresh (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    refreshed_at timestamptz NOT NULL
);
INSERT INTO model_performance_refresh (refreshed_at) VALUES ('-infinity');

-- Recomputes every model's measured performance from its successful calls of the last
-- `p_window`, unless that was done less than `p_min_age` ago (then it returns false at
-- the cost of one row read). A model without calls in the window keeps its last values
-- with zero samples: routing treats it as unmeasured, so a model once dropped for being
-- slow is tried and measured again later.
CREATE OR REPLACE FUNCTION sb_refresh_model_performance(p_window interval, p_min_age interval)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE model_performance_refresh SET refreshed_at = now()
    WHERE id AND refreshed_at <= now() - p_min_age;
    IF NOT FOUND THEN
        RETURN false;
    END IF;

    WITH recent AS (
        SELECT model_id, stream, latency_ms, ttft_ms, tokens_per_second
        FROM llm_usage_logs
        WHERE created_at > now() - p_window AND status_code = 200 AND model_id IS NOT NULL
          AND error_message IS NULL
    ), stats AS (
        SELECT m.id AS model_id,
               percentile_disc(0.5) WITHIN GROUP (ORDER BY r.latency_ms) FILTER (WHERE NOT r.stream) AS latency,
               count(r.latency_ms) FILTER (WHERE NOT r.stream) AS latency_n,
               percentile_disc(0.5) WITHIN GROUP (ORDER BY r.ttft_ms) FILTER (WHERE r.stream) AS ttft,
               count(r.ttft_ms) FILTER (WHERE r.stream) AS ttft_n,
               percentile_disc(0.5) WITHIN GROUP (ORDER BY r.tokens_per_second) AS tps,
               count(r.tokens_per_second) AS tps_n
        FROM llm_models m LEFT JOIN recent r ON r.model_id = m.id
        GROUP BY m.id
    )
    UPDATE llm_models m SET
        avg_latency_ms = COALESCE(s.latency, m.avg_latency_ms),
        latency_samples = s.latency_n,
        avg_ttft_ms = COALESCE(s.ttft, m.avg_ttft_ms),
        ttft_samples = s.ttft_n,
        avg_tokens_per_second = COALESCE(s.tps, m.avg_tokens_per_second),
        tokens_per_second_samples = s.tps_n,
        performance_updated_at = now()
    FROM stats s
    WHERE m.id = s.model_id
      AND (m.latency_samples, m.ttft_samples, m.tokens_per_second_samples,
           m.avg_latency_ms, m.avg_ttft_ms, m.avg_tokens_per_second)
          IS DISTINCT FROM
          (s.latency_n::integer, s.ttft_n::integer, s.tps_n::integer,
           COALESCE(s.latency, m.avg_latency_ms), COALESCE(s.ttft, m.avg_ttft_ms),
           COALESCE(s.tps, m.avg_tokens_per_second));
    RETURN true;
END;
$$;

-- The three statements that write usage rows, as in 0018 with the time to first token.

CREATE OR REPLACE FUNCTION sb_insert_usage_logs(p_usage_logs jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO llm_usage_logs (
        user_id, provider_id, model_id, user_key_id, request_id, attempt, provider_slug, model_name,
        power_level, task_type, prompt_tokens, completion_tokens, total_tokens, cached_tokens,
        cost_input_usd, cost_output_usd, cost_total_usd, charged_usd, used_byok, stream,
        latency_ms, tokens_per_second, status_code, error_message, was_fallback, fallback_reason,
        request_ip, user_agent, session_id,
        price_input_per_1m, price_cached_input_per_1m, price_cache_write_per_1m, price_cache_write_1h_per_1m, price_output_per_1m, route, ttft_ms)
    SELECT
        user_id, provider_id, model_id, user_key_id, request_id, COALESCE(attempt, 1), provider_slug, model_name,
        power_level, task_type, COALESCE(prompt_tokens, 0), COALESCE(completion_tokens, 0),
        COALESCE(total_tokens, 0), COALESCE(cached_tokens, 0),
        COALESCE(cost_input_usd, 0), COALESCE(cost_output_usd, 0), COALESCE(cost_total_usd, 0),
        COALESCE(charged_usd, 0), COALESCE(used_byok, false), COALESCE(stream, false),
        latency_ms, tokens_per_second, status_code, error_message, COALESCE(was_fallback, false), fallback_reason,
        request_ip, user_agent, session_id,
        price_input_per_1m, price_cached_input_per_1m, price_cache_write_per_1m, price_cache_write_1h_per_1m, price_output_per_1m, route, ttft_ms
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
        request_ip, user_agent, session_id,
        price_input_per_1m, price_cached_input_per_1m, price_cache_write_per_1m, price_cache_write_1h_per_1m, price_output_per_1m, route, ttft_ms)
    SELECT
        user_id, provider_id, model_id, user_key_id, request_id, COALESCE(attempt, 1), provider_slug, model_name,
        power_level, task_type, COALESCE(prompt_tokens, 0), COALESCE(completion_tokens, 0),
        COALESCE(total_tokens, 0), COALESCE(cached_tokens, 0),
        COALESCE(cost_input_usd, 0), COALESCE(cost_output_usd, 0), COALESCE(cost_total_usd, 0),
        COALESCE(charged_usd, 0), COALESCE(used_byok, false), COALESCE(stream, false),
        latency_ms, tokens_per_second, status_code, error_message, COALESCE(was_fallback, false), fallback_reason,
        request_ip, user_agent, session_id,
        price_input_per_1m, price_cached_input_per_1m, price_cache_write_per_1m, price_cache_write_1h_per_1m, price_output_per_1m, route, ttft_ms
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
            request_ip, user_agent, session_id,
        price_input_per_1m, price_cached_input_per_1m, price_cache_write_per_1m, price_cache_write_1h_per_1m, price_output_per_1m, route, ttft_ms)
        SELECT
            l.user_id, l.provider_id, l.model_id, l.user_key_id, l.request_id, COALESCE(l.attempt, 1),
            l.provider_slug, l.model_name, l.power_level, l.task_type, COALESCE(l.prompt_tokens, 0),
            COALESCE(l.completion_tokens, 0), COALESCE(l.total_tokens, 0), COALESCE(l.cached_tokens, 0),
            COALESCE(l.cost_input_usd, 0), COALESCE(l.cost_output_usd, 0), COALESCE(l.cost_total_usd, 0),
            COALESCE(l.charged_usd, 0), COALESCE(l.used_byok, false), COALESCE(l.stream, false),
            l.latency_ms, l.tokens_per_second, l.status_code, l.error_message,
            COALESCE(l.was_fallback, false), l.fallback_reason, l.request_ip, l.user_agent, l.session_id,
            l.price_input_per_1m, l.price_cached_input_per_1m, l.price_cache_write_per_1m,
            l.price_cache_write_1h_per_1m, l.price_output_per_1m, l.route, l.ttft_ms
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
