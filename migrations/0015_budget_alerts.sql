-- Budget alerts (issue 16). An account may have alert thresholds (percentages of its
-- monthly cap) and a low-balance amount. The charge that crosses one enqueues an alert in
-- its own transaction (a trigger on the account row the capture updates), so no alert is
-- lost and none is written after the fact; a deliverer POSTs each to the configured
-- webhook URL, signed, at least once, with retries.
ALTER TABLE accounts
    ADD COLUMN alert_thresholds_pct integer[] NOT NULL DEFAULT '{}'
        CHECK (1 <= ALL (alert_thresholds_pct) AND 100 >= ALL (alert_thresholds_pct)),
    ADD COLUMN low_balance_alert_usd numeric(20, 9)
        CHECK (low_balance_alert_usd IS NULL OR low_balance_alert_usd >= 0);

CREATE TABLE alert_events (
    id              bigserial PRIMARY KEY,
    event_id        uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    user_id         text NOT NULL REFERENCES accounts (user_id) ON DELETE CASCADE,
    type            text NOT NULL CHECK (type IN ('budget.threshold_crossed', 'balance.low')),
    -- One alert per threshold per month, one low-balance alert per top-up.
    dedupe_key      text NOT NULL UNIQUE,
    payload         jsonb NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_error      text,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_events_pending_idx ON alert_events (id) WHERE delivered_at IS NULL;

CREATE OR REPLACE FUNCTION sb_budget_alerts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    old_spend numeric;
    pct integer;
    last_topup bigint;
    event uuid;
BEGIN
    IF cardinality(NEW.alert_thresholds_pct) = 0 AND NEW.low_balance_alert_usd IS NULL THEN
        RETURN NEW;
    END IF;
    old_spend := CASE WHEN OLD.month_spend_period = NEW.month_spend_period
                      THEN OLD.month_spend_usd ELSE 0 END;
    IF NEW.monthly_cap_usd IS NOT NULL AND NEW.monthly_cap_usd > 0
       AND NEW.month_spend_usd > old_spend THEN
        FOREACH pct IN ARRAY NEW.alert_thresholds_pct LOOP
            IF old_spend < NEW.monthly_cap_usd * pct / 100
               AND NEW.month_spend_usd >= NEW.monthly_cap_usd * pct / 100 THEN
                event := gen_random_uuid();
                INSERT INTO alert_events (event_id, user_id, type, dedupe_key, payload)
                VALUES (event, NEW.user_id, 'budget.threshold_crossed',
                        'threshold:' || NEW.user_id || ':' || to_char(NEW.month_spend_period, 'YYYY-MM') || ':' || pct,
                        jsonb_build_object(
                            'id', event, 'type', 'budget.threshold_crossed',
                            'user_id', NEW.user_id, 'threshold_pct', pct,
                            'month', to_char(NEW.month_spend_period, 'YYYY-MM'),
                            'month_spend_usd', trim_scale(NEW.month_spend_usd)::text,
                            'monthly_cap_usd', trim_scale(NEW.monthly_cap_usd)::text,
                            'balance_usd', trim_scale(NEW.balance_usd)::text,
                            'created_at', now()))
                ON CONFLICT (dedupe_key) DO NOTHING;
            END IF;
        END LOOP;
    END IF;
    IF NEW.low_balance_alert_usd IS NOT NULL AND NEW.balance_usd < NEW.low_balance_alert_usd
       AND OLD.balance_usd >= NEW.low_balance_alert_usd THEN
        -- Once per top-up: the key names the latest top-up (0 before any).
        SELECT COALESCE(max(id), 0) INTO last_topup
        FROM ledger_entries WHERE user_id = NEW.user_id AND kind = 'topup';
        event := gen_random_uuid();
        INSERT INTO alert_events (event_id, user_id, type, dedupe_key, payload)
        VALUES (event, NEW.user_id, 'balance.low',
                'low:' || NEW.user_id || ':' || last_topup,
                jsonb_build_object(
                    'id', event, 'type', 'balance.low', 'user_id', NEW.user_id,
                    'month', to_char(NEW.month_spend_period, 'YYYY-MM'),
                    'month_spend_usd', trim_scale(NEW.month_spend_usd)::text,
                    'monthly_cap_usd', trim_scale(NEW.monthly_cap_usd)::text,
                    'balance_usd', trim_scale(NEW.balance_usd)::text,
                    'low_balance_alert_usd', trim_scale(NEW.low_balance_alert_usd)::text,
                    'created_at', now()))
        ON CONFLICT (dedupe_key) DO NOTHING;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER accounts_budget_alerts
    AFTER UPDATE OF balance_usd, month_spend_usd ON accounts
    FOR EACH ROW EXECUTE FUNCTION sb_budget_alerts();
