//! Envelope encryption of BYOK provider keys (security.md): a per-key AES-256 data key
//! from an [`EnvelopeCipher`] (KMS, or the local master key in development), AES-256-GCM
//! over the provider key with the encryption context as AAD, and a bounded, TTL'd cache
//! of plaintext data keys so a warm instance does not call KMS per request.
//!
//! [`KeyVault`] is the code path above the cipher; it is identical for KMS and the local
//! master key. Plaintext data keys live in [`Zeroizing`] buffers and are wiped on drop.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::secret::Secret;

/// The envelope format written today: AES-256-GCM, 96-bit random nonce, 128-bit tag
/// appended to the ciphertext, AAD = [`EncryptionContext::aad`].
pub const ALG_AES_256_GCM_V1: i16 = 1;

/// Default lifetime and size of the plaintext data-key cache.
pub const DEFAULT_DATA_KEY_CACHE_TTL: Duration = Duration::from_secs(300);
pub const DEFAULT_DATA_KEY_CACHE_ENTRIES: usize = 1024;
/// How long a plaintext data key stays cached in process: a warm instance opens a user's
/// key with no KMS call for this long (KMS `Decrypt` costs 5–20 ms and is billed).
pub const DATA_KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// A plaintext AES-256 data key, wiped when dropped.
pub type PlainDataKey = Zeroizing<[u8; 32]>;

/// Boxed future returned by [`EnvelopeCipher`] methods (the trait is used as `dyn`).
pub type CipherFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, EnvelopeError>> + Send + 'a>>;

/// Binds a ciphertext to its owner: `{"user_id": .., "provider": ..}`. KMS checks it on
/// Decrypt and AES-GCM authenticates it as AAD, so a ciphertext copied to another user's
/// or provider's row does not decrypt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EncryptionContext {
    pub user_id: String,
    /// The provider's id (`llm_providers.id`) as a decimal string: stable even if an
    /// admin renames the slug.
    pub provider: String,
}

impl EncryptionContext {
    pub fn new(user_id: &str, provider_id: i32) -> Self {
        Self {
            user_id: user_id.to_owned(),
            provider: provider_id.to_string(),
        }
    }

    /// The context as KMS takes it.
    pub fn to_map(&self) -> HashMap<String, String> {
        HashMap::from([
            ("user_id".to_owned(), self.user_id.clone()),
            ("provider".to_owned(), self.provider.clone()),
        ])
    }

    /// Canonical serialization used as AAD: JSON with sorted keys and no whitespace,
    /// e.g. `{"provider":"1","user_id":"alice"}` (unambiguous thanks to JSON escaping).
    pub fn aad(&self) -> Vec<u8> {
        let sorted: BTreeMap<&str, &str> = [
            ("user_id", self.user_id.as_str()),
            ("provider", self.provider.as_str()),
        ]
        .into_iter()
        .collect();
        serde_json::to_vec(&sorted).unwrap_or_default()
    }
}

/// A data key wrapped (encrypted) under a master key, as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDataKey {
    /// The master key that wrapped it (a KMS key ARN, or `local:<fingerprint>`).
    pub key_id: String,
    pub blob: Vec<u8>,
}

impl fmt::Debug for WrappedDataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedDataKey")
            .field("key_id", &self.key_id)
            .field("blob_len", &self.blob.len())
            .finish()
    }
}

/// A fresh data key: its plaintext (to encrypt with, then drop) and its wrapped form.
pub struct DataKey {
    pub plaintext: PlainDataKey,
    pub wrapped: WrappedDataKey,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("plaintext", &"[redacted]")
            .field("wrapped", &self.wrapped)
            .finish()
    }
}

/// What wraps and unwraps data keys: KMS in AWS, the local master key in development.
pub trait EnvelopeCipher: Send + Sync {
    /// The master key new envelopes are wrapped under (as configured).
    fn key_id(&self) -> &str;

    /// A new AES-256 data key bound to `context`.
    fn generate_data_key<'a>(&'a self, context: &'a EncryptionContext)
    -> CipherFuture<'a, DataKey>;

    /// Unwraps a stored data key; fails unless `context` is the one it was made with.
    fn decrypt_data_key<'a>(
        &'a self,
        wrapped: &'a WrappedDataKey,
        context: &'a EncryptionContext,
    ) -> CipherFuture<'a, PlainDataKey>;

    /// Re-wraps a stored data key under `to_key_id` (key rotation); the data key itself,
    /// and so every ciphertext made with it, stays the same.
    fn rewrap_data_key<'a>(
        &'a self,
        wrapped: &'a WrappedDataKey,
        context: &'a EncryptionContext,
        to_key_id: &'a str,
    ) -> CipherFuture<'a, WrappedDataKey>;
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("BYOK encryption is not configured on this instance")]
    NotConfigured,
    /// The ciphertext does not belong to this key, context or row (tampering or a mix-up).
    #[error("the stored key cannot be decrypted (wrong key, context or corrupted data)")]
    Undecryptable,
    /// The master key refused: disabled, deleted, access denied, unknown.
    #[error("the master key is unavailable ({code}): {message}")]
    KeyUnavailable { code: String, message: String },
    /// KMS could not be reached or failed (network, throttling, 5xx).
    #[error("the key management service failed: {0}")]
    Service(String),
    #[error("unsupported envelope algorithm version {0}")]
    UnsupportedAlgorithm(i16),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
}

