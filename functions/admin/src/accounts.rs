//! Handlers of the account routes: users, their credits and ledger, and gateway keys.

use axum::extract::State;
use axum::http::StatusCode;
use switchboard_core::admin::Paged;
use switchboard_core::admin::credits::{
    self, CreditRequest, CreditResult, LedgerEntryView, LedgerFilter,
};
use switchboard_core::admin::users::{self, NewUser, UserFilter, UserPatch, UserView};
use switchboard_core::auth::issued::{
    self as api_keys, ApiKeyFilter, ApiKeyView, IssuedApiKey, NewApiKey,
};
use switchboard_core::http::{AdminCaller, ApiError, AppJson};
use switchboard_core::state::AppState;
use uuid::Uuid;

use crate::extract::{AdminActor, AdminPath, AdminQuery};
use crate::openapi::ErrorBody;
use crate::{Reply, db};

// ---------------------------------------------------------------- users

/// List users with their balance, held credits and month spend.
#[utoipa::path(get, path = "/admin/users", tag = "users", params(UserFilter),
    responses((status = 200, description = "A page of users", body = Paged<UserView>)))]
pub async fn list_users(
    _admin: AdminCaller,
    State(state): State<AppState>,
    AdminQuery(filter): AdminQuery<UserFilter>,
) -> Reply<Paged<UserView>> {
    let client = db(&state).await?;
    Ok(AppJson(users::list(&**client, &filter).await?))
}

/// Create a user (an account) with a tier and an optional monthly cap.
#[utoipa::path(post, path = "/admin/users", tag = "users", request_body = NewUser,
    responses((status = 201, description = "Created", body = UserView),
        (status = 409, description = "The id is taken", body = ErrorBody)))]
pub async fn create_user(
    AdminActor(actor): AdminActor,
    State(state): State<AppState>,
    AppJson(input): AppJson<NewUser>,
) -> Result<(StatusCode, AppJson<UserView>), ApiError> {
    let mut client = db(&state).await?;
    let view = users::create(&mut client, &actor, input).await?;
    Ok((StatusCode::CREATED, AppJson(view)))
}

/// Read a user with their balance, held credits and month spend.
#[utoipa::path(get, path = "/admin/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "The user", body = UserView),
        (status = 404, description = "No such user", body = ErrorBody)))]
pub async fn get_user(
    _admin: AdminCaller,
    State(state): State<AppState>,
    AdminPath(id): AdminPath<String>,
) -> Reply<UserView> {
    let client = db(&state).await?;
    Ok(AppJson(users::get(&**client, &id).await?))
}

/// Change a user's tier, monthly cap (`null` removes it), status or default power level.
/// Takes effect for the user's keys at once in this process, within the key cache TTL
/// elsewhere.
#[utoipa::path(patch, path = "/admin/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")), request_body = UserPatch,
    responses((status = 200, description = "The updated user", body = UserView),
        (status = 404, description = "No such user", body = ErrorBody)))]
pub async fn update_user(
    AdminActor(actor): AdminActor,
    State(state): State<AppState>,
    AdminPath(id): AdminPath<String>,
    AppJson(patch): AppJson<UserPatch>,
) -> Reply<UserView> {
    let mut client = db(&state).await?;
    let view = users::update(&mut client, &actor, &id, patch).await?;
    // Cached key lookups carry the account's tier and status.
    state.key_cache.clear();
    Ok(AppJson(view))
}

// ---------------------------------------------------------------- credits

/// Add credits (positive `amount_usd`: a top-up) or take them away (negative: an
/// adjustment). Repeating a request with the same `idempotency_key` changes nothing and
/// answers 200 with the original entry; reusing the key for different content is a 409.
#[utoipa::path(post, path = "/admin/users/{id}/credits", tag = "users",
    params(("id" = String, Path, description = "User id")), request_body = CreditRequest,
    responses((status = 201, description = "Credited", body = CreditResult),
        (status = 200, description = "Already applied (same idempotency key)", body = CreditResult),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "idempotency_key reused for different content", body = ErrorBody)))]
