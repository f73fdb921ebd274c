//! Handlers of the read-only reports: usage rows, the usage summary and the audit log.

use axum::extract::State;
use switchboard_core::admin::Paged;
use switchboard_core::admin::audit_log::{self, AuditEntryView, AuditFilter};
use switchboard_core::admin::usage::{
    self, SummaryFilter, UsageFilter, UsageRowView, UsageSummary,
};
use switchboard_core::http::{AdminCaller, AppJson};
use switchboard_core::state::AppState;

use crate::extract::AdminQuery;
use crate::{Reply, db};

/// Usage rows (one per attempt), newest first.
#[utoipa::path(get, path = "/admin/usage", tag = "usage", params(UsageFilter),
    responses((status = 200, description = "A page of usage rows", body = Paged<UsageRowView>)))]
pub async fn list_usage(
    _admin: AdminCaller,
    State(state): State<AppState>,
    AdminQuery(filter): AdminQuery<UsageFilter>,
) -> Reply<Paged<UsageRowView>> {
    let client = db(&state).await?;
    Ok(AppJson(usage::list(&**client, &filter).await?))
}

/// Usage grouped by user, provider, model or UTC day: requests, attempts, tokens, cost,
/// error rate, p50/p95 latency.
#[utoipa::path(get, path = "/admin/usage/summary", tag = "usage", params(SummaryFilter),
    responses((status = 200, description = "A page of groups", body = UsageSummary)))]
pub async fn usage_summary(
    _admin: AdminCaller,
    State(state): State<AppState>,
    AdminQuery(filter): AdminQuery<SummaryFilter>,
) -> Reply<UsageSummary> {
    let client = db(&state).await?;
    Ok(AppJson(usage::summary(&**client, &filter).await?))
}

/// The audit log: one entry per admin write, newest first, secrets masked.
#[utoipa::path(get, path = "/admin/audit-log", tag = "audit", params(AuditFilter),
    responses((status = 200, description = "A page of audit entries", body = Paged<AuditEntryView>)))]
pub async fn list_audit_log(
    _admin: AdminCaller,
    State(state): State<AppState>,
    AdminQuery(filter): AdminQuery<AuditFilter>,
) -> Reply<Paged<AuditEntryView>> {
    let client = db(&state).await?;
    Ok(AppJson(audit_log::list(&**client, &filter).await?))
}
