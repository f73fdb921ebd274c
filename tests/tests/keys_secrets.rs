//! Platform secrets from Secrets Manager (moto): system provider keys with their TTL'd
//! cache and environment overrides, and database credentials from an RDS secret.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod keys_common;

use std::time::Duration;

use keys_common::*;
use serde_json::json;
use switchboard_core::credentials::SystemKeys;
use switchboard_core::credentials::database_url_from_secret;
use switchboard_core::db::connect_pool;
use switchboard_tests::test_db::TestDb;

async fn create_secret(client: &aws_sdk_secretsmanager::Client, name: &str, value: &str) -> String {
    client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .expect("create secret")
        .arn
        .expect("secret arn")
}

#[tokio::test]
async fn system_keys_come_from_secrets_manager_with_a_ttl() {
    let moto = start_moto().await;
    let client = secrets_client(&moto.endpoint_url());
    let arn = create_secret(
        &client,
        "switchboard/provider-keys",
        &json!({"openai": "sk-system-openai-1", "anthropic": 5, "google": ""}).to_string(),
    )
    .await;

    let cached = SystemKeys::from_env_vars([(
        "SWITCHBOARD_PROVIDER_KEY_GROQ".to_owned(),
        "gsk_from_env".to_owned(),
    )])
    .with_secret(client.clone(), arn.clone(), Duration::from_secs(3600));
    let uncached = SystemKeys::none().with_secret(client.clone(), arn.clone(), Duration::ZERO);
    for keys in [&cached, &uncached] {
        assert_eq!(
            keys.get("openai").await.unwrap().expose(),
            "sk-system-openai-1"
        );
        assert!(
            !keys.has("anthropic").await,
            "non-string values are ignored"
        );
        assert!(!keys.has("google").await, "empty values are ignored");
        assert!(!keys.has("together").await);
    }
    assert_eq!(cached.get("groq").await.unwrap().expose(), "gsk_from_env");
    assert!(!format!("{cached:?}").contains("sk-system"));

    // A rotation shows once the cached copy expires.
    client
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(json!({"openai": "sk-system-openai-2"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        cached.get("openai").await.unwrap().expose(),
        "sk-system-openai-1",
        "within the TTL the cached value is used"
    );
    assert_eq!(
        uncached.get("openai").await.unwrap().expose(),
        "sk-system-openai-2"
    );

    // The service going away: the last good value is kept, nothing panics.
    drop(moto);
    assert_eq!(
        uncached.get("openai").await.unwrap().expose(),
        "sk-system-openai-2"
    );
    let never_fetched = SystemKeys::none().with_secret(client, arn, Duration::ZERO);
    assert!(never_fetched.get("openai").await.is_none());
}

#[tokio::test]
async fn database_credentials_come_from_an_rds_secret() {
    let db = TestDb::new().await;
    let moto = start_moto().await;
    let client = secrets_client(&moto.endpoint_url());
    let pg: tokio_postgres::Config = db.url().parse().unwrap();
    let host = match &pg.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        other => panic!("the test database must be on TCP: {other:?}"),
    };
    let password = pg
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let secret = json!({
        "engine": "postgres",
        "username": pg.get_user().unwrap(),
        "password": password,
        "host": host,
        "port": pg.get_ports().first().copied().unwrap_or(5432),
        "dbname": db.name(),
    });
    let arn = create_secret(&client, "switchboard/rds", &secret.to_string()).await;

    let url = database_url_from_secret(&client, &arn).await.unwrap();
    assert!(!format!("{url:?}").contains(db.name()));
    let pool = connect_pool(&url, 1).unwrap();
    let conn = pool.get().await.unwrap();
    let name: String = conn
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, db.name());

    // Not RDS credentials, or no such secret: an error naming the secret, not its content.
    let bad = create_secret(
        &client,
        "switchboard/bad",
        &json!({"username": "u", "password": "hunter2"}).to_string(),
    )
    .await;
    let error = database_url_from_secret(&client, &bad).await.unwrap_err();
    assert!(error.to_string().contains("host"), "{error}");
    assert!(!error.to_string().contains("hunter2"));
    let error = database_url_from_secret(&client, "switchboard/missing")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("switchboard/missing"), "{error}");
}

#[tokio::test]
async fn billing_secrets_fill_what_the_environment_left_unset() {
    use aws_config::BehaviorVersion;
    use aws_sdk_secretsmanager::config::{Credentials, Region};
    use switchboard_core::config::Config;
    use switchboard_core::credentials::{AwsContext, fill_billing_secrets, lago_api_key};

    let moto = start_moto().await;
    let client = secrets_client(&moto.endpoint_url());
    let billing = create_secret(
        &client,
        "switchboard/billing",
        &json!({"stripe_api_key": "sk_live_from_secret", "stripe_webhook_secret": "",
                "alert_webhook_secret": "alert-from-secret"})
        .to_string(),
    )
    .await;
    let lago = create_secret(
        &client,
        "switchboard/lago-api-key",
        &json!({"api_key": "lago-from-secret"}).to_string(),
    )
    .await;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(moto.endpoint_url())
        .load()
        .await;
    let aws = AwsContext::with_sdk_config(sdk);
    let vars = [
        ("SWITCHBOARD_BILLING_SECRETS_ARN", billing.as_str()),
        ("SWITCHBOARD_LAGO_API_KEY_SECRET_ARN", lago.as_str()),
        (
            "SWITCHBOARD_ALERT_WEBHOOK_URL",
            "https://hooks.example/alerts",
        ),
        ("SWITCHBOARD_STRIPE_WEBHOOK_SECRET", "whsec_from_env"),
    ];
    let mut config = Config::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
    .expect("the alert secret may come from the billing secret");
    fill_billing_secrets(&mut config, &aws).await.unwrap();
    let billing = &config.billing;
    assert_eq!(
        billing.stripe_api_key.as_ref().unwrap().expose(),
        "sk_live_from_secret"
    );
    assert_eq!(
        billing.stripe_webhook_secret.as_ref().unwrap().expose(),
        "whsec_from_env",
        "the environment wins; an empty field sets nothing"
    );
    assert_eq!(
        billing.alert_webhook_secret.as_ref().unwrap().expose(),
        "alert-from-secret"
    );
    assert_eq!(
        lago_api_key(&config, &aws).await.unwrap().unwrap().expose(),
        "lago-from-secret"
    );
    // Without the billing secret, an alert URL needs its secret in the environment.
    let e = Config::from_lookup(|name| {
        (name == "SWITCHBOARD_ALERT_WEBHOOK_URL").then(|| "https://hooks.example/a".to_string())
    })
    .unwrap_err();
    assert_eq!(e.variable, "SWITCHBOARD_ALERT_WEBHOOK_SECRET");
}
