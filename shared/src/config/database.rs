//! The database: where it is, how many connections, and TLS.

use std::path::PathBuf;

use super::ConfigError;
use super::env::Env;
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`. `None` → `switchboard serve` starts its embedded cluster, and in AWS
    /// the credentials come from `DATABASE_SECRET_ARN`.
    pub url: Option<Secret>,
    /// `SWITCHBOARD_DB_POOL_SIZE`: 2 in Lambda, 16 elsewhere.
    pub pool_size: usize,
    /// Secrets Manager secret with the RDS credentials (`DATABASE_SECRET_ARN`), used when
    /// `DATABASE_URL` is unset.
    pub secret_arn: Option<String>,
    /// `SWITCHBOARD_DB_HOST`: `host[:port]` replacing the host of the credentials read from
    /// `DATABASE_SECRET_ARN` (the RDS Proxy endpoint in AWS).
    pub host: Option<String>,
    /// TLS to the database (`SWITCHBOARD_DB_TLS`, `SWITCHBOARD_DB_CA_FILE`).
    pub tls: DbTlsSettings,
}

/// `SWITCHBOARD_DB_TLS` / `SWITCHBOARD_DB_CA_FILE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbTlsSettings {
    /// `SWITCHBOARD_DB_TLS=1`: TLS on every connection, whatever the URL says.
    pub force: bool,
    /// `SWITCHBOARD_DB_CA_FILE`: PEM file of the roots to trust (instead of the system's).
    pub ca_file: Option<PathBuf>,
}

impl DatabaseSettings {
    pub(super) fn from_env(env: &Env, in_lambda: bool) -> Result<Self, ConfigError> {
        Ok(Self {
            url: env.get("DATABASE_URL").map(Secret::new),
            pool_size: env
                .number("SWITCHBOARD_DB_POOL_SIZE", 1, 1000)?
                .unwrap_or(if in_lambda { 2 } else { 16 }),
            secret_arn: env.get("DATABASE_SECRET_ARN"),
            host: match env.get("SWITCHBOARD_DB_HOST") {
                Some(host) => Some(validate_db_host(&host).map_err(|reason| ConfigError {
                    variable: "SWITCHBOARD_DB_HOST",
                    reason: reason.into(),
                })?),
                None => None,
            },
            tls: DbTlsSettings::from_env(env)?,
        })
    }
}

impl DbTlsSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            force: env.flag("SWITCHBOARD_DB_TLS")?.unwrap_or(false),
            ca_file: env
                .get("SWITCHBOARD_DB_CA_FILE")
                .map(|v| PathBuf::from(v.trim())),
        })
    }
}

/// Checks `SWITCHBOARD_DB_HOST`: a host name or address with an optional port.
pub fn validate_db_host(value: &str) -> Result<String, &'static str> {
    let value = value.trim();
    let (host, port) = split_host_port(value);
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    if !host_ok {
        return Err("expected a host name or address, optionally with :port");
    }
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err("the port is not a port number");
    }
    Ok(value.to_owned())
}

/// `host:port` → (`host`, `port`); `[v6]:port` and bare hosts too.
pub fn split_host_port(value: &str) -> (&str, Option<&str>) {
    if let Some(rest) = value.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (value, None),
        };
    }
    match value.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (value, None),
    }
}
