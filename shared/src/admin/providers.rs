//! Providers (`llm_providers`): list, read, create, partial update, delete (refused while
//! models or stored user keys depend on it, unless cascading), and the health history.
//! `base_url` / `health_url` pass the SSRF rules of [`crate::ssrf`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::{GenericClient, Row};
use utoipa::{IntoParams, ToSchema};

use super::input::{check_positive, check_slug, check_text, nullable, present};
use super::page::{Page, Paged, fetch};
use super::{Actor, AdminError, audit_json};
use crate::catalog::{ApiFormat, AuthType, HealthStatus, Tier};
use crate::db::DbError;
use crate::ssrf::check_upstream_url;

/// A provider as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ProviderView {
    pub id: i32,
    pub provider_name: String,
    pub provider_slug: String,
    #[schema(schema_with = super::schema::api_format)]
    pub api_format: ApiFormat,
    pub base_url: String,
    pub health_url: Option<String>,
    #[schema(schema_with = super::schema::auth_type)]
    pub auth_type: AuthType,
    pub supports_streaming: bool,
    pub supports_function_calling: bool,
    pub supports_vision: bool,
    /// The provider also serves OpenAI's Responses API (`/responses`): requests to
    /// `/v1/responses` go to it natively (reasoning items and their encrypted content
    /// survive a turn). Only for `api_format: openai`.
    pub supports_responses_api: bool,
    pub rate_limit_rpm: Option<i32>,
    pub rate_limit_tpm: Option<i32>,
    pub rate_limit_rpd: Option<i32>,
    pub is_active: bool,
    pub is_byok_supported: bool,
    pub is_system_provider: bool,
    #[schema(schema_with = super::schema::tier)]
    pub min_tier_required: Tier,
    /// Read-only: maintained by the health monitor.
    #[schema(schema_with = super::schema::health_status)]
    pub health_status: HealthStatus,
    /// Read-only.
    pub health_last_checked: Option<DateTime<Utc>>,
    /// Read-only.
    pub health_response_time_ms: Option<i32>,
    /// Read-only: `admin` or `health` when the provider is inactive.
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /admin/providers`. Omitted fields take the schema's defaults.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProvider {
    pub provider_name: String,
    /// `^[a-z0-9][a-z0-9_-]{0,62}$`, unique.
    pub provider_slug: String,
    /// Default `openai`.
    #[serde(default)]
    #[schema(schema_with = super::schema::api_format_nullable)]
    pub api_format: Option<ApiFormat>,
    /// https only; must not resolve to a private address (unless private upstreams are allowed).
    pub base_url: String,
    #[serde(default)]
    pub health_url: Option<String>,
    /// Default `bearer`.
    #[serde(default)]
    #[schema(schema_with = super::schema::auth_type_nullable)]
    pub auth_type: Option<AuthType>,
    /// Default true.
    #[serde(default)]
    pub supports_streaming: Option<bool>,
    /// Default false.
    #[serde(default)]
    pub supports_function_calling: Option<bool>,
    /// Default false.
    #[serde(default)]
    pub supports_vision: Option<bool>,
    /// Default false. Only for `api_format: openai`: the provider also serves the
    /// Responses API, which `/v1/responses` then uses natively.
    #[serde(default)]
    pub supports_responses_api: Option<bool>,
    #[serde(default)]
    pub rate_limit_rpm: Option<i32>,
    #[serde(default)]
    pub rate_limit_tpm: Option<i32>,
    #[serde(default)]
    pub rate_limit_rpd: Option<i32>,
    /// Default true.
    #[serde(default)]
    pub is_active: Option<bool>,
    /// Default true.
    #[serde(default)]
    pub is_byok_supported: Option<bool>,
    /// Default false.
    #[serde(default)]
    pub is_system_provider: Option<bool>,
    /// Default `free`.
    #[serde(default)]
    #[schema(schema_with = super::schema::tier_nullable)]
    pub min_tier_required: Option<Tier>,
}

/// `PATCH /admin/providers/{id}`: only the fields present change; `null` clears a nullable
/// field.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderPatch {
    #[serde(default, deserialize_with = "present")]
    pub provider_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub provider_slug: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::schema::api_format)]
    pub api_format: Option<ApiFormat>,
    #[serde(default, deserialize_with = "present")]
    pub base_url: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub health_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::schema::auth_type)]
    pub auth_type: Option<AuthType>,
    #[serde(default, deserialize_with = "present")]
    pub supports_streaming: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub supports_function_calling: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub supports_vision: Option<bool>,
    /// Only for `api_format: openai`.
    #[serde(default, deserialize_with = "present")]
    pub supports_responses_api: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i32>)]
    pub rate_limit_rpm: Option<Option<i32>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i32>)]
    pub rate_limit_tpm: Option<Option<i32>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i32>)]
    pub rate_limit_rpd: Option<Option<i32>>,
    #[serde(default, deserialize_with = "present")]
    pub is_active: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub is_byok_supported: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub is_system_provider: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::schema::tier)]
    pub min_tier_required: Option<Tier>,
}

/// Filters of `GET /admin/providers`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProviderFilter {
    pub is_active: Option<bool>,
    #[param(schema_with = super::schema::health_status)]
    pub health_status: Option<HealthStatus>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    pub offset: Option<i64>,
}

/// `DELETE /admin/providers/{id}` and `/admin/models/{id}` options.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteOptions {
    /// Also delete what depends on the row (models, routing rules, stored user keys).
    pub cascade: Option<bool>,
}

/// `GET /admin/providers/{id}/health` paging.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    pub offset: Option<i64>,
}

/// One row of `provider_health_checks`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthCheckView {
    pub id: i64,
    pub provider_id: i32,
    #[schema(schema_with = super::schema::health_status)]
    pub status: HealthStatus,
    pub response_time_ms: Option<i32>,
    pub http_status: Option<i32>,
    pub error: Option<String>,
    pub checked_at: DateTime<Utc>,
}

/// A provider's current health and its recent checks, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProviderHealth {
    pub provider_id: i32,
    pub provider_slug: String,
    #[schema(schema_with = super::schema::health_status)]
    pub health_status: HealthStatus,
    pub health_last_checked: Option<DateTime<Utc>>,
    pub health_response_time_ms: Option<i32>,
    pub is_active: bool,
    pub disabled_reason: Option<String>,
    pub data: Vec<HealthCheckView>,
    pub limit: i64,
    pub offset: i64,
    pub total: i64,
    pub has_more: bool,
}

/// The writable columns, as stored.
#[derive(Debug, Clone, PartialEq)]
struct ProviderFields {
    provider_name: String,
    provider_slug: String,
    api_format: ApiFormat,
    base_url: String,
    health_url: Option<String>,
    auth_type: AuthType,
    supports_streaming: bool,
    supports_function_calling: bool,
    supports_vision: bool,
    supports_responses_api: bool,
    rate_limit_rpm: Option<i32>,
    rate_limit_tpm: Option<i32>,
    rate_limit_rpd: Option<i32>,
    is_active: bool,
    is_byok_supported: bool,
    is_system_provider: bool,
    min_tier_required: Tier,
}

impl ProviderFields {
    fn of(view: &ProviderView) -> Self {
        ProviderFields {
            provider_name: view.provider_name.clone(),
            provider_slug: view.provider_slug.clone(),
            api_format: view.api_format,
            base_url: view.base_url.clone(),
            health_url: view.health_url.clone(),
            auth_type: view.auth_type,
            supports_streaming: view.supports_streaming,
            supports_function_calling: view.supports_function_calling,
            supports_vision: view.supports_vision,
            supports_responses_api: view.supports_responses_api,
            rate_limit_rpm: view.rate_limit_rpm,
            rate_limit_tpm: view.rate_limit_tpm,
            rate_limit_rpd: view.rate_limit_rpd,
            is_active: view.is_active,
            is_byok_supported: view.is_byok_supported,
            is_system_provider: view.is_system_provider,
            min_tier_required: view.min_tier_required,
        }
    }

    /// The checks that need no network.
    fn check(&self) -> Result<(), AdminError> {
        check_text("provider_name", &self.provider_name, 1, 200)?;
        check_slug("provider_slug", &self.provider_slug)?;
        check_positive("rate_limit_rpm", self.rate_limit_rpm)?;
        check_positive("rate_limit_tpm", self.rate_limit_tpm)?;
        check_positive("rate_limit_rpd", self.rate_limit_rpd)?;
        self.check_responses_api("supports_responses_api")?;
        self.check_signing("auth_type")
    }

    /// Bedrock is signed with the platform's AWS credentials and nothing else is (the
    /// schema's CHECK says so too).
    fn check_signing(&self, param: &str) -> Result<(), AdminError> {
        let bedrock = self.api_format == ApiFormat::Bedrock;
        if bedrock != (self.auth_type == AuthType::AwsSigv4) {
            return Err(AdminError::invalid(
                param,
                "api_format `bedrock` goes with auth_type `aws_sigv4` (requests signed with the functions' AWS role), and only with it",
            ));
        }
        Ok(())
    }

    /// Only an OpenAI-format provider serves the Responses API (the schema's CHECK says
    /// so too); `param` names the field the request got wrong.
    fn check_responses_api(&self, param: &str) -> Result<(), AdminError> {
        if self.supports_responses_api && self.api_format != ApiFormat::OpenAi {
            return Err(AdminError::invalid(
                param,
                format!(
                    "supports_responses_api is only for providers with api_format `openai` (this one is `{}`); set it to false to use another format",
                    self.api_format.as_str()
                ),
            ));
        }
        Ok(())
    }
}

const COLUMNS: &str = "id, provider_name, provider_slug, api_format, base_url, health_url, auth_type, \
    supports_streaming, supports_function_calling, supports_vision, rate_limit_rpm, rate_limit_tpm, \
    rate_limit_rpd, is_active, is_byok_supported, is_system_provider, min_tier_required, \
    health_status, health_last_checked, health_response_time_ms, disabled_reason, created_at, updated_at, \
    supports_responses_api";

/// Parses a vocabulary column; the schema's CHECK constraints make failure a corrupt row.
pub(crate) fn vocab<T: std::str::FromStr>(row: &Row, index: usize) -> Result<T, AdminError> {
    let text: String = row.try_get(index)?;
    text.parse()
        .map_err(|_| AdminError::Db(DbError::Corrupt(format!("unexpected value `{text}`"))))
}

pub(crate) fn vocab_opt<T: std::str::FromStr>(
    row: &Row,
    index: usize,
) -> Result<Option<T>, AdminError> {
    let text: Option<String> = row.try_get(index)?;
    text.map(|text| {
        text.parse()
            .map_err(|_| AdminError::Db(DbError::Corrupt(format!("unexpected value `{text}`"))))
    })
    .transpose()
}

fn view_of(row: &Row) -> Result<ProviderView, AdminError> {
    Ok(ProviderView {
        id: row.try_get(0)?,
        provider_name: row.try_get(1)?,
        provider_slug: row.try_get(2)?,
        api_format: vocab(row, 3)?,
        base_url: row.try_get(4)?,
        health_url: row.try_get(5)?,
        auth_type: vocab(row, 6)?,
        supports_streaming: row.try_get(7)?,
        supports_function_calling: row.try_get(8)?,
        supports_vision: row.try_get(9)?,
        rate_limit_rpm: row.try_get(10)?,
        rate_limit_tpm: row.try_get(11)?,
        rate_limit_rpd: row.try_get(12)?,
        is_active: row.try_get(13)?,
        is_byok_supported: row.try_get(14)?,
        is_system_provider: row.try_get(15)?,
        min_tier_required: vocab(row, 16)?,
        health_status: vocab(row, 17)?,
        health_last_checked: row.try_get(18)?,
        health_response_time_ms: row.try_get(19)?,
        disabled_reason: row.try_get(20)?,
        created_at: row.try_get(21)?,
        updated_at: row.try_get(22)?,
        supports_responses_api: row.try_get(23)?,
    })
}

fn not_found(id: i32) -> AdminError {
    AdminError::NotFound(format!("no provider with id {id}"))
}

pub async fn list(
    client: &impl GenericClient,
    filter: &ProviderFilter,
) -> Result<Paged<ProviderView>, AdminError> {
    let page = Page::new(filter.limit, filter.offset)?;
    let health = filter.health_status.map(HealthStatus::as_str);
    let condition =
        "($1::boolean IS NULL OR is_active = $1) AND ($2::text IS NULL OR health_status = $2)";
    let (rows, total) = fetch(
        client,
        &format!("SELECT {COLUMNS} FROM llm_providers WHERE {condition} ORDER BY id"),
        &format!("SELECT count(*) FROM llm_providers WHERE {condition}"),
        &[&filter.is_active, &health],
        page,
    )
    .await?;
    let data = rows.iter().map(view_of).collect::<Result<Vec<_>, _>>()?;
    Ok(page.result(data, total))
}

pub async fn get(client: &impl GenericClient, id: i32) -> Result<ProviderView, AdminError> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM llm_providers WHERE id = $1"),
            &[&id],
        )
        .await?
        .ok_or_else(|| not_found(id))?;
    view_of(&row)
}

async fn check_urls(
    base_url: Option<&str>,
    health_url: Option<&str>,
    allow_private: bool,
) -> Result<(), AdminError> {
    if let Some(url) = base_url {
        check_upstream_url(url, allow_private)
            .await
            .map_err(|e| AdminError::invalid("base_url", format!("base_url {e}")))?;
    }
    if let Some(url) = health_url {
        check_upstream_url(url, allow_private)
            .await
            .map_err(|e| AdminError::invalid("health_url", format!("health_url {e}")))?;
    }
    Ok(())
}

pub async fn create(
    client: &mut tokio_postgres::Client,
    actor: &Actor,
    input: NewProvider,
    allow_private_upstreams: bool,
) -> Result<ProviderView, AdminError> {
    let fields = ProviderFields {
        provider_name: input.provider_name,
        provider_slug: input.provider_slug,
        api_format: input.api_format.unwrap_or(ApiFormat::OpenAi),
        base_url: input.base_url.trim().to_string(),
        health_url: input.health_url.map(|u| u.trim().to_string()),
        auth_type: input.auth_type.unwrap_or(AuthType::Bearer),
        supports_streaming: input.supports_streaming.unwrap_or(true),
        supports_function_calling: input.supports_function_calling.unwrap_or(false),
        supports_vision: input.supports_vision.unwrap_or(false),
        supports_responses_api: input.supports_responses_api.unwrap_or(false),
        rate_limit_rpm: input.rate_limit_rpm,
        rate_limit_tpm: input.rate_limit_tpm,
        rate_limit_rpd: input.rate_limit_rpd,
        is_active: input.is_active.unwrap_or(true),
        is_byok_supported: input.is_byok_supported.unwrap_or(true),
        is_system_provider: input.is_system_provider.unwrap_or(false),
        min_tier_required: input.min_tier_required.unwrap_or(Tier::Free),
    };
    fields.check()?;
    check_urls(
        Some(&fields.base_url),
        fields.health_url.as_deref(),
        allow_private_upstreams,
    )
    .await?;

    let tx = client.transaction().await?;
    let disabled_reason = (!fields.is_active).then_some("admin");
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO llm_providers (provider_name, provider_slug, api_format, base_url, health_url, \
                 auth_type, supports_streaming, supports_function_calling, supports_vision, rate_limit_rpm, \
                 rate_limit_tpm, rate_limit_rpd, is_active, is_byok_supported, is_system_provider, \
                 min_tier_required, disabled_reason, supports_responses_api) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
                 RETURNING {COLUMNS}"
            ),
            &[
                &fields.provider_name,
                &fields.provider_slug,
                &fields.api_format.as_str(),
                &fields.base_url,
                &fields.health_url,
                &fields.auth_type.as_str(),
                &fields.supports_streaming,
                &fields.supports_function_calling,
                &fields.supports_vision,
                &fields.rate_limit_rpm,
                &fields.rate_limit_tpm,
                &fields.rate_limit_rpd,
                &fields.is_active,
                &fields.is_byok_supported,
                &fields.is_system_provider,
                &fields.min_tier_required.as_str(),
                &disabled_reason,
                &fields.supports_responses_api,
            ],
        )
        .await?;
    let view = view_of(&row)?;
    actor
        .audit(
            &tx,
            "provider.create",
            "provider",
            &view.id.to_string(),
            None,
            audit_json(&view),
        )
        .await?;
    tx.commit().await?;
    Ok(view)
}

pub async fn update(
    client: &mut tokio_postgres::Client,
    actor: &Actor,
    id: i32,
    patch: ProviderPatch,
    allow_private_upstreams: bool,
) -> Result<ProviderView, AdminError> {
    // URLs are resolved before the transaction opens (DNS can be slow).
    let base_url = patch.base_url.as_deref().map(str::trim);
    let health_url = patch
        .health_url
        .as_ref()
        .and_then(|u| u.as_deref().map(str::trim));
    check_urls(base_url, health_url, allow_private_upstreams).await?;

    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM llm_providers WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await?
        .ok_or_else(|| not_found(id))?;
    let before = view_of(&row)?;
    let old = ProviderFields::of(&before);
    let mut new = old.clone();
    if let Some(v) = patch.provider_name {
        new.provider_name = v;
    }
    if let Some(v) = patch.provider_slug {
        new.provider_slug = v;
    }
    if let Some(v) = patch.api_format {
        new.api_format = v;
    }
    if let Some(v) = base_url {
        new.base_url = v.to_string();
    }
    if let Some(v) = patch.health_url {
        new.health_url = v.map(|u| u.trim().to_string());
    }
    if let Some(v) = patch.auth_type {
        new.auth_type = v;
    }
    if let Some(v) = patch.supports_streaming {
        new.supports_streaming = v;
    }
    if let Some(v) = patch.supports_function_calling {
        new.supports_function_calling = v;
    }
    if let Some(v) = patch.supports_vision {
        new.supports_vision = v;
    }
    if let Some(v) = patch.supports_responses_api {
        new.supports_responses_api = v;
    }
    if let Some(v) = patch.rate_limit_rpm {
        new.rate_limit_rpm = v;
    }
    if let Some(v) = patch.rate_limit_tpm {
        new.rate_limit_tpm = v;
    }
    if let Some(v) = patch.rate_limit_rpd {
        new.rate_limit_rpd = v;
    }
    if let Some(v) = patch.is_active {
        new.is_active = v;
    }
    if let Some(v) = patch.is_byok_supported {
        new.is_byok_supported = v;
    }
    if let Some(v) = patch.is_system_provider {
        new.is_system_provider = v;
    }
    if let Some(v) = patch.min_tier_required {
        new.min_tier_required = v;
    }
    // A format change that the provider's Responses API flag no longer fits is the
    // format's fault unless the flag was set in the same request.
    if patch.supports_responses_api.is_none() {
        new.check_responses_api("api_format")?;
    }
    new.check()?;
    // An explicit `is_active: false` on a provider the health monitor disabled makes it the
    // admin's decision, so the monitor will not re-enable it when it recovers.
    let admin_takes_over = patch.is_active == Some(false)
        && !old.is_active
        && before.disabled_reason.as_deref() == Some("health");
    if new == old && !admin_takes_over {
        return Ok(before);
    }
    // Switching `is_active` is an admin decision: disabling records why, enabling clears the
    // health monitor's strikes and the circuit breaker so the provider gets a fresh start.
    let activation = match (old.is_active, new.is_active) {
        (true, false) => "disable",
        (false, true) => "enable",
        _ if admin_takes_over => "disable",
        _ => "keep",
    };
    let row = tx
        .query_one(
            &format!(
                "UPDATE llm_providers SET provider_name = $2, provider_slug = $3, api_format = $4, \
                 base_url = $5, health_url = $6, auth_type = $7, supports_streaming = $8, \
                 supports_function_calling = $9, supports_vision = $10, rate_limit_rpm = $11, \
                 rate_limit_tpm = $12, rate_limit_rpd = $13, is_active = $14, is_byok_supported = $15, \
                 is_system_provider = $16, min_tier_required = $17, supports_responses_api = $19, \
                 disabled_reason = CASE $18::text WHEN 'disable' THEN 'admin' WHEN 'enable' THEN NULL ELSE disabled_reason END, \
                 health_consecutive_down = CASE $18::text WHEN 'enable' THEN 0 ELSE health_consecutive_down END, \
                 breaker_consecutive_failures = CASE $18::text WHEN 'enable' THEN 0 ELSE breaker_consecutive_failures END, \
                 breaker_open_until = CASE $18::text WHEN 'enable' THEN NULL ELSE breaker_open_until END \
                 WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[
                &id,
                &new.provider_name,
                &new.provider_slug,
                &new.api_format.as_str(),
                &new.base_url,
                &new.health_url,
                &new.auth_type.as_str(),
                &new.supports_streaming,
                &new.supports_function_calling,
                &new.supports_vision,
                &new.rate_limit_rpm,
                &new.rate_limit_tpm,
                &new.rate_limit_rpd,
                &new.is_active,
                &new.is_byok_supported,
                &new.is_system_provider,
                &new.min_tier_required.as_str(),
                &activation,
                &new.supports_responses_api,
            ],
        )
        .await?;
    let after = view_of(&row)?;
    actor
        .audit(
            &tx,
            "provider.update",
            "provider",
            &id.to_string(),
            audit_json(&before),
            audit_json(&after),
        )
        .await?;
    tx.commit().await?;
    Ok(after)
}

/// Deletes a provider. While models or users' stored keys depend on it, only with
/// `cascade` (which deletes them, and the models' routing rules, too).
pub async fn delete(
    client: &mut tokio_postgres::Client,
    actor: &Actor,
    id: i32,
    cascade: bool,
) -> Result<(), AdminError> {
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM llm_providers WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await?
        .ok_or_else(|| not_found(id))?;
    let before = view_of(&row)?;
    let counts = tx
        .query_one(
            "SELECT (SELECT count(*) FROM llm_models WHERE provider_id = $1),
                    (SELECT count(*) FROM llm_routing_rules r JOIN llm_models m ON m.id = r.model_id
                     WHERE m.provider_id = $1),
                    (SELECT count(*) FROM user_api_keys WHERE provider_id = $1)",
            &[&id],
        )
        .await?;
    let (models, rules, user_keys): (i64, i64, i64) =
        (counts.try_get(0)?, counts.try_get(1)?, counts.try_get(2)?);
    if (models > 0 || user_keys > 0) && !cascade {
        return Err(AdminError::Conflict(format!(
            "provider {id} still has {models} model(s) and {user_keys} stored user key(s); \
             delete them first or pass ?cascade=true"
        )));
    }
    tx.execute("DELETE FROM llm_providers WHERE id = $1", &[&id])
        .await?;
    let mut before_json = audit_json(&before);
    if let Some(serde_json::Value::Object(map)) = before_json.as_mut() {
        map.insert(
            "deleted_with_it".into(),
            json!({"models": models, "routing_rules": rules, "user_api_keys": user_keys}),
        );
    }
    actor
        .audit(
            &tx,
            "provider.delete",
            "provider",
            &id.to_string(),
            before_json,
            None,
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn health(
    client: &impl GenericClient,
    id: i32,
    params: &PageParams,
) -> Result<ProviderHealth, AdminError> {
    let page = Page::new(params.limit, params.offset)?;
    let provider = get(client, id).await?;
    let (rows, total) = fetch(
        client,
        "SELECT id, provider_id, status, response_time_ms, http_status, error, checked_at \
         FROM provider_health_checks WHERE provider_id = $1 ORDER BY checked_at DESC, id DESC",
        "SELECT count(*) FROM provider_health_checks WHERE provider_id = $1",
        &[&id],
        page,
    )
    .await?;
    let data = rows
        .iter()
        .map(|row| {
            Ok(HealthCheckView {
                id: row.try_get(0)?,
                provider_id: row.try_get(1)?,
                status: vocab(row, 2)?,
                response_time_ms: row.try_get(3)?,
                http_status: row.try_get(4)?,
                error: row.try_get(5)?,
                checked_at: row.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, AdminError>>()?;
    let paged = page.result(data, total);
    Ok(ProviderHealth {
        provider_id: provider.id,
        provider_slug: provider.provider_slug,
        health_status: provider.health_status,
        health_last_checked: provider.health_last_checked,
        health_response_time_ms: provider.health_response_time_ms,
        is_active: provider.is_active,
        disabled_reason: provider.disabled_reason,
        data: paged.data,
        limit: paged.limit,
        offset: paged.offset,
        total: paged.total,
        has_more: paged.has_more,
    })
}
