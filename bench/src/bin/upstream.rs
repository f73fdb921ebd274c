//! `bench-upstream`: the fastest possible fake OpenAI upstream for the gateway benchmark.
//! It answers `POST /v1/chat/completions` with one canned completion (or, when the body
//! asks for `"stream":true`, one canned SSE stream with a usage chunk) and
//! `GET /v1/models` with a one-model list. No recording, no parsing beyond a byte search,
//! no scripted faults (the test suite's `FakeUpstream` does those).
//!
//! `POST /v1/embeddings` answers one small canned vector per input (the body is parsed
//! only to count the inputs), so that the README's quick start can show embeddings.
//!
//! `/delay/{ms}/v1/chat/completions` answers the same after `ms` milliseconds: an upstream
//! with a model's latency, so that a closed loop at some concurrency does not saturate the
//! machine.
//!
//! `bench-upstream [ADDRESS]` (default `127.0.0.1:0`) prints `listening on ADDRESS` once
//! bound. `BENCH_UPSTREAM_THREADS` (default 1) sets its worker threads, so it takes
//! little of the machine the gateway and the load generator share.

#![allow(clippy::print_stdout, clippy::expect_used)] // a benchmark tool, not a service

use std::io::Write;
use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};

/// The canned non-streamed answer (usage included, as OpenAI sends it).
const COMPLETION: &str = concat!(
    r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1730000000,"model":"gpt-4o-2024-08-06","#,
    r#""choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?","refusal":null},"logprobs":null,"finish_reason":"stop"}],"#,
    r#""usage":{"prompt_tokens":42,"completion_tokens":9,"total_tokens":51,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"#,
    r#""service_tier":"default","system_fingerprint":"fp_bench"}"#
);

const CHUNK_HEAD: &str = r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_bench","choices":["#;

fn sse_body() -> String {
    let mut out = String::new();
    let delta = |out: &mut String, delta: &str, finish: &str| {
        out.push_str(CHUNK_HEAD);
        out.push_str(&format!(
            r#"{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}],"usage":null}}"#
        ));
        out.push_str("\n\n");
    };
    delta(
        &mut out,
        r#"{"role":"assistant","content":"","refusal":null}"#,
        "null",
    );
    for piece in ["Hello!", " How can", " I help", " you today?"] {
        delta(&mut out, &format!(r#"{{"content":"{piece}"}}"#), "null");
    }
    delta(&mut out, "{}", r#""stop""#);
    out.push_str(CHUNK_HEAD);
    out.push_str(r#"],"usage":{"prompt_tokens":42,"completion_tokens":9,"total_tokens":51,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#);
    out.push_str("\n\ndata: [DONE]\n\n");
    out
}

const MODELS: &str = r#"{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"}]}"#;

/// An OpenAI embeddings answer: one 4-number vector per input (a string or token array
/// counts one; an array of them counts each), 3 tokens per input.
fn embeddings(body: &[u8]) -> String {
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let inputs = match &request["input"] {
        serde_json::Value::Array(items) if items.iter().all(|i| !i.is_number()) => items.len(),
        _ => 1,
    };
    let data: Vec<serde_json::Value> = (0..inputs)
        .map(|index| {
            serde_json::json!({"object": "embedding", "index": index,
                               "embedding": [0.125, -0.25, 0.5, index as f64]})
        })
        .collect();
    let tokens = 3 * inputs;
    serde_json::json!({"object": "list", "data": data, "model": request["model"],
                       "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
    .to_string()
}

fn wants_stream(body: &[u8]) -> bool {
    const NEEDLE: &[u8] = br#""stream":true"#;
    body.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

fn respond(content_type: &'static str, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn main() {
    let address: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .expect("an address like 127.0.0.1:9000");
    let threads: usize = std::env::var("BENCH_UPSTREAM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    runtime.block_on(async move {
        let completion = Bytes::from_static(COMPLETION.as_bytes());
        let stream = Bytes::from(sse_body());
        let answer = move |body: Bytes| {
            if wants_stream(&body) {
                respond("text/event-stream", stream.clone())
            } else {
                respond("application/json", completion.clone())
            }
        };
        let delayed = answer.clone();
        let app = Router::new()
            .route(
                "/v1/chat/completions",
                post(move |body: Bytes| std::future::ready(answer(body))),
            )
            .route(
                "/delay/{ms}/v1/chat/completions",
                post(move |Path(ms): Path<u64>, body: Bytes| {
                    let delayed = delayed.clone();
                    async move {
                        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                        delayed(body)
                    }
                }),
            )
            .route(
                "/v1/embeddings",
                post(|body: Bytes| async move {
                    respond("application/json", Bytes::from(embeddings(&body)))
                }),
            )
            .route(
                "/v1/models",
                get(|| async {
                    respond("application/json", Bytes::from_static(MODELS.as_bytes()))
                }),
            );
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .expect("bind the fake upstream");
        let bound = listener.local_addr().expect("bound address");
        println!("listening on {bound}");
        let _ = std::io::stdout().flush();
        let listener =
            axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
                let _ = tcp.set_nodelay(true);
            });
        axum::serve(listener, app).await.expect("serve");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_answers_are_valid_json() {
        serde_json::from_str::<serde_json::Value>(COMPLETION).unwrap();
        serde_json::from_str::<serde_json::Value>(MODELS).unwrap();
        let body = sse_body();
        let frames: Vec<&str> = body.split("\n\n").filter(|f| !f.is_empty()).collect();
        assert_eq!(frames.last(), Some(&"data: [DONE]"));
        for frame in &frames[..frames.len() - 1] {
            let json = frame.strip_prefix("data: ").unwrap();
            serde_json::from_str::<serde_json::Value>(json).unwrap();
        }
        let answer: serde_json::Value =
            serde_json::from_str(&embeddings(br#"{"model":"m","input":["a","b"]}"#)).unwrap();
        assert_eq!(answer["data"].as_array().unwrap().len(), 2);
        assert_eq!(answer["usage"]["prompt_tokens"], 6);
        let answer: serde_json::Value =
            serde_json::from_str(&embeddings(br#"{"model":"m","input":[1,2,3]}"#)).unwrap();
        assert_eq!(answer["data"].as_array().unwrap().len(), 1);
        assert!(wants_stream(br#"{"model":"gpt-4o","stream":true}"#));
        assert!(!wants_stream(br#"{"model":"gpt-4o","stream":false}"#));
    }
}
