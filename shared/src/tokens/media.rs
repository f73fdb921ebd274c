//! Images and PDFs in a prompt, and the most each provider can bill for them.
//!
//! The providers bill an image by its size and a PDF by its pages, by formulas they
//! document; the hold must cover the most the candidate's provider can bill, so each is
//! counted per candidate ([`MediaBiller::Model`]) at:
//!
//! | format | image (size read from a base64 header) | image of unknown size (URL, unread header) |
//! |---|---|---|
//! | OpenAI, `gpt-4o-mini*` | tiles: 2,833 + 5,667 per 512-px tile (high/auto); 2,833 (low) | 48,169 (8 tiles) |
//! | OpenAI, `gpt-4o*`, `chatgpt-4o*`, `gpt-4-turbo*`, `gpt-4.5*` | tiles: 85 + 170 per tile; 85 (low) | 1,445 |
//! | OpenAI, `gpt-4.1*` | the larger of those tiles and 32-px patches (≤ 1,536) | 1,536 |
//! | OpenAI, `gpt-5`, `gpt-5-<date or variant>` | tiles: 70 + 140 per tile; 70 (low) | 1,190 |
//! | OpenAI, `o1*`, `o3*` | tiles: 75 + 150 per tile; 75 (low) | 1,275 |
//! | OpenAI, `computer-use-preview*` | tiles: 65 + 129 per tile; 65 (low) | 1,097 |
//! | OpenAI, `gpt-4.1-mini*`, `gpt-5-mini*` | patches (≤ 1,536) × 1.62, whatever the detail | 2,489 |
//! | OpenAI, `gpt-4.1-nano*`, `gpt-5-nano*` | patches × 2.46 | 3,779 |
//! | OpenAI, `o4-mini*` | patches × 1.72 | 2,642 |
//! | OpenAI-format, any other model or `detail` (`original`, …) | [`UNKNOWN_IMAGE_TOKENS`] | [`UNKNOWN_IMAGE_TOKENS`] |
//! | Anthropic | `w × h / 750` or `⌈w/28⌉ × ⌈h/28⌉` (the larger) after Claude's high-resolution downscale (long edge ≤ 2,576 px, ≤ 3.75 MP) | 5,000 |
//! | Gemini | the larger of Gemini 2's 258 per 768-px tile (258 up to 384 × 384) and Gemini 3's 1,120 (its default, high, resolution) | [`UNKNOWN_IMAGE_TOKENS`] |
//!
//! Tiles: the image scaled to fit 2,048 × 2,048, then its short side to 768, counted in
//! 512-px squares (OpenAI's "Calculating costs"); patches: 32-px squares, at most 1,536
//! (OpenAI's patch-based models). Anthropic's high-resolution tier (Claude Opus 4.7 and
//! later) bills at most about 4,784 tokens per image, older models about 1,600; 5,000 covers
//! both. Model names are matched after a provider prefix (`openai/…`) and by family
//! (`gpt-5` matches `gpt-5-2025-08-07`, not `gpt-5.2`).
//!
//! A PDF (an Anthropic `document` with a base64 `application/pdf` source, or an OpenAI
//! `file` part with base64 `file_data`) counts its pages (see `pdf.rs`), each at
//! [`PDF_TEXT_TOKENS_PER_PAGE`] plus the format's image of unknown size: both providers
//! send each page's text and an image of the page; Anthropic documents 1,500–3,000 text
//! tokens a page. A PDF whose pages cannot be counted counts [`MAX_PDF_PAGES`]. The chat
//! run's hold further caps each candidate's prompt at its context window: a provider
//! refuses, and does not bill, a longer prompt.
//!
//! The routing estimate ([`MediaBiller::Estimate`], for the context filter and
//! `count_tokens`) counts an image as Claude's standard size (`w × h / 750` after a downscale
//! to 1,568 px and 1.2 MP, at most 1,600; 1,600 when the size is unknown) and a PDF page
//! as 3,000 + 1,600 tokens (one page per 50 kB when the pages cannot be counted).

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use super::image_size::image_size;
use super::pdf::page_count;
use crate::catalog::ApiFormat;

