//! Embeddings (`POST /v1/embeddings`): the request and answer in OpenAI's shape, and the
//! two upstream formats that have an embeddings API — OpenAI's `/embeddings` (the request
//! passes through with the upstream's model id) and Gemini's `batchEmbedContents` (one
//! request per input; Gemini reports no usage, so the input is counted). Anthropic has no
//! embeddings API: routing never sends an embedding request there.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::call::{ResponseContext, UpstreamCall, UpstreamTarget, join_url};
use super::error::ProviderError;
use super::response::Usage;
use crate::catalog::ApiFormat;
use crate::tokens;

/// OpenAI's limit on inputs per request (Gemini's `batchEmbedContents` takes 100; a larger
/// batch to a Gemini candidate is sent in several calls).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;
/// Gemini's limit on requests per `batchEmbedContents` call.
const GEMINI_BATCH: usize = 100;
/// Largest `dimensions` accepted (the largest model today has 3072).
const MAX_DIMENSIONS: u32 = 65_536;

/// `POST /v1/embeddings`. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: EmbeddingInput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<EncodingFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// A string, an array of strings, a token array, or an array of token arrays.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// An array of numbers.
    #[default]
    Float,
    /// The little-endian `f32` bytes of the vector, base64-encoded (what the official
    /// OpenAI SDKs ask for by default, and decode).
    Base64,
}

impl EmbeddingRequest {
    /// 400 with `param` for what no provider would take.
    pub fn validate(&self) -> Result<(), ProviderError> {
        let invalid = |param: &str, message: String| ProviderError::InvalidRequest {
            param: Some(param.to_owned()),
            message,
        };
        if self.model.trim().is_empty() {
            return Err(invalid("model", "`model` must not be empty".into()));
        }
        let count = self.input.len();
        if count == 0 {
            return Err(invalid("input", "`input` must not be empty".into()));
        }
        if count > MAX_EMBEDDING_INPUTS {
            return Err(invalid(
                "input",
                format!("`input` has {count} items; at most {MAX_EMBEDDING_INPUTS} are accepted"),
            ));
        }
        let empty_item = match &self.input {
            EmbeddingInput::Text(text) => text.is_empty(),
            EmbeddingInput::Texts(texts) => texts.iter().any(String::is_empty),
            EmbeddingInput::Tokens(_) => false,
            EmbeddingInput::TokenBatches(batches) => batches.iter().any(Vec::is_empty),
        };
        if empty_item {
            return Err(invalid(
                "input",
                "`input` must not contain an empty string or token array".into(),
            ));
        }
        if let Some(dimensions) = self.dimensions
            && !(1..=MAX_DIMENSIONS).contains(&dimensions)
        {
            return Err(invalid(
                "dimensions",
                format!("`dimensions` must be between 1 and {MAX_DIMENSIONS}"),
            ));
        }
        Ok(())
    }

