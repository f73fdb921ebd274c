//! Authentication at the edge: the `Caller` / `AdminCaller` extractors. A key is looked up by
//! its SHA-256 and the answer cached in process for a few seconds (`auth::KeyCache`: a
//! warm instance does not query per request, and a revocation takes effect within the TTL).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::auth::{AuthError, Caller, hash_api_key, lookup_key, presented_key};
use crate::state::AppState;

/// Authenticates the request's key (any role).
pub async fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let key = presented_key(&parts.headers).ok_or(AuthError::Missing)?;
    let hash = hash_api_key(key);
    if let Some(cached) = state.key_cache.get(&hash) {
        return Ok(cached?);
    }
    let client = state.pool.get().await.map_err(crate::db::DbError::from)?;
    let found = lookup_key(&**client, &hash).await?;
    state.key_cache.put(hash, found.clone());
    Ok(found?)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).await
    }
}

/// A caller whose key has the admin role (401 without a valid key, 403 with a user key).
pub struct AdminCaller(pub Caller);

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = authenticate(parts, state).await?;
        if !caller.is_admin() {
            return Err(ApiError::Permission("this route needs an admin key".into()));
        }
        Ok(AdminCaller(caller))
    }
}
