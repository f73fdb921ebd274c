//! The HTTP surface every function shares, driven in-process with `oneshot`: every route of
//! api.md is mounted, errors have OpenAI's shape, request ids, body limits, `/healthz`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http::{Request, StatusCode};
use serde_json::Value;
use switchboard_core::config::Config;
use switchboard_core::db::connect_pool;
use switchboard_core::http::{AppJson, finish_router};
use switchboard_core::secret::Secret;
use switchboard_core::state::AppState;
use switchboard_tests::test_db::TestDb;
use tower::ServiceExt;

fn config() -> Config {
    Config::from_lookup(|_| None).unwrap()
}

fn state_for(url: &str) -> AppState {
    let config = config();
    let pool = connect_pool(&Secret::new(url), 4).unwrap();
    AppState::new(config, pool)
}

async fn send(app: Router, request: Request<Body>) -> (StatusCode, http::HeaderMap, Value) {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

fn request(method: &str, path: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap()
}

fn assert_error_shape(body: &Value) {
    let error = &body["error"];
    assert!(error["message"].is_string(), "{body}");
    assert!(error["type"].is_string(), "{body}");
    assert!(error["code"].is_string(), "{body}");
    assert!(error.get("param").is_some(), "{body}");
}

/// Every route of api.md, by function.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("POST", "/v1/embeddings"),
    ("GET", "/v1/models"),
    ("GET", "/v1/account"),
    ("PUT", "/v1/byok/openai"),
    ("GET", "/v1/byok"),
    ("GET", "/v1/byok/openai"),
    ("PATCH", "/v1/byok/openai"),
    ("DELETE", "/v1/byok/openai"),
    ("POST", "/v1/byok/openai/validate"),
    ("GET", "/v1/api-keys"),
    ("POST", "/v1/api-keys"),
    ("DELETE", "/v1/api-keys/123"),
    ("GET", "/admin/providers"),
    ("POST", "/admin/providers"),
    ("GET", "/admin/providers/1"),
    ("PATCH", "/admin/providers/1"),
    ("DELETE", "/admin/providers/1"),
    ("GET", "/admin/providers/1/health"),
    ("POST", "/admin/providers/1/test"),
    ("GET", "/admin/models"),
    ("POST", "/admin/models"),
    ("GET", "/admin/models/1"),
    ("PATCH", "/admin/models/1"),
    ("DELETE", "/admin/models/1"),
    ("GET", "/admin/routing-rules"),
    ("POST", "/admin/routing-rules"),
    ("GET", "/admin/routing-rules/1"),
    ("PATCH", "/admin/routing-rules/1"),
    ("DELETE", "/admin/routing-rules/1"),
    ("POST", "/admin/users"),
    ("GET", "/admin/users"),
    ("GET", "/admin/users/u1"),
    ("PATCH", "/admin/users/u1"),
    ("POST", "/admin/users/u1/credits"),
    ("GET", "/admin/users/u1/ledger"),
    ("POST", "/admin/users/u1/api-keys"),
    ("GET", "/admin/users/u1/api-keys"),
    ("DELETE", "/admin/api-keys/abc"),
    ("GET", "/admin/usage"),
    ("GET", "/admin/usage/summary"),
    ("GET", "/admin/audit-log"),
    ("POST", "/admin/health-check"),
    ("GET", "/console"),
];

