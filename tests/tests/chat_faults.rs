//! Money under faults, end to end against real PostgreSQL and the fake upstream: a client
//! that hangs up before, during and after the upstream call or in the middle of a stream,
//! a provider that cuts its stream, a capture that fails once, bookkeeping that fails after
//! the capture, the Lambda deadline and the serve stream limit reached mid-stream, a BYOK
//! key at its limit, and the gateway's own deadline. After each: charged exactly once (or
//! not at all), no hold left active, the usage log and the ledger in agreement.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchboard_tests::fake_upstream::{Reply, Step};
use switchboard_tests::gateway::{Gateway, GatewayOptions, chat_request, parse_sse};

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 100})
}

fn streamed(model: &str) -> Value {
    let mut body = hello(model);
    body["stream"] = json!(true);
    body
}

/// Polls `check` every 20 ms until it is true or `within` passed; returns whether it was.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn hold_states(gw: &Gateway, user: &str) -> Vec<String> {
    gw.db
        .connect()
        .await
        .query(
            "SELECT state FROM credit_holds WHERE user_id = $1 ORDER BY created_at",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn active_holds(gw: &Gateway, user: &str) -> usize {
    hold_states(gw, user)
        .await
        .iter()
        .filter(|s| *s == "active")
        .count()
}

/// (status_code, charged_usd, error_message) of each usage row of a request.
async fn usage_rows(gw: &Gateway, request_id: &str) -> Vec<(Option<i32>, Decimal, Option<String>)> {
    gw.db
        .connect()
        .await
        .query(
            "SELECT status_code, charged_usd, error_message FROM llm_usage_logs
             WHERE request_id = $1 ORDER BY attempt",
            &[&request_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The money the ledger took from a user (captures and BYOK fees).
async fn captured(gw: &Gateway, user: &str) -> (i64, Decimal) {
    let row = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT count(*), coalesce(-sum(amount_usd), 0) FROM ledger_entries
             WHERE user_id = $1 AND kind IN ('capture', 'byok_fee')",
            &[&user],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The usage log and the ledger agree: what the rows say was charged is what was captured.
async fn assert_usage_matches_ledger(gw: &Gateway, user: &str) {
    let logged: Decimal = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT coalesce(sum(charged_usd), 0) FROM llm_usage_logs WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, captured(gw, user).await.1, "usage log = ledger");
}

async fn breaker_failures(gw: &Gateway, slug: &str) -> (i32, bool) {
    let row = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT breaker_consecutive_failures, coalesce(breaker_open_until > now(), false)
             FROM llm_providers WHERE provider_slug = $1",
            &[&slug],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Adds a second offer of `gpt-4o` on OpenRouter, tried after OpenAI's.
/// A session holding the account's admission lock (the advisory lock `sb_admit` takes) or
/// its row lock (which a capture needs) until dropped.
struct Blocker {
    client: tokio_postgres::Client,
}

impl Blocker {
    async fn admissions(gw: &Gateway, user: &str) -> Blocker {
        let client = gw.db.connect().await;
        client
            .execute(
                "SELECT pg_advisory_lock(1397246028, hashtext($1))",
                &[&user],
            )
            .await
            .unwrap();
        Blocker { client }
    }

    async fn account_row(gw: &Gateway, user: &str) -> Blocker {
        let client = gw.db.connect().await;
        client.batch_execute("BEGIN").await.unwrap();
        client
            .execute(
                "SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE",
                &[&user],
            )
            .await
            .unwrap();
        Blocker { client }
    }

    async fn release(self) {
        // Ends a transaction if one is open, and the session's advisory locks.
        let _ = self.client.batch_execute("ROLLBACK").await;
        self.client
            .batch_execute("SELECT pg_advisory_unlock_all()")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_buffered_client_gone_before_the_upstream_call_is_never_sent_upstream_nor_charged() {
    let gw = Gateway::start().await;
    let key = gw.user("early", "starter", "10").await;
    let blocker = Blocker::admissions(&gw, "early").await;
    let gone = tokio::time::timeout(
        Duration::from_millis(300),
        gw.chat(&key, &hello("gpt-4o"), &[("x-request-id", "early-1")]),
    )
    .await;
    assert!(gone.is_err(), "the client gave up while admission waited");
    blocker.release().await;
    // The admission completes in the run's own task, finds nobody waiting, and releases.
    assert!(
        eventually(Duration::from_secs(5), || async {
            hold_states(&gw, "early").await == ["released"]
        })
        .await,
        "{:?}",
        hold_states(&gw, "early").await
    );
    assert_eq!(gw.upstream.request_count(), 0, "no upstream call was made");
    assert_eq!(gw.balance("early").await, d("10"));
    assert!(usage_rows(&gw, "early-1").await.is_empty());
    gw.assert_ledger_consistent("early").await;
}

/// The reported case: the client times out after 0.3 s, the provider answers at 1.5 s.
#[tokio::test]
async fn a_buffered_client_gone_during_the_upstream_call_is_charged_once_when_it_ends() {
    let gw = Gateway::start().await;
    let key = gw.user("during", "starter", "10").await;
    gw.upstream.push(Step::delayed_reply(
        Duration::from_millis(1500),
        Reply::text("late").with_usage(100, 20, 0),
    ));
    // The client gives up 0.3 s in, once the provider has the call (a cold gateway may
    // take longer than 0.3 s to get there; leaving earlier is the case above).
    let body = hello("gpt-4o");
    let request = gw.chat(&key, &body, &[("x-request-id", "during-1")]);
    let give_up = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            eventually(Duration::from_secs(2), || async {
                gw.upstream.request_count() == 1
            })
            .await
        );
    };
    tokio::select! {
        answer = request => panic!("answered before the client left: {answer:?}"),
        () = give_up => {}
    }
    assert_eq!(
        active_holds(&gw, "during").await,
        1,
        "held while the call runs"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            hold_states(&gw, "during").await == ["captured"]
        })
        .await,
        "the hold is closed once the provider answered: {:?}",
        hold_states(&gw, "during").await
    );
    // 100 × 2.50 + 20 × 10.00 per 1M (gpt-4o) = 0.00045.
    let rows = usage_rows(&gw, "during-1").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].0, rows[0].1), (Some(200), d("0.00045")));
    assert!(
        rows[0]
            .2
            .as_deref()
            .unwrap()
            .contains("client disconnected")
    );
    assert_eq!(captured(&gw, "during").await, (1, d("0.00045")));
    assert_eq!(gw.balance("during").await, d("9.99955"));
    assert_eq!(
        gw.upstream.request_count(),
        1,
        "no fallback for a client gone"
    );
    gw.assert_ledger_consistent("during").await;
}

