//! Time to first token of a streamed completion: from sending the request to the first SSE
//! frame that carries non-empty content, one request at a time over a kept-alive
//! connection, alternating direct and gateway requests so both see the same machine.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::load::Target;

/// Whether the SSE text received so far holds a frame with non-empty `delta.content`.
fn has_content(text: &str) -> bool {
    text.split("\n\n").any(|frame| {
        let Some(json) = frame.trim().strip_prefix("data: ") else {
            return false;
        };
        serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .and_then(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(|s| !s.is_empty())
            })
            .unwrap_or(false)
    })
}

/// One streamed request: (time to first content, time to the end of the stream).
async fn one(client: &reqwest::Client, target: &Target) -> (Duration, Duration) {
    let mut request = client.post(&target.url).body(target.body.clone());
    for header in &target.headers {
        if let Some((name, value)) = header.split_once(':') {
            request = request.header(name.trim(), value.trim());
        }
    }
    let started = Instant::now();
    let response = request.send().await.expect("streamed request");
    assert!(
        response.status().is_success(),
        "streamed request answered {}",
        response.status()
    );
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut first = None;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("stream chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
        if first.is_none() && has_content(&text) {
            first = Some(started.elapsed());
        }
    }
    let total = started.elapsed();
    assert!(text.contains("[DONE]"), "the stream ended without [DONE]");
    (first.expect("a content frame"), total)
}

pub struct Ttft {
    pub direct: Vec<Duration>,
    pub gateway: Vec<Duration>,
    pub direct_total: Vec<Duration>,
    pub gateway_total: Vec<Duration>,
}

pub async fn measure(direct: &Target, gateway: &Target, n: usize) -> Ttft {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .expect("client");
    for _ in 0..20 {
        one(&client, direct).await;
        one(&client, gateway).await;
    }
    let mut out = Ttft {
        direct: Vec::with_capacity(n),
        gateway: Vec::with_capacity(n),
        direct_total: Vec::with_capacity(n),
        gateway_total: Vec::with_capacity(n),
    };
    for _ in 0..n {
        let (first, total) = one(&client, direct).await;
        out.direct.push(first);
        out.direct_total.push(total);
        let (first, total) = one(&client, gateway).await;
        out.gateway.push(first);
        out.gateway_total.push(total);
    }
    out
}

pub fn percentile_ms(samples: &[Duration], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}
