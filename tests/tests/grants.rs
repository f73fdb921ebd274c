//! Quota grants (ledger.md, "Quota grants"), through the gateway with grants on as `serve`
//! runs them, against real PostgreSQL: a busy account admitted in memory against one grant
//! and charged exactly once per answer by the batches; exactly K of N with one and with two
//! instances on one account; an idle instance's grant recalled by another instance that
//! needs the money (granted and per-request); a batch that cannot be written kept in the
//! spool and charged from it once; a load that outruns the database never leaves more than
//! the queue's limit (and the batch being written) of delivered answers uncharged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchboard_core::http::finish_router;
use switchboard_core::ledger::{FileSpool, GrantBook, GrantSettings};
use switchboard_core::state::AppState;
use switchboard_tests::fake_upstream::Reply;
use switchboard_tests::gateway::{Gateway, chat_request};
use tower::ServiceExt;

async fn with_grants() -> Gateway {
    Gateway::start_granted().await
}

/// A model whose input is free: a request's worst case is exactly its 1,000 output tokens
/// at $1 per 1M ($0.001), whatever its prompt; the upstream bills exactly that.
async fn exact_model(gw: &Gateway) {
    gw.db
        .connect()
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
    gw.state.catalog.invalidate();
    gw.upstream
        .set_default(Reply::text("Done.").with_usage(20, 1000, 0));
}

fn exact_request() -> Value {
    json!({"model": "exact-model", "max_tokens": 1000,
           "messages": [{"role": "user", "content": "Go."}]})
}

/// A second instance on the same database: its own grants (and writer).
fn second_instance(gw: &Gateway) -> (Router, Arc<GrantBook>) {
    second_instance_with(gw, switchboard_core::ledger::MAX_QUEUED)
}

fn second_instance_with(gw: &Gateway, max_queued: usize) -> (Router, Arc<GrantBook>) {
    let settings = GrantSettings {
        flush_delay: Duration::from_millis(20),
        hold_ttl: gw.state.config.ledger.hold_ttl,
        idle: gw.state.config.ledger.grant_idle,
        max_queued,
    };
    let base = AppState::new((*gw.state.config).clone(), gw.state.pool.clone());
    let mut base = base;
    base.vault = Arc::clone(&gw.state.vault);
    base.system_keys = Arc::clone(&gw.state.system_keys);
    base.providers = gw.state.providers.clone();
    let (state, book) = base.with_grants(settings);
    tokio::spawn(Arc::clone(&book).run(std::future::pending::<()>()));
    let limit = state.config.server.max_body_bytes;
    (finish_router(switchboard_chat::router(state), limit), book)
}

/// Writes every granted capture queued so far in `books`. `flush` comes first in each
/// round: it waits for a batch a writer task has taken off the queue and is still writing
/// (an empty queue alone does not mean written: the check after it raced such a batch).
async fn flush(books: &[&Arc<GrantBook>]) {
    for _ in 0..200 {
        for book in books {
            book.flush().await;
        }
        if books.iter().all(|b| b.queued() == 0) {
            return;
        }
    }
}

