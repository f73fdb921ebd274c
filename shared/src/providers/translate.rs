//! Pieces the translating adapters (Anthropic, Gemini) share: reading image URLs, tool-call
//! arguments, and the JSON-mode instruction.

use serde_json::{Map, Value};

use super::error::ProviderError;
use super::request::{ResponseFormat, ResponseFormatKind};
use crate::catalog::ApiFormat;

/// Where an image part's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ImageSource {
    /// From a `data:<media type>;base64,<data>` URL.
    Base64 { media_type: String, data: String },
    /// An `http(s)` URL the provider fetches itself.
    Url(String),
}

pub(crate) fn image_source(
    format: ApiFormat,
    url: &str,
    param: &str,
) -> Result<ImageSource, ProviderError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| ProviderError::InvalidRequest {
                param: Some(param.to_owned()),
                message: "malformed data URL: no `,` before the data".to_owned(),
            })?;
        let Some(media_type) = meta.strip_suffix(";base64") else {
            return Err(ProviderError::unsupported(
                format,
                param,
                format!("{format} accepts data URLs only in base64 (`data:<type>;base64,...`)"),
            ));
        };
        // Parameters such as `;charset=` sit between the type and `;base64`.
        let media_type = media_type.split(';').next().unwrap_or_default().trim();
        if media_type.is_empty() {
            return Err(ProviderError::InvalidRequest {
                param: Some(param.to_owned()),
                message: "malformed data URL: no media type".to_owned(),
            });
        }
        return Ok(ImageSource::Base64 {
            media_type: media_type.to_ascii_lowercase(),
            data: data.to_owned(),
        });
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        return Ok(ImageSource::Url(url.to_owned()));
    }
    Err(ProviderError::InvalidRequest {
        param: Some(param.to_owned()),
        message: "an image URL must be http(s) or a base64 data URL".to_owned(),
    })
}

/// Tool-call arguments (JSON text) as the object both Anthropic and Gemini expect. Empty
/// text, which some clients send for functions without parameters, is `{}`.
pub(crate) fn tool_arguments(
    arguments: &str,
    param: &str,
) -> Result<Map<String, Value>, ProviderError> {
    if arguments.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ProviderError::InvalidRequest {
            param: Some(param.to_owned()),
            message: "tool-call arguments must be a JSON object".to_owned(),
        }),
        Err(_) => Err(ProviderError::InvalidRequest {
            param: Some(param.to_owned()),
            message: "tool-call arguments are not valid JSON".to_owned(),
        }),
    }
}

/// The system-prompt addition that asks for JSON, for formats without a JSON mode switch
/// (Anthropic).
pub(crate) fn json_instruction(format: &ResponseFormat) -> Option<String> {
    match format.kind {
        ResponseFormatKind::Text => None,
        ResponseFormatKind::JsonObject => Some(
            "Respond only with a single valid JSON object. Do not add any text, explanation or Markdown code fences before or after it."
                .to_owned(),
        ),
        ResponseFormatKind::JsonSchema => {
            let schema = format
                .json_schema
                .as_ref()
                .and_then(|s| s.schema.as_ref())
                .map(Value::to_string)
                .unwrap_or_else(|| "{}".to_owned());
            Some(format!(
                "Respond only with a single valid JSON object that conforms to this JSON Schema: {schema}\nDo not add any text, explanation or Markdown code fences before or after it."
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_and_http_urls() {
        assert_eq!(
            image_source(ApiFormat::Anthropic, "data:image/PNG;base64,iVBOR", "p").unwrap(),
            ImageSource::Base64 {
                media_type: "image/png".into(),
                data: "iVBOR".into()
            }
        );
        assert_eq!(
            image_source(
                ApiFormat::Gemini,
                "data:image/jpeg;name=x.jpg;base64,/9j/",
                "p"
            )
            .unwrap(),
            ImageSource::Base64 {
                media_type: "image/jpeg".into(),
                data: "/9j/".into()
            }
        );
        assert_eq!(
            image_source(ApiFormat::Gemini, "HTTPS://x.test/a.png", "p").unwrap(),
            ImageSource::Url("HTTPS://x.test/a.png".into())
        );
        assert!(matches!(
            image_source(ApiFormat::Anthropic, "data:image/svg+xml,<svg/>", "p"),
            Err(ProviderError::Unsupported { .. })
        ));
        assert!(matches!(
            image_source(ApiFormat::Anthropic, "file:///etc/passwd", "p"),
            Err(ProviderError::InvalidRequest { .. })
        ));
    }

    #[test]
    fn arguments_must_be_an_object() {
        assert!(tool_arguments("", "p").unwrap().is_empty());
        assert_eq!(tool_arguments("{\"a\":1}", "p").unwrap()["a"], 1);
        assert!(tool_arguments("[1]", "p").is_err());
        assert!(tool_arguments("{", "p").is_err());
    }
}
