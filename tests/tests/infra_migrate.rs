//! The deploy-time migration step (`migrate` Lambda, the template's `MigrateOnDeploy`
//! custom resource), in-process: CloudFormation requests answered on their pre-signed
//! URL (here a local server), failures reported as FAILED without secrets, Delete leaving
//! the database alone, direct invocations, and the bootstrap admin key taken from — or
//! generated into — its Secrets Manager secret (moto).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_secretsmanager::config::{Credentials, Region};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::put;
use serde_json::{Value, json};
use switchboard::migrate_step::MigrateStep;
use switchboard_core::auth::hash_api_key;
use switchboard_core::config::Config;
use switchboard_core::credentials::AwsContext;
use switchboard_tests::moto::MotoServer;
use switchboard_tests::test_db::TestDb;
use tokio::sync::mpsc;

fn config(vars: &[(&str, String)]) -> Config {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Config::from_lookup(|k| map.get(k).cloned()).unwrap()
}

/// A stand-in for CloudFormation's pre-signed response URL: records each PUT.
struct ResponseUrl {
    url: String,
    received: mpsc::UnboundedReceiver<(HeaderMap, Value)>,
}

async fn response_url() -> ResponseUrl {
    let (tx, received) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/cfn-response/{*rest}",
            put(
                |State(tx): State<mpsc::UnboundedSender<(HeaderMap, Value)>>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    let _ = tx.send((headers, serde_json::from_slice(&body).unwrap()));
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    ResponseUrl {
        url: format!("http://{addr}/cfn-response/arn%3Aaws%3Acloudformation/x?X-Amz-Signature=abc"),
        received,
    }
}

fn request(kind: &str, url: &str) -> Value {
    let path =
        switchboard_tests::moto::workspace_root().join("events/migrate-custom-resource.json");
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["RequestType"] = json!(kind);
    event["ResponseURL"] = json!(url);
    if kind != "Create" {
        event["PhysicalResourceId"] = json!("switchboard-schema");
    }
    event
}

/// The Update CloudFormation sends when it rolls a failed update back: the properties go
/// back from version 4 of the migrate function (the failed deploy's) to version 3.
fn rollback_update(url: &str) -> Value {
    let mut event = request("Update", url);
    let old = event["ResourceProperties"].clone();
    event["OldResourceProperties"] = old.clone();
    let newer = old["FunctionVersion"].as_str().unwrap().replace(":3", ":4");
    event["OldResourceProperties"]["FunctionVersion"] = json!(newer);
    event
}

async fn answer(url: &mut ResponseUrl) -> (HeaderMap, Value) {
    tokio::time::timeout(Duration::from_secs(10), url.received.recv())
        .await
        .expect("CloudFormation was answered")
        .unwrap()
}

#[tokio::test]
async fn custom_resource_create_update_rollback_delete() {
    let db = TestDb::empty().await;
    let admin_key = "sk-sb-a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0";
    let step = MigrateStep::new(config(&[
        ("DATABASE_URL", db.url().to_owned()),
        ("SWITCHBOARD_ADMIN_KEY", admin_key.to_owned()),
    ]));
    let mut url = response_url().await;

    let out = step
        .handle(request("Create", &url.url), Some(Duration::from_secs(120)))
        .await
        .unwrap();
    assert_eq!(out["Status"], "SUCCESS");
    let (headers, body) = answer(&mut url).await;
    assert!(
        headers.get("content-type").is_none(),
        "the URL is signed without one"
    );
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    assert_eq!(body["PhysicalResourceId"], "switchboard-schema");
    assert_eq!(body["LogicalResourceId"], "MigrateOnDeploy");
    assert_eq!(body["RequestId"], "5a8e3c04-4a3b-4b5f-9a73-0c8f3a3c9e01");
    assert_eq!(
        body["StackId"].as_str().unwrap(),
        "arn:aws:cloudformation:us-east-1:123456789012:stack/switchboard/0b9b5c70-cbc1-11f0-8a41-0affd2b3c4d5"
    );
    assert_ne!(body["Data"]["Applied"], "0");
    assert_eq!(body["Data"]["AdminKey"], "inserted");
    assert!(!body.to_string().contains(admin_key));

    let client = db.connect().await;
    let migrations: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert!(migrations > 0);
    let admins: i64 = client
        .query_one(
            "SELECT count(*) FROM gateway_api_keys WHERE role = 'admin' AND key_hash = $1",
            &[&hash_api_key(admin_key).as_slice()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(admins, 1);

    // Update (new code): runs again, nothing left to apply.
    step.handle(request("Update", &url.url), Some(Duration::from_secs(120)))
        .await
        .unwrap();
    let (_, body) = answer(&mut url).await;
    assert_eq!(body["Status"], "SUCCESS");
    assert_eq!(body["Data"]["Applied"], "0");
    assert_eq!(body["Data"]["AdminKey"], "present");

    // Rollback (CloudFormation sends an Update back to the older version's properties):
    // SUCCESS without migrating. Against a database with nothing applied yet, so that any
    // migration would show; and with one that cannot be reached at all.
    let fresh = TestDb::empty().await;
    let fresh_step = MigrateStep::new(config(&[("DATABASE_URL", fresh.url().to_owned())]));
    fresh_step
        .handle(rollback_update(&url.url), Some(Duration::from_secs(120)))
        .await
        .unwrap();
    let (_, body) = answer(&mut url).await;
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    assert_eq!(body["Data"]["Rollback"], "true");
    assert_eq!(body["Data"]["Applied"], "0");
    assert!(
        body["Reason"].as_str().unwrap().contains("rollback"),
        "{body}"
    );
    let fresh_client = fresh.connect().await;
    let table: Option<String> = fresh_client
        .query_one("SELECT to_regclass('schema_migrations')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(table, None, "a rollback migrates nothing");
    let unreachable = MigrateStep::new(config(&[(
        "DATABASE_URL",
        "postgres://app:hunter2@127.0.0.1:1/nothing".to_owned(),
    )]))
    .with_connect_retry(1, Duration::from_millis(10));
    unreachable
        .handle(rollback_update(&url.url), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let (_, body) = answer(&mut url).await;
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    // The same pair of versions the other way round (4 after 3) is a forward Update: it
    // migrates.
    let mut forward = rollback_update(&url.url);
    let old = forward["OldResourceProperties"].clone();
    forward["OldResourceProperties"] = forward["ResourceProperties"].clone();
    forward["ResourceProperties"] = old;
    fresh_step
        .handle(forward, Some(Duration::from_secs(120)))
        .await
        .unwrap();
    let (_, body) = answer(&mut url).await;
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    assert_ne!(body["Data"]["Applied"], "0");
    assert!(body["Data"].get("Rollback").is_none());

    // Delete never touches the database: it succeeds even with none reachable.
    unreachable
        .handle(request("Delete", &url.url), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let (_, body) = answer(&mut url).await;
    assert_eq!(body["Status"], "SUCCESS");
    assert_eq!(body["PhysicalResourceId"], "switchboard-schema");
}

#[tokio::test]
async fn failures_are_reported_to_cloudformation_without_secrets() {
    let mut url = response_url().await;
    let step = MigrateStep::new(config(&[(
        "DATABASE_URL",
        "postgres://app:hunter2@127.0.0.1:1/nothing?connect_timeout=2".to_owned(),
    )]))
    .with_connect_retry(2, Duration::from_millis(100));
    let out = step
        .handle(request("Create", &url.url), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(out["Status"], "FAILED");
    let (_, body) = answer(&mut url).await;
    assert_eq!(body["Status"], "FAILED");
    let reason = body["Reason"].as_str().unwrap();
    assert!(reason.contains("database"), "{reason}");
    assert!(!reason.contains("hunter2"), "{reason}");

    // Not enough time left: FAILED in time rather than a stack waiting for an hour.
    let db = TestDb::empty().await;
    let step = MigrateStep::new(config(&[("DATABASE_URL", db.url().to_owned())]));
    step.handle(request("Create", &url.url), Some(Duration::from_secs(15)))
        .await
        .unwrap();
    let (_, body) = answer(&mut url).await;
    assert_eq!(body["Status"], "FAILED");
    assert!(
        body["Reason"].as_str().unwrap().contains("did not finish"),
        "{body}"
    );

    // No database configured at all.
    let step = MigrateStep::new(config(&[]));
    step.handle(request("Create", &url.url), None)
        .await
        .unwrap();
    let (_, body) = answer(&mut url).await;
    assert_eq!(body["Status"], "FAILED");
    assert!(
        body["Reason"]
            .as_str()
            .unwrap()
            .contains("DATABASE_SECRET_ARN")
    );
}

#[tokio::test]
async fn direct_invocations_answer_the_summary() {
    let db = TestDb::empty().await;
    let step = MigrateStep::new(config(&[("DATABASE_URL", db.url().to_owned())]));
    let out = step.handle(json!({}), None).await.unwrap();
    assert!(!out["applied"].as_array().unwrap().is_empty(), "{out}");
    assert_eq!(out["already_applied"], 0);
    // Nothing configured: no admin key is generated (nobody could read it).
    assert_eq!(out["admin_key"], "not_configured");
    let out = step.handle(json!({}), None).await.unwrap();
    assert_eq!(out["applied"], json!([]));
    let admins: i64 = db
        .connect()
        .await
        .query_one(
            "SELECT count(*) FROM gateway_api_keys WHERE role = 'admin'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(admins, 0);
}

async fn moto_aws(moto: &MotoServer) -> (AwsContext, aws_sdk_secretsmanager::Client) {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(moto.endpoint_url())
        .load()
        .await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    (AwsContext::with_sdk_config(sdk), client)
}

async fn secret_value(client: &aws_sdk_secretsmanager::Client, arn: &str) -> String {
    client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .unwrap()
        .secret_string()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_admin_key_comes_from_its_secret_or_is_generated_into_it() {
    let moto = MotoServer::start()
        .await
        .unwrap_or_else(|e| panic!("this test needs moto ({e})"));
    let (aws, secrets) = moto_aws(&moto).await;
    // As the stack creates it: empty.
    let arn = secrets
        .create_secret()
        .name("switchboard/admin-key")
        .secret_string(r#"{"admin_key": ""}"#)
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    let db = TestDb::empty().await;
    let vars = [
        ("DATABASE_URL", db.url().to_owned()),
        ("SWITCHBOARD_ADMIN_KEY_SECRET_ARN", arn.clone()),
    ];
    let step = MigrateStep::with_aws(config(&vars), aws);
    let out = step.handle(json!({}), None).await.unwrap();
    assert_eq!(out["admin_key"], "generated_into_secret");
    let stored: Value = serde_json::from_str(&secret_value(&secrets, &arn).await).unwrap();
    let key = stored["admin_key"].as_str().unwrap().to_owned();
    switchboard_core::auth::validate_key_format(&key).unwrap();
    assert!(!out.to_string().contains(&key));
    let client = db.connect().await;
    let row = client
        .query_one(
            "SELECT role, revoked_at IS NULL FROM gateway_api_keys WHERE key_hash = $1",
            &[&hash_api_key(&key).as_slice()],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "admin");
    assert!(row.get::<_, bool>(1));

    // The next deploy reads it back.
    let (aws, _) = moto_aws(&moto).await;
    let step = MigrateStep::with_aws(config(&vars), aws);
    assert_eq!(
        step.handle(json!({}), None).await.unwrap()["admin_key"],
        "present"
    );

    // An operator's own key (plain string) is inserted.
    let own = "sk-sb-own0own0own0own0own0own0own0own0own0";
    secrets
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(own)
        .send()
        .await
        .unwrap();
    let (aws, _) = moto_aws(&moto).await;
    let step = MigrateStep::with_aws(config(&vars), aws);
    assert_eq!(
        step.handle(json!({}), None).await.unwrap()["admin_key"],
        "inserted"
    );

    // A secret that holds something else fails without echoing it.
    secrets
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(r#"{"admin_key": "hunter2"}"#)
        .send()
        .await
        .unwrap();
    let (aws, _) = moto_aws(&moto).await;
    let step = MigrateStep::with_aws(config(&vars), aws);
    let error = step.handle(json!({}), None).await.unwrap_err().to_string();
    assert!(error.contains("admin"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");

    // Emptied again while an admin key exists: nothing is generated.
    secrets
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(r#"{"admin_key": ""}"#)
        .send()
        .await
        .unwrap();
    let (aws, _) = moto_aws(&moto).await;
    let step = MigrateStep::with_aws(config(&vars), aws);
    assert_eq!(
        step.handle(json!({}), None).await.unwrap()["admin_key"],
        "secret_empty_admin_exists"
    );
    assert_eq!(secret_value(&secrets, &arn).await, r#"{"admin_key": ""}"#);
}