pub async fn credit_user(
    AdminActor(actor): AdminActor,
    State(state): State<AppState>,
    AdminPath(id): AdminPath<String>,
    AppJson(request): AppJson<CreditRequest>,
) -> Result<(StatusCode, AppJson<CreditResult>), ApiError> {
    let mut client = db(&state).await?;
    let result = credits::credit(&mut client, &actor, &id, request).await?;
    let status = if result.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, AppJson(result)))
}

/// A user's ledger entries, newest first.
#[utoipa::path(get, path = "/admin/users/{id}/ledger", tag = "users",
    params(("id" = String, Path, description = "User id"), LedgerFilter),
    responses((status = 200, description = "A page of ledger entries", body = Paged<LedgerEntryView>),
        (status = 404, description = "No such user", body = ErrorBody)))]
pub async fn user_ledger(
    _admin: AdminCaller,
    State(state): State<AppState>,
    AdminPath(id): AdminPath<String>,
    AdminQuery(filter): AdminQuery<LedgerFilter>,
) -> Reply<Paged<LedgerEntryView>> {
    let client = db(&state).await?;
    Ok(AppJson(credits::list(&**client, &id, &filter).await?))
}

// ---------------------------------------------------------------- gateway keys

/// Issue a gateway key for a user. The `key` is in this answer only.
#[utoipa::path(post, path = "/admin/users/{id}/api-keys", tag = "api-keys",
    params(("id" = String, Path, description = "User id")), request_body = NewApiKey,
    responses((status = 201, description = "Issued (the key is shown once)", body = IssuedApiKey),
        (status = 404, description = "No such user", body = ErrorBody)))]
pub async fn create_api_key(
    AdminActor(actor): AdminActor,
    State(state): State<AppState>,
    AdminPath(id): AdminPath<String>,
    AppJson(input): AppJson<NewApiKey>,
) -> Result<(StatusCode, AppJson<IssuedApiKey>), ApiError> {
    let mut client = db(&state).await?;
    let issued = api_keys::create(&mut client, &actor, &id, input).await?;
    Ok((StatusCode::CREATED, AppJson(issued)))
}

/// A user's gateway keys (never the keys themselves), newest first.
#[utoipa::path(get, path = "/admin/users/{id}/api-keys", tag = "api-keys",
    params(("id" = String, Path, description = "User id"), ApiKeyFilter),
    responses((status = 200, description = "A page of keys", body = Paged<ApiKeyView>),
        (status = 404, description = "No such user", body = ErrorBody)))]
pub async fn list_api_keys(
    _admin: AdminCaller,
    State(state): State<AppState>,
    AdminPath(id): AdminPath<String>,
    AdminQuery(filter): AdminQuery<ApiKeyFilter>,
) -> Reply<Paged<ApiKeyView>> {
    let client = db(&state).await?;
    Ok(AppJson(api_keys::list(&**client, &id, &filter).await?))
}

/// Revoke a gateway key: refused at once by this instance, within the key cache TTL
/// (default 5 s) by others. Revoking a revoked key is a no-op; the last active admin key
/// cannot be revoked (409).
#[utoipa::path(delete, path = "/admin/api-keys/{id}", tag = "api-keys",
    params(("id" = Uuid, Path, description = "Key id")),
    responses((status = 204, description = "Revoked"),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 409, description = "The last active admin key", body = ErrorBody)))]
pub async fn revoke_api_key(
    AdminActor(actor): AdminActor,
    State(state): State<AppState>,
    AdminPath(id): AdminPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let mut client = db(&state).await?;
    api_keys::revoke(&mut client, &actor, id).await?;
    state.key_cache.clear();
    Ok(StatusCode::NO_CONTENT)
}
