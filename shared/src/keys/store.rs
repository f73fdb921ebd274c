//! SQL of the keys layer: BYOK rows (`user_api_keys`). Thin: parameters in, rows out, no decisions.
//! Every user-scoped statement filters by `user_id`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio_postgres::{GenericClient, Row};

use crate::catalog::{ApiFormat, AuthType};
use crate::db::DbError;

use super::envelope::{SealedKey, WrappedDataKey};

/// What the keys layer needs to know about a provider.
#[derive(Debug, Clone)]
pub struct ProviderRef {
    pub id: i32,
    pub slug: String,
    pub api_format: ApiFormat,
    pub base_url: String,
    pub auth_type: AuthType,
    pub is_active: bool,
    pub is_byok_supported: bool,
}

const PROVIDER_COLUMNS: &str =
    "id, provider_slug, api_format, base_url, auth_type, is_active, is_byok_supported";

fn provider_from_row(row: &Row) -> Result<ProviderRef, DbError> {
    Ok(ProviderRef {
        id: row.get(0),
        slug: row.get(1),
        api_format: row
            .get::<_, String>(2)
            .parse()
            .map_err(|_| DbError::Corrupt("unknown api_format on a provider".into()))?,
        base_url: row.get(3),
        auth_type: row
            .get::<_, String>(4)
            .parse()
            .map_err(|_| DbError::Corrupt("unknown auth_type on a provider".into()))?,
        is_active: row.get(5),
        is_byok_supported: row.get(6),
    })
}

pub async fn provider_by_slug(
    client: &impl GenericClient,
    slug: &str,
) -> Result<Option<ProviderRef>, DbError> {
    let row = client
        .query_opt(
            &format!("SELECT {PROVIDER_COLUMNS} FROM llm_providers WHERE provider_slug = $1"),
            &[&slug],
        )
        .await?;
    row.as_ref().map(provider_from_row).transpose()
}

pub async fn provider_by_id(
    client: &impl GenericClient,
    id: i32,
) -> Result<Option<ProviderRef>, DbError> {
    let row = client
        .query_opt(
            &format!("SELECT {PROVIDER_COLUMNS} FROM llm_providers WHERE id = $1"),
            &[&id],
        )
        .await?;
    row.as_ref().map(provider_from_row).transpose()
}

/// A BYOK row without its envelope (what the masked view shows).
#[derive(Debug, Clone)]
pub struct ByokRow {
    pub id: i32,
    pub provider_id: i32,
    pub provider_slug: String,
    pub key_prefix: String,
    pub key_suffix: String,
    pub is_active: bool,
    pub is_validated: bool,
    pub validation_error: Option<String>,
    pub last_validated_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub total_requests: i64,
    pub total_tokens: i64,
    pub total_cost_usd: Decimal,
    pub cooldown_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Columns of [`ByokRow`], for a query over `user_api_keys k JOIN llm_providers p`.
const BYOK_COLUMNS: &str = "k.id, k.provider_id, p.provider_slug, k.key_prefix, k.key_suffix, \
     k.is_active, k.is_validated, k.validation_error, k.last_validated_at, k.last_used_at, \
     k.total_requests, k.total_tokens, k.total_cost_usd, k.created_at, k.updated_at, \
     CASE WHEN k.cooldown_until > now() THEN k.cooldown_until END";

fn byok_from_row(row: &Row) -> ByokRow {
    ByokRow {
        id: row.get(0),
        provider_id: row.get(1),
        provider_slug: row.get(2),
        key_prefix: row.get(3),
        key_suffix: row.get(4),
        is_active: row.get(5),
        is_validated: row.get(6),
        validation_error: row.get(7),
        last_validated_at: row.get(8),
        last_used_at: row.get(9),
        total_requests: row.get(10),
        total_tokens: row.get(11),
        total_cost_usd: row.get(12),
        created_at: row.get(13),
        updated_at: row.get(14),
        cooldown_until: row.get(15),
    }
}

/// Wraps an INSERT / UPDATE / DELETE on `user_api_keys` so the changed row comes back
/// as a [`ByokRow`], joined with its provider's slug, in one statement.
fn returning_view(cte: &str) -> String {
    format!(
        "WITH changed AS ({cte} RETURNING *) \
         SELECT {BYOK_COLUMNS} FROM changed k JOIN llm_providers p ON p.id = k.provider_id"
    )
}

/// Inserts or replaces the caller's key for a provider; validation state is reset.
pub async fn upsert_byok(
    client: &impl GenericClient,
    user_id: &str,
    provider_id: i32,
    sealed: &SealedKey,
    key_prefix: &str,
    key_suffix: &str,
) -> Result<ByokRow, DbError> {
    let sql = returning_view(
        "INSERT INTO user_api_keys (user_id, provider_id, encrypted_api_key, key_prefix, key_suffix,
             kms_key_id, wrapped_data_key, nonce, alg_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (user_id, provider_id) DO UPDATE SET
             encrypted_api_key = EXCLUDED.encrypted_api_key,
             key_prefix = EXCLUDED.key_prefix,
             key_suffix = EXCLUDED.key_suffix,
             kms_key_id = EXCLUDED.kms_key_id,
             wrapped_data_key = EXCLUDED.wrapped_data_key,
             nonce = EXCLUDED.nonce,
             alg_version = EXCLUDED.alg_version,
             is_active = true,
             is_validated = false,
             validation_error = NULL,
             last_validated_at = NULL,
             cooldown_until = NULL,
             last_rotated_at = now()",
    );
    let row = client
        .query_one(
            &sql,
            &[
                &user_id,
                &provider_id,
                &sealed.ciphertext,
                &key_prefix,
                &key_suffix,
                &sealed.wrapped.key_id,
                &sealed.wrapped.blob,
                &sealed.nonce.as_slice(),
                &sealed.alg_version,
            ],
        )
        .await?;
    Ok(byok_from_row(&row))
}

pub async fn list_byok(
    client: &impl GenericClient,
    user_id: &str,
) -> Result<Vec<ByokRow>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {BYOK_COLUMNS} FROM user_api_keys k JOIN llm_providers p ON p.id = k.provider_id
                 WHERE k.user_id = $1 ORDER BY p.provider_slug"
            ),
            &[&user_id],
        )
        .await?;
    Ok(rows.iter().map(byok_from_row).collect())
}

