//! The schema against a real PostgreSQL: migrations and seed idempotency, the seed's
//! contents, and constraint violations rejected by the database itself.

use rust_decimal::Decimal;
use switchboard_core::db::migrate::{self, MIGRATIONS};
use switchboard_tests::test_db::TestDb;
use tokio_postgres::error::SqlState;

async fn snapshot(c: &tokio_postgres::Client) -> Vec<i64> {
    let mut out = Vec::new();
    for table in [
        "schema_migrations",
        "llm_providers",
        "llm_models",
        "llm_routing_rules",
        "accounts",
    ] {
        out.push(count(c, table).await);
    }
    out
}

async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn migrations_apply_in_order_and_a_second_run_changes_nothing() {
    let db = TestDb::empty().await;
    let mut client = db.connect().await;

    let first = migrate::run(&mut client).await.unwrap();
    let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(first.applied, all);
    assert!(first.already_applied.is_empty());

    let before = snapshot(&client).await;
    let second = migrate::run(&mut client).await.unwrap();
    assert!(
        second.applied.is_empty(),
        "second run applied {:?}",
        second.applied
    );
    assert_eq!(second.already_applied, all);
    assert_eq!(snapshot(&client).await, before);

    // The recorded checksums are those of the files.
    for m in MIGRATIONS {
        let recorded: String = client
            .query_one(
                "SELECT checksum FROM schema_migrations WHERE version = $1",
                &[&m.version],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(recorded, migrate::checksum(m.sql));
    }
}

#[tokio::test]
async fn concurrent_runners_apply_each_migration_once() {
    let db = TestDb::empty().await;
    let mut a = db.connect().await;
    let mut b = db.connect().await;
    let (ra, rb) = tokio::join!(migrate::run(&mut a), migrate::run(&mut b));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.applied.len() + rb.applied.len(), MIGRATIONS.len());
    assert_eq!(count(&a, "llm_providers").await, 8);
}

#[tokio::test]
async fn an_edited_migration_is_refused() {
    let db = TestDb::new().await;
    let mut client = db.connect().await;
    client
        .execute(
            "UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 2",
            &[],
        )
        .await
        .unwrap();
    let err = migrate::run(&mut client).await.unwrap_err();
    assert!(err.to_string().contains("0002_accounts_ledger"), "{err}");
}

#[tokio::test]
async fn an_unknown_applied_migration_is_refused() {
    let db = TestDb::new().await;
    let mut client = db.connect().await;
    client
        .execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')",
            &[],
        )
        .await
        .unwrap();
    let err = migrate::run(&mut client).await.unwrap_err();
    assert!(err.to_string().contains("9999"), "{err}");
}

