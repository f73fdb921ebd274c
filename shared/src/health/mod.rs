//! The provider health check (routing.md, "Circuit breaker and health"): probes every
//! provider, records its status and a history row, disables a provider after consecutive
//! `down` results and enables it again when it recovers, then does the platform's periodic
//! housekeeping (expired credit holds, old rate-limit windows, old history).
//!
//! One function, [`run`], is called by all three triggers: the health-check Lambda on its
//! EventBridge schedule, the timer inside `switchboard serve` ([`run_every`]) and
//! `POST /admin/health-check`.
//!
//! A run:
//! 1. takes a transaction-level advisory lock (`pg_try_advisory_xact_lock`) in a
//!    transaction held open for the whole run on a pooled connection; when another run
//!    holds it, returns at once with `skipped: true`, so overlapping runs never count a
//!    strike twice. The work itself runs on a second pooled connection. Transaction-scoped, the lock does not pin the session
//!    behind RDS Proxy (a session-level lock would, for the connection's whole life);
//! 2. lists the providers to probe: active ones and those the monitor itself disabled
//!    (`disabled_reason = 'health'`), so they can recover. Providers an admin disabled are
//!    not probed and never touched;
//! 3. probes them concurrently (at most `PROBE_CONCURRENCY` (8) at once), each within
//!    `probe_timeout` ([`probe`]); a probe the gateway itself could not make (out of
//!    descriptors, its resolver down: [`crate::local_failure`]) is `unknown` and leaves the
//!    provider's status, strikes and activation as they were;
//! 4. folds in the passive signal from recent usage rows and decides strikes and
//!    activation ([`decision`]);
//! 5. writes each provider in its own transaction under its row lock (`FOR UPDATE`), so
//!    an admin's concurrent change is never overwritten: the decision is made from the
//!    locked row, not from the list read before probing. A result is also dropped when the
//!    row shows a check recorded after this run began (a second guard against double
//!    strikes, should the advisory lock ever be ineffective, e.g. behind a pooler in
//!    transaction mode such as PgBouncer's). Disabling and enabling write an audit row
//!    (`actor = 'system:health-check'`, `request_id` = the run id);
//! 6. releases expired credit holds, deletes rate-limit windows older than 10 minutes and
//!    history rows older than `history_retention_days`;
//! 7. invalidates this process's catalog cache when a status or an activation changed,
//!    and logs one structured line ([`HealthRunSummary::log`]).

pub mod decision;
pub mod probe;
mod services;
pub mod store;
pub mod summary;

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::catalog::AuthType;
use crate::db::DbError;
use crate::ledger::{self, LedgerError};

use crate::config::HealthSettings;
pub use decision::{Activation, CurrentHealth, Decision, PassiveSignal, decide, fold_passive};
pub use probe::{BedrockProbe, ProbeAnswer, ProbeOutcome, ProbeTarget, classify};
pub use services::HealthServices;

/// Probes in flight at once (a run probes every active provider; 8 keeps one slow
/// provider from delaying the others without opening dozens of connections).
const PROBE_CONCURRENCY: usize = 8;
pub use summary::{HealthAction, HealthRunSummary, ProviderCheck, Trigger};

/// The audit actor of the monitor's own changes.
pub const AUDIT_ACTOR: &str = "system:health-check";
/// Expired stored responses deleted by one run at most (the next run takes the rest).
pub const RESPONSES_SWEPT_PER_RUN: i64 = 10_000;
/// Rate-limit counter windows older than this are deleted by each run.
pub const COUNTER_RETENTION: Duration = Duration::from_secs(10 * 60);

/// Runs one health check (see the module docs). Fails only on database errors; every
/// provider problem is a result.
pub async fn run(state: &HealthServices, trigger: Trigger) -> Result<HealthRunSummary, DbError> {
    let started = Instant::now();
    let mut summary = HealthRunSummary::new(Uuid::new_v4(), trigger);
    crate::metrics::record_health_run();
    // The run lock lives in a transaction kept open until the run ends, on a pooled
    // connection that goes back to the pool afterwards (a run makes no new connection when
    // the pool has two: out of file descriptors it still runs). Should the run be cancelled
    // (serve shutting down), dropping the transaction sends its ROLLBACK ahead of anything
    // the connection's next user sends, and the lock goes with it. A pool of one cannot lend
    // two: there the lock's connection is taken out of it (and closed after the run), so the
    // work can open another.
    let pooled = state.pool.get().await.map_err(DbError::from)?;
    let (mut kept, mut taken): (
        Option<deadpool_postgres::Object>,
        Option<deadpool_postgres::ClientWrapper>,
    ) = (None, None);
    let lock_client: &mut tokio_postgres::Client = if state.pool.status().max_size < 2 {
        taken.insert(deadpool_postgres::Object::take(pooled))
    } else {
        kept.insert(pooled)
    };
    let lock = lock_client.transaction().await?;
    let Some(run_started_at) = store::try_lock_run(&lock).await? else {
        drop(lock);
        summary.skipped = true;
        summary.duration_ms = elapsed_ms(started);
        summary.log();
        return Ok(summary);
    };
    let mut catalog_changed = false;
    let result = match state.pool.get().await {
        Ok(mut client) => {
            run_locked(
                state,
                &mut client,
                run_started_at,
                &mut summary,
                &mut catalog_changed,
            )
            .await
        }
        Err(error) => Err(DbError::from(error)),
    };
    // Ended explicitly so that a run right after this one finds the lock free.
    if let Err(error) = lock.commit().await {
        tracing::warn!(error = %error, "health check: could not end the run lock's transaction");
    }
    drop((kept, taken));
    if catalog_changed {
        state.catalog.invalidate();
    }
    result?;
    summary.duration_ms = elapsed_ms(started);
    summary.log();
    Ok(summary)
}

