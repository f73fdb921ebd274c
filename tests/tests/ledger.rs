//! The credit ledger against a real PostgreSQL: holds, capture, release, expiry, caps,
//! idempotency — and the invariants (balance = sum(entries), no hold left active) after
//! every test, including ≥ 200 concurrent authorizations.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::json;
use switchboard_core::ledger::{
    self, Capture, CaptureKind, CreditKind, DEFAULT_HOLD_TTL, LedgerError, Released, UsageLogRow,
};
use switchboard_tests::test_db::TestDb;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

async fn account(db: &TestDb, user: &str, balance: &str, cap: Option<&str>) {
    let client = db.pool().get().await.unwrap();
    let cap = cap.map(d);
    client
        .execute(
            "INSERT INTO accounts (user_id, tier, monthly_cap_usd) VALUES ($1, 'starter', $2)",
            &[&user, &cap],
        )
        .await
        .unwrap();
    let amount = d(balance);
    if !amount.is_zero() {
        ledger::credit(
            &**client,
            user,
            amount,
            CreditKind::TopUp,
            &format!("seed-{user}"),
            Some("test"),
            None,
        )
        .await
        .unwrap();
    }
}

/// The invariants every ledger test ends with.
async fn assert_invariants(db: &TestDb, user: &str) {
    let client = db.pool().get().await.unwrap();
    let report = ledger::check_invariants(&**client, user).await.unwrap();
    assert_eq!(
        report.balance, report.sum_of_entries,
        "balance = sum(entries) for {user}: {report:?}"
    );
    assert_eq!(
        report.month_spend, report.month_captures,
        "month spend = this month's captures: {report:?}"
    );
    assert_eq!(
        report.active_holds, 0,
        "no active hold may remain for {user}"
    );
}

fn capture<'a>(
    request_id: &'a str,
    user_id: &'a str,
    amount: Decimal,
    logs: &'a [UsageLogRow],
) -> Capture<'a> {
    Capture {
        request_id,
        user_id,
        amount,
        kind: CaptureKind::Usage,
        usage_logs: logs,
        billing_properties: json!({"model": "gpt-4o", "cost_usd": amount.to_string()}),
    }
}

fn log_row(user: &str, request_id: &str, cost: &str) -> UsageLogRow {
    UsageLogRow {
        user_id: user.into(),
        request_id: request_id.into(),
        attempt: 1,
        prompt_tokens: 1000,
        completion_tokens: 200,
        total_tokens: 1200,
        cached_tokens: 500,
        cost_input_usd: d("0.003125"),
        cost_output_usd: d(cost) - d("0.003125"),
        cost_total_usd: d(cost),
        charged_usd: d(cost),
        status_code: Some(200),
        ..UsageLogRow::default()
    }
}

