//! `POST /v1/responses` and the stored responses (`GET /v1/responses/{id}`, its
//! `input_items`, `DELETE`): the OpenAI Responses API's door over the same core run as chat
//! completions. The translation both ways is `switchboard_core::inbound::openai_responses`
//! (and `openai_responses_stream`); storage is `switchboard_core::responses`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};
use switchboard_core::auth::Caller;
use switchboard_core::chat::{self, ChatAnswer, ChatInput, Route};
use switchboard_core::db::{DbError, DbPool};
use switchboard_core::http::sse::event_stream;
use switchboard_core::http::{ApiError, ErrorShape, RequestId, RequestTiming};
use switchboard_core::inbound::openai_responses::{self, ResponseShell, ResponsesRequest};
use switchboard_core::inbound::openai_responses_stream::{self, Store};
use switchboard_core::responses::{self, StoredResponse};
use switchboard_core::state::AppState;

fn not_found(what: &str, id: &str) -> ApiError {
    let id: String = id.chars().filter(|c| !c.is_control()).take(100).collect();
    ApiError::NotFound(format!("no {what} with id `{id}`"))
}

/// `item_reference` items replaced by the caller's stored items they name.
async fn resolve_references(
    pool: &DbPool,
    user_id: &str,
    request: &mut ResponsesRequest,
) -> Result<(), ApiError> {
    let ids: Vec<String> = request
        .input_items
        .iter()
        .filter(|item| item["type"] == "item_reference")
        .filter_map(|item| item["id"].as_str().map(str::to_string))
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let client = pool.get().await.map_err(DbError::from)?;
    let found = responses::find_items(&**client, user_id, &ids).await?;
    for (i, item) in request.input_items.iter_mut().enumerate() {
        if item["type"] != "item_reference" {
            continue;
        }
        let id = item["id"].as_str().unwrap_or_default().to_string();
        match found.get(&id) {
            Some(stored) => *item = stored.clone(),
            None => {
                return Err(ApiError::invalid_param(
                    format!("input[{i}].id"),
                    format!(
                        "no stored item with id `{}`",
                        id.chars().take(100).collect::<String>()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// What the store keeps of an answered response.
fn stored(
    state: &AppState,
    caller: &Caller,
    request_id: &str,
    shell: &ResponseShell,
    response: Value,
    output: Vec<Value>,
) -> StoredResponse {
    StoredResponse {
        id: shell.id.clone(),
        user_id: caller.user_id.clone(),
        previous_response_id: shell.request.previous_response_id.clone(),
        model: response["model"].as_str().unwrap_or_default().to_string(),
        instructions: shell.request.instructions.clone(),
        input_items: openai_responses::with_ids(&shell.request.input_items),
        output_items: output,
        response,
        request_id: request_id.to_string(),
        expires_at: chrono::Utc::now()
            + chrono::Duration::from_std(state.config.chat.responses_ttl)
                .unwrap_or(chrono::Duration::days(30)),
    }
}

/// Writes the response; on failure it is answered all the same (it was charged), saying
/// `store: false`, and the failure is logged.
async fn save(pool: &DbPool, record: &StoredResponse) -> bool {
    let saved = async {
        let client = pool.get().await.map_err(DbError::from)?;
        responses::save(&**client, record).await
    }
    .await;
    match saved {
        Ok(()) => true,
        Err(error) => {
            tracing::error!(response_id = %record.id, %error, "could not store a response; answered with store: false");
            false
        }
    }
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Extension(RequestId(request_id)): Extension<RequestId>,
    lambda: Option<Extension<lambda_http::Context>>,
    timing: Option<Extension<RequestTiming>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let options = crate::run_options(&headers, lambda, timing)?;
    let mut request = openai_responses::parse(&body)?;
    resolve_references(&state.pool, &caller.user_id, &mut request).await?;
    let history = match &request.previous_response_id {
        None => Vec::new(),
        Some(previous) => {
            let client = state.pool.get().await.map_err(DbError::from)?;
            responses::conversation(&**client, &caller.user_id, previous)
                .await?
                .ok_or_else(|| not_found("response", previous))?
        }
    };
    let chat_request = openai_responses::to_chat_request(&request, history)?;
    let shell = ResponseShell::new(request);
    let input = ChatInput {
        caller: caller.clone(),
        request: chat_request,
        request_id: request_id.clone(),
        options,
        route: Route::Responses,
    };
    Ok(match chat::run(&state.chat(), input).await? {
        ChatAnswer::Complete(completed) => {
            let routed = completed.routed.clone();
            let (mut response, output) = openai_responses::answer(&shell, *completed);
            if shell.request.store {
                let record = stored(
                    &state,
                    &caller,
                    &request_id,
                    &shell,
                    response.clone(),
                    output,
                );
                if !save(&state.pool, &record).await {
                    response["store"] = json!(false);
                }
            }
            let mut answer = Json(response).into_response();
            crate::routed_headers(&mut answer, &routed);
            answer
        }
        ChatAnswer::Stream(stream) => {
            let routed = stream.routed.clone();
            let store: Option<Store> = shell.request.store.then(|| {
                let (state, caller, shell, request_id) = (
                    state.clone(),
                    caller.clone(),
                    shell.clone(),
                    request_id.clone(),
                );
                Box::new(move |response: Value, output: Vec<Value>| {
                    Box::pin(async move {
                        let record = stored(&state, &caller, &request_id, &shell, response, output);
                        save(&state.pool, &record).await
                    })
                        as std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
                }) as Store
            });
            let frames = openai_responses_stream::stream(stream, shell, store);
            let mut answer = event_stream(frames, ErrorShape::OpenAi);
            crate::routed_headers(&mut answer, &routed);
            answer
        }
    })
}

/// `GET /v1/responses/{id}`: the caller's stored response, as it was answered.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let client = state.pool.get().await.map_err(DbError::from)?;
    let stored = responses::get(&**client, &caller.user_id, &id)
        .await?
        .ok_or_else(|| not_found("response", &id))?;
    Ok(Json(stored.response))
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct ItemsPage {
    limit: Option<usize>,
    order: Option<String>,
    after: Option<String>,
}

/// `GET /v1/responses/{id}/input_items`: the input items of that turn (`order` `desc` by
/// default, `limit` 1–100, `after` an item id).
pub async fn input_items(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(page): Query<ItemsPage>,
) -> Result<Json<Value>, ApiError> {
    let limit = page.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid_param(
            "limit",
            "limit must be between 1 and 100",
        ));
    }
    let client = state.pool.get().await.map_err(DbError::from)?;
    let stored = responses::get(&**client, &caller.user_id, &id)
        .await?
        .ok_or_else(|| not_found("response", &id))?;
    let mut items = stored.input_items;
    match page.order.as_deref() {
        None | Some("desc") => items.reverse(),
        Some("asc") => {}
        Some(_) => return Err(ApiError::invalid_param("order", "order is asc or desc")),
    }
    if let Some(after) = &page.after {
        let at = items
            .iter()
            .position(|item| item["id"] == after.as_str())
            .ok_or_else(|| ApiError::invalid_param("after", "unknown item id"))?;
        items.drain(..=at);
    }
    let has_more = items.len() > limit;
    items.truncate(limit);
    Ok(Json(json!({
        "object": "list",
        "first_id": items.first().map(|i| i["id"].clone()),
        "last_id": items.last().map(|i| i["id"].clone()),
        "has_more": has_more,
        "data": items,
    })))
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let client = state.pool.get().await.map_err(DbError::from)?;
    if !responses::delete(&**client, &caller.user_id, &id).await? {
        return Err(not_found("response", &id));
    }
    Ok(Json(
        json!({"id": id, "object": "response.deleted", "deleted": true}),
    ))
}
