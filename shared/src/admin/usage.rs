//! Usage (`llm_usage_logs`, one row per attempt of a request): raw rows with filters and
//! pagination, and a summary grouped by user, provider, model or UTC day with requests,
//! tokens, cost, error rate and latency percentiles.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};
use utoipa::{IntoParams, ToSchema};

use super::AdminError;
use super::input::serialize_money;
use super::page::{Page, Paged, fetch};

/// Filters of `GET /admin/usage`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageFilter {
    /// A user id.
    pub user: Option<String>,
    /// A provider slug (`openai`).
    pub provider: Option<String>,
    /// A model as logged (the upstream model id, `gpt-4o`).
    pub model: Option<String>,
    /// One request's attempts.
    pub request_id: Option<String>,
    /// `ok` (answered: status below 400) or `error` (no status, or 400 and above).
    #[param(inline)]
    pub status: Option<UsageStatus>,
    /// From this instant (inclusive), RFC 3339 (`2025-01-31T00:00:00Z`).
    pub from: Option<DateTime<Utc>>,
    /// Until this instant (exclusive), RFC 3339.
    pub to: Option<DateTime<Utc>>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    pub offset: Option<i64>,
}

/// A usage row's outcome, for the `status` filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UsageStatus {
    Ok,
    Error,
}

impl UsageStatus {
    fn as_str(self) -> &'static str {
        match self {
            UsageStatus::Ok => "ok",
            UsageStatus::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    User,
    Provider,
    Model,
    #[default]
    Day,
}

impl GroupBy {
    /// The SQL expression of the group key (fixed strings, never input).
    fn key_sql(self) -> &'static str {
        match self {
            GroupBy::User => "user_id",
            GroupBy::Provider => "COALESCE(provider_slug, '(none)')",
            GroupBy::Model => "COALESCE(model_name, '(none)')",
            GroupBy::Day => "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        }
    }
}

/// Filters of `GET /admin/usage/summary`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SummaryFilter {
    /// `user`, `provider`, `model` or `day` (UTC; the default).
    #[param(inline)]
    pub group_by: Option<GroupBy>,
    pub user: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    pub offset: Option<i64>,
}

/// One attempt of one request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageRowView {
    pub id: i64,
    pub user_id: String,
    pub request_id: String,
    /// 1-based; fallbacks are later attempts.
    pub attempt: i16,
    pub provider_id: Option<i32>,
    pub model_id: Option<i32>,
    pub provider_slug: Option<String>,
    pub model_name: Option<String>,
    pub power_level: Option<String>,
    pub task_type: Option<String>,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub total_tokens: i32,
    pub cached_tokens: i32,
    #[serde(serialize_with = "serialize_money")]
    #[schema(schema_with = super::schema::money)]
    pub cost_input_usd: Decimal,
    #[serde(serialize_with = "serialize_money")]
    #[schema(schema_with = super::schema::money)]
    pub cost_output_usd: Decimal,
    #[serde(serialize_with = "serialize_money")]
    #[schema(schema_with = super::schema::money)]
    pub cost_total_usd: Decimal,
    /// What the ledger charged for this attempt.
    #[serde(serialize_with = "serialize_money")]
    #[schema(schema_with = super::schema::money)]
    pub charged_usd: Decimal,
    pub used_byok: bool,
    pub stream: bool,
    pub latency_ms: Option<i32>,
    #[schema(value_type = Option<String>)]
    pub tokens_per_second: Option<Decimal>,
    pub status_code: Option<i32>,
    pub error_message: Option<String>,
    pub was_fallback: bool,
    pub fallback_reason: Option<String>,
    pub request_ip: Option<String>,
    pub user_agent: Option<String>,
    pub session_id: Option<String>,
    /// The route that spent the credits (`/v1/chat/completions`, `/v1/messages`,
    /// `/v1/embeddings`); null on rows older than the routes' recording.
    pub route: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// One group of the usage summary.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageSummaryRow {
    /// The user id, provider slug, model or UTC day (`2025-01-31`) of the group.
    pub key: String,
    /// Distinct requests.
    pub requests: i64,
    /// Attempts (a request with fallbacks has several).
    pub attempts: i64,
    /// Attempts that failed (no status, or a status of 400 or more).
    pub errors: i64,
    /// `errors / attempts`, rounded to 4 decimals.
    pub error_rate: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cached_tokens: i64,
    /// Provider cost of the attempts.
    #[serde(serialize_with = "serialize_money")]
    #[schema(schema_with = super::schema::money)]
    pub cost_usd: Decimal,
    /// What the ledger charged.
    #[serde(serialize_with = "serialize_money")]
    #[schema(schema_with = super::schema::money)]
    pub charged_usd: Decimal,
    pub p50_latency_ms: Option<i32>,
    pub p95_latency_ms: Option<i32>,
    pub p99_latency_ms: Option<i32>,
}

/// The summary page and how it was grouped.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageSummary {
    pub group_by: GroupBy,
    pub data: Vec<UsageSummaryRow>,
    pub limit: i64,
    pub offset: i64,
    pub total: i64,
    pub has_more: bool,
}

const CONDITION: &str = "($1::text IS NULL OR user_id = $1) AND ($2::text IS NULL OR provider_slug = $2) \
    AND ($3::text IS NULL OR model_name = $3) AND ($4::timestamptz IS NULL OR created_at >= $4) \
    AND ($5::timestamptz IS NULL OR created_at < $5) AND ($6::text IS NULL OR request_id = $6) \
    AND ($7::text IS NULL OR ($7 = 'ok' AND status_code < 400) \
         OR ($7 = 'error' AND (status_code IS NULL OR status_code >= 400)))";