#[tokio::test]
async fn concurrent_authorizations_succeed_exactly_k_times() {
    const N: usize = 240;
    const K: usize = 73;
    let db = Arc::new(TestDb::new().await);
    let hold = d("0.137");
    let balance = hold * Decimal::from(K as u32); // covers exactly K holds
    account(&db, "racer", &balance.to_string(), None).await;

    let mut tasks = Vec::new();
    for i in 0..N {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let client = db.pool().get().await.unwrap();
            ledger::authorize(
                &**client,
                "racer",
                &format!("req-{i}"),
                hold,
                DEFAULT_HOLD_TTL,
            )
            .await
        }));
    }
    let mut ok = Vec::new();
    let mut refused = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(auth) => {
                assert!(auth.available() >= Decimal::ZERO);
                ok.push(i);
            }
            Err(LedgerError::InsufficientCredits { needed, .. }) => {
                assert_eq!(needed, hold);
                refused += 1;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok.len(), K, "exactly K authorizations may succeed");
    assert_eq!(refused, N - K);

    // Settle them concurrently: half captured for less than held, half released.
    let mut settle = Vec::new();
    for (n, i) in ok.iter().copied().enumerate() {
        let db = db.clone();
        settle.push(tokio::spawn(async move {
            let client = db.pool().get().await.unwrap();
            let request_id = format!("req-{i}");
            if n % 2 == 0 {
                let logs = [log_row("racer", &request_id, "0.1")];
                ledger::capture(&**client, &capture(&request_id, "racer", d("0.1"), &logs))
                    .await
                    .unwrap();
            } else {
                ledger::release(&**client, &request_id, &[]).await.unwrap();
            }
        }));
    }
    for task in settle {
        task.await.unwrap();
    }
    let client = db.pool().get().await.unwrap();
    let captured = K.div_ceil(2);
    let summary = ledger::account_balance(&**client, "racer")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        summary.credits_balance,
        balance - d("0.1") * Decimal::from(captured as u32)
    );
    assert!(summary.credits_balance >= Decimal::ZERO);
    assert_eq!(summary.credits_held, Decimal::ZERO);
    // Captures equal the usage-log costs.
    let logged: Decimal = client
        .query_one(
            "SELECT COALESCE(sum(charged_usd), 0) FROM llm_usage_logs WHERE user_id = 'racer'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let charged: Decimal = client
        .query_one("SELECT -sum(amount_usd) FROM ledger_entries WHERE user_id = 'racer' AND kind = 'capture'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, charged);
    assert_invariants(&db, "racer").await;
}

#[tokio::test]
async fn concurrent_authorizations_respect_the_monthly_cap() {
    const N: usize = 220;
    const K: usize = 31;
    let db = Arc::new(TestDb::new().await);
    let hold = d("0.5");
    let cap = hold * Decimal::from(K as u32);
    account(&db, "capped", "1000", Some(&cap.to_string())).await;

    let mut tasks = Vec::new();
    for i in 0..N {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let client = db.pool().get().await.unwrap();
            ledger::authorize(
                &**client,
                "capped",
                &format!("cap-{i}"),
                hold,
                DEFAULT_HOLD_TTL,
            )
            .await
        }));
    }
    let mut ok = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(_) => ok.push(i),
            Err(LedgerError::MonthlyCapExceeded { cap: c, .. }) => assert_eq!(c, cap),
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok.len(), K);

    // Capture every hold in full: the month's spend reaches the cap exactly.
    let client = db.pool().get().await.unwrap();
    for i in &ok {
        let request_id = format!("cap-{i}");
        ledger::capture(&**client, &capture(&request_id, "capped", hold, &[]))
            .await
            .unwrap();
    }
    let summary = ledger::account_balance(&**client, "capped")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.month_spend, cap);
    assert_eq!(summary.monthly_cap, Some(cap));
    // Even a tiny request is now refused by the cap, not by the balance.
    let err = ledger::authorize(
        &**client,
        "capped",
        "after-cap",
        d("0.000000001"),
        DEFAULT_HOLD_TTL,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, LedgerError::MonthlyCapExceeded { .. }),
        "{err}"
    );
    assert_invariants(&db, "capped").await;
}

