//! Database access: the connection pool (plain or verified TLS, [`tls`]), the migration
//! runner, and the error type of the SQL layer. SQL for each aggregate lives in its own
//! module beside this one.

pub mod group;
pub mod hot;
pub mod migrate;
pub mod tls;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::DbTlsSettings;
use crate::secret::Secret;

pub use deadpool_postgres::Pool as DbPool;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// No connection could be had (the server is down or refuses us).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database URL is invalid: {0}")]
    InvalidUrl(String),
    /// TLS to the database cannot be set up (CA file missing or unusable, no roots).
    #[error("database TLS: {0}")]
    Tls(String),
    /// A row that violates what the schema guarantees (a bug or a hand-edited database).
    #[error("unexpected data in the database: {0}")]
    Corrupt(String),
    #[error(
        "migration {version} ({name}) was changed after it was applied (checksum mismatch); add a new migration instead"
    )]
    MigrationChanged { version: i32, name: String },
    #[error(
        "the database has migration {version} which this build does not know; run a newer Switchboard"
    )]
    UnknownMigration { version: i32 },
}

impl DbError {
    /// The error of a pool that could not give a connection, once for each of several
    /// requests waiting on the same attempt (a batch): a timeout stays a timeout.
    pub fn from_pool_ref(error: &deadpool_postgres::PoolError) -> DbError {
        match error {
            deadpool_postgres::PoolError::Timeout(kind) => {
                DbError::Pool(deadpool_postgres::PoolError::Timeout(*kind))
            }
            other => DbError::Unavailable(other.to_string()),
        }
    }

    /// The database cannot be used right now — it refuses or drops connections, is
    /// starting up or shutting down, is out of connection slots, or does not answer in
    /// time — as opposed to a statement it refused (a bug or bad data). Callers answer 503
    /// with `Retry-After` for these, never 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Unavailable(_) => true,
            // Every pool error is about getting a connection: a timeout, a connect that
            // failed (refused, reset, "the database system is starting up"), a closed pool.
            DbError::Pool(error) => {
                !matches!(error, deadpool_postgres::PoolError::NoRuntimeSpecified)
            }
            DbError::Postgres(error) => postgres_unavailable(error),
            _ => false,
        }
    }

    /// The SQLSTATE code when the error came from Postgres (e.g. `23505` unique violation).
    pub fn sql_state(&self) -> Option<&str> {
        match self {
            DbError::Postgres(e) => e.code().map(|c| c.code()),
            DbError::Pool(deadpool_postgres::PoolError::Backend(e)) => e.code().map(|c| c.code()),
            _ => None,
        }
    }
}

/// Whether a statement's error is the server going away rather than the statement: the
/// connection closed or broke (an I/O error, no SQLSTATE), a connection exception (class
/// `08`), an operator or crash shutdown or a server still starting (`57P01`–`57P03`), no
/// connection slot or resources left (class `53`).
pub fn postgres_unavailable(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")
        }
        // No SQLSTATE: the connection failed underneath (I/O, TLS, a broken protocol).
        None => error.as_db_error().is_none(),
    }
}

/// Builds a pool; connections are opened lazily, so this succeeds without a reachable
/// database (a Lambda cold start does not wait on Postgres until the first query). TLS
/// only when the URL asks for it (`sslmode=require|verify-ca|verify-full`).
pub fn connect_pool(url: &Secret, max_size: usize) -> Result<Pool, DbError> {
    connect_pool_with(url, max_size, &DbTlsSettings::default())
}

/// [`connect_pool`] with the configured TLS settings (`SWITCHBOARD_DB_TLS`,
/// `SWITCHBOARD_DB_CA_FILE`). A CA file that cannot be used fails here, at start.
pub fn connect_pool_with(
    url: &Secret,
    max_size: usize,
    tls_settings: &DbTlsSettings,
) -> Result<Pool, DbError> {
    let plan = tls::plan(url.expose(), tls_settings)?;
    let mut pg = plan.config;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(Duration::from_secs(5));
    }
    if pg.get_application_name().is_none() {
        pg.application_name("switchboard");
    }
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match &plan.tls {
        None => Manager::from_config(pg, NoTls, manager_config),
        Some(roots) => Manager::from_config(pg, tls::connector(roots)?, manager_config),
    };
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|e| DbError::InvalidUrl(e.to_string()))
}