    /// The input's tokens for `model_id` (token arrays count their length): the hold, and
    /// the charge where the provider reports no usage.
    pub fn estimated_input_tokens(&self, model_id: &str) -> u32 {
        let total: u64 = match &self.input {
            EmbeddingInput::Text(text) => u64::from(tokens::estimate_text_tokens(model_id, text)),
            EmbeddingInput::Texts(texts) => texts
                .iter()
                .map(|t| u64::from(tokens::estimate_text_tokens(model_id, t)))
                .sum(),
            EmbeddingInput::Tokens(ids) => ids.len() as u64,
            EmbeddingInput::TokenBatches(batches) => batches.iter().map(|b| b.len() as u64).sum(),
        };
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    pub fn encoding(&self) -> EncodingFormat {
        self.encoding_format.unwrap_or_default()
    }
}

impl EmbeddingInput {
    /// How many embeddings the answer has.
    pub fn len(&self) -> usize {
        match self {
            EmbeddingInput::Text(_) | EmbeddingInput::Tokens(_) => 1,
            EmbeddingInput::Texts(texts) => texts.len(),
            EmbeddingInput::TokenBatches(batches) => batches.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token arrays: only an OpenAI-format provider takes them.
    pub fn is_tokens(&self) -> bool {
        matches!(
            self,
            EmbeddingInput::Tokens(_) | EmbeddingInput::TokenBatches(_)
        )
    }

    fn texts(&self) -> Option<Vec<&str>> {
        match self {
            EmbeddingInput::Text(text) => Some(vec![text.as_str()]),
            EmbeddingInput::Texts(texts) => Some(texts.iter().map(String::as_str).collect()),
            EmbeddingInput::Tokens(_) | EmbeddingInput::TokenBatches(_) => None,
        }
    }
}

/// One embedding of the answer: numbers, or their base64 form.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EmbeddingData {
    pub object: String,
    pub index: usize,
    pub embedding: Value,
}

/// The answer in OpenAI's shape (`usage` is set by the caller from the billed usage).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EmbeddingList {
    pub object: String,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct EmbeddingUsage {
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

/// A successful embeddings call.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub response: EmbeddingList,
    /// What to bill: input tokens only.
    pub usage: Usage,
    /// `true` when the upstream reported no usage and the input was counted.
    pub usage_estimated: bool,
}

/// The upstream calls of one embeddings request (Gemini: one per batch of 100 inputs).
pub(crate) fn build_calls(
    target: &UpstreamTarget,
    request: &EmbeddingRequest,
) -> Result<Vec<UpstreamCall>, ProviderError> {
    match target.api_format {
        ApiFormat::Bedrock => Err(ProviderError::Unsupported {
            format: ApiFormat::Bedrock,
            param: Some("model".into()),
            message: "embeddings are not served through Bedrock here".into(),
        }),
        ApiFormat::OpenAi => {
            let mut body = json!({
                "model": target.model_id,
                "input": request.input,
                "encoding_format": request.encoding(),
            });
            if let Some(dimensions) = request.dimensions {
                body["dimensions"] = json!(dimensions);
            }
            if let Some(user) = &request.user {
                body["user"] = json!(user);
            }
            Ok(vec![UpstreamCall {
                url: join_url(&target.base_url, "embeddings"),
                body,
            }])
        }
        ApiFormat::Gemini => {
            let texts = request.input.texts().ok_or(ProviderError::Unsupported {
                format: ApiFormat::Gemini,
                param: Some("input".into()),
                message: "Gemini embeds text only, not token arrays".into(),
            })?;
            let model = format!("models/{}", target.model_id);
            let url = join_url(&target.base_url, &format!("{model}:batchEmbedContents"));
            Ok(texts
                .chunks(GEMINI_BATCH)
                .map(|batch| {
                    let requests: Vec<Value> = batch
                        .iter()
                        .map(|text| {
                            let mut one = json!({
                                "model": model,
                                "content": {"parts": [{"text": text}]},
                            });
                            if let Some(dimensions) = request.dimensions {
                                one["outputDimensionality"] = json!(dimensions);
                            }
                            one
                        })
                        .collect();
                    UpstreamCall {
                        url: url.clone(),
                        body: json!({"requests": requests}),
                    }
                })
                .collect())
        }
        ApiFormat::Anthropic => Err(ProviderError::Unsupported {
            format: ApiFormat::Anthropic,
            param: Some("model".into()),
            message: "Anthropic's API has no embeddings".into(),
        }),
    }
}

/// What the answers of [`build_calls`] say, in order: the vectors (as the client asked
/// for them) and the usage, if the provider reported it.
pub(crate) fn parse_answers(
    api_format: ApiFormat,
    bodies: &[Vec<u8>],
    request: &EmbeddingRequest,
    context: &ResponseContext,
) -> Result<(Vec<EmbeddingData>, Option<u64>), ProviderError> {
    let invalid =
        |what: &str| ProviderError::invalid_response(format!("the embeddings answer {what}"));
    let mut data = Vec::with_capacity(request.input.len());
    let mut reported: Option<u64> = None;
    for body in bodies {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| invalid(&context.sanitize(&format!("is not JSON: {e}"))))?;
        match api_format {
            ApiFormat::Bedrock => return Err(invalid("came from a format without embeddings")),
            ApiFormat::OpenAi => {
                let items = value["data"]
                    .as_array()
                    .ok_or_else(|| invalid("has no `data` array"))?;
                for item in items {
                    let embedding = &item["embedding"];
                    let converted = match (embedding, request.encoding()) {
                        (Value::Array(_), EncodingFormat::Base64) => {
                            json!(encode_base64(
                                &floats(embedding)
                                    .ok_or_else(|| invalid("has a vector that is not numbers"))?
                            ))
                        }
                        (Value::Array(_), EncodingFormat::Float)
                        | (Value::String(_), EncodingFormat::Base64) => embedding.clone(),
                        (Value::String(text), EncodingFormat::Float) => {
                            json!(decode_base64(text).ok_or_else(|| invalid(
                                "has a base64 vector that does not decode"
                            ))?)
                        }
                        _ => {
                            return Err(invalid(
                                "has an embedding that is neither numbers nor base64",
                            ));
                        }
                    };
                    let index = item["index"].as_u64().map_or(data.len(), |i| i as usize);
                    data.push(EmbeddingData {
                        object: "embedding".into(),
                        index,
                        embedding: converted,
                    });
                }
                if let Some(tokens) = value["usage"]["prompt_tokens"].as_u64() {
                    reported = Some(reported.unwrap_or(0) + tokens);
                }
            }
            ApiFormat::Gemini => {
                let items = value["embeddings"]
                    .as_array()
                    .ok_or_else(|| invalid("has no `embeddings` array"))?;
                for item in items {
                    let values = floats(&item["values"])
                        .ok_or_else(|| invalid("has a vector that is not numbers"))?;
                    let embedding = match request.encoding() {
                        EncodingFormat::Float => json!(values),
                        EncodingFormat::Base64 => json!(encode_base64(&values)),
                    };
                    data.push(EmbeddingData {
                        object: "embedding".into(),
                        index: data.len(),
                        embedding,
                    });
                }
            }
            ApiFormat::Anthropic => return Err(invalid("came from a provider without embeddings")),
        }
    }
    if data.len() != request.input.len() {
        return Err(invalid(&format!(
            "has {} embeddings for {} inputs",
            data.len(),
            request.input.len()
        )));
    }
    data.sort_by_key(|d| d.index);
    Ok((data, reported))
}

fn floats(value: &Value) -> Option<Vec<f32>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_f64().map(|f| f as f32))
        .collect()
}

