//! The platform's own credentials, from the environment or AWS Secrets Manager: the
//! system provider keys (a secret `{slug: key}`, cached with a TTL, or
//! `SWITCHBOARD_PROVIDER_KEY_<SLUG>` variables locally), the database credentials from an
//! RDS secret (`DATABASE_SECRET_ARN`), and the bootstrap admin key's secret. Values are
//! held as [`Secret`] and never logged; errors name the secret, never its content.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata};
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell};

use crate::config::{Config, split_host_port};
use crate::secret::Secret;

/// Prefix of the variables holding system provider keys locally.
pub const PROVIDER_KEY_ENV_PREFIX: &str = "SWITCHBOARD_PROVIDER_KEY_";
/// Default lifetime of a fetched secret.
pub const DEFAULT_SECRETS_TTL: Duration = Duration::from_secs(300);
/// After a failed fetch, wait this long before asking Secrets Manager again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("Secrets Manager: cannot read secret {arn}: {reason}")]
    Fetch { arn: String, reason: String },
    #[error("secret {arn} {reason}")]
    Format { arn: String, reason: &'static str },
}

/// `SWITCHBOARD_PROVIDER_KEY_<SLUG>`: the slug upper-cased, every other character `_`.
pub fn provider_key_env_name(slug: &str) -> String {
    let suffix: String = slug
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{PROVIDER_KEY_ENV_PREFIX}{suffix}")
}

/// The platform's own provider keys, for providers with `is_system_provider`.
pub struct SystemKeys {
    /// From `SWITCHBOARD_PROVIDER_KEY_*`, by variable name; they win over the secret.
    env: HashMap<String, Secret>,
    secret: Option<SecretSource>,
}

struct SecretSource {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
    ttl: Duration,
    state: Mutex<SecretCache>,
}

#[derive(Default)]
struct SecretCache {
    keys: Option<(Instant, HashMap<String, Secret>)>,
    last_failure: Option<Instant>,
}

impl std::fmt::Debug for SystemKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemKeys")
            .field("env_keys", &self.env.len())
            .field("secret_arn", &self.secret.as_ref().map(|s| s.arn.as_str()))
            .finish()
    }
}

impl SystemKeys {
    /// No system keys at all.
    pub fn none() -> Self {
        Self {
            env: HashMap::new(),
            secret: None,
        }
    }

    /// Keeps the `SWITCHBOARD_PROVIDER_KEY_*` entries of `vars` (read once at start).
    pub fn from_env_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let env = vars
            .into_iter()
            .filter(|(name, value)| {
                name.starts_with(PROVIDER_KEY_ENV_PREFIX) && !value.trim().is_empty()
            })
            .map(|(name, value)| (name, Secret::new(value.trim())))
            .collect();
        Self { env, secret: None }
    }

    /// Adds the Secrets Manager secret `arn` (JSON `{slug: key}`), fetched on first use
    /// and then every `ttl`.
    pub fn with_secret(
        mut self,
        client: aws_sdk_secretsmanager::Client,
        arn: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        self.secret = Some(SecretSource {
            client,
            arn: arn.into(),
            ttl,
            state: Mutex::new(SecretCache::default()),
        });
        self
    }

    /// The platform's key for provider `slug`, if it holds one. A failing Secrets Manager
    /// keeps serving the last value it returned (and is logged, without values).
    pub async fn get(&self, slug: &str) -> Option<Secret> {
        if let Some(key) = self.env.get(&provider_key_env_name(slug)) {
            return Some(key.clone());
        }
        let source = self.secret.as_ref()?;
        let mut state = source.state.lock().await;
        let fresh = matches!(&state.keys, Some((at, _)) if at.elapsed() < source.ttl);
        let backing_off = state
            .last_failure
            .is_some_and(|at| at.elapsed() < RETRY_AFTER_FAILURE);
        if !fresh && !backing_off {
            match fetch_json(&source.client, &source.arn)
                .await
                .and_then(|json| parse_provider_keys(&source.arn, &json))
            {
                Ok(keys) => {
                    state.keys = Some((Instant::now(), keys));
                    state.last_failure = None;
                }
                Err(error) => {
                    tracing::warn!(%error, stale = state.keys.is_some(), "system provider keys: refresh failed");
                    state.last_failure = Some(Instant::now());
                }
            }
        }
        state
            .keys
            .as_ref()
            .and_then(|(_, keys)| keys.get(slug).cloned())
    }

    /// Whether the platform holds a key for provider `slug`.
    pub async fn has(&self, slug: &str) -> bool {
        self.get(slug).await.is_some()
    }
}

