//! Handlers of the catalog routes: providers (with their health history and a live test
//! call), models and routing rules. Every committed write tells the catalog cache.

use axum::extract::State;
use axum::http::StatusCode;
use switchboard_core::admin::providers::{
    self, DeleteOptions, NewProvider, PageParams, ProviderFilter, ProviderHealth, ProviderPatch,
    ProviderView,
};
use switchboard_core::admin::{
    Paged,
    models::{self, ModelFilter, ModelPatch, ModelView, NewModel},
    probe::{self, ProbeResult},
    rules::{self, NewRule, RuleFilter, RulePatch, RuleView},
};
use switchboard_core::health::{self, HealthRunSummary, Trigger};
use switchboard_core::http::{AdminCaller, ApiError, AppJson};
use switchboard_core::state::AppState;

use crate::extract::{AdminActor, AdminPath, AdminQuery};
use crate::openapi::ErrorBody;
use crate::{Reply, catalog_changed, db};

// ---------------------------------------------------------------- providers

/// List providers.
#[utoipa::path(get, path = "/admin/providers", tag = "providers", params(ProviderFilter),
    responses((status = 200, description = "A page of providers", body = Paged<ProviderView>)))]
pub async fn list_providers(
    _admin: AdminCaller,
    State(state): State<AppState>,
    AdminQuery(filter): AdminQuery<ProviderFilter>,
) -> Reply<Paged<ProviderView>> {
    let client = db(&state).await?;
    Ok(AppJson(providers::list(&**client, &filter).await?))
}

/// Create a provider. `base_url` / `health_url` must be https and must not resolve to a
/// loopback, private, link-local or unspecified address (unless
/// `SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS=1`).
#[utoipa::path(post, path = "/admin/providers", tag = "providers", request_body = NewProvider,
    responses((status = 201, description = "Created", body = ProviderView),
        (status = 409, description = "Duplicate provider_slug", body = ErrorBody)))]
pub async fn create_provider(
    AdminActor(actor): AdminActor,
    State(state): State<AppState>,
    AppJson(input): AppJson<NewProvider>,
) -> Result<(StatusCode, AppJson<ProviderView>), ApiError> {
    let mut client = db(&state).await?;
    let view = providers::create(
        &mut client,
        &actor,
        input,
        state.config.server.allow_private_upstreams,
    )
    .await?;
    catalog_changed(&state);
    Ok((StatusCode::CREATED, AppJson(view)))
}

/// Read a provider.
#[utoipa::path(get, path = "/admin/providers/{id}", tag = "providers",
    params(("id" = i32, Path, description = "Provider id")),
    responses((status = 200, description = "The provider", body = ProviderView),
        (status = 404, description = "No such provider", body = ErrorBody)))]
pub async fn get_provider(
    _admin: AdminCaller,
    State(state): State<AppState>,
    AdminPath(id): AdminPath<i32>,
) -> Reply<ProviderView> {
    let client = db(&state).await?;
    Ok(AppJson(providers::get(&**client, id).await?))
}

/// Change some fields of a provider (absent fields are kept; `null` clears a nullable one).
/// Setting `is_active` to false records `disabled_reason: admin`; setting it to true clears
/// the reason, the health strikes and the circuit breaker.
#[utoipa::path(patch, path = "/admin/providers/{id}", tag = "providers",
    params(("id" = i32, Path, description = "Provider id")), request_body = ProviderPatch,
    responses((status = 200, description = "The updated provider", body = ProviderView),
        (status = 404, description = "No such provider", body = ErrorBody),
        (status = 409, description = "Duplicate provider_slug", body = ErrorBody)))]
pub async fn update_provider(
    AdminActor(actor): AdminActor,
    State(state): State<AppState>,
    AdminPath(id): AdminPath<i32>,
    AppJson(patch): AppJson<ProviderPatch>,
) -> Reply<ProviderView> {
    let mut client = db(&state).await?;
    let view = providers::update(
        &mut client,
        &actor,
        id,
        patch,
        state.config.server.allow_private_upstreams,
    )
    .await?;
    catalog_changed(&state);
    Ok(AppJson(view))
}

/// Delete a provider. While models or users' stored keys depend on it: 409, unless
/// `?cascade=true` (which deletes them, and their routing rules, too).
#[utoipa::path(delete, path = "/admin/providers/{id}", tag = "providers",
    params(("id" = i32, Path, description = "Provider id"), DeleteOptions),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such provider", body = ErrorBody),
        (status = 409, description = "Models or stored user keys depend on it", body = ErrorBody)))]
