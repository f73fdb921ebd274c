//! BYOK: a user's own provider keys. Stored envelope-encrypted (one per user and
//! provider), shown only as a masked view, validated live against the provider, and
//! decrypted for use by the chat path through the vault's data-key cache. Every query is
//! scoped to the caller's user id; another user's key is simply not found (404).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use crate::auth::KeyCache;
use crate::auth::{Actor, Caller};
use crate::db::DbPool;
use crate::secret::Secret;

use super::envelope::{EncryptionContext, KeyVault};
use super::error::KeysError;
use super::format::{check_key_format, hint_parts, key_hint};
use super::store::{self, ByokRow, ProviderRef};
use super::validate::{KeyCheck, check_key_live};

/// `PUT /v1/byok/{provider_slug}`. Unknown fields are ignored (api.md, /v1 routes).
#[derive(Deserialize, ToSchema)]
pub struct PutByokRequest {
    /// The provider key: printable ASCII, no whitespace, 8 to 512 characters, in the
    /// provider's documented format. Never returned.
    #[serde(deserialize_with = "deserialize_secret")]
    #[schema(value_type = String, example = "sk-proj-...")]
    pub api_key: Secret,
    /// Check the key against the provider before answering (default false).
    #[serde(default)]
    pub validate: Option<bool>,
}

/// `PATCH /v1/byok/{provider_slug}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PatchByokRequest {
    /// Required.
    #[serde(default)]
    pub is_active: Option<bool>,
}

fn deserialize_secret<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
    String::deserialize(deserializer).map(Secret::new)
}

