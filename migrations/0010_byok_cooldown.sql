-- A user's own provider key that the provider rate limits (429) cools down by itself
-- (issue 14): until `cooldown_until` the chat path skips it, and only it. Before, such a
-- 429 counted toward the provider's shared circuit breaker, so one tenant's exhausted
-- key cooled the provider down for every tenant. NULL: not cooling down.
ALTER TABLE user_api_keys ADD COLUMN cooldown_until timestamptz;
