-- Grant recall (issue 31; ledger.md, "Quota grants": no account is refused while another
-- instance sits on its money). An admission about to be refused for credits or the monthly
-- cap marks the account's other grants recalled; each instance looks for recalls among its
-- grants at every flush and shrinks a recalled grant to what it has in flight and not yet
-- written; the refused admission then tries again.

ALTER TABLE credit_holds ADD COLUMN IF NOT EXISTS recalled_at timestamptz;

-- Marks the account's active grants, but p_except (the caller's own), recalled; answers
-- what they hold (0: nothing to wait for).
CREATE OR REPLACE FUNCTION sb_recall_grants(p_user_id text, p_except text)
RETURNS numeric
LANGUAGE sql AS $$
    WITH recalled AS (
        UPDATE credit_holds SET recalled_at = now()
        WHERE user_id = p_user_id AND state = 'active' AND request_id LIKE 'grant:%'
          AND request_id IS DISTINCT FROM p_except AND expires_at > now() AND amount_usd > 0
        RETURNING amount_usd
    )
    SELECT COALESCE(sum(amount_usd), 0) FROM recalled;
$$;

-- Shrinks a grant to at most p_keep (what its instance has in flight and not yet written)
-- and clears its recall, under the account's lock; answers the new amount and the change
-- (the instance adds the change to its own count, as with sb_grant). NULL held: the grant
-- is no longer active.
CREATE OR REPLACE FUNCTION sb_shrink_grant(
    p_grant_id text, p_keep numeric, OUT held numeric, OUT delta numeric
)
LANGUAGE plpgsql AS $$
DECLARE
    owner text;
    mine numeric;
BEGIN
    IF p_keep < 0 THEN
        RAISE EXCEPTION 'grant amounts must not be negative' USING ERRCODE = 'check_violation';
    END IF;
    delta := 0;
    SELECT h.user_id INTO owner FROM credit_holds h
    WHERE h.request_id = p_grant_id AND h.state = 'active';
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- The same per-account lock as every hold (sb_authorize, sb_grant).
    PERFORM pg_advisory_xact_lock(1397246028, hashtext(owner));
    SELECT h.amount_usd INTO mine FROM credit_holds h
    WHERE h.request_id = p_grant_id AND h.state = 'active';
    IF NOT FOUND THEN
        RETURN;
    END IF;
    held := LEAST(mine, p_keep);
    UPDATE credit_holds SET amount_usd = held, recalled_at = NULL
    WHERE request_id = p_grant_id;
    delta := held - mine;
END;
$$;