pub async fn get_byok(
    client: &impl GenericClient,
    user_id: &str,
    provider_id: i32,
) -> Result<Option<ByokRow>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {BYOK_COLUMNS} FROM user_api_keys k JOIN llm_providers p ON p.id = k.provider_id
                 WHERE k.user_id = $1 AND k.provider_id = $2"
            ),
            &[&user_id, &provider_id],
        )
        .await?;
    Ok(row.as_ref().map(byok_from_row))
}

pub async fn set_byok_active(
    client: &impl GenericClient,
    user_id: &str,
    provider_id: i32,
    is_active: bool,
) -> Result<Option<ByokRow>, DbError> {
    let sql = returning_view(
        "UPDATE user_api_keys SET is_active = $3 WHERE user_id = $1 AND provider_id = $2",
    );
    let row = client
        .query_opt(&sql, &[&user_id, &provider_id, &is_active])
        .await?;
    Ok(row.as_ref().map(byok_from_row))
}

pub async fn delete_byok(
    client: &impl GenericClient,
    user_id: &str,
    provider_id: i32,
) -> Result<Option<ByokRow>, DbError> {
    let sql = returning_view("DELETE FROM user_api_keys WHERE user_id = $1 AND provider_id = $2");
    let row = client.query_opt(&sql, &[&user_id, &provider_id]).await?;
    Ok(row.as_ref().map(byok_from_row))
}

/// A stored envelope and the row it belongs to.
#[derive(Debug, Clone)]
pub struct StoredEnvelope {
    pub key_id: i32,
    pub sealed: SealedKey,
    /// How long the key still cools down after a provider 429; `None`: usable now.
    pub cooling_for: Option<std::time::Duration>,
}

fn envelope_from_row(row: &Row) -> Result<StoredEnvelope, DbError> {
    let nonce: Vec<u8> = row.get(3);
    Ok(StoredEnvelope {
        key_id: row.get(0),
        sealed: SealedKey {
            wrapped: WrappedDataKey {
                key_id: row.get(1),
                blob: row.get(2),
            },
            nonce: nonce
                .try_into()
                .map_err(|_| DbError::Corrupt("a BYOK nonce is not 12 bytes".into()))?,
            ciphertext: row.get(4),
            alg_version: row.get(5),
        },
        cooling_for: row
            .get::<_, Option<i64>>(6)
            .filter(|ms| *ms > 0)
            .map(|ms| std::time::Duration::from_millis(ms as u64)),
    })
}

/// The caller's envelope for a provider; with `only_active`, only an active key.
pub async fn byok_envelope(
    client: &impl GenericClient,
    user_id: &str,
    provider_id: i32,
    only_active: bool,
) -> Result<Option<StoredEnvelope>, DbError> {
    let row = client
        .query_opt(
            "SELECT id, kms_key_id, wrapped_data_key, nonce, encrypted_api_key, alg_version,
                 ceil(extract(epoch FROM cooldown_until - now()) * 1000)::bigint
             FROM user_api_keys
             WHERE user_id = $1 AND provider_id = $2 AND (is_active OR NOT $3)",
            &[&user_id, &provider_id, &only_active],
        )
        .await?;
    row.as_ref().map(envelope_from_row).transpose()
}