async fn scalar<T: for<'a> tokio_postgres::types::FromSql<'a>>(gw: &Gateway, sql: &str) -> T {
    gw.db
        .connect()
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_account_is_admitted_against_its_grant_and_charged_once_per_answer() {
    let gw = with_grants().await;
    exact_model(&gw).await;
    let key = gw.user("busy", "enterprise", "10").await;
    let mut told = Decimal::ZERO;
    for _ in 0..40 {
        let (status, _, body) = gw.chat(&key, &exact_request(), &[]).await;
        assert_eq!(status, 200, "{body}");
        told += body["_metadata"]["cost_usd"]
            .as_str()
            .unwrap()
            .parse::<Decimal>()
            .unwrap();
    }
    gw.flush_grants().await;
    // The first requests of a quiet account hold per request; once busy, one grant serves.
    let per_request: i64 = scalar(
        &gw,
        "SELECT count(*) FROM credit_holds WHERE request_id NOT LIKE 'grant:%'",
    )
    .await;
    let grants: i64 = scalar(
        &gw,
        "SELECT count(*) FROM credit_holds WHERE request_id LIKE 'grant:%'",
    )
    .await;
    assert!(per_request < 10, "{per_request} per-request holds");
    assert_eq!(grants, 1);
    // Every answer charged exactly once: 40 captures, 40 usage rows, 40 billing events.
    let captures: i64 = scalar(
        &gw,
        "SELECT count(*) FROM ledger_entries WHERE user_id = 'busy' AND kind = 'capture'",
    )
    .await;
    let usage: i64 = scalar(
        &gw,
        "SELECT count(*) FROM llm_usage_logs WHERE status_code = 200",
    )
    .await;
    let events: i64 = scalar(&gw, "SELECT count(*) FROM billing_events").await;
    assert_eq!((captures, usage, events), (40, 40, 40));
    assert_eq!(told, Decimal::new(40, 3));
    assert_eq!(gw.balance("busy").await, Decimal::from(10) - told);
    let report = switchboard_core::ledger::check_invariants(&gw.db.connect().await, "busy")
        .await
        .unwrap();
    assert_eq!(report.balance, report.sum_of_entries, "{report:?}");
    // The grant shrank by every capture: what it still holds is room, not spent money.
    let held: Decimal = scalar(
        &gw,
        "SELECT coalesce(sum(amount_usd), 0) FROM credit_holds WHERE state = 'active'",
    )
    .await;
    assert!(held <= gw.balance("busy").await, "{held}");
}

/// ledger.md: exactly K of N, with grants — the last requests are admitted one worst case
/// at a time (the grant gives back what is not in flight), so no request is refused while
/// this or another instance sits on the account's money.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_k_of_n_with_grants_in_one_and_in_two_instances() {
    const N: usize = 100;
    for (instances, k) in [(1usize, 37usize), (2, 41)] {
        let gw = with_grants().await;
        exact_model(&gw).await;
        let user = format!("k-of-n-{instances}");
        let key = gw
            .user(&user, "enterprise", &Decimal::new(k as i64, 3).to_string())
            .await;
        let (second, second_book) = second_instance(&gw);
        let apps = [gw.app.clone(), second];
        let callers: Vec<_> = (0..N)
            .map(|i| {
                let app = apps[i % instances].clone();
                let request = chat_request(&key, &exact_request(), &[]);
                tokio::spawn(async move { app.oneshot(request).await.unwrap().status().as_u16() })
            })
            .collect();
        let mut ok = 0;
        let mut refused = 0;
        for caller in callers {
            match caller.await.unwrap() {
                200 => ok += 1,
                402 => refused += 1,
                other => panic!("{other}"),
            }
        }
        flush(&[gw.grants.as_ref().unwrap(), &second_book]).await;
        let holds: Vec<(String, String, Decimal)> = gw
            .db
            .connect()
            .await
            .query(
                "SELECT request_id, state, amount_usd FROM credit_holds ORDER BY id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            (ok, refused),
            (k, N - k),
            "{instances} instance(s): balance {} holds {holds:?}",
            gw.balance(&user).await
        );
        let report = switchboard_core::ledger::check_invariants(&gw.db.connect().await, &user)
            .await
            .unwrap();
        assert_eq!(report.balance, report.sum_of_entries, "{report:?}");
        assert_eq!(report.balance, Decimal::ZERO, "{report:?}");
        let held: Decimal = scalar(
            &gw,
            "SELECT coalesce(sum(amount_usd), 0) FROM credit_holds WHERE state = 'active'",
        )
        .await;
        assert_eq!(held, Decimal::ZERO, "nothing left held");
    }
}

