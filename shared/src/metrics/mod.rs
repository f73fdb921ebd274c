//! Metrics (issue 20; names in api.md, "Metrics and timing", and docs/metrics.md): recorded
//! through the `metrics` facade into this process's [`Registry`], read back as Prometheus
//! text by `serve`'s `GET /metrics` ([`render`]) and written as CloudWatch Embedded Metric
//! Format lines by the Lambda functions ([`flush_emf`], before each response ends).
//!
//! Label values come only from the catalog (model and provider names as configured) and
//! from the fixed vocabularies below: never a user id, a key, a request id or anything a
//! client sent. `SWITCHBOARD_METRICS=0` installs no recorder (every record is then a no-op;
//! the benchmark's "without metrics" run).

mod emf;
mod handles;
mod names;
mod process;
mod registry;

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use ::metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use rust_decimal::Decimal;

use emf::render_emf;
pub use names::*;
pub use registry::Registry;

use crate::providers::Usage;

/// How this process reports its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// `serve`: scraped at `GET /metrics`.
    Prometheus,
    /// Lambda: EMF lines on stdout, flushed before each response ends.
    Emf,
}

static INSTALLED: OnceLock<(&'static Registry, Exposition)> = OnceLock::new();

/// Installs the process's recorder (once; later calls keep the first), unless
/// `SWITCHBOARD_METRICS=0`.
pub fn install(exposition: Exposition) {
    if std::env::var("SWITCHBOARD_METRICS").is_ok_and(|v| v.trim() == "0") {
        return;
    }
    let _ = INSTALLED.get_or_init(|| {
        let registry: &'static Registry =
            Box::leak(Box::new(Registry::new(exposition == Exposition::Emf)));
        if ::metrics::set_global_recorder(registry).is_err() {
            tracing::warn!("a metrics recorder was already installed");
        }
        describe();
        (registry, exposition)
    });
}

/// The installed registry, if any.
pub fn registry() -> Option<&'static Registry> {
    INSTALLED.get().map(|(registry, _)| *registry)
}

/// `GET /metrics`: every metric plus the process's own (RSS, CPU, open files) and `extra`
/// lines (the database pool's state, read at scrape time).
pub fn render(extra: &str) -> Option<String> {
    let registry = registry()?;
    let mut tail = process::render();
    tail.push_str(extra);
    Some(registry.render_prometheus(&tail))
}

/// The database pool's state now, as Prometheus lines.
pub fn pool_lines(pool: &crate::db::DbPool) -> String {
    let status = pool.status();
    let in_use = status.size.saturating_sub(status.available);
    format!(
        "# HELP switchboard_db_pool_connections Pooled database connections, by state.\n\
         # TYPE switchboard_db_pool_connections gauge\n\
         switchboard_db_pool_connections{{state=\"idle\"}} {}\n\
         switchboard_db_pool_connections{{state=\"in_use\"}} {in_use}\n\
         # HELP switchboard_db_pool_max_connections The pool's size limit.\n\
         # TYPE switchboard_db_pool_max_connections gauge\n\
         switchboard_db_pool_max_connections {}\n\
         # HELP switchboard_db_pool_waiting Tasks waiting for a pooled connection.\n\
         # TYPE switchboard_db_pool_waiting gauge\n\
         switchboard_db_pool_waiting {}\n",
        status.available, status.max_size, status.waiting
    )
}

