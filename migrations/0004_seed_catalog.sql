-- Seed catalog from the original specification (epic 3.1): 7 providers, 4 models,
-- 3 routing rules. Idempotent: re-running inserts nothing twice and never overwrites an
-- admin's later edits. Prices are list prices in USD per one million tokens.

INSERT INTO llm_providers
    (provider_name, provider_slug, api_format, base_url, health_url, auth_type,
     supports_streaming, supports_function_calling, supports_vision,
     rate_limit_rpm, rate_limit_tpm, rate_limit_rpd,
     is_active, is_byok_supported, is_system_provider, min_tier_required)
VALUES
    ('OpenAI', 'openai', 'openai', 'https://api.openai.com/v1',
     'https://api.openai.com/v1/models', 'bearer',
     true, true, true, 10000, 2000000, NULL, true, true, true, 'free'),
    ('Anthropic', 'anthropic', 'anthropic', 'https://api.anthropic.com/v1',
     'https://api.anthropic.com/v1/models', 'x-api-key',
     true, true, true, 4000, 400000, NULL, true, true, true, 'free'),
    ('Google', 'google', 'gemini', 'https://generativelanguage.googleapis.com/v1beta',
     'https://generativelanguage.googleapis.com/v1beta/models', 'x-goog-api-key',
     true, true, true, 2000, 4000000, NULL, true, true, true, 'free'),
    ('OpenRouter', 'openrouter', 'openai', 'https://openrouter.ai/api/v1',
     'https://openrouter.ai/api/v1/models', 'bearer',
     true, true, true, 1000, NULL, NULL, true, true, true, 'free'),
    ('Together AI', 'together', 'openai', 'https://api.together.xyz/v1',
     'https://api.together.xyz/v1/models', 'bearer',
     true, true, true, 600, NULL, NULL, true, true, false, 'free'),
    ('Groq', 'groq', 'openai', 'https://api.groq.com/openai/v1',
     'https://api.groq.com/openai/v1/models', 'bearer',
     true, true, true, 1000, 300000, 14400, true, true, false, 'free'),
    ('Fireworks AI', 'fireworks', 'openai', 'https://api.fireworks.ai/inference/v1',
     'https://api.fireworks.ai/inference/v1/models', 'bearer',
     true, true, true, 600, NULL, NULL, true, true, false, 'free')
ON CONFLICT (provider_slug) DO NOTHING;

INSERT INTO llm_models
    (provider_id, model_name, model_id, display_name, max_tokens, context_window,
     supports_streaming, supports_function_calling, supports_vision, supports_json_mode,
     cost_per_1m_input_tokens, cost_per_1m_output_tokens, cost_per_1m_tokens_cached,
     power_level, power_level_priority, min_tier_required)
SELECT p.id, m.model_name, m.model_id, m.display_name, m.max_tokens, m.context_window,
       m.supports_streaming, m.supports_function_calling, m.supports_vision, m.supports_json_mode,
       m.cost_in, m.cost_out, m.cost_cached, m.power_level, m.power_level_priority, m.min_tier
FROM (VALUES
    ('openai', 'GPT-4o', 'gpt-4o', 'GPT-4o', 16384, 128000,
     true, true, true, true, 2.50::numeric, 10.00::numeric, 1.25::numeric, 'balanced', 10, 'free'),
    ('openai', 'GPT-4 Turbo', 'gpt-4-turbo', 'GPT-4 Turbo', 4096, 128000,
     true, true, true, true, 10.00::numeric, 30.00::numeric, NULL::numeric, 'balanced', 20, 'free'),
    ('anthropic', 'Claude 3.5 Sonnet', 'claude-3-5-sonnet-20241022', 'Claude 3.5 Sonnet', 8192, 200000,
     true, true, true, false, 3.00::numeric, 15.00::numeric, 0.30::numeric, 'precision', 10, 'starter'),
    ('openrouter', 'Llama 3 70B', 'meta-llama/llama-3-70b-instruct', 'Llama 3 70B Instruct', 8192, 8192,
     true, false, false, false, 0.30::numeric, 0.40::numeric, NULL::numeric, 'eco', 10, 'free')
) AS m (provider_slug, model_name, model_id, display_name, max_tokens, context_window,
        supports_streaming, supports_function_calling, supports_vision, supports_json_mode,
        cost_in, cost_out, cost_cached, power_level, power_level_priority, min_tier)
JOIN llm_providers p ON p.provider_slug = m.provider_slug
ON CONFLICT (provider_id, model_id) DO NOTHING;

INSERT INTO llm_routing_rules (model_id, power_level, user_tier, task_type, priority, weight)
SELECT m.id, r.power_level, NULL, NULL, 1, 100
FROM (VALUES
    ('anthropic', 'claude-3-5-sonnet-20241022', 'precision'),
    ('openai', 'gpt-4-turbo', 'balanced'),
    ('openrouter', 'meta-llama/llama-3-70b-instruct', 'eco')
) AS r (provider_slug, model_id, power_level)
JOIN llm_providers p ON p.provider_slug = r.provider_slug
JOIN llm_models m ON m.provider_id = p.id AND m.model_id = r.model_id
WHERE NOT EXISTS (
    SELECT 1 FROM llm_routing_rules x
    WHERE x.model_id = m.id AND x.power_level = r.power_level
      AND x.user_tier IS NULL AND x.task_type IS NULL
);