#[tokio::test]
async fn duplicate_capture_changes_nothing() {
    let db = TestDb::new().await;
    account(&db, "dup", "5", None).await;
    let client = db.pool().get().await.unwrap();
    ledger::authorize(&**client, "dup", "r1", d("1"), DEFAULT_HOLD_TTL)
        .await
        .unwrap();
    let logs = [log_row("dup", "r1", "0.25")];
    let first = ledger::capture(&**client, &capture("r1", "dup", d("0.25"), &logs))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.balance, d("4.75"));
    let second = ledger::capture(&**client, &capture("r1", "dup", d("0.25"), &logs))
        .await
        .unwrap();
    assert!(second.duplicate);
    assert_eq!(second.balance, d("4.75"));
    // A different amount for the same request is still the same capture: ignored.
    let third = ledger::capture(&**client, &capture("r1", "dup", d("3"), &logs))
        .await
        .unwrap();
    assert!(third.duplicate);

    let counts = client
        .query_one(
            "SELECT (SELECT count(*) FROM ledger_entries WHERE kind = 'capture'),
                    (SELECT count(*) FROM billing_events),
                    (SELECT count(*) FROM llm_usage_logs),
                    (SELECT state FROM credit_holds WHERE request_id = 'r1'),
                    (SELECT captured_usd FROM credit_holds WHERE request_id = 'r1')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(counts.get::<_, i64>(0), 1);
    assert_eq!(counts.get::<_, i64>(1), 1);
    assert_eq!(counts.get::<_, i64>(2), 1);
    assert_eq!(counts.get::<_, String>(3), "captured");
    assert_eq!(counts.get::<_, Decimal>(4), d("0.25"));

    // The usage row and billing event carry the exact figures.
    let row = client
        .query_one("SELECT cost_total_usd, cost_input_usd, cached_tokens FROM llm_usage_logs WHERE request_id = 'r1'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Decimal>(0), d("0.25"));
    assert_eq!(row.get::<_, Decimal>(1), d("0.003125"));
    assert_eq!(row.get::<_, i32>(2), 500);
    let event = client
        .query_one(
            "SELECT transaction_id, external_customer_id, properties FROM billing_events",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(event.get::<_, String>(0), "r1");
    assert_eq!(event.get::<_, String>(1), "dup");
    assert_eq!(event.get::<_, serde_json::Value>(2)["cost_usd"], "0.25");
    assert_invariants(&db, "dup").await;
}

#[tokio::test]
async fn duplicate_top_up_changes_nothing_and_a_reused_key_is_refused() {
    let db = TestDb::new().await;
    account(&db, "topper", "0", None).await;
    let client = db.pool().get().await.unwrap();
    let first = ledger::credit(
        &**client,
        "topper",
        d("10.00"),
        CreditKind::TopUp,
        "pay-1",
        Some("card"),
        Some("admin"),
    )
    .await
    .unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.balance, d("10"));
    let again = ledger::credit(
        &**client,
        "topper",
        d("10.00"),
        CreditKind::TopUp,
        "pay-1",
        Some("card"),
        Some("admin"),
    )
    .await
    .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.balance, d("10"));
    assert_eq!(again.entry_id, first.entry_id);
    let err = ledger::credit(
        &**client,
        "topper",
        d("99"),
        CreditKind::TopUp,
        "pay-1",
        None,
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LedgerError::IdempotencyKeyReused(_)), "{err}");

    // Adjustments go both ways; top-ups and refunds must be positive; zero is refused.
    let down = ledger::credit(
        &**client,
        "topper",
        d("-2.5"),
        CreditKind::Adjustment,
        "adj-1",
        Some("goodwill reversal"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(down.balance, d("7.5"));
    for (amount, kind) in [
        ("-1", CreditKind::TopUp),
        ("-1", CreditKind::Refund),
        ("0", CreditKind::Adjustment),
    ] {
        let err = ledger::credit(&**client, "topper", d(amount), kind, "bad", None, None)
            .await
            .unwrap_err();
        assert!(matches!(err, LedgerError::InvalidAmount(_)), "{err}");
    }
    let err = ledger::credit(
        &**client,
        "topper",
        d("0.0000000001"),
        CreditKind::TopUp,
        "tiny",
        None,
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LedgerError::InvalidAmount(_)), "{err}");
    let err = ledger::credit(
        &**client,
        "ghost",
        d("1"),
        CreditKind::TopUp,
        "ghost-1",
        None,
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LedgerError::NoAccount), "{err}");

    // Two concurrent top-ups with the same key: applied once.
    let db = Arc::new(db);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let client = db.pool().get().await.unwrap();
            ledger::credit(
                &**client,
                "topper",
                d("1"),
                CreditKind::TopUp,
                "race-key",
                None,
                None,
            )
            .await
            .unwrap()
        }));
    }
    let mut applied = 0;
    for task in tasks {
        if !task.await.unwrap().duplicate {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    let summary = ledger::account_balance(&**client, "topper")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.credits_balance, d("8.5"));
    assert_invariants(&db, "topper").await;
}

