//! The error of the Stripe part of billing (its own file: the event reader, the store and
//! the settlement beside it return it too).

use crate::db::DbError;
use crate::ledger::LedgerError;

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error(
        "Stripe is not configured: set SWITCHBOARD_STRIPE_API_KEY, SWITCHBOARD_STRIPE_SUCCESS_URL and SWITCHBOARD_STRIPE_CANCEL_URL"
    )]
    NotConfigured,
    #[error("{0}")]
    InvalidAmount(String),
    /// Stripe could not be reached or refused the call (the message never holds a key).
    #[error("Stripe: {0}")]
    Upstream(String),
    #[error("the webhook signature is {0}")]
    BadSignature(&'static str),
    #[error("the webhook body is not a Stripe event")]
    MalformedEvent,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<LedgerError> for StripeError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::Db(db) => Self::Db(db),
            other => Self::Db(DbError::Corrupt(other.to_string())),
        }
    }
}

impl From<tokio_postgres::Error> for StripeError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Db(DbError::from(error))
    }
}

impl From<deadpool_postgres::PoolError> for StripeError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::Db(DbError::from(error))
    }
}
