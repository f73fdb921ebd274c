//! Reading the audit log (`GET /admin/audit-log`), newest first, with filters.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AdminError;
use super::page::{Page, Paged, fetch};

/// Filters of `GET /admin/audit-log`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// `provider`, `model`, `routing_rule`, `user`, `api_key`, ...
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    /// `provider.create`, `credits.topup`, `api_key.revoke`, ...
    pub action: Option<String>,
    /// The account of the admin key that made the change.
    pub actor: Option<String>,
    /// The admin key that made the change.
    pub actor_key_id: Option<Uuid>,
    /// From this instant (inclusive), RFC 3339.
    pub from: Option<DateTime<Utc>>,
    /// Until this instant (exclusive), RFC 3339.
    pub to: Option<DateTime<Utc>>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    pub offset: Option<i64>,
}

/// One administrative change. Secrets in `before` / `after` are masked.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntryView {
    pub id: i64,
    pub actor_key_id: Option<Uuid>,
    pub actor: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

const CONDITION: &str = "($1::text IS NULL OR entity_type = $1) AND ($2::text IS NULL OR entity_id = $2) \
    AND ($3::text IS NULL OR action = $3) AND ($4::text IS NULL OR actor = $4) \
    AND ($5::uuid IS NULL OR actor_key_id = $5) AND ($6::timestamptz IS NULL OR created_at >= $6) \
    AND ($7::timestamptz IS NULL OR created_at < $7)";

fn view_of(row: &Row) -> Result<AuditEntryView, AdminError> {
    Ok(AuditEntryView {
        id: row.try_get(0)?,
        actor_key_id: row.try_get(1)?,
        actor: row.try_get(2)?,
        action: row.try_get(3)?,
        entity_type: row.try_get(4)?,
        entity_id: row.try_get(5)?,
        before: row.try_get(6)?,
        after: row.try_get(7)?,
        request_id: row.try_get(8)?,
        created_at: row.try_get(9)?,
    })
}

pub async fn list(
    client: &impl GenericClient,
    filter: &AuditFilter,
) -> Result<Paged<AuditEntryView>, AdminError> {
    let page = Page::new(filter.limit, filter.offset)?;
    let params: [&(dyn ToSql + Sync); 7] = [
        &filter.entity_type,
        &filter.entity_id,
        &filter.action,
        &filter.actor,
        &filter.actor_key_id,
        &filter.from,
        &filter.to,
    ];
    let (rows, total) = fetch(
        client,
        &format!(
            "SELECT id, actor_key_id, actor, action, entity_type, entity_id, before, after, request_id, created_at \
             FROM audit_log WHERE {CONDITION} ORDER BY created_at DESC, id DESC"
        ),
        &format!("SELECT count(*) FROM audit_log WHERE {CONDITION}"),
        &params,
        page,
    )
    .await?;
    let data = rows.iter().map(view_of).collect::<Result<Vec<_>, _>>()?;
    Ok(page.result(data, total))
}
