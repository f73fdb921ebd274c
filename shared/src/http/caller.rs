//! Authentication at the edge: the `Caller` / `AdminCaller` extractors. A key is looked up by
//! its SHA-256 and the answer cached in process for a few seconds (so a warm instance does
//! not query per request, and a revocation takes effect within the TTL).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::auth::{AuthError, Caller, hash_api_key, lookup_key, presented_key};
use crate::state::AppState;

type CachedLookup = (Instant, Result<Caller, AuthError>);

/// Bounded, TTL'd cache of key lookups (hits and definite misses), keyed by key hash.
pub struct KeyCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], CachedLookup>>,
}

impl KeyCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, hash: &[u8; 32]) -> Option<Result<Caller, AuthError>> {
        let entries = self.entries.lock().ok()?;
        let (at, value) = entries.get(hash)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    fn put(&self, hash: [u8; 32], value: Result<Caller, AuthError>) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(hash, (Instant::now(), value));
    }

    /// Forgets the cached lookups of one user's keys, so that a change this process made
    /// to what the lookup loads (the user's active BYOK providers) shows on the next
    /// request. Other processes see it when their entries expire (the TTL).
    pub fn forget_user(&self, user_id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries
                .retain(|_, (_, value)| !matches!(value, Ok(caller) if caller.user_id == user_id));
        }
    }

    /// Forgets everything (after a revocation in this process).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        ApiError::Authentication(error.to_string())
    }
}

/// Authenticates the request's key (any role).
pub async fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let key = presented_key(&parts.headers).ok_or(AuthError::Missing)?;
    let hash = hash_api_key(key);
    if let Some(cached) = state.key_cache.get(&hash) {
        return Ok(cached?);
    }
    let client = state.pool.get().await.map_err(crate::db::DbError::from)?;
    let found = lookup_key(&**client, &hash).await?;
    state.key_cache.put(hash, found.clone());
    Ok(found?)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).await
    }
}

/// A caller whose key has the admin role (401 without a valid key, 403 with a user key).
pub struct AdminCaller(pub Caller);

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = authenticate(parts, state).await?;
        if !caller.is_admin() {
            return Err(ApiError::Permission("this route needs an admin key".into()));
        }
        Ok(AdminCaller(caller))
    }
}
