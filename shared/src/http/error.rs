//! The one error type every route answers with, rendered in OpenAI's error shape
//! (`{"error": {"message", "type", "code", "param"}}`) with the status table of api.md.
//! Internal errors are logged with their cause and answered with a generic message.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::admin::AdminError;
use crate::auth::AuthError;
use crate::billing::ExportError;
use crate::billing::stripe::StripeError;
use crate::db::DbError;
use crate::keys::KeysError;
use crate::providers::{ProviderError, status_is_retryable};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    /// 400 `context_length_exceeded` (`param: messages`): the prompt alone is longer than
    /// every candidate's context window.
    #[error("{0}")]
    ContextLengthExceeded(String),
    #[error("{0}")]
    Authentication(String),
    #[error("{0}")]
    InsufficientCredits(String),
    #[error("{0}")]
    MonthlyCapExceeded(String),
    #[error("{0}")]
    Permission(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    ModelNotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    RequestTooLarge(String),
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    NoAvailableProvider(String),
    #[error("{0}")]
    UpstreamTimeout(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    ServiceUnavailable(String),
    /// Never shown to the client; logged with its cause chain.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: None,
        }
    }

    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
        }
    }

    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(error))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } | Self::ContextLengthExceeded(_) => StatusCode::BAD_REQUEST,
            Self::Authentication(_) => StatusCode::UNAUTHORIZED,
            Self::InsufficientCredits(_) | Self::MonthlyCapExceeded(_) => {
                StatusCode::PAYMENT_REQUIRED
            }
            Self::Permission(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) | Self::ModelNotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::RequestTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::NoAvailableProvider(_) | Self::ServiceUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// `(type, code)` of the error body.
    pub fn kind(&self) -> (&'static str, &'static str) {
        match self {
            Self::InvalidRequest { .. } => ("invalid_request_error", "invalid_request_error"),
            Self::ContextLengthExceeded(_) => ("invalid_request_error", "context_length_exceeded"),
            Self::Authentication(_) => ("authentication_error", "invalid_api_key"),
            Self::InsufficientCredits(_) => ("insufficient_credits", "insufficient_credits"),
            Self::MonthlyCapExceeded(_) => ("monthly_cap_exceeded", "monthly_cap_exceeded"),
            Self::Permission(_) => ("permission_error", "permission_denied"),
            Self::NotFound(_) => ("not_found", "not_found"),
            Self::ModelNotFound(_) => ("not_found", "model_not_found"),
            Self::MethodNotAllowed(_) => ("invalid_request_error", "method_not_allowed"),
            Self::Conflict(_) => ("conflict", "conflict"),
            Self::RequestTooLarge(_) => ("request_too_large", "request_too_large"),
            Self::RateLimited { .. } => ("rate_limit_exceeded", "rate_limit_exceeded"),
            Self::Upstream(_) => ("upstream_error", "upstream_error"),
            Self::NoAvailableProvider(_) => ("no_available_provider", "no_available_provider"),
            Self::UpstreamTimeout(_) => ("upstream_timeout", "upstream_timeout"),
            Self::NotImplemented(_) => ("not_implemented", "not_implemented"),
            Self::ServiceUnavailable(_) => ("service_unavailable", "service_unavailable"),
            Self::Internal(_) => ("internal_error", "internal_error"),
        }
    }

    /// The JSON body, as sent to clients (also used for SSE `error` events).
    pub fn body(&self) -> serde_json::Value {
        let (kind, code) = self.kind();
        let param = match self {
            Self::InvalidRequest { param, .. } => param.clone(),
            Self::ContextLengthExceeded(_) => Some("messages".into()),
            _ => None,
        };
        json!({ "error": { "message": self.to_string(), "type": kind, "code": code, "param": param } })
    }
}

/// The error shape of an inbound format: OpenAI's `{"error": {...}}` (every route but the
/// Messages API's) or Anthropic's `{"type": "error", "error": {"type", "message"}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    OpenAi,
    Anthropic,
}