/// Stores a validation result for the key that was checked (identified by its nonce, so
/// a key replaced meanwhile is not marked with the old key's result).
pub async fn record_validation(
    client: &impl GenericClient,
    user_id: &str,
    provider_id: i32,
    nonce: &[u8],
    is_validated: bool,
    validation_error: Option<&str>,
) -> Result<Option<ByokRow>, DbError> {
    let sql = returning_view(
        "UPDATE user_api_keys
         SET is_validated = $4, validation_error = $5, last_validated_at = now()
         WHERE user_id = $1 AND provider_id = $2 AND nonce = $3",
    );
    let row = client
        .query_opt(
            &sql,
            &[
                &user_id,
                &provider_id,
                &nonce,
                &is_validated,
                &validation_error,
            ],
        )
        .await?;
    Ok(row.as_ref().map(byok_from_row))
}

/// Marks a key invalid (after the provider refused it). True when a row changed.
pub async fn mark_byok_invalid(
    client: &impl GenericClient,
    user_id: &str,
    key_id: i32,
    validation_error: &str,
) -> Result<bool, DbError> {
    let changed = client
        .execute(
            "UPDATE user_api_keys
             SET is_validated = false, validation_error = $3, last_validated_at = now()
             WHERE id = $2 AND user_id = $1",
            &[&user_id, &key_id, &validation_error],
        )
        .await?;
    Ok(changed == 1)
}

/// Cools a key down until `now() + cooldown` (never shortening a longer cooldown).
pub async fn cool_down_byok(
    client: &impl GenericClient,
    user_id: &str,
    key_id: i32,
    cooldown: std::time::Duration,
) -> Result<bool, DbError> {
    let millis = i64::try_from(cooldown.as_millis()).unwrap_or(i64::MAX);
    let changed = client
        .execute(
            "UPDATE user_api_keys
             SET cooldown_until = greatest(
                 coalesce(cooldown_until, now()),
                 now() + make_interval(secs => $3::bigint / 1000.0))
             WHERE id = $2 AND user_id = $1",
            &[&user_id, &key_id, &millis],
        )
        .await?;
    Ok(changed == 1)
}

/// Ids of the providers for which the user has an active key (one query).
pub async fn active_byok_provider_ids(
    client: &impl GenericClient,
    user_id: &str,
) -> Result<Vec<i32>, DbError> {
    let rows = client
        .query(
            "SELECT provider_id FROM user_api_keys WHERE user_id = $1 AND is_active ORDER BY provider_id",
            &[&user_id],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Adds one request's usage to a key's counters.
pub async fn record_byok_usage(
    client: &impl GenericClient,
    user_id: &str,
    key_id: i32,
    tokens: i64,
    cost_usd: Decimal,
) -> Result<bool, DbError> {
    let changed = client
        .execute(
            "UPDATE user_api_keys
             SET total_requests = total_requests + 1, total_tokens = total_tokens + $3,
                 total_cost_usd = total_cost_usd + $4, last_used_at = now()
             WHERE id = $2 AND user_id = $1",
            &[
                &user_id,
                &key_id,
                &tokens.max(0),
                &cost_usd.max(Decimal::ZERO),
            ],
        )
        .await?;
    Ok(changed == 1)
}

/// An envelope as the re-wrap job sees it (every user).
#[derive(Debug, Clone)]
pub struct RewrapCandidate {
    pub id: i32,
    pub user_id: String,
    pub provider_id: i32,
    pub wrapped: WrappedDataKey,
}

/// Envelopes with `id > after_id`, in id order (a page of the re-wrap job).
pub async fn envelopes_after(
    client: &impl GenericClient,
    after_id: i32,
    limit: i64,
) -> Result<Vec<RewrapCandidate>, DbError> {
    let rows = client
        .query(
            "SELECT id, user_id, provider_id, kms_key_id, wrapped_data_key
             FROM user_api_keys WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after_id, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| RewrapCandidate {
            id: row.get(0),
            user_id: row.get(1),
            provider_id: row.get(2),
            wrapped: WrappedDataKey {
                key_id: row.get(3),
                blob: row.get(4),
            },
        })
        .collect())
}

/// Replaces a row's wrapped data key, unless the row changed since it was read.
pub async fn replace_wrapped_key(
    client: &impl GenericClient,
    id: i32,
    old: &WrappedDataKey,
    new: &WrappedDataKey,
) -> Result<bool, DbError> {
    let changed = client
        .execute(
            "UPDATE user_api_keys SET kms_key_id = $4, wrapped_data_key = $5
             WHERE id = $1 AND kms_key_id = $2 AND wrapped_data_key = $3",
            &[&id, &old.key_id, &old.blob, &new.key_id, &new.blob],
        )
        .await?;
    Ok(changed == 1)
}
