//! `switchboard export-billing`: one export pass from the command line, then exit 0; and
//! a clear error (exit 1) when Lago is not configured.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use switchboard_tests::fake_lago::{FakeLago, LAGO_TEST_KEY};
use switchboard_tests::test_db::TestDb;

async fn run(db: &TestDb, lago: Option<&FakeLago>) -> std::process::Output {
    let data_dir = std::env::temp_dir().join(format!("sb-export-{}", std::process::id()));
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .arg("export-billing")
        .env("DATABASE_URL", db.url())
        .env("SWITCHBOARD_DATA_DIR", &data_dir)
        .env_remove("SWITCHBOARD_LAGO_API_URL")
        .env_remove("SWITCHBOARD_LAGO_API_KEY")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("RUST_LOG", "info");
    if let Some(lago) = lago {
        command
            .env("SWITCHBOARD_LAGO_API_URL", lago.url())
            .env("SWITCHBOARD_LAGO_API_KEY", LAGO_TEST_KEY);
    }
    command.output().await.unwrap()
}

#[tokio::test]
async fn the_cli_runs_one_pass_and_exits() {
    let db = TestDb::new().await;
    let lago = FakeLago::start().await;
    let client = db.connect().await;
    client
        .batch_execute(
            "INSERT INTO accounts (user_id, tier) VALUES ('cli', 'starter');
             INSERT INTO billing_events (transaction_id, external_customer_id, properties)
             SELECT 'cli-' || i, 'cli', jsonb_build_object('cost_usd', '0.001', 'model', 'gpt-4o')
             FROM generate_series(1, 3) AS i;",
        )
        .await
        .unwrap();
    let output = run(&db, Some(&lago)).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(lago.events().len(), 3);
    let unbilled: i64 = client
        .query_one(
            "SELECT count(*) FROM billing_events WHERE billed_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unbilled, 0);

    let output = run(&db, None).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SWITCHBOARD_LAGO_API_URL"), "{stderr}");
}
