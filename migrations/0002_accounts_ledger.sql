-- Accounts, gateway keys, BYOK keys, the credit ledger and its outbox.

CREATE TABLE accounts (
    user_id             text PRIMARY KEY CHECK (user_id ~ '^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$'),
    tier                text NOT NULL DEFAULT 'free' CHECK (tier_rank(tier) IS NOT NULL),
    monthly_cap_usd     numeric(20, 9) CHECK (monthly_cap_usd IS NULL OR monthly_cap_usd >= 0),
    status              text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'closed')),
    default_power_level text CHECK (default_power_level IS NULL OR default_power_level IN ('eco', 'balanced', 'precision')),
    -- Kept in lockstep with ledger_entries in the same transaction: balance = sum(entries).
    balance_usd         numeric(20, 9) NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER accounts_updated_at BEFORE UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Switchboard's own API keys (sk-sb-...), stored as SHA-256 only.
CREATE TABLE gateway_api_keys (
    id           uuid PRIMARY KEY,
    user_id      text NOT NULL REFERENCES accounts (user_id) ON DELETE CASCADE,
    name         text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    key_hash     bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    key_prefix   text NOT NULL,
    role         text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    -- NULL: the tier's default requests-per-minute limit.
    rpm_limit    integer CHECK (rpm_limit IS NULL OR rpm_limit > 0),
    revoked_at   timestamptz,
    last_used_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gateway_api_keys_user_idx ON gateway_api_keys (user_id);
CREATE TRIGGER gateway_api_keys_updated_at BEFORE UPDATE ON gateway_api_keys
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- BYOK: a user's own provider key, envelope-encrypted (security.md).
CREATE TABLE user_api_keys (
    id                serial PRIMARY KEY,
    user_id           text NOT NULL REFERENCES accounts (user_id) ON DELETE CASCADE,
    provider_id       integer NOT NULL REFERENCES llm_providers (id) ON DELETE CASCADE,
    key_name          text,
    -- AES-256-GCM ciphertext of the provider key (with tag).
    encrypted_api_key bytea NOT NULL,
    key_prefix        text NOT NULL DEFAULT '',
    key_suffix        text NOT NULL DEFAULT '',
    kms_key_id        text NOT NULL,
    wrapped_data_key  bytea NOT NULL,
    nonce             bytea NOT NULL CHECK (length(nonce) = 12),
    alg_version       smallint NOT NULL DEFAULT 1 CHECK (alg_version > 0),
    is_active         boolean NOT NULL DEFAULT true,
    is_validated      boolean NOT NULL DEFAULT false,
    validation_error  text,
    last_validated_at timestamptz,
    total_requests    bigint NOT NULL DEFAULT 0 CHECK (total_requests >= 0),
    total_tokens      bigint NOT NULL DEFAULT 0 CHECK (total_tokens >= 0),
    total_cost_usd    numeric(20, 9) NOT NULL DEFAULT 0 CHECK (total_cost_usd >= 0),
    last_used_at      timestamptz,
    created_ip        inet,
    last_rotated_at   timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, provider_id)
);
CREATE INDEX user_api_keys_provider_idx ON user_api_keys (provider_id);
CREATE TRIGGER user_api_keys_updated_at BEFORE UPDATE ON user_api_keys
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Append-only money movements. Positive adds credit, negative spends it.
CREATE TABLE ledger_entries (
    id              bigserial PRIMARY KEY,
    user_id         text NOT NULL REFERENCES accounts (user_id) ON DELETE RESTRICT,
    kind            text NOT NULL CHECK (kind IN ('topup', 'adjustment', 'capture', 'refund', 'byok_fee')),
    amount_usd      numeric(20, 9) NOT NULL,
    idempotency_key text NOT NULL UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    request_id      text,
    reason          text,
    actor           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (kind <> 'topup' OR amount_usd > 0),
    CHECK (kind <> 'capture' OR amount_usd <= 0)
);
CREATE INDEX ledger_entries_user_idx ON ledger_entries (user_id, id);
-- Month spend for caps: captures per user per time.
CREATE INDEX ledger_entries_user_kind_time_idx ON ledger_entries (user_id, kind, created_at);

CREATE OR REPLACE FUNCTION ledger_entries_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();

CREATE TABLE credit_holds (
    id          bigserial PRIMARY KEY,
    request_id  text NOT NULL UNIQUE CHECK (length(request_id) BETWEEN 1 AND 200),
    user_id     text NOT NULL REFERENCES accounts (user_id) ON DELETE RESTRICT,
    amount_usd  numeric(20, 9) NOT NULL CHECK (amount_usd >= 0),
    state       text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'captured', 'released', 'expired')),
    captured_usd numeric(20, 9) CHECK (captured_usd IS NULL OR captured_usd >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    closed_at   timestamptz,
    CHECK ((state = 'active') = (closed_at IS NULL))
);
CREATE INDEX credit_holds_active_user_idx ON credit_holds (user_id) WHERE state = 'active';
CREATE INDEX credit_holds_active_expiry_idx ON credit_holds (expires_at) WHERE state = 'active';

-- Outbox of billing events (Lago's event shape); billed_at is set by the exporter.
CREATE TABLE billing_events (
    id                   bigserial PRIMARY KEY,
    transaction_id       text NOT NULL UNIQUE,
    external_customer_id text NOT NULL,
    code                 text NOT NULL DEFAULT 'llm_usage',
    properties           jsonb NOT NULL DEFAULT '{}'::jsonb,
    event_timestamp      timestamptz NOT NULL DEFAULT now(),
    billed_at            timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_events_unbilled_idx ON billing_events (id) WHERE billed_at IS NULL;
