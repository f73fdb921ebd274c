//! The billing export, for admins: its backlog, a whole billing pass now (export and
//! alerts), and re-queuing refused events.

use axum::extract::State;
use switchboard_core::billing::{self, BacklogView, PassReport};
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

/// Runs one whole billing pass now, the same as the schedule's: the pending budget
/// alerts, then the Lago export, within 25 s (under API Gateway's limit). Each part is
/// reported whatever happened to the other. 503 when neither Lago nor an alert webhook
/// is configured.
#[utoipa::path(post, path = "/admin/billing/export", tag = "billing",
    responses((status = 200, description = "What the pass did", body = PassReport),
        (status = 503, description = "Billing is not configured", body = crate::openapi::ErrorBody)))]
pub async fn export_now(_admin: AdminCaller, State(state): State<AppState>) -> Reply<PassReport> {
    Ok(AppJson(
        billing::run_pass(
            &state.pool,
            &state.http,
            &state.config.billing,
            billing::ADMIN_PASS_BUDGET,
        )
        .await?,
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
