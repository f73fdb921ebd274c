//! Stored Responses API responses (api.md, "Stored responses"): written before the answer
//! ends, so `previous_response_id` works on the very next request from any instance;
//! read back (`GET /v1/responses/{id}`, its input items), deleted, and swept after
//! `SWITCHBOARD_RESPONSES_TTL_DAYS`. Every read and delete is the caller's own: another
//! account's id is "not found", like an unknown one.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::GenericClient;

use crate::db::DbError;

/// How many responses a continuation chain may reach back (a guard against a cycle or an
/// absurd history; each link is one stored turn).
pub const MAX_CHAIN: usize = 500;

/// One stored response.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub id: String,
    pub user_id: String,
    pub previous_response_id: Option<String>,
    pub model: String,
    pub instructions: Option<String>,
    /// This turn's input items.
    pub input_items: Vec<Value>,
    /// This turn's output items.
    pub output_items: Vec<Value>,
    /// The Response object as answered.
    pub response: Value,
    pub request_id: String,
    pub expires_at: DateTime<Utc>,
}

/// A new id with the Responses API's prefixes (`resp_`, `msg_`, `fc_`, `rs_`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Writes `response` (one statement; a second write of the same id changes nothing).
pub async fn save(client: &impl GenericClient, response: &StoredResponse) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO responses (id, user_id, previous_response_id, model, instructions,
                 input_items, output_items, response, request_id, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (id) DO NOTHING",
            &[
                &response.id,
                &response.user_id,
                &response.previous_response_id,
                &response.model,
                &response.instructions,
                &Value::Array(response.input_items.clone()),
                &Value::Array(response.output_items.clone()),
                &response.response,
                &response.request_id,
                &response.expires_at,
            ],
        )
        .await?;
    Ok(())
}

fn from_row(row: &tokio_postgres::Row) -> Result<StoredResponse, DbError> {
    let items = |value: Value| match value {
        Value::Array(items) => Ok(items),
        _ => Err(DbError::Corrupt(
            "a stored response's items are not an array".into(),
        )),
    };
    Ok(StoredResponse {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        previous_response_id: row.try_get("previous_response_id")?,
        model: row.try_get("model")?,
        instructions: row.try_get("instructions")?,
        input_items: items(row.try_get("input_items")?)?,
        output_items: items(row.try_get("output_items")?)?,
        response: row.try_get("response")?,
        request_id: row.try_get("request_id")?,
        expires_at: row.try_get("expires_at")?,
    })
}

/// `user_id`'s response `id`, unless it expired (`None` for another account's).
pub async fn get(
    client: &impl GenericClient,
    user_id: &str,
    id: &str,
) -> Result<Option<StoredResponse>, DbError> {
    let row = client
        .query_opt(
            "SELECT id, user_id, previous_response_id, model, instructions, input_items,
                    output_items, response, request_id, expires_at
             FROM responses WHERE id = $1 AND user_id = $2 AND expires_at > now()",
            &[&id, &user_id],
        )
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The conversation a continuation of `id` carries: every turn's input items then output
/// items, from the first response of the chain to `id`. `None` when `id` is not
/// `user_id`'s (or expired). A link that expired or was deleted ends the chain there.
pub async fn conversation(
    client: &impl GenericClient,
    user_id: &str,
    id: &str,
) -> Result<Option<Vec<Value>>, DbError> {
    let rows = client
        .query(
            "WITH RECURSIVE chain AS (
                 SELECT id, previous_response_id, input_items, output_items, 1 AS depth
                 FROM responses WHERE id = $1 AND user_id = $2 AND expires_at > now()
                 UNION ALL
                 SELECT r.id, r.previous_response_id, r.input_items, r.output_items, c.depth + 1
                 FROM responses r JOIN chain c ON r.id = c.previous_response_id
                 WHERE r.user_id = $2 AND r.expires_at > now() AND c.depth < $3
             )
             SELECT input_items, output_items FROM chain ORDER BY depth DESC",
            &[&id, &user_id, &(MAX_CHAIN as i32)],
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut items = Vec::new();
    for row in rows {
        for column in ["input_items", "output_items"] {
            if let Value::Array(turn) = row.try_get::<_, Value>(column)? {
                items.extend(turn);
            }
        }
    }
    Ok(Some(items))
}

/// The items with these ids among `user_id`'s stored responses (input or output items),
/// for `item_reference` inputs.
pub async fn find_items(
    client: &impl GenericClient,
    user_id: &str,
    ids: &[String],
) -> Result<std::collections::HashMap<String, Value>, DbError> {
    let rows = client
        .query(
            "SELECT item->>'id', item
             FROM responses r, jsonb_array_elements(r.input_items || r.output_items) AS item
             WHERE r.user_id = $1 AND r.expires_at > now() AND item->>'id' = ANY($2)",
            &[&user_id, &ids],
        )
        .await?;
    let mut found = std::collections::HashMap::new();
    for row in rows {
        found.insert(row.try_get(0)?, row.try_get(1)?);
    }
    Ok(found)
}

/// Deletes `user_id`'s response `id`; whether there was one.
pub async fn delete(client: &impl GenericClient, user_id: &str, id: &str) -> Result<bool, DbError> {
    let deleted = client
        .execute(
            "DELETE FROM responses WHERE id = $1 AND user_id = $2",
            &[&id, &user_id],
        )
        .await?;
    Ok(deleted > 0)
}

/// Deletes expired responses, at most `batch` (the scheduled run's sweep); how many.
pub async fn sweep_expired(client: &impl GenericClient, batch: i64) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "DELETE FROM responses WHERE id IN (
                 SELECT id FROM responses WHERE expires_at <= now() LIMIT $1)",
            &[&batch],
        )
        .await?)
}
