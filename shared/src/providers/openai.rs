//! The OpenAI-compatible adapter (OpenAI, OpenRouter, Together, Groq, Fireworks, Ollama,
//! vLLM...): the request passes through with the upstream's model id, and usage is always
//! requested on streams; answers are already in the canonical shape.

use serde_json::{Map, Value};

use super::call::{FORWARDED_FIELDS, ResponseContext, UpstreamCall, UpstreamTarget, join_url};
use super::error::{ProviderError, error_text};
use super::request::{ANTHROPIC_BLOCK_PART, ChatRequest, MessageContent};
use super::response::{ChatCompletion, ChatCompletionChunk, THINKING_BLOCKS, Usage};
use super::sse::SseEvent;
use super::stream::{EventDecoder, StreamTally};
use crate::catalog::ApiFormat;

pub(crate) fn build_request(
    target: &UpstreamTarget,
    request: &ChatRequest,
    stream: bool,
) -> Result<UpstreamCall, ProviderError> {
    let Value::Object(mut body) =
        serde_json::to_value(request).map_err(|e| ProviderError::InvalidRequest {
            param: None,
            message: format!("the request cannot be serialized: {e}"),
        })?
    else {
        return Err(ProviderError::InvalidRequest {
            param: None,
            message: "the request is not a JSON object".to_owned(),
        });
    };
    body.insert("model".to_owned(), Value::String(target.model_id.clone()));
    // Anthropic's thinking blocks on assistant turns, and a breakpoint on a whole message,
    // mean nothing to another provider.
    if let Some(Value::Array(messages)) = body.get_mut("messages") {
        for message in messages.iter_mut().filter_map(Value::as_object_mut) {
            message.remove(THINKING_BLOCKS);
            message.remove("cache_control");
        }
    }
    // Anthropic-only pieces from the Messages API: a block with no OpenAI equivalent
    // cannot go (another candidate may take it); a tool's cache breakpoint is dropped.
    for (i, message) in request.messages.iter().enumerate() {
        if let Some(MessageContent::Parts(parts)) = &message.content
            && let Some(j) = parts.iter().position(|p| p.kind == ANTHROPIC_BLOCK_PART)
        {
            let kind = parts[j]
                .extra
                .get("block")
                .and_then(|b| b["type"].as_str())
                .unwrap_or("block");
            return Err(ProviderError::unsupported(
                ApiFormat::OpenAi,
                format!("messages[{i}].content[{j}]"),
                format!("`{kind}` blocks are supported only by Anthropic-format providers"),
            ));
        }
    }
    if let Some(Value::Array(tools)) = body.get_mut("tools") {
        for tool in tools.iter_mut().filter_map(Value::as_object_mut) {
            tool.remove("cache_control");
        }
    }
    for name in request.extra.keys() {
        let anthropic_only = super::anthropic::ANTHROPIC_ONLY_FIELDS.contains(&name.as_str());
        if anthropic_only
            || (!target.forward_unpriced_fields && !FORWARDED_FIELDS.contains(&name.as_str()))
        {
            body.remove(name);
        }
    }
    // The output limit the hold assumed, in the fields the client used (newer OpenAI
    // models take only `max_completion_tokens`), else as `max_tokens`.
    if let Some(limit) = target.output_tokens(request.requested_output_tokens()) {
        let given = [
            ("max_tokens", request.max_tokens),
            ("max_completion_tokens", request.max_completion_tokens),
        ];
        for (field, value) in given {
            if let Some(value) = value {
                body.insert(field.to_owned(), Value::from(value.min(limit)));
            }
        }
        if given.iter().all(|(_, value)| value.is_none()) {
            body.insert("max_tokens".to_owned(), Value::from(limit));
        }
    }
    if stream {
        body.insert("stream".to_owned(), Value::Bool(true));
        // Usage is always requested upstream (ledger.md: streamed calls are never free);
        // the client's own choice only decides whether the chat function shows it.
        let mut options = match body.remove("stream_options") {
            Some(Value::Object(options)) => options,
            _ => Map::new(),
        };
        options.insert("include_usage".to_owned(), Value::Bool(true));
        body.insert("stream_options".to_owned(), Value::Object(options));
    } else {
        body.remove("stream");
        body.remove("stream_options");
    }
    Ok(UpstreamCall {
        url: join_url(&target.base_url, "chat/completions"),
        body: Value::Object(body),
    })
}