/// The vector as OpenAI's base64 encoding: little-endian `f32`s.
pub fn encode_base64(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The inverse of [`encode_base64`]; `None` when it is not such an encoding.
pub fn decode_base64(text: &str) -> Option<Vec<f32>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::AuthType;

    fn request(body: Value) -> EmbeddingRequest {
        serde_json::from_value(body).unwrap()
    }

    fn target(api_format: ApiFormat) -> UpstreamTarget {
        UpstreamTarget {
            api_format,
            base_url: "https://up.test/v1".into(),
            auth_type: AuthType::None,
            model_id: "upstream-model".into(),
            api_key: None,
            max_output_tokens: None,
            forward_unpriced_fields: false,
            auto_cache_control: false,
            traceparent: None,
            responses_api: false,
            account_tag: None,
        }
    }

    #[test]
    fn every_input_shape_parses_and_counts() {
        let one = request(json!({"model": "m", "input": "hello"}));
        assert_eq!(one.input.len(), 1);
        let many = request(json!({"model": "m", "input": ["a", "b", "c"]}));
        assert_eq!(many.input.len(), 3);
        let tokens = request(json!({"model": "m", "input": [1, 2, 3]}));
        assert_eq!(tokens.input, EmbeddingInput::Tokens(vec![1, 2, 3]));
        assert_eq!(tokens.estimated_input_tokens("m"), 3);
        let batches = request(json!({"model": "m", "input": [[1, 2], [3]]}));
        assert_eq!(batches.input.len(), 2);
        assert_eq!(batches.estimated_input_tokens("m"), 3);
        assert!(batches.input.is_tokens());
        assert!(
            serde_json::from_value::<EmbeddingRequest>(json!({"model": "m", "input": 5})).is_err()
        );
        assert!(
            serde_json::from_value::<EmbeddingRequest>(
                json!({"model": "m", "input": "x", "encoding_format": "int8"})
            )
            .is_err()
        );
    }

    #[test]
    fn bad_input_is_refused_with_its_param() {
        for (body, param) in [
            (json!({"model": "m", "input": []}), "input"),
            (json!({"model": "m", "input": ""}), "input"),
            (json!({"model": "m", "input": ["a", ""]}), "input"),
            (
                json!({"model": "m", "input": "a", "dimensions": 0}),
                "dimensions",
            ),
            (json!({"model": " ", "input": "a"}), "model"),
        ] {
            match request(body.clone()).validate() {
                Err(ProviderError::InvalidRequest { param: Some(p), .. }) => {
                    assert_eq!(p, param, "{body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        let too_many = vec!["x"; MAX_EMBEDDING_INPUTS + 1];
        assert!(
            request(json!({"model": "m", "input": too_many}))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let values = [0.25f32, -1.5, 3.0];
        let encoded = encode_base64(&values);
        assert_eq!(decode_base64(&encoded).unwrap(), values);
        assert_eq!(encode_base64(&[1.0]), "AACAPw==");
        assert!(decode_base64("AAA=").is_none());
    }

    #[test]
    fn openai_passes_through_and_gemini_batches_by_one_hundred() {
        let req = request(json!({"model": "m", "input": ["a", "b"], "dimensions": 8, "user": "u"}));
        let calls = build_calls(&target(ApiFormat::OpenAi), &req).unwrap();
        assert_eq!(calls[0].url, "https://up.test/v1/embeddings");
        assert_eq!(calls[0].body["model"], "upstream-model");
        assert_eq!(calls[0].body["dimensions"], 8);
        assert_eq!(calls[0].body["encoding_format"], "float");
        let texts: Vec<String> = (0..150).map(|i| format!("t{i}")).collect();
        let req = request(json!({"model": "m", "input": texts, "dimensions": 4}));
        let calls = build_calls(&target(ApiFormat::Gemini), &req).unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            calls[0].url,
            "https://up.test/v1/models/upstream-model:batchEmbedContents"
        );
        assert_eq!(calls[0].body["requests"].as_array().unwrap().len(), 100);
        assert_eq!(
            calls[1].body["requests"][0]["content"]["parts"][0]["text"],
            "t100"
        );
        assert_eq!(calls[1].body["requests"][0]["outputDimensionality"], 4);
        let tokens = request(json!({"model": "m", "input": [1, 2]}));
        assert!(matches!(
            build_calls(&target(ApiFormat::Gemini), &tokens),
            Err(ProviderError::Unsupported { .. })
        ));
        assert!(build_calls(&target(ApiFormat::Anthropic), &req).is_err());
    }

    #[test]
    fn answers_are_converted_to_the_encoding_asked_for() {
        let context = ResponseContext {
            model: "m".into(),
            created: 0,
            prompt_estimate: 0,
            key: None,
        };
        let gemini = br#"{"embeddings":[{"values":[0.5,1.0]},{"values":[2.0,-1.0]}]}"#.to_vec();
        let req = request(json!({"model": "m", "input": ["a", "b"], "encoding_format": "base64"}));
        let (data, usage) = parse_answers(ApiFormat::Gemini, &[gemini], &req, &context).unwrap();
        assert_eq!(usage, None);
        assert_eq!(
            decode_base64(data[1].embedding.as_str().unwrap()).unwrap(),
            [2.0, -1.0]
        );
        let openai = serde_json::to_vec(&json!({"data": [
            {"object": "embedding", "index": 1, "embedding": encode_base64(&[3.0])},
            {"object": "embedding", "index": 0, "embedding": encode_base64(&[4.0])}
        ], "usage": {"prompt_tokens": 7, "total_tokens": 7}}))
        .unwrap();
        let req = request(json!({"model": "m", "input": ["a", "b"]}));
        let (data, usage) = parse_answers(ApiFormat::OpenAi, &[openai], &req, &context).unwrap();
        assert_eq!(usage, Some(7));
        assert_eq!(data[0].embedding, json!([4.0]));
        assert_eq!(data[1].index, 1);
        let short = br#"{"embeddings":[{"values":[0.5]}]}"#.to_vec();
        assert!(parse_answers(ApiFormat::Gemini, &[short], &req, &context).is_err());
    }
}
