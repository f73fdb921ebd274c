//! The gateway's own failures in-process (issue 28, STYLE rule 15): the upstream client's
//! connector fails its first connections with an OS error, the way `socket()` or
//! `connect()` report it, and reqwest builds its real error around it. No free local port
//! toward one provider moves on to the next candidate without blaming the first; out of
//! descriptors stops at once with a 503; and neither these failures nor the gateway's own
//! deadline feed the health check's passive signal. (`functions/switchboard/tests/
//! local_errors.rs` runs a real `serve` out of descriptors.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};
use switchboard_core::health::{self, Trigger};
use switchboard_core::http::finish_router;
use switchboard_core::providers::{ProviderClient, Timeouts};
use switchboard_tests::fake_upstream::{Reply, Step};
use switchboard_tests::gateway::{Gateway, GatewayOptions};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connector that fails its first `remaining` connections with `errno` and then
/// connects for real.
#[derive(Clone)]
struct FailFirst<S> {
    inner: S,
    remaining: Arc<AtomicUsize>,
    errno: i32,
}

impl<S, R> tower::Service<R> for FailFirst<S>
where
    S: tower::Service<R, Error = BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let fail = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            let error: BoxError = Box::new(std::io::Error::from_raw_os_error(self.errno));
            Box::pin(std::future::ready(Err(error)))
        } else {
            Box::pin(self.inner.call(request))
        }
    }
}

