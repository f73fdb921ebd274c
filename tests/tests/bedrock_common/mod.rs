//! Shared harness of the Bedrock tests: the in-process gateway with the seeded Bedrock
//! provider and models turned on, pointed at the fake Bedrock runtime and signing with
//! the fake's test credentials (or a wrong secret), and request helpers for the three
//! inbound formats.

#![allow(dead_code)] // each test binary uses a different part

use axum::body::Body;
use futures_util::StreamExt;
use http::{HeaderMap, Request, StatusCode};
use serde_json::{Value, json};
use switchboard_core::http::finish_router;
use switchboard_core::providers::{AwsCredentialSource, AwsCredentials, ProviderClient, Timeouts};
use switchboard_core::secret::Secret;
use switchboard_tests::fake_upstream::bedrock::{
    ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, SESSION_TOKEN,
};
use switchboard_tests::gateway::{Gateway, GatewayOptions, parse_sse};

pub const NOVA: &str = "amazon.nova-pro-v1:0";
pub const CLAUDE_PROFILE: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

pub fn credentials(secret: &str) -> AwsCredentialSource {
    AwsCredentialSource::fixed(
        AwsCredentials {
            access_key_id: ACCESS_KEY_ID.into(),
            secret_access_key: Secret::new(secret),
            session_token: Some(Secret::new(SESSION_TOKEN)),
            expires_at: None,
        },
        REGION,
    )
}

/// The gateway with the seeded Bedrock provider and models turned on and pointed at the
/// fake, signing with `secret`.
pub async fn gateway_signing_with(secret: &str, env: Vec<(&'static str, String)>) -> Gateway {
    let mut gw = Gateway::start_with(GatewayOptions {
        env,
        ..GatewayOptions::default()
    })
    .await;
    let client = gw.db.connect().await;
    client
        .execute(
            "UPDATE llm_providers SET base_url = $1, is_active = true, disabled_reason = NULL
             WHERE provider_slug = 'bedrock'",
            &[&gw.upstream.bedrock_base_url()],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE llm_models SET is_active = true
             WHERE provider_id = (SELECT id FROM llm_providers WHERE provider_slug = 'bedrock')",
            &[],
        )
        .await
        .unwrap();
    gw.state.providers = ProviderClient::from_http(gw.state.http.clone(), Timeouts::default())
        .with_aws_credentials(credentials(secret));
    let limit = gw.state.config.server.max_body_bytes;
    let router = switchboard_chat::router(gw.state.clone())
        .merge(switchboard_keys::router(gw.state.clone()))
        .merge(switchboard_admin::router(gw.state.clone()));
    gw.app = finish_router(router, limit);
    gw.state.catalog.invalidate();
    gw
}

pub async fn gateway() -> Gateway {
    gateway_signing_with(SECRET_ACCESS_KEY, Vec::new()).await
}

/// A second offer of Nova Pro on OpenRouter (the fake's OpenAI format), tried after
/// Bedrock's.
pub async fn add_fallback_offer(gw: &Gateway) {
    gw.db
        .connect()
        .await
        .batch_execute(
            "INSERT INTO llm_models (provider_id, model_name, model_id, context_window, max_tokens,
                 cost_per_1m_input_tokens, cost_per_1m_output_tokens, power_level_priority)
             SELECT id, 'Nova Pro (elsewhere)', 'amazon.nova-pro-v1:0', 300000, 5000, 0.80, 3.20, 90
             FROM llm_providers WHERE provider_slug = 'openrouter'",
        )
        .await
        .unwrap();
    gw.state.catalog.invalidate();
}

pub async fn post(
    gw: &Gateway,
    key: &str,
    path: &str,
    body: &Value,
    request_id: &str,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let request = Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .header("x-api-key", key)
        .header("x-request-id", request_id)
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = gw.send(request).await;
    let status = response.status();
    let headers = response.headers().clone();
    let mut stream = response.into_body().into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    (status, headers, bytes)
}

pub async fn post_json(
    gw: &Gateway,
    key: &str,
    path: &str,
    body: &Value,
    request_id: &str,
) -> (StatusCode, HeaderMap, Value) {
    let (status, headers, bytes) = post(gw, key, path, body, request_id).await;
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub async fn post_stream(
    gw: &Gateway,
    key: &str,
    path: &str,
    body: &Value,
    request_id: &str,
) -> (StatusCode, Vec<(Option<String>, String)>) {
    let (status, _, bytes) = post(gw, key, path, body, request_id).await;
    (status, parse_sse(&String::from_utf8_lossy(&bytes)))
}

pub fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "max_tokens": 100, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello."}]})
}
