//! [`CatalogCache`]: the in-process catalog snapshot the hot path reads, so no request
//! queries the catalog tables.
//!
//! - A snapshot is served for `ttl` (default 5 s, `SWITCHBOARD_CATALOG_TTL_SECS`); the first
//!   caller after that reloads it.
//! - Single flight on expiry: while one caller reloads an expired snapshot, the others are
//!   served the previous one at once (they neither wait nor query).
//! - Read-your-writes after [`CatalogCache::invalidate`] (an admin write, a breaker or
//!   health change in this process): a caller that arrives after the invalidation never
//!   gets a snapshot loaded before it; it waits for a load that began after the
//!   invalidation (one load serves every caller waiting for it). A model created and used
//!   at once is never a 404 in the process that created it.
//! - A failed reload keeps the last good snapshot (logged as a warning) and is retried after
//!   another `ttl` (after an invalidation: by the next caller); only a load with no
//!   snapshot to fall back on can fail a request.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::queries::{CatalogError, load_catalog};
use super::snapshot::Catalog;

pub use crate::config::DEFAULT_CATALOG_TTL;

/// Where a [`CatalogCache`] loads snapshots from: the database pool in production; tests
/// substitute failing or counting sources.
pub trait CatalogSource: Sync {
    fn load_catalog(&self) -> impl Future<Output = Result<Catalog, CatalogError>> + Send;
}

impl CatalogSource for deadpool_postgres::Pool {
    async fn load_catalog(&self) -> Result<Catalog, CatalogError> {
        let client = self.get().await?;
        load_catalog(&**client).await
    }
}

struct CachedSnapshot {
    catalog: Arc<Catalog>,
    /// After this instant the next caller reloads.
    refresh_after: Instant,
    /// The invalidation generation when its load began: older than the current one means
    /// an invalidation may not be in it.
    generation: u64,
    /// The generation of the latest load that failed: until `refresh_after`, callers
    /// waiting for that invalidation are served this snapshot instead of loading again.
    failed_generation: Option<u64>,
}

pub struct CatalogCache {
    ttl: Duration,
    snapshot: RwLock<Option<CachedSnapshot>>,
    /// Held by the one caller that is loading.
    reloading: tokio::sync::Mutex<()>,
    /// Bumped by `invalidate`.
    generation: AtomicU64,
}

impl std::fmt::Debug for CatalogCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogCache")
            .field("ttl", &self.ttl)
            .field("loaded", &self.current().is_some())
            .finish()
    }
}

/// What a caller finds in the cache.
enum Found {
    Fresh(Arc<Catalog>),
    /// Older than the TTL, but holding every invalidation so far.
    Expired(Arc<Catalog>),
    /// Loaded before an invalidation (or nothing loaded yet).
    Invalidated(Option<Arc<Catalog>>),
}

impl CatalogCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            snapshot: RwLock::new(None),
            reloading: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The current snapshot, reloading it from `source` first when it is older than the
    /// TTL or an invalidation (see the module docs for single flight, read-your-writes and
    /// failures). Errors only when there is no snapshot to fall back on and loading fails.
    pub async fn get(&self, source: &impl CatalogSource) -> Result<Arc<Catalog>, CatalogError> {
        let wanted = self.generation.load(Ordering::Acquire);
        match self.find(wanted) {
            Found::Fresh(catalog) => Ok(catalog),
            Found::Expired(previous) => {
                // Another caller is reloading: serve the previous snapshot without waiting.
                let Ok(_reloading) = self.reloading.try_lock() else {
                    return Ok(previous);
                };
                if let Found::Fresh(catalog) = self.find(wanted) {
                    return Ok(catalog);
                }
                self.load(source, Some(previous)).await
            }
            Found::Invalidated(previous) => {
                let _reloading = self.reloading.lock().await;
                // Loaded (or failed, see `find`) by the caller we waited for.
                if let Found::Fresh(catalog) = self.find(wanted) {
                    return Ok(catalog);
                }
                self.load(source, previous).await
            }
        }
    }

    /// The snapshot in memory, however old, without loading anything.
    pub fn current(&self) -> Option<Arc<Catalog>> {
        let slot = self.snapshot.read().unwrap_or_else(PoisonError::into_inner);
        slot.as_ref().map(|cached| Arc::clone(&cached.catalog))
    }

    /// Makes every later [`get`](Self::get) in this process see a snapshot loaded after
    /// this call (after an admin write, a breaker or health change).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn find(&self, wanted: u64) -> Found {
        let slot = self.snapshot.read().unwrap_or_else(PoisonError::into_inner);
        let Some(cached) = slot.as_ref() else {
            return Found::Invalidated(None);
        };
        let catalog = Arc::clone(&cached.catalog);
        let unexpired = Instant::now() < cached.refresh_after;
        if cached.generation >= wanted {
            if unexpired {
                Found::Fresh(catalog)
            } else {
                Found::Expired(catalog)
            }
        } else if unexpired && cached.failed_generation.is_some_and(|g| g >= wanted) {
            // A load for this invalidation just failed: the last good snapshot until the
            // retry, rather than every caller trying the database again.
            Found::Fresh(catalog)
        } else {
            Found::Invalidated(Some(catalog))
        }
    }

    /// Loads a snapshot (the caller holds `reloading`); on failure falls back on
    /// `previous` when there is one.
    async fn load(
        &self,
        source: &impl CatalogSource,
        previous: Option<Arc<Catalog>>,
    ) -> Result<Arc<Catalog>, CatalogError> {
        let generation = self.generation.load(Ordering::Acquire);
        match (source.load_catalog().await, previous) {
            (Ok(catalog), _) => Ok(self.store(catalog, generation)),
            (Err(error), Some(previous)) => {
                tracing::warn!(
                    error = %error,
                    retry_in_secs = self.ttl.as_secs_f64(),
                    "catalog refresh failed; serving the last good snapshot"
                );
                self.postpone_refresh(generation);
                Ok(previous)
            }
            (Err(error), None) => Err(error),
        }
    }

    fn store(&self, catalog: Catalog, generation: u64) -> Arc<Catalog> {
        let catalog = Arc::new(catalog);
        let mut slot = self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = Some(CachedSnapshot {
            catalog: Arc::clone(&catalog),
            refresh_after: Instant::now() + self.ttl,
            generation,
            failed_generation: None,
        });
        catalog
    }

    fn postpone_refresh(&self, failed_generation: u64) {
        let mut slot = self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = slot.as_mut() {
            cached.refresh_after = Instant::now() + self.ttl;
            cached.failed_generation = Some(failed_generation);
        }
    }
}

impl Default for CatalogCache {
    fn default() -> Self {
        Self::new(DEFAULT_CATALOG_TTL)
    }
}