#[tokio::test]
async fn seed_has_the_specified_catalog_and_is_idempotent() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    // Four chat models and two embedding models (0018), and Bedrock's provider with five
    // inactive models (0027); three chat rules and six embedding rules.
    assert_eq!(count(&client, "llm_providers").await, 8);
    assert_eq!(count(&client, "llm_models").await, 11);
    assert_eq!(count(&client, "llm_routing_rules").await, 9);

    let providers = client
        .query("SELECT provider_slug, api_format, auth_type, base_url FROM llm_providers ORDER BY provider_slug", &[])
        .await
        .unwrap();
    let got: Vec<(String, String, String, String)> = providers
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let expect = [
        (
            "anthropic",
            "anthropic",
            "x-api-key",
            "https://api.anthropic.com/v1",
        ),
        (
            "bedrock",
            "bedrock",
            "aws_sigv4",
            "https://bedrock-runtime.us-east-1.amazonaws.com",
        ),
        (
            "fireworks",
            "openai",
            "bearer",
            "https://api.fireworks.ai/inference/v1",
        ),
        (
            "google",
            "gemini",
            "x-goog-api-key",
            "https://generativelanguage.googleapis.com/v1beta",
        ),
        ("groq", "openai", "bearer", "https://api.groq.com/openai/v1"),
        ("openai", "openai", "bearer", "https://api.openai.com/v1"),
        (
            "openrouter",
            "openai",
            "bearer",
            "https://openrouter.ai/api/v1",
        ),
        (
            "together",
            "openai",
            "bearer",
            "https://api.together.xyz/v1",
        ),
    ];
    assert_eq!(got.len(), expect.len());
    for (row, want) in got.iter().zip(expect) {
        assert_eq!(
            (
                row.0.as_str(),
                row.1.as_str(),
                row.2.as_str(),
                row.3.as_str()
            ),
            want
        );
    }

    let gpt4o = client
        .query_one(
            "SELECT context_window, cost_per_1m_input_tokens, cost_per_1m_output_tokens, cost_per_1m_tokens_cached
             FROM llm_models WHERE model_id = 'gpt-4o'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(gpt4o.get::<_, i32>(0), 128_000);
    assert_eq!(gpt4o.get::<_, Decimal>(1), Decimal::new(250, 2));
    assert_eq!(gpt4o.get::<_, Decimal>(2), Decimal::new(1000, 2));
    assert_eq!(
        gpt4o.get::<_, Option<Decimal>>(3),
        Some(Decimal::new(125, 2))
    );

    let rules = client
        .query(
            "SELECT r.power_level, m.model_name FROM llm_routing_rules r JOIN llm_models m ON m.id = r.model_id
             WHERE m.model_type = 'chat' ORDER BY r.power_level",
            &[],
        )
        .await
        .unwrap();
    let rules: Vec<(String, String)> = rules.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        rules,
        vec![
            ("balanced".to_string(), "GPT-4 Turbo".to_string()),
            ("eco".to_string(), "Llama 3 70B".to_string()),
            ("precision".to_string(), "Claude 3.5 Sonnet".to_string()),
        ]
    );

    let embedding: Vec<(String, String, Decimal)> = client
        .query(
            "SELECT p.provider_slug, m.model_id, m.cost_per_1m_input_tokens FROM llm_models m
             JOIN llm_providers p ON p.id = m.provider_id WHERE m.model_type = 'embedding' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        embedding,
        vec![
            (
                "google".into(),
                "text-embedding-004".into(),
                Decimal::new(10, 2)
            ),
            (
                "openai".into(),
                "text-embedding-3-small".into(),
                Decimal::new(2, 2)
            ),
        ]
    );

    // Running the seed's SQL again (the catalog's, and the embedding models' inserts)
    // inserts nothing.
    let sql = |name: &str| {
        MIGRATIONS
            .iter()
            .find(|m| m.name.contains(name))
            .unwrap()
            .sql
    };
    client.batch_execute(sql("seed")).await.unwrap();
    let embeddings = sql("embeddings");
    let inserts = &embeddings[embeddings.find("INSERT INTO llm_models").unwrap()
        ..embeddings.find("-- The three statements").unwrap()];
    client.batch_execute(inserts).await.unwrap();
    assert_eq!(count(&client, "llm_providers").await, 8);
    assert_eq!(count(&client, "llm_models").await, 11);
    assert_eq!(count(&client, "llm_routing_rules").await, 9);
}

async fn expect_violation(client: &tokio_postgres::Client, sql: &str, state: &SqlState) {
    let err = client.batch_execute(sql).await.expect_err(sql);
    assert_eq!(err.code(), Some(state), "{sql}: {err}");
}