/// An image whose size cannot be read, or a model without a documented per-image
/// maximum: above every documented one but `gpt-4o-mini`'s (Together's 4 tiles of 1,601,
/// OpenAI's newest patch budgets at their multipliers).
pub const UNKNOWN_IMAGE_TOKENS: u64 = 16_384;
/// Text tokens of one PDF page at most (Anthropic: 1,500–3,000 a page).
pub const PDF_TEXT_TOKENS_PER_PAGE: u64 = 3_000;
/// The most pages a provider accepts in one request (Anthropic: 600, 100 for models with
/// a 200k-token context window): a PDF whose pages cannot be counted is held at this.
pub const MAX_PDF_PAGES: u64 = 600;
/// Anthropic's largest image: 3.75 MP / 750 (high-resolution tier).
const ANTHROPIC_IMAGE_MAX: u64 = 5_000;
/// Claude's standard image (about 1.2 MP, long edge 1,568 px): the routing estimate's image.
const STANDARD_IMAGE_TOKENS: u64 = 1_600;
/// Gemini 3's default (high) media resolution for an image.
const GEMINI_IMAGE_TOKENS: u64 = 1_120;
/// The routing estimate's page count of a PDF it cannot read: one page per 50 kB.
const ESTIMATE_BYTES_PER_PAGE: u64 = 50_000;
/// `providers::ANTHROPIC_BLOCK_PART`, the part that carries an Anthropic block (tokens sits
/// below providers; a test in `providers/request.rs` keeps the two equal).
const ANTHROPIC_BLOCK_PART: &str = "anthropic_block";
/// Base64 characters decoded to read an image's header (JPEG frames may follow long EXIF
/// segments).
const IMAGE_HEADER_CHARS: usize = 4 * 65_536;

/// Who bills the media.
#[derive(Debug, Clone, Copy)]
pub enum MediaBiller<'a> {
    /// No one in particular: the routing estimate and `count_tokens`.
    Estimate,
    /// A candidate: its wire format and the upstream's model id.
    Model {
        format: ApiFormat,
        model_id: &'a str,
    },
}

/// OpenAI's `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail {
    Low,
    /// `high`, `auto` or none.
    High,
    /// Anything else (`original`, …): no documented maximum.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Image {
        size: Option<(u32, u32)>,
        detail: Detail,
    },
    Pdf {
        pages: Option<u32>,
        bytes: usize,
    },
}

/// One image or PDF, and the only format that can take it (an Anthropic block, an OpenAI
/// `file` part), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Media {
    kind: Kind,
    only: Option<ApiFormat>,
}

/// A prompt's images and PDFs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptMedia {
    items: Vec<Media>,
}

