//! Keys: BYOK provider keys under envelope encryption (security.md), the platform's own
//! provider keys and database credentials from Secrets Manager, and users' self-service
//! gateway keys.
//!
//! - [`envelope`]: the [`EnvelopeCipher`] trait, AES-256-GCM sealing, the data-key cache
//!   ([`KeyVault`]); [`kms`] and [`local`] implement the trait; [`master_key`] manages the
//!   local key file.
//! - [`byok`]: the `/v1/byok` operations and what the chat path needs
//!   ([`byok::byok_key_for_use`], [`byok::active_byok_provider_ids`],
//!   [`byok::mark_byok_key_invalid`]); [`format`] the key shape checks and hints;
//!   [`validate`] the live check against the provider.
//! - [`gateway`]: `/v1/api-keys`. [`secrets`]: [`SystemKeys`], the RDS secret and the
//!   admin key secret; [`admin_key`]: the bootstrap admin key from its configured source.
//! - [`rewrap`]: key rotation. [`store`]: the SQL of all of the above.

pub mod admin_key;
pub mod byok;
pub mod envelope;
pub mod error;
pub mod format;
pub mod gateway;
pub mod kms;
pub mod local;
pub mod master_key;
pub mod rewrap;
pub mod secrets;
pub mod store;
pub mod validate;

use std::sync::Arc;

use aws_config::{BehaviorVersion, SdkConfig};
use tokio::sync::OnceCell;

pub use envelope::{EncryptionContext, EnvelopeCipher, EnvelopeError, KeyVault};
pub use error::KeysError;
pub use secrets::SystemKeys;

use crate::config::Config;
use crate::secret::Secret;
use master_key::{MasterKeyError, MasterKeyFile, ensure_master_key_file};
use secrets::SecretsError;

/// The AWS SDK configuration, loaded from the environment at most once per process and
/// only when something needs AWS (KMS, Secrets Manager). `AWS_ENDPOINT_URL` points it
/// at an emulator.
#[derive(Default)]
pub struct AwsContext {
    config: OnceCell<SdkConfig>,
}

impl AwsContext {
    /// A context with a configuration built elsewhere (tests point it at an emulator).
    pub fn with_sdk_config(config: SdkConfig) -> Self {
        Self {
            config: OnceCell::new_with(Some(config)),
        }
    }

    pub async fn sdk_config(&self) -> &SdkConfig {
        self.config
            .get_or_init(|| aws_config::defaults(BehaviorVersion::latest()).load())
            .await
    }
}

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
        let cipher: Arc<dyn EnvelopeCipher> = match &config.kms_key_id {
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
            config.data_key_cache_ttl,
            envelope::DEFAULT_DATA_KEY_CACHE_ENTRIES,
        );
        let mut system_keys = SystemKeys::from_env_vars(std::env::vars());
        if let Some(arn) = &config.provider_keys_secret_arn {
            let client = aws_sdk_secretsmanager::Client::new(aws.sdk_config().await);
            system_keys = system_keys.with_secret(client, arn.clone(), config.secrets_cache_ttl);
        }
        Ok(Self {
            vault: Arc::new(vault),
            system_keys: Arc::new(system_keys),
        })
    }
}

/// The local master-key cipher, creating the key file on first start.
pub fn local_cipher(config: &Config) -> Result<local::LocalCipher, MasterKeyError> {
    let (state, key) = ensure_master_key_file(&config.master_key_file)?;
    let path = config.master_key_file.display();
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

/// The database URL: `DATABASE_URL`, else built from the RDS secret at
/// `DATABASE_SECRET_ARN`, else `None`.
pub async fn database_url(
    config: &Config,
    aws: &AwsContext,
) -> Result<Option<Secret>, SecretsError> {
    if let Some(url) = &config.database_url {
        return Ok(Some(url.clone()));
    }
    let Some(arn) = &config.database_secret_arn else {
        return Ok(None);
    };
    let client = aws_sdk_secretsmanager::Client::new(aws.sdk_config().await);
    let url =
        secrets::database_url_from_secret_via(&client, arn, config.db_host.as_deref()).await?;
    tracing::info!(secret = %arn, host_override = ?config.db_host, "database credentials read from Secrets Manager");
    Ok(Some(url))
}
