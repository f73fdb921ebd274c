//! The state every router shares: configuration and the database pool, built once per
//! process (per Lambda instance), never per request.

use std::sync::Arc;

use crate::config::Config;
use crate::db::{DbError, DbPool, connect_pool};
use crate::http::KeyCache;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: DbPool,
    pub key_cache: Arc<KeyCache>,
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
        let key_cache = Arc::new(KeyCache::new(config.key_cache_ttl, 10_000));
        Self {
            config: Arc::new(config),
            pool,
            key_cache,
        }
    }

    /// Builds the pool from `DATABASE_URL` (used by the Lambda functions).
    pub fn from_config(config: Config) -> Result<Self, StateError> {
        let url = config.database_url.clone().ok_or(StateError::NoDatabase)?;
        let pool = connect_pool(&url, config.db_pool_size)?;
        Ok(Self::new(config, pool))
    }
}
