//! `Server-Timing` (`gateway`, `upstream`, `db`) and `x-switchboard-overhead-ms` on every
//! `/v1` answer (api.md, "Metrics and timing"): the upstream's time is the provider's, the
//! overhead the rest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use switchboard_tests::fake_upstream::{Reply, Step};
use switchboard_tests::gateway::Gateway;

/// `Server-Timing`'s entries, name → milliseconds.
fn entries(headers: &http::HeaderMap) -> HashMap<String, f64> {
    headers["server-timing"]
        .to_str()
        .unwrap()
        .split(',')
        .map(|entry| {
            let (name, dur) = entry.trim().split_once(";dur=").unwrap();
            (name.to_string(), dur.parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn every_v1_answer_says_where_its_time_went() {
    let gw = Gateway::start().await;
    let key = gw.user("timed", "starter", "5").await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    // The first request also loads the tokenizer's vocabulary (gateway time).
    assert_eq!(gw.chat(&key, &body, &[]).await.0.as_u16(), 200);
    gw.upstream.push(Step::delayed_reply(
        Duration::from_millis(200),
        Reply::text("slow answer"),
    ));
    let (status, headers, _) = gw.chat(&key, &body, &[]).await;
    assert_eq!(status.as_u16(), 200);
    let timing = entries(&headers);
    assert!(timing["upstream"] >= 200.0, "{timing:?}");
    assert!(
        timing["db"] > 0.0,
        "the admission and the capture: {timing:?}"
    );
    assert!(timing["gateway"] >= timing["db"], "{timing:?}");
    assert!(timing["gateway"] < 200.0, "{timing:?}");
    let overhead: f64 = headers["x-switchboard-overhead-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(overhead, timing["gateway"]);

    // A stream's headers carry it too (up to its first content).
    let streamed = json!({"model": "gpt-4o", "stream": true,
                          "messages": [{"role": "user", "content": "hi"}]});
    let (status, headers, _) = gw.chat_stream(&key, &streamed, &[]).await;
    assert_eq!(status.as_u16(), 200);
    assert!(entries(&headers)["db"] > 0.0);

    // Routes without an upstream call, and errors, too.
    let request = http::Request::builder()
        .uri("/v1/models")
        .header("authorization", format!("Bearer {key}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let response = gw.send(request).await;
    assert_eq!(entries(response.headers())["upstream"], 0.0);
    let (status, headers, _) = gw.chat("sk-sb-not-a-key", &body, &[]).await;
    assert_eq!(status.as_u16(), 401);
    assert!(headers.contains_key("x-switchboard-overhead-ms"));
    for route in ["/v1/embeddings", "/v1/messages"] {
        let request = http::Request::builder()
            .method("POST")
            .uri(route)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from("{}"))
            .unwrap();
        let response = gw.send(request).await;
        assert!(response.headers().contains_key("server-timing"), "{route}");
    }
}