impl EnvelopeError {
    /// Failures of the stored data itself, as opposed to the key service being unavailable.
    pub fn is_data_error(&self) -> bool {
        matches!(
            self,
            Self::Undecryptable | Self::UnsupportedAlgorithm(_) | Self::Malformed(_)
        )
    }
}

/// A provider key as stored: the envelope columns of `user_api_keys`.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedKey {
    pub wrapped: WrappedDataKey,
    pub nonce: [u8; NONCE_LEN],
    /// AES-256-GCM ciphertext with its tag appended.
    pub ciphertext: Vec<u8>,
    pub alg_version: i16,
}

impl fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedKey")
            .field("wrapped", &self.wrapped)
            .field("ciphertext_len", &self.ciphertext.len())
            .field("alg_version", &self.alg_version)
            .finish()
    }
}

/// Seals and opens provider keys through an [`EnvelopeCipher`], caching plaintext data
/// keys (bounded, TTL'd) so repeated opens on a warm instance make no KMS call.
pub struct KeyVault {
    cipher: Arc<dyn EnvelopeCipher>,
    cache: DataKeyCache,
}

impl KeyVault {
    pub fn new(cipher: Arc<dyn EnvelopeCipher>, cache_ttl: Duration, cache_entries: usize) -> Self {
        Self {
            cipher,
            cache: DataKeyCache::new(cache_ttl, cache_entries),
        }
    }

    /// A vault whose every operation fails with [`EnvelopeError::NotConfigured`] (the
    /// default of `AppState::new`, until the real cipher is attached).
    pub fn unconfigured() -> Self {
        Self::new(Arc::new(UnconfiguredCipher), Duration::ZERO, 0)
    }

    pub fn cipher(&self) -> &Arc<dyn EnvelopeCipher> {
        &self.cipher
    }

    /// Encrypts `plaintext` under a fresh data key bound to `context`.
    pub async fn seal(
        &self,
        plaintext: &Secret,
        context: &EncryptionContext,
    ) -> Result<SealedKey, EnvelopeError> {
        let data_key = self.cipher.generate_data_key(context).await?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| EnvelopeError::Service("no randomness".into()))?;
        let ciphertext = aes_gcm_seal(
            &data_key.plaintext,
            nonce,
            &context.aad(),
            plaintext.expose().as_bytes(),
        )?;
        Ok(SealedKey {
            wrapped: data_key.wrapped,
            nonce,
            ciphertext,
            alg_version: ALG_AES_256_GCM_V1,
        })
    }

    /// Decrypts a stored key; fails cleanly when it was sealed for another context.
    pub async fn open(
        &self,
        sealed: &SealedKey,
        context: &EncryptionContext,
    ) -> Result<Secret, EnvelopeError> {
        if sealed.alg_version != ALG_AES_256_GCM_V1 {
            return Err(EnvelopeError::UnsupportedAlgorithm(sealed.alg_version));
        }
        let cache_key = DataKeyCache::key_for(&sealed.wrapped, context);
        let data_key = match self.cache.get(&cache_key) {
            Some(key) => key,
            None => {
                let key = self
                    .cipher
                    .decrypt_data_key(&sealed.wrapped, context)
                    .await?;
                self.cache.put(cache_key, key.clone());
                key
            }
        };
        let plaintext = aes_gcm_open(&data_key, sealed.nonce, &context.aad(), &sealed.ciphertext)?;
        let text =
            std::str::from_utf8(&plaintext).map_err(|_| EnvelopeError::Malformed("not UTF-8"))?;
        Ok(Secret::new(text))
    }

    /// Forgets every cached data key (tests, or after a rotation).
    pub fn clear_cache(&self) {
        self.cache.clear();
    }
}

/// AES-256-GCM encryption; returns ciphertext with the tag appended.
pub fn aes_gcm_seal(
    key: &[u8; 32],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let key = UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| EnvelopeError::Malformed("bad data key length"))?;
    let mut in_out = plaintext.to_vec();
    let sealed = key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut in_out,
    );
    match sealed {
        Ok(()) => Ok(in_out),
        Err(_) => {
            zeroize::Zeroize::zeroize(&mut in_out);
            Err(EnvelopeError::Malformed("encryption failed"))
        }
    }
}

/// AES-256-GCM decryption and tag check; the plaintext is wiped when dropped.
pub fn aes_gcm_open(
    key: &[u8; 32],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    let key = UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| EnvelopeError::Malformed("bad data key length"))?;
    let mut in_out = Zeroizing::new(ciphertext.to_vec());
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut in_out,
        )
        .map_err(|_| EnvelopeError::Undecryptable)?
        .len();
    in_out.truncate(len);
    Ok(in_out)
}

