//! Shared harness of the admin_* tests: a fresh database, the admin function (or the whole
//! `switchboard serve` app) in-process driven with `oneshot`, a bootstrap admin key, users
//! with gateway keys, and the fake upstream.

#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::Value;
use switchboard_core::auth::{BootstrapAdmin, ensure_bootstrap_admin, generate_api_key};
use switchboard_core::config::Config;
use switchboard_core::credentials::SystemKeys;
use switchboard_core::db::connect_pool;
use switchboard_core::secret::Secret;
use switchboard_core::state::AppState;
use switchboard_tests::test_db::TestDb;
use tower::ServiceExt;
use uuid::Uuid;

/// Configuration for tests; `allow_private` permits the fake upstream on 127.0.0.1.
pub fn config(allow_private: bool) -> Config {
    config_with(&[(
        "SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS",
        if allow_private { "1" } else { "0" },
    )])
}

/// Configuration from these variables only.
pub fn config_with(vars: &[(&str, &str)]) -> Config {
    Config::from_lookup(|name| {
        vars.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
    })
    .unwrap()
}

pub struct Harness {
    pub db: TestDb,
    pub state: AppState,
    /// The bootstrap admin key (plaintext) and its id.
    pub admin_key: String,
    pub admin_key_id: Uuid,
}

impl Harness {
    /// Private upstreams allowed (the fake upstream runs on loopback).
    pub async fn start() -> Harness {
        Self::start_with(config(true), SystemKeys::none()).await
    }

    pub async fn start_with(config: Config, system_keys: SystemKeys) -> Harness {
        let db = TestDb::new().await;
        let pool = connect_pool(&Secret::new(db.url()), 8).unwrap();
        let mut state = AppState::new(config, pool);
        state.system_keys = Arc::new(system_keys);
        let admin_key = generate_api_key().plaintext.expose().to_string();
        let client = db.connect().await;
        let outcome = ensure_bootstrap_admin(&client, Some(&Secret::new(&admin_key)))
            .await
            .unwrap();
        assert!(matches!(outcome, BootstrapAdmin::InsertedConfigured));
        let admin_key_id = client
            .query_one("SELECT id FROM gateway_api_keys WHERE role = 'admin'", &[])
            .await
            .unwrap()
            .get(0);
        Harness {
            db,
            state,
            admin_key,
            admin_key_id,
        }
    }

    /// The admin function's own Lambda app.
    pub fn app(&self) -> Router {
        switchboard_admin::app(self.state.clone())
    }

    /// Everything `switchboard serve` mounts.
    pub fn serve_app(&self) -> Router {
        switchboard::app(self.state.clone())
    }

    /// A request to the admin app with the admin key.
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        call(self.app(), method, path, Some(&self.admin_key), body).await
    }

    /// A request to the admin app with `key` (or none).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        call(self.app(), method, path, key, body).await
    }

    /// A request with a raw body (malformed JSON and the like), with the admin key.
    pub async fn admin_raw(
        &self,
        method: &str,
        path: &str,
        body: &'static str,
    ) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.admin_key))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        send(self.app(), request).await
    }

    /// An account (tier `tier`) with one gateway key of `role`; returns the key.
    pub async fn account_with_key(&self, user_id: &str, tier: &str, role: &str) -> String {
        let client = self.db.connect().await;
        client
            .execute(
                "INSERT INTO accounts (user_id, tier) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&user_id, &tier],
            )
            .await
            .unwrap();
        let key = generate_api_key();
        client
            .execute(
                "INSERT INTO gateway_api_keys (id, user_id, name, key_hash, key_prefix, role)
                 VALUES ($1, $2, 'test', $3, $4, $5)",
                &[
                    &Uuid::new_v4(),
                    &user_id,
                    &key.hash.as_slice(),
                    &key.display_prefix,
                    &role,
                ],
            )
            .await
            .unwrap();
        key.plaintext.expose().to_owned()
    }

    /// Audit rows of `action`, oldest first, as JSON objects.
    pub async fn audit_rows(&self, action: &str) -> Vec<Value> {
        let client = self.db.connect().await;
        client
            .query(
                "SELECT json_build_object('actor_key_id', actor_key_id, 'actor', actor, 'action', action,
                        'entity_type', entity_type, 'entity_id', entity_id, 'before', before,
                        'after', after, 'request_id', request_id)
                 FROM audit_log WHERE action = $1 ORDER BY id",
                &[&action],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<_, Value>(0))
            .collect()
    }

    pub async fn audit_count(&self) -> i64 {
        self.db
            .connect()
            .await
            .query_one("SELECT count(*) FROM audit_log", &[])
            .await
            .unwrap()
            .get(0)
    }

    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        self.db
            .connect()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    pub async fn provider_id(&self, slug: &str) -> i32 {
        self.db
            .connect()
            .await
            .query_one(
                "SELECT id FROM llm_providers WHERE provider_slug = $1",
                &[&slug],
            )
            .await
            .unwrap()
            .get(0)
    }
}

