//! Gateway keys (`gateway_api_keys`) issued by an admin (`/admin/users/{id}/api-keys`): created for a user (the plaintext
//! is returned once and stored only as SHA-256), listed, and revoked. Revocation takes
//! effect at once in this process (the caller clears its key cache) and within the cache
//! TTL elsewhere.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::{GenericClient, Row};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::generate_api_key;
use crate::admin::input::{check_positive, check_text};
use crate::admin::page::{Page, Paged, fetch};
use crate::admin::users::require;
use crate::admin::{Actor, AdminError, audit_json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyRoleName {
    User,
    Admin,
}

impl KeyRoleName {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRoleName::User => "user",
            KeyRoleName::Admin => "admin",
        }
    }
}

impl std::str::FromStr for KeyRoleName {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "user" => Ok(KeyRoleName::User),
            "admin" => Ok(KeyRoleName::Admin),
            _ => Err(()),
        }
    }
}

/// A gateway key as listed (never the key itself).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: Uuid,
    pub user_id: String,
    pub name: String,
    /// The first characters of the key, for recognising it (`sk-sb-1a2b`).
    pub key_prefix: String,
    pub role: KeyRoleName,
    /// null: the tier's default requests-per-minute limit.
    pub rpm_limit: Option<i32>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A newly issued key: the only time the plaintext `key` is shown (in the response body;
/// `Debug` redacts it).
#[derive(Clone, Serialize, ToSchema)]
pub struct IssuedApiKey {
    #[serde(flatten)]
    pub view: ApiKeyView,
    /// The key (`sk-sb-...`). Store it now: it cannot be shown again.
    pub key: String,
}

impl std::fmt::Debug for IssuedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedApiKey")
            .field("view", &self.view)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// `POST /admin/users/{id}/api-keys`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// Default empty.
    #[serde(default)]
    pub name: Option<String>,
    /// Default `user`.
    #[serde(default)]
    pub role: Option<KeyRoleName>,
    /// null or absent: the tier's default.
    #[serde(default)]
    pub rpm_limit: Option<i32>,
}

/// Filters of `GET /admin/users/{id}/api-keys`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ApiKeyFilter {
    /// Include revoked keys (default true).
    pub include_revoked: Option<bool>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    pub offset: Option<i64>,
}

const SELECT: &str = "SELECT id, user_id, name, key_prefix, role, rpm_limit, revoked_at, last_used_at, created_at \
    FROM gateway_api_keys";

fn view_of(row: &Row) -> Result<ApiKeyView, AdminError> {
    Ok(ApiKeyView {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        name: row.try_get(2)?,
        key_prefix: row.try_get(3)?,
        role: crate::admin::providers::vocab::<KeyRoleName>(row, 4)?,
        rpm_limit: row.try_get(5)?,
        revoked_at: row.try_get(6)?,
        last_used_at: row.try_get(7)?,
        created_at: row.try_get(8)?,
    })
}

pub async fn create(
    client: &mut tokio_postgres::Client,
    actor: &Actor,
    user_id: &str,
    input: NewApiKey,
) -> Result<IssuedApiKey, AdminError> {
    let name = input.name.unwrap_or_default();
    check_text("name", &name, 0, 200)?;
    check_positive("rpm_limit", input.rpm_limit)?;
    let role = input.role.unwrap_or(KeyRoleName::User);
    let tx = client.transaction().await?;
    require(&tx, user_id, false).await?;
    let key = generate_api_key();
    let row = tx
        .query_one(
            "INSERT INTO gateway_api_keys (id, user_id, name, key_hash, key_prefix, role, rpm_limit) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             RETURNING id, user_id, name, key_prefix, role, rpm_limit, revoked_at, last_used_at, created_at",
            &[
                &Uuid::new_v4(),
                &user_id,
                &name,
                &key.hash.as_slice(),
                &key.display_prefix,
                &role.as_str(),
                &input.rpm_limit,
            ],
        )
        .await?;
    let view = view_of(&row)?;
    actor
        .audit(
            &tx,
            "api_key.create",
            "api_key",
            &view.id.to_string(),
            None,
            audit_json(&view),
        )
        .await?;
    tx.commit().await?;
    Ok(IssuedApiKey {
        view,
        key: key.plaintext.expose().to_string(),
    })
}

pub async fn list(
    client: &impl GenericClient,
    user_id: &str,
    filter: &ApiKeyFilter,
) -> Result<Paged<ApiKeyView>, AdminError> {
    let page = Page::new(filter.limit, filter.offset)?;
    require(client, user_id, false).await?;
    let include_revoked = filter.include_revoked.unwrap_or(true);
    let condition = "user_id = $1 AND ($2 OR revoked_at IS NULL)";
    let (rows, total) = fetch(
        client,
        &format!("{SELECT} WHERE {condition} ORDER BY created_at DESC, id"),
        &format!("SELECT count(*) FROM gateway_api_keys WHERE {condition}"),
        &[&user_id, &include_revoked],
        page,
    )
    .await?;
    let data = rows.iter().map(view_of).collect::<Result<Vec<_>, _>>()?;
    Ok(page.result(data, total))
}

/// Revokes a key (idempotent: revoking a revoked key changes nothing). The last active
/// admin key cannot be revoked, so the admin API never locks itself out.
pub async fn revoke(
    client: &mut tokio_postgres::Client,
    actor: &Actor,
    id: Uuid,
) -> Result<ApiKeyView, AdminError> {
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(&format!("{SELECT} WHERE id = $1 FOR UPDATE"), &[&id])
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no API key with id {id}")))?;
    let before = view_of(&row)?;
    if before.revoked_at.is_some() {
        return Ok(before);
    }
    if before.role == KeyRoleName::Admin {
        // Locks every active admin key, so two concurrent revocations cannot both pass.
        let active_admin_keys = tx
            .query(
                "SELECT k.id FROM gateway_api_keys k JOIN accounts a ON a.user_id = k.user_id \
                 WHERE k.role = 'admin' AND k.revoked_at IS NULL AND a.status = 'active' \
                 FOR UPDATE OF k",
                &[],
            )
            .await?;
        if active_admin_keys
            .iter()
            .all(|r| r.try_get::<_, Uuid>(0).is_ok_and(|key| key == id))
        {
            return Err(AdminError::Conflict(
                "this is the last active admin key; issue another admin key before revoking it"
                    .into(),
            ));
        }
    }
    let row = tx
        .query_one(
            "UPDATE gateway_api_keys SET revoked_at = now() WHERE id = $1 \
             RETURNING id, user_id, name, key_prefix, role, rpm_limit, revoked_at, last_used_at, created_at",
            &[&id],
        )
        .await?;
    let after = view_of(&row)?;
    actor
        .audit(
            &tx,
            "api_key.revoke",
            "api_key",
            &id.to_string(),
            audit_json(&before),
            audit_json(&after),
        )
        .await?;
    tx.commit().await?;
    Ok(after)
}
