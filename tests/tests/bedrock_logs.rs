//! Logs captured (TRACE level, every crate) while Bedrock calls are signed, answered,
//! refused for a bad signature and probed never contain the AWS secret key, the session
//! token or a signature. Its own test binary, so the global subscriber captures only this
//! test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bedrock_common;

use bedrock_common::*;
use http::StatusCode;
use switchboard_core::health::{self, Trigger};
use switchboard_tests::fake_upstream::bedrock::{SECRET_ACCESS_KEY, SESSION_TOKEN};
use switchboard_tests::log_capture::Captured;

#[tokio::test]
async fn logs_never_contain_aws_secrets_or_signatures() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let mut signatures = Vec::new();
    // Good credentials: answered, streamed, probed.
    let gw = gateway().await;
    let key = gw.user("alice", "professional", "10").await;
    let (status, _, body) = post_json(
        &gw,
        &key,
        "/v1/chat/completions",
        &chat_body(NOVA, false),
        "ok-1",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = post_stream(
        &gw,
        &key,
        "/v1/chat/completions",
        &chat_body(NOVA, true),
        "ok-2",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    health::run(&gw.state.health(), Trigger::Admin)
        .await
        .unwrap();
    signatures.extend(gw.upstream.requests().iter().filter_map(|r| {
        r.header("authorization")
            .and_then(|a| a.rsplit("Signature=").next())
            .map(str::to_owned)
    }));

    // A wrong secret: refused by the fake as AWS would.
    let wrong = "wrong/secret+key-that-must-never-be-logged-99";
    let bad = gateway_signing_with(wrong, Vec::new()).await;
    let key = bad.user("bob", "professional", "10").await;
    let (status, _, _) = post_json(
        &bad,
        &key,
        "/v1/chat/completions",
        &chat_body(NOVA, false),
        "bad-1",
    )
    .await;
    assert!(!status.is_success());
    assert_eq!(bad.upstream.bedrock_signatures().refused, 1);
    signatures.extend(bad.upstream.requests().iter().filter_map(|r| {
        r.header("authorization")
            .and_then(|a| a.rsplit("Signature=").next())
            .map(str::to_owned)
    }));

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(!logs.is_empty(), "the subscriber captured the run");
    assert!(signatures.len() >= 4, "{signatures:?}");
    for secret in [SECRET_ACCESS_KEY, wrong, SESSION_TOKEN]
        .into_iter()
        .chain(signatures.iter().map(String::as_str))
    {
        assert!(!logs.contains(secret), "a log line shows `{secret}`");
    }
}
