//! Configuration: read once from the environment at start, validated, fails fast with a
//! message naming the variable. Every variable is optional for `switchboard serve`.
//!
//! One section per concern, each in its own file with its defaults and its parse: the
//! modules it configures import their section; the configuration imports no domain module
//! (only the leaf `auth::format`, to check the admin key's shape, and `secret`).

mod billing;
mod breaker;
mod chat;
mod database;
mod env;
mod health;
mod keys;
mod ledger;
mod routing;
mod server;

pub use billing::BillingSettings;
pub use breaker::BreakerSettings;
pub use chat::ChatSettings;
pub use database::{DatabaseSettings, DbTlsSettings, split_host_port, validate_db_host};
pub use env::Env;
pub use health::HealthSettings;
pub use keys::KeySettings;
pub use ledger::{DEFAULT_HOLD_TTL, LedgerSettings};
pub use routing::{DEFAULT_CATALOG_TTL, PowerLevelCeilings, RoutingSettings};
pub use server::{DEFAULT_MAX_BODY_BYTES, MAX_CONNECTIONS_LIMIT, ServerSettings};

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub keys: KeySettings,
    pub chat: ChatSettings,
    pub ledger: LedgerSettings,
    pub routing: RoutingSettings,
    pub breaker: BreakerSettings,
    pub health: HealthSettings,
    pub billing: BillingSettings,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment in production, a map in tests).
    /// Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        let server = ServerSettings::from_env(&env)?;
        let config = Self {
            database: DatabaseSettings::from_env(&env, server.in_lambda)?,
            keys: KeySettings::from_env(&env, &server.data_dir, server.in_lambda)?,
            chat: ChatSettings::from_env(&env)?,
            ledger: LedgerSettings::from_env(&env)?,
            routing: RoutingSettings::from_env(&env)?,
            breaker: BreakerSettings::from_env(&env)?,
            health: HealthSettings::from_env(&env)?,
            billing: BillingSettings::from_env(&env)?,
            server,
        };
        if config.chat.max_stream_duration >= config.ledger.hold_ttl {
            return Err(ConfigError {
                variable: "SWITCHBOARD_MAX_STREAM_SECS",
                reason: format!(
                    "{} s is not below the hold lifetime of {} s (SWITCHBOARD_HOLD_TTL_SECS): a stream must settle before its hold expires",
                    config.chat.max_stream_duration.as_secs(),
                    config.ledger.hold_ttl.as_secs()
                ),
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_need_nothing() {
        let c = config(&[]).unwrap();
        assert!(c.database.url.is_none());
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            c.keys.master_key_file,
            std::path::PathBuf::from(".switchboard/master.key")
        );
        assert_eq!(c.server.max_body_bytes, 1024 * 1024);
        assert_eq!(c.health.interval, std::time::Duration::from_secs(300));
        assert!(!c.server.allow_private_upstreams);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = config(&[("SWITCHBOARD_LISTEN", "nope")]).unwrap_err();
        assert_eq!(e.variable, "SWITCHBOARD_LISTEN");
        let e = config(&[("SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS", "maybe")]).unwrap_err();
        assert_eq!(e.variable, "SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS");
        let e = config(&[("SWITCHBOARD_DB_POOL_SIZE", "0")]).unwrap_err();
        assert_eq!(e.variable, "SWITCHBOARD_DB_POOL_SIZE");
        for (variable, bad) in [
            ("SWITCHBOARD_LEDGER_MAX_BATCH", "0"),
            ("SWITCHBOARD_LEDGER_MAX_BATCH", "lots"),
        ] {
            let e = config(&[(variable, bad)]).unwrap_err();
            assert_eq!(e.variable, variable);
        }
        let c = config(&[("SWITCHBOARD_LEDGER_MAX_BATCH", "1")]).unwrap();
        assert_eq!(c.ledger.max_batch, 1);
        let c = config(&[]).unwrap();
        assert_eq!(c.ledger.max_batch, 64);
        assert_eq!(c.ledger.hold_ttl, DEFAULT_HOLD_TTL);
        assert_eq!(
            c.chat.max_stream_duration,
            std::time::Duration::from_secs(600)
        );
        let e = config(&[("SWITCHBOARD_MAX_STREAM_SECS", "900")]).unwrap_err();
        assert_eq!(e.variable, "SWITCHBOARD_MAX_STREAM_SECS");
        let c = config(&[
            ("SWITCHBOARD_MAX_STREAM_SECS", "1800"),
            ("SWITCHBOARD_HOLD_TTL_SECS", "3600"),
        ])
        .unwrap();
        assert_eq!(
            c.chat.max_stream_duration,
            std::time::Duration::from_secs(1800)
        );
        let e = config(&[("SWITCHBOARD_ADMIN_KEY", "short")]).unwrap_err();
        assert_eq!(e.variable, "SWITCHBOARD_ADMIN_KEY");
        assert!(
            !e.to_string().contains("short"),
            "the key itself must not be echoed"
        );
    }

    #[test]
    fn health_settings_have_defaults_bounds_and_a_cross_check() {
        let h = config(&[]).unwrap().health;
        assert_eq!(h, HealthSettings::default());
        assert_eq!(h.probe_timeout, std::time::Duration::from_secs(10));
        assert_eq!(h.degraded_latency, std::time::Duration::from_millis(2000));
        assert_eq!(h.strikes_to_disable, 2);
        assert_eq!(h.history_retention_days, 30);
        assert_eq!(h.passive_window, std::time::Duration::from_secs(300));
        assert_eq!(h.passive_min_attempts, 5);
        assert_eq!(h.passive_error_percent, 50);

        let h = config(&[
            ("SWITCHBOARD_HEALTH_PROBE_TIMEOUT_SECS", "5"),
            ("SWITCHBOARD_HEALTH_DEGRADED_LATENCY_MS", "750"),
            ("SWITCHBOARD_HEALTH_DOWN_STRIKES", "3"),
            ("SWITCHBOARD_HEALTH_HISTORY_DAYS", "7"),
            ("SWITCHBOARD_HEALTH_PASSIVE_WINDOW_SECS", "0"),
            ("SWITCHBOARD_HEALTH_PASSIVE_MIN_ATTEMPTS", "20"),
            ("SWITCHBOARD_HEALTH_PASSIVE_ERROR_PERCENT", "25"),
        ])
        .unwrap()
        .health;
        assert_eq!(h.probe_timeout, std::time::Duration::from_secs(5));
        assert_eq!(h.degraded_latency, std::time::Duration::from_millis(750));
        assert_eq!(h.strikes_to_disable, 3);
        assert_eq!(h.history_retention_days, 7);
        assert_eq!(h.passive_window, std::time::Duration::ZERO);
        assert_eq!(h.passive_min_attempts, 20);
        assert_eq!(h.passive_error_percent, 25);

        for (variable, value) in [
            ("SWITCHBOARD_HEALTH_PROBE_TIMEOUT_SECS", "0"),
            ("SWITCHBOARD_HEALTH_PROBE_TIMEOUT_SECS", "61"),
            ("SWITCHBOARD_HEALTH_DEGRADED_LATENCY_MS", "soon"),
            ("SWITCHBOARD_HEALTH_DOWN_STRIKES", "11"),
            ("SWITCHBOARD_HEALTH_HISTORY_DAYS", "0"),
            ("SWITCHBOARD_HEALTH_PASSIVE_WINDOW_SECS", "-1"),
            ("SWITCHBOARD_HEALTH_PASSIVE_MIN_ATTEMPTS", "0"),
            ("SWITCHBOARD_HEALTH_PASSIVE_ERROR_PERCENT", "100"),
        ] {
            let e = config(&[(variable, value)]).unwrap_err();
            assert_eq!(e.variable, variable, "{value}");
        }
        // The degraded threshold must stay below the probe timeout.
        let e = config(&[
            ("SWITCHBOARD_HEALTH_PROBE_TIMEOUT_SECS", "2"),
            ("SWITCHBOARD_HEALTH_DEGRADED_LATENCY_MS", "2000"),
        ])
        .unwrap_err();
        assert_eq!(e.variable, "SWITCHBOARD_HEALTH_DEGRADED_LATENCY_MS");
        assert!(e.to_string().contains("probe timeout"), "{e}");
    }

    #[test]
    fn lambda_requires_a_kms_key() {
        let e = config(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")]).unwrap_err();
        assert_eq!(e.variable, "SWITCHBOARD_KMS_KEY_ID");
        let c = config(&[
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
            ("SWITCHBOARD_KMS_KEY_ID", "alias/x"),
        ])
        .unwrap();
        assert!(c.server.in_lambda);
        assert_eq!(c.database.pool_size, 2);
    }

    #[test]
    fn deployment_settings() {
        let c = config(&[
            (
                "SWITCHBOARD_ADMIN_KEY_SECRET_ARN",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:x",
            ),
            (
                "SWITCHBOARD_DB_HOST",
                "sb-db.proxy-abc.us-east-1.rds.amazonaws.com",
            ),
            ("SWITCHBOARD_DB_TLS", "1"),
            ("SWITCHBOARD_DB_CA_FILE", "/opt/switchboard/db-ca.pem"),
        ])
        .unwrap();
        assert!(c.keys.admin_key_secret_arn.is_some());
        assert_eq!(
            c.database.host.as_deref(),
            Some("sb-db.proxy-abc.us-east-1.rds.amazonaws.com")
        );
        assert!(c.database.tls.force);
        assert_eq!(
            c.database.tls.ca_file,
            Some(std::path::PathBuf::from("/opt/switchboard/db-ca.pem"))
        );
        let c = config(&[]).unwrap();
        assert!(
            !c.database.tls.force && c.database.tls.ca_file.is_none() && c.database.host.is_none()
        );

        let e = config(&[
            (
                "SWITCHBOARD_ADMIN_KEY",
                "sk-sb-0123456789abcdef0123456789abcdef",
            ),
            ("SWITCHBOARD_ADMIN_KEY_SECRET_ARN", "arn:x"),
        ])
        .unwrap_err();
        assert_eq!(e.variable, "SWITCHBOARD_ADMIN_KEY_SECRET_ARN");
        let e = config(&[("SWITCHBOARD_DB_HOST", "db/../x")]).unwrap_err();
        assert_eq!(e.variable, "SWITCHBOARD_DB_HOST");
        let e = config(&[("SWITCHBOARD_DB_TLS", "maybe")]).unwrap_err();
        assert_eq!(e.variable, "SWITCHBOARD_DB_TLS");
    }

    #[test]
    fn the_pending_charges_queue_is_an_optional_url() {
        assert!(
            config(&[])
                .unwrap()
                .ledger
                .pending_charges_queue_url
                .is_none()
        );
        let url = "https://sqs.us-east-1.amazonaws.com/123456789012/sb-pending-charges";
        let c = config(&[("SWITCHBOARD_PENDING_CHARGES_QUEUE_URL", url)]).unwrap();
        assert_eq!(c.ledger.pending_charges_queue_url.as_deref(), Some(url));
        let e = config(&[(
            "SWITCHBOARD_PENDING_CHARGES_QUEUE_URL",
            "sb-pending-charges",
        )])
        .unwrap_err();
        assert_eq!(e.variable, "SWITCHBOARD_PENDING_CHARGES_QUEUE_URL");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = config(&[
            ("DATABASE_URL", "postgres://u:hunter2@db/x"),
            (
                "SWITCHBOARD_ADMIN_KEY",
                "sk-sb-0123456789abcdef0123456789abcdef",
            ),
        ])
        .unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"));
        assert!(!debug.contains("0123456789abcdef"));
    }
}
