//! Keys: BYOK provider keys under envelope encryption (security.md). The platform's own
//! provider keys and database credentials are [`crate::credentials`]; gateway keys are
//! [`crate::auth`].
//!
//! - [`envelope`]: the [`EnvelopeCipher`] trait, AES-256-GCM sealing, the data-key cache
//!   ([`KeyVault`]); [`kms`] and [`local`] implement the trait; [`master_key`] manages the
//!   local key file.
//! - [`byok`]: the `/v1/byok` operations and what the chat path needs
//!   ([`byok::byok_key_for_use`], [`byok::active_byok_provider_ids`],
//!   [`byok::mark_byok_key_invalid`]); [`format`] the key shape checks and hints;
//!   [`validate`] the live check against the provider.
//! - [`KeyServices`]: the vault and the system keys, built once at start.
//! - [`rewrap`]: key rotation. [`store`]: the SQL of all of the above.

pub mod byok;
pub mod envelope;
pub mod error;
pub mod format;
pub mod kms;
pub mod local;
pub mod master_key;
pub mod rewrap;
pub mod store;
pub mod validate;

use std::sync::Arc;

pub use envelope::{EncryptionContext, EnvelopeCipher, EnvelopeError, KeyVault};
pub use error::KeysError;

use crate::config::Config;
use crate::credentials::{self, AwsContext, SecretsError, SystemKeys};
use master_key::{MasterKeyError, MasterKeyFile, ensure_master_key_file};

#[derive(Debug, thiserror::Error)]
pub enum KeySetupError {
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

/// What the keys layer needs at run time, built once at start.
pub struct KeyServices {
    pub vault: Arc<KeyVault>,
    pub system_keys: Arc<SystemKeys>,
}

impl KeyServices {
    /// KMS when `SWITCHBOARD_KMS_KEY_ID` is set, else the local master key file (created
    /// 0600 on first start; development only). System keys from
    /// `SWITCHBOARD_PROVIDER_KEY_*` and, when set, `SWITCHBOARD_PROVIDER_KEYS_SECRET_ARN`.
    pub async fn from_config(config: &Config, aws: &AwsContext) -> Result<Self, KeySetupError> {
        let cipher: Arc<dyn EnvelopeCipher> = match &config.keys.kms_key_id {
            Some(key_id) => {
                tracing::info!(kms_key_id = %key_id, "BYOK keys are encrypted with AWS KMS");
                Arc::new(kms::KmsCipher::from_sdk_config(
                    aws.sdk_config().await,
                    key_id.clone(),
                ))
            }
            None => Arc::new(local_cipher(config)?),
        };
        let vault = KeyVault::new(
            cipher,
            envelope::DATA_KEY_CACHE_TTL,
            envelope::DEFAULT_DATA_KEY_CACHE_ENTRIES,
        );
        let mut system_keys = SystemKeys::from_env_vars(std::env::vars());
        if let Some(arn) = &config.keys.provider_keys_secret_arn {
            let client = aws_sdk_secretsmanager::Client::new(aws.sdk_config().await);
            system_keys =
                system_keys.with_secret(client, arn.clone(), credentials::DEFAULT_SECRETS_TTL);
        }
        Ok(Self {
            vault: Arc::new(vault),
            system_keys: Arc::new(system_keys),
        })
    }
}

/// The local master-key cipher, creating the key file on first start.
pub fn local_cipher(config: &Config) -> Result<local::LocalCipher, MasterKeyError> {
    let (state, key) = ensure_master_key_file(&config.keys.master_key_file)?;
    let path = config.keys.master_key_file.display();
    match state {
        MasterKeyFile::Created => {
            tracing::warn!(%path, "created a local master key file for BYOK encryption (development only; set SWITCHBOARD_KMS_KEY_ID in production)")
        }
        MasterKeyFile::Existing => {
            tracing::warn!(%path, "using the local master key file for BYOK encryption (development only)")
        }
    }
    Ok(local::LocalCipher::new(key))
}