#[tokio::test]
async fn a_buffered_client_gone_while_the_capture_waits_is_charged_exactly_once() {
    let gw = Gateway::start().await;
    let key = gw.user("after", "starter", "10").await;
    gw.upstream.push(Step::delayed_reply(
        Duration::from_millis(400),
        Reply::text("done").with_usage(100, 20, 0),
    ));
    let request = {
        let (gw, key) = (&gw, key.clone());
        async move {
            gw.chat(&key, &hello("gpt-4o"), &[("x-request-id", "after-1")])
                .await
        }
    };
    let client_side = async {
        // Once the provider has the call (so the admission is through), block the
        // capture, then give up waiting.
        assert!(
            eventually(Duration::from_secs(2), || async {
                gw.upstream.request_count() == 1
            })
            .await
        );
        Blocker::account_row(&gw, "after").await
    };
    let (gone, blocker) = tokio::join!(
        tokio::time::timeout(Duration::from_millis(1200), request),
        client_side
    );
    assert!(gone.is_err(), "the client left while the capture waited");
    assert_eq!(gw.upstream.request_count(), 1, "the provider had answered");
    assert_eq!(active_holds(&gw, "after").await, 1);
    blocker.release().await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            hold_states(&gw, "after").await == ["captured"]
        })
        .await
    );
    let rows = usage_rows(&gw, "after-1").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].0, rows[0].1), (Some(200), d("0.00045")));
    assert_eq!(captured(&gw, "after").await, (1, d("0.00045")));
    gw.assert_ledger_consistent("after").await;
}

