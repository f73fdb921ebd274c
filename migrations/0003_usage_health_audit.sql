-- Usage logs, provider health history, audit log, shared rate-limit counters.

CREATE TABLE llm_usage_logs (
    id                bigserial PRIMARY KEY,
    user_id           text NOT NULL,
    provider_id       integer REFERENCES llm_providers (id) ON DELETE SET NULL,
    model_id          integer REFERENCES llm_models (id) ON DELETE SET NULL,
    user_key_id       integer REFERENCES user_api_keys (id) ON DELETE SET NULL,
    request_id        text NOT NULL,
    -- 1-based attempt number inside one request (fallbacks are later attempts).
    attempt           smallint NOT NULL DEFAULT 1 CHECK (attempt > 0),
    provider_slug     text,
    model_name        text,
    power_level       text CHECK (power_level IS NULL OR power_level IN ('eco', 'balanced', 'precision')),
    task_type         text CHECK (task_type IS NULL OR task_type IN ('code', 'chat', 'rag', 'creative')),
    prompt_tokens     integer NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens integer NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    total_tokens      integer NOT NULL DEFAULT 0 CHECK (total_tokens >= 0),
    cached_tokens     integer NOT NULL DEFAULT 0 CHECK (cached_tokens >= 0),
    cost_input_usd    numeric(20, 9) NOT NULL DEFAULT 0 CHECK (cost_input_usd >= 0),
    cost_output_usd   numeric(20, 9) NOT NULL DEFAULT 0 CHECK (cost_output_usd >= 0),
    cost_total_usd    numeric(20, 9) NOT NULL DEFAULT 0 CHECK (cost_total_usd >= 0),
    -- What the ledger charged for this attempt (0 for BYOK unless a platform fee applies).
    charged_usd       numeric(20, 9) NOT NULL DEFAULT 0 CHECK (charged_usd >= 0),
    used_byok         boolean NOT NULL DEFAULT false,
    stream            boolean NOT NULL DEFAULT false,
    latency_ms        integer CHECK (latency_ms IS NULL OR latency_ms >= 0),
    tokens_per_second numeric(12, 3),
    status_code       integer,
    error_message     text,
    was_fallback      boolean NOT NULL DEFAULT false,
    fallback_reason   text,
    lago_event_id     text,
    billed_at         timestamptz,
    request_ip        inet,
    user_agent        text,
    session_id        text,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX llm_usage_logs_user_time_idx ON llm_usage_logs (user_id, created_at DESC);
CREATE INDEX llm_usage_logs_provider_time_idx ON llm_usage_logs (provider_id, created_at DESC);
CREATE INDEX llm_usage_logs_model_time_idx ON llm_usage_logs (model_id, created_at DESC);
CREATE INDEX llm_usage_logs_request_idx ON llm_usage_logs (request_id);
CREATE INDEX llm_usage_logs_time_idx ON llm_usage_logs (created_at DESC);

CREATE TABLE provider_health_checks (
    id               bigserial PRIMARY KEY,
    provider_id      integer NOT NULL REFERENCES llm_providers (id) ON DELETE CASCADE,
    status           text NOT NULL CHECK (status IN ('healthy', 'degraded', 'down', 'unknown')),
    response_time_ms integer CHECK (response_time_ms IS NULL OR response_time_ms >= 0),
    http_status      integer,
    error            text,
    checked_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provider_health_checks_provider_time_idx ON provider_health_checks (provider_id, checked_at DESC);
CREATE INDEX provider_health_checks_time_idx ON provider_health_checks (checked_at);

CREATE TABLE audit_log (
    id            bigserial PRIMARY KEY,
    actor_key_id  uuid REFERENCES gateway_api_keys (id) ON DELETE SET NULL,
    -- 'system:health-check' for the monitor's own changes.
    actor         text NOT NULL,
    action        text NOT NULL,
    entity_type   text NOT NULL,
    entity_id     text,
    before        jsonb,
    after         jsonb,
    request_id    text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_time_idx ON audit_log (created_at DESC, id DESC);
CREATE INDEX audit_log_entity_idx ON audit_log (entity_type, entity_id);

-- Fixed-window counters shared by every instance (per key RPM, per provider RPM/TPM).
CREATE TABLE rate_limit_counters (
    bucket       text NOT NULL,
    window_start timestamptz NOT NULL,
    requests     bigint NOT NULL DEFAULT 0 CHECK (requests >= 0),
    tokens       bigint NOT NULL DEFAULT 0 CHECK (tokens >= 0),
    PRIMARY KEY (bucket, window_start)
);
CREATE INDEX rate_limit_counters_window_idx ON rate_limit_counters (window_start);