pub async fn delete_provider(
    AdminActor(actor): AdminActor,
    State(state): State<AppState>,
    AdminPath(id): AdminPath<i32>,
    AdminQuery(options): AdminQuery<DeleteOptions>,
) -> Result<StatusCode, ApiError> {
    let mut client = db(&state).await?;
    providers::delete(&mut client, &actor, id, options.cascade.unwrap_or(false)).await?;
    catalog_changed(&state);
    Ok(StatusCode::NO_CONTENT)
}

/// The provider's current health and its recent health checks, newest first.
#[utoipa::path(get, path = "/admin/providers/{id}/health", tag = "providers",
    params(("id" = i32, Path, description = "Provider id"), PageParams),
    responses((status = 200, description = "Health and recent checks", body = ProviderHealth),
        (status = 404, description = "No such provider", body = ErrorBody)))]
pub async fn provider_health(
    _admin: AdminCaller,
    State(state): State<AppState>,
    AdminPath(id): AdminPath<i32>,
    AdminQuery(params): AdminQuery<PageParams>,
) -> Reply<ProviderHealth> {
    let client = db(&state).await?;
    Ok(AppJson(providers::health(&**client, id, &params).await?))
}

/// A minimal live call to the provider with the platform's system key: a one-token chat
/// completion with the provider's cheapest model through the provider adapter, or, when it
/// offers no model yet, `GET {base_url}/models` with its auth header. Answers 200 whatever
/// the provider did: `ok`, `status`, `latency_ms` and `error` tell how it went.
#[utoipa::path(post, path = "/admin/providers/{id}/test", tag = "providers",
    params(("id" = i32, Path, description = "Provider id")),
    responses((status = 200, description = "What the provider answered", body = ProbeResult),
        (status = 404, description = "No such provider", body = ErrorBody)))]
pub async fn test_provider(
    _admin: AdminCaller,
    State(state): State<AppState>,
    AdminPath(id): AdminPath<i32>,
) -> Reply<ProbeResult> {
    let (provider, model) = {
        let client = db(&state).await?;
        let provider = providers::get(&**client, id).await?;
        let model = probe::test_model(&**client, id).await?;
        (provider, model)
    };
    let key = state.system_keys.get(&provider.provider_slug).await;
    Ok(AppJson(
        probe::probe(
            &state.providers,
            &provider,
            model.as_deref(),
            key.as_ref(),
            state.config.server.allow_private_upstreams,
        )
        .await,
    ))
}

/// Run the health check now: the same run as the scheduled health-check function (probe
/// every active provider and those the monitor disabled, record status and history,
/// disable after consecutive `down` results or enable again on recovery, release expired
/// credit holds, prune old counters and history). Takes no body. Answers 200 with the run's
/// summary; when another run is in progress, 200 with `skipped: true` and nothing done.
#[utoipa::path(post, path = "/admin/health-check", tag = "providers",
    responses((status = 200, description = "The run's summary", body = HealthRunSummary)))]
pub async fn run_health_check(
    _admin: AdminCaller,
    State(state): State<AppState>,
) -> Reply<HealthRunSummary> {
    Ok(AppJson(health::run(&state.health(), Trigger::Admin).await?))
}

// ---------------------------------------------------------------- models

/// List models.
#[utoipa::path(get, path = "/admin/models", tag = "models", params(ModelFilter),
    responses((status = 200, description = "A page of models", body = Paged<ModelView>)))]
pub async fn list_models(
    _admin: AdminCaller,
    State(state): State<AppState>,
    AdminQuery(filter): AdminQuery<ModelFilter>,
) -> Reply<Paged<ModelView>> {
    let client = db(&state).await?;
    Ok(AppJson(models::list(&**client, &filter).await?))
}

/// Create a model (prices in USD per one million tokens, ≥ 0, strings or numbers).
#[utoipa::path(post, path = "/admin/models", tag = "models", request_body = NewModel,
    responses((status = 201, description = "Created", body = ModelView),
        (status = 409, description = "The provider already offers this model_id", body = ErrorBody)))]
pub async fn create_model(
    AdminActor(actor): AdminActor,
    State(state): State<AppState>,
    AppJson(input): AppJson<NewModel>,
) -> Result<(StatusCode, AppJson<ModelView>), ApiError> {
    let mut client = db(&state).await?;
    let view = models::create(&mut client, &actor, input).await?;
    catalog_changed(&state);
    Ok((StatusCode::CREATED, AppJson(view)))
}

/// Read a model.
#[utoipa::path(get, path = "/admin/models/{id}", tag = "models",
    params(("id" = i32, Path, description = "Model row id")),
    responses((status = 200, description = "The model", body = ModelView),
        (status = 404, description = "No such model", body = ErrorBody)))]
pub async fn get_model(
    _admin: AdminCaller,
    State(state): State<AppState>,
    AdminPath(id): AdminPath<i32>,
) -> Reply<ModelView> {
    let client = db(&state).await?;
    Ok(AppJson(models::get(&**client, id).await?))
}

