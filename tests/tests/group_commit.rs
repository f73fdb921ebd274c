//! Group commit of the hot path against a real PostgreSQL: a batch of admissions
//! (`sb_admit_many`) or captures (`sb_capture_many`) gives every item exactly the outcome
//! the single-request functions give when called one after another — checked on two fresh
//! databases fed the same requests, one in batches and one serially, down to every row
//! written — and the ledger stays exact when hundreds of concurrent requests share batches.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::json;
use switchboard_core::admission::{self, AdmissionError, AdmissionRequest, ProviderLimit};
use switchboard_core::db::group::{GroupCommit, OnCancel};
use switchboard_core::ledger::{
    self, Authorization, Capture, CaptureKind, Captured, CreditKind, LedgerError, UsageLogRow,
};
use switchboard_tests::test_db::TestDb;
use uuid::Uuid;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Accounts of every kind a verdict depends on.
async fn accounts(db: &TestDb) {
    let client = db.pool().get().await.unwrap();
    for (user, balance, cap, status) in [
        ("rich", "100", None, "active"),
        ("poor", "0.05", None, "active"),
        ("capped", "100", Some("0.035"), "active"),
        ("off", "100", None, "suspended"),
    ] {
        let cap = cap.map(d);
        client
            .execute(
                "INSERT INTO accounts (user_id, tier, monthly_cap_usd, status) VALUES ($1, 'starter', $2, $3)",
                &[&user, &cap, &status],
            )
            .await
            .unwrap();
        ledger::credit(
            &**client,
            user,
            d(balance),
            CreditKind::TopUp,
            &format!("seed-{user}"),
            None,
            None,
        )
        .await
        .unwrap();
    }
}

/// Rate-limit windows are per minute: start well inside one, so that both databases count
/// in the same window.
async fn inside_one_minute() {
    let second = chrono::Utc::now().timestamp() % 60;
    if second >= 50 {
        tokio::time::sleep(Duration::from_secs((61 - second) as u64)).await;
    }
}

/// A fixed pseudo-random sequence (no dependency on the test order).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

struct Owned {
    user: &'static str,
    id: String,
    key: Uuid,
    rpm: i32,
    provider: Option<ProviderLimit>,
    hold: Decimal,
}

impl Owned {
    fn request(&self) -> AdmissionRequest<'_> {
        AdmissionRequest {
            user_id: self.user,
            request_id: &self.id,
            key_id: self.key,
            key_rpm: self.rpm,
            provider: self.provider,
            hold: self.hold,
            hold_ttl: Duration::from_secs(600),
        }
    }
}

fn admitted(outcome: &Result<Authorization, AdmissionError>) -> String {
    match outcome {
        Ok(a) => format!(
            "ok duplicate={} balance={} held={} spend={} cap={:?}",
            a.duplicate, a.balance, a.held, a.month_spend, a.cap
        ),
        // The retry-after seconds depend on when each database ran.
        Err(AdmissionError::KeyRateLimited { .. }) => "key rate limited".into(),
        Err(AdmissionError::ProviderRateLimited { .. }) => "provider rate limited".into(),
        Err(e) => e.to_string(),
    }
}

async fn rows(db: &TestDb, sql: &str) -> Vec<String> {
    let client = db.pool().get().await.unwrap();
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect()
}

/// What admission wrote, without ids or times.
async fn admission_state(db: &TestDb) -> Vec<String> {
    let mut state = rows(
        db,
        "SELECT bucket || ' ' || requests || ' ' || tokens FROM rate_limit_counters ORDER BY bucket",
    )
    .await;
    state.extend(
        rows(
            db,
            "SELECT request_id || ' ' || user_id || ' ' || amount_usd || ' ' || state
             FROM credit_holds ORDER BY request_id",
        )
        .await,
    );
    state
}