/// The masked view of a stored key (api.md); the plaintext is never part of it.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct MaskedByokKey {
    pub provider_slug: String,
    /// At most the first 3-4 and the last 4 characters.
    #[schema(example = "sk-...cdef")]
    pub key_hint: String,
    pub is_active: bool,
    pub is_validated: bool,
    pub validation_error: Option<String>,
    pub last_validated_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub total_requests: i64,
    pub total_tokens: i64,
    /// USD as a decimal string.
    #[schema(example = "0.0005")]
    pub total_cost_usd: String,
    /// Set while the provider rate limits the key (429): until then requests use the
    /// platform key or another provider instead. `null` when not cooling down.
    pub cooldown_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ByokRow> for MaskedByokKey {
    fn from(row: ByokRow) -> Self {
        Self {
            key_hint: key_hint(&row.key_prefix, &row.key_suffix),
            provider_slug: row.provider_slug,
            is_active: row.is_active,
            is_validated: row.is_validated,
            validation_error: row.validation_error,
            last_validated_at: row.last_validated_at,
            last_used_at: row.last_used_at,
            total_requests: row.total_requests,
            total_tokens: row.total_tokens,
            total_cost_usd: money(row.total_cost_usd),
            cooldown_until: row.cooldown_until,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// `{"data": [...]}`
#[derive(Debug, Serialize, ToSchema)]
pub struct ByokList {
    pub data: Vec<MaskedByokKey>,
}

/// USD as a decimal string with at least two decimals (`"0.00"`, `"0.000500"`).
pub fn money(value: Decimal) -> String {
    let mut value = value.normalize();
    if value.scale() < 2 {
        value.rescale(2);
    }
    value.to_string()
}

/// The masked view as audit JSON (no secret in it by construction).
fn audit_view(view: &MaskedByokKey) -> serde_json::Value {
    serde_json::json!({
        "provider_slug": view.provider_slug,
        "key_hint": view.key_hint,
        "is_active": view.is_active,
    })
}

/// A provider that accepts user keys, by slug (404 unknown, 400 BYOK not supported).
async fn byok_provider(client: &impl GenericClient, slug: &str) -> Result<ProviderRef, KeysError> {
    let provider = store::provider_by_slug(client, slug)
        .await?
        .ok_or_else(|| KeysError::UnknownProvider(printable(slug)))?;
    if !provider.is_byok_supported {
        return Err(KeysError::ByokNotSupported(provider.slug));
    }
    Ok(provider)
}

/// A provider by slug, for reading and deleting (only 404 when unknown).
async fn known_provider(client: &impl GenericClient, slug: &str) -> Result<ProviderRef, KeysError> {
    store::provider_by_slug(client, slug)
        .await?
        .ok_or_else(|| KeysError::UnknownProvider(printable(slug)))
}

/// A slug from the URL, safe to echo in a message.
fn printable(slug: &str) -> String {
    slug.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

/// What the BYOK operations use of the process (built by the composition root).
pub struct ByokServices<'a> {
    pub pool: &'a DbPool,
    /// Seals and opens the keys.
    pub vault: &'a KeyVault,
    /// A user's cached keys are dropped when theirs change.
    pub key_cache: &'a KeyCache,
    /// Live checks against the provider.
    pub http: &'a reqwest::Client,
    pub allow_private_upstreams: bool,
}

fn no_key(slug: &str) -> KeysError {
    KeysError::NotFound(format!("no key stored for provider `{slug}`"))
}

/// `PUT /v1/byok/{slug}`: checks the key's shape, seals it, replaces any previous key
/// (validation reset) and, with `validate: true`, checks it live before answering.
pub async fn put_key(
    state: &ByokServices<'_>,
    actor: &Actor<'_>,
    slug: &str,
    request: PutByokRequest,
) -> Result<MaskedByokKey, KeysError> {
    let user_id = actor.caller.user_id.as_str();
    let provider = {
        let client = state.pool.get().await?;
        byok_provider(&**client, slug).await?
    };
    check_key_format(&provider.slug, request.api_key.expose())
        .map_err(|e| KeysError::invalid("api_key", e.0))?;
    let context = EncryptionContext::new(user_id, provider.id);
    let sealed = state.vault.seal(&request.api_key, &context).await?;
    let (prefix, suffix) = hint_parts(request.api_key.expose());

    let view: MaskedByokKey = {
        let mut client = state.pool.get().await?;
        let tx = client.transaction().await?;
        let before = store::get_byok(&*tx, user_id, provider.id)
            .await?
            .map(|row| audit_view(&row.into()));
        let row = store::upsert_byok(&*tx, user_id, provider.id, &sealed, &prefix, &suffix).await?;
        let view = MaskedByokKey::from(row);
        let entity = format!("{user_id}/{}", provider.slug);
        actor
            .record(
                &*tx,
                if before.is_some() {
                    "byok.replace"
                } else {
                    "byok.create"
                },
                "user_api_key",
                Some(&entity),
                before,
                Some(audit_view(&view)),
            )
            .await?;
        tx.commit().await?;
        view
    };
    // The next request from this user, in this process, routes with the new key.
    state.key_cache.forget_user(user_id);

    if request.validate.unwrap_or(false) {
        let check = check_key_live(
            state.http,
            &provider.base_url,
            provider.auth_type,
            &request.api_key,
            state.allow_private_upstreams,
        )
        .await;
        return store_check(state, user_id, &provider, &sealed.nonce, &check).await;
    }
    Ok(view)
}

/// Stores a check's result for the key identified by `nonce`, and answers the view.
async fn store_check(
    state: &ByokServices<'_>,
    user_id: &str,
    provider: &ProviderRef,
    nonce: &[u8],
    check: &KeyCheck,
) -> Result<MaskedByokKey, KeysError> {
    let client = state.pool.get().await?;
    let row = match store::record_validation(
        &**client,
        user_id,
        provider.id,
        nonce,
        check.is_valid(),
        check.error(),
    )
    .await?
    {
        Some(row) => row,
        // Replaced or deleted while the check ran: answer what is stored now.
        None => store::get_byok(&**client, user_id, provider.id)
            .await?
            .ok_or_else(|| no_key(&provider.slug))?,
    };
    Ok(row.into())
}

/// `GET /v1/byok`.
pub async fn list_keys(state: &ByokServices<'_>, caller: &Caller) -> Result<ByokList, KeysError> {
    let client = state.pool.get().await?;
    let rows = store::list_byok(&**client, &caller.user_id).await?;
    Ok(ByokList {
        data: rows.into_iter().map(MaskedByokKey::from).collect(),
    })
}

/// `GET /v1/byok/{slug}`.
pub async fn get_key(
    state: &ByokServices<'_>,
    caller: &Caller,
    slug: &str,
) -> Result<MaskedByokKey, KeysError> {
    let client = state.pool.get().await?;
    let provider = known_provider(&**client, slug).await?;
    store::get_byok(&**client, &caller.user_id, provider.id)
        .await?
        .map(MaskedByokKey::from)
        .ok_or_else(|| no_key(&provider.slug))
}

/// `PATCH /v1/byok/{slug}` `{"is_active": bool}`.
pub async fn set_active(
    state: &ByokServices<'_>,
    actor: &Actor<'_>,
    slug: &str,
    request: PatchByokRequest,
) -> Result<MaskedByokKey, KeysError> {
    let is_active = request
        .is_active
        .ok_or_else(|| KeysError::invalid("is_active", "is_active (a boolean) is required"))?;
    let user_id = actor.caller.user_id.as_str();
    let mut client = state.pool.get().await?;
    let provider = known_provider(&**client, slug).await?;
    let tx = client.transaction().await?;
    let before = store::get_byok(&*tx, user_id, provider.id)
        .await?
        .ok_or_else(|| no_key(&provider.slug))?;
    let row = store::set_byok_active(&*tx, user_id, provider.id, is_active)
        .await?
        .ok_or_else(|| no_key(&provider.slug))?;
    let view = MaskedByokKey::from(row);
    let entity = format!("{user_id}/{}", provider.slug);
    actor
        .record(
            &*tx,
            "byok.update",
            "user_api_key",
            Some(&entity),
            Some(audit_view(&before.into())),
            Some(audit_view(&view)),
        )
        .await?;
    tx.commit().await?;
    state.key_cache.forget_user(user_id);
    Ok(view)
}

/// `DELETE /v1/byok/{slug}`.
pub async fn delete_key(
    state: &ByokServices<'_>,
    actor: &Actor<'_>,
    slug: &str,
) -> Result<(), KeysError> {
    let user_id = actor.caller.user_id.as_str();
    let mut client = state.pool.get().await?;
    let provider = known_provider(&**client, slug).await?;
    let tx = client.transaction().await?;
    let deleted = store::delete_byok(&*tx, user_id, provider.id)
        .await?
        .ok_or_else(|| no_key(&provider.slug))?;
    let entity = format!("{user_id}/{}", provider.slug);
    actor
        .record(
            &*tx,
            "byok.delete",
            "user_api_key",
            Some(&entity),
            Some(audit_view(&deleted.into())),
            None,
        )
        .await?;
    tx.commit().await?;
    state.key_cache.forget_user(user_id);
    Ok(())
}

/// `POST /v1/byok/{slug}/validate`: decrypts the stored key, checks it live, stores and
/// answers the result.
pub async fn validate_key(
    state: &ByokServices<'_>,
    caller: &Caller,
    slug: &str,
) -> Result<MaskedByokKey, KeysError> {
    let user_id = caller.user_id.as_str();
    // No connection is held during the (up to 10 s) provider call.
    let (provider, envelope) = {
        let client = state.pool.get().await?;
        let provider = known_provider(&**client, slug).await?;
        let envelope = store::byok_envelope(&**client, user_id, provider.id, false)
            .await?
            .ok_or_else(|| no_key(&provider.slug))?;
        (provider, envelope)
    };
    let context = EncryptionContext::new(user_id, provider.id);
    let key = state.vault.open(&envelope.sealed, &context).await?;
    let check = check_key_live(
        state.http,
        &provider.base_url,
        provider.auth_type,
        &key,
        state.allow_private_upstreams,
    )
    .await;
    drop(key);
    store_check(state, user_id, &provider, &envelope.sealed.nonce, &check).await
}

/// What the chat path can do with a user's key for one provider.
pub enum ByokUse {
    /// The active key, decrypted, with its row id to report usage or a refusal against.
    Ready { key_id: i32, key: Secret },
    /// No active key for this provider (removed or deactivated).
    Missing,
    /// The provider rate limited this key (429) and it cools down for this long; the
    /// request skips it (other tenants and the platform key are not affected).
    CoolingDown { retry_after: Duration },
}

impl ByokUse {
    /// The key when it is ready, for callers that do not care why it is not.
    pub fn ready(self) -> Option<(i32, Secret)> {
        match self {
            ByokUse::Ready { key_id, key } => Some((key_id, key)),
            ByokUse::Missing | ByokUse::CoolingDown { .. } => None,
        }
    }
}

impl std::fmt::Debug for ByokUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // `Secret`'s own Debug is redacted; spelled out so no future field leaks.
            ByokUse::Ready { key_id, .. } => f
                .debug_struct("Ready")
                .field("key_id", key_id)
                .field("key", &"[redacted]")
                .finish(),
            ByokUse::Missing => f.write_str("Missing"),
            ByokUse::CoolingDown { retry_after } => f
                .debug_struct("CoolingDown")
                .field("retry_after", retry_after)
                .finish(),
        }
    }
}