impl PromptMedia {
    /// The media of chat `messages` (OpenAI's shape; Anthropic blocks work too).
    pub fn of(messages: &[Value]) -> PromptMedia {
        let mut items = Vec::new();
        for message in messages {
            collect(message, None, &mut items);
        }
        PromptMedia { items }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The tokens `biller` counts for them; a part the biller's format cannot take counts
    /// nothing (that candidate refuses the request before any call).
    pub fn tokens(&self, biller: MediaBiller<'_>) -> u64 {
        self.items
            .iter()
            .filter(|media| match (biller, media.only) {
                (MediaBiller::Model { format, .. }, Some(only)) => format == only,
                _ => true,
            })
            .map(|media| media.kind.tokens(biller))
            .fold(0u64, u64::saturating_add)
    }
}

/// The routing estimate's tokens for a JSON object that is an image or a PDF; `None` for
/// anything else.
pub(super) fn estimated_tokens(fields: &Map<String, Value>) -> Option<u64> {
    media_of(fields, None).map(|media| media.kind.tokens(MediaBiller::Estimate))
}

/// The media a JSON object is, if it is one, with the format that alone takes it.
fn media_of(fields: &Map<String, Value>, within: Option<ApiFormat>) -> Option<Media> {
    let kind = fields.get("type").and_then(Value::as_str)?;
    match kind {
        "image_url" | "input_image" => {
            let (url, detail) = match fields.get("image_url") {
                Some(Value::String(url)) => (url.as_str(), fields.get("detail")),
                Some(Value::Object(image)) => (
                    image.get("url").and_then(Value::as_str).unwrap_or_default(),
                    image.get("detail"),
                ),
                _ => ("", None),
            };
            let detail = match detail.and_then(Value::as_str) {
                None | Some("auto" | "high") => Detail::High,
                Some("low") => Detail::Low,
                Some(_) => Detail::Other,
            };
            let size = data_url_payload(url).and_then(|data| image_size(&decode_prefix(data)));
            Some(Media {
                kind: Kind::Image { size, detail },
                only: within,
            })
        }
        // An Anthropic image block.
        "image" => {
            let source = fields.get("source")?;
            let size = (source.get("type").and_then(Value::as_str) == Some("base64"))
                .then(|| source.get("data").and_then(Value::as_str))
                .flatten()
                .and_then(|data| image_size(&decode_prefix(data)));
            Some(Media {
                kind: Kind::Image {
                    size,
                    detail: Detail::High,
                },
                only: within,
            })
        }
        // An Anthropic document: only a base64 PDF is media; text and content sources
        // are text, URL and file sources are refused on the platform's key.
        "document" => {
            let source = fields.get("source")?;
            let is_pdf = source.get("type").and_then(Value::as_str) == Some("base64")
                && source.get("media_type").and_then(Value::as_str) == Some("application/pdf");
            let data = source.get("data").and_then(Value::as_str)?;
            is_pdf.then(|| Media {
                kind: pdf(data),
                only: within.or(Some(ApiFormat::Anthropic)),
            })
        }
        // An OpenAI file part: `file_data` is a data URL (or bare base64) of a PDF.
        "file" => {
            let file = fields.get("file")?;
            let data = file.get("file_data").and_then(Value::as_str)?;
            let data = data_url_payload(data).unwrap_or(data);
            Some(Media {
                kind: pdf(data),
                only: within.or(Some(ApiFormat::OpenAi)),
            })
        }
        _ => None,
    }
}

fn pdf(base64: &str) -> Kind {
    let bytes = decode(base64);
    Kind::Pdf {
        pages: bytes.as_deref().and_then(page_count),
        bytes: bytes.map_or(base64.len() / 4 * 3, |b| b.len()),
    }
}

fn collect(value: &Value, within: Option<ApiFormat>, items: &mut Vec<Media>) {
    match value {
        Value::Array(values) => {
            for value in values {
                collect(value, within, items);
            }
        }
        Value::Object(fields) => {
            let within = match fields.get("type").and_then(Value::as_str) {
                Some(ANTHROPIC_BLOCK_PART) => Some(ApiFormat::Anthropic),
                _ => within,
            };
            match media_of(fields, within) {
                Some(media) => items.push(media),
                None => {
                    for value in fields.values() {
                        collect(value, within, items);
                    }
                }
            }
        }
        _ => {}
    }
}

/// The base64 payload of a `data:<type>;base64,<payload>` URL.
fn data_url_payload(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("data:")?;
    let (meta, payload) = rest.split_once(',')?;
    meta.ends_with(";base64").then_some(payload)
}

fn engine() -> GeneralPurpose {
    GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}

/// The whole payload (whitespace tolerated); `None` if it is not base64.
fn decode(base64: &str) -> Option<Vec<u8>> {
    let engine = engine();
    engine.decode(base64).ok().or_else(|| {
        let compact: String = base64.chars().filter(|c| !c.is_whitespace()).collect();
        engine.decode(compact).ok()
    })
}

/// The first bytes of a payload: enough for any image header.
fn decode_prefix(base64: &str) -> Vec<u8> {
    let compact: String = base64
        .chars()
        .filter(|c| !c.is_whitespace())
        .take(IMAGE_HEADER_CHARS)
        .collect();
    let whole = compact.len() / 4 * 4;
    let prefix = if compact.len() < IMAGE_HEADER_CHARS {
        compact.as_str()
    } else {
        &compact[..whole]
    };
    engine().decode(prefix).unwrap_or_default()
}

impl Kind {
    fn tokens(&self, biller: MediaBiller<'_>) -> u64 {
        match self {
            Kind::Image { size, detail } => image_tokens(biller, *size, *detail),
            Kind::Pdf { pages, bytes } => {
                let pages = match (biller, pages) {
                    (_, Some(pages)) => u64::from(*pages).clamp(1, MAX_PDF_PAGES),
                    (MediaBiller::Estimate, None) => (*bytes as u64)
                        .div_ceil(ESTIMATE_BYTES_PER_PAGE)
                        .clamp(1, MAX_PDF_PAGES),
                    (MediaBiller::Model { .. }, None) => MAX_PDF_PAGES,
                };
                pages * (PDF_TEXT_TOKENS_PER_PAGE + image_tokens(biller, None, Detail::High))
            }
        }
    }
}

fn image_tokens(biller: MediaBiller<'_>, size: Option<(u32, u32)>, detail: Detail) -> u64 {
    match biller {
        MediaBiller::Estimate => size.map_or(STANDARD_IMAGE_TOKENS, |(w, h)| {
            let (w, h) = fit(w, h, 1_568, 1_200_000);
            (w * h).div_ceil(750).min(STANDARD_IMAGE_TOKENS)
        }),
        // Bedrock: Claude's formula, the largest of its models' image costs.
        MediaBiller::Model {
            format: ApiFormat::Anthropic | ApiFormat::Bedrock,
            ..
        } => size.map_or(ANTHROPIC_IMAGE_MAX, |(w, h)| {
            let (w, h) = fit(w, h, 2_576, 3_750_000);
            (w * h)
                .div_ceil(750)
                .max(w.div_ceil(28) * h.div_ceil(28))
                .min(ANTHROPIC_IMAGE_MAX)
        }),
        MediaBiller::Model {
            format: ApiFormat::Gemini,
            ..
        } => size.map_or(UNKNOWN_IMAGE_TOKENS, |(w, h)| {
            let (w, h) = (u64::from(w), u64::from(h));
            let tiles = if w <= 384 && h <= 384 {
                1
            } else {
                w.div_ceil(768) * h.div_ceil(768)
            };
            (258 * tiles).max(GEMINI_IMAGE_TOKENS)
        }),
        MediaBiller::Model {
            format: ApiFormat::OpenAi,
            model_id,
        } => openai_image_tokens(OpenAiImages::of(model_id), size, detail),
    }
}

/// `(w, h)` scaled down (never up), aspect kept, to a long edge of `max_edge` and at most
/// `max_pixels`; rounded up, so that formulas on it stay upper bounds.
fn fit(w: u32, h: u32, max_edge: u32, max_pixels: u64) -> (u64, u64) {
    let (w, h) = (f64::from(w), f64::from(h));
    let scale = (f64::from(max_edge) / w.max(h))
        .min((max_pixels as f64 / (w * h)).sqrt())
        .min(1.0);
    ((w * scale).ceil() as u64, (h * scale).ceil() as u64)
}

/// How an OpenAI model bills images.
#[derive(Debug, Clone, Copy, PartialEq)]
enum OpenAiImages {
    /// `base` + `tile` per 512-px tile; `base` alone at low detail.
    Tiles { base: u64, tile: u64 },
    /// 32-px patches (at most 1,536) × `percent` / 100, whatever the detail.
    Patches { percent: u64 },
    /// `gpt-4.1`: documented both ways; the larger.
    TilesOrPatches,
    /// No documented formula.
    Unknown,
}

impl OpenAiImages {
    fn of(model_id: &str) -> OpenAiImages {
        let name = model_id
            .rsplit('/')
            .next()
            .unwrap_or(model_id)
            .to_ascii_lowercase();
        // A family is the name itself or the name and a `-suffix` (a date, a variant).
        let is = |family: &str| {
            name == family
                || name
                    .strip_prefix(family)
                    .is_some_and(|rest| rest.starts_with('-'))
        };
        if is("gpt-4o-mini") {
            OpenAiImages::Tiles {
                base: 2_833,
                tile: 5_667,
            }
        } else if is("gpt-4.1-mini") || is("gpt-5-mini") {
            OpenAiImages::Patches { percent: 162 }
        } else if is("gpt-4.1-nano") || is("gpt-5-nano") {
            OpenAiImages::Patches { percent: 246 }
        } else if is("o4-mini") {
            OpenAiImages::Patches { percent: 172 }
        } else if is("gpt-4.1") {
            OpenAiImages::TilesOrPatches
        } else if is("gpt-4o") || is("chatgpt-4o") || is("gpt-4-turbo") || is("gpt-4.5") {
            OpenAiImages::Tiles {
                base: 85,
                tile: 170,
            }
        } else if is("gpt-5") {
            OpenAiImages::Tiles {
                base: 70,
                tile: 140,
            }
        } else if is("o1") || is("o3") {
            OpenAiImages::Tiles {
                base: 75,
                tile: 150,
            }
        } else if is("computer-use-preview") {
            OpenAiImages::Tiles {
                base: 65,
                tile: 129,
            }
        } else {
            OpenAiImages::Unknown
        }
    }
}

fn openai_image_tokens(rule: OpenAiImages, size: Option<(u32, u32)>, detail: Detail) -> u64 {
    let tiles = |base: u64, tile: u64| match detail {
        Detail::Low => base,
        _ => base + tile * size.map_or(8, |(w, h)| openai_tiles(w, h)),
    };
    let patches = |percent: u64| {
        let patches = size.map_or(1_536, |(w, h)| {
            (u64::from(w).div_ceil(32) * u64::from(h).div_ceil(32)).min(1_536)
        });
        (patches * percent).div_ceil(100)
    };
    let documented = match rule {
        OpenAiImages::Tiles { base, tile } => tiles(base, tile),
        OpenAiImages::Patches { percent } => patches(percent),
        OpenAiImages::TilesOrPatches => tiles(85, 170).max(patches(100)),
        OpenAiImages::Unknown => return UNKNOWN_IMAGE_TOKENS,
    };
    if detail == Detail::Other {
        // A detail level the formulas do not cover (`original`).
        return documented.max(UNKNOWN_IMAGE_TOKENS);
    }
    documented
}

/// 512-px tiles of an image scaled to fit 2,048 × 2,048, then to a short side of 768.
fn openai_tiles(w: u32, h: u32) -> u64 {
    let (w, h) = (f64::from(w), f64::from(h));
    let fit = (2_048.0 / w.max(h)).min(1.0);
    let (w, h) = (w * fit, h * fit);
    let short = (768.0 / w.min(h)).min(1.0);
    let (w, h) = ((w * short).ceil() as u64, (h * short).ceil() as u64);
    w.div_ceil(512) * h.div_ceil(512)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn openai(model: &str) -> MediaBiller<'_> {
        MediaBiller::Model {
            format: ApiFormat::OpenAi,
            model_id: model,
        }
    }