#[tokio::test]
async fn batched_admissions_give_the_serial_verdicts() {
    let (batched, serial) = (TestDb::new().await, TestDb::new().await);
    accounts(&batched).await;
    accounts(&serial).await;

    let (busy_key, calm_key, blocked_key) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let users = ["rich", "poor", "capped", "off", "ghost"];
    let providers = [
        None,
        // Tokens: three requests of 300 fit in 1,000.
        Some((7, Some(1000), Some(1000))),
        // Requests: four per minute.
        Some((8, Some(4), None)),
        // A provider with a limit of 0 refuses without counting.
        Some((9, Some(0), None)),
        // Limits unset: no window at all.
        Some((10, None, None)),
    ];
    let mut rng = Lcg(42);
    let mut requests: Vec<Owned> = Vec::new();
    for i in 0..90 {
        let (key, rpm) = match rng.next(10) {
            0..=5 => (calm_key, 1000),
            6..=8 => (busy_key, 9),
            _ => (blocked_key, 0),
        };
        let provider = providers[rng.next(providers.len())].map(|(id, rpm, tpm)| ProviderLimit {
            provider_id: id,
            rpm,
            tpm,
            tokens: 300,
        });
        let user = users[rng.next(users.len())];
        let hold = [d("0.01"), d("0.02"), d("0.005")][rng.next(3)];
        // Every eighth request repeats an earlier id: the same hold (a retry) or another.
        let id = if i % 8 == 7 {
            requests[rng.next(requests.len())].id.clone()
        } else {
            format!("req-{i}")
        };
        requests.push(Owned {
            user,
            id,
            key,
            rpm,
            provider,
            hold,
        });
        if i % 16 == 15 {
            // A retry of an earlier request, exactly.
            let earlier = &requests[rng.next(requests.len())];
            let retry = Owned {
                user: earlier.user,
                id: earlier.id.clone(),
                key: earlier.key,
                rpm: earlier.rpm,
                provider: earlier.provider,
                hold: earlier.hold,
            };
            requests.push(retry);
        }
    }
    // A negative hold is refused before the statement, in a batch as alone.
    requests[20].hold = d("-1");

    inside_one_minute().await;
    let all: Vec<AdmissionRequest<'_>> = requests.iter().map(Owned::request).collect();
    let mut batched_outcomes = Vec::new();
    let client = batched.pool().get().await.unwrap();
    let mut rest = &all[..];
    for size in [1, 7, 2, 16, 3, 30, 1, 64].iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (batch, tail) = rest.split_at((*size).min(rest.len()));
        let outcomes = admission::admit_many(&**client, batch).await.unwrap();
        assert_eq!(outcomes.len(), batch.len());
        batched_outcomes.extend(outcomes.iter().map(admitted));
        rest = tail;
    }
    let client = serial.pool().get().await.unwrap();
    let mut serial_outcomes = Vec::new();
    for request in &all {
        serial_outcomes.push(admitted(&admission::admit(&**client, request).await));
    }

    for (i, (b, s)) in batched_outcomes.iter().zip(&serial_outcomes).enumerate() {
        assert_eq!(
            b, s,
            "request {i} ({}): batched vs serial",
            all[i].request_id
        );
    }
    // Every kind of verdict was exercised.
    let joined = serial_outcomes.join("\n");
    for expected in [
        "ok duplicate=false",
        "ok duplicate=true",
        "insufficient credits",
        "monthly spending cap",
        "not active",
        "no account",
        "already used",
        "key rate limited",
        "provider rate limited",
        "must not be negative",
    ] {
        assert!(
            joined.contains(expected),
            "no `{expected}` among:\n{joined}"
        );
    }
    assert_eq!(
        admission_state(&batched).await,
        admission_state(&serial).await
    );
}

fn usage(user: &str, request_id: &str, cost: &str) -> Vec<UsageLogRow> {
    vec![
        UsageLogRow {
            user_id: user.into(),
            request_id: request_id.into(),
            attempt: 1,
            status_code: Some(500),
            error_message: Some("upstream error".into()),
            ..UsageLogRow::default()
        },
        UsageLogRow {
            user_id: user.into(),
            request_id: request_id.into(),
            attempt: 2,
            prompt_tokens: 100,
            completion_tokens: 20,
            total_tokens: 120,
            cost_total_usd: d(cost),
            charged_usd: d(cost),
            status_code: Some(200),
            was_fallback: true,
            ..UsageLogRow::default()
        },
    ]
}