/// For the chat path: the user's active key for a provider, decrypted (through the
/// vault's data-key cache: no KMS call on a warm instance), in one query. A key that is
/// cooling down is not decrypted.
pub async fn byok_key_for_use(
    client: &impl GenericClient,
    vault: &KeyVault,
    user_id: &str,
    provider_id: i32,
) -> Result<ByokUse, KeysError> {
    let Some(envelope) = store::byok_envelope(client, user_id, provider_id, true).await? else {
        return Ok(ByokUse::Missing);
    };
    if let Some(retry_after) = envelope.cooling_for {
        return Ok(ByokUse::CoolingDown { retry_after });
    }
    let context = EncryptionContext::new(user_id, provider_id);
    let key = vault.open(&envelope.sealed, &context).await?;
    Ok(ByokUse::Ready {
        key_id: envelope.key_id,
        key,
    })
}

/// The longest cooldown a provider's `Retry-After` can impose on a user's key.
pub const MAX_BYOK_COOLDOWN: Duration = Duration::from_secs(24 * 3600);

/// After the provider rate limited a user's own key (429): that key, and only it, is
/// skipped until the cooldown ends (capped at [`MAX_BYOK_COOLDOWN`]; a longer cooldown
/// already set is kept). `false` when the key no longer exists.
pub async fn cool_down_byok_key(
    client: &impl GenericClient,
    user_id: &str,
    key_id: i32,
    cooldown: Duration,
) -> Result<bool, KeysError> {
    let cooldown = cooldown.min(MAX_BYOK_COOLDOWN);
    Ok(store::cool_down_byok(client, user_id, key_id, cooldown).await?)
}