fn check_range(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Result<(), AdminError> {
    match (from, to) {
        (Some(from), Some(to)) if from > to => {
            Err(AdminError::invalid("from", "from must not be after to"))
        }
        _ => Ok(()),
    }
}

fn row_of(row: &Row) -> Result<UsageRowView, AdminError> {
    Ok(UsageRowView {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        request_id: row.try_get(2)?,
        attempt: row.try_get(3)?,
        provider_id: row.try_get(4)?,
        model_id: row.try_get(5)?,
        provider_slug: row.try_get(6)?,
        model_name: row.try_get(7)?,
        power_level: row.try_get(8)?,
        task_type: row.try_get(9)?,
        prompt_tokens: row.try_get(10)?,
        completion_tokens: row.try_get(11)?,
        total_tokens: row.try_get(12)?,
        cached_tokens: row.try_get(13)?,
        cost_input_usd: row.try_get(14)?,
        cost_output_usd: row.try_get(15)?,
        cost_total_usd: row.try_get(16)?,
        charged_usd: row.try_get(17)?,
        used_byok: row.try_get(18)?,
        stream: row.try_get(19)?,
        latency_ms: row.try_get(20)?,
        tokens_per_second: row.try_get(21)?,
        status_code: row.try_get(22)?,
        error_message: row.try_get(23)?,
        was_fallback: row.try_get(24)?,
        fallback_reason: row.try_get(25)?,
        request_ip: row.try_get(26)?,
        user_agent: row.try_get(27)?,
        session_id: row.try_get(28)?,
        created_at: row.try_get(29)?,
        route: row.try_get(30)?,
    })
}

pub async fn list(
    client: &impl GenericClient,
    filter: &UsageFilter,
) -> Result<Paged<UsageRowView>, AdminError> {
    let page = Page::new(filter.limit, filter.offset)?;
    check_range(filter.from, filter.to)?;
    let status = filter.status.map(UsageStatus::as_str);
    let params: [&(dyn ToSql + Sync); 7] = [
        &filter.user,
        &filter.provider,
        &filter.model,
        &filter.from,
        &filter.to,
        &filter.request_id,
        &status,
    ];
    let (rows, total) = fetch(
        client,
        &format!(
            "SELECT id, user_id, request_id, attempt, provider_id, model_id, provider_slug, model_name, \
             power_level, task_type, prompt_tokens, completion_tokens, total_tokens, cached_tokens, \
             cost_input_usd, cost_output_usd, cost_total_usd, charged_usd, used_byok, stream, latency_ms, \
             tokens_per_second, status_code, error_message, was_fallback, fallback_reason, \
             host(request_ip), user_agent, session_id, created_at, route \
             FROM llm_usage_logs WHERE {CONDITION} ORDER BY created_at DESC, id DESC"
        ),
        &format!("SELECT count(*) FROM llm_usage_logs WHERE {CONDITION}"),
        &params,
        page,
    )
    .await?;
    let data = rows.iter().map(row_of).collect::<Result<Vec<_>, _>>()?;
    Ok(page.result(data, total))
}

pub async fn summary(
    client: &impl GenericClient,
    filter: &SummaryFilter,
) -> Result<UsageSummary, AdminError> {
    let page = Page::new(filter.limit, filter.offset)?;
    check_range(filter.from, filter.to)?;
    let group_by = filter.group_by.unwrap_or_default();
    let key = group_by.key_sql();
    let no_request_id: Option<String> = None;
    let no_status: Option<&str> = None;
    let params: [&(dyn ToSql + Sync); 7] = [
        &filter.user,
        &filter.provider,
        &filter.model,
        &filter.from,
        &filter.to,
        &no_request_id,
        &no_status,
    ];
    let failed = "status_code IS NULL OR status_code >= 400";
    let (rows, total) = fetch(
        client,
        &format!(
            "SELECT {key} AS key, count(DISTINCT request_id), count(*), \
             count(*) FILTER (WHERE {failed}), \
             round((count(*) FILTER (WHERE {failed}))::numeric / count(*), 4)::float8, \
             COALESCE(sum(prompt_tokens), 0)::bigint, COALESCE(sum(completion_tokens), 0)::bigint, \
             COALESCE(sum(total_tokens), 0)::bigint, COALESCE(sum(cached_tokens), 0)::bigint, \
             COALESCE(sum(cost_total_usd), 0), COALESCE(sum(charged_usd), 0), \
             percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms), \
             percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_ms), \
             percentile_disc(0.99) WITHIN GROUP (ORDER BY latency_ms) \
             FROM llm_usage_logs WHERE {CONDITION} GROUP BY 1 ORDER BY 1"
        ),
        &format!("SELECT count(DISTINCT {key}) FROM llm_usage_logs WHERE {CONDITION}"),
        &params,
        page,
    )
    .await?;
    let data = rows
        .iter()
        .map(|row| {
            Ok(UsageSummaryRow {
                key: row.try_get(0)?,
                requests: row.try_get(1)?,
                attempts: row.try_get(2)?,
                errors: row.try_get(3)?,
                error_rate: row.try_get(4)?,
                prompt_tokens: row.try_get(5)?,
                completion_tokens: row.try_get(6)?,
                total_tokens: row.try_get(7)?,
                cached_tokens: row.try_get(8)?,
                cost_usd: row.try_get(9)?,
                charged_usd: row.try_get(10)?,
                p50_latency_ms: row.try_get(11)?,
                p95_latency_ms: row.try_get(12)?,
                p99_latency_ms: row.try_get(13)?,
            })
        })
        .collect::<Result<Vec<_>, AdminError>>()?;
    let paged = page.result(data, total);
    Ok(UsageSummary {
        group_by,
        data: paged.data,
        limit: paged.limit,
        offset: paged.offset,
        total: paged.total,
        has_more: paged.has_more,
    })
}
