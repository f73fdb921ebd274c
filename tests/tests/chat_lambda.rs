//! The chat function run on the sample Lambda events in `events/` (API Gateway REST proxy,
//! Function URL, streamed and not), through lambda_http's own event conversion.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::StreamExt;
use serde_json::Value;
use switchboard_core::auth::hash_api_key;
use switchboard_tests::gateway::{Gateway, parse_sse};
use tower::ServiceExt;

/// The key written into the sample events.
const EVENT_KEY: &str = "sk-sb-e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0";

fn event(name: &str) -> String {
    let path = switchboard_tests::moto::workspace_root()
        .join("events")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn gateway_with_event_key() -> Gateway {
    let gw = Gateway::start().await;
    gw.user("lambda-user", "starter", "5").await;
    let hash = hash_api_key(EVENT_KEY);
    gw.db
        .connect()
        .await
        .execute(
            "INSERT INTO gateway_api_keys (id, user_id, name, key_hash, key_prefix) VALUES ($1, 'lambda-user', 'events', $2, 'sk-sb-e0e0')",
            &[&uuid::Uuid::new_v4(), &hash.as_slice()],
        )
        .await
        .unwrap();
    gw
}

async fn invoke(gw: &Gateway, name: &str) -> (u16, http::HeaderMap, String) {
    // Exactly what the Lambda main serves: the app, on the event lambda_http converts with
    // the template's AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH.
    switchboard_tests::lambda_events::as_deployed();
    let request = lambda_http::request::from_str(&event(name)).unwrap();
    let app = switchboard_chat::app(gw.state.clone());
    let response = app.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    (status, headers, text)
}

#[tokio::test]
async fn rest_proxy_and_function_url_events_get_completions() {
    let gw = gateway_with_event_key().await;
    for (name, request_id) in [
        ("chat-apigw-rest.json", "evt-rest-0001"),
        ("chat-function-url.json", "evt-url-0001"),
    ] {
        let (status, headers, text) = invoke(&gw, name).await;
        assert_eq!(status, 200, "{name}: {text}");
        assert_eq!(headers["x-request-id"], request_id);
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["_metadata"]["provider_used"], "openai");
        assert_eq!(body["_metadata"]["request_id"], request_id);
    }
    gw.assert_ledger_consistent("lambda-user").await;
}

#[tokio::test]
async fn function_url_stream_event_gets_sse() {
    let gw = gateway_with_event_key().await;
    let (status, headers, text) = invoke(&gw, "chat-function-url-stream.json").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["content-type"], "text/event-stream");
    let events = parse_sse(&text);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let last: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(last["_metadata"]["request_id"], "evt-url-0002");
    assert!(last["usage"]["total_tokens"].as_u64().unwrap() > 0);
    gw.assert_ledger_consistent("lambda-user").await;
}
