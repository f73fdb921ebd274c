//! `switchboard rewrap-keys --to-kms-key <id>`: re-wraps every BYOK data key under another
//! KMS key (rotation), leaving the encrypted provider keys untouched. Rows sealed with the
//! local master key are moved under KMS too when the key file is present.

use switchboard_core::config::Config;
use switchboard_core::credentials::AwsContext;
use switchboard_core::db::{DbError, connect_pool_with};
use switchboard_core::keys::KeysError;
use switchboard_core::keys::kms::KmsCipher;
use switchboard_core::keys::local::LocalCipher;
use switchboard_core::keys::master_key::ensure_master_key_file;
use switchboard_core::keys::rewrap::{RewrapReport, rewrap_all};

use crate::serve::{Database, ServeError};

#[derive(Debug, thiserror::Error)]
pub enum RewrapError {
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error("{failed} key(s) could not be re-wrapped (see the log); the others were")]
    Incomplete { failed: u64 },
}

impl From<DbError> for RewrapError {
    fn from(error: DbError) -> Self {
        Self::Serve(ServeError::Db(error))
    }
}

/// Runs the re-wrap against the configured database (or the embedded cluster).
pub async fn rewrap_keys(config: Config, to_kms_key: &str) -> Result<RewrapReport, RewrapError> {
    let database = Database::resolve(&config).await?;
    let result = async {
        let aws = AwsContext::default();
        let kms = KmsCipher::from_sdk_config(aws.sdk_config().await, to_kms_key);
        // Only an existing key file: a new one could not unwrap anything.
        let local = if config.keys.master_key_file.exists() {
            let (_, key) =
                ensure_master_key_file(&config.keys.master_key_file).map_err(ServeError::from)?;
            Some(LocalCipher::new(key))
        } else {
            None
        };
        let pool = connect_pool_with(database.url(), 1, &config.database.tls)?;
        let client = pool.get().await.map_err(DbError::from)?;
        let report = rewrap_all(&**client, &kms, local.as_ref(), to_kms_key).await?;
        tracing::info!(
            to_kms_key,
            rewrapped = report.rewrapped,
            already_current = report.already_current,
            changed_meanwhile = report.changed_meanwhile,
            failed = report.failed,
            "re-wrap done"
        );
        if report.failed > 0 {
            return Err(RewrapError::Incomplete {
                failed: report.failed,
            });
        }
        Ok(report)
    }
    .await;
    database.stop()?;
    result
}