#[tokio::test]
async fn every_contract_route_is_mounted() {
    let db = TestDb::new().await;
    let app = switchboard::app(state_for(db.url()));
    for (method, path) in ROUTES {
        let (status, headers, body) = send(app.clone(), request(method, path)).await;
        assert_ne!(
            status,
            StatusCode::NOT_FOUND,
            "{method} {path} is not mounted"
        );
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is not mounted"
        );
        assert!(
            status.is_client_error() || status.is_server_error() || status.is_success(),
            "{method} {path}"
        );
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{method} {path}");
        assert!(headers.contains_key("x-request-id"));
        if path.starts_with("/v1/messages") {
            // The Messages API answers in Anthropic's error shape.
            assert_eq!(body["type"], "error", "{path}: {body}");
            assert!(body["error"]["type"].is_string() && body["error"]["message"].is_string());
        } else if !status.is_success() {
            assert_error_shape(&body);
        }
    }
    // Each function's own app mounts its own routes too.
    let chat = switchboard_chat::app(state_for(db.url()));
    let (status, _, _) = send(chat, request("GET", "/v1/models")).await;
    assert_ne!(status, StatusCode::NOT_FOUND);
    let admin = switchboard_admin::app(state_for(db.url()));
    let (status, _, _) = send(admin.clone(), request("GET", "/admin/providers")).await;
    assert_ne!(status, StatusCode::NOT_FOUND);
    // The admin function's own app serves the console too (same API Gateway, same origin).
    let (status, headers, _) = send(admin, request("GET", "/console")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let keys = switchboard_keys::app(state_for(db.url()));
    let (status, _, _) = send(keys, request("GET", "/v1/byok")).await;
    assert_ne!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unknown_routes_and_methods_use_the_error_shape() {
    let db = TestDb::new().await;
    let app = switchboard::app(state_for(db.url()));
    let (status, _, body) = send(app.clone(), request("GET", "/v2/whatever")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error_shape(&body);
    assert_eq!(body["error"]["type"], "not_found");
    let (status, _, body) = send(app, request("DELETE", "/healthz")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_error_shape(&body);
}

#[tokio::test]
async fn request_ids_are_echoed_when_sane_and_generated_otherwise() {
    let db = TestDb::new().await;
    let app = switchboard::app(state_for(db.url()));
    let req = Request::builder()
        .uri("/healthz")
        .header("x-request-id", "my-trace_01")
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = send(app.clone(), req).await;
    assert_eq!(headers["x-request-id"], "my-trace_01");
    let req = Request::builder()
        .uri("/healthz")
        .header("x-request-id", "bad id with spaces")
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = send(app.clone(), req).await;
    let generated = headers["x-request-id"].to_str().unwrap();
    assert_ne!(generated, "bad id with spaces");
    assert_eq!(generated.len(), 36, "a UUID");
    let (_, a, _) = send(app.clone(), request("GET", "/healthz")).await;
    let (_, b, _) = send(app, request("GET", "/healthz")).await;
    assert_ne!(a["x-request-id"], b["x-request-id"]);
}

#[tokio::test]
async fn healthz_reports_the_database() {
    let db = TestDb::new().await;
    let (status, _, body) = send(
        switchboard::app(state_for(db.url())),
        request("GET", "/healthz"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"], "ok");

    // A database nobody listens on: 503, not 500, and no panic.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = state_for(&format!("postgres://postgres@127.0.0.1:{port}/none"));
    let (status, _, body) = send(switchboard::app(dead), request("GET", "/healthz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["database"], "unreachable");
}

#[derive(serde::Deserialize)]
struct Probe {
    #[allow(dead_code)]
    name: String,
    #[allow(dead_code)]
    count: u32,
}

async fn probe(AppJson(_): AppJson<Probe>) -> &'static str {
    "ok"
}

fn json_app(limit: usize) -> Router {
    finish_router(Router::new().route("/probe", post(probe)), limit)
}

fn json_request(body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri("/probe")
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

#[tokio::test]
async fn bad_json_is_a_400_in_the_error_shape_and_big_bodies_a_413() {
    let cases: Vec<Body> = vec![
        Body::from("{not json"),
        Body::from(r#"{"name": "x", "count": "seven"}"#),
        Body::from(r#"{"name": "x", "count": 99999999999999999999999}"#),
        Body::from(r#"{"name": "x"}"#),
        Body::from(vec![0xff, 0xfe, 0x00]),
        Body::from("[".repeat(10_000)),
        Body::from(""),
    ];
    for body in cases {
        let (status, _, body) = send(json_app(1024 * 1024), json_request(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_error_shape(&body);
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    let no_content_type = Request::builder()
        .method("POST")
        .uri("/probe")
        .body(Body::from(r#"{"name":"x","count":1}"#))
        .unwrap();
    let (status, _, _) = send(json_app(1024), no_content_type).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, _, _) = send(json_app(1024), json_request(r#"{"name":"x","count":1}"#)).await;
    assert_eq!(status, StatusCode::OK);

    // Declared too large: refused before reading.
    let big = format!(r#"{{"name":"{}","count":1}}"#, "x".repeat(4096));
    let req = Request::builder()
        .method("POST")
        .uri("/probe")
        .header("content-type", "application/json")
        .header("content-length", big.len().to_string())
        .body(Body::from(big.clone()))
        .unwrap();
    let (status, _, body) = send(json_app(1024), req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "request_too_large");
    // Streamed without a length: refused while reading.
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from(big))]);
    let (status, _, body) = send(json_app(1024), json_request(Body::from_stream(stream))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "request_too_large");
}

#[tokio::test]
async fn chat_describes_its_routes_in_openapi_and_serve_merges_them() {
    let db = TestDb::new().await;
    let (status, _, doc) = send(
        switchboard_chat::app(state_for(db.url())),
        request("GET", "/openapi.json"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for (path, method) in [
        ("/v1/chat/completions", "post"),
        ("/v1/messages", "post"),
        ("/v1/messages/count_tokens", "post"),
        ("/v1/embeddings", "post"),
        ("/v1/models", "get"),
        ("/v1/account", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{path} {method} missing: {doc}"
        );
    }
    assert!(doc["paths"]["/v1/chat/completions"]["post"]["responses"]["402"].is_object());
    let (status, _, merged) = send(
        switchboard::app(state_for(db.url())),
        request("GET", "/openapi.json"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/byok",
        "/admin/providers",
    ] {
        assert!(
            merged["paths"][path].is_object(),
            "{path} missing from serve's document"
        );
    }
}
