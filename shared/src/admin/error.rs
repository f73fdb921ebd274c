//! [`AdminError`]: what the admin layer answers, and how input-caused SQL errors map to it.

use crate::db::DbError;
use crate::ledger::LedgerError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Bad input (400), naming the offending field when there is one.
    #[error("{message}")]
    Invalid {
        param: Option<String>,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(DbError),
}

impl AdminError {
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        AdminError::Invalid {
            param: Some(param.to_string()),
            message: message.into(),
        }
    }
}

impl From<tokio_postgres::Error> for AdminError {
    fn from(error: tokio_postgres::Error) -> Self {
        AdminError::from(DbError::Postgres(error))
    }
}

impl From<deadpool_postgres::PoolError> for AdminError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        AdminError::Db(DbError::Pool(error))
    }
}

impl From<DbError> for AdminError {
    /// Input-caused database errors become client errors; anything else stays internal.
    fn from(error: DbError) -> Self {
        let db = match &error {
            DbError::Postgres(e) => e.as_db_error(),
            _ => None,
        };
        let Some(db) = db else {
            return AdminError::Db(error);
        };
        let column = db
            .detail()
            .and_then(key_column_of_detail)
            .or_else(|| db.column().map(str::to_string));
        match db.code().code() {
            // unique_violation
            "23505" => AdminError::Conflict(match (&column, db.detail()) {
                (Some(column), _) => format!("a row with this {column} already exists"),
                _ => "conflicts with an existing row".into(),
            }),
            // foreign_key_violation: the referenced row is missing (or, on delete, still used).
            "23503" => match column {
                Some(column) if db.message().contains("insert or update") => AdminError::Invalid {
                    message: format!("{column} refers to a row that does not exist"),
                    param: Some(column),
                },
                _ => AdminError::Conflict("the row is still referenced by other rows".into()),
            },
            // check_violation
            "23514" => {
                let param = db
                    .constraint()
                    .and_then(|c| check_constraint_column(c, db.table()));
                AdminError::Invalid {
                    message: match &param {
                        Some(param) => format!("invalid value for {param}"),
                        None => "the values violate a constraint of the catalog".into(),
                    },
                    param,
                }
            }
            // not_null_violation
            "23502" => AdminError::Invalid {
                message: format!(
                    "{} must not be null",
                    column.as_deref().unwrap_or("a field")
                ),
                param: column,
            },
            // numeric_value_out_of_range, string_data_right_truncation, invalid_text_representation,
            // datetime_field_overflow, invalid_datetime_format
            "22003" | "22001" | "22P02" | "22008" | "22007" => AdminError::Invalid {
                param: None,
                message: "a value is out of range or malformed".into(),
            },
            _ => AdminError::Db(error),
        }
    }
}

/// `Key (provider_slug)=(openai) already exists.` → `provider_slug`.
fn key_column_of_detail(detail: &str) -> Option<String> {
    let rest = detail.strip_prefix("Key (")?;
    let end = rest.find(')')?;
    let columns = &rest[..end];
    // Composite keys: `(provider_id, model_id)` names both.
    Some(columns.to_string())
}

/// `llm_routing_rules_weight_check` on table `llm_routing_rules` → `weight`.
fn check_constraint_column(constraint: &str, table: Option<&str>) -> Option<String> {
    let name = constraint.strip_suffix("_check")?;
    let name = match table {
        Some(table) => name.strip_prefix(table)?.strip_prefix('_')?,
        None => name,
    };
    (!name.is_empty()).then(|| name.to_string())
}

impl From<LedgerError> for AdminError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::NoAccount => AdminError::NotFound("no such user".into()),
            LedgerError::InvalidAmount(message) => AdminError::Invalid {
                param: Some("amount_usd".into()),
                message: format!("amount_usd: {message}"),
            },
            LedgerError::IdempotencyKeyReused(key) => AdminError::Conflict(format!(
                "idempotency_key `{key}` was already used for a different credit"
            )),
            LedgerError::Db(db) => AdminError::from(db),
            other => AdminError::Db(DbError::Corrupt(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_read_from_details_and_constraints() {
        assert_eq!(
            key_column_of_detail("Key (provider_slug)=(openai) already exists.").as_deref(),
            Some("provider_slug")
        );
        assert_eq!(
            key_column_of_detail("Key (provider_id, model_id)=(1, x) already exists.").as_deref(),
            Some("provider_id, model_id")
        );
        assert_eq!(key_column_of_detail("something else"), None);
        assert_eq!(
            check_constraint_column("llm_routing_rules_weight_check", Some("llm_routing_rules"))
                .as_deref(),
            Some("weight")
        );
        assert_eq!(
            check_constraint_column("llm_routing_rules_check", Some("llm_routing_rules")),
            None
        );
    }
}