pub async fn call(
    app: Router,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    let request = match body {
        Some(body) => builder
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    };
    send(app, request).await
}

pub async fn send(app: Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

/// `{"error": {"message", "type", "code", "param"}}` with the expected status and type.
#[track_caller]
pub fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, kind: &str) {
    assert_eq!(status, expected, "{body}");
    let error = &body["error"];
    assert!(error["message"].is_string(), "{body}");
    assert_eq!(error["type"], kind, "{body}");
    assert!(error["code"].is_string(), "{body}");
    assert!(error.get("param").is_some(), "{body}");
}

/// A 400 `invalid_request_error`, naming `param` when given.
#[track_caller]
pub fn assert_invalid(status: StatusCode, body: &Value, param: Option<&str>) {
    assert_error(
        status,
        body,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
    );
    if let Some(param) = param {
        assert_eq!(body["error"]["param"], param, "{body}");
    }
}

/// Every admin route of api.md with a sample path.
pub const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/admin/providers"),
    ("POST", "/admin/providers"),
    ("GET", "/admin/providers/{id}"),
    ("PATCH", "/admin/providers/{id}"),
    ("DELETE", "/admin/providers/{id}"),
    ("GET", "/admin/providers/{id}/health"),
    ("POST", "/admin/providers/{id}/test"),
    ("GET", "/admin/models"),
    ("POST", "/admin/models"),
    ("GET", "/admin/models/{id}"),
    ("PATCH", "/admin/models/{id}"),
    ("DELETE", "/admin/models/{id}"),
    ("GET", "/admin/routing-rules"),
    ("POST", "/admin/routing-rules"),
    ("GET", "/admin/routing-rules/{id}"),
    ("PATCH", "/admin/routing-rules/{id}"),
    ("DELETE", "/admin/routing-rules/{id}"),
    ("GET", "/admin/users"),
    ("POST", "/admin/users"),
    ("GET", "/admin/users/{id}"),
    ("PATCH", "/admin/users/{id}"),
    ("POST", "/admin/users/{id}/credits"),
    ("GET", "/admin/users/{id}/ledger"),
    ("POST", "/admin/users/{id}/api-keys"),
    ("GET", "/admin/users/{id}/api-keys"),
    ("DELETE", "/admin/api-keys/{id}"),
    ("GET", "/admin/usage"),
    ("GET", "/admin/usage/summary"),
    ("GET", "/admin/audit-log"),
    ("POST", "/admin/health-check"),
    ("GET", "/admin/billing/export"),
    ("POST", "/admin/billing/export"),
    ("POST", "/admin/billing/export/retry"),
];

/// A concrete path for a templated one (`{id}` → a number, a user id or a UUID).
pub fn sample_path(template: &str) -> String {
    if template.starts_with("/admin/users/") {
        template.replace("{id}", "nobody")
    } else if template.starts_with("/admin/api-keys/") {
        template.replace("{id}", "00000000-0000-4000-8000-000000000000")
    } else {
        template.replace("{id}", "999999")
    }
}
