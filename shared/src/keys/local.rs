//! The local [`EnvelopeCipher`]: data keys wrapped with AES-256-GCM under the 256-bit
//! master key file (development only, when `SWITCHBOARD_KMS_KEY_ID` is unset). The
//! encryption context is authenticated as AAD, exactly as KMS would check it.

use aws_lc_rs::aead::NONCE_LEN;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::envelope::{
    CipherFuture, DataKey, EncryptionContext, EnvelopeCipher, EnvelopeError, PlainDataKey,
    WrappedDataKey, aes_gcm_open, aes_gcm_seal,
};

/// Key ids of the local cipher start with this; KMS key ids never do.
pub const LOCAL_KEY_ID_PREFIX: &str = "local:";

/// Wraps data keys under a local master key.
pub struct LocalCipher {
    master: Zeroizing<[u8; 32]>,
    key_id: String,
}

impl LocalCipher {
    pub fn new(master: [u8; 32]) -> Self {
        let master = Zeroizing::new(master);
        // A fingerprint, not the key: tells which master key wrapped a row.
        let digest = Sha256::new()
            .chain_update(b"switchboard local master key fingerprint v1")
            .chain_update(master.as_slice())
            .finalize();
        let fingerprint: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            master,
            key_id: format!("{LOCAL_KEY_ID_PREFIX}{fingerprint}"),
        }
    }

    fn aad(context: &EncryptionContext) -> Vec<u8> {
        let mut aad = b"switchboard-local-wrap-v1:".to_vec();
        aad.extend_from_slice(&context.aad());
        aad
    }

    fn wrap(
        &self,
        plaintext: &[u8; 32],
        context: &EncryptionContext,
    ) -> Result<WrappedDataKey, EnvelopeError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| EnvelopeError::Service("no randomness".into()))?;
        let sealed = aes_gcm_seal(&self.master, nonce, &Self::aad(context), plaintext)?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        Ok(WrappedDataKey {
            key_id: self.key_id.clone(),
            blob,
        })
    }

    fn unwrap(
        &self,
        wrapped: &WrappedDataKey,
        context: &EncryptionContext,
    ) -> Result<PlainDataKey, EnvelopeError> {
        if wrapped.key_id != self.key_id {
            return Err(EnvelopeError::KeyUnavailable {
                code: "LocalKeyMismatch".into(),
                message: format!(
                    "the data key was wrapped under {}, this instance holds {}",
                    wrapped.key_id, self.key_id
                ),
            });
        }
        if wrapped.blob.len() != NONCE_LEN + 32 + 16 {
            return Err(EnvelopeError::Undecryptable);
        }
        let (nonce, sealed) = wrapped.blob.split_at(NONCE_LEN);
        let mut nonce_bytes = [0u8; NONCE_LEN];
        nonce_bytes.copy_from_slice(nonce);
        let opened = aes_gcm_open(&self.master, nonce_bytes, &Self::aad(context), sealed)?;
        let mut key = Zeroizing::new([0u8; 32]);
        if opened.len() != 32 {
            return Err(EnvelopeError::Undecryptable);
        }
        key.copy_from_slice(&opened);
        Ok(key)
    }
}

impl EnvelopeCipher for LocalCipher {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn generate_data_key<'a>(
        &'a self,
        context: &'a EncryptionContext,
    ) -> CipherFuture<'a, DataKey> {
        Box::pin(async move {
            let mut plaintext = Zeroizing::new([0u8; 32]);
            aws_lc_rs::rand::fill(plaintext.as_mut_slice())
                .map_err(|_| EnvelopeError::Service("no randomness".into()))?;
            let wrapped = self.wrap(&plaintext, context)?;
            Ok(DataKey { plaintext, wrapped })
        })
    }

    fn decrypt_data_key<'a>(
        &'a self,
        wrapped: &'a WrappedDataKey,
        context: &'a EncryptionContext,
    ) -> CipherFuture<'a, PlainDataKey> {
        Box::pin(async move { self.unwrap(wrapped, context) })
    }

    fn rewrap_data_key<'a>(
        &'a self,
        wrapped: &'a WrappedDataKey,
        context: &'a EncryptionContext,
        to_key_id: &'a str,
    ) -> CipherFuture<'a, WrappedDataKey> {
        Box::pin(async move {
            if to_key_id != self.key_id {
                return Err(EnvelopeError::Unsupported(
                    "the local master key can only re-wrap under itself; re-wrap to a KMS key with the KMS cipher",
                ));
            }
            let plaintext = self.unwrap(wrapped, context)?;
            self.wrap(&plaintext, context)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::keys::envelope::KeyVault;
    use crate::secret::Secret;

    #[tokio::test]
    async fn local_cipher_round_trip_through_the_vault() {
        let cipher = Arc::new(LocalCipher::new([42; 32]));
        assert!(cipher.key_id().starts_with(LOCAL_KEY_ID_PREFIX));
        let vault = KeyVault::new(cipher.clone(), Duration::from_secs(60), 16);
        let ctx = EncryptionContext::new("alice", 1);
        let key = Secret::new("sk-test-0123456789abcdef");
        let sealed = vault.seal(&key, &ctx).await.unwrap();
        assert_eq!(sealed.wrapped.key_id, cipher.key_id());
        assert!(
            !sealed.ciphertext.windows(8).any(|w| w == b"01234567"),
            "ciphertext must not contain the plaintext"
        );
        assert_eq!(vault.open(&sealed, &ctx).await.unwrap(), key);

        // Another user's or provider's context does not open it, cached or not.
        for other in [
            EncryptionContext::new("bob", 1),
            EncryptionContext::new("alice", 2),
        ] {
            assert!(matches!(
                vault.open(&sealed, &other).await,
                Err(EnvelopeError::Undecryptable)
            ));
        }
        // A different master key refuses cleanly.
        let other_vault = KeyVault::new(
            Arc::new(LocalCipher::new([43; 32])),
            Duration::from_secs(60),
            16,
        );
        assert!(matches!(
            other_vault.open(&sealed, &ctx).await,
            Err(EnvelopeError::KeyUnavailable { .. })
        ));
    }

    #[tokio::test]
    async fn rewrap_under_the_same_key_keeps_the_data_key() {
        let cipher = LocalCipher::new([9; 32]);
        let ctx = EncryptionContext::new("alice", 3);
        let data_key = cipher.generate_data_key(&ctx).await.unwrap();
        let rewrapped = cipher
            .rewrap_data_key(&data_key.wrapped, &ctx, cipher.key_id())
            .await
            .unwrap();
        assert_ne!(rewrapped.blob, data_key.wrapped.blob);
        let unwrapped = cipher.decrypt_data_key(&rewrapped, &ctx).await.unwrap();
        assert_eq!(*unwrapped, *data_key.plaintext);
        assert!(
            cipher
                .rewrap_data_key(&data_key.wrapped, &ctx, "arn:aws:kms:other")
                .await
                .is_err()
        );
    }
}
