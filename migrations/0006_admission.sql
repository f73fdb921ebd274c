-- Admission of a chat request in one round trip: the caller's per-key rate limit, the first
-- candidate provider's RPM/TPM limits, then the credit hold (sb_authorize). Fixed one-minute
-- windows in rate_limit_counters, shared by every instance. A conditional UPDATE re-checks
-- its WHERE clause against the newest row version, so concurrent requests never overshoot.

-- Takes one slot (and p_tokens tokens) in the current minute of p_bucket if the limits allow.
CREATE OR REPLACE FUNCTION sb_take_slot(
    p_bucket text, p_rpm integer, p_tokens bigint, p_tpm bigint,
    OUT admitted boolean, OUT retry_after_secs integer
)
LANGUAGE plpgsql AS $$
DECLARE
    w timestamptz := date_trunc('minute', now());
    updated integer;
BEGIN
    retry_after_secs := 0;
    IF p_bucket IS NULL OR (p_rpm IS NULL AND p_tpm IS NULL) THEN
        admitted := true;
        RETURN;
    END IF;
    INSERT INTO rate_limit_counters (bucket, window_start) VALUES (p_bucket, w)
    ON CONFLICT (bucket, window_start) DO NOTHING;
    UPDATE rate_limit_counters
    SET requests = requests + 1, tokens = tokens + GREATEST(p_tokens, 0)
    WHERE bucket = p_bucket AND window_start = w
      AND (p_rpm IS NULL OR requests < p_rpm)
      -- A single request larger than the whole TPM budget is admitted into an empty window.
      AND (p_tpm IS NULL OR tokens = 0 OR tokens + GREATEST(p_tokens, 0) <= p_tpm);
    GET DIAGNOSTICS updated = ROW_COUNT;
    admitted := updated > 0;
    IF NOT admitted THEN
        retry_after_secs := GREATEST(1, ceil(extract(epoch FROM (w + interval '1 minute' - now())))::integer);
    END IF;
END;
$$;

-- verdict: 'key_rate_limited' | 'provider_rate_limited' | any verdict of sb_authorize.
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

-- Old windows are pruned by the scheduled job.
CREATE OR REPLACE FUNCTION sb_prune_rate_limits(p_keep interval) RETURNS bigint
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM rate_limit_counters WHERE window_start < now() - p_keep RETURNING 1
    )
    SELECT count(*) FROM gone
$$;
