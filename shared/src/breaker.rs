//! The passive circuit breaker (routing.md), shared by every instance through the provider
//! row: consecutive failed calls ≥ the threshold, or more than half of ≥ 5 calls in the
//! last minute (from the usage logs), open a cooldown (`breaker_open_until`, at least the
//! upstream's `Retry-After`); a success closes it. Routing skips providers in
//! cooldown unless every candidate is. Writes happen only on failures and on the first
//! success after failures, never on the ordinary success path.

use std::time::Duration;

use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::config::BreakerSettings;
use crate::db::DbError;

/// Counts a failed call. A `Retry-After` (429/503) opens the cooldown at once for that long;
/// otherwise it opens when the consecutive failures reach the threshold. Returns whether the
/// breaker is open after this failure.
pub async fn record_failure(
    client: &impl GenericClient,
    provider_id: i32,
    retry_after: Option<Duration>,
    settings: &BreakerSettings,
) -> Result<bool, DbError> {
    let cooldown_secs = settings.cooldown.as_secs_f64();
    let retry_secs = retry_after.map(|d| d.as_secs_f64().min(3600.0));
    let row = client
        .query_typed_opt(
            "UPDATE llm_providers SET
                 breaker_consecutive_failures = breaker_consecutive_failures + 1,
                 breaker_open_until = CASE
                     WHEN $3::float8 IS NOT NULL
                         THEN greatest(coalesce(breaker_open_until, now()), now() + make_interval(secs => $3))
                     WHEN breaker_consecutive_failures + 1 >= $4
                         THEN greatest(coalesce(breaker_open_until, now()), now() + make_interval(secs => $2))
                     -- More than half of at least 5 calls in the last minute failed.
                     WHEN (SELECT count(*) >= 5
                                  AND 2 * count(*) FILTER (WHERE status_code IS NULL OR status_code >= 500
                                                              OR status_code IN (408, 429)) > count(*)
                           FROM llm_usage_logs
                           WHERE provider_id = $1 AND created_at > now() - interval '1 minute')
                         THEN greatest(coalesce(breaker_open_until, now()), now() + make_interval(secs => $2))
                     ELSE breaker_open_until
                 END
             WHERE id = $1
             RETURNING breaker_open_until > now()",
            &[
                (&provider_id, Type::INT4),
                (&cooldown_secs, Type::FLOAT8),
                (&retry_secs, Type::FLOAT8),
                (&settings.failure_threshold, Type::INT4),
            ],
        )
        .await?;
    Ok(row
        .and_then(|r| r.get::<_, Option<bool>>(0))
        .unwrap_or(false))
}

/// Closes the breaker after a successful call (only call it when the snapshot showed
/// failures or a cooldown, so the common path writes nothing).
pub async fn record_success(client: &impl GenericClient, provider_id: i32) -> Result<(), DbError> {
    client
        .query_typed(
            "UPDATE llm_providers SET breaker_consecutive_failures = 0, breaker_open_until = NULL
             WHERE id = $1 AND (breaker_consecutive_failures <> 0 OR breaker_open_until IS NOT NULL)",
            &[(&provider_id, Type::INT4)],
        )
        .await?;
    Ok(())
}
