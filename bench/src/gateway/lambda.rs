//! A Lambda function's cold start, measured against a fake Lambda Runtime API on loopback:
//! the release binary starts with `AWS_LAMBDA_RUNTIME_API` pointing here; its init ends
//! when it first asks for an invocation (`GET …/invocation/next`), and the first
//! invocation (a Function URL event of a chat completion) ends when its streamed response
//! has been posted back. This is what Lambda bills as Init Duration, without the
//! sandbox's own start.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::process::Command;

use super::procs::Proc;

#[derive(Default)]
struct Observed {
    /// The next `GET …/next` gets the event (one per function start).
    armed: bool,
    init_done: Option<Instant>,
    response: Option<(Instant, String)>,
    error: Option<String>,
}

#[derive(Clone)]
struct RuntimeApi {
    event: Arc<String>,
    observed: Arc<Mutex<Observed>>,
}

async fn next(State(api): State<RuntimeApi>) -> Response {
    let give = {
        let mut observed = api.observed.lock().unwrap();
        if observed.init_done.is_none() {
            observed.init_done = Some(Instant::now());
        }
        std::mem::take(&mut observed.armed)
    };
    if !give {
        // Later polls wait for an invocation that never comes (the process is stopped).
        std::future::pending::<()>().await;
    }
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        + 60_000;
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (
            "lambda-runtime-aws-request-id",
            "bench-invocation-1".to_string(),
        ),
        ("lambda-runtime-deadline-ms", deadline.to_string()),
        (
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:123456789012:function:chat".to_string(),
        ),
        (
            "lambda-runtime-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0"
                .to_string(),
        ),
        ("content-type", "application/json".to_string()),
    ] {
        headers.insert(name, HeaderValue::from_str(&value).unwrap());
    }
    (StatusCode::OK, headers, api.event.as_str().to_owned()).into_response()
}

async fn response(State(api): State<RuntimeApi>, body: Bytes) -> StatusCode {
    let text = String::from_utf8_lossy(&body).to_string();
    api.observed.lock().unwrap().response = Some((Instant::now(), text));
    StatusCode::ACCEPTED
}

async fn error(State(api): State<RuntimeApi>, body: Bytes) -> StatusCode {
    api.observed.lock().unwrap().error = Some(String::from_utf8_lossy(&body).to_string());
    StatusCode::ACCEPTED
}

/// A Function URL (payload 2.0) event carrying `body` to `/v1/chat/completions`.
pub fn chat_event(key: &str, body: &str) -> String {
    serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/v1/chat/completions",
        "rawQueryString": "",
        "headers": {
            "authorization": format!("Bearer {key}"),
            "content-type": "application/json",
            "host": "bench.lambda-url.us-east-1.on.aws",
            "x-forwarded-proto": "https"
        },
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "bench",
            "domainName": "bench.lambda-url.us-east-1.on.aws",
            "domainPrefix": "bench",
            "http": {
                "method": "POST",
                "path": "/v1/chat/completions",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "gateway-bench"
            },
            "requestId": "bench-request-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "27/Nov/2026:08:00:00 +0000",
            "timeEpoch": 1_795_766_400_000_u64
        },
        "body": body,
        "isBase64Encoded": false
    })
    .to_string()
}

pub struct ColdStart {
    pub init: Duration,
    pub first_response: Duration,
    pub peak_rss_kb: u64,
}

/// Starts `binary` `runs` times under the fake Runtime API and times each cold start.
pub async fn measure(
    binary: &Path,
    env: &HashMap<String, String>,
    event: String,
    runs: usize,
    log_dir: &Path,
) -> Result<Vec<ColdStart>, String> {
    let api = RuntimeApi {
        event: Arc::new(event),
        observed: Arc::new(Mutex::new(Observed::default())),
    };
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(error))
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut results = Vec::new();
    for run in 0..runs {
        *api.observed.lock().unwrap() = Observed {
            armed: true,
            ..Observed::default()
        };
        let mut command = Command::new(binary);
        command.env_clear();
        for key in ["PATH", "HOME"] {
            if let Ok(value) = std::env::var(key) {
                command.env(key, value);
            }
        }
        command
            .envs(env)
            .env("AWS_LAMBDA_RUNTIME_API", address.to_string());
        let started = Instant::now();
        let process = Proc::spawn(
            "lambda",
            command,
            &log_dir.join(format!("lambda-{run}.log")),
        );
        let outcome = loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let observed = api.observed.lock().unwrap();
            if let Some(error) = &observed.error {
                break Err(format!("the function reported an error: {error}"));
            }
            if let (Some(init), Some((done, body))) = (observed.init_done, &observed.response) {
                if !body.contains("chat.completion") {
                    break Err(format!("unexpected first response: {body:.300}"));
                }
                break Ok(ColdStart {
                    init: init - started,
                    first_response: *done - started,
                    peak_rss_kb: process.peak_rss_kb(),
                });
            }
            if started.elapsed() > Duration::from_secs(30) {
                break Err(format!(
                    "no response within 30 s; log:\n{}",
                    process.log_tail()
                ));
            }
        };
        let log_tail = process.log_tail();
        process.stop(Duration::from_secs(2)).await;
        match outcome {
            Ok(cold) => results.push(cold),
            Err(error) => {
                server.abort();
                return Err(format!("{error}\n{log_tail}"));
            }
        }
    }
    server.abort();
    Ok(results)
}
