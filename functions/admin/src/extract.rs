//! Extractors of the admin routes: the acting admin, and path / query parameters whose
//! rejections are answered in the OpenAI error shape (400) like every other failure.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use switchboard_core::admin::Actor;
use switchboard_core::http::{AdminCaller, ApiError, RequestId};
use switchboard_core::state::AppState;

/// The admin making a change: 401 without a valid key, 403 with a user key. Carries what
/// the audit row records (key id, account, request id).
pub struct AdminActor(pub Actor);

impl FromRequestParts<AppState> for AdminActor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let AdminCaller(caller) = AdminCaller::from_request_parts(parts, state).await?;
        let request_id = parts.extensions.get::<RequestId>().map(|id| id.0.clone());
        Ok(AdminActor(Actor {
            key_id: caller.key_id,
            user_id: caller.user_id,
            request_id,
        }))
    }
}

/// `Path<T>` with 400 (naming the parameter) on a value that does not parse.
pub struct AdminPath<T>(pub T);

impl<T, S> FromRequestParts<S> for AdminPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(AdminPath(value)),
            Err(rejection) => Err(ApiError::invalid_param(
                "id",
                format!("invalid path parameter: {}", rejection.body_text()),
            )),
        }
    }
}

/// `Query<T>` with 400 on unknown parameters or values that do not parse.
pub struct AdminQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for AdminQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(AdminQuery(value)),
            Err(rejection) => Err(ApiError::invalid(format!(
                "invalid query parameters: {}",
                rejection.body_text()
            ))),
        }
    }
}
