//! The state every router shares: configuration and the database pool, built once per
//! process (per Lambda instance), never per request.

use std::sync::Arc;

use crate::config::Config;
use crate::db::{DbError, DbPool, connect_pool};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: DbPool,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("DATABASE_URL is not set (only `switchboard serve` starts an embedded database)")]
    NoDatabase,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl AppState {
    pub fn new(config: Config, pool: DbPool) -> Self {
        Self {
            config: Arc::new(config),
            pool,
        }
    }

    /// Builds the pool from `DATABASE_URL` (used by the Lambda functions).
    pub fn from_config(config: Config) -> Result<Self, StateError> {
        let url = config.database_url.clone().ok_or(StateError::NoDatabase)?;
        let pool = connect_pool(&url, config.db_pool_size)?;
        Ok(Self::new(config, pool))
    }
}
