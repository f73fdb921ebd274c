//! A whole gateway in-process for end-to-end tests: a fresh database with the seed catalog
//! pointed at a [`FakeUpstream`], system keys for the seeded providers, the local-key
//! vault, and every function's routes (chat, keys, admin) behind the shared middleware —
//! driven with `oneshot`, exactly as `switchboard serve` answers.

use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Request, StatusCode};
use rust_decimal::Decimal;
use serde_json::Value;
use switchboard_core::auth::generate_api_key;
use switchboard_core::config::Config;
use switchboard_core::credentials::SystemKeys;
use switchboard_core::db::connect_pool;
use switchboard_core::http::finish_router;
use switchboard_core::keys::KeyServices;
use switchboard_core::keys::envelope::KeyVault;
use switchboard_core::keys::local::LocalCipher;
use switchboard_core::ledger::{self, CreditKind, GrantBook, GrantSettings};
use switchboard_core::providers::{ProviderClient, Timeouts};
use switchboard_core::secret::Secret;
use switchboard_core::state::AppState;
use tower::ServiceExt;

use crate::fake_upstream::FakeUpstream;
use crate::test_db::TestDb;

/// The system key the harness configures for each seeded provider slug.
pub fn system_key_for(slug: &str) -> String {
    format!("sk-system-{slug}-0123456789abcdef")
}

pub struct Gateway {
    pub db: TestDb,
    pub upstream: FakeUpstream,
    pub state: AppState,
    pub app: Router,
    /// With [`GatewayOptions::grants`]: the quota grants (their writer runs in a task).
    pub grants: Option<Arc<GrantBook>>,
}

/// Options for [`Gateway::start_with`].
#[derive(Default)]
pub struct GatewayOptions {
    /// Extra environment-style settings (`SWITCHBOARD_MAX_ATTEMPTS`, ...).
    pub env: Vec<(&'static str, String)>,
    pub timeouts: Timeouts,
}

impl Gateway {
    pub async fn start() -> Gateway {
        Self::start_with(GatewayOptions::default()).await
    }

    /// Admitting against quota grants, as `serve` does (the writer flushes every 20 ms).
    pub async fn start_granted() -> Gateway {
        Self::start_inner(GatewayOptions::default(), true).await
    }

    pub async fn start_with(options: GatewayOptions) -> Gateway {
        Self::start_inner(options, false).await
    }

