//! [`ChatError`]: why a run could not answer — the core's own error. `http/error.rs` is the
//! one place it becomes a status and each inbound format's error body.

use std::time::Duration;

use crate::catalog::CatalogError;
use crate::db::DbError;
use crate::ledger::LedgerError;
use crate::providers::ProviderError;
use crate::routing::RoutingError;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The request itself (400), naming the parameter at fault.
    #[error("{message}")]
    Invalid {
        param: Option<String>,
        message: String,
    },
    /// No candidate: the model is unknown, the tier too low, the prompt too long for every
    /// window, or every candidate filtered out.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// The ledger refused the hold (402) or could not be used.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The gateway's database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The catalog could not be loaded (its database).
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A provider's failure that ends the request (not retryable, or no candidate left).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// A rate limit of the gateway's own (the key's, a provider's configured one, a BYOK
    /// key cooling down), with when to come back.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    /// The run's deadline (or a stream's time limit) passed.
    #[error("{0}")]
    UpstreamTimeout(String),
    /// Every candidate failed upstream (or a stream broke after it began).
    #[error("{0}")]
    Upstream(String),
    /// No candidate could be called (no usable credential left).
    #[error("{0}")]
    NoAvailableProvider(String),
    /// The gateway's own resources failed (descriptors, ports, its resolver): 503.
    #[error("{0}")]
    Unavailable(String),
    /// A bug: never shown; logged with its cause.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ChatError {
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            param: Some(param.into()),
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            param: None,
            message: message.into(),
        }
    }

    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(error))
    }
}
