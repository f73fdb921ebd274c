//! The audit log: one row per administrative write (who, what, which entity, before/after).
//! Callers pass JSON with secrets already masked; [`mask_secrets`] helps with that.

use serde_json::Value;
use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::db::DbError;

/// One audit entry.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    /// The gateway key that made the change (`None` for the system itself).
    pub actor_key_id: Option<Uuid>,
    /// A readable actor: a user id, or `system:health-check`.
    pub actor: &'a str,
    /// e.g. `provider.create`, `provider.update`, `api_key.revoke`.
    pub action: &'a str,
    pub entity_type: &'a str,
    pub entity_id: Option<&'a str>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub request_id: Option<&'a str>,
}

/// Writes an entry; run it in the same transaction as the change it records.
pub async fn record(client: &impl GenericClient, entry: &AuditEntry<'_>) -> Result<i64, DbError> {
    let before = entry.before.as_ref().map(mask_secrets);
    let after = entry.after.as_ref().map(mask_secrets);
    let row = client
        .query_typed_one(
            "INSERT INTO audit_log (actor_key_id, actor, action, entity_type, entity_id, before, after, request_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[
                (&entry.actor_key_id, Type::UUID),
                (&entry.actor, Type::TEXT),
                (&entry.action, Type::TEXT),
                (&entry.entity_type, Type::TEXT),
                (&entry.entity_id, Type::TEXT),
                (&before, Type::JSONB),
                (&after, Type::JSONB),
                (&entry.request_id, Type::TEXT),
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// Field names whose values are never stored in the audit log.
const SECRET_FIELDS: &[&str] = &[
    "api_key",
    "key",
    "key_hash",
    "encrypted_api_key",
    "wrapped_data_key",
    "nonce",
    "password",
    "secret",
    "token",
];

/// Replaces the values of secret-looking fields (recursively) with `"[redacted]"`.
pub fn mask_secrets(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let secret = SECRET_FIELDS.iter().any(|s| k.eq_ignore_ascii_case(s));
                    let masked = if secret && !v.is_null() {
                        Value::String("[redacted]".into())
                    } else {
                        mask_secrets(v)
                    };
                    (k.clone(), masked)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(mask_secrets).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secrets_are_masked_recursively() {
        let masked = mask_secrets(&json!({
            "provider_slug": "openai",
            "api_key": "sk-live-123",
            "nested": [{"password": "hunter2", "ok": 1}],
            "key": null
        }));
        assert_eq!(masked["provider_slug"], "openai");
        assert_eq!(masked["api_key"], "[redacted]");
        assert_eq!(masked["nested"][0]["password"], "[redacted]");
        assert_eq!(masked["nested"][0]["ok"], 1);
        assert!(masked["key"].is_null());
        assert!(!masked.to_string().contains("hunter2"));
    }
}
