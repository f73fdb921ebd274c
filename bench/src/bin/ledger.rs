//! Ledger micro-benchmark: the median and p99 time of one `authorize` and one `capture`
//! (with one usage row and the billing event) over N calls against the PostgreSQL of
//! `TEST_DATABASE_URL` (default 127.0.0.1:5432), next to a `SELECT 1` round trip measured
//! in the same run as the baseline, since absolute times on a shared machine are noisy.
//!
//! `cargo run --release -p switchboard-bench --bin ledger-bench -- [N]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark, not a service

use std::str::FromStr;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use switchboard_core::ledger::{
    self, Capture, CaptureKind, CreditKind, DEFAULT_HOLD_TTL, UsageLogRow,
};
use switchboard_tests::test_db::TestDb;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let db = TestDb::new().await;
    let client = db.pool().get().await.unwrap();
    client
        .execute("INSERT INTO accounts (user_id) VALUES ('bench')", &[])
        .await
        .unwrap();
    ledger::credit(
        &**client,
        "bench",
        Decimal::from(1_000_000),
        CreditKind::TopUp,
        "bench-topup",
        None,
        None,
    )
    .await
    .unwrap();
    let amount = Decimal::from_str("0.001").unwrap();
    let actual = Decimal::from_str("0.000731").unwrap();

    // Warm up the connection and the functions' plans.
    for i in 0..50 {
        let id = format!("warm-{i}");
        ledger::authorize(&**client, "bench", &id, amount, DEFAULT_HOLD_TTL)
            .await
            .unwrap();
        ledger::release(&**client, &id, &[]).await.unwrap();
        client.query_one("SELECT 1", &[]).await.unwrap();
    }

    let mut baseline = Vec::with_capacity(n);
    let mut authorize = Vec::with_capacity(n);
    let mut capture = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("bench-{i}");
        let t = Instant::now();
        client.query_typed_one("SELECT 1", &[]).await.unwrap();
        baseline.push(t.elapsed());

        let t = Instant::now();
        ledger::authorize(&**client, "bench", &id, amount, DEFAULT_HOLD_TTL)
            .await
            .unwrap();
        authorize.push(t.elapsed());

        let logs = [UsageLogRow {
            user_id: "bench".into(),
            request_id: id.clone(),
            attempt: 1,
            prompt_tokens: 120,
            completion_tokens: 40,
            total_tokens: 160,
            cost_input_usd: Decimal::from_str("0.0003").unwrap(),
            cost_output_usd: Decimal::from_str("0.000431").unwrap(),
            cost_total_usd: actual,
            charged_usd: actual,
            status_code: Some(200),
            ..UsageLogRow::default()
        }];
        let t = Instant::now();
        ledger::capture(
            &**client,
            &Capture {
                request_id: &id,
                user_id: "bench",
                amount: actual,
                kind: CaptureKind::Usage,
                usage_logs: &logs,
                billing_properties: serde_json::json!({"model": "gpt-4o", "tokens": 160}),
            },
        )
        .await
        .unwrap();
        capture.push(t.elapsed());
    }

    let report = ledger::check_invariants(&**client, "bench").await.unwrap();
    assert!(report.holds() && report.active_holds == 0, "{report:?}");

    let base50 = percentile(&mut baseline, 0.5);
    println!(
        "ledger benchmark: {n} calls each, sequential, one connection, {}",
        db.url().rsplit('@').next().unwrap_or("")
    );
    println!("| operation | median µs | p99 µs | median / SELECT 1 |");
    println!("|---|---|---|---|");
    for (name, samples) in [
        ("SELECT 1 (baseline)", &mut baseline),
        ("authorize", &mut authorize),
        ("capture + usage row + billing event", &mut capture),
    ] {
        let p50 = percentile(samples, 0.5);
        let p99 = percentile(samples, 0.99);
        println!(
            "| {name} | {:.0} | {:.0} | {:.2}× |",
            micros(p50),
            micros(p99),
            micros(p50) / micros(base50)
        );
    }
}
