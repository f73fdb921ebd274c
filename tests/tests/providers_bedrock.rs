//! Amazon Bedrock end to end: the in-process gateway, real PostgreSQL, and the fake Bedrock
//! runtime of the fake upstream, which recomputes every SigV4 signature with the test
//! credentials and answers Converse JSON and ConverseStream event-stream frames. Chat
//! completions, messages and responses reach it signed, streamed and not, billed exactly
//! once; a throttled or cut call falls back like any provider's; a refused signature never
//! shows a secret.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bedrock_common;

use std::str::FromStr;

use bedrock_common::*;
use http::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchboard_core::health::{self, Trigger};
use switchboard_tests::fake_upstream::bedrock::{SECRET_ACCESS_KEY, SESSION_TOKEN, encode_frame};
use switchboard_tests::fake_upstream::{Reply, Step};
use switchboard_tests::gateway::Gateway;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Captures of a user: how many, and how much.
async fn captured(gw: &Gateway, user: &str) -> (i64, Decimal) {
    let row = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT count(*), coalesce(-sum(amount_usd), 0) FROM ledger_entries
             WHERE user_id = $1 AND kind = 'capture'",
            &[&user],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// (provider, status, charged, error) of each attempt of a request.
async fn attempts(
    gw: &Gateway,
    request_id: &str,
) -> Vec<(Option<String>, Option<i32>, Decimal, Option<String>)> {
    gw.db
        .connect()
        .await
        .query(
            "SELECT provider_slug, status_code, charged_usd, error_message FROM llm_usage_logs
             WHERE request_id = $1 ORDER BY attempt",
            &[&request_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test]
async fn chat_completions_reach_bedrock_signed_and_are_billed_once() {
    let gw = gateway().await;
    let key = gw.user("alice", "professional", "10").await;
    gw.upstream
        .set_default(Reply::text("Hello from Bedrock!").with_usage(1000, 200, 0));

    let (status, headers, body) = post_json(
        &gw,
        &key,
        "/v1/chat/completions",
        &chat_body(NOVA, false),
        "bedrock-1",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-switchboard-provider"], "bedrock");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from Bedrock!"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 1000);
    assert_eq!(body["usage"]["completion_tokens"], 200);
    // Nova Pro: 1000 × 0.80 + 200 × 3.20 per million = 0.00144 USD.
    assert_eq!(body["_metadata"]["cost_usd"], "0.00144");

    let upstream = gw.upstream.last_request().unwrap();
    assert_eq!(
        upstream.path,
        "/bedrock/model/amazon.nova-pro-v1%3A0/converse"
    );
    assert!(
        upstream
            .header("authorization")
            .unwrap()
            .starts_with("AWS4-HMAC-SHA256 Credential=AKIDFAKEBEDROCK0001/")
    );
    assert_eq!(upstream.body["system"], json!([{"text": "Be brief."}]));
    assert_eq!(upstream.body["inferenceConfig"]["maxTokens"], 100);
    assert!(
        upstream.body.get("requestMetadata").is_none(),
        "tags are off by default"
    );
    let signatures = gw.upstream.bedrock_signatures();
    assert_eq!((signatures.verified, signatures.refused), (1, 0));

    assert_eq!(captured(&gw, "alice").await, (1, d("0.00144")));
    assert_eq!(gw.balance("alice").await, d("9.99856"));
    gw.assert_ledger_consistent("alice").await;
}

#[tokio::test]
async fn streamed_chat_completions_decode_the_event_stream_and_are_billed_once() {
    let gw = gateway().await;
    let key = gw.user("bob", "professional", "10").await;
    gw.upstream.set_default(
        Reply::text("Streamed from Bedrock.")
            .with_tool_call("weather", json!({"city": "Oslo"}))
            .with_usage(500, 100, 0),
    );
    let (status, events) = post_stream(
        &gw,
        &key,
        "/v1/chat/completions",
        &chat_body(NOVA, true),
        "bedrock-stream",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events
        .iter()
        .filter_map(|(_, data)| serde_json::from_str(data).ok())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Streamed from Bedrock.");
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, r#"{"city":"Oslo"}"#);
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"),
        "{chunks:?}"
    );
    assert!(
        events.iter().all(|(e, _)| e.as_deref() != Some("error")),
        "{events:?}"
    );
    let upstream = gw.upstream.last_request().unwrap();
    assert_eq!(
        upstream.path,
        "/bedrock/model/amazon.nova-pro-v1%3A0/converse-stream"
    );
    assert_eq!(
        upstream.header("accept"),
        Some("application/vnd.amazon.eventstream")
    );
    assert_eq!(gw.upstream.bedrock_signatures().verified, 1);
    // 500 × 0.80 + 100 × 3.20 per million.
    assert_eq!(captured(&gw, "bob").await, (1, d("0.00072")));
    let rows = attempts(&gw, "bedrock-stream").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2, d("0.00072"));
    gw.assert_ledger_consistent("bob").await;
}

#[tokio::test]
async fn messages_and_responses_reach_an_inference_profile_signed() {
    let gw = gateway().await;
    let key = gw.user("carol", "enterprise", "10").await;
    gw.upstream
        .set_default(Reply::text("Profile answer.").with_usage(100, 10, 0));
    let encoded = "/bedrock/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0";

    let messages = json!({"model": CLAUDE_PROFILE, "max_tokens": 50, "system": "Terse.",
        "messages": [{"role": "user", "content": "Hi"}]});
    let (status, _, body) = post_json(&gw, &key, "/v1/messages", &messages, "msg-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "Profile answer.");
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(
        gw.upstream.last_request().unwrap().path,
        format!("{encoded}/converse")
    );
    assert_eq!(
        gw.upstream.last_request().unwrap().body["system"],
        json!([{"text": "Terse."}])
    );

    let mut streamed = messages.clone();
    streamed["stream"] = json!(true);
    let (status, events) = post_stream(&gw, &key, "/v1/messages", &streamed, "msg-2").await;
    assert_eq!(status, StatusCode::OK);
    let text: String = events
        .iter()
        .filter_map(|(_, data)| serde_json::from_str::<Value>(data).ok())
        .filter_map(|e| e["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "Profile answer.");
    assert!(
        events
            .iter()
            .any(|(e, _)| e.as_deref() == Some("message_stop"))
    );
    assert_eq!(
        gw.upstream.last_request().unwrap().path,
        format!("{encoded}/converse-stream")
    );

    let responses = json!({"model": CLAUDE_PROFILE, "input": "Hi", "max_output_tokens": 50});
    let (status, _, body) = post_json(&gw, &key, "/v1/responses", &responses, "resp-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "response");
    let output_text: String = body["output"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|item| item["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|part| part["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(output_text, "Profile answer.");

    let mut streamed = responses.clone();
    streamed["stream"] = json!(true);
    let (status, events) = post_stream(&gw, &key, "/v1/responses", &streamed, "resp-2").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        events
            .iter()
            .any(|(e, _)| e.as_deref() == Some("response.completed")),
        "{events:?}"
    );

    let signatures = gw.upstream.bedrock_signatures();
    assert_eq!((signatures.verified, signatures.refused), (4, 0));
    // Four calls, four captures: Claude Sonnet 4 at 100 × 3 + 10 × 15 per million each.
    assert_eq!(captured(&gw, "carol").await, (4, d("0.0018")));
    gw.assert_ledger_consistent("carol").await;
}

#[tokio::test]
async fn throttling_falls_back_to_another_provider_and_bills_only_the_answer() {
    let gw = gateway().await;
    add_fallback_offer(&gw).await;
    let key = gw.user("dave", "professional", "10").await;
    gw.upstream
        .set_default(Reply::text("From the fallback.").with_usage(1000, 200, 0));
    gw.upstream.push(Step::rate_limited("1"));

    let (status, headers, body) = post_json(
        &gw,
        &key,
        "/v1/chat/completions",
        &chat_body(NOVA, false),
        "throttled",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-switchboard-provider"], "openrouter");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "From the fallback."
    );
    let rows = attempts(&gw, "throttled").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].0.as_deref(), Some("bedrock"));
    assert_eq!(rows[0].1, Some(429));
    assert_eq!(rows[0].2, Decimal::ZERO);
    assert_eq!(rows[1].0.as_deref(), Some("openrouter"));
    assert_eq!(captured(&gw, "dave").await, (1, d("0.00144")));
    gw.assert_ledger_consistent("dave").await;
}

#[tokio::test]
async fn a_cut_or_garbled_event_stream_is_a_provider_failure() {
    let gw = gateway().await;
    add_fallback_offer(&gw).await;
    let key = gw.user("erin", "professional", "10").await;
    gw.upstream
        .set_default(Reply::text("The whole answer.").with_usage(100, 20, 0));

    // Cut inside the first text frame: nothing was forwarded, so the next offer serves it.
    gw.upstream.push(Step::cut_stream(
        Reply::text("An answer cut in its first frame."),
        1,
    ));
    let (status, events) = post_stream(
        &gw,
        &key,
        "/v1/chat/completions",
        &chat_body(NOVA, true),
        "cut-1",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text: String = events
        .iter()
        .filter_map(|(_, data)| serde_json::from_str::<Value>(data).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "The whole answer.");
    let rows = attempts(&gw, "cut-1").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].0.as_deref(), Some("bedrock"));
    assert!(
        rows[0]
            .3
            .as_deref()
            .unwrap_or_default()
            .contains("broke off"),
        "{rows:?}"
    );
    assert_eq!(rows[1].0.as_deref(), Some("openrouter"));

    // A body that ends cleanly in the middle of a frame.
    let frame = encode_frame(
        &[(":event-type", "messageStart"), (":message-type", "event")],
        br#"{"role":"assistant"}"#,
    );
    gw.upstream.push(Step::raw(
        200,
        "application/vnd.amazon.eventstream",
        frame[..frame.len() - 3].to_vec(),
    ));
    let (status, _) = post_stream(
        &gw,
        &key,
        "/v1/chat/completions",
        &chat_body(NOVA, true),
        "cut-2",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let rows = attempts(&gw, "cut-2").await;
    assert!(
        rows[0]
            .3
            .as_deref()
            .unwrap_or_default()
            .contains("inside a message"),
        "{rows:?}"
    );
    assert_eq!(rows[1].0.as_deref(), Some("openrouter"));

    // A frame failing its checksum.
    gw.upstream.push(Step::Malformed);
    let (status, _) = post_stream(
        &gw,
        &key,
        "/v1/chat/completions",
        &chat_body(NOVA, true),
        "garbled",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let rows = attempts(&gw, "garbled").await;
    assert!(
        rows[0]
            .3
            .as_deref()
            .unwrap_or_default()
            .contains("checksum"),
        "{rows:?}"
    );
    let failures: i32 = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT breaker_consecutive_failures FROM llm_providers WHERE provider_slug = 'bedrock'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failures, 3, "each counts toward Bedrock's breaker");
    gw.assert_ledger_consistent("erin").await;
}

#[tokio::test]
async fn validation_errors_are_the_clients_and_refused_models_name_model_and_region() {
    let gw = gateway().await;
    let key = gw.user("frank", "professional", "10").await;
    gw.upstream.push(Step::status_with_body(
        400,
        json!({"message": "Malformed input request: extraneous key [foo] is not permitted"}),
    ));
    let (status, _, body) = post_json(
        &gw,
        &key,
        "/v1/chat/completions",
        &chat_body(NOVA, false),
        "invalid",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("extraneous key"),
        "{body}"
    );

    gw.upstream.push(Step::status(403));
    let (status, _, body) = post_json(
        &gw,
        &key,
        "/v1/chat/completions",
        &chat_body(NOVA, false),
        "denied",
    )
    .await;
    assert!(
        status.is_server_error() || status.is_client_error(),
        "{status} {body}"
    );
    let rows = attempts(&gw, "denied").await;
    let error = rows[0].3.clone().unwrap_or_default();
    assert!(
        error.contains(NOVA) && error.contains("us-east-1"),
        "{error}"
    );
    assert_eq!(captured(&gw, "frank").await.0, 0);
    gw.assert_ledger_consistent("frank").await;
}

#[tokio::test]
async fn a_refused_signature_never_shows_the_secret() {
    let wrong = "wrong/secret+access-key-never-to-be-shown-42";
    let gw = gateway_signing_with(wrong, Vec::new()).await;
    let key = gw.user("gina", "professional", "10").await;
    let (status, _, body) = post_json(
        &gw,
        &key,
        "/v1/chat/completions",
        &chat_body(NOVA, false),
        "bad-signature",
    )
    .await;
    assert!(!status.is_success(), "{status} {body}");
    let signatures = gw.upstream.bedrock_signatures();
    assert_eq!((signatures.verified, signatures.refused), (0, 1));
    let sent = gw.upstream.last_request().unwrap();
    let signature = sent
        .header("authorization")
        .unwrap()
        .rsplit("Signature=")
        .next()
        .unwrap()
        .to_owned();
    let rows = attempts(&gw, "bad-signature").await;
    let shown = format!("{body} {rows:?} {:?}", gw.state.providers);
    for secret in [wrong, SESSION_TOKEN, signature.as_str()] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
    assert!(
        shown.contains("InvalidSignatureException") || shown.contains("signature"),
        "{shown}"
    );
    assert_eq!(captured(&gw, "gina").await.0, 0);
    gw.assert_ledger_consistent("gina").await;
}

#[tokio::test]
async fn request_tags_send_the_account_id_as_request_metadata() {
    let gw = gateway_signing_with(
        SECRET_ACCESS_KEY,
        vec![("SWITCHBOARD_BEDROCK_REQUEST_TAGS", "1".into())],
    )
    .await;
    let key = gw.user("tenant-7", "professional", "10").await;
    let (status, _, body) = post_json(
        &gw,
        &key,
        "/v1/chat/completions",
        &chat_body(NOVA, false),
        "tagged",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        gw.upstream.last_request().unwrap().body["requestMetadata"],
        json!({"switchboard_account": "tenant-7"})
    );
}

#[tokio::test]
async fn the_health_check_probes_bedrock_with_a_signed_call() {
    let gw = gateway().await;
    let summary = health::run(&gw.state.health(), Trigger::Admin)
        .await
        .unwrap();
    assert!(!summary.skipped);
    let row = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT health_status FROM llm_providers WHERE provider_slug = 'bedrock'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "healthy");
    let probe = gw
        .upstream
        .requests()
        .into_iter()
        .find(|r| r.path.starts_with("/bedrock/"))
        .expect("Bedrock was probed");
    // The cheapest active model, one token.
    assert_eq!(
        probe.path,
        "/bedrock/model/amazon.nova-micro-v1%3A0/converse"
    );
    assert_eq!(probe.body["inferenceConfig"]["maxTokens"], 1);
    assert_eq!(gw.upstream.bedrock_signatures().verified, 1);
}

#[tokio::test]
async fn the_admin_api_keeps_bedrock_signed_with_aws_sigv4() {
    let gw = gateway().await;
    gw.user("root", "enterprise", "0").await;
    let admin = gw.key_for("root", "admin", None).await;
    let id: i32 = gw
        .db
        .connect()
        .await
        .query_one(
            "SELECT id FROM llm_providers WHERE provider_slug = 'bedrock'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let patch = |body: Value| {
        http::Request::builder()
            .method("PATCH")
            .uri(format!("/admin/providers/{id}"))
            .header("authorization", format!("Bearer {admin}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap()
    };
    let response = gw.send(patch(json!({"auth_type": "bearer"}))).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_slice(
        &axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["error"]["param"], "auth_type", "{body}");
    let response = gw.send(patch(json!({"rate_limit_rpm": 100}))).await;
    assert_eq!(response.status(), StatusCode::OK);
}
