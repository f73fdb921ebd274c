-- Prompt-cache writes are priced (issue 16). Anthropic bills a 5-minute cache write at
-- 1.25 × the input price and a 1-hour write at 2 ×; they were priced as plain input, so
-- every Claude call with `cache_control` under-charged. NULL keeps the provider's rule
-- (1.25 × / 2 × the input price); a value overrides it.
ALTER TABLE llm_models
    ADD COLUMN cost_per_1m_cache_write_tokens numeric(20, 9)
        CHECK (cost_per_1m_cache_write_tokens IS NULL OR cost_per_1m_cache_write_tokens >= 0),
    ADD COLUMN cost_per_1m_cache_write_1h_tokens numeric(20, 9)
        CHECK (cost_per_1m_cache_write_1h_tokens IS NULL OR cost_per_1m_cache_write_1h_tokens >= 0);

-- The seed's Claude model at Anthropic's list prices ($3.75 and $6.00 per 1M), unless an
-- admin has set them already.
UPDATE llm_models m
SET cost_per_1m_cache_write_tokens = 3.75, cost_per_1m_cache_write_1h_tokens = 6.00
FROM llm_providers p
WHERE p.id = m.provider_id AND p.provider_slug = 'anthropic'
  AND m.model_id = 'claude-3-5-sonnet-20241022'
  AND m.cost_per_1m_cache_write_tokens IS NULL AND m.cost_per_1m_cache_write_1h_tokens IS NULL;