#[tokio::test]
async fn constraints_reject_bad_rows() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    let provider: i32 = client
        .query_one(
            "SELECT id FROM llm_providers WHERE provider_slug = 'openai'",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    // Negative price.
    expect_violation(
        &client,
        &format!(
            "INSERT INTO llm_models (provider_id, model_name, model_id, context_window, cost_per_1m_input_tokens, cost_per_1m_output_tokens)
             VALUES ({provider}, 'x', 'x', 1000, -1, 1)"
        ),
        &SqlState::CHECK_VIOLATION,
    )
    .await;
    // Unknown enums.
    expect_violation(
        &client,
        "INSERT INTO llm_providers (provider_name, provider_slug, api_format, base_url) VALUES ('X', 'x', 'soap', 'https://x')",
        &SqlState::CHECK_VIOLATION,
    )
    .await;
    expect_violation(
        &client,
        "INSERT INTO llm_providers (provider_name, provider_slug, auth_type, base_url) VALUES ('X', 'x', 'cookie', 'https://x')",
        &SqlState::CHECK_VIOLATION,
    )
    .await;
    expect_violation(
        &client,
        "INSERT INTO accounts (user_id, tier) VALUES ('u1', 'platinum')",
        &SqlState::CHECK_VIOLATION,
    )
    .await;
    expect_violation(
        &client,
        "INSERT INTO llm_routing_rules (model_id, power_level) SELECT id, 'turbo' FROM llm_models LIMIT 1",
        &SqlState::CHECK_VIOLATION,
    )
    .await;
    expect_violation(
        &client,
        "INSERT INTO llm_routing_rules (model_id, power_level, weight) SELECT id, 'eco', 0 FROM llm_models LIMIT 1",
        &SqlState::CHECK_VIOLATION,
    )
    .await;
    // Bad slug format.
    expect_violation(
        &client,
        "INSERT INTO llm_providers (provider_name, provider_slug, base_url) VALUES ('X', 'Has Spaces', 'https://x')",
        &SqlState::CHECK_VIOLATION,
    )
    .await;
    // Duplicates.
    expect_violation(
        &client,
        "INSERT INTO llm_providers (provider_name, provider_slug, base_url) VALUES ('Again', 'openai', 'https://x')",
        &SqlState::UNIQUE_VIOLATION,
    )
    .await;
    // Foreign keys.
    expect_violation(
        &client,
        "INSERT INTO llm_routing_rules (model_id, power_level) VALUES (999999, 'eco')",
        &SqlState::FOREIGN_KEY_VIOLATION,
    )
    .await;
    expect_violation(
        &client,
        "INSERT INTO ledger_entries (user_id, kind, amount_usd, idempotency_key) VALUES ('nobody', 'topup', 1, 'k')",
        &SqlState::FOREIGN_KEY_VIOLATION,
    )
    .await;

    // Ledger rules: top-ups are positive, captures never add money, keys are unique,
    // entries are append-only, holds are non-negative.
    client
        .batch_execute("INSERT INTO accounts (user_id) VALUES ('u1')")
        .await
        .unwrap();
    expect_violation(
        &client,
        "INSERT INTO ledger_entries (user_id, kind, amount_usd, idempotency_key) VALUES ('u1', 'topup', -5, 'neg')",
        &SqlState::CHECK_VIOLATION,
    )
    .await;
    expect_violation(
        &client,
        "INSERT INTO ledger_entries (user_id, kind, amount_usd, idempotency_key) VALUES ('u1', 'capture', 5, 'cap')",
        &SqlState::CHECK_VIOLATION,
    )
    .await;
    client
        .batch_execute("INSERT INTO ledger_entries (user_id, kind, amount_usd, idempotency_key) VALUES ('u1', 'topup', 5, 'once')")
        .await
        .unwrap();
    expect_violation(
        &client,
        "INSERT INTO ledger_entries (user_id, kind, amount_usd, idempotency_key) VALUES ('u1', 'topup', 5, 'once')",
        &SqlState::UNIQUE_VIOLATION,
    )
    .await;
    expect_violation(
        &client,
        "UPDATE ledger_entries SET amount_usd = 500",
        &SqlState::RESTRICT_VIOLATION,
    )
    .await;
    expect_violation(
        &client,
        "DELETE FROM ledger_entries",
        &SqlState::RESTRICT_VIOLATION,
    )
    .await;
    expect_violation(
        &client,
        "INSERT INTO credit_holds (request_id, user_id, amount_usd, expires_at) VALUES ('r1', 'u1', -1, now())",
        &SqlState::CHECK_VIOLATION,
    )
    .await;
    expect_violation(
        &client,
        "INSERT INTO credit_holds (request_id, user_id, amount_usd, state, expires_at) VALUES ('r2', 'u1', 1, 'pending', now())",
        &SqlState::CHECK_VIOLATION,
    )
    .await;
}

#[tokio::test]
async fn updated_at_moves_on_update() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    let before: chrono::DateTime<chrono::Utc> = client
        .query_one(
            "SELECT updated_at FROM llm_providers WHERE provider_slug = 'groq'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    client
        .batch_execute("UPDATE llm_providers SET rate_limit_rpm = 5 WHERE provider_slug = 'groq'")
        .await
        .unwrap();
    let after: chrono::DateTime<chrono::Utc> = client
        .query_one(
            "SELECT updated_at FROM llm_providers WHERE provider_slug = 'groq'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(after > before);
}

#[tokio::test]
async fn each_test_gets_its_own_database() {
    let a = TestDb::new().await;
    let b = TestDb::new().await;
    assert_ne!(a.name(), b.name());
    a.connect()
        .await
        .batch_execute("DELETE FROM llm_routing_rules")
        .await
        .unwrap();
    assert_eq!(count(&a.connect().await, "llm_routing_rules").await, 0);
    assert_eq!(count(&b.connect().await, "llm_routing_rules").await, 9);
}
