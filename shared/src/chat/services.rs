//! [`ChatServices`]: what a run uses of the process — the narrow parts, built by the
//! composition root (`state.rs`) and handed to [`super::run`] / [`super::embed`].

use std::sync::Arc;

use super::settle::LedgerQueues;
use crate::auth::KeyCache;
use crate::catalog::CatalogCache;
use crate::config::Config;
use crate::credentials::SystemKeys;
use crate::db::DbPool;
use crate::keys::KeyVault;
use crate::providers::ProviderClient;

#[derive(Clone)]
pub struct ChatServices {
    pub config: Arc<Config>,
    pub pool: DbPool,
    /// The catalog snapshot routing reads (invalidated when a breaker changes).
    pub catalog: Arc<CatalogCache>,
    /// Opens the user's BYOK keys.
    pub vault: Arc<KeyVault>,
    /// The platform's own provider keys.
    pub system_keys: Arc<SystemKeys>,
    /// A refused BYOK key drops the user's cached keys.
    pub key_cache: Arc<KeyCache>,
    /// Calls upstream providers in their wire formats.
    pub providers: ProviderClient,
    /// The process's group-commit queues of admissions and captures.
    pub ledger: Arc<LedgerQueues>,
}