/// Change some fields of a model.
#[utoipa::path(patch, path = "/admin/models/{id}", tag = "models",
    params(("id" = i32, Path, description = "Model row id")), request_body = ModelPatch,
    responses((status = 200, description = "The updated model", body = ModelView),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 409, description = "The provider already offers this model_id", body = ErrorBody)))]
pub async fn update_model(
    AdminActor(actor): AdminActor,
    State(state): State<AppState>,
    AdminPath(id): AdminPath<i32>,
    AppJson(patch): AppJson<ModelPatch>,
) -> Reply<ModelView> {
    let mut client = db(&state).await?;
    let view = models::update(&mut client, &actor, id, patch).await?;
    catalog_changed(&state);
    Ok(AppJson(view))
}

/// Delete a model. While routing rules point at it: 409, unless `?cascade=true`.
#[utoipa::path(delete, path = "/admin/models/{id}", tag = "models",
    params(("id" = i32, Path, description = "Model row id"), DeleteOptions),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 409, description = "Routing rules point at it", body = ErrorBody)))]
pub async fn delete_model(
    AdminActor(actor): AdminActor,
    State(state): State<AppState>,
    AdminPath(id): AdminPath<i32>,
    AdminQuery(options): AdminQuery<DeleteOptions>,
) -> Result<StatusCode, ApiError> {
    let mut client = db(&state).await?;
    models::delete(&mut client, &actor, id, options.cascade.unwrap_or(false)).await?;
    catalog_changed(&state);
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- routing rules

/// List routing rules.
#[utoipa::path(get, path = "/admin/routing-rules", tag = "routing-rules", params(RuleFilter),
    responses((status = 200, description = "A page of routing rules", body = Paged<RuleView>)))]
pub async fn list_rules(
    _admin: AdminCaller,
    State(state): State<AppState>,
    AdminQuery(filter): AdminQuery<RuleFilter>,
) -> Reply<Paged<RuleView>> {
    let client = db(&state).await?;
    Ok(AppJson(rules::list(&**client, &filter).await?))
}

/// Create a routing rule.
#[utoipa::path(post, path = "/admin/routing-rules", tag = "routing-rules", request_body = NewRule,
    responses((status = 201, description = "Created", body = RuleView)))]
pub async fn create_rule(
    AdminActor(actor): AdminActor,
    State(state): State<AppState>,
    AppJson(input): AppJson<NewRule>,
) -> Result<(StatusCode, AppJson<RuleView>), ApiError> {
    let mut client = db(&state).await?;
    let view = rules::create(&mut client, &actor, input).await?;
    catalog_changed(&state);
    Ok((StatusCode::CREATED, AppJson(view)))
}

/// Read a routing rule.
#[utoipa::path(get, path = "/admin/routing-rules/{id}", tag = "routing-rules",
    params(("id" = i32, Path, description = "Routing rule id")),
    responses((status = 200, description = "The rule", body = RuleView),
        (status = 404, description = "No such rule", body = ErrorBody)))]
pub async fn get_rule(
    _admin: AdminCaller,
    State(state): State<AppState>,
    AdminPath(id): AdminPath<i32>,
) -> Reply<RuleView> {
    let client = db(&state).await?;
    Ok(AppJson(rules::get(&**client, id).await?))
}

/// Change some fields of a routing rule.
#[utoipa::path(patch, path = "/admin/routing-rules/{id}", tag = "routing-rules",
    params(("id" = i32, Path, description = "Routing rule id")), request_body = RulePatch,
    responses((status = 200, description = "The updated rule", body = RuleView),
        (status = 404, description = "No such rule", body = ErrorBody)))]
pub async fn update_rule(
    AdminActor(actor): AdminActor,
    State(state): State<AppState>,
    AdminPath(id): AdminPath<i32>,
    AppJson(patch): AppJson<RulePatch>,
) -> Reply<RuleView> {
    let mut client = db(&state).await?;
    let view = rules::update(&mut client, &actor, id, patch).await?;
    catalog_changed(&state);
    Ok(AppJson(view))
}

/// Delete a routing rule.
#[utoipa::path(delete, path = "/admin/routing-rules/{id}", tag = "routing-rules",
    params(("id" = i32, Path, description = "Routing rule id")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such rule", body = ErrorBody)))]
pub async fn delete_rule(
    AdminActor(actor): AdminActor,
    State(state): State<AppState>,
    AdminPath(id): AdminPath<i32>,
) -> Result<StatusCode, ApiError> {
    let mut client = db(&state).await?;
    rules::delete(&mut client, &actor, id).await?;
    catalog_changed(&state);
    Ok(StatusCode::NO_CONTENT)
}
