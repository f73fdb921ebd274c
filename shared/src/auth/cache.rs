//! The in-process cache of gateway-key lookups (hits and definite misses), keyed by the
//! key's SHA-256, for `SWITCHBOARD_KEY_CACHE_TTL_SECS`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{AuthError, Caller};

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

    pub fn get(&self, hash: &[u8; 32]) -> Option<Result<Caller, AuthError>> {
        let entries = self.entries.lock().ok()?;
        let (at, value) = entries.get(hash)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    pub fn put(&self, hash: [u8; 32], value: Result<Caller, AuthError>) {
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
