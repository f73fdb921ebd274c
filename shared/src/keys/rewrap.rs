//! Key rotation: re-wraps every stored data key under another KMS key
//! (`switchboard rewrap-keys --to-kms-key <id>`). Only `kms_key_id` and
//! `wrapped_data_key` change; the encrypted provider keys, their nonces and the data keys
//! themselves stay as they are. KMS rows go through `ReEncrypt` (the data key never
//! leaves KMS); rows sealed with the local master key are unwrapped locally and wrapped
//! with `Encrypt`, which moves a development database onto KMS.

use tokio_postgres::GenericClient;

use super::envelope::{EncryptionContext, EnvelopeCipher, EnvelopeError, WrappedDataKey};
use super::error::KeysError;
use super::kms::KmsCipher;
use super::local::{LOCAL_KEY_ID_PREFIX, LocalCipher};
use super::store::{self, RewrapCandidate};
use crate::audit::{self, AuditEntry};

const PAGE: i64 = 200;

/// What a re-wrap run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RewrapReport {
    /// Rows now wrapped under the target key.
    pub rewrapped: u64,
    /// Rows already under the target key.
    pub already_current: u64,
    /// Rows replaced or deleted by their owner while the run was going (left alone).
    pub changed_meanwhile: u64,
    /// Rows that could not be re-wrapped (logged by id; the run goes on).
    pub failed: u64,
}

/// Re-wraps every row's data key under `to_key_id`. `local` unwraps rows sealed with the
/// local master key (without it, such rows count as failed).
pub async fn rewrap_all(
    client: &impl GenericClient,
    kms: &KmsCipher,
    local: Option<&LocalCipher>,
    to_key_id: &str,
) -> Result<RewrapReport, KeysError> {
    let mut report = RewrapReport::default();
    let mut after_id = 0;
    loop {
        let page = store::envelopes_after(client, after_id, PAGE).await?;
        let Some(last) = page.last() else { break };
        after_id = last.id;
        for row in &page {
            if row.wrapped.key_id == to_key_id {
                report.already_current += 1;
                continue;
            }
            match rewrap_one(kms, local, row, to_key_id).await {
                Ok(new) => {
                    if store::replace_wrapped_key(client, row.id, &row.wrapped, &new).await? {
                        report.rewrapped += 1;
                    } else {
                        report.changed_meanwhile += 1;
                    }
                }
                Err(error) => {
                    tracing::error!(row_id = row.id, from_key = %row.wrapped.key_id, %error, "cannot re-wrap a BYOK data key");
                    report.failed += 1;
                }
            }
        }
    }
    audit::record(
        client,
        &AuditEntry {
            actor_key_id: None,
            actor: "system:rewrap-keys",
            action: "byok.rewrap",
            entity_type: "user_api_key",
            entity_id: None,
            before: None,
            after: Some(serde_json::json!({
                "to_kms_key_id": to_key_id,
                "rewrapped": report.rewrapped,
                "already_current": report.already_current,
                "changed_meanwhile": report.changed_meanwhile,
                "failed": report.failed,
            })),
            request_id: None,
        },
    )
    .await?;
    Ok(report)
}

async fn rewrap_one(
    kms: &KmsCipher,
    local: Option<&LocalCipher>,
    row: &RewrapCandidate,
    to_key_id: &str,
) -> Result<WrappedDataKey, EnvelopeError> {
    let context = EncryptionContext::new(&row.user_id, row.provider_id);
    if row.wrapped.key_id.starts_with(LOCAL_KEY_ID_PREFIX) {
        let local = local.ok_or(EnvelopeError::Unsupported(
            "this row is sealed with a local master key; pass its file (SWITCHBOARD_MASTER_KEY_FILE)",
        ))?;
        let plaintext = local.decrypt_data_key(&row.wrapped, &context).await?;
        kms.encrypt_data_key(&plaintext, &context, to_key_id).await
    } else {
        kms.rewrap_data_key(&row.wrapped, &context, to_key_id).await
    }
}