pub(crate) fn parse_completion(
    body: &[u8],
    context: &ResponseContext,
) -> Result<(ChatCompletion, Option<Usage>), ProviderError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ProviderError::invalid_response(format!("the answer is not valid JSON ({e})"))
    })?;
    if let Some(error) = embedded_error(&value, context) {
        return Err(ProviderError::invalid_response(error.0));
    }
    let mut completion: ChatCompletion = serde_json::from_value(value).map_err(|e| {
        ProviderError::invalid_response(
            context.sanitize(&format!("the answer is not a chat completion ({e})")),
        )
    })?;
    if completion.choices.is_empty() {
        return Err(ProviderError::invalid_response("the answer has no choices"));
    }
    if completion.model.is_empty() {
        completion.model = context.model.clone();
    }
    if completion.created == 0 {
        completion.created = context.created;
    }
    let usage = completion.usage.as_ref().map(Usage::from_openai);
    Ok((completion, usage))
}

/// OpenRouter and some compatible servers report failures inside a 200 body or stream as
/// `{"error": {"message", "code"}}`. Returns the sanitized message and whether it is worth
/// another candidate.
fn embedded_error(
    value: &Value,
    context: &ResponseContext,
) -> Option<(String, bool, Option<String>)> {
    let error = value.get("error")?;
    if error.is_null() {
        return None;
    }
    let (message, kind) = error_text(ApiFormat::OpenAi, value);
    let message = context.sanitize(&message.unwrap_or_else(|| "unspecified error".to_owned()));
    let code = error.get("code").and_then(Value::as_u64);
    // Numeric codes are HTTP statuses (OpenRouter); a client error is not worth retrying.
    let retryable = !matches!(code, Some(400 | 404 | 413 | 422));
    Some((message, retryable, kind))
}

/// OpenAI chunks pass through; the usage chunk is absorbed into the tally.
pub(crate) struct StreamDecoder {
    context: ResponseContext,
}

impl StreamDecoder {
    pub(crate) fn new(context: ResponseContext) -> StreamDecoder {
        StreamDecoder { context }
    }
}

impl EventDecoder for StreamDecoder {
    fn on_event(
        &mut self,
        event: SseEvent,
        tally: &mut StreamTally,
        out: &mut Vec<ChatCompletionChunk>,
    ) -> Result<bool, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        let value: Value = serde_json::from_str(data).map_err(|e| {
            ProviderError::invalid_response(format!("a stream frame is not valid JSON ({e})"))
        })?;
        if let Some((message, retryable, error_type)) = embedded_error(&value, &self.context) {
            return Err(ProviderError::StreamError {
                message,
                error_type,
                retryable,
            });
        }
        let mut chunk: ChatCompletionChunk = serde_json::from_value(value).map_err(|e| {
            ProviderError::invalid_response(
                self.context
                    .sanitize(&format!("a stream frame is not a chunk ({e})")),
            )
        })?;
        if let Some(usage) = chunk.usage.take() {
            tally.set_usage(Usage::from_openai(&usage), true);
        }
        if !chunk.choices.is_empty() {
            if chunk.model.is_empty() {
                chunk.model = self.context.model.clone();
            }
            out.push(chunk);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::AuthType;
    use crate::secret::Secret;
    use serde_json::json;

    fn target() -> UpstreamTarget {
        UpstreamTarget {
            api_format: ApiFormat::OpenAi,
            base_url: "https://api.example/v1/".to_owned(),
            auth_type: AuthType::Bearer,
            model_id: "upstream-model".to_owned(),
            api_key: Some(Secret::new("k")),
            max_output_tokens: None,
            forward_unpriced_fields: false,
            auto_cache_control: false,
            traceparent: None,
            responses_api: false,
            account_tag: None,
        }
    }

    #[test]
    fn stream_forces_usage_and_keeps_client_options() {
        let request: ChatRequest = serde_json::from_value(json!({
            "model": "auto", "stream": true,
            "stream_options": {"include_usage": false, "x": 1},
            "messages": [{"role": "user", "content": "hi"}]
        }))
        .unwrap();
        let call = build_request(&target(), &request, true).unwrap();
        assert_eq!(call.url, "https://api.example/v1/chat/completions");
        assert_eq!(call.body["model"], "upstream-model");
        assert_eq!(
            call.body["stream_options"],
            json!({"include_usage": true, "x": 1})
        );
        let call = build_request(&target(), &request, false).unwrap();
        assert!(call.body.get("stream").is_none());
        assert!(call.body.get("stream_options").is_none());
    }
}