/// The in-process gateway whose upstream client (chat calls and health probes) fails
/// its first `fail_first` connections with `errno`.
async fn gateway(fail_first: usize, errno: i32, env: &[(&'static str, &str)]) -> Gateway {
    let mut gw = Gateway::start_with(GatewayOptions {
        env: env.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        ..GatewayOptions::default()
    })
    .await;
    let remaining = Arc::new(AtomicUsize::new(fail_first));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connector_layer(tower::layer::layer_fn(move |inner| FailFirst {
            inner,
            remaining: remaining.clone(),
            errno,
        }))
        .build()
        .unwrap();
    gw.state.providers = ProviderClient::from_http(http, Timeouts::default());
    let limit = gw.state.config.server.max_body_bytes;
    let router = switchboard_chat::router(gw.state.clone())
        .merge(switchboard_admin::router(gw.state.clone()));
    gw.app = finish_router(router, limit);
    gw.upstream
        .set_default(Reply::text("fine").with_usage(12, 3, 0));
    gw
}

/// Every provider's breaker: (slug, consecutive failures, open).
async fn breakers(gw: &Gateway) -> Vec<(String, i32, bool)> {
    gw.db
        .connect()
        .await
        .query(
            "SELECT provider_slug, breaker_consecutive_failures, breaker_open_until IS NOT NULL
             FROM llm_providers ORDER BY provider_slug",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

fn assert_no_breaker_touched(rows: &[(String, i32, bool)]) {
    for (slug, failures, open) in rows {
        assert_eq!(
            (*failures, *open),
            (0, false),
            "{slug}'s breaker was blamed"
        );
    }
}

/// The usage rows of a request: (attempt, provider id, slug, status, error).
async fn attempts(
    gw: &Gateway,
    request_id: &str,
) -> Vec<(
    i16,
    Option<i32>,
    Option<String>,
    Option<i32>,
    Option<String>,
)> {
    gw.db
        .connect()
        .await
        .query(
            "SELECT attempt, provider_id, provider_slug, status_code, error_message
             FROM llm_usage_logs WHERE request_id = $1 ORDER BY attempt",
            &[&request_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect()
}

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn no_free_port_toward_one_provider_falls_back_without_blaming_it() {
    let gw = gateway(1, libc::EADDRNOTAVAIL, &[]).await;
    gw.add_second_gpt4o_offer().await;
    let key = gw.user("ports", "enterprise", "10").await;
    let (status, _, body) = gw
        .chat(&key, &chat_body("gpt-4o"), &[("x-request-id", "ports-1")])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["_metadata"]["attempts"], 2, "{body}");

    let rows = attempts(&gw, "ports-1").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (_, provider_id, slug, status, error) = &rows[0];
    assert_eq!(*provider_id, None, "not the provider's attempt: {rows:?}");
    assert!(slug.is_some());
    assert_eq!(*status, None);
    let error = error.as_deref().unwrap_or_default();
    assert!(
        error.contains("the gateway's own failure") && error.contains("no free local port"),
        "{error}"
    );
    assert_ne!(
        slug.as_deref(),
        Some(body["_metadata"]["provider_used"].as_str().unwrap())
    );
    assert!(rows[1].1.is_some(), "the serving attempt is the provider's");
    assert_no_breaker_touched(&breakers(&gw).await);
    gw.assert_ledger_consistent("ports").await;
}

#[tokio::test]
async fn out_of_descriptors_stops_at_the_first_candidate_with_a_503() {
    let gw = gateway(1, libc::EMFILE, &[]).await;
    gw.add_second_gpt4o_offer().await;
    let key = gw.user("fds", "enterprise", "10").await;
    let (status, headers, body) = gw
        .chat(&key, &chat_body("gpt-4o"), &[("x-request-id", "fds-1")])
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "service_unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("out of file descriptors"),
        "{body}"
    );
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    // The second offer would have failed alike: it was not tried.
    assert_eq!(attempts(&gw, "fds-1").await.len(), 1);
    assert_eq!(gw.upstream.request_count(), 0);
    assert_no_breaker_touched(&breakers(&gw).await);
    assert_eq!(gw.balance("fds").await, "10".parse().unwrap());
    gw.assert_ledger_consistent("fds").await;
}

/// Runs the health check (the probes connect for real by now) and asserts that
/// anthropic, whose every recent call failed by the gateway's own doing, is healthy.
async fn assert_anthropic_healthy(gw: &Gateway, failed_attempts: i64) {
    let recorded: i64 = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT count(*) FROM llm_usage_logs WHERE provider_slug = 'anthropic'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, failed_attempts, "every attempt is on record");
    let summary = health::run(&gw.state.health(), Trigger::Manual)
        .await
        .unwrap();
    let check = summary
        .providers
        .iter()
        .find(|check| check.provider_slug == "anthropic")
        .unwrap();
    assert_eq!(check.probe_status.as_str(), "healthy", "{check:?}");
    assert_eq!(check.status.as_str(), "healthy", "{check:?}");
    assert!(check.error.is_none(), "{check:?}");
    assert_no_breaker_touched(&breakers(gw).await);
}

const CLAUDE: &str = "claude-3-5-sonnet-20241022";

#[tokio::test]
async fn local_failures_do_not_feed_the_passive_health_signal() {
    // Three calls fail for want of a local port: three failed attempts of three, over
    // the passive threshold.
    let gw = gateway(
        3,
        libc::EADDRNOTAVAIL,
        &[("SWITCHBOARD_HEALTH_PASSIVE_MIN_ATTEMPTS", "3")],
    )
    .await;
    let key = gw.user("passive", "enterprise", "10").await;
    for i in 0..3 {
        let (status, headers, body) = gw
            .chat(
                &key,
                &chat_body(CLAUDE),
                &[("x-request-id", &format!("port-{i}"))],
            )
            .await;
        // The only candidate could not be called: the gateway's 503, not a 502.
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(headers.contains_key("retry-after"));
    }
    assert_anthropic_healthy(&gw, 3).await;
}

#[tokio::test]
async fn the_gateways_deadline_does_not_feed_the_passive_health_signal() {
    // Three calls cut by the gateway's own one-second deadline (the provider's own time
    // limits are far longer): three failed attempts of three.
    let gw = gateway(
        0,
        0,
        &[
            ("SWITCHBOARD_HEALTH_PASSIVE_MIN_ATTEMPTS", "3"),
            ("SWITCHBOARD_REQUEST_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    let key = gw.user("deadline", "enterprise", "10").await;
    for _ in 0..3 {
        gw.upstream.push(Step::delayed_reply(
            Duration::from_secs(3),
            Reply::text("late"),
        ));
    }
    for i in 0..3 {
        let (status, _, body) = gw
            .chat(
                &key,
                &chat_body(CLAUDE),
                &[("x-request-id", &format!("late-{i}"))],
            )
            .await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    }
    assert_anthropic_healthy(&gw, 3).await;
}
