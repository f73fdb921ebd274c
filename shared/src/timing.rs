//! Where one request's time went (api.md, "Metrics and timing"): the chat run adds the time
//! it waited for providers and for the ledger's statements to [`RequestTiming`], and the
//! request middleware answers it on every `/v1` route as
//! `Server-Timing: gateway;dur=…, upstream;dur=…, db;dur=…` (milliseconds) and
//! `x-switchboard-overhead-ms` (the gateway's own time: the total less the upstream's).
//!
//! A stream's headers leave when its first content does: they count the time to then (the
//! upstream's time to first content, the admission); the capture at its end is not in them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

pub const OVERHEAD_HEADER: &str = "x-switchboard-overhead-ms";

/// Time spent waiting on providers and on PostgreSQL, shared between the request's
/// middleware and the chat run (which may run in its own task).
#[derive(Debug, Clone, Default)]
pub struct RequestTiming(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    upstream_us: AtomicU64,
    db_us: AtomicU64,
    /// The matched route (`/v1/chat/completions`), set by the router.
    route: OnceLock<String>,
    /// The model and provider that served (or last tried) the request, for its metrics.
    labels: Mutex<Option<crate::metrics::RequestLabels>>,
    /// The request's trace, when tracing is on.
    trace: Option<crate::otel::Trace>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl RequestTiming {
    /// Counters for a request traced as `trace` (`None`: tracing is off).
    pub fn traced(trace: Option<crate::otel::Trace>) -> Self {
        RequestTiming(Arc::new(Counters {
            trace,
            ..Counters::default()
        }))
    }

    pub fn trace(&self) -> Option<&crate::otel::Trace> {
        self.0.trace.as_ref()
    }

    pub fn add_upstream(&self, d: Duration) {
        self.0.upstream_us.fetch_add(micros(d), Ordering::Relaxed);
    }

    pub fn add_db(&self, d: Duration) {
        self.0.db_us.fetch_add(micros(d), Ordering::Relaxed);
    }

    pub fn set_route(&self, route: &str) {
        let _ = self.0.route.set(route.to_string());
    }

    /// The matched route, or `unmatched` (a 404 of the router).
    pub fn route(&self) -> &str {
        self.0.route.get().map_or("unmatched", String::as_str)
    }

    pub fn set_labels(&self, labels: crate::metrics::RequestLabels) {
        *self.0.labels.lock().unwrap_or_else(PoisonError::into_inner) = Some(labels);
    }

    pub fn labels(&self) -> Option<crate::metrics::RequestLabels> {
        self.0
            .labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// (upstream, gateway, db) of a request that took `total` so far.
    pub fn split(&self, total: Duration) -> (Duration, Duration, Duration) {
        let upstream = self.upstream().min(total);
        (upstream, total.saturating_sub(upstream), self.db())
    }

    pub fn upstream(&self) -> Duration {
        Duration::from_micros(self.0.upstream_us.load(Ordering::Relaxed))
    }

    pub fn db(&self) -> Duration {
        Duration::from_micros(self.0.db_us.load(Ordering::Relaxed))
    }

    /// Adds `Server-Timing` and `x-switchboard-overhead-ms` for a request that took `total`.
    pub fn write_headers(&self, total: Duration, headers: &mut HeaderMap) {
        let (upstream, gateway, db) = self.split(total);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let server_timing = format!(
            "gateway;dur={:.3}, upstream;dur={:.3}, db;dur={:.3}",
            ms(gateway),
            ms(upstream),
            ms(db)
        );
        if let Ok(value) = HeaderValue::from_str(&server_timing) {
            headers.insert(HeaderName::from_static("server-timing"), value);
        }
        if let Ok(value) = HeaderValue::from_str(&format!("{:.3}", ms(gateway))) {
            headers.insert(HeaderName::from_static(OVERHEAD_HEADER), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overhead_is_the_total_less_the_upstream() {
        let timing = RequestTiming::default();
        let shared = timing.clone();
        shared.add_upstream(Duration::from_millis(40));
        shared.add_upstream(Duration::from_millis(10));
        shared.add_db(Duration::from_micros(1_500));
        let mut headers = HeaderMap::new();
        timing.write_headers(Duration::from_millis(53), &mut headers);
        assert_eq!(
            headers["server-timing"],
            "gateway;dur=3.000, upstream;dur=50.000, db;dur=1.500"
        );
        assert_eq!(headers[OVERHEAD_HEADER], "3.000");
        // An upstream time above the total (clock skew between tasks) never goes negative.
        let mut headers = HeaderMap::new();
        timing.write_headers(Duration::from_millis(10), &mut headers);
        assert_eq!(headers[OVERHEAD_HEADER], "0.000");
    }
}
