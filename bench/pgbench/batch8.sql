-- Eight requests: one batch of admissions, then one batch of captures (group commit).
-- Requests/s = tps × 8.
\set r random(1, 9000000000000000000)
SELECT count(*) FROM sb_admit_many(array_fill('bench'::text, ARRAY[8]), ARRAY(SELECT 'r' || :r || '-' || g FROM generate_series(1,8) g), array_fill(0.01::numeric, ARRAY[8]), array_fill(300::bigint, ARRAY[8]), array_fill('key-k1'::text, ARRAY[8]), array_fill(100000000, ARRAY[8]), array_fill('provider-1'::text, ARRAY[8]), array_fill(100000000, ARRAY[8]), array_fill(100::bigint, ARRAY[8]), array_fill(100000000000::bigint, ARRAY[8])) x WHERE verdict = 'ok';
SELECT count(*) FROM sb_capture_many(ARRAY(SELECT 'r' || :r || '-' || g FROM generate_series(1,8) g), array_fill('bench'::text, ARRAY[8]), array_fill(0.0000078::numeric, ARRAY[8]), array_fill('capture'::text, ARRAY[8]), array_fill(pgb_usage()::jsonb, ARRAY[8]), array_fill(pgb_bill()::jsonb, ARRAY[8])) x WHERE verdict = 'ok';
