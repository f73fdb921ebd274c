//! The caller's own usage (`GET /v1/usage`, `GET /v1/usage/summary`): the admin usage
//! queries with the user fixed to the key's own account, for the console's user views
//! (its usage chart by day and model, its recent requests). A user sees only their rows.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use switchboard_core::admin::Paged;
use switchboard_core::admin::usage::{
    self, GroupBy, SummaryFilter, UsageFilter, UsageRowView, UsageStatus, UsageSummary,
};
use switchboard_core::auth::Caller;
use switchboard_core::db::DbError;
use switchboard_core::http::{ApiError, AppJson};
use switchboard_core::state::AppState;
use utoipa::IntoParams;

use crate::Reply;

/// Filters of the caller's own usage rows.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OwnUsageFilter {
    /// A provider slug (`openai`).
    pub provider: Option<String>,
    /// A model as logged (`gpt-4o`).
    pub model: Option<String>,
    /// `ok` or `error`.
    #[param(inline)]
    pub status: Option<UsageStatus>,
    /// From this instant (inclusive), RFC 3339.
    pub from: Option<DateTime<Utc>>,
    /// Until this instant (exclusive), RFC 3339.
    pub to: Option<DateTime<Utc>>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    pub offset: Option<i64>,
}

/// Grouping of the caller's own usage.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OwnSummaryFilter {
    /// `day` (UTC, the default), `model` or `provider`.
    #[param(inline)]
    pub group_by: Option<GroupBy>,
    /// From this instant (inclusive), RFC 3339.
    pub from: Option<DateTime<Utc>>,
    /// Until this instant (exclusive), RFC 3339.
    pub to: Option<DateTime<Utc>>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    pub offset: Option<i64>,
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(value)| value)
        .map_err(|rejection| ApiError::invalid(rejection.body_text()))
}

/// The caller's own usage rows (one per attempt), newest first.
#[utoipa::path(get, path = "/v1/usage", tag = "usage", params(OwnUsageFilter),
    responses((status = 200, description = "A page of the caller's usage rows", body = Paged<UsageRowView>)))]
pub(crate) async fn own_usage(
    State(state): State<AppState>,
    caller: Caller,
    filter: Result<Query<OwnUsageFilter>, QueryRejection>,
) -> Reply<Paged<UsageRowView>> {
    let filter = query(filter)?;
    let client = state.pool.get().await.map_err(DbError::from)?;
    let filter = UsageFilter {
        user: Some(caller.user_id),
        provider: filter.provider,
        model: filter.model,
        request_id: None,
        status: filter.status,
        from: filter.from,
        to: filter.to,
        limit: filter.limit,
        offset: filter.offset,
    };
    Ok(AppJson(usage::list(&**client, &filter).await?))
}

/// The caller's own usage grouped by UTC day, model or provider.
#[utoipa::path(get, path = "/v1/usage/summary", tag = "usage", params(OwnSummaryFilter),
    responses((status = 200, description = "A page of groups", body = UsageSummary)))]
pub(crate) async fn own_usage_summary(
    State(state): State<AppState>,
    caller: Caller,
    filter: Result<Query<OwnSummaryFilter>, QueryRejection>,
) -> Reply<UsageSummary> {
    let filter = query(filter)?;
    if filter.group_by == Some(GroupBy::User) {
        return Err(ApiError::invalid_param(
            "group_by",
            "group_by must be day, model or provider",
        ));
    }
    let client = state.pool.get().await.map_err(DbError::from)?;
    let filter = SummaryFilter {
        group_by: filter.group_by,
        user: Some(caller.user_id),
        provider: None,
        model: None,
        from: filter.from,
        to: filter.to,
        limit: filter.limit,
        offset: filter.offset,
    };
    Ok(AppJson(usage::summary(&**client, &filter).await?))
}