async fn run_locked(
    state: &HealthServices,
    client: &mut tokio_postgres::Client,
    run_started_at: chrono::DateTime<chrono::Utc>,
    summary: &mut HealthRunSummary,
    catalog_changed: &mut bool,
) -> Result<(), DbError> {
    let settings = state.config.health;
    let allow_private = state.config.server.allow_private_upstreams;
    let candidates = store::providers_to_probe(&*client).await?;
    let passive = store::passive_signals(&*client, settings.passive_window).await?;

    let mut targets = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        let key = match candidate.auth_type {
            AuthType::None | AuthType::AwsSigv4 => None,
            _ => state.system_keys.get(&candidate.provider_slug).await,
        };
        let bedrock = candidate.api_format == crate::catalog::ApiFormat::Bedrock;
        targets.push(ProbeTarget {
            // Bedrock: a signed 1-token Converse call of the cheapest active model.
            bedrock: bedrock.then(|| BedrockProbe {
                model: candidate.probe_model.clone(),
                aws: state.aws.clone(),
            }),
            url: if bedrock {
                candidate.base_url.clone()
            } else {
                ProbeTarget::probe_url(&candidate.base_url, candidate.health_url.as_deref())
            },
            provider_id: candidate.id,
            provider_slug: candidate.provider_slug,
            api_format: candidate.api_format,
            auth_type: candidate.auth_type,
            key,
        });
    }
    let http = &state.http;
    let mut answers: Vec<(ProbeTarget, ProbeAnswer)> = futures_util::stream::iter(targets)
        .map(|target| async move {
            let answer = probe::probe(http, &target, settings.probe_timeout, allow_private).await;
            (target, answer)
        })
        .buffer_unordered(PROBE_CONCURRENCY)
        .collect()
        .await;
    answers.sort_by_key(|(target, _)| target.provider_id);

    for (target, answer) in answers {
        let outcome = classify(&answer, settings.degraded_latency, settings.probe_timeout);
        let result = Probed {
            target: &target,
            outcome,
            passive: passive.get(&target.provider_id),
        };
        if let Some(check) = record(
            client,
            &result,
            &settings,
            run_started_at,
            summary.run_id,
            catalog_changed,
        )
        .await?
        {
            summary.add(check);
        }
    }

    summary.holds_released = ledger::expire_holds(&*client)
        .await
        .map_err(ledger_db_error)?;
    summary.counters_pruned = crate::admission::prune_counters(&*client, COUNTER_RETENTION).await?;
    summary.history_pruned =
        store::prune_history(&*client, settings.history_retention_days).await?;
    summary.responses_expired =
        crate::responses::sweep_expired(&*client, RESPONSES_SWEPT_PER_RUN).await?;
    Ok(())
}

/// One provider's probe, classified, with its passive signal.
struct Probed<'a> {
    target: &'a ProbeTarget,
    outcome: ProbeOutcome,
    passive: Option<&'a PassiveSignal>,
}

