//! [`CatalogCache`]: the in-process catalog snapshot the hot path reads, so no request
//! queries the catalog tables.
//!
//! - A snapshot is served for `ttl` (default 5 s, `SWITCHBOARD_CATALOG_TTL_SECS`); the first
//!   caller after that reloads it.
//! - Single flight: while one caller reloads, the others are served the previous snapshot
//!   at once (they neither wait nor query). Only when there is no snapshot yet do callers
//!   wait, for the one load in flight.
//! - A failed reload keeps the last good snapshot (logged as a warning) and is retried after
//!   another `ttl`; only the very first load can fail a request.
//! - [`CatalogCache::invalidate`] makes the next call reload (admin writes in this process).
//!   A reload that started before an invalidation is stored but counts as stale, so a write
//!   is never hidden for a whole `ttl`.

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
}

pub struct CatalogCache {
    ttl: Duration,
    snapshot: RwLock<Option<CachedSnapshot>>,
    /// Held by the one caller that is reloading.
    reloading: tokio::sync::Mutex<()>,
    /// Bumped by `invalidate`; a reload stores its result as fresh only if this did not
    /// change while it ran.
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
    /// TTL (see the module docs for single flight and failures). Errors only when no
    /// snapshot was ever loaded and loading fails.
    pub async fn get(&self, source: &impl CatalogSource) -> Result<Arc<Catalog>, CatalogError> {
        let previous = match self.read() {
            Some((catalog, true)) => return Ok(catalog),
            Some((catalog, false)) => Some(catalog),
            None => None,
        };
        match previous {
            Some(previous) => {
                // Another caller is reloading: serve the previous snapshot without waiting.
                let Ok(_reloading) = self.reloading.try_lock() else {
                    return Ok(previous);
                };
                if let Some((catalog, true)) = self.read() {
                    return Ok(catalog);
                }
                let generation = self.generation.load(Ordering::Acquire);
                match source.load_catalog().await {
                    Ok(catalog) => Ok(self.store(catalog, generation)),
                    Err(error) => {
                        tracing::warn!(
                            error = %error,
                            retry_in_secs = self.ttl.as_secs_f64(),
                            "catalog refresh failed; serving the last good snapshot"
                        );
                        self.postpone_refresh();
                        Ok(previous)
                    }
                }
            }
            None => {
                let _reloading = self.reloading.lock().await;
                // Loaded by the caller we waited for.
                if let Some((catalog, _)) = self.read() {
                    return Ok(catalog);
                }
                let generation = self.generation.load(Ordering::Acquire);
                let catalog = source.load_catalog().await?;
                Ok(self.store(catalog, generation))
            }
        }
    }

    /// The snapshot in memory, however old, without loading anything.
    pub fn current(&self) -> Option<Arc<Catalog>> {
        self.read().map(|(catalog, _)| catalog)
    }

    /// Makes the next [`get`](Self::get) reload (after an admin write in this process).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut slot = self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = slot.as_mut() {
            cached.refresh_after = Instant::now();
        }
    }

    /// The snapshot and whether it is still fresh.
    fn read(&self) -> Option<(Arc<Catalog>, bool)> {
        let slot = self.snapshot.read().unwrap_or_else(PoisonError::into_inner);
        slot.as_ref().map(|cached| {
            (
                Arc::clone(&cached.catalog),
                Instant::now() < cached.refresh_after,
            )
        })
    }

    fn store(&self, catalog: Catalog, generation_at_start: u64) -> Arc<Catalog> {
        let catalog = Arc::new(catalog);
        let now = Instant::now();
        let refresh_after = if self.generation.load(Ordering::Acquire) == generation_at_start {
            now + self.ttl
        } else {
            // Invalidated while loading: the load may predate the write.
            now
        };
        let mut slot = self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = Some(CachedSnapshot {
            catalog: Arc::clone(&catalog),
            refresh_after,
        });
        catalog
    }

    fn postpone_refresh(&self) {
        let mut slot = self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = slot.as_mut() {
            cached.refresh_after = Instant::now() + self.ttl;
        }
    }
}

impl Default for CatalogCache {
    fn default() -> Self {
        Self::new(DEFAULT_CATALOG_TTL)
    }
}