#[tokio::test]
async fn a_streaming_client_gone_stops_the_upstream_read_and_is_settled_at_once() {
    let gw = Gateway::start().await;
    let key = gw.user("leaver", "starter", "10").await;
    // About 200 frames, 40 ms apart: 8 s if read to the end.
    gw.upstream.push(Step::slow_stream(
        Reply::text("word ".repeat(200)).with_usage(50, 400, 0),
        Duration::from_millis(40),
    ));
    let response = gw
        .send(chat_request(
            &key,
            &streamed("gpt-4o"),
            &[("x-request-id", "leaver-1")],
        ))
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body().into_data_stream();
    let _first = body.next().await.unwrap().unwrap();
    let _second = body.next().await.unwrap().unwrap();
    let left = Instant::now();
    drop(body);
    assert!(
        eventually(Duration::from_secs(2), || async {
            hold_states(&gw, "leaver").await == ["captured"]
        })
        .await,
        "settled within 2 s of the client leaving, not when the 8 s stream would end"
    );
    assert!(left.elapsed() < Duration::from_secs(3));
    let rows = usage_rows(&gw, "leaver-1").await;
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0].1 > Decimal::ZERO && rows[0].1 < d("0.004"),
        "charged for what was produced, not the whole answer: {rows:?}"
    );
    assert!(
        rows[0]
            .2
            .as_deref()
            .unwrap()
            .contains("client disconnected")
    );
    assert_usage_matches_ledger(&gw, "leaver").await;
    gw.assert_ledger_consistent("leaver").await;
}

#[tokio::test]
async fn streams_cut_by_the_provider_count_toward_the_breaker_and_are_charged() {
    let gw = Gateway::start().await;
    let key = gw.user("cuts", "starter", "10").await;
    // A snapshot that already shows a failure: a success-close must not undo the count.
    gw.db
        .connect()
        .await
        .batch_execute(
            "UPDATE llm_providers SET breaker_consecutive_failures = 1 WHERE provider_slug = 'openai'",
        )
        .await
        .unwrap();
    gw.state.catalog.invalidate();
    for round in 2..=3 {
        gw.upstream.push(Step::cut_stream(
            Reply::text("This answer will be cut somewhere in the middle of it."),
            3,
        ));
        let (status, _, events) = gw
            .chat_stream(
                &key,
                &streamed("openai/gpt-4o"),
                &[("x-request-id", &format!("cut-{round}"))],
            )
            .await;
        assert_eq!(status, 200);
        assert!(
            events.iter().any(|(e, _)| e.as_deref() == Some("error")),
            "{events:?}"
        );
        assert_eq!(events.last().unwrap().1, "[DONE]");
        let rows = usage_rows(&gw, &format!("cut-{round}")).await;
        assert!(rows[0].1 > Decimal::ZERO, "the tokens sent are charged");
        assert_eq!(breaker_failures(&gw, "openai").await, (round, round >= 3));
    }
    assert_usage_matches_ledger(&gw, "cuts").await;
    gw.assert_ledger_consistent("cuts").await;
}

