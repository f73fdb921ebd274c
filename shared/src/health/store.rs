//! The health check's SQL: the run lock, the providers to probe, the passive signal, the
//! per-provider write under a row lock, and history pruning. Every value is a parameter.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::catalog::{ApiFormat, AuthType, HealthStatus};
use crate::db::DbError;

use super::decision::{CurrentHealth, DISABLED_BY_HEALTH, PassiveSignal};

/// Arbitrary constant naming the advisory lock one run holds.
pub const RUN_LOCK_KEY: i64 = 0x5357_4845_414c_5448;

/// Takes the run lock in `tx` if it is free; returns the database's clock at that moment
/// (the run's start), or `None` when another run holds the lock. A transaction-level lock
/// (`pg_try_advisory_xact_lock`): it ends with `tx` (commit, rollback, or the connection
/// closing). A session-level lock would pin the session to one database connection behind
/// RDS Proxy; a transaction only holds a connection while it is open.
pub async fn try_lock_run(tx: &impl GenericClient) -> Result<Option<DateTime<Utc>>, DbError> {
    let row = tx
        .query_typed_one(
            "SELECT pg_try_advisory_xact_lock($1), now()",
            &[(&RUN_LOCK_KEY, Type::INT8)],
        )
        .await?;
    let locked: bool = row.try_get(0)?;
    Ok(locked.then(|| row.try_get(1)).transpose()?)
}

/// A provider the run probes.
#[derive(Debug, Clone)]
pub struct ProbeCandidate {
    pub id: i32,
    pub provider_slug: String,
    pub api_format: ApiFormat,
    pub auth_type: AuthType,
    pub base_url: String,
    pub health_url: Option<String>,
    /// The provider's cheapest active chat model: what a Bedrock probe calls (its runtime
    /// endpoint has no free models list).
    pub probe_model: Option<String>,
}

/// Active providers, and those the monitor itself disabled (so they can recover).
/// Providers an admin disabled are not probed.
pub async fn providers_to_probe(
    client: &impl GenericClient,
) -> Result<Vec<ProbeCandidate>, DbError> {
    let rows = client
        .query_typed(
            "SELECT id, provider_slug, api_format, auth_type, base_url, health_url,
                    (SELECT m.model_id FROM llm_models m
                     WHERE m.provider_id = p.id AND m.is_active AND m.model_type = 'chat'
                     ORDER BY m.cost_per_1m_input_tokens + m.cost_per_1m_output_tokens, m.id
                     LIMIT 1)
             FROM llm_providers p
             WHERE is_active OR disabled_reason = $1
             ORDER BY id",
            &[(&DISABLED_BY_HEALTH, Type::TEXT)],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let id: i32 = row.try_get(0)?;
            let corrupt = |e: crate::catalog::UnknownValue| {
                DbError::Corrupt(format!("llm_providers row {id}: {e}"))
            };
            Ok(ProbeCandidate {
                id,
                provider_slug: row.try_get(1)?,
                api_format: row.try_get::<_, &str>(2)?.parse().map_err(corrupt)?,
                auth_type: row.try_get::<_, &str>(3)?.parse().map_err(corrupt)?,
                base_url: row.try_get(4)?,
                health_url: row.try_get(5)?,
                probe_model: row.try_get(6)?,
            })
        })
        .collect()
}

/// Attempts and failed attempts per provider over the last `window` of usage rows. A
/// failed attempt has no status (no answer), a 5xx, or a 429.
pub async fn passive_signals(
    client: &impl GenericClient,
    window: Duration,
) -> Result<HashMap<i32, PassiveSignal>, DbError> {
    if window.is_zero() {
        return Ok(HashMap::new());
    }
    let secs = window.as_secs_f64();
    let rows = client
        .query_typed(
            "SELECT provider_id, count(*),
                    count(*) FILTER (WHERE status_code IS NULL OR status_code >= 500 OR status_code = 429)
             FROM llm_usage_logs
             WHERE provider_id IS NOT NULL AND created_at > now() - make_interval(secs => $1)
             GROUP BY provider_id",
            &[(&secs, Type::FLOAT8)],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get(0)?,
                PassiveSignal {
                    attempts: row.try_get(1)?,
                    failures: row.try_get(2)?,
                },
            ))
        })
        .collect()
}

