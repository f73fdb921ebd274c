//! Database access: the connection pool, the migration runner, and the error type of the
//! SQL layer. SQL for each aggregate lives in its own module beside this one.

pub mod migrate;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::secret::Secret;

pub use deadpool_postgres::Pool as DbPool;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database URL is invalid: {0}")]
    InvalidUrl(String),
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
    /// The SQLSTATE code when the error came from Postgres (e.g. `23505` unique violation).
    pub fn sql_state(&self) -> Option<&str> {
        match self {
            DbError::Postgres(e) => e.code().map(|c| c.code()),
            DbError::Pool(deadpool_postgres::PoolError::Backend(e)) => e.code().map(|c| c.code()),
            _ => None,
        }
    }
}

/// Builds a pool; connections are opened lazily, so this succeeds without a reachable
/// database (a Lambda cold start does not wait on Postgres until the first query).
pub fn connect_pool(url: &Secret, max_size: usize) -> Result<Pool, DbError> {
    let mut pg: tokio_postgres::Config = url
        .expose()
        .parse()
        // The parser's message can quote the URL (and its password): keep only its kind.
        .map_err(|_| {
            DbError::InvalidUrl("expected postgres://user[:password]@host[:port]/database".into())
        })?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(Duration::from_secs(5));
    }
    if pg.get_application_name().is_none() {
        pg.application_name("switchboard");
    }
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|e| DbError::InvalidUrl(e.to_string()))
}
