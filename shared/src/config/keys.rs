//! Keys: the bootstrap admin key, where BYOK keys are sealed, where the system provider
//! keys are read, and how long a gateway-key lookup is cached.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigError;
use super::env::Env;
use crate::auth::format::validate_key_format;
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct KeySettings {
    /// Bootstrap admin key (`SWITCHBOARD_ADMIN_KEY`), checked for our key format.
    pub admin_key: Option<Secret>,
    /// Secrets Manager secret with the bootstrap admin key
    /// (`SWITCHBOARD_ADMIN_KEY_SECRET_ARN`), the alternative to `SWITCHBOARD_ADMIN_KEY` in
    /// AWS.
    pub admin_key_secret_arn: Option<String>,
    /// KMS key for BYOK envelopes (`SWITCHBOARD_KMS_KEY_ID`); `None` → the local master
    /// key file (development only; required in Lambda).
    pub kms_key_id: Option<String>,
    /// `SWITCHBOARD_MASTER_KEY_FILE`, default `<data dir>/master.key`.
    pub master_key_file: PathBuf,
    /// Secrets Manager secret `{slug: key}` with the system provider keys
    /// (`SWITCHBOARD_PROVIDER_KEYS_SECRET_ARN`).
    pub provider_keys_secret_arn: Option<String>,
    /// How long a gateway-key lookup is cached: the bound on how late another instance
    /// sees a revocation (`SWITCHBOARD_KEY_CACHE_TTL_SECS`, default 5).
    pub key_cache_ttl: Duration,
}

impl KeySettings {
    pub(super) fn from_env(
        env: &Env,
        data_dir: &Path,
        in_lambda: bool,
    ) -> Result<Self, ConfigError> {
        let admin_key = env.get("SWITCHBOARD_ADMIN_KEY").map(Secret::new);
        if let Some(key) = &admin_key {
            validate_key_format(key.expose()).map_err(|reason| ConfigError {
                variable: "SWITCHBOARD_ADMIN_KEY",
                reason: reason.to_string(),
            })?;
        }
        let admin_key_secret_arn = env.get("SWITCHBOARD_ADMIN_KEY_SECRET_ARN");
        if admin_key.is_some() && admin_key_secret_arn.is_some() {
            return Err(ConfigError {
                variable: "SWITCHBOARD_ADMIN_KEY_SECRET_ARN",
                reason:
                    "set either SWITCHBOARD_ADMIN_KEY or SWITCHBOARD_ADMIN_KEY_SECRET_ARN, not both"
                        .into(),
            });
        }
        let kms_key_id = env.get("SWITCHBOARD_KMS_KEY_ID");
        if in_lambda && kms_key_id.is_none() {
            return Err(ConfigError {
                variable: "SWITCHBOARD_KMS_KEY_ID",
                reason:
                    "required in AWS Lambda (the local master key file is for development only)"
                        .into(),
            });
        }
        Ok(Self {
            admin_key,
            admin_key_secret_arn,
            kms_key_id,
            master_key_file: env
                .get("SWITCHBOARD_MASTER_KEY_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| data_dir.join("master.key")),
            provider_keys_secret_arn: env.get("SWITCHBOARD_PROVIDER_KEYS_SECRET_ARN"),
            key_cache_ttl: env.seconds(
                "SWITCHBOARD_KEY_CACHE_TTL_SECS",
                0,
                300,
                Duration::from_secs(5),
            )?,
        })
    }
}
