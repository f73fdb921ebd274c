//! The error type of the keys layer and its one mapping onto [`ApiError`].

use crate::db::DbError;
use crate::http::ApiError;

use super::envelope::EnvelopeError;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{message}")]
    InvalidInput {
        param: Option<&'static str>,
        message: String,
    },
    #[error("unknown provider `{0}`")]
    UnknownProvider(String),
    #[error("provider `{0}` does not accept user keys (BYOK is not supported for it)")]
    ByokNotSupported(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl KeysError {
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            param: Some(param),
            message: message.into(),
        }
    }
}

impl From<tokio_postgres::Error> for KeysError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Db(DbError::from(error))
    }
}

impl From<deadpool_postgres::PoolError> for KeysError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::Db(DbError::from(error))
    }
}

impl From<KeysError> for ApiError {
    fn from(error: KeysError) -> Self {
        match error {
            KeysError::InvalidInput { param, message } => match param {
                Some(param) => ApiError::invalid_param(param, message),
                None => ApiError::invalid(message),
            },
            KeysError::UnknownProvider(_) | KeysError::NotFound(_) => {
                ApiError::NotFound(error.to_string())
            }
            KeysError::ByokNotSupported(_) => {
                ApiError::invalid_param("provider_slug", error.to_string())
            }
            KeysError::Conflict(message) => ApiError::Conflict(message),
            KeysError::Envelope(envelope) if envelope.is_data_error() => {
                // Tampering, a copied row or a master-key mix-up: worth an operator's look.
                tracing::error!(error = %envelope, "stored BYOK key cannot be decrypted");
                ApiError::Conflict(
                    "the stored key for this provider can no longer be decrypted; store it again with PUT"
                        .into(),
                )
            }
            KeysError::Envelope(envelope) => {
                tracing::error!(error = %envelope, "BYOK key encryption unavailable");
                ApiError::ServiceUnavailable(
                    "the key encryption service is unavailable, try again shortly".into(),
                )
            }
            KeysError::Db(db) => ApiError::from(db),
        }
    }
}