/// A provider's row, locked for the rest of the transaction.
#[derive(Debug, Clone)]
pub struct LockedProvider {
    pub current: CurrentHealth,
    pub health_status: HealthStatus,
    /// Another run recorded a result after this run started (its result is newer).
    pub checked_since: bool,
}

/// Locks the provider's row (`FOR UPDATE`); `None` when it was deleted meanwhile.
pub async fn lock_provider(
    client: &impl GenericClient,
    id: i32,
    run_started_at: DateTime<Utc>,
) -> Result<Option<LockedProvider>, DbError> {
    let Some(row) = client
        .query_typed_opt(
            "SELECT is_active, disabled_reason, is_system_provider, health_consecutive_down,
                    health_status, coalesce(health_last_checked >= $2, false)
             FROM llm_providers WHERE id = $1 FOR UPDATE",
            &[(&id, Type::INT4), (&run_started_at, Type::TIMESTAMPTZ)],
        )
        .await?
    else {
        return Ok(None);
    };
    let health_status = row
        .try_get::<_, &str>(4)?
        .parse()
        .map_err(|e| DbError::Corrupt(format!("llm_providers row {id}: {e}")))?;
    Ok(Some(LockedProvider {
        current: CurrentHealth {
            is_active: row.try_get(0)?,
            disabled_reason: row.try_get(1)?,
            is_system_provider: row.try_get(2)?,
            consecutive_down: row.try_get(3)?,
        },
        health_status,
        checked_since: row.try_get(5)?,
    }))
}

/// What one check writes: the provider's health columns (and activation) and a history row.
#[derive(Debug, Clone)]
pub struct CheckWrite<'a> {
    pub provider_id: i32,
    /// The result, for the history row.
    pub status: HealthStatus,
    /// The provider's `health_status` after this check: `status`, or the one it had when
    /// the gateway itself kept the probe from the provider.
    pub provider_status: HealthStatus,
    pub response_time_ms: Option<i32>,
    pub http_status: Option<u16>,
    pub error: Option<&'a str>,
    pub consecutive_down: i32,
    pub is_active: bool,
    pub disabled_reason: Option<&'a str>,
    /// Clear the circuit breaker too (a provider coming back gets a fresh start).
    pub reset_breaker: bool,
}

/// Writes the result; run it in the transaction that holds the row lock.
pub async fn record_check(
    client: &impl GenericClient,
    write: &CheckWrite<'_>,
) -> Result<(), DbError> {
    let status = write.status.as_str();
    let provider_status = write.provider_status.as_str();
    let http_status = write.http_status.map(i32::from);
    client
        .query_typed(
            "UPDATE llm_providers SET
                 health_status = $2, health_last_checked = now(), health_response_time_ms = $3,
                 health_consecutive_down = $4, is_active = $5, disabled_reason = $6,
                 breaker_consecutive_failures = CASE WHEN $7 THEN 0 ELSE breaker_consecutive_failures END,
                 breaker_open_until = CASE WHEN $7 THEN NULL ELSE breaker_open_until END
             WHERE id = $1",
            &[
                (&write.provider_id, Type::INT4),
                (&provider_status, Type::TEXT),
                (&write.response_time_ms, Type::INT4),
                (&write.consecutive_down, Type::INT4),
                (&write.is_active, Type::BOOL),
                (&write.disabled_reason, Type::TEXT),
                (&write.reset_breaker, Type::BOOL),
            ],
        )
        .await?;
    client
        .query_typed(
            "INSERT INTO provider_health_checks (provider_id, status, response_time_ms, http_status, error)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                (&write.provider_id, Type::INT4),
                (&status, Type::TEXT),
                (&write.response_time_ms, Type::INT4),
                (&http_status, Type::INT4),
                (&write.error, Type::TEXT),
            ],
        )
        .await?;
    Ok(())
}

/// Deletes history rows older than `days`. Returns how many.
pub async fn prune_history(client: &impl GenericClient, days: i32) -> Result<u64, DbError> {
    let row = client
        .query_typed_one(
            "WITH gone AS (
                 DELETE FROM provider_health_checks WHERE checked_at < now() - make_interval(days => $1)
                 RETURNING 1
             )
             SELECT count(*) FROM gone",
            &[(&days, Type::INT4)],
        )
        .await?;
    Ok(row.try_get::<_, i64>(0)?.max(0) as u64)
}