    const ANTHROPIC: MediaBiller<'static> = MediaBiller::Model {
        format: ApiFormat::Anthropic,
        model_id: "claude-sonnet-4-5",
    };
    const GEMINI: MediaBiller<'static> = MediaBiller::Model {
        format: ApiFormat::Gemini,
        model_id: "gemini-2.0-flash",
    };

    fn png(w: u32, h: u32) -> String {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend(w.to_be_bytes());
        png.extend(h.to_be_bytes());
        png.extend([8, 2, 0, 0, 0, 0, 0, 0, 0]);
        base64::engine::general_purpose::STANDARD.encode(png)
    }

    fn image(w: u32, h: u32, detail: Option<&str>) -> Value {
        let mut image = json!({"url": format!("data:image/png;base64,{}", png(w, h))});
        if let Some(detail) = detail {
            image["detail"] = json!(detail);
        }
        json!({"role": "user", "content": [{"type": "image_url", "image_url": image}]})
    }

    fn tokens(message: Value, biller: MediaBiller<'_>) -> u64 {
        PromptMedia::of(&[message]).tokens(biller)
    }

    #[test]
    fn openais_documented_examples() {
        // "A 1024 x 1024 square image in detail: high mode costs 765 tokens."
        assert_eq!(
            tokens(image(1024, 1024, Some("high")), openai("gpt-4o")),
            765
        );
        // "A 2048 x 4096 image in detail: high mode costs 1105 tokens."
        assert_eq!(tokens(image(2048, 4096, None), openai("gpt-4o")), 1105);
        // "A 4096 x 8192 image in detail: low most costs 85 tokens."
        assert_eq!(tokens(image(4096, 8192, Some("low")), openai("gpt-4o")), 85);
        // gpt-4o-mini bills the same tiles at 2,833 + 5,667 each.
        assert_eq!(
            tokens(
                image(1024, 1024, None),
                openai("openai/gpt-4o-mini-2024-07-18")
            ),
            2_833 + 4 * 5_667
        );
        assert_eq!(
            tokens(image(1024, 1024, Some("low")), openai("gpt-4o-mini")),
            2_833
        );
        // Patches: 1024 × 1024 is 1,024 patches; 1800 × 2400 is capped at 1,536.
        assert_eq!(
            tokens(image(1024, 1024, None), openai("gpt-4.1-mini")),
            1_659
        );
        assert_eq!(
            tokens(image(1800, 2400, Some("low")), openai("gpt-4.1-nano")),
            3_779
        );
        assert_eq!(tokens(image(1800, 2400, None), openai("gpt-4.1")), 1_536);
        assert_eq!(tokens(image(512, 512, None), openai("o3-2025-04-16")), 225);
        assert_eq!(tokens(image(512, 512, None), openai("gpt-5")), 210);
    }

    #[test]
    fn unknown_sizes_models_and_details_take_the_maximum() {
        let url = |model: &str, detail: Option<&str>| {
            let mut part =
                json!({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}});
            if let Some(detail) = detail {
                part["image_url"]["detail"] = json!(detail);
            }
            tokens(json!({"role": "user", "content": [part]}), openai(model))
        };
        assert_eq!(url("gpt-4o", None), 1_445);
        assert_eq!(url("gpt-4o", Some("low")), 85);
        assert_eq!(url("gpt-4o-mini", None), 48_169);
        assert_eq!(url("o4-mini", None), 2_642);
        assert_eq!(url("gpt-5-2025-08-07", None), 1_190);
        // Not a documented family: `gpt-5.2` is not `gpt-5`.
        assert_eq!(url("gpt-5.2", None), UNKNOWN_IMAGE_TOKENS);
        assert_eq!(
            url("meta-llama/llama-3.2-90b-vision", None),
            UNKNOWN_IMAGE_TOKENS
        );
        assert_eq!(url("gpt-4o", Some("original")), UNKNOWN_IMAGE_TOKENS);
        assert_eq!(url("gpt-4o-mini", Some("original")), 48_169);
        assert_eq!(
            tokens(
                json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}}]}),
                ANTHROPIC
            ),
            5_000
        );
    }

    #[test]
    fn anthropic_and_gemini_formulas() {
        // 1092 × 1092: ~1,590 tokens, no downscale.
        assert_eq!(tokens(image(1092, 1092, None), ANTHROPIC), 1_590);
        // 200 × 200: 54 (w × h / 750) vs 64 patches of 28 px: the larger.
        assert_eq!(tokens(image(200, 200, None), ANTHROPIC), 64);
        // Larger than the high-resolution tier: downscaled, at most 5,000.
        assert!(tokens(image(8000, 8000, None), ANTHROPIC) <= 5_000);
        assert!(tokens(image(8000, 8000, None), ANTHROPIC) >= 4_784);
        // Gemini: 258 per 768-px tile, at least Gemini 3's 1,120.
        assert_eq!(tokens(image(300, 300, None), GEMINI), 1_120);
        assert_eq!(tokens(image(1600, 900, None), GEMINI), 6 * 258);
        // The routing estimate: Claude's standard size.
        assert_eq!(
            tokens(image(1000, 1000, None), MediaBiller::Estimate),
            1_334
        );
        assert_eq!(
            tokens(image(4000, 3000, None), MediaBiller::Estimate),
            1_600
        );
    }

    #[test]
    fn pdfs_count_their_pages_for_the_formats_that_take_them() {
        let data = base64::engine::general_purpose::STANDARD
            .encode(super::super::pdf::tests::plain_pdf(4));
        let document = json!({"role": "user", "content": [{"type": "anthropic_block", "block": {
            "type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": data}}}]});
        assert_eq!(tokens(document.clone(), ANTHROPIC), 4 * (3_000 + 5_000));
        assert_eq!(
            tokens(document.clone(), MediaBiller::Estimate),
            4 * (3_000 + 1_600)
        );
        // Only Anthropic takes the block: another format counts nothing.
        assert_eq!(tokens(document, openai("gpt-4o")), 0);

        let file = json!({"role": "user", "content": [{"type": "file", "file": {
            "filename": "a.pdf", "file_data": format!("data:application/pdf;base64,{data}")}}]});
        assert_eq!(tokens(file.clone(), openai("gpt-4o")), 4 * (3_000 + 1_445));
        assert_eq!(tokens(file, ANTHROPIC), 0);

        // Unreadable: the most pages a provider takes (the estimate: by size).
        let broken = json!({"role": "user", "content": [{"type": "anthropic_block", "block": {
            "type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}}}]});
        assert_eq!(tokens(broken.clone(), ANTHROPIC), 600 * 8_000);
        assert_eq!(tokens(broken, MediaBiller::Estimate), 4_600);

        // Text documents are text, not media.
        let text = json!({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hi"}});
        assert!(PromptMedia::of(&[text]).is_empty());
    }
}