/// For routing: the providers for which the user has an active key (one query).
pub async fn active_byok_provider_ids(
    client: &impl GenericClient,
    user_id: &str,
) -> Result<Vec<i32>, KeysError> {
    Ok(store::active_byok_provider_ids(client, user_id).await?)
}

/// After the provider refused the key (401/403 upstream): `is_validated = false` with a
/// message the user sees in the masked view. The key stays active (the user decides).
pub async fn mark_byok_key_invalid(
    client: &impl GenericClient,
    user_id: &str,
    key_id: i32,
    upstream_status: u16,
) -> Result<bool, KeysError> {
    let message = format!("the provider rejected the key (HTTP {upstream_status})");
    Ok(store::mark_byok_invalid(client, user_id, key_id, &message).await?)
}

/// Adds one request's usage to a key's counters (`total_requests`, `total_tokens`,
/// `total_cost_usd`, `last_used_at`); meant to run in the ledger's transaction.
pub async fn record_byok_usage(
    client: &impl GenericClient,
    user_id: &str,
    key_id: i32,
    tokens: i64,
    cost_usd: Decimal,
) -> Result<bool, KeysError> {
    Ok(store::record_byok_usage(client, user_id, key_id, tokens, cost_usd).await?)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn money_is_a_decimal_string() {
        assert_eq!(money(Decimal::ZERO), "0.00");
        assert_eq!(money(Decimal::from_str("0.000000000").unwrap()), "0.00");
        assert_eq!(money(Decimal::from_str("10.000000000").unwrap()), "10.00");
        assert_eq!(money(Decimal::from_str("0.000500000").unwrap()), "0.0005");
        assert_eq!(money(Decimal::from_str("1.5").unwrap()), "1.50");
    }

    #[test]
    fn put_request_hides_the_key_and_checks_types() {
        let request: PutByokRequest =
            serde_json::from_str(r#"{"api_key": "sk-secret-123", "extra": 1}"#).unwrap();
        assert_eq!(request.api_key.expose(), "sk-secret-123");
        assert_eq!(request.validate, None);
        assert!(serde_json::from_str::<PutByokRequest>(r#"{"api_key": 5}"#).is_err());
        assert!(serde_json::from_str::<PutByokRequest>(r#"{}"#).is_err());
        assert!(
            serde_json::from_str::<PutByokRequest>(r#"{"api_key": "x", "validate": "yes"}"#)
                .is_err()
        );
    }
}