/// Writes one result in its own transaction under the provider's row lock. `None` when the
/// provider was deleted meanwhile or a newer result is already recorded.
async fn record(
    client: &mut tokio_postgres::Client,
    probed: &Probed<'_>,
    settings: &HealthSettings,
    run_started_at: chrono::DateTime<chrono::Utc>,
    run_id: Uuid,
    catalog_changed: &mut bool,
) -> Result<Option<ProviderCheck>, DbError> {
    let target = probed.target;
    let outcome = &probed.outcome;
    let (status, passive_note) = fold_passive(outcome.status, probed.passive, settings);
    let error = match (&outcome.note, passive_note) {
        (Some(note), Some(passive)) => Some(format!("{note}; {passive}")),
        (note, passive) => note.clone().or(passive),
    };

    let tx = client.transaction().await?;
    let Some(locked) = store::lock_provider(&tx, target.provider_id, run_started_at).await? else {
        return Ok(None);
    };
    if locked.checked_since {
        tracing::info!(provider = %target.provider_slug, "health check: a newer result is already recorded; this one is dropped");
        return Ok(None);
    }
    let decision = decide(&locked.current, status, settings.strikes_to_disable);
    // The gateway's own failure kept the probe from the provider: the history row says
    // `unknown` and why, the provider keeps the status it had (a `down` system provider
    // stays skipped, a healthy one stays healthy).
    let provider_status = if outcome.local_failure.is_some() {
        locked.health_status
    } else {
        status
    };
    let (is_active, disabled_reason, action) = match decision.activation {
        Activation::Unchanged => (
            locked.current.is_active,
            locked.current.disabled_reason.clone(),
            None,
        ),
        Activation::Disable => (
            false,
            Some(decision::DISABLED_BY_HEALTH.to_string()),
            Some(HealthAction::Disabled),
        ),
        Activation::Enable => (true, None, Some(HealthAction::ReEnabled)),
    };
    store::record_check(
        &tx,
        &store::CheckWrite {
            provider_id: target.provider_id,
            status,
            provider_status,
            response_time_ms: outcome.response_time_ms,
            http_status: outcome.http_status,
            error: error.as_deref(),
            consecutive_down: decision.consecutive_down,
            is_active,
            disabled_reason: disabled_reason.as_deref(),
            reset_breaker: action == Some(HealthAction::ReEnabled),
        },
    )
    .await?;
    if let Some(action) = action {
        let entity_id = target.provider_id.to_string();
        let run_id = run_id.to_string();
        audit::record(
            &tx,
            &AuditEntry {
                actor_key_id: None,
                actor: AUDIT_ACTOR,
                action: match action {
                    HealthAction::Disabled => "provider.health_disable",
                    HealthAction::ReEnabled => "provider.health_enable",
                },
                entity_type: "provider",
                entity_id: Some(&entity_id),
                before: Some(json!({
                    "provider_slug": target.provider_slug,
                    "is_active": locked.current.is_active,
                    "disabled_reason": locked.current.disabled_reason,
                    "health_status": locked.health_status,
                    "health_consecutive_down": locked.current.consecutive_down,
                })),
                after: Some(json!({
                    "provider_slug": target.provider_slug,
                    "is_active": is_active,
                    "disabled_reason": disabled_reason,
                    "health_status": status,
                    "health_consecutive_down": decision.consecutive_down,
                    "reason": error,
                })),
                request_id: Some(&run_id),
            },
        )
        .await?;
    }
    tx.commit().await?;

    match action {
        Some(HealthAction::Disabled) => tracing::warn!(
            provider = %target.provider_slug,
            consecutive_down = decision.consecutive_down,
            "health check: provider disabled"
        ),
        Some(HealthAction::ReEnabled) => {
            tracing::info!(provider = %target.provider_slug, "health check: provider enabled again")
        }
        None if locked.current.is_system_provider
            && decision.consecutive_down == settings.strikes_to_disable =>
        {
            tracing::warn!(provider = %target.provider_slug, "health check: system provider is down (never disabled automatically)")
        }
        None => {}
    }
    crate::metrics::record_health_check(
        &target.provider_slug,
        status.as_str(),
        matches!(action, Some(HealthAction::Disabled)),
    );
    if action.is_some() || provider_status != locked.health_status {
        *catalog_changed = true;
    }
    Ok(Some(ProviderCheck {
        provider_id: target.provider_id,
        provider_slug: target.provider_slug.clone(),
        status,
        probe_status: outcome.status,
        http_status: outcome.http_status,
        response_time_ms: outcome.response_time_ms,
        consecutive_down: decision.consecutive_down,
        error,
        action,
    }))
}

/// Runs the check every `interval` until `stop` completes (the timer of `switchboard
/// serve`). The first run comes one interval after the start, not at once, so a process
/// that starts and stops quickly (tests, a one-off) probes nothing. A run in flight when
/// `stop` completes is cancelled: each provider's write is its own transaction, and the
/// run lock goes with the run's connection.
pub async fn run_every(state: HealthServices, interval: Duration, stop: impl Future<Output = ()>) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => {}
        }
        tokio::select! {
            () = &mut stop => break,
            result = run(&state, Trigger::Timer) => {
                if let Err(error) = result {
                    tracing::warn!(error = %crate::report::error_chain(&error), "health check failed");
                }
            }
        }
    }
    tracing::debug!("health check timer stopped");
}

fn ledger_db_error(error: LedgerError) -> DbError {
    match error {
        LedgerError::Db(db) => db,
        other => DbError::Corrupt(format!("releasing expired holds: {other}")),
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
