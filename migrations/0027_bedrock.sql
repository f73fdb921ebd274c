-- Amazon Bedrock (issue 32): a provider format `bedrock` (the Converse API) whose calls are
-- signed with SigV4 from the AWS credential chain (`aws_sigv4`: no stored key, no BYOK).
-- The provider and its models are seeded inactive: an admin enables model access in the
-- Bedrock console, grants the function's role (template parameter BedrockModelArns), then
-- turns the rows on through the admin API. Prices are us-east-1 on-demand list prices in
-- USD per one million tokens.

ALTER TABLE llm_providers DROP CONSTRAINT IF EXISTS llm_providers_api_format_check;
ALTER TABLE llm_providers ADD CONSTRAINT llm_providers_api_format_check
    CHECK (api_format IN ('openai', 'anthropic', 'gemini', 'bedrock'));
ALTER TABLE llm_providers DROP CONSTRAINT IF EXISTS llm_providers_auth_type_check;
ALTER TABLE llm_providers ADD CONSTRAINT llm_providers_auth_type_check
    CHECK (auth_type IN ('bearer', 'x-api-key', 'x-goog-api-key', 'none', 'aws_sigv4'));
-- Only Bedrock is signed with SigV4, and Bedrock only so.
ALTER TABLE llm_providers ADD CONSTRAINT llm_providers_bedrock_sigv4
    CHECK ((api_format = 'bedrock') = (auth_type = 'aws_sigv4'));

INSERT INTO llm_providers
    (provider_name, provider_slug, api_format, base_url, health_url, auth_type,
     supports_streaming, supports_function_calling, supports_vision,
     rate_limit_rpm, rate_limit_tpm, rate_limit_rpd,
     is_active, is_byok_supported, is_system_provider, min_tier_required, disabled_reason)
VALUES
    ('Amazon Bedrock', 'bedrock', 'bedrock', 'https://bedrock-runtime.us-east-1.amazonaws.com',
     NULL, 'aws_sigv4', true, true, true, NULL, NULL, NULL, false, false, true, 'free', 'admin')
ON CONFLICT (provider_slug) DO NOTHING;

INSERT INTO llm_models
    (provider_id, model_name, model_id, display_name, max_tokens, context_window,
     supports_streaming, supports_function_calling, supports_vision, supports_json_mode,
     cost_per_1m_input_tokens, cost_per_1m_output_tokens, cost_per_1m_tokens_cached,
     cost_per_1m_cache_write_tokens, power_level, power_level_priority, min_tier_required,
     is_active)
SELECT p.id, m.model_name, m.model_id, m.display_name, m.max_tokens, m.context_window,
       true, m.tools, m.vision, false, m.cost_in, m.cost_out, m.cost_cached, m.cost_write,
       m.power_level, m.priority, 'free', false
FROM (VALUES
    -- Cross-region inference profile (us.): the model runs in any US region of the profile.
    ('Claude Sonnet 4 (Bedrock)', 'us.anthropic.claude-sonnet-4-20250514-v1:0', 'Claude Sonnet 4 (Bedrock, US profile)',
     64000, 200000, true, true, 3.00::numeric, 15.00::numeric, 0.30::numeric, 3.75::numeric, 'precision', 50),
    ('Nova Pro', 'amazon.nova-pro-v1:0', 'Amazon Nova Pro',
     5000, 300000, true, true, 0.80::numeric, 3.20::numeric, 0.20::numeric, NULL::numeric, 'balanced', 50),
    ('Nova Lite', 'amazon.nova-lite-v1:0', 'Amazon Nova Lite',
     5000, 300000, true, true, 0.06::numeric, 0.24::numeric, 0.015::numeric, NULL::numeric, 'eco', 50),
    ('Nova Micro', 'amazon.nova-micro-v1:0', 'Amazon Nova Micro',
     5000, 128000, true, false, 0.035::numeric, 0.14::numeric, 0.00875::numeric, NULL::numeric, 'eco', 60),
    ('Llama 3.3 70B (Bedrock)', 'us.meta.llama3-3-70b-instruct-v1:0', 'Llama 3.3 70B Instruct (Bedrock, US profile)',
     8192, 128000, true, false, 0.72::numeric, 0.72::numeric, NULL::numeric, NULL::numeric, 'eco', 70)
) AS m (model_name, model_id, display_name, max_tokens, context_window, tools, vision,
        cost_in, cost_out, cost_cached, cost_write, power_level, priority)
JOIN llm_providers p ON p.provider_slug = 'bedrock'
ON CONFLICT (provider_id, model_id) DO NOTHING;
