//! The admin API's domain layer (`/admin/*`): validation of admin input and the SQL for
//! providers, models, routing rules, users (accounts), credits, gateway keys, usage and the
//! audit log. Every write runs in one transaction together with its audit row.
//!
//! Handlers (`functions/admin`) only extract, call a function here and answer. Errors are
//! [`AdminError`]s; SQL errors caused by input (unique, foreign-key and check violations,
//! out-of-range numbers) become 400/404/409, never 500.

pub mod audit_log;
pub mod credits;
pub mod error;
pub mod input;
pub mod models;
pub mod page;
pub mod probe;
pub mod providers;
pub mod rules;
pub mod schema;
pub mod usage;
pub mod users;

use serde_json::Value;
use uuid::Uuid;

use crate::audit::{self, AuditEntry};

pub use error::AdminError;
pub use page::{Page, Paged};

/// Who is making an admin change: the admin key and its account, and the request id
/// (all three end up in the audit row).
#[derive(Debug, Clone)]
pub struct Actor {
    pub key_id: Uuid,
    pub user_id: String,
    pub request_id: Option<String>,
}

impl Actor {
    /// Writes the audit row of a change; call it inside the change's transaction.
    pub(crate) async fn audit(
        &self,
        client: &impl tokio_postgres::GenericClient,
        action: &str,
        entity_type: &str,
        entity_id: &str,
        before: Option<Value>,
        after: Option<Value>,
    ) -> Result<(), AdminError> {
        audit::record(
            client,
            &AuditEntry {
                actor_key_id: Some(self.key_id),
                actor: &self.user_id,
                action,
                entity_type,
                entity_id: Some(entity_id),
                before,
                after,
                request_id: self.request_id.as_deref(),
            },
        )
        .await?;
        Ok(())
    }
}

/// JSON of a view for the audit log (views are plain data; failure is impossible in
/// practice and recorded as `null` rather than failing the write).
pub(crate) fn audit_json(view: &impl serde::Serialize) -> Option<Value> {
    serde_json::to_value(view).ok()
}
