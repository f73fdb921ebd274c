//! Admission against a real PostgreSQL: per-key and per-provider limits shared through the
//! database, exact under concurrency, and the hold taken in the same round trip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;
use switchboard_core::admission::{self, AdmissionError, AdmissionRequest, ProviderLimit};
use switchboard_core::ledger::{self, CreditKind, DEFAULT_HOLD_TTL, LedgerError};
use switchboard_tests::test_db::TestDb;
use uuid::Uuid;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

async fn funded(db: &TestDb, user: &str, amount: &str) {
    let client = db.pool().get().await.unwrap();
    client
        .execute("INSERT INTO accounts (user_id) VALUES ($1)", &[&user])
        .await
        .unwrap();
    ledger::credit(
        &**client,
        user,
        d(amount),
        CreditKind::TopUp,
        &format!("fund-{user}"),
        None,
        None,
    )
    .await
    .unwrap();
}

fn request<'a>(
    user: &'a str,
    id: &'a str,
    key: Uuid,
    rpm: i32,
    provider: Option<ProviderLimit>,
) -> AdmissionRequest<'a> {
    AdmissionRequest {
        user_id: user,
        request_id: id,
        key_id: key,
        key_rpm: rpm,
        provider,
        hold: d("0.01"),
        hold_ttl: DEFAULT_HOLD_TTL,
    }
}

#[tokio::test]
async fn the_key_limit_admits_exactly_rpm_requests_under_concurrency() {
    let db = Arc::new(TestDb::new().await);
    funded(&db, "busy", "100").await;
    let key = Uuid::new_v4();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let client = db.pool().get().await.unwrap();
            let id = format!("k-{i}");
            admission::admit(&**client, &request("busy", &id, key, 17, None)).await
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(AdmissionError::KeyRateLimited { retry_after }) => {
                assert!((1..=60).contains(&retry_after.as_secs()));
                limited += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    // The window may roll over mid-test, admitting a few more: never fewer, never more than 2×.
    assert!((17..=34).contains(&ok), "admitted {ok}");
    assert_eq!(ok + limited, 60);
    let client = db.pool().get().await.unwrap();
    let holds: i64 = client
        .query_one("SELECT count(*) FROM credit_holds", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(holds, ok as i64, "refused requests hold nothing");

    // Another key of the same user has its own window.
    admission::admit(
        &**client,
        &request("busy", "other-key", Uuid::new_v4(), 17, None),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn provider_rpm_and_tpm_limits_are_shared() {
    let db = TestDb::new().await;
    funded(&db, "p", "100").await;
    let client = db.pool().get().await.unwrap();
    let key = Uuid::new_v4();
    let rpm_limited = ProviderLimit {
        provider_id: 7,
        rpm: Some(2),
        tpm: None,
        tokens: 10,
    };
    admission::admit(&**client, &request("p", "a", key, 100, Some(rpm_limited)))
        .await
        .unwrap();
    admission::admit(&**client, &request("p", "b", key, 100, Some(rpm_limited)))
        .await
        .unwrap();
    let err = admission::admit(&**client, &request("p", "c", key, 100, Some(rpm_limited)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AdmissionError::ProviderRateLimited { .. }),
        "{err}"
    );

    let tpm_limited = ProviderLimit {
        provider_id: 8,
        rpm: None,
        tpm: Some(1000),
        tokens: 600,
    };
    admission::admit(&**client, &request("p", "d", key, 100, Some(tpm_limited)))
        .await
        .unwrap();
    let err = admission::admit(&**client, &request("p", "e", key, 100, Some(tpm_limited)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AdmissionError::ProviderRateLimited { .. }),
        "{err}"
    );
    // A smaller request still fits the remaining budget.
    let small = ProviderLimit {
        tokens: 400,
        ..tpm_limited
    };
    admission::admit(&**client, &request("p", "f", key, 100, Some(small)))
        .await
        .unwrap();

    // The fallback path takes provider slots on its own.
    assert!(
        admission::take_provider_slot(&**client, &rpm_limited)
            .await
            .unwrap()
            .is_some()
    );
    let free = ProviderLimit {
        provider_id: 9,
        rpm: Some(1),
        tpm: None,
        tokens: 1,
    };
    assert!(
        admission::take_provider_slot(&**client, &free)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        admission::take_provider_slot(&**client, &free)
            .await
            .unwrap()
            .is_some()
    );
    let unlimited = ProviderLimit {
        provider_id: 10,
        rpm: None,
        tpm: None,
        tokens: 1,
    };
    for _ in 0..5 {
        assert!(
            admission::take_provider_slot(&**client, &unlimited)
                .await
                .unwrap()
                .is_none()
        );
    }

    // Old windows are pruned.
    client
        .execute(
            "UPDATE rate_limit_counters SET window_start = window_start - interval '1 hour'",
            &[],
        )
        .await
        .unwrap();
    assert!(
        admission::prune_counters(&**client, std::time::Duration::from_secs(600))
            .await
            .unwrap()
            >= 3
    );
}

#[tokio::test]
async fn money_refusals_come_through_admission() {
    let db = TestDb::new().await;
    funded(&db, "poor", "0.015").await;
    let client = db.pool().get().await.unwrap();
    let key = Uuid::new_v4();
    admission::admit(&**client, &request("poor", "1", key, 100, None))
        .await
        .unwrap();
    let err = admission::admit(&**client, &request("poor", "2", key, 100, None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AdmissionError::Ledger(LedgerError::InsufficientCredits { .. })
        ),
        "{err}"
    );
    let err = admission::admit(&**client, &request("nobody", "3", key, 100, None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AdmissionError::Ledger(LedgerError::NoAccount)),
        "{err}"
    );
}
