//! `metrics-bench`: what recording one request's metrics costs on the hot path, in CPU
//! time per request, with no recorder installed (every call a no-op: `SWITCHBOARD_METRICS=0`)
//! and with the registry installed. The calls are the ones a captured chat request makes
//! (admission, batches, pool waits, hold gauge, attempt, capture with its tokens and cost,
//! the request's counter and histograms). `metrics-bench [ITERATIONS]` (default 200000).

use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use switchboard_core::metrics::{self, Exposition, RequestLabels, RequestRecord};
use switchboard_core::providers::Usage;

fn one_request(labels: &RequestLabels, usage: &Usage) {
    metrics::record_batch("admission", 1);
    metrics::record_pool_wait(Duration::from_micros(3), true);
    metrics::record_admission("admitted");
    metrics::holds_active(1.0);
    metrics::record_attempt(&labels.model, &labels.provider, "2xx");
    metrics::holds_active(-1.0);
    metrics::record_batch("capture", 1);
    metrics::record_pool_wait(Duration::from_micros(3), true);
    metrics::record_capture(
        "/v1/chat/completions",
        &labels.model,
        &labels.provider,
        usage,
        Decimal::new(1575, 7),
        Decimal::new(1575, 7),
        None,
    );
    metrics::record_request(&RequestRecord {
        route: "/v1/chat/completions",
        status: 200,
        labels: Some(labels),
        total: Duration::from_micros(2100),
        split: Some((
            Duration::from_micros(90),
            Duration::from_micros(2010),
            Duration::from_micros(1400),
        )),
    });
}

fn per_request(iterations: u32, labels: &RequestLabels, usage: &Usage) -> Duration {
    let started = Instant::now();
    for _ in 0..iterations {
        one_request(std::hint::black_box(labels), usage);
    }
    started.elapsed() / iterations
}

#[allow(clippy::print_stdout)]
fn main() {
    let iterations: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let labels = RequestLabels {
        model: "gpt-4o".into(),
        provider: "openai".into(),
        power_level: "balanced",
        byok: false,
        fallback: false,
    };
    let usage = Usage {
        uncached_input_tokens: 27,
        output_tokens: 9,
        ..Usage::default()
    };
    let off = per_request(iterations, &labels, &usage);
    metrics::install(Exposition::Prometheus);
    per_request(iterations / 10, &labels, &usage); // warm: every key registered
    let on = per_request(iterations, &labels, &usage);
    // Two threads at once (both cores): what contention on the shared caches adds.
    let both: Vec<Duration> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| per_request(iterations, &labels, &usage)))
            .collect();
        runs.into_iter().filter_map(|r| r.join().ok()).collect()
    });
    let contended = both.iter().sum::<Duration>() / 2;
    println!(
        "metrics per request: {:.2} µs with the registry ({:.2} µs each with two threads at once), {:.3} µs with none installed ({} iterations)",
        on.as_secs_f64() * 1e6,
        contended.as_secs_f64() * 1e6,
        off.as_secs_f64() * 1e6,
        iterations
    );
}
