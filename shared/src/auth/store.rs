//! SQL of a user's own gateway keys (`gateway_api_keys`). Thin: parameters in, rows out,
//! no decisions.

use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use crate::db::DbError;

/// A gateway key as its owner may see it (never the hash).
#[derive(Debug, Clone)]
pub struct GatewayKeyRow {
    pub id: Uuid,
    pub name: String,
    pub key_prefix: String,
    pub role: String,
    pub rpm_limit: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const GATEWAY_COLUMNS: &str =
    "id, name, key_prefix, role, rpm_limit, created_at, last_used_at, revoked_at";

fn gateway_from_row(row: &Row) -> GatewayKeyRow {
    GatewayKeyRow {
        id: row.get(0),
        name: row.get(1),
        key_prefix: row.get(2),
        role: row.get(3),
        rpm_limit: row.get(4),
        created_at: row.get(5),
        last_used_at: row.get(6),
        revoked_at: row.get(7),
    }
}

pub async fn list_gateway_keys(
    client: &impl GenericClient,
    user_id: &str,
) -> Result<Vec<GatewayKeyRow>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {GATEWAY_COLUMNS} FROM gateway_api_keys WHERE user_id = $1
                 ORDER BY created_at, id"
            ),
            &[&user_id],
        )
        .await?;
    Ok(rows.iter().map(gateway_from_row).collect())
}

pub async fn count_active_gateway_keys(
    client: &impl GenericClient,
    user_id: &str,
) -> Result<i64, DbError> {
    let row = client
        .query_one(
            "SELECT count(*) FROM gateway_api_keys WHERE user_id = $1 AND revoked_at IS NULL",
            &[&user_id],
        )
        .await?;
    Ok(row.get(0))
}

/// A new gateway key row (the role is chosen by the caller of this layer).
pub struct NewGatewayKey<'a> {
    pub id: Uuid,
    pub user_id: &'a str,
    pub name: &'a str,
    pub key_hash: &'a [u8; 32],
    pub key_prefix: &'a str,
    pub role: &'a str,
    pub rpm_limit: Option<i32>,
}

pub async fn insert_gateway_key(
    client: &impl GenericClient,
    key: &NewGatewayKey<'_>,
) -> Result<GatewayKeyRow, DbError> {
    let row = client
        .query_one(
            &format!(
                "INSERT INTO gateway_api_keys (id, user_id, name, key_hash, key_prefix, role, rpm_limit)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {GATEWAY_COLUMNS}"
            ),
            &[
                &key.id,
                &key.user_id,
                &key.name,
                &key.key_hash.as_slice(),
                &key.key_prefix,
                &key.role,
                &key.rpm_limit,
            ],
        )
        .await?;
    Ok(gateway_from_row(&row))
}

/// Locks one of the user's gateway keys (for a revocation in the same transaction).
pub async fn gateway_key_for_update(
    client: &impl GenericClient,
    user_id: &str,
    id: Uuid,
) -> Result<Option<GatewayKeyRow>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {GATEWAY_COLUMNS} FROM gateway_api_keys WHERE id = $1 AND user_id = $2 FOR UPDATE"
            ),
            &[&id, &user_id],
        )
        .await?;
    Ok(row.as_ref().map(gateway_from_row))
}

/// Sets `revoked_at` (kept if already set) on one of the user's keys.
pub async fn revoke_gateway_key(
    client: &impl GenericClient,
    user_id: &str,
    id: Uuid,
) -> Result<Option<GatewayKeyRow>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE gateway_api_keys SET revoked_at = COALESCE(revoked_at, now())
                 WHERE id = $1 AND user_id = $2 RETURNING {GATEWAY_COLUMNS}"
            ),
            &[&id, &user_id],
        )
        .await?;
    Ok(row.as_ref().map(gateway_from_row))
}
