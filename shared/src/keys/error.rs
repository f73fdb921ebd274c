//! The error type of the keys layer and its one mapping onto [`ApiError`].

use crate::db::DbError;

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