#[tokio::test]
async fn expired_holds_are_released() {
    let db = TestDb::new().await;
    account(&db, "sleepy", "1", None).await;
    let client = db.pool().get().await.unwrap();
    ledger::authorize(
        &**client,
        "sleepy",
        "frozen-lambda",
        d("1"),
        DEFAULT_HOLD_TTL,
    )
    .await
    .unwrap();
    // The whole balance is held: another request is refused.
    let err = ledger::authorize(&**client, "sleepy", "second", d("0.5"), DEFAULT_HOLD_TTL)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::InsufficientCredits { .. }));

    // Nothing has expired yet.
    assert_eq!(ledger::expire_holds(&**client).await.unwrap(), 0);
    client
        .execute("UPDATE credit_holds SET expires_at = now() - interval '1 second' WHERE request_id = 'frozen-lambda'", &[])
        .await
        .unwrap();
    assert_eq!(ledger::expire_holds(&**client).await.unwrap(), 1);
    assert_eq!(
        ledger::expire_holds(&**client).await.unwrap(),
        0,
        "expiry is idempotent"
    );
    let state: String = client
        .query_one(
            "SELECT state FROM credit_holds WHERE request_id = 'frozen-lambda'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "expired");

    // An expired hold stops counting at the next authorize even before the job runs.
    ledger::authorize(&**client, "sleepy", "third", d("1"), Duration::from_secs(1))
        .await
        .unwrap();
    client
        .execute("UPDATE credit_holds SET expires_at = now() - interval '1 second' WHERE request_id = 'third'", &[])
        .await
        .unwrap();
    ledger::authorize(&**client, "sleepy", "fourth", d("1"), DEFAULT_HOLD_TTL)
        .await
        .unwrap();
    ledger::release(&**client, "fourth", &[]).await.unwrap();
    // A late capture of an expired hold still charges what was used: money is never dropped.
    let late = ledger::capture(
        &**client,
        &capture("frozen-lambda", "sleepy", d("0.3"), &[]),
    )
    .await
    .unwrap();
    assert_eq!(late.balance, d("0.7"));
    assert_invariants(&db, "sleepy").await;
}

#[tokio::test]
async fn a_capture_above_the_hold_is_recorded_and_blocks_the_next_authorize() {
    let db = TestDb::new().await;
    account(&db, "overrun", "1", None).await;
    let client = db.pool().get().await.unwrap();
    ledger::authorize(&**client, "overrun", "big", d("0.9"), DEFAULT_HOLD_TTL)
        .await
        .unwrap();
    let captured = ledger::capture(&**client, &capture("big", "overrun", d("1.2"), &[]))
        .await
        .unwrap();
    assert_eq!(captured.balance, d("-0.2"));
    let err = ledger::authorize(&**client, "overrun", "next", d("0.01"), DEFAULT_HOLD_TTL)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::InsufficientCredits { .. }));
    ledger::credit(
        &**client,
        "overrun",
        d("1"),
        CreditKind::TopUp,
        "refill",
        None,
        None,
    )
    .await
    .unwrap();
    ledger::authorize(&**client, "overrun", "next", d("0.01"), DEFAULT_HOLD_TTL)
        .await
        .unwrap();
    ledger::release(&**client, "next", &[]).await.unwrap();
    assert_invariants(&db, "overrun").await;
}

#[tokio::test]
async fn release_is_idempotent_and_charges_nothing() {
    let db = TestDb::new().await;
    account(&db, "failing", "2", None).await;
    let client = db.pool().get().await.unwrap();
    ledger::authorize(&**client, "failing", "r", d("1.5"), DEFAULT_HOLD_TTL)
        .await
        .unwrap();
    let failed_attempts = [
        UsageLogRow {
            user_id: "failing".into(),
            request_id: "r".into(),
            attempt: 1,
            status_code: Some(500),
            error_message: Some("upstream 500".into()),
            ..UsageLogRow::default()
        },
        UsageLogRow {
            user_id: "failing".into(),
            request_id: "r".into(),
            attempt: 2,
            was_fallback: true,
            fallback_reason: Some("upstream 500".into()),
            status_code: Some(429),
            ..UsageLogRow::default()
        },
    ];
    assert_eq!(
        ledger::release(&**client, "r", &failed_attempts)
            .await
            .unwrap(),
        Released::Released
    );
    assert_eq!(
        ledger::release(&**client, "r", &failed_attempts)
            .await
            .unwrap(),
        Released::NotActive
    );
    assert_eq!(
        ledger::release(&**client, "never-held", &[]).await.unwrap(),
        Released::NoHold
    );
    let logs: i64 = client
        .query_one(
            "SELECT count(*) FROM llm_usage_logs WHERE request_id = 'r'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logs, 2, "the failed attempts are logged once");
    let summary = ledger::account_balance(&**client, "failing")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.credits_balance, d("2"));
    assert_eq!(summary.credits_held, Decimal::ZERO);
    assert_invariants(&db, "failing").await;
}

