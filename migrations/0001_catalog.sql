-- Catalog: providers, models, routing rules (the seed's tables plus the design's columns).

CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- Tiers are ordered: free < starter < professional < enterprise.
CREATE OR REPLACE FUNCTION tier_rank(tier text) RETURNS int
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE tier
        WHEN 'free' THEN 0
        WHEN 'starter' THEN 1
        WHEN 'professional' THEN 2
        WHEN 'enterprise' THEN 3
    END
$$;

CREATE TABLE llm_providers (
    id                        serial PRIMARY KEY,
    provider_name             text NOT NULL CHECK (length(provider_name) BETWEEN 1 AND 200),
    provider_slug             text NOT NULL UNIQUE CHECK (provider_slug ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    api_format                text NOT NULL DEFAULT 'openai'
                              CHECK (api_format IN ('openai', 'anthropic', 'gemini')),
    base_url                  text NOT NULL CHECK (base_url ~ '^https?://'),
    health_url                text CHECK (health_url IS NULL OR health_url ~ '^https?://'),
    auth_type                 text NOT NULL DEFAULT 'bearer'
                              CHECK (auth_type IN ('bearer', 'x-api-key', 'x-goog-api-key', 'none')),
    supports_streaming        boolean NOT NULL DEFAULT true,
    supports_function_calling boolean NOT NULL DEFAULT false,
    supports_vision           boolean NOT NULL DEFAULT false,
    rate_limit_rpm            integer CHECK (rate_limit_rpm IS NULL OR rate_limit_rpm > 0),
    rate_limit_tpm            integer CHECK (rate_limit_tpm IS NULL OR rate_limit_tpm > 0),
    rate_limit_rpd            integer CHECK (rate_limit_rpd IS NULL OR rate_limit_rpd > 0),
    is_active                 boolean NOT NULL DEFAULT true,
    is_byok_supported         boolean NOT NULL DEFAULT true,
    is_system_provider        boolean NOT NULL DEFAULT false,
    health_status             text NOT NULL DEFAULT 'unknown'
                              CHECK (health_status IN ('healthy', 'degraded', 'down', 'unknown')),
    health_last_checked       timestamptz,
    health_response_time_ms   integer CHECK (health_response_time_ms IS NULL OR health_response_time_ms >= 0),
    -- Consecutive `down` results of the active health check (two strikes disable).
    health_consecutive_down   integer NOT NULL DEFAULT 0 CHECK (health_consecutive_down >= 0),
    -- Passive circuit breaker shared by every instance (routing.md).
    breaker_consecutive_failures integer NOT NULL DEFAULT 0 CHECK (breaker_consecutive_failures >= 0),
    breaker_open_until        timestamptz,
    -- Why the provider is inactive: an admin's decision or the health monitor's.
    disabled_reason           text CHECK (disabled_reason IS NULL OR disabled_reason IN ('admin', 'health')),
    min_tier_required         text NOT NULL DEFAULT 'free'
                              CHECK (tier_rank(min_tier_required) IS NOT NULL),
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX llm_providers_active_idx ON llm_providers (is_active, health_status);
CREATE TRIGGER llm_providers_updated_at BEFORE UPDATE ON llm_providers
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE llm_models (
    id                        serial PRIMARY KEY,
    provider_id               integer NOT NULL REFERENCES llm_providers (id) ON DELETE CASCADE,
    model_name                text NOT NULL CHECK (length(model_name) BETWEEN 1 AND 200),
    model_id                  text NOT NULL CHECK (length(model_id) BETWEEN 1 AND 200),
    display_name              text,
    max_tokens                integer CHECK (max_tokens IS NULL OR max_tokens > 0),
    context_window            integer NOT NULL CHECK (context_window > 0),
    supports_streaming        boolean NOT NULL DEFAULT true,
    supports_function_calling boolean NOT NULL DEFAULT false,
    supports_vision           boolean NOT NULL DEFAULT false,
    supports_json_mode        boolean NOT NULL DEFAULT false,
    -- USD per one million tokens; exact decimals, never negative.
    cost_per_1m_input_tokens  numeric(18, 9) NOT NULL CHECK (cost_per_1m_input_tokens >= 0),
    cost_per_1m_output_tokens numeric(18, 9) NOT NULL CHECK (cost_per_1m_output_tokens >= 0),
    -- Price of cached input tokens; NULL means the provider has no discount (input price).
    cost_per_1m_tokens_cached numeric(18, 9) CHECK (cost_per_1m_tokens_cached IS NULL OR cost_per_1m_tokens_cached >= 0),
    power_level               text CHECK (power_level IS NULL OR power_level IN ('eco', 'balanced', 'precision')),
    power_level_priority      integer NOT NULL DEFAULT 100,
    is_active                 boolean NOT NULL DEFAULT true,
    is_deprecated             boolean NOT NULL DEFAULT false,
    deprecation_date          date,
    replacement_model_id      integer REFERENCES llm_models (id) ON DELETE SET NULL,
    min_tier_required         text NOT NULL DEFAULT 'free'
                              CHECK (tier_rank(min_tier_required) IS NOT NULL),
    avg_latency_ms            integer CHECK (avg_latency_ms IS NULL OR avg_latency_ms >= 0),
    avg_tokens_per_second     numeric(12, 3) CHECK (avg_tokens_per_second IS NULL OR avg_tokens_per_second >= 0),
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider_id, model_id),
    CHECK (replacement_model_id IS NULL OR replacement_model_id <> id)
);
CREATE INDEX llm_models_model_id_idx ON llm_models (model_id);
CREATE TRIGGER llm_models_updated_at BEFORE UPDATE ON llm_models
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE llm_routing_rules (
    id             serial PRIMARY KEY,
    model_id       integer NOT NULL REFERENCES llm_models (id) ON DELETE CASCADE,
    power_level    text NOT NULL CHECK (power_level IN ('eco', 'balanced', 'precision')),
    -- NULL matches any tier / any task type.
    user_tier      text CHECK (user_tier IS NULL OR tier_rank(user_tier) IS NOT NULL),
    task_type      text CHECK (task_type IS NULL OR task_type IN ('code', 'chat', 'rag', 'creative')),
    priority       integer NOT NULL DEFAULT 100,
    weight         integer NOT NULL DEFAULT 100 CHECK (weight > 0),
    min_tokens     integer CHECK (min_tokens IS NULL OR min_tokens >= 0),
    max_tokens     integer CHECK (max_tokens IS NULL OR max_tokens > 0),
    requires_byok  boolean NOT NULL DEFAULT false,
    is_fallback    boolean NOT NULL DEFAULT false,
    fallback_order integer NOT NULL DEFAULT 0,
    is_active      boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (min_tokens IS NULL OR max_tokens IS NULL OR min_tokens <= max_tokens)
);
CREATE INDEX llm_routing_rules_lookup_idx ON llm_routing_rules (power_level, is_active);
CREATE TRIGGER llm_routing_rules_updated_at BEFORE UPDATE ON llm_routing_rules
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
