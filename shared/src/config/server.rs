//! The process: where `serve` listens, where it keeps its files, what a request may be.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::ConfigError;
use super::env::Env;

/// Default body limit (api.md: 1 MiB; Lambda itself caps at 6 MB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `SWITCHBOARD_LISTEN` (`serve` only), default 127.0.0.1:8080.
    pub listen: SocketAddr,
    /// Where `switchboard serve` keeps its embedded cluster and local key
    /// (`SWITCHBOARD_DATA_DIR`, default `.switchboard`).
    pub data_dir: PathBuf,
    /// Directory holding `initdb` / `pg_ctl`, when not on PATH or /usr/lib/postgresql
    /// (`SWITCHBOARD_PG_BIN_DIR`).
    pub pg_bin_dir: Option<PathBuf>,
    /// Let providers and probes reach private addresses (`SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS`;
    /// tests and local fakes only).
    pub allow_private_upstreams: bool,
    /// `SWITCHBOARD_MAX_BODY_BYTES`, default 1 MiB.
    pub max_body_bytes: usize,
    /// Running inside AWS Lambda (`AWS_LAMBDA_RUNTIME_API` is set).
    pub in_lambda: bool,
    /// `SWITCHBOARD_SPOOL_DIR`: where `serve` keeps captures that could not commit until
    /// the database takes them (default `<data dir>/spool`).
    pub spool_dir: Option<PathBuf>,
    /// `SWITCHBOARD_METRICS_TOKEN`: a bearer token that may read `GET /metrics` (a
    /// scraper's credential; the admin key works too).
    pub metrics_token: Option<crate::secret::Secret>,
}

impl ServerSettings {
    /// The pending-charge spool's directory (`serve`).
    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("spool"))
    }

    pub(super) fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let listen = match env.get("SWITCHBOARD_LISTEN") {
            Some(v) => v.parse().map_err(|_| ConfigError {
                variable: "SWITCHBOARD_LISTEN",
                reason: format!("`{v}` is not an address like 127.0.0.1:8080"),
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        Ok(Self {
            listen,
            data_dir: PathBuf::from(
                env.get("SWITCHBOARD_DATA_DIR")
                    .unwrap_or_else(|| ".switchboard".into()),
            ),
            pg_bin_dir: env.get("SWITCHBOARD_PG_BIN_DIR").map(PathBuf::from),
            spool_dir: env.get("SWITCHBOARD_SPOOL_DIR").map(PathBuf::from),
            allow_private_upstreams: env
                .flag("SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS")?
                .unwrap_or(false),
            max_body_bytes: env
                .number("SWITCHBOARD_MAX_BODY_BYTES", 1024, 6 * 1024 * 1024)?
                .unwrap_or(DEFAULT_MAX_BODY_BYTES),
            in_lambda: env.get("AWS_LAMBDA_RUNTIME_API").is_some(),
            metrics_token: match env.get("SWITCHBOARD_METRICS_TOKEN") {
                Some(token) if token.trim().len() < 16 => {
                    return Err(ConfigError {
                        variable: "SWITCHBOARD_METRICS_TOKEN",
                        reason: "must be at least 16 characters".into(),
                    });
                }
                Some(token) => Some(crate::secret::Secret::new(token.trim())),
                None => None,
            },
        })
    }
}