#[tokio::test]
async fn authorize_edge_cases() {
    let db = TestDb::new().await;
    account(&db, "fresh", "0", None).await;
    let client = db.pool().get().await.unwrap();

    // A brand-new account with no entries: a zero hold is fine, anything more is refused.
    ledger::authorize(&**client, "fresh", "zero", Decimal::ZERO, DEFAULT_HOLD_TTL)
        .await
        .unwrap();
    let err = ledger::authorize(
        &**client,
        "fresh",
        "one",
        d("0.000000001"),
        DEFAULT_HOLD_TTL,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, LedgerError::InsufficientCredits { .. }),
        "{err}"
    );
    ledger::release(&**client, "zero", &[]).await.unwrap();

    // A retried authorize (same request id, same amount) is a no-op; another amount is refused.
    ledger::credit(
        &**client,
        "fresh",
        d("1"),
        CreditKind::TopUp,
        "fresh-1",
        None,
        None,
    )
    .await
    .unwrap();
    let first = ledger::authorize(&**client, "fresh", "retry", d("0.4"), DEFAULT_HOLD_TTL)
        .await
        .unwrap();
    assert!(!first.duplicate);
    let again = ledger::authorize(&**client, "fresh", "retry", d("0.4"), DEFAULT_HOLD_TTL)
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.held, d("0.4"), "the hold is counted once");
    let err = ledger::authorize(&**client, "fresh", "retry", d("0.5"), DEFAULT_HOLD_TTL)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::RequestIdReused(_)));
    ledger::release(&**client, "retry", &[]).await.unwrap();

    // Bad amounts never reach the database.
    let err = ledger::authorize(&**client, "fresh", "neg", d("-1"), DEFAULT_HOLD_TTL)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::InvalidAmount(_)));
    let err = ledger::authorize(
        &**client,
        "fresh",
        "precise",
        d("0.0000000001"),
        DEFAULT_HOLD_TTL,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LedgerError::InvalidAmount(_)));

    // Unknown and suspended accounts.
    let err = ledger::authorize(&**client, "nobody", "x", d("0"), DEFAULT_HOLD_TTL)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::NoAccount));
    client
        .execute(
            "UPDATE accounts SET status = 'suspended' WHERE user_id = 'fresh'",
            &[],
        )
        .await
        .unwrap();
    let err = ledger::authorize(&**client, "fresh", "susp", d("0.1"), DEFAULT_HOLD_TTL)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::AccountDisabled));
    assert_invariants(&db, "fresh").await;
}

#[tokio::test]
async fn byok_fee_is_charged_without_a_hold_and_user_a_cannot_touch_user_b() {
    let db = TestDb::new().await;
    account(&db, "alice", "1", None).await;
    account(&db, "bob", "1", None).await;
    let client = db.pool().get().await.unwrap();

    let fee = Capture {
        kind: CaptureKind::ByokFee,
        ..capture("byok-1", "alice", d("0.00005"), &[])
    };
    let charged = ledger::capture(&**client, &fee).await.unwrap();
    assert_eq!(charged.balance, d("0.99995"));
    let kind: String = client
        .query_one(
            "SELECT kind FROM ledger_entries WHERE request_id = 'byok-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kind, "byok_fee");

    // Bob's hold cannot be captured into Alice's account: her capture does not close it.
    ledger::authorize(&**client, "bob", "bobs-request", d("0.5"), DEFAULT_HOLD_TTL)
        .await
        .unwrap();
    ledger::capture(&**client, &capture("bobs-request", "alice", d("0.1"), &[]))
        .await
        .unwrap();
    let bob_hold: String = client
        .query_one(
            "SELECT state FROM credit_holds WHERE request_id = 'bobs-request'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(bob_hold, "active");
    let bob = ledger::account_balance(&**client, "bob")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bob.credits_balance, d("1"));
    ledger::release(&**client, "bobs-request", &[])
        .await
        .unwrap();
    assert_invariants(&db, "alice").await;
    assert_invariants(&db, "bob").await;
}