/// Instance A takes a grant on an account during a burst and goes quiet with part of it
/// unused; instance B then spends the rest of the balance. Without the recall B would be
/// refused for the money A's grant sits on (for `SWITCHBOARD_LEDGER_GRANT_IDLE_SECS`); with
/// it B gets every request the balance pays for, whether B admits against its own grant
/// (a burst) or with per-request holds (a slow client, never busy enough for a grant).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_instance_gives_back_its_grant_to_another_that_needs_the_money() {
    for (label, pause) in [
        ("burst", Duration::ZERO),
        ("slow", Duration::from_millis(200)),
    ] {
        let gw = with_grants().await;
        exact_model(&gw).await;
        let user = format!("recall-{label}");
        // 20 requests' worth ($0.001 each).
        let key = gw.user(&user, "enterprise", "0.020").await;
        let (second, second_book) = second_instance(&gw);

        // A: a burst of 10 takes a grant (the 8th request makes the account busy there).
        let burst: Vec<_> = (0..10)
            .map(|_| {
                let app = gw.app.clone();
                let request = chat_request(&key, &exact_request(), &[]);
                tokio::spawn(async move { app.oneshot(request).await.unwrap().status().as_u16() })
            })
            .collect();
        for call in burst {
            assert_eq!(call.await.unwrap(), 200);
        }
        flush(&[gw.grants.as_ref().unwrap()]).await;
        let unused: Decimal = scalar(
            &gw,
            "SELECT coalesce(sum(amount_usd), 0) FROM credit_holds
             WHERE state = 'active' AND request_id LIKE 'grant:%'",
        )
        .await;
        assert!(
            unused > Decimal::ZERO,
            "{label}: A holds no grant after its burst"
        );

        // B: one request at a time until refused.
        let mut served = 0;
        let last_refusal;
        loop {
            let started = std::time::Instant::now();
            let status = second
                .clone()
                .oneshot(chat_request(&key, &exact_request(), &[]))
                .await
                .unwrap()
                .status()
                .as_u16();
            match status {
                200 => served += 1,
                402 => {
                    last_refusal = started.elapsed();
                    break;
                }
                other => panic!("{label}: {other}"),
            }
            assert!(
                served <= 10,
                "{label}: more answers than the balance pays for"
            );
            tokio::time::sleep(pause).await;
        }
        flush(&[gw.grants.as_ref().unwrap(), &second_book]).await;
        assert_eq!(
            served, 10,
            "{label}: B got {served} of the 10 requests the balance pays for (A's grant held {unused})"
        );
        assert!(
            last_refusal < Duration::from_secs(3),
            "{label}: the final refusal took {last_refusal:?}"
        );
        let report = switchboard_core::ledger::check_invariants(&gw.db.connect().await, &user)
            .await
            .unwrap();
        assert_eq!(report.balance, report.sum_of_entries, "{report:?}");
        assert_eq!(report.balance, Decimal::ZERO, "{label}: {report:?}");
    }
}

