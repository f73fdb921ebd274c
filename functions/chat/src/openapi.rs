//! The chat function's OpenAPI document. The request and answer bodies are OpenAI's Chat
//! Completions schema (plus `_metadata`), so the document describes the routes, headers,
//! auth and error statuses and points to OpenAI's schema for the bodies.

use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Required,
};

const SCHEME: &str = "user_key";

fn json_object(description: &str) -> ContentBuilder {
    ContentBuilder::new().schema(Some(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(description)),
    ))
}

fn error(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        json_object("OpenAI's error shape: {\"error\": {message, type, code, param}}").build(),
    )
}

fn header(name: &str, description: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

/// A required JSON request body.
fn json_body(description: &str) -> utoipa::openapi::request_body::RequestBody {
    RequestBodyBuilder::new()
        .required(Some(Required::True))
        .content("application/json", json_object(description).build())
        .build()
}

fn query(name: &str, description: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

/// Every chat route: `POST /v1/chat/completions`, `POST /v1/messages` (and its
/// `count_tokens`), `POST /v1/responses` (and the stored responses' routes),
/// `POST /v1/embeddings`, `GET /v1/models`, `GET /v1/account`.
pub fn document() -> OpenApi {
    let errors = |builder: ResponsesBuilder| {
        builder
            .response("401", error("missing, unknown or revoked key"))
            .response(
                "503",
                error("no candidate passes the filters, or the database is unavailable"),
            )
    };
    let completions = OperationBuilder::new()
        .tag("chat")
        .summary(Some("OpenAI Chat Completions, routed, billed and with fallbacks"))
        .description(Some(
            "`model` is `auto`, a catalog `model_id` or `provider_slug/model_id`. With `stream: true` the answer is \
             SSE (`data: {chat.completion.chunk}` … `data: [DONE]`); the last chunk carries `_metadata`.",
        ))
        .parameter(header("X-Power-Level", "eco | balanced | precision (default: the user's, else balanced)"))
        .parameter(header("X-Task-Type", "code | chat | rag | creative (default chat)"))
        .parameter(header("x-request-id", "echoed back when it is a sane token"))
        .request_body(Some(json_body("OpenAI's CreateChatCompletionRequest")))
        .responses(
            errors(ResponsesBuilder::new())
                .response(
                    "200",
                    ResponseBuilder::new()
                        .description("chat.completion with `_metadata`, or an SSE stream")
                        .content("application/json", json_object("OpenAI's chat.completion plus `_metadata`").build())
                        .content("text/event-stream", ContentBuilder::new().build()),
                )
                .response("400", error("malformed request, or the upstream refused it"))
                .response("402", error("insufficient_credits or monthly_cap_exceeded"))
                .response("403", error("the model is above the caller's tier"))
                .response("404", error("model_not_found"))
                .response("413", error("body over the limit"))
                .response("429", error("rate limit; see Retry-After"))
                .response("502", error("every candidate failed"))
                .response("504", error("the request deadline passed"))
                .build(),
        )
        .security(SecurityRequirement::new(SCHEME, Vec::<String>::new()))
        .build();
    let messages = OperationBuilder::new()
        .tag("chat")
        .summary(Some(
            "The Anthropic Messages API, routed, billed and with fallbacks",
        ))
        .description(Some(
            "Anthropic's request and answer shapes over the same run as chat completions; \
             `x-api-key` or `Authorization: Bearer`. `max_tokens` is required; `stream: true` \
             answers with Anthropic's SSE event sequence. Errors come as `{type: error, error: {type, message}}`.",
        ))
        .parameter(header("anthropic-version", "accepted (e.g. 2023-06-01)"))
        .parameter(header(
            "X-Power-Level",
            "eco | balanced | precision, for `model: auto`",
        ))
        .request_body(Some(json_body("Anthropic's Messages request")))
        .responses(
            errors(ResponsesBuilder::new())
                .response(
                    "200",
                    ResponseBuilder::new()
                        .description("an Anthropic message with usage and `_metadata`")
                        .content(
                            "application/json",
                            json_object("Anthropic's message").build(),
                        ),
                )
                .response("400", error("malformed request (invalid_request_error)"))
                .response("402", error("credits or the monthly cap (billing_error)"))
                .response("404", error("not_found_error"))
                .response("429", error("rate_limit_error; see Retry-After"))
                .response("502", error("every candidate failed (api_error)"))
                .build(),
        )
        .security(SecurityRequirement::new(SCHEME, Vec::<String>::new()))
        .build();
    let count_tokens = OperationBuilder::new()
        .tag("chat")
        .summary(Some(
            "The prompt's estimated input tokens, Anthropic's shape; no charge",
        ))
        .request_body(Some(json_body("Anthropic's Messages request")))
        .responses(
            errors(ResponsesBuilder::new())
                .response(
                    "200",
                    ResponseBuilder::new()
                        .description("{input_tokens}")
                        .content("application/json", json_object("{input_tokens: N}").build()),
                )
                .response("400", error("malformed request (invalid_request_error)"))
                .build(),
        )
        .security(SecurityRequirement::new(SCHEME, Vec::<String>::new()))
        .build();
    let responses = OperationBuilder::new()
        .tag("chat")
        .summary(Some("The OpenAI Responses API, routed, billed and with fallbacks"))
        .description(Some(
            "OpenAI's Responses request (`input` items, `instructions`, function `tools`, `text.format`, \
             `max_output_tokens`, `reasoning`, `store`, `previous_response_id`) over the same run as chat \
             completions, translated for every upstream format. The answer is a Response object plus \
             `_metadata`; with `stream: true`, the Responses SSE events ending in `response.completed`. A \
             stored response is written before the answer ends.",
        ))
        .parameter(header("X-Power-Level", "eco | balanced | precision (default: the user's, else balanced)"))
        .parameter(header("x-request-id", "echoed back when it is a sane token"))
        .request_body(Some(json_body("OpenAI's ResponseCreateParams")))
        .responses(
            errors(ResponsesBuilder::new())
                .response(
                    "200",
                    ResponseBuilder::new()
                        .description("a Response with `_metadata`, or an SSE stream of Responses events")
                        .content("application/json", json_object("OpenAI's Response plus `_metadata`").build())
                        .content("text/event-stream", ContentBuilder::new().build()),
                )
                .response("400", error("malformed request, a built-in tool, or the upstream refused it"))
                .response("402", error("insufficient_credits or monthly_cap_exceeded"))
                .response("404", error("model_not_found, or an unknown previous_response_id"))
                .response("429", error("rate limit; see Retry-After"))
                .response("502", error("every candidate failed"))
                .response("504", error("the request deadline passed"))
                .build(),
        )
        .security(SecurityRequirement::new(SCHEME, Vec::<String>::new()))
        .build();
    let id = || {
        ParameterBuilder::new()
            .name("id")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some("a response id (resp_...), the caller's own"))
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .build()
    };
    let stored = |summary: &str, answer: &str| {
        OperationBuilder::new()
            .tag("chat")
            .summary(Some(summary))
            .parameter(id())
            .responses(
                errors(ResponsesBuilder::new())
                    .response(
                        "200",
                        ResponseBuilder::new()
                            .description(answer)
                            .content("application/json", json_object(answer).build()),
                    )
                    .response(
                        "404",
                        error("no such response of the caller's (or it expired)"),
                    )
                    .build(),
            )
            .security(SecurityRequirement::new(SCHEME, Vec::<String>::new()))
            .build()
    };
    let read_response = stored(
        "A stored response, as it was answered",
        "the Response object",
    );
    let delete_response = stored(
        "Deletes a stored response",
        "{id, object: response.deleted, deleted: true}",
    );
    let mut input_items = stored(
        "A stored response's input items (this turn's)",
        "{object: list, data: [item], first_id, last_id, has_more}",
    );
    input_items.parameters.get_or_insert_with(Vec::new).extend(
        [
            query("limit", "1-100 (default 20)"),
            query("order", "asc | desc (default desc)"),
            query("after", "an item id: the items after it"),
        ]
        .map(Into::into),
    );
    let embeddings = OperationBuilder::new()
        .tag("chat")
        .summary(Some("OpenAI Embeddings, routed to embedding models, billed and with fallbacks"))
        .description(Some(
            "`model` is `auto`, an embedding model's `model_id` or `provider_slug/model_id` (a chat model is a 400). \
             `input` is a string, an array of strings, a token array or an array of token arrays; \
             `dimensions`, `encoding_format` (`float` | `base64`) and `user` are understood. Billed as input tokens.",
        ))
        .parameter(header("X-Power-Level", "eco | balanced | precision, for `model: auto`"))
        .parameter(header("x-request-id", "echoed back when it is a sane token"))
        .request_body(Some(json_body("OpenAI's CreateEmbeddingRequest")))
        .responses(
            errors(ResponsesBuilder::new())
                .response(
                    "200",
                    ResponseBuilder::new()
                        .description("{object: list, data: [{object: embedding, index, embedding}], model, usage, _metadata}")
                        .content("application/json", json_object("OpenAI's embedding list plus `_metadata`").build()),
                )
                .response("400", error("malformed request, or a chat model"))
                .response("402", error("insufficient_credits or monthly_cap_exceeded"))
                .response("404", error("model_not_found"))
                .response("429", error("rate limit; see Retry-After"))
                .response("502", error("every candidate failed"))
                .build(),
        )
        .security(SecurityRequirement::new(SCHEME, Vec::<String>::new()))
        .build();
    let models = OperationBuilder::new()
        .tag("chat")
        .summary(Some(
            "Models the caller's tier may use, in OpenAI's list format (with `model_type`), or Anthropic's with `anthropic-version`",
        ))
        .parameter(header("anthropic-version", "answer in Anthropic's list shape (chat models only)"))
        .parameter(query("limit", "Anthropic's shape: page size, 1-1000 (default 20)"))
        .parameter(query("after_id", "Anthropic's shape: the page after this id"))
        .parameter(query("before_id", "Anthropic's shape: the page before this id"))
        .responses(
            errors(ResponsesBuilder::new())
                .response(
                    "200",
                    ResponseBuilder::new()
                        .description("{object: list, data: [model]}, or {data, has_more, first_id, last_id}")
                        .content(
                            "application/json",
                            json_object("OpenAI's model list").build(),
                        ),
                )
                .build(),
        )
        .security(SecurityRequirement::new(SCHEME, Vec::<String>::new()))
        .build();
    let account = OperationBuilder::new()
        .tag("chat")
        .summary(Some("The caller's account: tier and money"))
        .responses(
            errors(ResponsesBuilder::new())
                .response("200", ResponseBuilder::new().description("the account").content(
                    "application/json",
                    json_object("{user_id, tier, status, credits_balance, credits_held, month_spend, monthly_cap, key_role}").build(),
                ))
                .build(),
        )
        .security(SecurityRequirement::new(SCHEME, Vec::<String>::new()))
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Switchboard chat API")
                .version(env!("CARGO_PKG_VERSION"))
                .build(),
        )
        .paths(
            PathsBuilder::new()
                .path(
                    "/v1/chat/completions",
                    PathItem::new(HttpMethod::Post, completions),
                )
                .path("/v1/messages", PathItem::new(HttpMethod::Post, messages))
                .path(
                    "/v1/messages/count_tokens",
                    PathItem::new(HttpMethod::Post, count_tokens),
                )
                .path("/v1/responses", PathItem::new(HttpMethod::Post, responses))
                .path("/v1/responses/{id}", {
                    let mut item = PathItem::new(HttpMethod::Get, read_response);
                    item.delete = Some(delete_response);
                    item
                })
                .path(
                    "/v1/responses/{id}/input_items",
                    PathItem::new(HttpMethod::Get, input_items),
                )
                .path(
                    "/v1/embeddings",
                    PathItem::new(HttpMethod::Post, embeddings),
                )
                .path("/v1/models", PathItem::new(HttpMethod::Get, models))
                .path("/v1/account", PathItem::new(HttpMethod::Get, account)),
        )
        .components(Some(
            ComponentsBuilder::new()
                .security_scheme(
                    SCHEME,
                    SecurityScheme::Http(
                        HttpBuilder::new()
                            .scheme(HttpAuthScheme::Bearer)
                            .bearer_format("sk-sb-...")
                            .build(),
                    ),
                )
                .build(),
        ))
        .build()
}
