//! The catalog's SQL: reading every provider, model and routing rule into a [`Catalog`].
//! The three queries are sent together (tokio-postgres pipelines concurrent queries on one
//! connection), so a load costs one round trip (plus one for the performance refresh).

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::{GenericClient, Row};

use super::snapshot::Catalog;
use super::tables::{Model, Provider, RoutingRule};
use super::types::UnknownValue;

/// Why the catalog could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("loading the catalog: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("loading the catalog: no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("loading the catalog: {table} row {id}: {source}")]
    InvalidValue {
        table: &'static str,
        id: i32,
        #[source]
        source: UnknownValue,
    },
}

const PROVIDERS_SQL: &str = "SELECT id, provider_name, provider_slug, api_format, base_url, health_url, \
     auth_type, supports_streaming, supports_function_calling, supports_vision, \
     supports_responses_api, \
     rate_limit_rpm, rate_limit_tpm, rate_limit_rpd, is_active, is_byok_supported, \
     is_system_provider, health_status, health_last_checked, health_response_time_ms, \
     health_consecutive_down, breaker_consecutive_failures, breaker_open_until, \
     disabled_reason, min_tier_required, created_at, updated_at \
     FROM llm_providers ORDER BY id";

const MODELS_SQL: &str = "SELECT id, provider_id, model_name, model_id, display_name, max_tokens, \
     context_window, supports_streaming, supports_function_calling, supports_vision, \
     supports_json_mode, cost_per_1m_input_tokens, cost_per_1m_output_tokens, \
     cost_per_1m_tokens_cached, power_level, power_level_priority, is_active, is_deprecated, \
     deprecation_date, replacement_model_id, min_tier_required, avg_latency_ms, \
     avg_tokens_per_second, created_at, updated_at, cost_per_1m_cache_write_tokens, \
     cost_per_1m_cache_write_1h_tokens, model_type, avg_ttft_ms, latency_samples, ttft_samples, \
     tokens_per_second_samples, performance_updated_at \
     FROM llm_models ORDER BY id";

const RULES_SQL: &str = "SELECT id, model_id, power_level, user_tier, task_type, priority, weight, \
     min_tokens, max_tokens, requires_byok, is_fallback, fallback_order, is_active, \
     created_at, updated_at \
     FROM llm_routing_rules ORDER BY id";

/// The window over which models' performance is measured (the p50 of their successful
/// calls in it).
pub const PERFORMANCE_WINDOW: Duration = Duration::from_secs(300);
/// How often the measured performance is recomputed, at most, across all processes: with
/// the catalog's own TTL, routing sees a call's latency within 30 + 5 seconds.
pub const PERFORMANCE_REFRESH: Duration = Duration::from_secs(30);

/// Recomputes the models' measured performance unless that was done less than
/// `min_age` ago (anywhere); `true` when it ran.
pub async fn refresh_model_performance(
    client: &impl GenericClient,
    window: Duration,
    min_age: Duration,
) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT sb_refresh_model_performance(make_interval(secs => $1), make_interval(secs => $2))",
            &[&window.as_secs_f64(), &min_age.as_secs_f64()],
        )
        .await?;
    row.try_get(0)
}