    async fn start_inner(options: GatewayOptions, with_grants: bool) -> Gateway {
        let db = TestDb::new().await;
        let upstream = FakeUpstream::start().await;
        let client = db.connect().await;
        // Point the seeded providers at the fake upstream, in their own wire formats.
        for (slug, url) in [
            ("openai", upstream.openai_base_url()),
            ("anthropic", upstream.anthropic_base_url()),
            ("google", upstream.gemini_base_url()),
            ("openrouter", upstream.openai_base_url()),
            ("together", upstream.openai_base_url()),
            ("groq", upstream.openai_base_url()),
            ("fireworks", upstream.openai_base_url()),
        ] {
            client
                .execute("UPDATE llm_providers SET base_url = $2, health_url = $2 || '/models' WHERE provider_slug = $1", &[&slug, &url])
                .await
                .expect("point provider at the fake upstream");
        }

        let mut env: Vec<(String, String)> =
            vec![("SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS".into(), "1".into())];
        env.extend(options.env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let config =
            Config::from_lookup(|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
                .expect("test configuration");
        let pool = connect_pool(&Secret::new(db.url()), 32).expect("pool");
        let system_keys =
            SystemKeys::from_env_vars(["openai", "anthropic", "google", "openrouter"].iter().map(
                |slug| {
                    (
                        format!("SWITCHBOARD_PROVIDER_KEY_{}", slug.to_uppercase()),
                        system_key_for(slug),
                    )
                },
            ));
        let mut master = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut master);
        let vault = KeyVault::new(
            Arc::new(LocalCipher::new(master)),
            std::time::Duration::from_secs(300),
            100,
        );
        let mut state = AppState::new(config, pool).with_key_services(KeyServices {
            vault: Arc::new(vault),
            system_keys: Arc::new(system_keys),
        });
        state.providers = ProviderClient::from_http(state.http.clone(), options.timeouts);
        let mut grants = None;
        if with_grants {
            let settings = GrantSettings {
                flush_delay: std::time::Duration::from_millis(20),
                hold_ttl: state.config.ledger.hold_ttl,
                idle: state.config.ledger.grant_idle,
                max_queued: switchboard_core::ledger::MAX_QUEUED,
            };
            let (granted, book) = state.with_grants(settings);
            state = granted;
            tokio::spawn(Arc::clone(&book).run(std::future::pending::<()>()));
            grants = Some(book);
        }
        let limit = state.config.server.max_body_bytes;
        let router = switchboard_chat::router(state.clone())
            .merge(switchboard_keys::router(state.clone()))
            .merge(switchboard_admin::router(state.clone()));
        let app = finish_router(router, limit);
        Gateway {
            db,
            upstream,
            state,
            app,
            grants,
        }
    }

    /// Writes every queued granted capture now (a test reads the ledger afterwards).
    /// Writes every granted capture queued so far. Each round calls `flush` before looking
    /// at the queue: it waits for a batch the writer task has taken off the queue and is
    /// still writing (an empty queue alone does not mean written).
    pub async fn flush_grants(&self) {
        if let Some(book) = &self.grants {
            for _ in 0..100 {
                book.flush().await;
                if book.queued() == 0 {
                    return;
                }
            }
        }
    }

    /// Creates an account with `balance` USD and a user key; returns the key.
    pub async fn user(&self, user_id: &str, tier: &str, balance: &str) -> String {
        self.user_with(user_id, tier, balance, None, None).await
    }

    pub async fn user_with(
        &self,
        user_id: &str,
        tier: &str,
        balance: &str,
        monthly_cap: Option<&str>,
        rpm_limit: Option<i32>,
    ) -> String {
        let client = self.db.pool().get().await.expect("db");
        let cap = monthly_cap.map(|c| Decimal::from_str(c).expect("cap"));
        client
            .execute(
                "INSERT INTO accounts (user_id, tier, monthly_cap_usd) VALUES ($1, $2, $3)",
                &[&user_id, &tier, &cap],
            )
            .await
            .expect("create account");
        let amount = Decimal::from_str(balance).expect("balance");
        if !amount.is_zero() {
            ledger::credit(
                &**client,
                user_id,
                amount,
                CreditKind::TopUp,
                &format!("harness-{user_id}"),
                None,
                None,
            )
            .await
            .expect("top up");
        }
        self.key_for(user_id, "user", rpm_limit).await
    }

    /// Issues a gateway key for an existing account.
    pub async fn key_for(&self, user_id: &str, role: &str, rpm_limit: Option<i32>) -> String {
        let client = self.db.pool().get().await.expect("db");
        let key = generate_api_key();
        client
            .execute(
                "INSERT INTO gateway_api_keys (id, user_id, name, key_hash, key_prefix, role, rpm_limit)
                 VALUES ($1, $2, 'test', $3, $4, $5, $6)",
                &[&uuid::Uuid::new_v4(), &user_id, &key.hash.as_slice(), &key.display_prefix, &role, &rpm_limit],
            )
            .await
            .expect("create key");
        key.plaintext.expose().to_string()
    }

    /// Sends a request through the whole stack.
    pub async fn send(&self, request: Request<Body>) -> http::Response<Body> {
        self.app
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible")
    }

    /// `POST /v1/chat/completions` (JSON answer).
    pub async fn chat(
        &self,
        key: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let response = self.send(chat_request(key, body, headers)).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// `POST /v1/chat/completions` with `stream: true`: the SSE events as (event name,
    /// data) pairs, in order.
    pub async fn chat_stream(
        &self,
        key: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Vec<(Option<String>, String)>) {
        let response = self.send(chat_request(key, body, headers)).await;
        let status = response.status();
        let headers = response.headers().clone();
        let mut stream = response.into_body().into_data_stream();
        let mut text = String::new();
        while let Some(chunk) = stream.next().await {
            let chunk: Bytes = chunk.expect("stream body");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        (status, headers, parse_sse(&text))
    }

    pub async fn get(&self, key: &str, path: &str) -> (StatusCode, Value) {
        let request = Request::builder()
            .uri(path)
            .header("authorization", format!("Bearer {key}"))
            .body(Body::empty())
            .expect("request");
        let response = self.send(request).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// The ledger invariants for a user: balance = sum(entries), no active hold.
    pub async fn assert_ledger_consistent(&self, user_id: &str) {
        let client = self.db.pool().get().await.expect("db");
        let report = ledger::check_invariants(&**client, user_id)
            .await
            .expect("invariants");
        assert_eq!(
            report.balance, report.sum_of_entries,
            "balance = sum(entries): {report:?}"
        );
        assert_eq!(report.month_spend, report.month_captures, "{report:?}");
        assert_eq!(
            report.active_holds, 0,
            "no hold may stay active: {report:?}"
        );
    }

    /// A second offer of `gpt-4o` (OpenRouter, lower priority, served by the same fake),
    /// for fallbacks.
    pub async fn add_second_gpt4o_offer(&self) {
        let client = self.db.connect().await;
        client
            .batch_execute(
                "INSERT INTO llm_models (provider_id, model_name, model_id, context_window, max_tokens,
                     supports_function_calling, supports_vision, supports_json_mode,
                     cost_per_1m_input_tokens, cost_per_1m_output_tokens, cost_per_1m_tokens_cached, power_level_priority)
                 SELECT id, 'GPT-4o (OpenRouter)', 'gpt-4o', 128000, 16384, true, true, true, 2.50, 10.00, 1.25, 50
                 FROM llm_providers WHERE provider_slug = 'openrouter'",
            )
            .await
            .expect("insert the second gpt-4o offer");
        self.state.catalog.invalidate();
    }

    pub async fn balance(&self, user_id: &str) -> Decimal {
        let client = self.db.pool().get().await.expect("db");
        ledger::account_balance(&**client, user_id)
            .await
            .expect("balance")
            .expect("account")
            .credits_balance
    }
}

pub fn chat_request(key: &str, body: &Value, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::from(body.to_string())).expect("request")
}

/// Splits an SSE body into (event, data) pairs.
pub fn parse_sse(text: &str) -> Vec<(Option<String>, String)> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let mut event = None;
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(name) = line.strip_prefix("event:") {
                event = Some(name.trim().to_string());
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push(value.trim_start().to_string());
            }
        }
        if !data.is_empty() {
            events.push((event, data.join("\n")));
        }
    }
    events
}
