-- Fixtures of the pgbench scripts beside this file (see bench/README.md): one funded
-- account and a usage row and billing properties shaped like the gateway's.
INSERT INTO accounts (user_id, tier) VALUES ('bench', 'enterprise') ON CONFLICT DO NOTHING;
SELECT sb_credit('bench', 1000000000, 'topup', 'pgbench-seed', NULL, NULL);
CREATE OR REPLACE FUNCTION pgb_usage() RETURNS jsonb LANGUAGE sql IMMUTABLE AS $x$ SELECT '[{"user_id":"bench","provider_id":1,"model_id":2,"request_id":"req-abc-123456","attempt":1,"provider_slug":"openai","model_name":"gpt-4o","power_level":"balanced","task_type":"chat","prompt_tokens":27,"completion_tokens":9,"total_tokens":36,"cached_tokens":0,"cost_input_usd":"0.0000675","cost_output_usd":"0.00009","cost_total_usd":"0.0001575","charged_usd":"0.0001575","used_byok":false,"stream":false,"latency_ms":1,"status_code":200,"was_fallback":false,"user_agent":"oha/1.4"}]'::jsonb $x$;
CREATE OR REPLACE FUNCTION pgb_bill() RETURNS jsonb LANGUAGE sql IMMUTABLE AS $x$ SELECT '{"model":"gpt-4o","provider":"openai","prompt_tokens":27,"completion_tokens":9,"cost_usd":"0.0001575","byok":false}'::jsonb $x$;
