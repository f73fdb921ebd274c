//! The bootstrap admin key from wherever it is configured: `SWITCHBOARD_ADMIN_KEY`, the
//! Secrets Manager secret at `SWITCHBOARD_ADMIN_KEY_SECRET_ARN` (AWS), or neither (a key
//! is generated when no admin key exists). Used by `switchboard serve` at start and by the
//! deploy-time migration step.
//!
//! An empty secret (the stack creates it as `{"admin_key": ""}`) is filled here: when no
//! active admin key exists, a key is generated, stored in the secret and then inserted, in
//! one transaction that commits only after the secret was written, so the database never
//! holds an admin key nobody can read.

use crate::auth::{self, BootstrapAdmin};
use crate::config::Config;
use crate::db::DbError;
use crate::secret::Secret;

use crate::credentials::{self as secrets, AwsContext, SecretsError};

/// What [`bootstrap_admin_key`] did. Only [`AdminKeyOutcome::Generated`] carries a key,
/// for the operator to see once.
#[derive(Debug)]
pub enum AdminKeyOutcome {
    /// The configured key (variable or secret) was inserted now.
    Inserted,
    /// The configured key was already stored.
    Present,
    /// Nothing configured and an active admin key exists.
    Existing,
    /// Nothing configured and no admin key existed: this one was generated and inserted.
    Generated(Secret),
    /// The secret was empty and no admin key existed: a generated key was stored in the
    /// secret and inserted.
    GeneratedIntoSecret,
    /// The secret was empty and an active admin key already exists: nothing changed.
    SecretEmptyAdminExists,
}

impl AdminKeyOutcome {
    /// A short name for logs and the migration step's answer (never the key).
    pub fn as_str(&self) -> &'static str {
        match self {
            AdminKeyOutcome::Inserted => "inserted",
            AdminKeyOutcome::Present => "present",
            AdminKeyOutcome::Existing => "existing",
            AdminKeyOutcome::Generated(_) => "generated",
            AdminKeyOutcome::GeneratedIntoSecret => "generated_into_secret",
            AdminKeyOutcome::SecretEmptyAdminExists => "secret_empty_admin_exists",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminKeyError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

impl From<tokio_postgres::Error> for AdminKeyError {
    fn from(error: tokio_postgres::Error) -> Self {
        AdminKeyError::Db(DbError::from(error))
    }
}

/// Makes sure the bootstrap admin key exists, from its configured source.
pub async fn bootstrap_admin_key(
    client: &mut tokio_postgres::Client,
    config: &Config,
    aws: &AwsContext,
) -> Result<AdminKeyOutcome, AdminKeyError> {
    let Some(arn) = &config.keys.admin_key_secret_arn else {
        return Ok(from_bootstrap(
            auth::ensure_bootstrap_admin(&*client, config.keys.admin_key.as_ref()).await?,
        ));
    };
    let secrets_client = aws_sdk_secretsmanager::Client::new(aws.sdk_config().await);
    if let Some(key) = secrets::read_admin_key(&secrets_client, arn).await? {
        return Ok(from_bootstrap(
            auth::ensure_bootstrap_admin(&*client, Some(&key)).await?,
        ));
    }
    let transaction = client.transaction().await?;
    let outcome = match auth::ensure_bootstrap_admin(&transaction, None).await? {
        BootstrapAdmin::Generated(key) => {
            secrets::store_admin_key(&secrets_client, arn, &key).await?;
            AdminKeyOutcome::GeneratedIntoSecret
        }
        _ => AdminKeyOutcome::SecretEmptyAdminExists,
    };
    transaction.commit().await?;
    Ok(outcome)
}

fn from_bootstrap(outcome: BootstrapAdmin) -> AdminKeyOutcome {
    match outcome {
        BootstrapAdmin::InsertedConfigured => AdminKeyOutcome::Inserted,
        BootstrapAdmin::ConfiguredPresent => AdminKeyOutcome::Present,
        BootstrapAdmin::Existing => AdminKeyOutcome::Existing,
        BootstrapAdmin::Generated(key) => AdminKeyOutcome::Generated(key),
    }
}
