//! The AWS KMS [`EnvelopeCipher`]: `GenerateDataKey` (AES-256) and `Decrypt` with the
//! encryption context, `ReEncrypt` for key rotation, and `Encrypt` to move data keys
//! wrapped by the local master key under KMS. Every call to KMS is counted, so tests can
//! prove that a warm cache makes none.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use zeroize::{Zeroize, Zeroizing};

use super::envelope::{
    CipherFuture, DataKey, EncryptionContext, EnvelopeCipher, EnvelopeError, PlainDataKey,
    WrappedDataKey,
};

/// Wraps data keys under a KMS key.
pub struct KmsCipher {
    client: aws_sdk_kms::Client,
    key_id: String,
    calls: AtomicU64,
}

impl KmsCipher {
    /// `key_id`: a key id, key ARN, alias name (`alias/...`) or alias ARN.
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
            calls: AtomicU64::new(0),
        }
    }

    /// A cipher with a client built from the process's AWS configuration.
    pub fn from_sdk_config(config: &aws_config::SdkConfig, key_id: impl Into<String>) -> Self {
        Self::new(aws_sdk_kms::Client::new(config), key_id)
    }

    /// How many KMS requests this cipher has made.
    pub fn kms_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Wraps an existing plaintext data key under `to_key_id` (moving rows sealed with
    /// the local master key under KMS).
    pub async fn encrypt_data_key(
        &self,
        plaintext: &PlainDataKey,
        context: &EncryptionContext,
        to_key_id: &str,
    ) -> Result<WrappedDataKey, EnvelopeError> {
        self.count();
        let output = self
            .client
            .encrypt()
            .key_id(to_key_id)
            .plaintext(Blob::new(plaintext.to_vec()))
            .set_encryption_context(Some(context.to_map()))
            .send()
            .await
            .map_err(classify)?;
        let blob = output
            .ciphertext_blob
            .ok_or(EnvelopeError::Malformed(
                "KMS Encrypt returned no ciphertext",
            ))?
            .into_inner();
        Ok(WrappedDataKey {
            key_id: output.key_id.unwrap_or_else(|| to_key_id.to_owned()),
            blob,
        })
    }
}

/// Sorts KMS failures: the data itself (wrong key/context) vs the key or service.
fn classify<E, R>(error: SdkError<E, R>) -> EnvelopeError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = error.code().map(str::to_owned);
    // Service errors carry a code and maybe a message; transport errors only a chain.
    let message = match (&code, error.message()) {
        (_, Some(message)) => message.to_owned(),
        (Some(_), None) => String::new(),
        (None, None) => DisplayErrorContext(&error).to_string(),
    };
    match code.as_deref() {
        Some("InvalidCiphertextException" | "IncorrectKeyException") => {
            EnvelopeError::Undecryptable
        }
        Some(
            code @ ("DisabledException"
            | "NotFoundException"
            | "KMSInvalidStateException"
            | "KeyUnavailableException"
            | "AccessDeniedException"
            | "InvalidKeyUsageException"
            | "InvalidArnException"
            | "UnrecognizedClientException"),
        ) => EnvelopeError::KeyUnavailable {
            code: code.to_owned(),
            message,
        },
        Some(code) => EnvelopeError::Service(format!("{code}: {message}")),
        None => EnvelopeError::Service(message),
    }
}

fn into_data_key(mut bytes: Vec<u8>) -> Result<PlainDataKey, EnvelopeError> {
    let result = if bytes.len() == 32 {
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&bytes);
        Ok(key)
    } else {
        Err(EnvelopeError::Malformed(
            "KMS returned a data key that is not 256 bits",
        ))
    };
    bytes.zeroize();
    result
}

impl EnvelopeCipher for KmsCipher {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn generate_data_key<'a>(
        &'a self,
        context: &'a EncryptionContext,
    ) -> CipherFuture<'a, DataKey> {
        Box::pin(async move {
            self.count();
            let mut output = self
                .client
                .generate_data_key()
                .key_id(&self.key_id)
                .key_spec(DataKeySpec::Aes256)
                .set_encryption_context(Some(context.to_map()))
                .send()
                .await
                .map_err(classify)?;
            let plaintext = output
                .plaintext
                .take()
                .ok_or(EnvelopeError::Malformed(
                    "KMS GenerateDataKey returned no plaintext",
                ))?
                .into_inner();
            let plaintext = into_data_key(plaintext)?;
            let wrapped = WrappedDataKey {
                // The key's ARN as KMS reports it (stable even if an alias moves).
                key_id: output.key_id.take().unwrap_or_else(|| self.key_id.clone()),
                blob: output
                    .ciphertext_blob
                    .take()
                    .ok_or(EnvelopeError::Malformed(
                        "KMS GenerateDataKey returned no ciphertext",
                    ))?
                    .into_inner(),
            };
            Ok(DataKey { plaintext, wrapped })
        })
    }

    fn decrypt_data_key<'a>(
        &'a self,
        wrapped: &'a WrappedDataKey,
        context: &'a EncryptionContext,
    ) -> CipherFuture<'a, PlainDataKey> {
        Box::pin(async move {
            self.count();
            let output = self
                .client
                .decrypt()
                .ciphertext_blob(Blob::new(wrapped.blob.clone()))
                // Pinning the key makes KMS refuse a blob made under any other key.
                .key_id(&wrapped.key_id)
                .set_encryption_context(Some(context.to_map()))
                .send()
                .await
                .map_err(classify)?;
            let plaintext = output
                .plaintext
                .ok_or(EnvelopeError::Malformed(
                    "KMS Decrypt returned no plaintext",
                ))?
                .into_inner();
            into_data_key(plaintext)
        })
    }

    fn rewrap_data_key<'a>(
        &'a self,
        wrapped: &'a WrappedDataKey,
        context: &'a EncryptionContext,
        to_key_id: &'a str,
    ) -> CipherFuture<'a, WrappedDataKey> {
        Box::pin(async move {
            self.count();
            // ReEncrypt happens inside KMS: the plaintext data key never leaves it.
            let output = self
                .client
                .re_encrypt()
                .ciphertext_blob(Blob::new(wrapped.blob.clone()))
                .source_key_id(&wrapped.key_id)
                .set_source_encryption_context(Some(context.to_map()))
                .destination_key_id(to_key_id)
                .set_destination_encryption_context(Some(context.to_map()))
                .send()
                .await
                .map_err(classify)?;
            Ok(WrappedDataKey {
                key_id: output.key_id.unwrap_or_else(|| to_key_id.to_owned()),
                blob: output
                    .ciphertext_blob
                    .ok_or(EnvelopeError::Malformed(
                        "KMS ReEncrypt returned no ciphertext",
                    ))?
                    .into_inner(),
            })
        })
    }
}