async fn fetch_json(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<Value, SecretsError> {
    let text = fetch_string(client, arn).await?;
    serde_json::from_str(text.expose()).map_err(|_| SecretsError::Format {
        arn: arn.to_owned(),
        reason: "is not JSON",
    })
}

async fn fetch_string(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<Secret, SecretsError> {
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|error| SecretsError::Fetch {
            arn: arn.to_owned(),
            reason: match error.code() {
                Some(code) => format!("{code}: {}", error.message().unwrap_or_default()),
                None => DisplayErrorContext(&error).to_string(),
            },
        })?;
    let text = output.secret_string().ok_or(SecretsError::Format {
        arn: arn.to_owned(),
        reason: "has no SecretString (binary secrets are not supported)",
    })?;
    Ok(Secret::new(text))
}

fn parse_provider_keys(arn: &str, json: &Value) -> Result<HashMap<String, Secret>, SecretsError> {
    let object = json.as_object().ok_or(SecretsError::Format {
        arn: arn.to_owned(),
        reason: "must be a JSON object {\"provider_slug\": \"key\"}",
    })?;
    let mut keys = HashMap::new();
    for (slug, value) in object {
        match value.as_str().map(str::trim).filter(|v| !v.is_empty()) {
            Some(key) => {
                keys.insert(slug.clone(), Secret::new(key));
            }
            None => {
                tracing::warn!(%slug, secret = %arn, "system provider key is not a non-empty string; ignored")
            }
        }
    }
    Ok(keys)
}

/// Reads an RDS credentials secret (`username, password, host, port, dbname`) and builds
/// the connection URL, percent-encoded, as a [`Secret`].
pub async fn database_url_from_secret(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<Secret, SecretsError> {
    database_url_from_secret_via(client, arn, None).await
}

/// [`database_url_from_secret`], connecting to `host` (`host[:port]`, e.g. the RDS Proxy
/// endpoint, `SWITCHBOARD_DB_HOST`) instead of the secret's own host when given.
pub async fn database_url_from_secret_via(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
    host: Option<&str>,
) -> Result<Secret, SecretsError> {
    let mut json = fetch_json(client, arn).await?;
    if let (Some(host), Some(object)) = (host, json.as_object_mut()) {
        let (name, port) = split_host_port(host);
        object.insert("host".into(), Value::String(name.to_owned()));
        if let Some(port) = port {
            object.insert("port".into(), Value::String(port.to_owned()));
        }
    }
    database_url_from_json(arn, &json)
}

/// The bootstrap admin key held in the secret `arn` (`SWITCHBOARD_ADMIN_KEY_SECRET_ARN`):
/// `None` while it is empty (the stack creates it as `{"admin_key": ""}`).
pub async fn read_admin_key(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<Option<Secret>, SecretsError> {
    let text = fetch_string(client, arn).await?;
    admin_key_from_secret_string(arn, text.expose())
}

/// Stores a generated bootstrap admin key in the secret `arn`, as `{"admin_key": "..."}`.
pub async fn store_admin_key(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
    key: &Secret,
) -> Result<(), SecretsError> {
    let value = serde_json::json!({ "admin_key": key.expose() }).to_string();
    client
        .put_secret_value()
        .secret_id(arn)
        .secret_string(value)
        .send()
        .await
        .map_err(|error| SecretsError::Fetch {
            arn: arn.to_owned(),
            reason: match error.code() {
                Some(code) => format!(
                    "cannot store the admin key: {code}: {}",
                    error.message().unwrap_or_default()
                ),
                None => format!(
                    "cannot store the admin key: {}",
                    DisplayErrorContext(&error)
                ),
            },
        })?;
    Ok(())
}

/// The admin key in a secret's text: the key itself (`sk-sb-...`) or JSON
/// `{"admin_key": "sk-sb-..."}`; empty means none yet. Errors never quote the value.
pub fn admin_key_from_secret_string(arn: &str, text: &str) -> Result<Option<Secret>, SecretsError> {
    let format = |reason| SecretsError::Format {
        arn: arn.to_owned(),
        reason,
    };
    let text = text.trim();
    let key = if text.starts_with('{') {
        let json: Value = serde_json::from_str(text).map_err(|_| format("is not valid JSON"))?;
        match json.get("admin_key") {
            None | Some(Value::Null) => "",
            Some(Value::String(key)) => key.trim(),
            Some(_) => return Err(format("has an `admin_key` that is not a string")),
        }
        .to_owned()
    } else {
        text.to_owned()
    };
    if key.is_empty() {
        return Ok(None);
    }
    crate::auth::validate_key_format(&key).map_err(|_| {
        format("does not hold a gateway key (sk-sb- and at least 32 letters, digits, - or _)")
    })?;
    Ok(Some(Secret::new(key)))
}

/// The connection URL for an RDS secret's JSON. Errors never contain its values.
pub fn database_url_from_json(arn: &str, json: &Value) -> Result<Secret, SecretsError> {
    let format = |reason| SecretsError::Format {
        arn: arn.to_owned(),
        reason,
    };
    let text = |name: &str| {
        json.get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let username = text("username").ok_or_else(|| format("has no `username` string"))?;
    // The password is taken as is: spaces at its ends would be part of it.
    let password = json
        .get("password")
        .and_then(Value::as_str)
        .ok_or_else(|| format("has no `password` string"))?;
    let host = text("host").ok_or_else(|| format("has no `host` string"))?;
    let port = match json.get("port") {
        None | Some(Value::Null) => 5432,
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format("has a `port` that is not a port number"))?,
        Some(Value::String(s)) => s
            .trim()
            .parse::<u16>()
            .map_err(|_| format("has a `port` that is not a port number"))?,
        Some(_) => return Err(format("has a `port` that is not a port number")),
    };
    let dbname = text("dbname").unwrap_or("postgres");
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'))
    {
        return Err(format("has a `host` that is not a host name or address"));
    }
    Ok(Secret::new(format!(
        "postgres://{}:{}@{host}:{port}/{}",
        percent_encode(username),
        percent_encode(password),
        percent_encode(dbname)
    )))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The AWS SDK configuration, loaded from the environment at most once per process and
/// only when something needs AWS (KMS, Secrets Manager). `AWS_ENDPOINT_URL` points it
/// at an emulator.
#[derive(Default)]
pub struct AwsContext {
    config: OnceCell<SdkConfig>,
}

impl AwsContext {
    /// A context with a configuration built elsewhere (tests point it at an emulator).
    pub fn with_sdk_config(config: SdkConfig) -> Self {
        Self {
            config: OnceCell::new_with(Some(config)),
        }
    }

    pub async fn sdk_config(&self) -> &SdkConfig {
        self.config
            .get_or_init(|| aws_config::defaults(BehaviorVersion::latest()).load())
            .await
    }
}

/// The database URL: `DATABASE_URL`, else built from the RDS secret at
/// `DATABASE_SECRET_ARN`, else `None`.
pub async fn database_url(
    config: &Config,
    aws: &AwsContext,
) -> Result<Option<Secret>, SecretsError> {
    if let Some(url) = &config.database.url {
        return Ok(Some(url.clone()));
    }
    let Some(arn) = &config.database.secret_arn else {
        return Ok(None);
    };
    let client = aws_sdk_secretsmanager::Client::new(aws.sdk_config().await);
    let url = database_url_from_secret_via(&client, arn, config.database.host.as_deref()).await?;
    tracing::info!(secret = %arn, host_override = ?config.database.host, "database credentials read from Secrets Manager");
    Ok(Some(url))
}

/// Lago's API key: `SWITCHBOARD_LAGO_API_KEY`, else the secret at
/// `SWITCHBOARD_LAGO_API_KEY_SECRET_ARN` (`{"api_key": "..."}` or the key itself), else
/// `None`.
pub async fn lago_api_key(
    config: &Config,
    aws: &AwsContext,
) -> Result<Option<Secret>, SecretsError> {
    if let Some(key) = &config.billing.lago_api_key {
        return Ok(Some(key.clone()));
    }
    let Some(arn) = &config.billing.lago_api_key_secret_arn else {
        return Ok(None);
    };
    let client = aws_sdk_secretsmanager::Client::new(aws.sdk_config().await);
    let text = fetch_string(&client, arn).await?;
    let key = match serde_json::from_str::<Value>(text.expose()) {
        Ok(Value::Object(object)) => object
            .get("api_key")
            .and_then(Value::as_str)
            .map(Secret::new)
            .ok_or(SecretsError::Format {
                arn: arn.to_owned(),
                reason: "has no string field api_key",
            })?,
        _ => text,
    };
    Ok(Some(key).filter(|k| !k.expose().trim().is_empty()))
}

/// Fills the billing secrets the environment left unset (the Stripe key, the Stripe
/// webhook secret, the alert webhook secret) from the JSON secret at
/// `SWITCHBOARD_BILLING_SECRETS_ARN`; empty strings count as unset.
pub async fn fill_billing_secrets(
    config: &mut Config,
    aws: &AwsContext,
) -> Result<(), SecretsError> {
    let Some(arn) = config.billing.billing_secrets_arn.clone() else {
        return Ok(());
    };
    let client = aws_sdk_secretsmanager::Client::new(aws.sdk_config().await);
    let json = fetch_json(&client, &arn).await?;
    let field = |name: &str| {
        json.get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.trim().is_empty())
            .map(Secret::new)
    };
    let billing = &mut config.billing;
    if billing.stripe_api_key.is_none() {
        billing.stripe_api_key = field("stripe_api_key");
    }
    if billing.stripe_webhook_secret.is_none() {
        billing.stripe_webhook_secret = field("stripe_webhook_secret");
    }
    if billing.alert_webhook_secret.is_none() {
        billing.alert_webhook_secret = field("alert_webhook_secret");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::validate_db_host;

    #[test]
    fn env_names_follow_the_slug() {
        assert_eq!(
            provider_key_env_name("openai"),
            "SWITCHBOARD_PROVIDER_KEY_OPENAI"
        );
        assert_eq!(
            provider_key_env_name("my-local.llm"),
            "SWITCHBOARD_PROVIDER_KEY_MY_LOCAL_LLM"
        );
    }

    #[tokio::test]
    async fn env_keys_are_found_by_slug() {
        let keys = SystemKeys::from_env_vars([
            (
                "SWITCHBOARD_PROVIDER_KEY_OPENAI".to_owned(),
                "sk-system".to_owned(),
            ),
            (
                "SWITCHBOARD_PROVIDER_KEY_MY_LLM".to_owned(),
                "abc".to_owned(),
            ),
            ("SWITCHBOARD_PROVIDER_KEY_EMPTY".to_owned(), " ".to_owned()),
            ("OTHER".to_owned(), "x".to_owned()),
        ]);
        assert_eq!(keys.get("openai").await.unwrap().expose(), "sk-system");
        assert!(keys.has("my-llm").await);
        assert!(!keys.has("empty").await);
        assert!(!keys.has("anthropic").await);
        assert!(!format!("{keys:?}").contains("sk-system"));
    }

    #[test]
    fn rds_secret_becomes_an_encoded_url() {
        let url = database_url_from_json(
            "arn:x",
            &json!({"username": "app", "password": "p@ss:/w rd%", "host": "db.example.com", "port": 5433, "dbname": "switchboard", "engine": "postgres"}),
        )
        .unwrap();
        assert_eq!(
            url.expose(),
            "postgres://app:p%40ss%3A%2Fw%20rd%25@db.example.com:5433/switchboard"
        );
        let parsed: tokio_postgres::Config = url.expose().parse().unwrap();
        assert_eq!(parsed.get_password(), Some("p@ss:/w rd%".as_bytes()));
        assert_eq!(parsed.get_user(), Some("app"));
        assert_eq!(parsed.get_dbname(), Some("switchboard"));

        let url = database_url_from_json(
            "arn:x",
            &json!({"username": "app", "password": "pw", "host": "10.0.0.5", "port": "5432"}),
        )
        .unwrap();
        assert_eq!(url.expose(), "postgres://app:pw@10.0.0.5:5432/postgres");
    }

    #[test]
    fn bad_rds_secrets_are_refused_without_echoing_values() {
        for bad in [
            json!({"password": "hunter2", "host": "h"}),
            json!({"username": "u", "host": "h"}),
            json!({"username": "u", "password": "hunter2"}),
            json!({"username": "u", "password": "hunter2", "host": "h", "port": 99999}),
            json!({"username": "u", "password": "hunter2", "host": "h/../x"}),
            json!("hunter2"),
        ] {
            let err = database_url_from_json("arn:x", &bad).unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(err.to_string().contains("arn:x"));
        }
    }

    #[test]
    fn admin_key_secrets_hold_a_key_or_nothing() {
        let key = "sk-sb-0123456789abcdef0123456789abcdef";
        for text in [
            key.to_owned(),
            format!(" {key}\n"),
            format!("{{\"admin_key\": \"{key}\"}}"),
        ] {
            let found = admin_key_from_secret_string("arn:x", &text)
                .unwrap()
                .unwrap();
            assert_eq!(found.expose(), key);
        }
        for empty in ["", "{}", "{\"admin_key\": \"\"}", "{\"admin_key\": null}"] {
            assert!(
                admin_key_from_secret_string("arn:x", empty)
                    .unwrap()
                    .is_none()
            );
        }
        for bad in [
            "hunter2-not-a-key",
            "{\"admin_key\": \"hunter2\"}",
            "{\"admin_key\": 5}",
            "{hunter2",
        ] {
            let err = admin_key_from_secret_string("arn:x", bad).unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn db_host_overrides_are_checked_and_split() {
        assert_eq!(
            split_host_port("proxy.example.com"),
            ("proxy.example.com", None)
        );
        assert_eq!(split_host_port("proxy:6432"), ("proxy", Some("6432")));
        assert_eq!(split_host_port("[::1]:6432"), ("::1", Some("6432")));
        assert_eq!(split_host_port("::1"), ("::1", None));
        assert!(validate_db_host("proxy.example.com:5432").is_ok());
        assert!(validate_db_host("proxy.example.com:http").is_err());
        assert!(validate_db_host("a/b").is_err());
        assert!(validate_db_host("").is_err());
    }

    #[test]
    fn provider_keys_secret_parses_strings_only() {
        let keys = parse_provider_keys(
            "arn:x",
            &json!({"openai": "sk-1", "anthropic": 5, "google": ""}),
        )
        .unwrap();
        assert_eq!(keys.len(), 1);
        assert!(parse_provider_keys("arn:x", &json!(["sk-1"])).is_err());
    }
}