/// Whether `presented` is the metrics token (compared as SHA-256 digests, so the time taken
/// says nothing about the token).
pub fn is_metrics_token(presented: &str, token: &crate::secret::Secret) -> bool {
    use sha2::{Digest, Sha256};
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(token.expose().as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Lambda: writes what was recorded since the last flush as EMF lines on stdout. A no-op
/// unless the EMF exposition is installed.
pub fn flush_emf() {
    let Some((registry, Exposition::Emf)) = INSTALLED.get().copied() else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let lines = render_emf(registry, now);
    if lines.is_empty() {
        return;
    }
    let mut text = lines.join("\n");
    text.push('\n');
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn describe() {
    describe_counter!(
        REQUESTS,
        Unit::Count,
        "Requests answered, by matched route, status class, model, provider, power level, BYOK and fallback."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from the request's arrival to the end of its answer (a stream's last byte)."
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Time spent waiting on providers (to the answer, or to a stream's first content)."
    );
    describe_histogram!(
        GATEWAY_OVERHEAD,
        Unit::Seconds,
        "The gateway's own time: to the answer's headers, less the upstream's time."
    );
    describe_histogram!(
        DB_DURATION,
        Unit::Seconds,
        "Time the request waited for the ledger's statements (admission and capture)."
    );
    describe_histogram!(
        TIME_TO_FIRST_TOKEN,
        Unit::Seconds,
        "Streams: time from the attempt's start to its first content."
    );
    describe_counter!(
        UPSTREAM_ATTEMPTS,
        Unit::Count,
        "Calls to providers, by outcome (2xx, 4xx, 429, 5xx, timeout, network, local)."
    );
    describe_counter!(
        LOCAL_ERRORS,
        Unit::Count,
        "Provider calls and health probes the gateway could not make because of its own resources, by kind: file_descriptors, ephemeral_ports, memory, dns_resolver."
    );
    describe_counter!(
        TOKENS,
        Unit::Count,
        "Tokens of captured requests, by bucket: input (uncached), cached_input, cache_write, output."
    );
    describe_counter!(
        COST_USD,
        "Provider cost of captured requests at catalog prices, USD."
    );
    describe_counter!(
        CHARGED_USD,
        "Credits charged for captured requests (the platform fee for BYOK), USD."
    );
    describe_counter!(
        LEDGER_ADMISSIONS,
        Unit::Count,
        "Admissions by outcome: admitted, insufficient_credits, monthly_cap, key_rate_limited, provider_rate_limited, account_disabled, error; admitted_after_recall (a refusal overturned by a recalled grant)."
    );
    describe_counter!(
        LEDGER_CAPTURES,
        Unit::Count,
        "Captures by outcome: captured, pending (left active for reconciliation)."
    );
    describe_counter!(
        LEDGER_RELEASES,
        Unit::Count,
        "Holds released (nothing charged), by outcome: released, failed."
    );
    describe_counter!(
        LEDGER_RETRIES,
        Unit::Count,
        "Settlement tries repeated after a database failure, by operation."
    );
    describe_histogram!(
        LEDGER_BATCH_SIZE,
        Unit::Count,
        "Requests per group-commit statement, by queue (admission, capture)."
    );
    describe_gauge!(
        LEDGER_HOLDS_ACTIVE,
        Unit::Count,
        "Holds this process has placed and not yet settled."
    );
    describe_gauge!(
        PENDING_CHARGES,
        Unit::Count,
        "Captures kept until the database takes them: in serve's spool, or in the Lambda queue (after each drain)."
    );
    describe_gauge!(
        PENDING_CHARGE_AGE,
        Unit::Seconds,
        "Age of the oldest pending charge in the spool (0 when it is empty)."
    );
    describe_counter!(
        PENDING_CHARGES_WRITTEN,
        Unit::Count,
        "Pending charges a drain wrote into the ledger, by outcome: captured, duplicate (already written)."
    );
    describe_counter!(
        PENDING_CHARGES_REFUSED,
        Unit::Count,
        "Pending charges the ledger refused for good (set aside for an operator)."
    );
    describe_histogram!(
        DB_POOL_WAIT,
        Unit::Seconds,
        "Time the ledger waited for a pooled database connection."
    );
    describe_counter!(
        DB_POOL_ERRORS,
        Unit::Count,
        "Pooled connections the ledger could not get."
    );
    describe_gauge!(
        PROVIDER_ENABLED,
        "1 when the provider is enabled in the catalog, else 0."
    );
    describe_gauge!(
        PROVIDER_BREAKER_OPEN,
        "1 while the provider's circuit breaker is open, else 0."
    );
    describe_counter!(
        HEALTH_CHECKS,
        Unit::Count,
        "Health-check probes, by provider and result (healthy, degraded, down, unknown)."
    );
    describe_counter!(
        PROVIDER_AUTO_DISABLES,
        Unit::Count,
        "Providers disabled by the health check."
    );
    describe_counter!(
        BILLING_EXPORTED,
        Unit::Count,
        "Billing events accepted by Lago."
    );
    describe_counter!(
        BILLING_FAILURES,
        Unit::Count,
        "Billing export batches that failed."
    );
    describe_gauge!(
        BILLING_BACKLOG,
        Unit::Count,
        "Billing events not yet exported (at the last export pass)."
    );
    describe_gauge!(
        BILLING_BACKLOG_AGE,
        Unit::Seconds,
        "Age of the oldest billing event not yet exported (at the last export pass)."
    );
    describe_gauge!(
        CONNECTIONS_OPEN,
        Unit::Count,
        "Client connections serve holds open."
    );
    describe_gauge!(
        CONNECTIONS_MAX,
        Unit::Count,
        "The most client connections serve holds at once (SWITCHBOARD_MAX_CONNECTIONS)."
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        Unit::Count,
        "Client connections refused at once because serve held its maximum."
    );
    describe_counter!(
        CLIENT_TIMEOUTS,
        Unit::Count,
        "Requests cut off because the client sent too slowly, by phase (headers, body)."
    );
}

/// `2xx` … `5xx`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// What the chat run learned about a request, for its labels: catalog names and fixed
/// vocabularies only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLabels {
    /// The catalog's model id (`gpt-4o`), not what the client asked for.
    pub model: String,
    /// The provider's slug.
    pub provider: String,
    pub power_level: &'static str,
    pub byok: bool,
    pub fallback: bool,
}

/// One answered request (the middleware, when its answer ends).
pub struct RequestRecord<'a> {
    pub route: &'a str,
    pub status: u16,
    pub labels: Option<&'a RequestLabels>,
    pub total: Duration,
    /// `/v1` routes only: the upstream wait, the gateway's own time, the ledger's wait.
    pub split: Option<(Duration, Duration, Duration)>,
}

/// The handles one answered request moves, by its labels.
struct RequestHandles {
    requests: Counter,
    duration: Histogram,
    overhead: Histogram,
    upstream: Histogram,
    db: Histogram,
}

/// The handles one capture moves, by route, model and provider.
struct CaptureHandles {
    tokens: [Counter; 4],
    cost: Counter,
    charged: Counter,
    ttft: Histogram,
}

static REQUEST_HANDLES: LazyLock<handles::HandleCache<RequestHandles>> =
    LazyLock::new(Default::default);
static CAPTURE_HANDLES: LazyLock<handles::HandleCache<CaptureHandles>> =
    LazyLock::new(Default::default);
static COUNTERS: LazyLock<handles::HandleCache<Counter>> = LazyLock::new(Default::default);
static HISTOGRAMS: LazyLock<handles::HandleCache<Histogram>> = LazyLock::new(Default::default);
static GAUGES: LazyLock<handles::HandleCache<Gauge>> = LazyLock::new(Default::default);

/// Every record below returns at once when no recorder is installed.
fn on() -> bool {
    INSTALLED.get().is_some()
}

fn bool_str(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

/// A counter with one label (or none: `label` empty), cached.
fn counter_of(name: &'static str, label: &'static str, value: &str) -> Arc<Counter> {
    COUNTERS.get(&[name, value], || {
        if label.is_empty() {
            counter!(name)
        } else {
            counter!(name, label => value.to_string())
        }
    })
}

fn histogram_of(name: &'static str, label: &'static str, value: &str) -> Arc<Histogram> {
    HISTOGRAMS.get(&[name, value], || {
        if label.is_empty() {
            histogram!(name)
        } else {
            histogram!(name, label => value.to_string())
        }
    })
}

fn gauge_of(name: &'static str, label: &'static str, value: &str) -> Arc<Gauge> {
    GAUGES.get(&[name, value], || {
        if label.is_empty() {
            gauge!(name)
        } else {
            gauge!(name, label => value.to_string())
        }
    })
}

pub fn record_request(record: &RequestRecord<'_>) {
    if !on() {
        return;
    }
    let class = status_class(record.status);
    let (model, provider, power, byok, fallback) = match record.labels {
        Some(l) => (
            l.model.as_str(),
            l.provider.as_str(),
            l.power_level,
            bool_str(l.byok),
            bool_str(l.fallback),
        ),
        None => ("", "", "", "false", "false"),
    };
    let route = record.route;
    let handles = REQUEST_HANDLES.get(
        &[route, class, model, provider, power, byok, fallback],
        || RequestHandles {
            requests: counter!(REQUESTS,
                "route" => route.to_string(), "status_class" => class,
                "model" => model.to_string(), "provider" => provider.to_string(),
                "power_level" => power, "byok" => byok, "fallback" => fallback),
            duration: histogram!(REQUEST_DURATION,
                "route" => route.to_string(), "status_class" => class,
                "model" => model.to_string(), "provider" => provider.to_string()),
            overhead: histogram!(GATEWAY_OVERHEAD, "route" => route.to_string(),
                "model" => model.to_string(), "provider" => provider.to_string()),
            upstream: histogram!(UPSTREAM_DURATION, "route" => route.to_string(),
                "model" => model.to_string(), "provider" => provider.to_string()),
            db: histogram!(DB_DURATION, "route" => route.to_string()),
        },
    );
    handles.requests.increment(1);
    handles.duration.record(record.total.as_secs_f64());
    if let Some((upstream, overhead, db)) = record.split {
        handles.overhead.record(overhead.as_secs_f64());
        if !upstream.is_zero() {
            handles.upstream.record(upstream.as_secs_f64());
        }
        if !db.is_zero() {
            handles.db.record(db.as_secs_f64());
        }
    }
}

/// One provider call's outcome.
pub fn record_attempt(model: &str, provider: &str, outcome: &'static str) {
    if !on() {
        return;
    }
    COUNTERS
        .get(&[UPSTREAM_ATTEMPTS, model, provider, outcome], || {
            counter!(UPSTREAM_ATTEMPTS, "model" => model.to_string(),
                "provider" => provider.to_string(), "outcome" => outcome)
        })
        .increment(1);
}

/// A call (chat, embeddings, health probe) failed by the gateway's own resources.
pub fn record_local_error(failure: crate::local_failure::LocalFailure) {
    if on() {
        counter_of(LOCAL_ERRORS, "kind", failure.kind()).increment(1);
    }
}

/// A captured request: its tokens by bucket, its provider cost and its charge.
pub fn record_capture(
    route: &str,
    model: &str,
    provider: &str,
    usage: &Usage,
    cost: Decimal,
    charged: Decimal,
    ttft: Option<Duration>,
) {
    if !on() {
        return;
    }
    counter_of(LEDGER_CAPTURES, "outcome", "captured").increment(1);
    let handles = CAPTURE_HANDLES.get(&[route, model, provider], || {
        let tokens = |bucket: &'static str| {
            counter!(TOKENS, "bucket" => bucket, "model" => model.to_string(),
                "provider" => provider.to_string())
        };
        CaptureHandles {
            tokens: [
                tokens("input"),
                tokens("cached_input"),
                tokens("cache_write"),
                tokens("output"),
            ],
            cost: counter!(COST_USD, "model" => model.to_string(), "provider" => provider.to_string()),
            charged: counter!(CHARGED_USD, "model" => model.to_string(), "provider" => provider.to_string()),
            ttft: histogram!(TIME_TO_FIRST_TOKEN, "route" => route.to_string(),
                "model" => model.to_string(), "provider" => provider.to_string()),
        }
    });
    let buckets = [
        usage.uncached_input_tokens,
        usage.cached_input_tokens,
        usage.cache_write_input_tokens,
        usage.output_tokens,
    ];
    for (counter, tokens) in handles.tokens.iter().zip(buckets) {
        counter.increment(tokens);
    }
    handles.cost.increment(nano_usd(cost));
    handles.charged.increment(nano_usd(charged));
    if let Some(ttft) = ttft {
        handles.ttft.record(ttft.as_secs_f64());
    }
}

/// USD as whole billionths (the ledger's scale); negative amounts count as 0.
fn nano_usd(amount: Decimal) -> u64 {
    let nanos = (amount * Decimal::from(1_000_000_000u64)).round();
    u64::try_from(nanos).unwrap_or(0)
}

pub fn record_pending_capture() {
    if on() {
        counter_of(LEDGER_CAPTURES, "outcome", "pending").increment(1);
    }
}

pub fn record_admission(outcome: &'static str) {
    if on() {
        counter_of(LEDGER_ADMISSIONS, "outcome", outcome).increment(1);
    }
}

pub fn record_release(ok: bool) {
    if on() {
        let outcome = if ok { "released" } else { "failed" };
        counter_of(LEDGER_RELEASES, "outcome", outcome).increment(1);
    }
}

pub fn record_settle_retry(operation: &'static str) {
    if on() {
        counter_of(LEDGER_RETRIES, "operation", operation).increment(1);
    }
}

pub fn record_batch(queue: &'static str, size: usize) {
    if on() {
        histogram_of(LEDGER_BATCH_SIZE, "queue", queue).record(size as f64);
    }
}

/// The charges kept in this process's spool (or queue) and the age of the oldest, as the
/// last drain found them.
pub fn pending_charges(count: u64, oldest: Option<chrono::DateTime<chrono::Utc>>) {
    if !on() {
        return;
    }
    gauge_of(PENDING_CHARGES, "", "").set(count as f64);
    let age = oldest.map_or(0.0, |kept_at| {
        (chrono::Utc::now() - kept_at).num_milliseconds().max(0) as f64 / 1000.0
    });
    gauge_of(PENDING_CHARGE_AGE, "", "").set(age);
}

/// Pending charges in the Lambda queue after a drain (SQS's approximate count); the age of
/// its oldest is SQS's own `ApproximateAgeOfOldestMessage`.
pub fn pending_charges_queued(count: u64) {
    if on() {
        gauge_of(PENDING_CHARGES, "", "").set(count as f64);
    }
}

/// A pending charge written by a drain: `captured`, or `duplicate` (already written).
pub fn pending_charge_written(outcome: &'static str) {
    if on() {
        counter_of(PENDING_CHARGES_WRITTEN, "outcome", outcome).increment(1);
    }
}

/// A pending charge the ledger refused for good.
pub fn pending_charge_refused() {
    if on() {
        counter_of(PENDING_CHARGES_REFUSED, "", "").increment(1);
    }
}

/// Granted captures waiting for their batch (`serve`).
pub fn grant_captures_queued(queued: usize) {
    if on() {
        gauge_of(GRANT_CAPTURES_QUEUED, "", "").set(queued as f64);
    }
}

/// A pending charge kept in the spool (or queue) now.
pub fn pending_charge_kept() {
    if on() {
        gauge_of(PENDING_CHARGES, "", "").increment(1.0);
    }
}

/// A hold placed (+1) or settled (−1) by this process.
pub fn holds_active(delta: f64) {
    if on() {
        gauge_of(LEDGER_HOLDS_ACTIVE, "", "").increment(delta);
    }
}

pub fn record_pool_wait(waited: Duration, ok: bool) {
    if !on() {
        return;
    }
    histogram_of(DB_POOL_WAIT, "", "").record(waited.as_secs_f64());
    if !ok {
        counter_of(DB_POOL_ERRORS, "", "").increment(1);
    }
}

/// A provider's state as the catalog last read it.
pub fn provider_state(provider: &str, enabled: bool, breaker_open: bool, health: &'static str) {
    if !on() {
        return;
    }
    gauge_of(PROVIDER_ENABLED, "provider", provider).set(f64::from(u8::from(enabled)));
    gauge_of(PROVIDER_BREAKER_OPEN, "provider", provider).set(f64::from(u8::from(breaker_open)));
    for status in ["healthy", "degraded", "down", "unknown"] {
        GAUGES
            .get(
                &[PROVIDER_HEALTH, provider, status],
                || gauge!(PROVIDER_HEALTH, "provider" => provider.to_string(), "status" => status),
            )
            .set(f64::from(u8::from(status == health)));
    }
}

pub fn record_health_run() {
    if on() {
        counter_of(HEALTH_RUNS, "", "").increment(1);
    }
}

pub fn record_health_check(provider: &str, result: &'static str, auto_disabled: bool) {
    if !on() {
        return;
    }
    counter!(HEALTH_CHECKS, "provider" => provider.to_string(), "result" => result).increment(1);
    if auto_disabled {
        counter_of(PROVIDER_AUTO_DISABLES, "provider", provider).increment(1);
    }
}

pub fn record_billing_export(exported: u64, failed: bool) {
    if !on() {
        return;
    }
    counter_of(BILLING_EXPORTED, "", "").increment(exported);
    if failed {
        counter_of(BILLING_FAILURES, "", "").increment(1);
    }
}

pub fn billing_backlog(events: u64, oldest_age: Duration) {
    if !on() {
        return;
    }
    gauge_of(BILLING_BACKLOG, "", "").set(events as f64);
    gauge_of(BILLING_BACKLOG_AGE, "", "").set(oldest_age.as_secs_f64());
}

/// `serve`'s listener started with room for `max` connections: the cap, and its counters
/// at zero (so that a dashboard sees them before the first refusal).
pub fn record_listener(max: usize) {
    if !on() {
        return;
    }
    gauge_of(CONNECTIONS_MAX, "", "").set(max as f64);
    gauge_of(CONNECTIONS_OPEN, "", "").set(0.0);
    counter_of(CONNECTIONS_REFUSED, "", "").increment(0);
    for phase in ["headers", "body"] {
        counter_of(CLIENT_TIMEOUTS, "phase", phase).increment(0);
    }
}

/// A client connection opened (+1) or closed (−1).
pub fn connections_open(delta: f64) {
    if on() {
        gauge_of(CONNECTIONS_OPEN, "", "").increment(delta);
    }
}

pub fn record_connection_refused() {
    if on() {
        counter_of(CONNECTIONS_REFUSED, "", "").increment(1);
    }
}

/// A request cut off: `headers` (not all sent in time) or `body`.
pub fn record_client_timeout(phase: &'static str) {
    if on() {
        counter_of(CLIENT_TIMEOUTS, "phase", phase).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_counters_are_exact_dollars() {
        assert_eq!(format_counter(COST_USD, 0), "0");
        assert_eq!(format_counter(COST_USD, 1), "0.000000001");
        assert_eq!(format_counter(COST_USD, 1_500_000_000), "1.5");
        assert_eq!(format_counter(REQUESTS, 7), "7");
        assert_eq!(nano_usd(Decimal::new(1575, 7)), 157_500);
        assert_eq!(nano_usd(Decimal::new(-1, 0)), 0);
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(402), "4xx");
        assert_eq!(status_class(503), "5xx");
    }
}
