//! The billing export, for admins: its backlog, a pass now, and re-queuing refused events.

use axum::extract::State;
use switchboard_core::billing::{self, BacklogView, ExportReport};
use switchboard_core::http::{AdminCaller, AppJson};
use switchboard_core::state::AppState;

use crate::{Reply, db};

/// The export backlog: events not yet in Lago (count and oldest), and those Lago refused
/// with their errors (the most recent 100).
#[utoipa::path(get, path = "/admin/billing/export", tag = "billing",
    responses((status = 200, description = "The backlog", body = BacklogView)))]
pub async fn export_backlog(
    _admin: AdminCaller,
    State(state): State<AppState>,
) -> Reply<BacklogView> {
    let client = db(&state).await?;
    Ok(AppJson(billing::backlog(&**client).await?))
}

/// Runs one export pass now (the same pass as the schedule's). 503 when no Lago URL and
/// key are configured.
#[utoipa::path(post, path = "/admin/billing/export", tag = "billing",
    responses((status = 200, description = "What the pass did", body = ExportReport),
        (status = 503, description = "The export is not configured", body = crate::openapi::ErrorBody)))]
pub async fn export_now(_admin: AdminCaller, State(state): State<AppState>) -> Reply<ExportReport> {
    Ok(AppJson(
        billing::export_once(&state.pool, &state.http, &state.config.billing).await?,
    ))
}

/// `{"requeued": N}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Requeued {
    pub requeued: u64,
}

/// Puts the events Lago refused back in the queue (after fixing their cause in Lago).
#[utoipa::path(post, path = "/admin/billing/export/retry", tag = "billing",
    responses((status = 200, description = "How many events were re-queued", body = Requeued)))]
pub async fn export_retry(_admin: AdminCaller, State(state): State<AppState>) -> Reply<Requeued> {
    let client = db(&state).await?;
    Ok(AppJson(Requeued {
        requeued: billing::requeue_failed(&**client).await?,
    }))
}