/// A batch that cannot be written (here the database refuses every capture) is retried,
/// then kept in the spool after the settlement budget, and charged from it exactly once
/// when the database takes it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_cannot_be_written_is_kept_in_the_spool_and_charged_once() {
    let gw = Gateway::start().await;
    exact_model(&gw).await;
    let key = gw.user("spooled", "enterprise", "10").await;
    let dir = std::env::temp_dir().join(format!("sb-grant-spool-{}", uuid::Uuid::new_v4()));
    let spool = Arc::new(FileSpool::open(&dir).unwrap());
    let settings = GrantSettings {
        flush_delay: Duration::from_millis(20),
        hold_ttl: gw.state.config.ledger.hold_ttl,
        idle: gw.state.config.ledger.grant_idle,
        max_queued: switchboard_core::ledger::MAX_QUEUED,
    };
    let (state, book) = gw
        .state
        .clone()
        .with_pending_charges(spool.clone())
        .with_grants(settings);
    tokio::spawn(Arc::clone(&book).run(std::future::pending::<()>()));
    let app = finish_router(
        switchboard_chat::router(state),
        gw.state.config.server.max_body_bytes,
    );
    let send = |app: Router| {
        let request = chat_request(&key, &exact_request(), &[]);
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (
                status,
                serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
            )
        }
    };
    // Busy first (grants are for busy accounts), with the database writing normally.
    for _ in 0..10 {
        assert_eq!(send(app.clone()).await.0, 200);
    }
    flush(&[&book]).await;
    let client = gw.db.connect().await;
    client
        .batch_execute(
            "CREATE FUNCTION refuse_captures() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'capture refused for the test'; END $$;
             CREATE TRIGGER refuse_captures BEFORE INSERT ON ledger_entries
             FOR EACH ROW WHEN (NEW.kind = 'capture') EXECUTE FUNCTION refuse_captures();",
        )
        .await
        .unwrap();
    let mut during = Vec::new();
    for _ in 0..5 {
        let (status, body) = send(app.clone()).await;
        assert_eq!(status, 200, "{body}");
        during.push(
            body["_metadata"]["request_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // After the budget (4 s) the batch is in the spool.
    let mut kept = 0;
    for _ in 0..100 {
        kept = spool.kept().unwrap().len();
        if kept == during.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kept, during.len(), "the refused batch was kept");
    client
        .batch_execute("DROP TRIGGER refuse_captures ON ledger_entries")
        .await
        .unwrap();
    let drained = spool.drain(&gw.state.pool).await.unwrap();
    assert_eq!(drained.captured, during.len() as u64);
    let again = spool.drain(&gw.state.pool).await.unwrap();
    assert_eq!(again.captured + again.duplicates, 0);
    let captures: i64 = client
        .query_one(
            "SELECT count(*) FROM ledger_entries WHERE user_id = 'spooled' AND kind = 'capture'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(captures, 15);
    for id in &during {
        let rows: i64 = client
            .query_one(
                "SELECT count(*) FROM llm_usage_logs WHERE request_id = $1 AND status_code = 200",
                &[id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 1, "{id}");
    }
    let report = switchboard_core::ledger::check_invariants(&client, "spooled")
        .await
        .unwrap();
    assert_eq!(report.balance, report.sum_of_entries, "{report:?}");
    assert_eq!(report.balance, Decimal::from(10) - Decimal::new(15, 3));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every capture statement takes 0.3 s longer (a trigger sleeps in it) while 32 clients
/// send as fast as they can: answers delivered and not yet charged stay
/// within the queue's limit plus the batch being written, the clients wait instead (what a
/// crash could lose stays bounded), and every answer is charged once in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_outruns_the_database_waits_instead_of_piling_up_uncharged_answers() {
    const LIMIT: usize = 4;
    const CLIENTS: i64 = 32;
    let gw = with_grants().await;
    exact_model(&gw).await;
    let key = gw.user("outrun", "enterprise", "100").await;
    gw.db
        .connect()
        .await
        .execute(
            "UPDATE llm_providers SET rate_limit_rpm = NULL, rate_limit_tpm = NULL
             WHERE provider_slug = 'openai'",
            &[],
        )
        .await
        .unwrap();
    gw.state.catalog.invalidate();
    let (app, book) = second_instance_with(&gw, LIMIT);
    let client = gw.db.connect().await;
    client
        .batch_execute(
            "CREATE FUNCTION slow_captures() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$;
             CREATE TRIGGER slow_captures AFTER INSERT ON ledger_entries
             FOR EACH STATEMENT EXECUTE FUNCTION slow_captures();",
        )
        .await
        .unwrap();

    let delivered = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (app, key, delivered, running) =
            (app.clone(), key.clone(), delivered.clone(), running.clone());
        clients.push(tokio::spawn(async move {
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                let request = chat_request(&key, &exact_request(), &[]);
                let response = app.clone().oneshot(request).await.unwrap();
                let ok = response.status() == 200;
                let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
                if ok {
                    delivered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }));
    }
    // Delivered first, charged after: a gap read this way is never smaller than it was.
    let mut widest = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let before = delivered.load(std::sync::atomic::Ordering::SeqCst);
        let written: i64 = client
            .query_one(
                "SELECT count(*) FROM ledger_entries WHERE user_id = 'outrun' AND kind = 'capture'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        widest = widest.max(before - written);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let total = delivered.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("{total} answers delivered; at most {widest} of them uncharged at once");
    assert!(total > LIMIT as i64 * 2, "too little load: {total}");
    // The limit; the batch being written, which took at most the queue as it stood (the
    // limit and one capture per waiting client); and the answers on their way out while
    // the count was read, at most one per client. Without the wait: 420 of 1,255.
    assert!(
        widest <= LIMIT as i64 + (LIMIT as i64 + CLIENTS) + CLIENTS,
        "{widest} answers delivered and uncharged at once (limit {LIMIT})"
    );

    client
        .batch_execute("DROP TRIGGER slow_captures ON ledger_entries")
        .await
        .unwrap();
    flush(&[&book]).await;
    let captures: i64 = scalar(
        &gw,
        "SELECT count(*) FROM ledger_entries WHERE user_id = 'outrun' AND kind = 'capture'",
    )
    .await;
    assert_eq!(captures, total, "every answer charged once");
    let report = switchboard_core::ledger::check_invariants(&client, "outrun")
        .await
        .unwrap();
    assert_eq!(report.balance, report.sum_of_entries, "{report:?}");
}