/// Reads the whole catalog (active or not: routing filters, admin lists everything), after
/// refreshing the measured performance when it is older than [`PERFORMANCE_REFRESH`] (a
/// failure there is logged; the catalog still loads).
pub async fn load_catalog(client: &impl GenericClient) -> Result<Catalog, CatalogError> {
    if let Err(error) =
        refresh_model_performance(client, PERFORMANCE_WINDOW, PERFORMANCE_REFRESH).await
    {
        tracing::warn!(%error, "could not refresh the models' measured performance");
    }
    let (provider_rows, model_rows, rule_rows) = tokio::try_join!(
        client.query(PROVIDERS_SQL, &[]),
        client.query(MODELS_SQL, &[]),
        client.query(RULES_SQL, &[]),
    )?;
    let providers = provider_rows
        .iter()
        .map(provider_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let now = chrono::Utc::now();
    for provider in &providers {
        crate::metrics::provider_state(
            &provider.provider_slug,
            provider.is_active,
            provider.breaker_is_open(now),
            provider.health_status.as_str(),
        );
    }
    let models = model_rows
        .iter()
        .map(model_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let rules = rule_rows
        .iter()
        .map(rule_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Catalog::new(providers, models, rules))
}

fn parse<T: FromStr<Err = UnknownValue>>(
    table: &'static str,
    id: i32,
    text: &str,
) -> Result<T, CatalogError> {
    text.parse()
        .map_err(|source| CatalogError::InvalidValue { table, id, source })
}

fn parse_opt<T: FromStr<Err = UnknownValue>>(
    table: &'static str,
    id: i32,
    text: Option<&str>,
) -> Result<Option<T>, CatalogError> {
    text.map(|t| parse(table, id, t)).transpose()
}

fn provider_from_row(row: &Row) -> Result<Provider, CatalogError> {
    const TABLE: &str = "llm_providers";
    let id: i32 = row.try_get("id")?;
    Ok(Provider {
        id,
        provider_name: row.try_get("provider_name")?,
        provider_slug: row.try_get("provider_slug")?,
        api_format: parse(TABLE, id, row.try_get("api_format")?)?,
        base_url: row.try_get("base_url")?,
        health_url: row.try_get("health_url")?,
        auth_type: parse(TABLE, id, row.try_get("auth_type")?)?,
        supports_streaming: row.try_get("supports_streaming")?,
        supports_function_calling: row.try_get("supports_function_calling")?,
        supports_vision: row.try_get("supports_vision")?,
        supports_responses_api: row.try_get("supports_responses_api")?,
        rate_limit_rpm: row.try_get("rate_limit_rpm")?,
        rate_limit_tpm: row.try_get("rate_limit_tpm")?,
        rate_limit_rpd: row.try_get("rate_limit_rpd")?,
        is_active: row.try_get("is_active")?,
        is_byok_supported: row.try_get("is_byok_supported")?,
        is_system_provider: row.try_get("is_system_provider")?,
        health_status: parse(TABLE, id, row.try_get("health_status")?)?,
        health_last_checked: row.try_get("health_last_checked")?,
        health_response_time_ms: row.try_get("health_response_time_ms")?,
        health_consecutive_down: row.try_get("health_consecutive_down")?,
        breaker_consecutive_failures: row.try_get("breaker_consecutive_failures")?,
        breaker_open_until: row.try_get("breaker_open_until")?,
        disabled_reason: row.try_get("disabled_reason")?,
        min_tier_required: parse(TABLE, id, row.try_get("min_tier_required")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn model_from_row(row: &Row) -> Result<Model, CatalogError> {
    const TABLE: &str = "llm_models";
    let id: i32 = row.try_get("id")?;
    Ok(Model {
        id,
        provider_id: row.try_get("provider_id")?,
        model_name: row.try_get("model_name")?,
        model_id: row.try_get("model_id")?,
        display_name: row.try_get("display_name")?,
        max_tokens: row.try_get("max_tokens")?,
        context_window: row.try_get("context_window")?,
        model_type: parse(TABLE, id, row.try_get("model_type")?)?,
        supports_streaming: row.try_get("supports_streaming")?,
        supports_function_calling: row.try_get("supports_function_calling")?,
        supports_vision: row.try_get("supports_vision")?,
        supports_json_mode: row.try_get("supports_json_mode")?,
        cost_per_1m_input_tokens: row.try_get("cost_per_1m_input_tokens")?,
        cost_per_1m_output_tokens: row.try_get("cost_per_1m_output_tokens")?,
        cost_per_1m_tokens_cached: row.try_get("cost_per_1m_tokens_cached")?,
        cost_per_1m_cache_write_tokens: row.try_get("cost_per_1m_cache_write_tokens")?,
        cost_per_1m_cache_write_1h_tokens: row.try_get("cost_per_1m_cache_write_1h_tokens")?,
        power_level: parse_opt(TABLE, id, row.try_get("power_level")?)?,
        power_level_priority: row.try_get("power_level_priority")?,
        is_active: row.try_get("is_active")?,
        is_deprecated: row.try_get("is_deprecated")?,
        deprecation_date: row.try_get("deprecation_date")?,
        replacement_model_id: row.try_get("replacement_model_id")?,
        min_tier_required: parse(TABLE, id, row.try_get("min_tier_required")?)?,
        avg_latency_ms: row.try_get("avg_latency_ms")?,
        latency_samples: row.try_get("latency_samples")?,
        avg_ttft_ms: row.try_get("avg_ttft_ms")?,
        ttft_samples: row.try_get("ttft_samples")?,
        avg_tokens_per_second: row.try_get("avg_tokens_per_second")?,
        tokens_per_second_samples: row.try_get("tokens_per_second_samples")?,
        performance_updated_at: row.try_get("performance_updated_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn rule_from_row(row: &Row) -> Result<RoutingRule, CatalogError> {
    const TABLE: &str = "llm_routing_rules";
    let id: i32 = row.try_get("id")?;
    Ok(RoutingRule {
        id,
        model_id: row.try_get("model_id")?,
        power_level: parse(TABLE, id, row.try_get("power_level")?)?,
        user_tier: parse_opt(TABLE, id, row.try_get("user_tier")?)?,
        task_type: parse_opt(TABLE, id, row.try_get("task_type")?)?,
        priority: row.try_get("priority")?,
        weight: row.try_get("weight")?,
        min_tokens: row.try_get("min_tokens")?,
        max_tokens: row.try_get("max_tokens")?,
        requires_byok: row.try_get("requires_byok")?,
        is_fallback: row.try_get("is_fallback")?,
        fallback_order: row.try_get("fallback_order")?,
        is_active: row.try_get("is_active")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
