-- Less PostgreSQL work per request (issue 19), measured with bench/pgbench (see
-- bench/README.md, "Hot-path writes"); each change kept only because it moved the numbers.
--
-- 1. Indexes nothing reads. The admin usage filters use provider_slug and model_name (and
--    the time index); the performance refresh uses the time index. The ledger's
--    (user, kind, time) index served only the invariant check, which reads every entry of
--    the user anyway. Each was one more index insertion on every request.
DROP INDEX IF EXISTS llm_usage_logs_provider_time_idx;
DROP INDEX IF EXISTS llm_usage_logs_model_time_idx;
DROP INDEX IF EXISTS ledger_entries_user_kind_time_idx;

-- 2. Rate-limit windows may be lost in a PostgreSQL crash without losing money: after a
--    crash the table is empty, so each key and provider starts a fresh window (at most one
--    window's worth of requests above a limit, once). UNLOGGED: no WAL for the two
--    window upserts of every admission.
ALTER TABLE rate_limit_counters SET UNLOGGED;

-- 3. Room on each page for HOT updates of the rows every request updates in place (an
--    account's balance and month spend, a rate-limit window's count): no index entry per
--    update while the page has room.
ALTER TABLE accounts SET (fillfactor = 70);
ALTER TABLE rate_limit_counters SET (fillfactor = 70);
