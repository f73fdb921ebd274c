//! Shared harness of the keys_* tests: a fresh database, a moto server with a KMS key, the
//! keys function in-process (driven with `oneshot`), users with gateway keys, and the
//! fake upstream standing in for the providers' models endpoints.

#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::Value;
use switchboard_core::config::Config;
use switchboard_core::credentials::SystemKeys;
use switchboard_core::db::connect_pool;
use switchboard_core::keys::kms::KmsCipher;
use switchboard_core::keys::{EnvelopeCipher, KeyServices, KeyVault};
use switchboard_core::secret::Secret;
use switchboard_core::state::AppState;
use switchboard_tests::fake_upstream::FakeUpstream;
use switchboard_tests::moto::MotoServer;
use switchboard_tests::test_db::TestDb;
use tower::ServiceExt;

pub fn kms_client(endpoint: &str) -> aws_sdk_kms::Client {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

pub fn secrets_client(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

/// A new symmetric KMS key in moto: `(key id, key ARN)`.
pub async fn create_kms_key(client: &aws_sdk_kms::Client) -> (String, String) {
    let output = client.create_key().send().await.expect("create KMS key");
    let meta = output.key_metadata.expect("key metadata");
    (meta.key_id, meta.arn.expect("key arn"))
}

pub async fn start_moto() -> MotoServer {
    MotoServer::start()
        .await
        .unwrap_or_else(|e| panic!("the keys tests need moto ({e})"))
}

/// Configuration for tests: private upstreams allowed (the fake upstream is on 127.0.0.1).
pub fn test_config() -> Config {
    Config::from_lookup(|name| (name == "SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS").then(|| "1".into()))
        .unwrap()
}

pub struct Harness {
    pub db: TestDb,
    pub moto: MotoServer,
    pub kms_client: aws_sdk_kms::Client,
    /// The key new envelopes are wrapped under (id, for moto's admin calls; and ARN).
    pub kms_key_id: String,
    pub kms_key_arn: String,
    pub kms: Arc<KmsCipher>,
    pub state: AppState,
    pub upstream: FakeUpstream,
}

impl Harness {
    /// KMS-backed state, providers pointed at the fake upstream.
    pub async fn start() -> Harness {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(config: Config) -> Harness {
        let db = TestDb::new().await;
        let moto = start_moto().await;
        let kms_client = kms_client(&moto.endpoint_url());
        let (kms_key_id, kms_key_arn) = create_kms_key(&kms_client).await;
        let kms = Arc::new(KmsCipher::new(kms_client.clone(), kms_key_arn.clone()));
        let upstream = FakeUpstream::start().await;
        point_providers_at(&db, &upstream).await;
        let state = state_with_cipher(&db, config, kms.clone());
        Harness {
            db,
            moto,
            kms_client,
            kms_key_id,
            kms_key_arn,
            kms,
            state,
            upstream,
        }
    }

    pub fn app(&self) -> Router {
        switchboard_keys::app(self.state.clone())
    }

    /// A vault with an empty data-key cache over the same KMS cipher (a cold instance).
    pub fn cold_vault(&self) -> KeyVault {
        KeyVault::new(self.kms.clone(), Duration::from_secs(300), 100)
    }

    pub async fn user(&self, user_id: &str) -> String {
        new_user(&self.db, user_id).await
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        call(self.app(), method, path, key, body).await
    }

    pub async fn provider_id(&self, slug: &str) -> i32 {
        provider_id(&self.db, slug).await
    }
}

pub fn state_with_cipher(db: &TestDb, config: Config, cipher: Arc<dyn EnvelopeCipher>) -> AppState {
    let pool = connect_pool(&Secret::new(db.url()), 8).unwrap();
    AppState::new(config, pool).with_key_services(KeyServices {
        vault: Arc::new(KeyVault::new(cipher, Duration::from_secs(300), 100)),
        system_keys: Arc::new(SystemKeys::none()),
    })
}

/// Every seeded provider's base URL → the fake upstream, in its format's path layout.
pub async fn point_providers_at(db: &TestDb, upstream: &FakeUpstream) {
    let client = db.connect().await;
    client
        .execute(
            "UPDATE llm_providers SET base_url = CASE api_format
                 WHEN 'gemini' THEN $2 ELSE $1 END",
            &[&upstream.openai_base_url(), &upstream.gemini_base_url()],
        )
        .await
        .unwrap();
}

pub async fn provider_id(db: &TestDb, slug: &str) -> i32 {
    db.connect()
        .await
        .query_one(
            "SELECT id FROM llm_providers WHERE provider_slug = $1",
            &[&slug],
        )
        .await
        .unwrap()
        .get(0)
}

/// An account with one user-role gateway key; returns the key.
pub async fn new_user(db: &TestDb, user_id: &str) -> String {
    db.account_with_key(user_id, "free", "user", None).await
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

pub fn assert_error_shape(body: &Value) {
    let error = &body["error"];
    assert!(error["message"].is_string(), "{body}");
    assert!(error["type"].is_string(), "{body}");
    assert!(error["code"].is_string(), "{body}");
    assert!(error.get("param").is_some(), "{body}");
}

/// A provider key that looks real: `prefix` + 40 random alphanumerics.
pub fn random_key(prefix: &str) -> String {
    use rand::Rng;
    let tail: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("{prefix}{tail}")
}

/// Every substring of `key` longer than what the hint keeps (4 characters).
pub fn leak_windows(key: &str) -> Vec<&str> {
    (0..=key.len().saturating_sub(5))
        .map(|i| &key[i..i + 5])
        .collect()
}

/// Fails if any column of any table holds `key` or a 5-character piece of it, as text or
/// as bytes.
pub async fn assert_database_never_holds(db: &TestDb, key: &str) {
    let client = db.connect().await;
    let tables: Vec<String> = client
        .query(
            "SELECT table_name FROM information_schema.tables
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.len() > 5, "{tables:?}");
    let windows = leak_windows(key);
    for table in &tables {
        let rows = client
            .query(
                &format!("SELECT row_to_json(t)::text FROM \"{table}\" t"),
                &[],
            )
            .await
            .unwrap();
        for row in rows {
            let text: String = row.get(0);
            for window in &windows {
                assert!(
                    !text.contains(window),
                    "table {table} holds a piece of the key ({window:?}): {text}"
                );
            }
        }
        let byte_columns: Vec<String> = client
            .query(
                "SELECT column_name FROM information_schema.columns
                 WHERE table_schema = 'public' AND table_name = $1 AND data_type = 'bytea'",
                &[table],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        for column in byte_columns {
            let rows = client
                .query(
                    &format!("SELECT \"{column}\" FROM \"{table}\" WHERE \"{column}\" IS NOT NULL"),
                    &[],
                )
                .await
                .unwrap();
            for row in rows {
                let bytes: Vec<u8> = row.get(0);
                for window in &windows {
                    assert!(
                        !bytes.windows(window.len()).any(|w| w == window.as_bytes()),
                        "{table}.{column} holds a piece of the key"
                    );
                }
            }
        }
    }
}
