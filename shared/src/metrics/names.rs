//! Every metric name Switchboard writes, and how each is shown: the histogram buckets by
//! name, the nano-dollar counters in dollars. A leaf: the registry, the EMF writer and the
//! recording functions all read it.

use rust_decimal::Decimal;

pub const REQUESTS: &str = "switchboard_requests_total";
pub const REQUEST_DURATION: &str = "switchboard_request_duration_seconds";
pub const UPSTREAM_DURATION: &str = "switchboard_upstream_duration_seconds";
pub const GATEWAY_OVERHEAD: &str = "switchboard_gateway_overhead_seconds";
pub const DB_DURATION: &str = "switchboard_db_duration_seconds";
pub const TIME_TO_FIRST_TOKEN: &str = "switchboard_time_to_first_token_seconds";
pub const UPSTREAM_ATTEMPTS: &str = "switchboard_upstream_attempts_total";
pub const LOCAL_ERRORS: &str = "switchboard_local_errors_total";
pub const TOKENS: &str = "switchboard_tokens_total";
pub const COST_USD: &str = "switchboard_cost_usd_total";
pub const CHARGED_USD: &str = "switchboard_charged_usd_total";
pub const LEDGER_ADMISSIONS: &str = "switchboard_ledger_admissions_total";
pub const LEDGER_CAPTURES: &str = "switchboard_ledger_captures_total";
pub const LEDGER_RELEASES: &str = "switchboard_ledger_releases_total";
pub const LEDGER_RETRIES: &str = "switchboard_ledger_settle_retries_total";
pub const LEDGER_BATCH_SIZE: &str = "switchboard_ledger_batch_size";
pub const LEDGER_HOLDS_ACTIVE: &str = "switchboard_ledger_holds_active";
pub const PENDING_CHARGES: &str = "switchboard_pending_charges";
pub const PENDING_CHARGE_AGE: &str = "switchboard_pending_charge_oldest_age_seconds";
/// Pending charges a drain (the spool's, or the billing-export function's of the queue)
/// wrote into the ledger, by outcome (captured, duplicate); and those the ledger refused.
/// Captures of granted requests queued and not yet written (`serve`).
pub const GRANT_CAPTURES_QUEUED: &str = "switchboard_ledger_grant_captures_queued";
pub const PENDING_CHARGES_WRITTEN: &str = "switchboard_pending_charges_written_total";
pub const PENDING_CHARGES_REFUSED: &str = "switchboard_pending_charges_refused_total";
pub const DB_POOL_WAIT: &str = "switchboard_db_pool_wait_seconds";
pub const DB_POOL_ERRORS: &str = "switchboard_db_pool_errors_total";
pub const PROVIDER_ENABLED: &str = "switchboard_provider_enabled";
pub const PROVIDER_BREAKER_OPEN: &str = "switchboard_provider_breaker_open";
pub const PROVIDER_HEALTH: &str = "switchboard_provider_health";
pub const HEALTH_RUNS: &str = "switchboard_health_check_runs_total";
pub const HEALTH_CHECKS: &str = "switchboard_health_checks_total";
pub const PROVIDER_AUTO_DISABLES: &str = "switchboard_provider_auto_disables_total";
pub const BILLING_EXPORTED: &str = "switchboard_billing_events_exported_total";
pub const BILLING_FAILURES: &str = "switchboard_billing_export_failures_total";
pub const BILLING_BACKLOG: &str = "switchboard_billing_export_backlog";
pub const BILLING_BACKLOG_AGE: &str = "switchboard_billing_export_backlog_age_seconds";
pub const TRACE_EXPORTS_DROPPED: &str = "switchboard_trace_exports_dropped_total";
pub const TRACE_EXPORTS_FAILED: &str = "switchboard_trace_exports_failed_total";
/// Read at scrape time (`serve`): the pool's state.
pub const DB_POOL_CONNECTIONS: &str = "switchboard_db_pool_connections";
pub const DB_POOL_MAX: &str = "switchboard_db_pool_max_connections";
pub const DB_POOL_WAITING: &str = "switchboard_db_pool_waiting";
/// `serve`'s listener: client connections open, its cap, those refused over the cap, and
/// requests cut off for sending too slowly.
pub const CONNECTIONS_OPEN: &str = "switchboard_connections_open";
pub const CONNECTIONS_MAX: &str = "switchboard_connections_max";
pub const CONNECTIONS_REFUSED: &str = "switchboard_connections_refused_total";
pub const CLIENT_TIMEOUTS: &str = "switchboard_client_timeouts_total";

/// Every metric name Switchboard writes (docs/observability.md has one row for each; the
/// dashboards may use no other).
pub const ALL: &[&str] = &[
    REQUESTS,
    REQUEST_DURATION,
    UPSTREAM_DURATION,
    GATEWAY_OVERHEAD,
    DB_DURATION,
    TIME_TO_FIRST_TOKEN,
    UPSTREAM_ATTEMPTS,
    LOCAL_ERRORS,
    TOKENS,
    COST_USD,
    CHARGED_USD,
    LEDGER_ADMISSIONS,
    LEDGER_CAPTURES,
    LEDGER_RELEASES,
    LEDGER_RETRIES,
    LEDGER_BATCH_SIZE,
    LEDGER_HOLDS_ACTIVE,
    PENDING_CHARGES,
    PENDING_CHARGE_AGE,
    PENDING_CHARGES_WRITTEN,
    GRANT_CAPTURES_QUEUED,
    PENDING_CHARGES_REFUSED,
    DB_POOL_WAIT,
    DB_POOL_ERRORS,
    DB_POOL_CONNECTIONS,
    DB_POOL_MAX,
    DB_POOL_WAITING,
    PROVIDER_ENABLED,
    PROVIDER_BREAKER_OPEN,
    PROVIDER_HEALTH,
    HEALTH_RUNS,
    HEALTH_CHECKS,
    PROVIDER_AUTO_DISABLES,
    BILLING_EXPORTED,
    BILLING_FAILURES,
    BILLING_BACKLOG,
    BILLING_BACKLOG_AGE,
    TRACE_EXPORTS_DROPPED,
    TRACE_EXPORTS_FAILED,
    CONNECTIONS_OPEN,
    CONNECTIONS_MAX,
    CONNECTIONS_REFUSED,
    CLIENT_TIMEOUTS,
];

/// Counters kept in billionths of a dollar (exact, like the ledger's `numeric(20, 9)`) and
/// shown in dollars.
const NANO_USD_COUNTERS: [&str; 2] = [COST_USD, CHARGED_USD];

/// Seconds: 0.5 ms to 5 min.
const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
];
/// Batch sizes: 1 to the largest batch.
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

pub(super) fn buckets_for(name: &str) -> &'static [f64] {
    if name == LEDGER_BATCH_SIZE {
        SIZES
    } else {
        SECONDS
    }
}

/// A counter's value as shown: dollars for the nano-dollar counters, exactly.
pub(super) fn format_counter(name: &str, value: u64) -> String {
    if !NANO_USD_COUNTERS.contains(&name) {
        return value.to_string();
    }
    Decimal::from_i128_with_scale(i128::from(value), 9)
        .normalize()
        .to_string()
}
