//! OpenAPI schemas for the catalog's closed vocabularies (`Tier`, `PowerLevel`, ...),
//! built from the enums' own value lists so the document cannot drift from the code. Used
//! with `#[schema(schema_with = ...)]` on admin request and response fields.

use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

use crate::catalog::{ApiFormat, AuthType, HealthStatus, ModelType, PowerLevel, TaskType, Tier};

fn vocabulary(values: Vec<&'static str>, nullable: bool, description: &str) -> Object {
    let schema_type: SchemaType = if nullable {
        [Type::String, Type::Null].into_iter().collect()
    } else {
        SchemaType::new(Type::String)
    };
    let mut values: Vec<Option<&'static str>> = values.into_iter().map(Some).collect();
    if nullable {
        values.push(None);
    }
    ObjectBuilder::new()
        .schema_type(schema_type)
        .enum_values(Some(values))
        .description(Some(description))
        .build()
}

macro_rules! vocabulary_schemas {
    ($($required:ident, $nullable:ident, $enum:ty, $description:literal;)+) => {
        $(
            pub fn $required() -> Object {
                vocabulary(<$enum>::ALL.iter().map(|v| v.as_str()).collect(), false, $description)
            }

            pub fn $nullable() -> Object {
                vocabulary(<$enum>::ALL.iter().map(|v| v.as_str()).collect(), true, $description)
            }
        )+
    };
}

vocabulary_schemas! {
    tier, tier_nullable, Tier, "User tier (ordered free < starter < professional < enterprise).";
    power_level, power_level_nullable, PowerLevel, "Power level.";
    model_type, model_type_nullable, ModelType, "What the model does: chat routes pick `chat` models, /v1/embeddings `embedding` models.";
    task_type, task_type_nullable, TaskType, "Task type.";
    api_format, api_format_nullable, ApiFormat, "Wire format the provider speaks.";
    auth_type, auth_type_nullable, AuthType, "How the provider key is sent (always a header).";
    health_status, health_status_nullable, HealthStatus, "Provider health.";
}

/// A decimal string in USD (`"10.00"`); input also accepts a JSON number.
pub fn money() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .format(Some(utoipa::openapi::SchemaFormat::Custom(
            "decimal".into(),
        )))
        .description(Some(
            "Exact decimal as a string (\"2.50\"); input also accepts a JSON number",
        ))
        .examples(["2.50"])
        .build()
}

/// A nullable decimal string.
pub fn money_nullable() -> Object {
    ObjectBuilder::new()
        .schema_type(
            [Type::String, Type::Null]
                .into_iter()
                .collect::<SchemaType>(),
        )
        .format(Some(utoipa::openapi::SchemaFormat::Custom(
            "decimal".into(),
        )))
        .description(Some(
            "Exact decimal as a string (\"2.50\") or null; input also accepts a JSON number",
        ))
        .build()
}
