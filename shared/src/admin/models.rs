//! Models (`llm_models`): one offer of a model by one provider, with its prices (USD per one
//! million tokens, exact decimals), capabilities and power level. Deleting a model that
//! routing rules still point at needs `?cascade=true`.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::{GenericClient, Row};
use utoipa::{IntoParams, ToSchema};

use super::input::{
    check_positive, check_price, check_text, money, money_opt, money_patch, money_present,
    nullable, present, serialize_money, serialize_money_opt,
};
use super::page::{Page, Paged, fetch};
use super::providers::{vocab, vocab_opt};
use super::{Actor, AdminError, audit_json};
use crate::catalog::{ModelType, PowerLevel, Tier};

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ModelView {
    pub id: i32,
    pub provider_id: i32,
    /// Read-only: the provider's slug.
    pub provider_slug: String,
    /// The id the upstream knows the model by (`gpt-4o`).
    pub model_id: String,
    pub model_name: String,
    pub display_name: Option<String>,
    pub context_window: i32,
    /// Maximum output tokens.
    pub max_tokens: Option<i32>,
    /// `chat` (default) or `embedding`: which routes may pick the model.
    #[schema(schema_with = super::schema::model_type)]
    pub model_type: ModelType,
    pub supports_streaming: bool,
    pub supports_function_calling: bool,
    pub supports_vision: bool,
    pub supports_json_mode: bool,
    #[serde(serialize_with = "serialize_money")]
    #[schema(schema_with = super::schema::money)]
    pub cost_per_1m_input_tokens: Decimal,
    #[serde(serialize_with = "serialize_money")]
    #[schema(schema_with = super::schema::money)]
    pub cost_per_1m_output_tokens: Decimal,
    /// Price of cached input tokens; null = no discount (the input price).
    #[serde(serialize_with = "serialize_money_opt")]
    #[schema(schema_with = super::schema::money_nullable)]
    pub cost_per_1m_tokens_cached: Option<Decimal>,
    /// Price of 5-minute prompt-cache writes; null = 1.25 × the input price.
    #[serde(serialize_with = "serialize_money_opt")]
    #[schema(schema_with = super::schema::money_nullable)]
    pub cost_per_1m_cache_write_tokens: Option<Decimal>,
    /// Price of 1-hour prompt-cache writes; null = 2 × the input price.
    #[serde(serialize_with = "serialize_money_opt")]
    #[schema(schema_with = super::schema::money_nullable)]
    pub cost_per_1m_cache_write_1h_tokens: Option<Decimal>,
    #[schema(schema_with = super::schema::power_level_nullable)]
    pub power_level: Option<PowerLevel>,
    pub power_level_priority: i32,
    pub is_active: bool,
    pub is_deprecated: bool,
    pub deprecation_date: Option<NaiveDate>,
    pub replacement_model_id: Option<i32>,
    #[schema(schema_with = super::schema::tier)]
    pub min_tier_required: Tier,
    /// Read-only, measured: the p50 time in milliseconds to the complete answer of the
    /// successful buffered calls of the last five minutes (see routing docs).
    pub avg_latency_ms: Option<i32>,
    /// Read-only: how many calls `avg_latency_ms` is measured on (0: not measured now).
    pub latency_samples: i32,
    /// Read-only, measured: the p50 time to the first token of streams.
    pub avg_ttft_ms: Option<i32>,
    /// Read-only: how many streams `avg_ttft_ms` is measured on.
    pub ttft_samples: i32,
    /// Read-only, measured: the p50 output tokens per second.
    #[schema(value_type = Option<String>)]
    pub avg_tokens_per_second: Option<Decimal>,
    /// Read-only: how many calls `avg_tokens_per_second` is measured on.
    pub tokens_per_second_samples: i32,
    /// Read-only: when the measured columns were last recomputed.
    pub performance_updated_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /admin/models`. Prices are USD per one million tokens, as strings or numbers.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewModel {
    pub provider_id: i32,
    pub model_id: String,
    /// Default: `model_id`.
    #[serde(default)]
    pub model_name: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    pub context_window: i32,
    #[serde(default)]
    pub max_tokens: Option<i32>,
    /// Default `chat`.
    #[serde(default)]
    #[schema(schema_with = super::schema::model_type_nullable)]
    pub model_type: Option<ModelType>,
    /// Default true.
    #[serde(default)]
    pub supports_streaming: Option<bool>,
    #[serde(default)]
    pub supports_function_calling: Option<bool>,
    #[serde(default)]
    pub supports_vision: Option<bool>,
    #[serde(default)]
    pub supports_json_mode: Option<bool>,
    #[serde(deserialize_with = "money")]
    #[schema(schema_with = super::schema::money)]
    pub cost_per_1m_input_tokens: Decimal,
    #[serde(deserialize_with = "money")]
    #[schema(schema_with = super::schema::money)]
    pub cost_per_1m_output_tokens: Decimal,
    #[serde(default, deserialize_with = "money_opt")]
    #[schema(schema_with = super::schema::money_nullable)]
    pub cost_per_1m_tokens_cached: Option<Decimal>,
    /// Null (default): 1.25 × the input price.
    #[serde(default, deserialize_with = "money_opt")]
    #[schema(schema_with = super::schema::money_nullable)]
    pub cost_per_1m_cache_write_tokens: Option<Decimal>,
    /// Null (default): 2 × the input price.
    #[serde(default, deserialize_with = "money_opt")]
    #[schema(schema_with = super::schema::money_nullable)]
    pub cost_per_1m_cache_write_1h_tokens: Option<Decimal>,
    #[serde(default)]
    #[schema(schema_with = super::schema::power_level_nullable)]
    pub power_level: Option<PowerLevel>,
    /// Default 100 (lower runs first).
    #[serde(default)]
    pub power_level_priority: Option<i32>,
    #[serde(default)]
    pub is_active: Option<bool>,
    #[serde(default)]
    pub is_deprecated: Option<bool>,
    #[serde(default)]
    pub deprecation_date: Option<NaiveDate>,
    #[serde(default)]
    pub replacement_model_id: Option<i32>,
    #[serde(default)]
    #[schema(schema_with = super::schema::tier_nullable)]
    pub min_tier_required: Option<Tier>,
}

/// `PATCH /admin/models/{id}`: only the fields present change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelPatch {
    #[serde(default, deserialize_with = "present")]
    pub provider_id: Option<i32>,
    #[serde(default, deserialize_with = "present")]
    pub model_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub model_name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub context_window: Option<i32>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i32>)]
    pub max_tokens: Option<Option<i32>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::schema::model_type)]
    pub model_type: Option<ModelType>,
    #[serde(default, deserialize_with = "present")]
    pub supports_streaming: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub supports_function_calling: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub supports_vision: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub supports_json_mode: Option<bool>,
    #[serde(default, deserialize_with = "money_present")]
    #[schema(schema_with = super::schema::money)]
    pub cost_per_1m_input_tokens: Option<Decimal>,
    #[serde(default, deserialize_with = "money_present")]
    #[schema(schema_with = super::schema::money)]
    pub cost_per_1m_output_tokens: Option<Decimal>,
    #[serde(default, deserialize_with = "money_patch")]
    #[schema(schema_with = super::schema::money_nullable)]
    pub cost_per_1m_tokens_cached: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "money_patch")]
    #[schema(schema_with = super::schema::money_nullable)]
    pub cost_per_1m_cache_write_tokens: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "money_patch")]
    #[schema(schema_with = super::schema::money_nullable)]
    pub cost_per_1m_cache_write_1h_tokens: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = super::schema::power_level_nullable)]
    pub power_level: Option<Option<PowerLevel>>,
    #[serde(default, deserialize_with = "present")]
    pub power_level_priority: Option<i32>,
    #[serde(default, deserialize_with = "present")]
    pub is_active: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub is_deprecated: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<NaiveDate>)]
    pub deprecation_date: Option<Option<NaiveDate>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i32>)]
    pub replacement_model_id: Option<Option<i32>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::schema::tier)]
    pub min_tier_required: Option<Tier>,
}

/// Filters of `GET /admin/models`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ModelFilter {
    pub provider_id: Option<i32>,
    /// The upstream model id (`gpt-4o`).
    pub model_id: Option<String>,
    #[param(schema_with = super::schema::power_level)]
    pub power_level: Option<PowerLevel>,
    pub is_active: Option<bool>,
    #[param(schema_with = super::schema::model_type)]
    pub model_type: Option<ModelType>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
struct ModelFields {
    provider_id: i32,
    model_id: String,
    model_name: String,
    display_name: Option<String>,
    context_window: i32,
    max_tokens: Option<i32>,
    model_type: ModelType,
    supports_streaming: bool,
    supports_function_calling: bool,
    supports_vision: bool,
    supports_json_mode: bool,
    cost_in: Decimal,
    cost_out: Decimal,
    cost_cached: Option<Decimal>,
    cost_cache_write: Option<Decimal>,
    cost_cache_write_1h: Option<Decimal>,
    power_level: Option<PowerLevel>,
    power_level_priority: i32,
    is_active: bool,
    is_deprecated: bool,
    deprecation_date: Option<NaiveDate>,
    replacement_model_id: Option<i32>,
    min_tier_required: Tier,
}

impl ModelFields {
    fn of(view: &ModelView) -> Self {
        ModelFields {
            provider_id: view.provider_id,
            model_id: view.model_id.clone(),
            model_name: view.model_name.clone(),
            display_name: view.display_name.clone(),
            context_window: view.context_window,
            max_tokens: view.max_tokens,
            model_type: view.model_type,
            supports_streaming: view.supports_streaming,
            supports_function_calling: view.supports_function_calling,
            supports_vision: view.supports_vision,
            supports_json_mode: view.supports_json_mode,
            cost_in: view.cost_per_1m_input_tokens,
            cost_out: view.cost_per_1m_output_tokens,
            cost_cached: view.cost_per_1m_tokens_cached,
            cost_cache_write: view.cost_per_1m_cache_write_tokens,
            cost_cache_write_1h: view.cost_per_1m_cache_write_1h_tokens,
            power_level: view.power_level,
            power_level_priority: view.power_level_priority,
            is_active: view.is_active,
            is_deprecated: view.is_deprecated,
            deprecation_date: view.deprecation_date,
            replacement_model_id: view.replacement_model_id,
            min_tier_required: view.min_tier_required,
        }
    }

    /// Checks (and normalises the prices of) the fields; `id` is the row's own id on update.
    fn check(&mut self, id: Option<i32>) -> Result<(), AdminError> {
        check_text("model_id", &self.model_id, 1, 200)?;
        if self.model_id.chars().any(char::is_whitespace) {
            return Err(AdminError::invalid(
                "model_id",
                "model_id must not contain whitespace",
            ));
        }
        check_text("model_name", &self.model_name, 1, 200)?;
        if let Some(display_name) = &self.display_name {
            check_text("display_name", display_name, 0, 200)?;
        }
        check_positive("context_window", Some(self.context_window))?;
        check_positive("max_tokens", self.max_tokens)?;
        self.cost_in = check_price("cost_per_1m_input_tokens", self.cost_in)?;
        self.cost_out = check_price("cost_per_1m_output_tokens", self.cost_out)?;
        self.cost_cached = self
            .cost_cached
            .map(|p| check_price("cost_per_1m_tokens_cached", p))
            .transpose()?;
        self.cost_cache_write = self
            .cost_cache_write
            .map(|p| check_price("cost_per_1m_cache_write_tokens", p))
            .transpose()?;
        self.cost_cache_write_1h = self
            .cost_cache_write_1h
            .map(|p| check_price("cost_per_1m_cache_write_1h_tokens", p))
            .transpose()?;
        if id.is_some() && self.replacement_model_id == id {
            return Err(AdminError::invalid(
                "replacement_model_id",
                "a model cannot replace itself",
            ));
        }
        Ok(())
    }
}

const SELECT: &str = "SELECT m.id, m.provider_id, p.provider_slug, m.model_id, m.model_name, m.display_name, \
    m.context_window, m.max_tokens, m.supports_streaming, m.supports_function_calling, m.supports_vision, \
    m.supports_json_mode, m.cost_per_1m_input_tokens, m.cost_per_1m_output_tokens, \
    m.cost_per_1m_tokens_cached, m.power_level, m.power_level_priority, m.is_active, m.is_deprecated, \
    m.deprecation_date, m.replacement_model_id, m.min_tier_required, m.avg_latency_ms, \
    m.avg_tokens_per_second, m.created_at, m.updated_at, m.cost_per_1m_cache_write_tokens, \
    m.cost_per_1m_cache_write_1h_tokens, m.model_type, m.latency_samples, m.avg_ttft_ms, \
    m.ttft_samples, m.tokens_per_second_samples, m.performance_updated_at \
    FROM llm_models m JOIN llm_providers p ON p.id = m.provider_id";

fn view_of(row: &Row) -> Result<ModelView, AdminError> {
    Ok(ModelView {
        id: row.try_get(0)?,
        provider_id: row.try_get(1)?,
        provider_slug: row.try_get(2)?,
        model_id: row.try_get(3)?,
        model_name: row.try_get(4)?,
        display_name: row.try_get(5)?,
        context_window: row.try_get(6)?,
        max_tokens: row.try_get(7)?,
        model_type: vocab(row, 28)?,
        supports_streaming: row.try_get(8)?,
        supports_function_calling: row.try_get(9)?,
        supports_vision: row.try_get(10)?,
        supports_json_mode: row.try_get(11)?,
        cost_per_1m_input_tokens: row.try_get(12)?,
        cost_per_1m_output_tokens: row.try_get(13)?,
        cost_per_1m_tokens_cached: row.try_get(14)?,
        cost_per_1m_cache_write_tokens: row.try_get(26)?,
        cost_per_1m_cache_write_1h_tokens: row.try_get(27)?,
        power_level: vocab_opt(row, 15)?,
        power_level_priority: row.try_get(16)?,
        is_active: row.try_get(17)?,
        is_deprecated: row.try_get(18)?,
        deprecation_date: row.try_get(19)?,
        replacement_model_id: row.try_get(20)?,
        min_tier_required: vocab(row, 21)?,
        avg_latency_ms: row.try_get(22)?,
        latency_samples: row.try_get(29)?,
        avg_ttft_ms: row.try_get(30)?,
        ttft_samples: row.try_get(31)?,
        avg_tokens_per_second: row.try_get(23)?,
        tokens_per_second_samples: row.try_get(32)?,
        performance_updated_at: row.try_get(33)?,
        created_at: row.try_get(24)?,
        updated_at: row.try_get(25)?,
    })
}

fn not_found(id: i32) -> AdminError {
    AdminError::NotFound(format!("no model with id {id}"))
}

pub async fn list(
    client: &impl GenericClient,
    filter: &ModelFilter,
) -> Result<Paged<ModelView>, AdminError> {
    let page = Page::new(filter.limit, filter.offset)?;
    let power_level = filter.power_level.map(PowerLevel::as_str);
    let condition = "($1::integer IS NULL OR m.provider_id = $1) AND ($2::text IS NULL OR m.model_id = $2) \
        AND ($3::text IS NULL OR m.power_level = $3) AND ($4::boolean IS NULL OR m.is_active = $4) \
        AND ($5::text IS NULL OR m.model_type = $5)";
    let (rows, total) = fetch(
        client,
        &format!("{SELECT} WHERE {condition} ORDER BY m.id"),
        &format!("SELECT count(*) FROM llm_models m WHERE {condition}"),
        &[
            &filter.provider_id,
            &filter.model_id,
            &power_level,
            &filter.is_active,
            &filter.model_type.map(ModelType::as_str),
        ],
        page,
    )
    .await?;
    let data = rows.iter().map(view_of).collect::<Result<Vec<_>, _>>()?;
    Ok(page.result(data, total))
}

pub async fn get(client: &impl GenericClient, id: i32) -> Result<ModelView, AdminError> {
    let row = client
        .query_opt(&format!("{SELECT} WHERE m.id = $1"), &[&id])
        .await?
        .ok_or_else(|| not_found(id))?;
    view_of(&row)
}

/// The referenced provider and replacement model must exist (400 naming the field).
async fn check_references(
    client: &impl GenericClient,
    fields: &ModelFields,
) -> Result<(), AdminError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM llm_providers WHERE id = $1),
                    $2::integer IS NULL OR EXISTS (SELECT 1 FROM llm_models WHERE id = $2)",
            &[&fields.provider_id, &fields.replacement_model_id],
        )
        .await?;
    if !row.try_get::<_, bool>(0)? {
        return Err(AdminError::invalid(
            "provider_id",
            format!("provider_id {} does not exist", fields.provider_id),
        ));
    }
    if !row.try_get::<_, bool>(1)? {
        return Err(AdminError::invalid(
            "replacement_model_id",
            "replacement_model_id does not exist",
        ));
    }
    Ok(())
}

pub async fn create(
    client: &mut tokio_postgres::Client,
    actor: &Actor,
    input: NewModel,
) -> Result<ModelView, AdminError> {
    let mut fields = ModelFields {
        provider_id: input.provider_id,
        model_name: input.model_name.unwrap_or_else(|| input.model_id.clone()),
        model_id: input.model_id,
        display_name: input.display_name,
        context_window: input.context_window,
        max_tokens: input.max_tokens,
        model_type: input.model_type.unwrap_or_default(),
        supports_streaming: input.supports_streaming.unwrap_or(true),
        supports_function_calling: input.supports_function_calling.unwrap_or(false),
        supports_vision: input.supports_vision.unwrap_or(false),
        supports_json_mode: input.supports_json_mode.unwrap_or(false),
        cost_in: input.cost_per_1m_input_tokens,
        cost_out: input.cost_per_1m_output_tokens,
        cost_cached: input.cost_per_1m_tokens_cached,
        cost_cache_write: input.cost_per_1m_cache_write_tokens,
        cost_cache_write_1h: input.cost_per_1m_cache_write_1h_tokens,
        power_level: input.power_level,
        power_level_priority: input.power_level_priority.unwrap_or(100),
        is_active: input.is_active.unwrap_or(true),
        is_deprecated: input.is_deprecated.unwrap_or(false),
        deprecation_date: input.deprecation_date,
        replacement_model_id: input.replacement_model_id,
        min_tier_required: input.min_tier_required.unwrap_or(Tier::Free),
    };
    fields.check(None)?;
    let tx = client.transaction().await?;
    check_references(&tx, &fields).await?;
    let row = tx
        .query_one(
            "INSERT INTO llm_models (provider_id, model_id, model_name, display_name, context_window, \
             max_tokens, supports_streaming, supports_function_calling, supports_vision, supports_json_mode, \
             cost_per_1m_input_tokens, cost_per_1m_output_tokens, cost_per_1m_tokens_cached, power_level, \
             power_level_priority, is_active, is_deprecated, deprecation_date, replacement_model_id, \
             min_tier_required, cost_per_1m_cache_write_tokens, cost_per_1m_cache_write_1h_tokens, \
             model_type) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, \
             $21, $22, $23) \
             RETURNING id",
            &[
                &fields.provider_id,
                &fields.model_id,
                &fields.model_name,
                &fields.display_name,
                &fields.context_window,
                &fields.max_tokens,
                &fields.supports_streaming,
                &fields.supports_function_calling,
                &fields.supports_vision,
                &fields.supports_json_mode,
                &fields.cost_in,
                &fields.cost_out,
                &fields.cost_cached,
                &fields.power_level.map(PowerLevel::as_str),
                &fields.power_level_priority,
                &fields.is_active,
                &fields.is_deprecated,
                &fields.deprecation_date,
                &fields.replacement_model_id,
                &fields.min_tier_required.as_str(),
                &fields.cost_cache_write,
                &fields.cost_cache_write_1h,
                &fields.model_type.as_str(),
            ],
        )
        .await?;
    let id: i32 = row.try_get(0)?;
    let view = get(&tx, id).await?;
    actor
        .audit(
            &tx,
            "model.create",
            "model",
            &id.to_string(),
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
    patch: ModelPatch,
) -> Result<ModelView, AdminError> {
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(&format!("{SELECT} WHERE m.id = $1 FOR UPDATE OF m"), &[&id])
        .await?
        .ok_or_else(|| not_found(id))?;
    let before = view_of(&row)?;
    let old = ModelFields::of(&before);
    let mut new = old.clone();
    if let Some(v) = patch.provider_id {
        new.provider_id = v;
    }
    if let Some(v) = patch.model_id {
        new.model_id = v;
    }
    if let Some(v) = patch.model_name {
        new.model_name = v;
    }
    if let Some(v) = patch.display_name {
        new.display_name = v;
    }
    if let Some(v) = patch.context_window {
        new.context_window = v;
    }
    if let Some(v) = patch.max_tokens {
        new.max_tokens = v;
    }
    if let Some(v) = patch.model_type {
        new.model_type = v;
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
    if let Some(v) = patch.supports_json_mode {
        new.supports_json_mode = v;
    }
    if let Some(v) = patch.cost_per_1m_input_tokens {
        new.cost_in = v;
    }
    if let Some(v) = patch.cost_per_1m_output_tokens {
        new.cost_out = v;
    }
    if let Some(v) = patch.cost_per_1m_tokens_cached {
        new.cost_cached = v;
    }
    if let Some(v) = patch.cost_per_1m_cache_write_tokens {
        new.cost_cache_write = v;
    }
    if let Some(v) = patch.cost_per_1m_cache_write_1h_tokens {
        new.cost_cache_write_1h = v;
    }
    if let Some(v) = patch.power_level {
        new.power_level = v;
    }
    if let Some(v) = patch.power_level_priority {
        new.power_level_priority = v;
    }
    if let Some(v) = patch.is_active {
        new.is_active = v;
    }
    if let Some(v) = patch.is_deprecated {
        new.is_deprecated = v;
    }
    if let Some(v) = patch.deprecation_date {
        new.deprecation_date = v;
    }
    if let Some(v) = patch.replacement_model_id {
        new.replacement_model_id = v;
    }
    if let Some(v) = patch.min_tier_required {
        new.min_tier_required = v;
    }
    new.check(Some(id))?;
    if new == old {
        return Ok(before);
    }
    check_references(&tx, &new).await?;
    tx.execute(
        "UPDATE llm_models SET provider_id = $2, model_id = $3, model_name = $4, display_name = $5, \
         context_window = $6, max_tokens = $7, supports_streaming = $8, supports_function_calling = $9, \
         supports_vision = $10, supports_json_mode = $11, cost_per_1m_input_tokens = $12, \
         cost_per_1m_output_tokens = $13, cost_per_1m_tokens_cached = $14, power_level = $15, \
         power_level_priority = $16, is_active = $17, is_deprecated = $18, deprecation_date = $19, \
         replacement_model_id = $20, min_tier_required = $21, cost_per_1m_cache_write_tokens = $22, \
         cost_per_1m_cache_write_1h_tokens = $23, model_type = $24 WHERE id = $1",
        &[
            &id,
            &new.provider_id,
            &new.model_id,
            &new.model_name,
            &new.display_name,
            &new.context_window,
            &new.max_tokens,
            &new.supports_streaming,
            &new.supports_function_calling,
            &new.supports_vision,
            &new.supports_json_mode,
            &new.cost_in,
            &new.cost_out,
            &new.cost_cached,
            &new.power_level.map(PowerLevel::as_str),
            &new.power_level_priority,
            &new.is_active,
            &new.is_deprecated,
            &new.deprecation_date,
            &new.replacement_model_id,
            &new.min_tier_required.as_str(),
            &new.cost_cache_write,
            &new.cost_cache_write_1h,
            &new.model_type.as_str(),
        ],
    )
    .await?;
    let after = get(&tx, id).await?;
    actor
        .audit(
            &tx,
            "model.update",
            "model",
            &id.to_string(),
            audit_json(&before),
            audit_json(&after),
        )
        .await?;
    tx.commit().await?;
    Ok(after)
}

/// Deletes a model; while routing rules point at it, only with `cascade` (which deletes them).
pub async fn delete(
    client: &mut tokio_postgres::Client,
    actor: &Actor,
    id: i32,
    cascade: bool,
) -> Result<(), AdminError> {
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(&format!("{SELECT} WHERE m.id = $1 FOR UPDATE OF m"), &[&id])
        .await?
        .ok_or_else(|| not_found(id))?;
    let before = view_of(&row)?;
    let rules: i64 = tx
        .query_one(
            "SELECT count(*) FROM llm_routing_rules WHERE model_id = $1",
            &[&id],
        )
        .await?
        .try_get(0)?;
    if rules > 0 && !cascade {
        return Err(AdminError::Conflict(format!(
            "model {id} is used by {rules} routing rule(s); delete them first or pass ?cascade=true"
        )));
    }
    tx.execute("DELETE FROM llm_models WHERE id = $1", &[&id])
        .await?;
    let mut before_json = audit_json(&before);
    if let Some(serde_json::Value::Object(map)) = before_json.as_mut() {
        map.insert("deleted_with_it".into(), json!({"routing_rules": rules}));
    }
    actor
        .audit(
            &tx,
            "model.delete",
            "model",
            &id.to_string(),
            before_json,
            None,
        )
        .await?;
    tx.commit().await?;
    Ok(())
}