impl ApiError {
    /// Anthropic's error type for this error's status.
    fn anthropic_kind(&self) -> &'static str {
        match self.status().as_u16() {
            400 | 405 | 413 => "invalid_request_error",
            401 => "authentication_error",
            402 => "billing_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            504 => "timeout_error",
            _ => "api_error",
        }
    }

    /// The answer in `shape`, with this error's status (and `Retry-After`, and logging).
    pub fn into_response_shaped(self, shape: ErrorShape) -> Response {
        if shape == ErrorShape::OpenAi {
            return self.into_response();
        }
        let body = json!({"type": "error", "error": {"type": self.anthropic_kind(), "message": self.to_string()}});
        let (mut parts, _) = self.into_response().into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(parts, axum::body::Body::from(body.to_string()))
    }

    /// The data of the `event: error` that ends a stream early, in `shape` (in a stream,
    /// Anthropic's type is always `api_error`: the status was sent long before).
    pub fn stream_error_body(&self, shape: ErrorShape) -> serde_json::Value {
        match shape {
            ErrorShape::OpenAi => self.body(),
            ErrorShape::Anthropic => {
                json!({"type": "error", "error": {"type": "api_error", "message": self.to_string()}})
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(source) => {
                tracing::error!(error = %crate::report::error_chain(source.as_ref()), "internal error");
            }
            other if other.status().is_server_error() => {
                tracing::warn!(status = other.status().as_u16(), error = %other, "request failed");
            }
            _ => {}
        }
        let status = self.status();
        let mut response = (status, Json(self.body())).into_response();
        let retry_after = match &self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            Self::ServiceUnavailable(_) => Some(SERVICE_UNAVAILABLE_RETRY_AFTER),
            _ => None,
        };
        if let Some(retry_after) = retry_after {
            let secs = retry_after.as_secs().max(1);
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// How long a client is asked to wait after a 503 `service_unavailable`: the gateway's
/// own dependency or resources (its database, its file descriptors) failed, not the request.
pub const SERVICE_UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(5);

impl ApiError {
    /// 503 `service_unavailable` with `Retry-After`: the gateway's database cannot be used
    /// right now (api.md: never a 500).
    pub fn database_unavailable() -> Self {
        Self::ServiceUnavailable("the database is unavailable, try again shortly".into())
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        if error.is_unavailable() {
            tracing::error!(error = %crate::report::error_chain(&error), "database unavailable");
            return Self::database_unavailable();
        }
        Self::internal(error)
    }
}

/// The core run's errors in api.md's statuses.
impl From<crate::chat::ChatError> for ApiError {
    fn from(error: crate::chat::ChatError) -> Self {
        use crate::chat::ChatError;
        match error {
            ChatError::Invalid { param, message } => Self::InvalidRequest { message, param },
            ChatError::Routing(routing) => Self::from(routing),
            ChatError::Ledger(ledger) => Self::from(ledger),
            ChatError::Db(db) => Self::from(db),
            ChatError::Catalog(catalog) => Self::from(catalog),
            ChatError::Provider(provider) => Self::from(provider),
            ChatError::RateLimited {
                message,
                retry_after,
            } => Self::RateLimited {
                message,
                retry_after,
            },
            ChatError::UpstreamTimeout(message) => Self::UpstreamTimeout(message),
            ChatError::Upstream(message) => Self::Upstream(message),
            ChatError::NoAvailableProvider(message) => Self::NoAvailableProvider(message),
            ChatError::Unavailable(message) => Self::ServiceUnavailable(message),
            ChatError::Internal(source) => Self::Internal(source),
        }
    }
}

impl From<crate::catalog::CatalogError> for ApiError {
    fn from(error: crate::catalog::CatalogError) -> Self {
        use crate::catalog::CatalogError;
        match error {
            CatalogError::Pool(pool) => Self::from(DbError::Pool(pool)),
            CatalogError::Postgres(pg) => Self::from(DbError::Postgres(pg)),
            other => Self::internal(other),
        }
    }
}

impl From<crate::ledger::LedgerError> for ApiError {
    fn from(error: crate::ledger::LedgerError) -> Self {
        use crate::ledger::LedgerError;
        match error {
            LedgerError::InsufficientCredits { .. } => Self::InsufficientCredits(error.to_string()),
            LedgerError::MonthlyCapExceeded { .. } => Self::MonthlyCapExceeded(error.to_string()),
            LedgerError::AccountDisabled => Self::Authentication("this account is disabled".into()),
            LedgerError::NoAccount => {
                Self::InsufficientCredits("this account has no credits".into())
            }
            LedgerError::InvalidAmount(_)
            | LedgerError::RequestIdReused(_)
            | LedgerError::IdempotencyKeyReused(_) => Self::internal(error),
            LedgerError::Db(db) => Self::from(db),
        }
    }
}

/// Routing errors in api.md's statuses (404 / 400 / 403 / 503).
impl From<crate::routing::RoutingError> for ApiError {
    fn from(error: crate::routing::RoutingError) -> Self {
        use crate::routing::RoutingError;
        match error {
            RoutingError::ModelNotFound { .. } => Self::ModelNotFound(error.to_string()),
            RoutingError::WrongModelType { .. } => Self::InvalidRequest {
                message: error.to_string(),
                param: Some("model".into()),
            },
            RoutingError::TierTooLow { .. } => Self::Permission(error.to_string()),
            RoutingError::ContextLengthExceeded { .. } => {
                Self::ContextLengthExceeded(error.to_string())
            }
            RoutingError::NoAvailableProvider { .. } => {
                Self::NoAvailableProvider(error.to_string())
            }
        }
    }
}

impl From<ProviderError> for ApiError {
    /// The answer when this error ends the request (no candidate left, or not retryable).
    fn from(error: ProviderError) -> ApiError {
        match &error {
            ProviderError::InvalidRequest { param, message }
            | ProviderError::Unsupported { param, message, .. } => ApiError::InvalidRequest {
                message: message.clone(),
                param: param.clone(),
            },
            ProviderError::Timeout { .. } => ApiError::UpstreamTimeout(error.to_string()),
            // The gateway's own resources, not the provider: 503 with Retry-After, and no
            // internal detail (the log line and the usage row have it).
            ProviderError::Local { failure, .. } => {
                ApiError::ServiceUnavailable(format!("{failure}; try again shortly"))
            }
            ProviderError::Status { status: 404, .. } => ApiError::ModelNotFound(error.to_string()),
            ProviderError::Status { status, .. }
                if !status_is_retryable(*status) && *status < 500 =>
            {
                ApiError::invalid(format!("the upstream rejected the request: {error}"))
            }
            _ => ApiError::Upstream(error.to_string()),
        }
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

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        match error {
            AdminError::Invalid { param, message } => ApiError::InvalidRequest { message, param },
            AdminError::NotFound(message) => ApiError::NotFound(message),
            AdminError::Conflict(message) => ApiError::Conflict(message),
            AdminError::Db(db) => ApiError::from(db),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        ApiError::Authentication(error.to_string())
    }
}

impl From<ExportError> for ApiError {
    fn from(error: ExportError) -> Self {
        match error {
            ExportError::NotConfigured => ApiError::ServiceUnavailable(error.to_string()),
            ExportError::Db(db) => ApiError::from(db),
        }
    }
}

impl From<StripeError> for ApiError {
    fn from(error: StripeError) -> Self {
        match error {
            StripeError::NotConfigured => ApiError::ServiceUnavailable(error.to_string()),
            StripeError::InvalidAmount(message) => ApiError::invalid_param("amount_usd", message),
            StripeError::Upstream(_) => ApiError::Upstream(error.to_string()),
            StripeError::BadSignature(_) | StripeError::MalformedEvent => {
                ApiError::invalid(error.to_string())
            }
            StripeError::Db(db) => ApiError::from(db),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let err = ApiError::internal(std::io::Error::other("password=hunter2"));
        let body = err.body().to_string();
        assert!(!body.contains("hunter2"));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn shape_matches_openai() {
        let body = ApiError::invalid_param("model", "model is required").body();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "model");
        assert_eq!(body["error"]["message"], "model is required");
        let body = ApiError::ModelNotFound("no such model".into()).body();
        assert_eq!(body["error"]["code"], "model_not_found");
        assert!(body["error"]["param"].is_null());
    }

    #[test]
    fn rate_limit_sets_retry_after() {
        let response = ApiError::RateLimited {
            message: "slow down".into(),
            retry_after: Duration::from_secs(7),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }

    #[test]
    fn the_gateways_own_failure_is_a_503_with_retry_after_not_a_502() {
        let error = ApiError::from(ProviderError::Local {
            failure: crate::local_failure::LocalFailure::FileDescriptors,
            detail: "tcp open error: Too many open files (os error 24)".into(),
        });
        assert_eq!(error.kind(), ("service_unavailable", "service_unavailable"));
        let body = error.body().to_string();
        assert!(body.contains("out of file descriptors"), "{body}");
        assert!(!body.contains("os error"), "{body}");
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }

    #[test]
    fn admin_errors_map_to_api_statuses() {
        use axum::http::StatusCode;
        let cases = [
            (
                crate::admin::AdminError::invalid("weight", "bad"),
                StatusCode::BAD_REQUEST,
            ),
            (
                crate::admin::AdminError::NotFound("x".into()),
                StatusCode::NOT_FOUND,
            ),
            (
                crate::admin::AdminError::Conflict("x".into()),
                StatusCode::CONFLICT,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(ApiError::from(error).status(), status);
        }
    }
}
