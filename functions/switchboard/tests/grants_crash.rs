//! A `serve` holding quota grants killed with SIGKILL mid-load, then started again on the
//! same database (issue 31; docs/chat-and-ledger.md, "What a crash can lose"):
//!
//! - no overspend: no more answers were delivered than the balance covered;
//! - every account's balance equals the sum of its entries, nothing charged twice;
//! - what is lost is within the stated bound: an answer delivered but never charged
//!   finished within one flush delay (and the batch in flight) of the kill;
//! - the restarted process serves again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::{Value, json};
use support::{Serve, user_key};
use switchboard_tests::fake_upstream::{FakeUpstream, Reply};
use switchboard_tests::test_db::TestDb;

const FLUSH_MS: u64 = 200;
/// Requests the balance covers (each exactly $0.001): far more than 3 s of load, so the
/// account stays on its grant (never "low") and the kill finds captures queued in memory.
const K: i64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_serve_loses_at_most_its_last_flush_and_never_overspends() {
    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    upstream.set_default(Reply::text("Done.").with_usage(20, 1000, 0));
    db.connect()
        .await
        .execute(
            "INSERT INTO llm_models (provider_id, model_name, model_id, context_window, max_tokens,
                 cost_per_1m_input_tokens, cost_per_1m_output_tokens)
             SELECT id, 'Exact', 'exact-model', 128000, 1000, 0, 1.00
             FROM llm_providers WHERE provider_slug = 'openai'",
            &[],
        )
        .await
        .unwrap();
    // The provider's own limits off: at a fast machine's pace the load alone uses up its
    // 2,000,000 tokens a minute, and the restarted instance would rightly answer 429.
    db.connect()
        .await
        .execute(
            "UPDATE llm_providers SET rate_limit_rpm = NULL, rate_limit_tpm = NULL
             WHERE provider_slug = 'openai'",
            &[],
        )
        .await
        .unwrap();
    // The balance covers K requests; the key's rate limit is far above the load.
    let key = user_key(&db, "crashy", 0, Some(100_000)).await;
    switchboard_core::ledger::credit(
        &**db.pool().get().await.unwrap(),
        "crashy",
        Decimal::new(K, 3),
        switchboard_core::ledger::CreditKind::TopUp,
        "crash-topup",
        None,
        None,
    )
    .await
    .unwrap();
    let flush = FLUSH_MS.to_string();
    let env = [("SWITCHBOARD_LEDGER_FLUSH_MS", flush.as_str())];
    let mut serve = Serve::start_with(&db, &upstream, "grants-crash", &env).await;
    let base = serve.base.clone();

    // 8 clients until the kill; each answer with the time it arrived.
    let http = reqwest::Client::new();
    let running = Arc::new(AtomicBool::new(true));
    let delivered: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..8 {
        let (http, base, key, running, delivered) = (
            http.clone(),
            base.clone(),
            key.clone(),
            running.clone(),
            delivered.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while running.load(Ordering::Relaxed) {
                let id = format!("crash-{c}-{n}");
                n += 1;
                let sent = http
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .header("x-request-id", &id)
                    .json(&json!({"model": "exact-model", "max_tokens": 1000,
                                  "messages": [{"role": "user", "content": "Go."}]}))
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                if response.status() != 200 {
                    let _ = response.bytes().await;
                    continue;
                }
                if let Ok(body) = response.json::<Value>().await
                    && body["_metadata"]["cost_usd"] == "0.001"
                {
                    delivered.lock().unwrap().push((id, Instant::now()));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = serve.pid().unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let killed_at = Instant::now();
    running.store(false, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    serve.wait_exit(Duration::from_secs(5)).await;
    let delivered = delivered.lock().unwrap().clone();
    assert!(delivered.len() > 50, "too little load: {}", delivered.len());

    // No overspend: never more answers than the balance covered.
    assert!(
        delivered.len() as i64 <= K,
        "{} answers for {K}",
        delivered.len()
    );

    let client = db.connect().await;
    let charged: Vec<String> = client
        .query(
            "SELECT request_id FROM llm_usage_logs WHERE status_code = 200",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let report = switchboard_core::ledger::check_invariants(&client, "crashy")
        .await
        .unwrap();
    assert_eq!(report.balance, report.sum_of_entries, "{report:?}");
    assert!(report.balance >= Decimal::ZERO, "overspent: {report:?}");
    let captures: i64 = client
        .query_one(
            "SELECT count(*) FROM ledger_entries WHERE user_id = 'crashy' AND kind = 'capture'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        captures as usize,
        charged.len(),
        "one capture per usage row"
    );
    let charged: std::collections::HashSet<String> = charged.into_iter().collect();
    // What is lost: answers delivered and never charged, each within the bound of the kill.
    let bound = Duration::from_millis(FLUSH_MS + 500);
    let lost: Vec<Duration> = delivered
        .iter()
        .filter(|(id, _)| !charged.contains(id))
        .map(|(_, at)| killed_at.saturating_duration_since(*at))
        .collect();
    for before_kill in &lost {
        assert!(
            *before_kill <= bound,
            "an answer delivered {before_kill:?} before the kill was never charged"
        );
    }
    eprintln!(
        "{} answers delivered before the kill, {} charged, {} lost (the oldest {:?} before it; bound {:?})",
        delivered.len(),
        delivered.len() - lost.len(),
        lost.len(),
        lost.iter().max().copied().unwrap_or_default(),
        bound
    );

    // Started again on the same database: it serves (another account: the crashed
    // instance's grant holds this one's room until its hold expires).
    let mut again = Serve::start_with(&db, &upstream, "grants-crash-again", &env).await;
    let other = user_key(&db, "after-crash", 5, None).await;
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", again.base))
        .bearer_auth(&other)
        .json(&json!({"model": "exact-model", "max_tokens": 1000,
                      "messages": [{"role": "user", "content": "Go."}]}))
        .send()
        .await
        .unwrap();
    let status = answer.status();
    assert_eq!(status, 200, "{}", answer.text().await.unwrap_or_default());
    let stale: Vec<(String, Decimal)> = client
        .query(
            "SELECT request_id, amount_usd FROM credit_holds
             WHERE user_id = 'crashy' AND state = 'active' AND expires_at > now() + interval '1 hour'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(stale.is_empty(), "a hold that outlives its TTL: {stale:?}");
    again.wait_exit(Duration::ZERO).await;
    again.stop().await;
}
