//! Routing rules (`llm_routing_rules`): "for this power level (and tier, and task type),
//! route `auto` to this model", with priority, weight and fallback order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::{GenericClient, Row};
use utoipa::{IntoParams, ToSchema};

use super::input::{check_non_negative, check_positive, nullable, present};
use super::page::{Page, Paged, fetch};
use super::providers::{vocab, vocab_opt};
use super::{Actor, AdminError, audit_json};
use crate::catalog::{PowerLevel, TaskType, Tier};

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RuleView {
    pub id: i32,
    /// The `llm_models.id` this rule routes to.
    pub model_id: i32,
    /// Read-only: the upstream model id of that model (`gpt-4o`).
    pub model_name: String,
    /// Read-only: the slug of the model's provider.
    pub provider_slug: String,
    #[schema(schema_with = super::schema::power_level)]
    pub power_level: PowerLevel,
    /// null matches every tier.
    #[schema(schema_with = super::schema::tier_nullable)]
    pub user_tier: Option<Tier>,
    /// null matches every task type.
    #[schema(schema_with = super::schema::task_type_nullable)]
    pub task_type: Option<TaskType>,
    /// Lower runs first.
    pub priority: i32,
    /// Share of the weighted draw among rules of the same priority (> 0).
    pub weight: i32,
    pub min_tokens: Option<i32>,
    pub max_tokens: Option<i32>,
    pub requires_byok: bool,
    pub is_fallback: bool,
    pub fallback_order: i32,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /admin/routing-rules`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    /// An `llm_models.id`.
    pub model_id: i32,
    #[schema(schema_with = super::schema::power_level)]
    pub power_level: PowerLevel,
    #[serde(default)]
    #[schema(schema_with = super::schema::tier_nullable)]
    pub user_tier: Option<Tier>,
    #[serde(default)]
    #[schema(schema_with = super::schema::task_type_nullable)]
    pub task_type: Option<TaskType>,
    /// Default 100.
    #[serde(default)]
    pub priority: Option<i32>,
    /// Default 100; must be > 0.
    #[serde(default)]
    pub weight: Option<i32>,
    #[serde(default)]
    pub min_tokens: Option<i32>,
    #[serde(default)]
    pub max_tokens: Option<i32>,
    #[serde(default)]
    pub requires_byok: Option<bool>,
    #[serde(default)]
    pub is_fallback: Option<bool>,
    #[serde(default)]
    pub fallback_order: Option<i32>,
    #[serde(default)]
    pub is_active: Option<bool>,
}

/// `PATCH /admin/routing-rules/{id}`: only the fields present change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RulePatch {
    #[serde(default, deserialize_with = "present")]
    pub model_id: Option<i32>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::schema::power_level)]
    pub power_level: Option<PowerLevel>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = super::schema::tier_nullable)]
    pub user_tier: Option<Option<Tier>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = super::schema::task_type_nullable)]
    pub task_type: Option<Option<TaskType>>,
    #[serde(default, deserialize_with = "present")]
    pub priority: Option<i32>,
    #[serde(default, deserialize_with = "present")]
    pub weight: Option<i32>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i32>)]
    pub min_tokens: Option<Option<i32>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i32>)]
    pub max_tokens: Option<Option<i32>>,
    #[serde(default, deserialize_with = "present")]
    pub requires_byok: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub is_fallback: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub fallback_order: Option<i32>,
    #[serde(default, deserialize_with = "present")]
    pub is_active: Option<bool>,
}

/// Filters of `GET /admin/routing-rules`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RuleFilter {
    #[param(schema_with = super::schema::power_level)]
    pub power_level: Option<PowerLevel>,
    /// An `llm_models.id`.
    pub model_id: Option<i32>,
    pub is_active: Option<bool>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
struct RuleFields {
    model_id: i32,
    power_level: PowerLevel,
    user_tier: Option<Tier>,
    task_type: Option<TaskType>,
    priority: i32,
    weight: i32,
    min_tokens: Option<i32>,
    max_tokens: Option<i32>,
    requires_byok: bool,
    is_fallback: bool,
    fallback_order: i32,
    is_active: bool,
}

impl RuleFields {
    fn of(view: &RuleView) -> Self {
        RuleFields {
            model_id: view.model_id,
            power_level: view.power_level,
            user_tier: view.user_tier,
            task_type: view.task_type,
            priority: view.priority,
            weight: view.weight,
            min_tokens: view.min_tokens,
            max_tokens: view.max_tokens,
            requires_byok: view.requires_byok,
            is_fallback: view.is_fallback,
            fallback_order: view.fallback_order,
            is_active: view.is_active,
        }
    }

    fn check(&self) -> Result<(), AdminError> {
        check_positive("weight", Some(self.weight))?;
        check_non_negative("min_tokens", self.min_tokens)?;
        check_positive("max_tokens", self.max_tokens)?;
        if let (Some(min), Some(max)) = (self.min_tokens, self.max_tokens)
            && min > max
        {
            return Err(AdminError::invalid(
                "min_tokens",
                "min_tokens must not exceed max_tokens",
            ));
        }
        Ok(())
    }
}

const SELECT: &str = "SELECT r.id, r.model_id, m.model_id, p.provider_slug, r.power_level, r.user_tier, \
    r.task_type, r.priority, r.weight, r.min_tokens, r.max_tokens, r.requires_byok, r.is_fallback, \
    r.fallback_order, r.is_active, r.created_at, r.updated_at \
    FROM llm_routing_rules r JOIN llm_models m ON m.id = r.model_id \
    JOIN llm_providers p ON p.id = m.provider_id";

fn view_of(row: &Row) -> Result<RuleView, AdminError> {
    Ok(RuleView {
        id: row.try_get(0)?,
        model_id: row.try_get(1)?,
        model_name: row.try_get(2)?,
        provider_slug: row.try_get(3)?,
        power_level: vocab(row, 4)?,
        user_tier: vocab_opt(row, 5)?,
        task_type: vocab_opt(row, 6)?,
        priority: row.try_get(7)?,
        weight: row.try_get(8)?,
        min_tokens: row.try_get(9)?,
        max_tokens: row.try_get(10)?,
        requires_byok: row.try_get(11)?,
        is_fallback: row.try_get(12)?,
        fallback_order: row.try_get(13)?,
        is_active: row.try_get(14)?,
        created_at: row.try_get(15)?,
        updated_at: row.try_get(16)?,
    })
}

fn not_found(id: i32) -> AdminError {
    AdminError::NotFound(format!("no routing rule with id {id}"))
}

pub async fn list(
    client: &impl GenericClient,
    filter: &RuleFilter,
) -> Result<Paged<RuleView>, AdminError> {
    let page = Page::new(filter.limit, filter.offset)?;
    let power_level = filter.power_level.map(PowerLevel::as_str);
    let condition = "($1::text IS NULL OR r.power_level = $1) AND ($2::integer IS NULL OR r.model_id = $2) \
        AND ($3::boolean IS NULL OR r.is_active = $3)";
    let (rows, total) = fetch(
        client,
        &format!("{SELECT} WHERE {condition} ORDER BY r.id"),
        &format!("SELECT count(*) FROM llm_routing_rules r WHERE {condition}"),
        &[&power_level, &filter.model_id, &filter.is_active],
        page,
    )
    .await?;
    let data = rows.iter().map(view_of).collect::<Result<Vec<_>, _>>()?;
    Ok(page.result(data, total))
}

pub async fn get(client: &impl GenericClient, id: i32) -> Result<RuleView, AdminError> {
    let row = client
        .query_opt(&format!("{SELECT} WHERE r.id = $1"), &[&id])
        .await?
        .ok_or_else(|| not_found(id))?;
    view_of(&row)
}

async fn check_model_exists(client: &impl GenericClient, model_id: i32) -> Result<(), AdminError> {
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM llm_models WHERE id = $1)",
            &[&model_id],
        )
        .await?
        .try_get(0)?;
    if exists {
        Ok(())
    } else {
        Err(AdminError::invalid(
            "model_id",
            format!("model_id {model_id} does not exist"),
        ))
    }
}

async fn write(
    client: &impl GenericClient,
    id: Option<i32>,
    fields: &RuleFields,
) -> Result<i32, AdminError> {
    let tier = fields.user_tier.map(Tier::as_str);
    let task = fields.task_type.map(TaskType::as_str);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 12] = [
        &fields.model_id,
        &fields.power_level.as_str(),
        &tier,
        &task,
        &fields.priority,
        &fields.weight,
        &fields.min_tokens,
        &fields.max_tokens,
        &fields.requires_byok,
        &fields.is_fallback,
        &fields.fallback_order,
        &fields.is_active,
    ];
    let row = match id {
        None => {
            client
                .query_one(
                    "INSERT INTO llm_routing_rules (model_id, power_level, user_tier, task_type, priority, \
                     weight, min_tokens, max_tokens, requires_byok, is_fallback, fallback_order, is_active) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
                    &params,
                )
                .await?
        }
        Some(id) => {
            let mut with_id: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.to_vec();
            with_id.push(&id);
            client
                .query_one(
                    "UPDATE llm_routing_rules SET model_id = $1, power_level = $2, user_tier = $3, \
                     task_type = $4, priority = $5, weight = $6, min_tokens = $7, max_tokens = $8, \
                     requires_byok = $9, is_fallback = $10, fallback_order = $11, is_active = $12 \
                     WHERE id = $13 RETURNING id",
                    &with_id,
                )
                .await?
        }
    };
    Ok(row.try_get(0)?)
}

pub async fn create(
    client: &mut tokio_postgres::Client,
    actor: &Actor,
    input: NewRule,
) -> Result<RuleView, AdminError> {
    let fields = RuleFields {
        model_id: input.model_id,
        power_level: input.power_level,
        user_tier: input.user_tier,
        task_type: input.task_type,
        priority: input.priority.unwrap_or(100),
        weight: input.weight.unwrap_or(100),
        min_tokens: input.min_tokens,
        max_tokens: input.max_tokens,
        requires_byok: input.requires_byok.unwrap_or(false),
        is_fallback: input.is_fallback.unwrap_or(false),
        fallback_order: input.fallback_order.unwrap_or(0),
        is_active: input.is_active.unwrap_or(true),
    };
    fields.check()?;
    let tx = client.transaction().await?;
    check_model_exists(&tx, fields.model_id).await?;
    let id = write(&tx, None, &fields).await?;
    let view = get(&tx, id).await?;
    actor
        .audit(
            &tx,
            "routing_rule.create",
            "routing_rule",
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
    patch: RulePatch,
) -> Result<RuleView, AdminError> {
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(&format!("{SELECT} WHERE r.id = $1 FOR UPDATE OF r"), &[&id])
        .await?
        .ok_or_else(|| not_found(id))?;
    let before = view_of(&row)?;
    let old = RuleFields::of(&before);
    let mut new = old.clone();
    if let Some(v) = patch.model_id {
        new.model_id = v;
    }
    if let Some(v) = patch.power_level {
        new.power_level = v;
    }
    if let Some(v) = patch.user_tier {
        new.user_tier = v;
    }
    if let Some(v) = patch.task_type {
        new.task_type = v;
    }
    if let Some(v) = patch.priority {
        new.priority = v;
    }
    if let Some(v) = patch.weight {
        new.weight = v;
    }
    if let Some(v) = patch.min_tokens {
        new.min_tokens = v;
    }
    if let Some(v) = patch.max_tokens {
        new.max_tokens = v;
    }
    if let Some(v) = patch.requires_byok {
        new.requires_byok = v;
    }
    if let Some(v) = patch.is_fallback {
        new.is_fallback = v;
    }
    if let Some(v) = patch.fallback_order {
        new.fallback_order = v;
    }
    if let Some(v) = patch.is_active {
        new.is_active = v;
    }
    new.check()?;
    if new == old {
        return Ok(before);
    }
    if new.model_id != old.model_id {
        check_model_exists(&tx, new.model_id).await?;
    }
    write(&tx, Some(id), &new).await?;
    let after = get(&tx, id).await?;
    actor
        .audit(
            &tx,
            "routing_rule.update",
            "routing_rule",
            &id.to_string(),
            audit_json(&before),
            audit_json(&after),
        )
        .await?;
    tx.commit().await?;
    Ok(after)
}

pub async fn delete(
    client: &mut tokio_postgres::Client,
    actor: &Actor,
    id: i32,
) -> Result<(), AdminError> {
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(&format!("{SELECT} WHERE r.id = $1 FOR UPDATE OF r"), &[&id])
        .await?
        .ok_or_else(|| not_found(id))?;
    let before = view_of(&row)?;
    tx.execute("DELETE FROM llm_routing_rules WHERE id = $1", &[&id])
        .await?;
    actor
        .audit(
            &tx,
            "routing_rule.delete",
            "routing_rule",
            &id.to_string(),
            audit_json(&before),
            None,
        )
        .await?;
    tx.commit().await?;
    Ok(())
}