fn captured(outcome: &Result<Captured, LedgerError>) -> String {
    match outcome {
        Ok(c) => format!("ok duplicate={}", c.duplicate),
        Err(e) => e.to_string(),
    }
}

/// What captures wrote, without ids or times.
async fn capture_state(db: &TestDb) -> Vec<String> {
    let mut state = rows(
        db,
        "SELECT user_id || ' ' || balance_usd || ' ' || month_spend_usd FROM accounts ORDER BY user_id",
    )
    .await;
    for sql in [
        "SELECT idempotency_key || ' ' || user_id || ' ' || kind || ' ' || amount_usd FROM ledger_entries ORDER BY idempotency_key",
        "SELECT request_id || ' ' || state || ' ' || COALESCE(captured_usd::text, '-') FROM credit_holds ORDER BY request_id",
        "SELECT request_id || ' ' || attempt || ' ' || charged_usd || ' ' || COALESCE(status_code::text, '-') FROM llm_usage_logs ORDER BY request_id, attempt",
        "SELECT transaction_id || ' ' || external_customer_id || ' ' || properties::text FROM billing_events ORDER BY transaction_id",
    ] {
        state.extend(rows(db, sql).await);
    }
    state
}

#[tokio::test]
async fn batched_captures_give_the_serial_outcomes() {
    let (batched, serial) = (TestDb::new().await, TestDb::new().await);
    for db in [&batched, &serial] {
        accounts(db).await;
        let client = db.pool().get().await.unwrap();
        for i in 0..24 {
            let user = ["rich", "capped"][i % 2];
            ledger::authorize(
                &**client,
                user,
                &format!("cap-{i}"),
                d("0.001"),
                Duration::from_secs(600),
            )
            .await
            .unwrap();
        }
    }
    struct Item {
        id: String,
        user: &'static str,
        amount: Decimal,
        kind: CaptureKind,
        logs: Vec<UsageLogRow>,
    }
    let mut items = Vec::new();
    for i in 0..24 {
        let user = ["rich", "capped"][i % 2];
        let amount = d("0.0007") + Decimal::new(i as i64, 6);
        let id = format!("cap-{i}");
        items.push(Item {
            logs: usage(user, &id, &amount.to_string()),
            id,
            user,
            amount,
            kind: if i % 5 == 0 {
                CaptureKind::ByokFee
            } else {
                CaptureKind::Usage
            },
        });
        if i % 6 == 5 {
            // The same request captured again (a retry): nothing more is charged.
            items.push(Item {
                id: format!("cap-{}", i - 1),
                user: ["rich", "capped"][(i - 1) % 2],
                amount: d("0.5"),
                kind: CaptureKind::Usage,
                logs: Vec::new(),
            });
        }
    }
    // Without a hold (charged all the same), for a user without an account, and invalid.
    items.push(Item {
        id: "no-hold".into(),
        user: "rich",
        amount: d("0.002"),
        kind: CaptureKind::Usage,
        logs: usage("rich", "no-hold", "0.002"),
    });
    items.push(Item {
        id: "ghost-1".into(),
        user: "ghost",
        amount: d("0.002"),
        kind: CaptureKind::Usage,
        logs: Vec::new(),
    });
    items.insert(
        9,
        Item {
            id: "negative".into(),
            user: "rich",
            amount: d("-0.002"),
            kind: CaptureKind::Usage,
            logs: Vec::new(),
        },
    );
    let all: Vec<Capture<'_>> = items
        .iter()
        .map(|item| Capture {
            request_id: &item.id,
            user_id: item.user,
            amount: item.amount,
            kind: item.kind,
            usage_logs: &item.logs,
            billing_properties: json!({"model": "gpt-4o", "charged_usd": item.amount.to_string()}),
        })
        .collect();

    let client = batched.pool().get().await.unwrap();
    let mut batched_outcomes = Vec::new();
    let mut rest = &all[..];
    for size in [5, 1, 11, 2, 64].iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (batch, tail) = rest.split_at((*size).min(rest.len()));
        let outcomes = ledger::capture_many(&**client, batch).await.unwrap();
        assert_eq!(outcomes.len(), batch.len());
        batched_outcomes.extend(outcomes.iter().map(captured));
        rest = tail;
    }
    let client = serial.pool().get().await.unwrap();
    let mut serial_outcomes = Vec::new();
    for capture in &all {
        serial_outcomes.push(captured(&ledger::capture(&**client, capture).await));
    }
    assert_eq!(batched_outcomes, serial_outcomes);
    let joined = serial_outcomes.join("\n");
    for expected in [
        "ok duplicate=false",
        "ok duplicate=true",
        "no account",
        "must not be negative",
    ] {
        assert!(
            joined.contains(expected),
            "no `{expected}` among:\n{joined}"
        );
    }
    assert_eq!(capture_state(&batched).await, capture_state(&serial).await);

    // A batch with the same request twice charges it once.
    let logs = usage("rich", "twice", "0.003");
    let twice = Capture {
        request_id: "twice",
        user_id: "rich",
        amount: d("0.003"),
        kind: CaptureKind::Usage,
        usage_logs: &logs,
        billing_properties: json!({}),
    };
    let client = batched.pool().get().await.unwrap();
    let outcomes = ledger::capture_many(&**client, &[twice.clone(), twice])
        .await
        .unwrap();
    assert_eq!(
        outcomes.iter().map(captured).collect::<Vec<_>>(),
        ["ok duplicate=false", "ok duplicate=true"]
    );
    for user in ["rich", "capped"] {
        let report = ledger::check_invariants(&**client, user).await.unwrap();
        assert_eq!(report.balance, report.sum_of_entries, "{report:?}");
        assert_eq!(report.month_spend, report.month_captures, "{report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_sharing_batches_keep_the_ledger_exact() {
    const N: usize = 300;
    const K: usize = 57;
    let db = Arc::new(TestDb::new().await);
    inside_one_minute().await;
    let hold = d("0.013");
    {
        let client = db.pool().get().await.unwrap();
        client
            .execute("INSERT INTO accounts (user_id) VALUES ('crowd')", &[])
            .await
            .unwrap();
        let balance = hold * Decimal::from(K as u32);
        ledger::credit(
            &**client,
            "crowd",
            balance,
            CreditKind::TopUp,
            "seed",
            None,
            None,
        )
        .await
        .unwrap();
    }
    type Admitted = Result<Authorization, AdmissionError>;
    let admissions = Arc::new(GroupCommit::<(String, Uuid), Admitted>::new(
        2,
        64,
        OnCancel::Withdraw,
    ));
    let captures = Arc::new(GroupCommit::<String, Result<Captured, LedgerError>>::new(
        2,
        64,
        OnCancel::Write,
    ));
    let batches = Arc::new(AtomicUsize::new(0));
    let key = Uuid::new_v4();

    let mut tasks = Vec::new();
    for i in 0..N {
        let (db, admissions, captures, batches) = (
            db.clone(),
            admissions.clone(),
            captures.clone(),
            batches.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let id = format!("crowd-{i}");
            let admit = |items: Vec<(String, Uuid)>| {
                let (db, batches) = (db.clone(), batches.clone());
                async move {
                    batches.fetch_add(1, Ordering::SeqCst);
                    let client = db.pool().get().await.unwrap();
                    let requests: Vec<AdmissionRequest<'_>> = items
                        .iter()
                        .map(|(id, key)| AdmissionRequest {
                            user_id: "crowd",
                            request_id: id,
                            key_id: *key,
                            key_rpm: 200,
                            provider: Some(ProviderLimit {
                                provider_id: 1,
                                rpm: Some(250),
                                tpm: None,
                                tokens: 10,
                            }),
                            hold: d("0.013"),
                            hold_ttl: Duration::from_secs(600),
                        })
                        .collect();
                    admission::admit_many(&**client, &requests).await.unwrap()
                }
            };
            let outcome = admissions.submit((id.clone(), key), admit).await.unwrap();
            let verdict = match &outcome {
                Ok(_) => "ok",
                Err(AdmissionError::KeyRateLimited { .. }) => "key",
                Err(AdmissionError::Ledger(LedgerError::InsufficientCredits { .. })) => "credits",
                Err(other) => panic!("unexpected {other}"),
            };
            if outcome.is_ok() {
                let capture = |ids: Vec<String>| {
                    let db = db.clone();
                    async move {
                        let client = db.pool().get().await.unwrap();
                        let logs: Vec<Vec<UsageLogRow>> =
                            ids.iter().map(|id| usage("crowd", id, "0.011")).collect();
                        let batch: Vec<Capture<'_>> = ids
                            .iter()
                            .zip(&logs)
                            .map(|(id, logs)| Capture {
                                request_id: id,
                                user_id: "crowd",
                                amount: d("0.011"),
                                kind: CaptureKind::Usage,
                                usage_logs: logs,
                                billing_properties: json!({}),
                            })
                            .collect();
                        ledger::capture_many(&**client, &batch).await.unwrap()
                    }
                };
                let done = captures.submit(id, capture).await.unwrap().unwrap();
                assert!(!done.duplicate);
            }
            verdict
        }));
    }
    let mut counts = std::collections::HashMap::new();
    for task in tasks {
        *counts.entry(task.await.unwrap()).or_insert(0) += 1;
    }
    // The key admits 200 a minute; of those, the balance covers exactly K holds at a time,
    // and captures (0.011 each, under the hold) free room as they go: K or more succeed,
    // never a hold beyond the balance.
    assert_eq!(
        counts.get("key").copied().unwrap_or(0),
        N - 200,
        "{counts:?}"
    );
    let ok = counts.get("ok").copied().unwrap_or(0);
    assert!(ok >= K, "{counts:?}");
    assert!(
        batches.load(Ordering::SeqCst) < N,
        "admissions were grouped into batches"
    );
    let client = db.pool().get().await.unwrap();
    let report = ledger::check_invariants(&**client, "crowd").await.unwrap();
    assert_eq!(report.balance, report.sum_of_entries, "{report:?}");
    assert_eq!(report.month_spend, report.month_captures, "{report:?}");
    assert_eq!(report.active_holds, 0);
    assert!(report.balance >= Decimal::ZERO, "{report:?}");
    let charged: Decimal = client
        .query_one(
            "SELECT -sum(amount_usd) FROM ledger_entries WHERE kind = 'capture'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(charged, d("0.011") * Decimal::from(ok as u32));
    let logged: Decimal = client
        .query_one("SELECT sum(charged_usd) FROM llm_usage_logs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, charged);
    let windows: i64 = client
        .query_one(
            "SELECT requests FROM rate_limit_counters WHERE bucket = $1",
            &[&format!("key:{key}")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(windows, 200);
}

/// Batches and single admissions racing for the same new windows (the first requests of a
/// minute) never deadlock: every call answers, none fails with a database error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_single_admissions_racing_for_new_windows_never_deadlock() {
    let db = Arc::new(TestDb::new().await);
    accounts(&db).await;
    let keys: Arc<Vec<Uuid>> = Arc::new((0..3).map(|_| Uuid::new_v4()).collect());
    for round in 0..6i32 {
        let mut tasks = Vec::new();
        for task in 0..16usize {
            let (db, keys) = (db.clone(), keys.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = Lcg((round as u64) * 1000 + task as u64);
                let owned: Vec<Owned> = (0..if task % 2 == 0 { 1 } else { 5 })
                    .map(|i| Owned {
                        user: "rich",
                        id: format!("race-{round}-{task}-{i}"),
                        key: keys[rng.next(keys.len())],
                        rpm: 1000,
                        // New provider windows every round: each is created by the race.
                        provider: Some(ProviderLimit {
                            provider_id: 100 + round * 3 + rng.next(3) as i32,
                            rpm: Some(1000),
                            tpm: Some(1_000_000),
                            tokens: 10,
                        }),
                        hold: d("0.001"),
                    })
                    .collect();
                let requests: Vec<AdmissionRequest<'_>> =
                    owned.iter().map(Owned::request).collect();
                let client = db.pool().get().await.unwrap();
                let outcomes = if requests.len() == 1 {
                    vec![admission::admit(&**client, &requests[0]).await]
                } else {
                    admission::admit_many(&**client, &requests)
                        .await
                        .unwrap_or_else(|e| panic!("batch failed: {e:?}"))
                };
                for outcome in outcomes {
                    outcome.unwrap_or_else(|e| panic!("admission failed: {e:?}"));
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
}
