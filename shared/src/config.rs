//! Configuration: read once from the environment at start, validated, fails fast with a
//! message naming the variable. Every variable is optional for `switchboard serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// Default body limit (api.md: 1 MiB; Lambda itself caps at 6 MB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Postgres URL. `None` → `switchboard serve` starts its embedded cluster.
    pub database_url: Option<Secret>,
    pub listen: SocketAddr,
    /// Bootstrap admin key (`SWITCHBOARD_ADMIN_KEY`).
    pub admin_key: Option<Secret>,
    /// KMS key for BYOK envelopes; `None` → local master key file (development only).
    pub kms_key_id: Option<String>,
    pub master_key_file: PathBuf,
    /// Where `switchboard serve` keeps its embedded cluster and local key (`.switchboard`).
    pub data_dir: PathBuf,
    /// Directory holding `initdb` / `pg_ctl`, when not on PATH or /usr/lib/postgresql.
    pub pg_bin_dir: Option<PathBuf>,
    pub allow_private_upstreams: bool,
    pub max_body_bytes: usize,
    pub db_pool_size: usize,
    pub health_check_interval: Duration,
    /// Health check: probe timeout, degraded threshold, strikes, history retention and the
    /// passive signal (`SWITCHBOARD_HEALTH_*`).
    pub health: crate::health::HealthSettings,
    /// How long a gateway-key lookup is cached (revocation takes effect within it).
    pub key_cache_ttl: Duration,
    /// Running inside AWS Lambda (`AWS_LAMBDA_RUNTIME_API` is set).
    pub in_lambda: bool,
    /// Chat: candidates tried per request at most (`SWITCHBOARD_MAX_ATTEMPTS`).
    pub max_attempts: usize,
    /// Chat: batches of admissions, and separately of captures, one process has in
    /// PostgreSQL at once (`SWITCHBOARD_LEDGER_BATCHES`, group commit).
    pub ledger_batches: usize,
    /// Chat: the most requests one group-commit batch carries
    /// (`SWITCHBOARD_LEDGER_MAX_BATCH`; 1 turns group commit off).
    pub ledger_max_batch: usize,
    /// Chat: one overall deadline per non-streamed request, under API Gateway's 29 s.
    pub request_timeout: Duration,
    /// Chat: the longest a stream may last from its request (`SWITCHBOARD_MAX_STREAM_SECS`,
    /// default 600, below the hold TTL). Under Lambda a stream also ends
    /// `chat::LAMBDA_DEADLINE_MARGIN` before the invocation deadline, whichever is first.
    pub max_stream_duration: Duration,
    /// Chat: platform fee on BYOK calls, percent of the provider cost (default 0).
    pub byok_fee_percent: rust_decimal::Decimal,
    /// Ledger: a hold left by a crashed or frozen instance expires after this.
    pub hold_ttl: Duration,
    /// How long the in-process catalog snapshot is served before a refresh.
    pub catalog_ttl: Duration,
    /// Passive circuit breaker: consecutive failures that open it, and the cooldown.
    pub breaker: crate::breaker::BreakerSettings,
    /// Power-level cost ceilings for `auto` (routing.md's table).
    pub ceilings: crate::routing::PowerLevelCeilings,
    /// Secrets Manager secret with the RDS credentials (`DATABASE_SECRET_ARN`), used when
    /// `DATABASE_URL` is unset.
    pub database_secret_arn: Option<String>,
    /// Secrets Manager secret `{slug: key}` with the system provider keys.
    pub provider_keys_secret_arn: Option<String>,
    /// Secrets Manager secret with the bootstrap admin key (`SWITCHBOARD_ADMIN_KEY_SECRET_ARN`),
    /// the alternative to `SWITCHBOARD_ADMIN_KEY` in AWS.
    pub admin_key_secret_arn: Option<String>,
    /// `SWITCHBOARD_DB_HOST`: `host[:port]` replacing the host of the credentials read from
    /// `DATABASE_SECRET_ARN` (the RDS Proxy endpoint in AWS).
    pub db_host: Option<String>,
    /// TLS to the database (`SWITCHBOARD_DB_TLS`, `SWITCHBOARD_DB_CA_FILE`).
    pub db_tls: crate::db::tls::DbTlsSettings,
    /// How long plaintext BYOK data keys stay cached in process (0 disables the cache).
    pub data_key_cache_ttl: Duration,
    /// How long a secret read from Secrets Manager is cached.
    pub secrets_cache_ttl: Duration,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment in production, a map in tests).
    /// Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let in_lambda = get("AWS_LAMBDA_RUNTIME_API").is_some();
        let data_dir =
            PathBuf::from(get("SWITCHBOARD_DATA_DIR").unwrap_or_else(|| ".switchboard".into()));
        let master_key_file = get("SWITCHBOARD_MASTER_KEY_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("master.key"));

        let listen = match get("SWITCHBOARD_LISTEN") {
            Some(v) => v.parse().map_err(|_| ConfigError {
                variable: "SWITCHBOARD_LISTEN",
                reason: format!("`{v}` is not an address like 127.0.0.1:8080"),
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };

        let admin_key = get("SWITCHBOARD_ADMIN_KEY").map(Secret::new);
        if let Some(key) = &admin_key {
            crate::auth::validate_key_format(key.expose()).map_err(|reason| ConfigError {
                variable: "SWITCHBOARD_ADMIN_KEY",
                reason: reason.to_string(),
            })?;
        }

        let admin_key_secret_arn = get("SWITCHBOARD_ADMIN_KEY_SECRET_ARN");
        if admin_key.is_some() && admin_key_secret_arn.is_some() {
            return Err(ConfigError {
                variable: "SWITCHBOARD_ADMIN_KEY_SECRET_ARN",
                reason:
                    "set either SWITCHBOARD_ADMIN_KEY or SWITCHBOARD_ADMIN_KEY_SECRET_ARN, not both"
                        .into(),
            });
        }

        let kms_key_id = get("SWITCHBOARD_KMS_KEY_ID");
        if in_lambda && kms_key_id.is_none() {
            return Err(ConfigError {
                variable: "SWITCHBOARD_KMS_KEY_ID",
                reason:
                    "required in AWS Lambda (the local master key file is for development only)"
                        .into(),
            });
        }

        let config = Self {
            database_url: get("DATABASE_URL").map(Secret::new),
            listen,
            admin_key,
            kms_key_id,
            master_key_file,
            data_dir,
            pg_bin_dir: get("SWITCHBOARD_PG_BIN_DIR").map(PathBuf::from),
            allow_private_upstreams: parse_bool(
                get("SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS"),
                "SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS",
            )?
            .unwrap_or(false),
            max_body_bytes: parse_number(
                get("SWITCHBOARD_MAX_BODY_BYTES"),
                "SWITCHBOARD_MAX_BODY_BYTES",
                1024,
                6 * 1024 * 1024,
            )?
            .unwrap_or(DEFAULT_MAX_BODY_BYTES),
            db_pool_size: parse_number(
                get("SWITCHBOARD_DB_POOL_SIZE"),
                "SWITCHBOARD_DB_POOL_SIZE",
                1,
                1000,
            )?
            .unwrap_or(if in_lambda { 2 } else { 16 }),
            health_check_interval: Duration::from_secs(
                parse_number(
                    get("SWITCHBOARD_HEALTH_CHECK_INTERVAL_SECS"),
                    "SWITCHBOARD_HEALTH_CHECK_INTERVAL_SECS",
                    10,
                    86_400,
                )?
                .unwrap_or(300) as u64,
            ),
            health: health_settings(&get)?,
            key_cache_ttl: Duration::from_secs(
                parse_number(
                    get("SWITCHBOARD_KEY_CACHE_TTL_SECS"),
                    "SWITCHBOARD_KEY_CACHE_TTL_SECS",
                    0,
                    300,
                )?
                .unwrap_or(5) as u64,
            ),
            in_lambda,
            max_attempts: parse_number(
                get("SWITCHBOARD_MAX_ATTEMPTS"),
                "SWITCHBOARD_MAX_ATTEMPTS",
                1,
                10,
            )?
            .unwrap_or(3),
            ledger_batches: parse_number(
                get("SWITCHBOARD_LEDGER_BATCHES"),
                "SWITCHBOARD_LEDGER_BATCHES",
                1,
                16,
            )?
            .unwrap_or(2),
            ledger_max_batch: parse_number(
                get("SWITCHBOARD_LEDGER_MAX_BATCH"),
                "SWITCHBOARD_LEDGER_MAX_BATCH",
                1,
                1000,
            )?
            .unwrap_or(64),
            request_timeout: Duration::from_secs(
                parse_number(
                    get("SWITCHBOARD_REQUEST_TIMEOUT_SECS"),
                    "SWITCHBOARD_REQUEST_TIMEOUT_SECS",
                    1,
                    900,
                )?
                .unwrap_or(25) as u64,
            ),
            max_stream_duration: Duration::from_secs(
                parse_number(
                    get("SWITCHBOARD_MAX_STREAM_SECS"),
                    "SWITCHBOARD_MAX_STREAM_SECS",
                    1,
                    86_400,
                )?
                .unwrap_or(600) as u64,
            ),
            byok_fee_percent: match get("SWITCHBOARD_BYOK_FEE_PERCENT") {
                None => rust_decimal::Decimal::ZERO,
                Some(v) => v
                    .trim()
                    .parse::<rust_decimal::Decimal>()
                    .ok()
                    .filter(|d| {
                        *d >= rust_decimal::Decimal::ZERO && *d <= rust_decimal::Decimal::from(100)
                    })
                    .ok_or_else(|| ConfigError {
                        variable: "SWITCHBOARD_BYOK_FEE_PERCENT",
                        reason: format!("`{v}` is not a percentage between 0 and 100"),
                    })?,
            },
            hold_ttl: Duration::from_secs(
                parse_number(
                    get("SWITCHBOARD_HOLD_TTL_SECS"),
                    "SWITCHBOARD_HOLD_TTL_SECS",
                    60,
                    86_400,
                )?
                .unwrap_or(900) as u64,
            ),
            catalog_ttl: Duration::from_secs(
                parse_number(
                    get("SWITCHBOARD_CATALOG_TTL_SECS"),
                    "SWITCHBOARD_CATALOG_TTL_SECS",
                    0,
                    300,
                )?
                .unwrap_or(5) as u64,
            ),
            breaker: crate::breaker::BreakerSettings {
                failure_threshold: parse_number(
                    get("SWITCHBOARD_BREAKER_THRESHOLD"),
                    "SWITCHBOARD_BREAKER_THRESHOLD",
                    1,
                    100,
                )?
                .unwrap_or(3) as i32,
                cooldown: Duration::from_secs(
                    parse_number(
                        get("SWITCHBOARD_BREAKER_COOLDOWN_SECS"),
                        "SWITCHBOARD_BREAKER_COOLDOWN_SECS",
                        1,
                        3600,
                    )?
                    .unwrap_or(30) as u64,
                ),
            },
            ceilings: crate::routing::PowerLevelCeilings::default(),
            database_secret_arn: get("DATABASE_SECRET_ARN"),
            provider_keys_secret_arn: get("SWITCHBOARD_PROVIDER_KEYS_SECRET_ARN"),
            admin_key_secret_arn,
            db_host: match get("SWITCHBOARD_DB_HOST") {
                Some(host) => Some(crate::keys::secrets::validate_db_host(&host).map_err(
                    |reason| ConfigError {
                        variable: "SWITCHBOARD_DB_HOST",
                        reason: reason.into(),
                    },
                )?),
                None => None,
            },
            db_tls: crate::db::tls::DbTlsSettings::from_lookup(get)?,
            data_key_cache_ttl: Duration::from_secs(
                parse_number(
                    get("SWITCHBOARD_DATA_KEY_CACHE_TTL_SECS"),
                    "SWITCHBOARD_DATA_KEY_CACHE_TTL_SECS",
                    0,
                    3600,
                )?
                .unwrap_or(300) as u64,
            ),
            secrets_cache_ttl: Duration::from_secs(
                parse_number(
                    get("SWITCHBOARD_SECRETS_CACHE_TTL_SECS"),
                    "SWITCHBOARD_SECRETS_CACHE_TTL_SECS",
                    0,
                    86_400,
                )?
                .unwrap_or(300) as u64,
            ),
        };
        if config.max_stream_duration >= config.hold_ttl {
            return Err(ConfigError {
                variable: "SWITCHBOARD_MAX_STREAM_SECS",
                reason: format!(
                    "{} s is not below the hold lifetime of {} s (SWITCHBOARD_HOLD_TTL_SECS): a stream must settle before its hold expires",
                    config.max_stream_duration.as_secs(),
                    config.hold_ttl.as_secs()
                ),
            });
        }
        Ok(config)
    }
}

/// The `SWITCHBOARD_HEALTH_*` variables; the degraded threshold must be below the probe
/// timeout (a probe that slow would have timed out as `down` first).
fn health_settings(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<crate::health::HealthSettings, ConfigError> {
    let defaults = crate::health::HealthSettings::default();
    let number =
        |name: &'static str, min: usize, max: usize| parse_number(get(name), name, min, max);
    let probe_timeout = number("SWITCHBOARD_HEALTH_PROBE_TIMEOUT_SECS", 1, 60)?
        .map_or(defaults.probe_timeout, |s| Duration::from_secs(s as u64));
    let degraded_latency = number("SWITCHBOARD_HEALTH_DEGRADED_LATENCY_MS", 1, 60_000)?
        .map_or(defaults.degraded_latency, |ms| {
            Duration::from_millis(ms as u64)
        });
    if degraded_latency >= probe_timeout {
        return Err(ConfigError {
            variable: "SWITCHBOARD_HEALTH_DEGRADED_LATENCY_MS",
            reason: format!(
                "{} ms is not below the probe timeout of {} s (SWITCHBOARD_HEALTH_PROBE_TIMEOUT_SECS)",
                degraded_latency.as_millis(),
                probe_timeout.as_secs()
            ),
        });
    }
    Ok(crate::health::HealthSettings {
        probe_timeout,
        degraded_latency,
        probe_concurrency: number("SWITCHBOARD_HEALTH_PROBE_CONCURRENCY", 1, 64)?
            .unwrap_or(defaults.probe_concurrency),
        strikes_to_disable: number("SWITCHBOARD_HEALTH_DOWN_STRIKES", 1, 10)?
            .map_or(defaults.strikes_to_disable, |n| n as i32),
        history_retention_days: number("SWITCHBOARD_HEALTH_HISTORY_DAYS", 1, 3650)?
            .map_or(defaults.history_retention_days, |n| n as i32),
        passive_window: number("SWITCHBOARD_HEALTH_PASSIVE_WINDOW_SECS", 0, 86_400)?
            .map_or(defaults.passive_window, |s| Duration::from_secs(s as u64)),
        passive_min_attempts: number("SWITCHBOARD_HEALTH_PASSIVE_MIN_ATTEMPTS", 1, 1_000_000)?
            .map_or(defaults.passive_min_attempts, |n| n as i64),
        passive_error_percent: number("SWITCHBOARD_HEALTH_PASSIVE_ERROR_PERCENT", 0, 99)?
            .map_or(defaults.passive_error_percent, |n| n as i64),
    })
}

fn parse_bool(value: Option<String>, variable: &'static str) -> Result<Option<bool>, ConfigError> {
    match value.as_deref().map(str::trim) {
        None => Ok(None),
        Some("1" | "true" | "yes" | "on") => Ok(Some(true)),
        Some("0" | "false" | "no" | "off") => Ok(Some(false)),
        Some(other) => Err(ConfigError {
            variable,
            reason: format!("`{other}` is not a boolean (use 1 or 0)"),
        }),
    }
}

fn parse_number(
    value: Option<String>,
    variable: &'static str,
    min: usize,
    max: usize,
) -> Result<Option<usize>, ConfigError> {
    let Some(value) = value else { return Ok(None) };
    match value.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(ConfigError {
            variable,
            reason: format!("`{value}` is not a whole number between {min} and {max}"),
        }),
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
        assert!(c.database_url.is_none());
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.master_key_file, PathBuf::from(".switchboard/master.key"));
        assert_eq!(c.max_body_bytes, 1024 * 1024);
        assert_eq!(c.health_check_interval, Duration::from_secs(300));
        assert!(!c.allow_private_upstreams);
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
            ("SWITCHBOARD_LEDGER_BATCHES", "0"),
            ("SWITCHBOARD_LEDGER_BATCHES", "17"),
            ("SWITCHBOARD_LEDGER_MAX_BATCH", "0"),
            ("SWITCHBOARD_LEDGER_MAX_BATCH", "lots"),
        ] {
            let e = config(&[(variable, bad)]).unwrap_err();
            assert_eq!(e.variable, variable);
        }
        let c = config(&[
            ("SWITCHBOARD_LEDGER_BATCHES", "1"),
            ("SWITCHBOARD_LEDGER_MAX_BATCH", "1"),
        ])
        .unwrap();
        assert_eq!((c.ledger_batches, c.ledger_max_batch), (1, 1));
        let c = config(&[]).unwrap();
        assert_eq!((c.ledger_batches, c.ledger_max_batch), (2, 64));
        assert_eq!(c.max_stream_duration, Duration::from_secs(600));
        let e = config(&[("SWITCHBOARD_MAX_STREAM_SECS", "900")]).unwrap_err();
        assert_eq!(e.variable, "SWITCHBOARD_MAX_STREAM_SECS");
        let c = config(&[
            ("SWITCHBOARD_MAX_STREAM_SECS", "1800"),
            ("SWITCHBOARD_HOLD_TTL_SECS", "3600"),
        ])
        .unwrap();
        assert_eq!(c.max_stream_duration, Duration::from_secs(1800));
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
        assert_eq!(h, crate::health::HealthSettings::default());
        assert_eq!(h.probe_timeout, Duration::from_secs(10));
        assert_eq!(h.degraded_latency, Duration::from_millis(2000));
        assert_eq!(h.probe_concurrency, 8);
        assert_eq!(h.strikes_to_disable, 2);
        assert_eq!(h.history_retention_days, 30);
        assert_eq!(h.passive_window, Duration::from_secs(300));
        assert_eq!(h.passive_min_attempts, 5);
        assert_eq!(h.passive_error_percent, 50);

        let h = config(&[
            ("SWITCHBOARD_HEALTH_PROBE_TIMEOUT_SECS", "5"),
            ("SWITCHBOARD_HEALTH_DEGRADED_LATENCY_MS", "750"),
            ("SWITCHBOARD_HEALTH_PROBE_CONCURRENCY", "2"),
            ("SWITCHBOARD_HEALTH_DOWN_STRIKES", "3"),
            ("SWITCHBOARD_HEALTH_HISTORY_DAYS", "7"),
            ("SWITCHBOARD_HEALTH_PASSIVE_WINDOW_SECS", "0"),
            ("SWITCHBOARD_HEALTH_PASSIVE_MIN_ATTEMPTS", "20"),
            ("SWITCHBOARD_HEALTH_PASSIVE_ERROR_PERCENT", "25"),
        ])
        .unwrap()
        .health;
        assert_eq!(h.probe_timeout, Duration::from_secs(5));
        assert_eq!(h.degraded_latency, Duration::from_millis(750));
        assert_eq!(h.probe_concurrency, 2);
        assert_eq!(h.strikes_to_disable, 3);
        assert_eq!(h.history_retention_days, 7);
        assert_eq!(h.passive_window, Duration::ZERO);
        assert_eq!(h.passive_min_attempts, 20);
        assert_eq!(h.passive_error_percent, 25);

        for (variable, value) in [
            ("SWITCHBOARD_HEALTH_PROBE_TIMEOUT_SECS", "0"),
            ("SWITCHBOARD_HEALTH_PROBE_TIMEOUT_SECS", "61"),
            ("SWITCHBOARD_HEALTH_DEGRADED_LATENCY_MS", "soon"),
            ("SWITCHBOARD_HEALTH_PROBE_CONCURRENCY", "0"),
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
        assert!(c.in_lambda);
        assert_eq!(c.db_pool_size, 2);
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
        assert!(c.admin_key_secret_arn.is_some());
        assert_eq!(
            c.db_host.as_deref(),
            Some("sb-db.proxy-abc.us-east-1.rds.amazonaws.com")
        );
        assert!(c.db_tls.force);
        assert_eq!(
            c.db_tls.ca_file,
            Some(PathBuf::from("/opt/switchboard/db-ca.pem"))
        );
        let c = config(&[]).unwrap();
        assert!(!c.db_tls.force && c.db_tls.ca_file.is_none() && c.db_host.is_none());

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
