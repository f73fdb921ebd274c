//! Self-service gateway keys (`/v1/api-keys`): a user lists, creates (user role, shown
//! once) and revokes their own `sk-sb-` keys. Another user's key is not found (404).
//! Creations and revocations are audit-logged; the hash is never shown or logged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::KeyCache;
use crate::auth::{self, Actor, Caller};
use crate::db::DbPool;
use crate::secret::Secret;

use super::store::{self, GatewayKeyRow, NewGatewayKey};
use crate::keys::KeysError;

/// How many unrevoked keys one user may hold.
pub const MAX_ACTIVE_KEYS_PER_USER: i64 = 100;
const MAX_NAME_CHARS: usize = 200;

/// `POST /v1/api-keys`. Unknown fields are ignored.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CreateGatewayKeyRequest {
    /// A label, at most 200 characters (default empty).
    #[serde(default)]
    pub name: Option<String>,
}

/// A gateway key as its owner sees it (never the hash).
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct GatewayKeyView {
    pub id: Uuid,
    pub name: String,
    /// The first characters of the key, for recognising it.
    #[schema(example = "sk-sb-1a2b")]
    pub prefix: String,
    /// `user` for self-service keys.
    pub role: String,
    /// null: the tier's default requests-per-minute limit.
    pub rpm_limit: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<GatewayKeyRow> for GatewayKeyView {
    fn from(row: GatewayKeyRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            prefix: row.key_prefix,
            role: row.role,
            rpm_limit: row.rpm_limit,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
        }
    }
}

/// `{"data": [...]}`
#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayKeyList {
    pub data: Vec<GatewayKeyView>,
}

/// A created key: the plaintext `key` is in this answer and nowhere else, ever.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedGatewayKey {
    /// The key (`sk-sb-...`). Store it now: it cannot be shown again.
    #[serde(serialize_with = "expose_once")]
    #[schema(value_type = String)]
    pub key: Secret,
    #[serde(flatten)]
    pub view: GatewayKeyView,
}

fn expose_once<S: Serializer>(key: &Secret, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(key.expose())
}

fn audit_json(view: &GatewayKeyView) -> serde_json::Value {
    serde_json::json!({
        "id": view.id,
        "name": view.name,
        "prefix": view.prefix,
        "role": view.role,
        "rpm_limit": view.rpm_limit,
        "revoked_at": view.revoked_at,
    })
}

/// `GET /v1/api-keys`: the caller's own keys, revoked ones included.
pub async fn list_own_keys(pool: &DbPool, caller: &Caller) -> Result<GatewayKeyList, KeysError> {
    let client = pool.get().await?;
    let rows = store::list_gateway_keys(&**client, &caller.user_id).await?;
    Ok(GatewayKeyList {
        data: rows.into_iter().map(GatewayKeyView::from).collect(),
    })
}

/// `POST /v1/api-keys`: a new user-role key for the caller's account, returned once.
pub async fn create_own_key(
    pool: &DbPool,
    actor: &Actor<'_>,
    request: CreateGatewayKeyRequest,
) -> Result<CreatedGatewayKey, KeysError> {
    let name = request.name.unwrap_or_default();
    let name = name.trim();
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(KeysError::invalid(
            "name",
            format!("name must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(KeysError::invalid(
            "name",
            "name must not contain control characters",
        ));
    }
    let user_id = actor.caller.user_id.as_str();
    let generated = auth::generate_api_key();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Serializes concurrent creations for one user, so the limit holds.
    tx.execute(
        "SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE",
        &[&user_id],
    )
    .await?;
    if store::count_active_gateway_keys(&*tx, user_id).await? >= MAX_ACTIVE_KEYS_PER_USER {
        return Err(KeysError::invalid(
            "name",
            format!(
                "an account may hold at most {MAX_ACTIVE_KEYS_PER_USER} active keys; revoke one first"
            ),
        ));
    }
    let row = store::insert_gateway_key(
        &*tx,
        &NewGatewayKey {
            id: Uuid::new_v4(),
            user_id,
            name,
            key_hash: &generated.hash,
            key_prefix: &generated.display_prefix,
            role: "user",
            rpm_limit: None,
        },
    )
    .await?;
    let view = GatewayKeyView::from(row);
    let entity = view.id.to_string();
    actor
        .record(
            &*tx,
            "api_key.create",
            "gateway_api_key",
            Some(&entity),
            None,
            Some(audit_json(&view)),
        )
        .await?;
    tx.commit().await?;
    Ok(CreatedGatewayKey {
        key: generated.plaintext,
        view,
    })
}

/// `DELETE /v1/api-keys/{id}`: revokes one of the caller's own keys (404 for anyone
/// else's or an unknown id) and forgets this process's cached key lookups.
pub async fn revoke_own_key(
    pool: &DbPool,
    key_cache: &KeyCache,
    actor: &Actor<'_>,
    id: &str,
) -> Result<(), KeysError> {
    let not_found = || KeysError::NotFound(format!("no API key with id `{}`", printable(id)));
    let id = Uuid::parse_str(id).map_err(|_| not_found())?;
    let user_id = actor.caller.user_id.as_str();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let before = store::gateway_key_for_update(&*tx, user_id, id)
        .await?
        .ok_or_else(not_found)?;
    if before.revoked_at.is_some() {
        // Already revoked: nothing changes, nothing to audit.
        return Ok(());
    }
    let after = store::revoke_gateway_key(&*tx, user_id, id)
        .await?
        .ok_or_else(not_found)?;
    let entity = id.to_string();
    actor
        .record(
            &*tx,
            "api_key.revoke",
            "gateway_api_key",
            Some(&entity),
            Some(audit_json(&before.into())),
            Some(audit_json(&after.into())),
        )
        .await?;
    tx.commit().await?;
    key_cache.clear();
    Ok(())
}

fn printable(value: &str) -> String {
    value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_key_serializes_the_key_once_and_debug_hides_it() {
        let created = CreatedGatewayKey {
            key: Secret::new("sk-sb-plaintext"),
            view: GatewayKeyView {
                id: Uuid::nil(),
                name: "ci".into(),
                prefix: "sk-sb-plai".into(),
                role: "user".into(),
                rpm_limit: None,
                created_at: Utc::now(),
                last_used_at: None,
                revoked_at: None,
            },
        };
        let json = serde_json::to_value(&created).unwrap();
        assert_eq!(json["key"], "sk-sb-plaintext");
        assert_eq!(json["name"], "ci");
        assert_eq!(json["id"], Uuid::nil().to_string());
        assert!(json.get("key_hash").is_none());
        assert_eq!(
            serde_json::to_string(&created)
                .unwrap()
                .matches("\"id\"")
                .count(),
            1
        );
        assert!(!format!("{created:?}").contains("sk-sb-plaintext"));
    }
}
