-- Budget alerts stay off the hot path for accounts that set none (issue 16, review): the
-- trigger of 0015 called its PL/pgSQL function on every capture's account update, only for
-- the function to return at once. A WHEN condition is evaluated inside the executor
-- without calling the function, so such captures pay nothing for the feature.
DROP TRIGGER accounts_budget_alerts ON accounts;
CREATE TRIGGER accounts_budget_alerts
    AFTER UPDATE OF balance_usd, month_spend_usd ON accounts
    FOR EACH ROW
    WHEN (cardinality(NEW.alert_thresholds_pct) > 0 OR NEW.low_balance_alert_usd IS NOT NULL)
    EXECUTE FUNCTION sb_budget_alerts();