/// Bounded, TTL'd in-process cache of plaintext data keys, keyed by a hash of the wrapped
/// key, its master key id and the context. Evicted entries are zeroized on drop.
pub struct DataKeyCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], (Instant, PlainDataKey)>>,
}

impl DataKeyCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key_for(wrapped: &WrappedDataKey, context: &EncryptionContext) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for part in [wrapped.key_id.as_bytes(), &wrapped.blob, &context.aad()] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        hasher.finalize().into()
    }

    fn get(&self, key: &[u8; 32]) -> Option<PlainDataKey> {
        if self.capacity == 0 || self.ttl.is_zero() {
            return None;
        }
        let mut entries = self.entries.lock().ok()?;
        match entries.get(key) {
            Some((at, value)) if at.elapsed() < self.ttl => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(&self, key: [u8; 32], value: PlainDataKey) {
        if self.capacity == 0 || self.ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| *k)
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (Instant::now(), value));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

/// Stands in until a real cipher is attached; every operation says so.
struct UnconfiguredCipher;

impl EnvelopeCipher for UnconfiguredCipher {
    fn key_id(&self) -> &str {
        "unconfigured"
    }

    fn generate_data_key<'a>(&'a self, _: &'a EncryptionContext) -> CipherFuture<'a, DataKey> {
        Box::pin(async { Err(EnvelopeError::NotConfigured) })
    }

    fn decrypt_data_key<'a>(
        &'a self,
        _: &'a WrappedDataKey,
        _: &'a EncryptionContext,
    ) -> CipherFuture<'a, PlainDataKey> {
        Box::pin(async { Err(EnvelopeError::NotConfigured) })
    }

    fn rewrap_data_key<'a>(
        &'a self,
        _: &'a WrappedDataKey,
        _: &'a EncryptionContext,
        _: &'a str,
    ) -> CipherFuture<'a, WrappedDataKey> {
        Box::pin(async { Err(EnvelopeError::NotConfigured) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_is_canonical_and_distinguishes_contexts() {
        let a = EncryptionContext::new("alice", 1);
        assert_eq!(a.aad(), br#"{"provider":"1","user_id":"alice"}"#.to_vec());
        assert_ne!(a.aad(), EncryptionContext::new("alice", 2).aad());
        assert_ne!(a.aad(), EncryptionContext::new("bob", 1).aad());
        // Quoting keeps crafted ids from colliding.
        let tricky = EncryptionContext {
            user_id: "a\",\"provider\":\"1".into(),
            provider: "1".into(),
        };
        assert_ne!(tricky.aad(), a.aad());
    }

    #[test]
    fn aes_gcm_round_trip_and_tamper_detection() {
        let key = [7u8; 32];
        let nonce = [1u8; 12];
        let sealed = aes_gcm_seal(&key, nonce, b"ctx", b"sk-secret").unwrap();
        assert_ne!(&sealed[..9], b"sk-secret");
        let opened = aes_gcm_open(&key, nonce, b"ctx", &sealed).unwrap();
        assert_eq!(opened.as_slice(), b"sk-secret");
        assert!(matches!(
            aes_gcm_open(&key, nonce, b"other", &sealed),
            Err(EnvelopeError::Undecryptable)
        ));
        let mut flipped = sealed.clone();
        flipped[0] ^= 1;
        assert!(aes_gcm_open(&key, nonce, b"ctx", &flipped).is_err());
        assert!(aes_gcm_open(&[8u8; 32], nonce, b"ctx", &sealed).is_err());
    }

    #[test]
    fn cache_is_bounded_and_expires() {
        let cache = DataKeyCache::new(Duration::from_secs(60), 2);
        cache.put([1; 32], Zeroizing::new([1; 32]));
        cache.put([2; 32], Zeroizing::new([2; 32]));
        cache.put([3; 32], Zeroizing::new([3; 32]));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&[3; 32]).is_some());

        let expiring = DataKeyCache::new(Duration::from_millis(1), 10);
        expiring.put([1; 32], Zeroizing::new([1; 32]));
        std::thread::sleep(Duration::from_millis(5));
        assert!(expiring.get(&[1; 32]).is_none());

        let off = DataKeyCache::new(Duration::ZERO, 10);
        off.put([1; 32], Zeroizing::new([1; 32]));
        assert!(off.get(&[1; 32]).is_none());
    }

    #[test]
    fn debug_output_hides_key_material() {
        let key = DataKey {
            plaintext: Zeroizing::new([0xAB; 32]),
            wrapped: WrappedDataKey {
                key_id: "k".into(),
                blob: vec![0xCD; 8],
            },
        };
        let debug = format!("{key:?}");
        assert!(!debug.contains("171"), "{debug}");
        assert!(!debug.contains("205"), "{debug}");
    }
}