/// A trigger that makes the next `n` captures fail (the billing event insert is part of
/// every capture and of nothing else). A sequence counts, since it survives the rollback.
async fn fail_captures(gw: &Gateway, n: i64) {
    gw.db
        .connect()
        .await
        .batch_execute(&format!(
            "CREATE SEQUENCE capture_faults;
             CREATE FUNCTION fail_capture() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF nextval('capture_faults') <= {n} THEN
                     RAISE EXCEPTION 'injected capture failure';
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER fail_capture BEFORE INSERT ON billing_events
                 FOR EACH ROW EXECUTE FUNCTION fail_capture();"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_capture_that_fails_once_is_retried_and_charged_exactly_once() {
    let gw = Gateway::start().await;
    let key = gw.user("retry", "starter", "10").await;
    fail_captures(&gw, 1).await;
    gw.upstream
        .push(Step::reply(Reply::text("hi").with_usage(100, 20, 0)));
    let (status, _, body) = gw
        .chat(&key, &hello("gpt-4o"), &[("x-request-id", "retry-1")])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["_metadata"]["cost_usd"], "0.00045");
    assert_eq!(body["_metadata"]["credits_remaining"], "9.99955");
    assert!(body["_metadata"].get("charge_pending").is_none());
    assert_eq!(captured(&gw, "retry").await, (1, d("0.00045")));
    assert_eq!(usage_rows(&gw, "retry-1").await.len(), 1);
    assert_eq!(hold_states(&gw, "retry").await, ["captured"]);
    gw.assert_ledger_consistent("retry").await;
}

#[tokio::test]
async fn bookkeeping_that_fails_after_the_capture_never_turns_the_answer_into_an_error() {
    let gw = Gateway::start().await;
    let key = gw.user("paid", "starter", "10").await;
    // The breaker had a failure, so a success closes it: make that write fail.
    gw.db
        .connect()
        .await
        .batch_execute(
            "UPDATE llm_providers SET breaker_consecutive_failures = 1 WHERE provider_slug = 'openai';
             CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'injected bookkeeping failure'; END $$;
             CREATE TRIGGER refuse BEFORE UPDATE ON llm_providers
                 FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();
    gw.state.catalog.invalidate();
    let (status, _, body) = gw
        .chat(&key, &hello("openai/gpt-4o"), &[("x-request-id", "paid-1")])
        .await;
    assert_eq!(status, 200, "a paid answer is delivered: {body}");
    assert!(body["_metadata"]["credits_remaining"].is_string());
    assert_eq!(captured(&gw, "paid").await.0, 1);
    assert_usage_matches_ledger(&gw, "paid").await;
    gw.assert_ledger_consistent("paid").await;
}

/// Reads an SSE body to its end; returns the events and how long it took.
async fn read_sse(
    response: http::Response<axum::body::Body>,
) -> (Vec<(Option<String>, String)>, Duration) {
    let started = Instant::now();
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    (parse_sse(&text), started.elapsed())
}

/// Checks the clean end of a stream cut by a time limit, and its settlement.
async fn assert_time_limited(
    gw: &Gateway,
    user: &str,
    request_id: &str,
    events: &[(Option<String>, String)],
) {
    assert_eq!(events.last().unwrap().1, "[DONE]", "{events:?}");
    let (event, error) = &events[events.len() - 2];
    assert_eq!(event.as_deref(), Some("error"), "{events:?}");
    let error: Value = serde_json::from_str(error).unwrap();
    assert_eq!(error["error"]["type"], "upstream_timeout", "{error}");
    let last: Value = serde_json::from_str(&events[events.len() - 3].1).unwrap();
    let metadata = &last["_metadata"];
    assert!(metadata["credits_remaining"].is_string(), "{last}");
    let rows = usage_rows(gw, request_id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        rows[0].1 > Decimal::ZERO && rows[0].1 < d("0.004"),
        "{rows:?}"
    );
    assert_eq!(metadata["cost_usd"], rows[0].1.normalize().to_string());
    assert!(rows[0].2.as_deref().unwrap().contains("time limit"));
    // Settled before [DONE]: nothing left to wait for.
    assert_eq!(hold_states(gw, user).await, ["captured"]);
    assert_usage_matches_ledger(gw, user).await;
    gw.assert_ledger_consistent(user).await;
}

#[tokio::test]
async fn the_lambda_deadline_ends_a_stream_cleanly_and_settled_before_it() {
    let gw = Gateway::start().await;
    let key = gw.user("lambda", "starter", "10").await;
    gw.upstream.push(Step::slow_stream(
        Reply::text("word ".repeat(200)).with_usage(50, 400, 0),
        Duration::from_millis(40),
    ));
    // The invocation ends 6 s from now; the stream must end, settled, by then less the
    // margin (for so short a timeout, a third of it: 2 s).
    let total = Duration::from_secs(6);
    let margin = switchboard_core::chat::lambda_margin(total);
    assert_eq!(margin, Duration::from_secs(2));
    let deadline = std::time::SystemTime::now() + total;
    let mut context = lambda_http::Context::default();
    context.deadline = deadline
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut request = chat_request(&key, &streamed("gpt-4o"), &[("x-request-id", "lambda-1")]);
    request.extensions_mut().insert(context);
    let response = gw.send(request).await;
    assert_eq!(response.status(), 200);
    let (events, _) = read_sse(response).await;
    let left = deadline
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(
        left >= margin - Duration::from_millis(500),
        "the stream ended about the margin before the deadline ({left:?} left)"
    );
    assert_time_limited(&gw, "lambda", "lambda-1", &events).await;
}

#[tokio::test]
async fn serve_ends_a_stream_at_its_configured_maximum_duration() {
    let gw = Gateway::start_with(GatewayOptions {
        env: vec![("SWITCHBOARD_MAX_STREAM_SECS", "2".into())],
        ..GatewayOptions::default()
    })
    .await;
    let key = gw.user("long", "starter", "10").await;
    gw.upstream.push(Step::slow_stream(
        Reply::text("word ".repeat(200)).with_usage(50, 400, 0),
        Duration::from_millis(40),
    ));
    // The limit counts from the request's start (admission included, slow on a loaded
    // machine), so the time is taken from before it is sent.
    let sent = std::time::Instant::now();
    let response = gw
        .send(chat_request(
            &key,
            &streamed("gpt-4o"),
            &[("x-request-id", "long-1")],
        ))
        .await;
    assert_eq!(response.status(), 200);
    let (events, _) = read_sse(response).await;
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "ended at the 2 s limit: {took:?}"
    );
    assert_time_limited(&gw, "long", "long-1", &events).await;
}

async fn put_byok(gw: &Gateway, key: &str, slug: &str, provider_key: &str) {
    let request = http::Request::builder()
        .method("PUT")
        .uri(format!("/v1/byok/{slug}"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({"api_key": provider_key}).to_string(),
        ))
        .unwrap();
    assert_eq!(gw.send(request).await.status(), 200);
}

#[tokio::test]
async fn a_byok_429_cools_down_that_users_key_only_never_the_provider_for_others() {
    let gw = Gateway::start().await;
    gw.add_second_gpt4o_offer().await;
    let owner = gw.user("own-key", "starter", "10").await;
    let other = gw.user("other", "starter", "10").await;
    let users_key = "sk-proj-users-own-key-0123456789abcdef";
    put_byok(&gw, &owner, "openai", users_key).await;

    // The user's own key is at its limit: a Retry-After that would open the shared breaker.
    gw.upstream.push(Step::rate_limited("120"));
    let (status, _, body) = gw
        .chat(&owner, &hello("gpt-4o"), &[("x-request-id", "own-1")])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["_metadata"]["provider_used"], "openrouter");
    assert_eq!(breaker_failures(&gw, "openai").await, (0, false));
    let cooling: bool = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT cooldown_until > now() + interval '100 seconds' FROM user_api_keys WHERE user_id = 'own-key'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(cooling, "the user's key cools down for the Retry-After");

    // Another user is served by OpenAI on the platform's key.
    let (status, _, body) = gw.chat(&other, &hello("gpt-4o"), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["_metadata"]["provider_used"], "openai");
    assert_eq!(body["_metadata"]["attempts"], 1);

    // The owner's next request skips their cooling key without a call.
    let before = gw.upstream.request_count();
    let (status, _, body) = gw.chat(&owner, &hello("gpt-4o"), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["_metadata"]["provider_used"], "openrouter");
    assert_eq!(gw.upstream.request_count(), before + 1);
    assert_ne!(
        gw.upstream.last_request().unwrap().header("authorization"),
        Some(format!("Bearer {users_key}").as_str())
    );
    // Pinned to their own key only: a 429 of our own with the time left.
    let (status, headers, body) = gw.chat(&owner, &hello("openai/gpt-4o"), &[]).await;
    assert_eq!(status, 429, "{body}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((100..=120).contains(&retry_after), "{retry_after}");
    for user in ["own-key", "other"] {
        assert_usage_matches_ledger(&gw, user).await;
        gw.assert_ledger_consistent(user).await;
    }
}

#[tokio::test]
async fn the_gateways_own_deadline_is_not_a_provider_failure() {
    let gw = Gateway::start_with(GatewayOptions {
        env: vec![("SWITCHBOARD_REQUEST_TIMEOUT_SECS", "1".into())],
        ..GatewayOptions::default()
    })
    .await;
    let key = gw.user("hurry", "starter", "10").await;
    gw.upstream.push(Step::delayed_reply(
        Duration::from_secs(3),
        Reply::text("too late"),
    ));
    let (status, _, body) = gw
        .chat(
            &key,
            &hello("openai/gpt-4o"),
            &[("x-request-id", "hurry-1")],
        )
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(breaker_failures(&gw, "openai").await, (0, false));
    let rows = usage_rows(&gw, "hurry-1").await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].2.as_deref().unwrap().contains("deadline"));
    assert_eq!(rows[0].1, Decimal::ZERO);
    assert_eq!(hold_states(&gw, "hurry").await, ["released"]);
    gw.assert_ledger_consistent("hurry").await;
}
