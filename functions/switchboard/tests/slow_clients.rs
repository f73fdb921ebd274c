//! Slow clients cannot hold `switchboard serve` (issue 28, finding 3): a client that does not
//! send its headers in time is disconnected, one that does not send its whole body in time
//! is answered 408 and disconnected (holding no database connection and no hold meanwhile),
//! connections over `SWITCHBOARD_MAX_CONNECTIONS` are refused at once, and none of it cuts a
//! long streamed answer, keep-alive, or a graceful shutdown's requests in flight. Driven
//! over raw TCP against the real process, a real PostgreSQL and the fake upstream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Serve, user_key};
use switchboard_tests::fake_upstream::{FakeUpstream, Reply, Step};
use switchboard_tests::test_db::TestDb;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "slow-clients-metrics-token-0123";

fn address(serve: &Serve) -> String {
    serve.base.trim_start_matches("http://").to_string()
}

async fn connect(serve: &Serve) -> TcpStream {
    TcpStream::connect(address(serve)).await.unwrap()
}

/// Everything the server sends until it closes the connection (a reset counts as closed),
/// or `None` if it is still open after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.ok()?;
    Some(received)
}

/// `GET /metrics` with the scraper's token.
async fn scrape(http: &reqwest::Client, base: &str) -> String {
    let response = http
        .get(format!("{base}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The value of the sample written exactly as `series` (name and labels), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

async fn chat(http: &reqwest::Client, base: &str, key: &str, stream: bool) -> (u16, String) {
    let response = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-4o", "stream": stream,
                      "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn slow_header_connections_are_closed_after_the_header_timeout() {
    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    let key = user_key(&db, "slow-headers", 5, None).await;
    let serve = Serve::start_with(
        &db,
        &upstream,
        "slow-headers",
        &[
            ("SWITCHBOARD_HEADER_READ_TIMEOUT_SECS", "2"),
            ("SWITCHBOARD_METRICS_TOKEN", TOKEN),
        ],
    )
    .await;
    let http = reqwest::Client::new();

    // 100 clients that send half a request line and then nothing; a normal client in the
    // middle of them is answered at once.
    let mut slow = Vec::new();
    for i in 0..100 {
        let mut stream = connect(&serve).await;
        stream.write_all(b"GET /healthz HT").await.unwrap();
        slow.push((stream, Instant::now()));
        if i == 50 {
            let started = Instant::now();
            let (status, body) = chat(&http, &serve.base, &key, false).await;
            assert_eq!(status, 200, "{body}");
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "a normal request waited {:?} behind slow clients",
                started.elapsed()
            );
        }
    }

    // Each is closed by the server after about 2 s (the timer starts when the connection is
    // accepted, just before the bytes were written), not before.
    let mut readers = tokio::task::JoinSet::new();
    for (mut stream, opened) in slow {
        readers.spawn(async move {
            let received = read_until_closed(&mut stream, Duration::from_secs(6)).await;
            (received, opened.elapsed())
        });
    }
    while let Some(joined) = readers.join_next().await {
        let (received, after) = joined.unwrap();
        let received = received
            .unwrap_or_else(|| panic!("a slow-header connection was still open after {after:?}"));
        assert!(
            received.is_empty(),
            "a half request line got an answer: {}",
            String::from_utf8_lossy(&received)
        );
        assert!(
            after >= Duration::from_millis(1500),
            "closed after {after:?}, before the header timeout"
        );
    }

    // Keep-alive still works: two requests on one connection; once idle for the header
    // timeout it is closed too, without counting as a slow client.
    let mut kept = connect(&serve).await;
    for _ in 0..2 {
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: sb\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), kept.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let idle = Instant::now();
    assert!(
        read_until_closed(&mut kept, Duration::from_secs(5))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(idle.elapsed() >= Duration::from_millis(1500));

    let metrics = scrape(&http, &serve.base).await;
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_client_timeouts_total{phase="headers"}"#
        ),
        100.0,
        "{metrics}"
    );
    serve.stop().await;
}

#[tokio::test]
async fn a_body_that_does_not_arrive_is_answered_408_and_holds_nothing() {
    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    let key = user_key(&db, "slow-body", 5, None).await;
    let serve = Serve::start_with(
        &db,
        &upstream,
        "slow-body",
        &[
            ("SWITCHBOARD_BODY_READ_TIMEOUT_SECS", "2"),
            ("SWITCHBOARD_METRICS_TOKEN", TOKEN),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let client = db.connect().await;

    // 1,000 bytes declared, 8 sent.
    let mut stream = connect(&serve).await;
    stream
        .write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: sb\r\nAuthorization: Bearer {key}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let sent = Instant::now();

    // While it waits: no hold, no database connection taken.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let holds: i64 = client
        .query_one("SELECT count(*) FROM credit_holds", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(holds, 0);
    let metrics = scrape(&http, &serve.base).await;
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_db_pool_connections{state="in_use"}"#
        ),
        0.0,
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "switchboard_ledger_holds_active"), 0.0);

    // At the body timeout: 408 in OpenAI's shape, then the connection is closed.
    let received = read_until_closed(&mut stream, Duration::from_secs(6))
        .await
        .expect("the request with a missing body was neither answered nor closed");
    let after = sent.elapsed();
    assert!(
        (Duration::from_millis(1800)..Duration::from_secs(4)).contains(&after),
        "answered after {after:?}"
    );
    let text = String::from_utf8(received).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("connection: close"), "{head}");
    assert!(head.contains("x-request-id: "), "{head}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"]["type"], "request_timeout", "{body}");
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"].get("param").is_some(), "{body}");

    // Nothing was admitted, called or charged.
    assert_eq!(upstream.request_count(), 0);
    let rows: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM credit_holds) + (SELECT count(*) FROM llm_usage_logs)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
    let metrics = scrape(&http, &serve.base).await;
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_client_timeouts_total{phase="body"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_db_pool_connections{state="in_use"}"#
        ),
        0.0
    );
    serve.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_at_once() {
    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    let serve = Serve::start_with(
        &db,
        &upstream,
        "conn-cap",
        &[
            ("SWITCHBOARD_MAX_CONNECTIONS", "20"),
            ("SWITCHBOARD_HEADER_READ_TIMEOUT_SECS", "60"),
            ("SWITCHBOARD_METRICS_TOKEN", TOKEN),
        ],
    )
    .await;
    // The start-up probes' connections are gone by now.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 40 idle connections: the first 20 are held, the others answered 503 and closed.
    let mut connections = Vec::new();
    for _ in 0..40 {
        connections.push((connect(&serve).await, Instant::now()));
    }
    let mut readers = tokio::task::JoinSet::new();
    for (i, (mut stream, opened)) in connections.into_iter().enumerate() {
        readers.spawn(async move {
            let received = read_until_closed(&mut stream, Duration::from_millis(1500)).await;
            (i, stream, received.map(|r| (r, opened.elapsed())))
        });
    }
    let mut held = Vec::new();
    let mut refused = Vec::new();
    while let Some(joined) = readers.join_next().await {
        let (i, stream, outcome) = joined.unwrap();
        match outcome {
            None => held.push((i, stream)),
            Some((received, after)) => refused.push((i, received, after)),
        }
    }
    held.sort_by_key(|(i, _)| *i);
    refused.sort_by_key(|(i, _, _)| *i);
    assert_eq!(
        held.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>(),
        "the first 20 connections are held"
    );
    assert_eq!(refused.len(), 20);
    for (i, received, after) in &refused {
        assert!(*i >= 20);
        assert!(
            *after < Duration::from_millis(500),
            "connection {i} refused after {after:?}"
        );
        let text = String::from_utf8_lossy(received).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 503"), "{text}");
        assert!(text.contains("retry-after: 1"), "{text}");
        let body: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(body["error"]["code"], "service_unavailable");
    }

    // Five held clients leave: a good request gets in.
    held.truncate(15);
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        match http.get(format!("{}/healthz", serve.base)).send().await {
            Ok(response) if response.status() == 200 => break,
            other => assert!(
                started.elapsed() < Duration::from_secs(2),
                "no request got in after connections closed: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let metrics = scrape(&http, &serve.base).await;
    assert_eq!(
        sample(&metrics, "switchboard_connections_refused_total"),
        20.0,
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "switchboard_connections_max"), 20.0);
    let open = sample(&metrics, "switchboard_connections_open");
    assert!((15.0..=17.0).contains(&open), "{open} open\n{metrics}");
    drop(held);
    serve.stop().await;
}

#[tokio::test]
async fn a_stream_longer_than_the_timeouts_is_not_cut() {
    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    let key = user_key(&db, "slow-stream", 5, None).await;
    let serve = Serve::start_with(
        &db,
        &upstream,
        "slow-stream",
        &[
            ("SWITCHBOARD_HEADER_READ_TIMEOUT_SECS", "1"),
            ("SWITCHBOARD_BODY_READ_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    let http = reqwest::Client::new();

    // Eight words, 400 ms apart: over 3 s, three times either timeout.
    let text = "one two three four five six seven eight";
    upstream.push(Step::slow_stream(
        Reply::text(text).with_usage(12, 8, 0),
        Duration::from_millis(400),
    ));
    let started = Instant::now();
    let (status, body) = chat(&http, &serve.base, &key, true).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(
        took > Duration::from_secs(3),
        "the stream took only {took:?}"
    );
    assert!(body.contains("data: [DONE]"), "{body}");
    assert!(!body.contains("event: error"), "{body}");
    let streamed: String = body
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(streamed, text);
    let client = db.connect().await;
    let charged: i64 = client
        .query_one(
            "SELECT count(*) FROM llm_usage_logs WHERE status_code = 200",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(charged, 1);

    // A body sent slowly but within the timeout is read whole.
    let payload = json!({"model": "gpt-4o",
                         "messages": [{"role": "user", "content": "in pieces"}]})
    .to_string();
    let mut stream = connect(&serve).await;
    stream
        .write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: sb\r\nAuthorization: Bearer {key}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                payload.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let (first, rest) = payload.as_bytes().split_at(payload.len() / 2);
    for piece in [first, rest] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stream.write_all(piece).await.unwrap();
    }
    let received = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&received);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    serve.stop().await;
}

#[tokio::test]
async fn sigterm_lets_a_stream_in_flight_finish_then_exits() {
    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    let key = user_key(&db, "shutdown", 5, None).await;
    let mut serve = Serve::start(&db, &upstream, "shutdown").await;
    let text = "the answer goes on after the signal";
    upstream.push(Step::slow_stream(
        Reply::text(text).with_usage(12, 8, 0),
        Duration::from_millis(300),
    ));
    let http = reqwest::Client::new();
    let mut response = http
        .post(format!("{}/v1/chat/completions", serve.base))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4o", "stream": true,
                      "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = String::from_utf8(response.chunk().await.unwrap().unwrap().to_vec()).unwrap();

    let pid = serve.pid().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // New connections are refused while the stream finishes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(TcpStream::connect(address(&serve)).await.is_err());
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(body.contains("data: [DONE]"), "{body}");
    assert!(!body.contains("event: error"), "{body}");
    let exit = serve.wait_exit(Duration::from_secs(10)).await;
    assert!(
        exit.is_some_and(|status| status.success()),
        "serve did not exit cleanly: {exit:?}"
    );
    serve.stop().await;
}

/// CPU seconds (user + system) `pid` has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime: fields 14 and 15 of proc(5); `fields` starts at field 3.
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

#[tokio::test]
async fn running_out_of_descriptors_pauses_the_accept_loop_without_spinning() {
    let db = TestDb::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data_dir = std::env::temp_dir().join(format!("sb-emfile-{}", std::process::id()));
    // 128 descriptors, and a cap set far above what they allow: accepting fails with EMFILE.
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", "ulimit -n 128 && exec \"$0\" serve"])
        .arg(env!("CARGO_BIN_EXE_switchboard"))
        .env("DATABASE_URL", db.url())
        .env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("SWITCHBOARD_DATA_DIR", &data_dir)
        .env("SWITCHBOARD_MAX_CONNECTIONS", "1000")
        .env("SWITCHBOARD_HEADER_READ_TIMEOUT_SECS", "60")
        .env("SWITCHBOARD_HEALTH_CHECK_INTERVAL_SECS", "86400")
        .env_remove("SWITCHBOARD_KMS_KEY_ID")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        log.lock()
            .unwrap()
            .contains("SWITCHBOARD_MAX_CONNECTIONS=1000 leaves less room"),
        "{}",
        log.lock().unwrap()
    );

    // 200 idle connections: the process runs out of descriptors part way.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = cpu_seconds(pid) - cpu_before;
    assert!(cpu < 0.3, "the accept loop used {cpu} s of CPU in 2 s");
    assert!(child.try_wait().unwrap().is_none(), "serve exited");
    let text = log.lock().unwrap().clone();
    assert_eq!(
        text.matches("cannot accept connections").count(),
        1,
        "one line while it lasts:\n{text}"
    );
    assert!(text.contains("Too many open files"), "{text}");

    // The clients leave: the descriptors come back and requests are served again.
    drop(idle);
    let started = Instant::now();
    loop {
        match http.get(format!("{base}/healthz")).send().await {
            Ok(response) if response.status() == 200 => break,
            other => assert!(
                started.elapsed() < Duration::from_secs(5),
                "serve did not recover: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
