//! Handles cached by their label values, so that a request's metrics cost a hash of a few
//! short strings and one read lock instead of building (and allocating) a metric key per
//! call: measured with `metrics-bench`, 3.0 µs per request before, see bench/README.md.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, PoisonError, RwLock};

use rustc_hash::{FxHashMap, FxHasher};

/// The label values and handles whose values hash alike.
type Bucket<H> = Vec<(Box<[Box<str>]>, Arc<H>)>;

/// Handles of type `H` by label values.
pub(crate) struct HandleCache<H> {
    map: RwLock<FxHashMap<u64, Bucket<H>>>,
}

impl<H> Default for HandleCache<H> {
    fn default() -> Self {
        HandleCache {
            map: RwLock::new(FxHashMap::default()),
        }
    }
}

fn hash(parts: &[&str]) -> u64 {
    let mut hasher = FxHasher::default();
    for part in parts {
        part.hash(&mut hasher);
    }
    hasher.finish()
}

fn same(stored: &[Box<str>], parts: &[&str]) -> bool {
    stored.len() == parts.len() && stored.iter().zip(parts).all(|(a, b)| &**a == *b)
}

impl<H> HandleCache<H> {
    /// The handles for `parts`, made by `make` the first time.
    pub fn get(&self, parts: &[&str], make: impl FnOnce() -> H) -> Arc<H> {
        let key = hash(parts);
        {
            let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(found) = map
                .get(&key)
                .and_then(|bucket| bucket.iter().find(|(stored, _)| same(stored, parts)))
            {
                return found.1.clone();
            }
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        let bucket = map.entry(key).or_default();
        if let Some(found) = bucket.iter().find(|(stored, _)| same(stored, parts)) {
            return found.1.clone();
        }
        let handles = Arc::new(make());
        bucket.push((
            parts.iter().map(|p| Box::<str>::from(*p)).collect(),
            handles.clone(),
        ));
        handles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_handle_per_label_set() {
        let cache: HandleCache<String> = HandleCache::default();
        let a = cache.get(&["x", "y"], || "a".into());
        let again = cache.get(&["x", "y"], || "not made".into());
        let b = cache.get(&["xy", ""], || "b".into());
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(*b, "b");
    }
}
