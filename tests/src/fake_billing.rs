//! What a provider bills for a request's input, computed from the request the fake
//! upstream receives, by the formulas the providers document: the usage of a
//! [`Reply::billed_from_request`](crate::fake_upstream::Reply::billed_from_request).
//! And the media to send: valid PNG images and PDFs of a chosen size.
//!
//! - Text: OpenAI models by their own encoding (`o200k_base` for `gpt-4o*`), others by
//!   `cl100k_base` standing in for their tokenizers; 3 tokens per message and 3 for the
//!   reply, as OpenAI counts.
//! - Images (size from the PNG header; by URL, from a file the fake hosts, as if fetched):
//!   OpenAI's tiles (the image fit in 2,048 × 2,048, then its short side to 768, in
//!   512-px tiles: 85 + 170 each, `gpt-4o-mini` 2,833 + 5,667 each; `detail: low` the base
//!   alone); Anthropic's `w × h / 750` after a downscale to a 1,568-px long edge and
//!   about 1,600 tokens (1.2 MP: Claude's standard tier, where 1092 × 1092 is not
//!   downscaled); Gemini 2's 258 per 768-px tile (258 up to 384 × 384).
//! - PDFs (Anthropic `document` blocks, OpenAI `file` parts): the text of their pages
//!   (every `(…) Tj` string) plus an image of each page, rendered at 1.5 × its 612 × 792
//!   points, billed as that format's image.
//! - Anthropic prompt caching: the prefix (tools, then system, then messages) up to the
//!   last `cache_control` breakpoint is written, the part up to the last 1-hour
//!   breakpoint for an hour; the rest is plain input. The fake has no cache to read from.

use std::collections::HashMap;

use base64::Engine;
use serde_json::Value;
use switchboard_core::tokens::TokenCounter;

/// The wire format a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
    Gemini,
}

/// The input a provider bills for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BilledInput {
    /// Every input token, cache writes included.
    pub prompt_tokens: u64,
    /// Anthropic prompt-cache writes (part of `prompt_tokens`), both lifetimes.
    pub cache_write_tokens: u64,
    /// The part of `cache_write_tokens` written for an hour.
    pub cache_write_1h_tokens: u64,
}

/// The size, in points, of the pages [`pdf`] makes.
const PAGE_POINTS: (u32, u32) = (612, 792);

struct Biller<'a> {
    wire: Wire,
    model: &'a str,
    counter: TokenCounter,
    hosted: &'a HashMap<String, Vec<u8>>,
}

/// What the provider of `wire` serving `model` bills for `body`; `hosted` are the files
/// the fake serves by URL.
pub fn billed_input(
    wire: Wire,
    model: &str,
    body: &Value,
    hosted: &HashMap<String, Vec<u8>>,
) -> BilledInput {
    let counter = match TokenCounter::for_model(model) {
        TokenCounter::Heuristic => TokenCounter::Cl100kBase,
        openai => openai,
    };
    let biller = Biller {
        wire,
        model,
        counter,
        hosted,
    };
    match wire {
        Wire::OpenAi => BilledInput {
            prompt_tokens: biller.openai(body),
            ..BilledInput::default()
        },
        Wire::Anthropic => biller.anthropic(body),
        Wire::Gemini => BilledInput {
            prompt_tokens: biller.gemini(body),
            ..BilledInput::default()
        },
    }
}

impl Biller<'_> {
    fn text(&self, text: &str) -> u64 {
        u64::from(self.counter.count(text))
    }

    fn openai(&self, body: &Value) -> u64 {
        let mut tokens = 3;
        for message in body["messages"].as_array().into_iter().flatten() {
            tokens += 3;
            for (key, value) in message.as_object().into_iter().flatten() {
                tokens += match (key.as_str(), value) {
                    ("content", Value::Array(parts)) => {
                        parts.iter().map(|part| self.openai_part(part)).sum()
                    }
                    (_, Value::String(text)) => self.text(text),
                    (_, other) => self.text(&other.to_string()),
                };
            }
        }
        if let Some(tools) = body.get("tools") {
            tokens += self.text(&tools.to_string());
        }
        tokens
    }

    fn openai_part(&self, part: &Value) -> u64 {
        match part["type"].as_str() {
            Some("text") => self.text(part["text"].as_str().unwrap_or_default()),
            Some("image_url") => {
                let url = part["image_url"]["url"].as_str().unwrap_or_default();
                let low = part["image_url"]["detail"] == "low";
                self.image(self.fetch(url).as_deref(), low)
            }
            Some("file") => {
                let data = part["file"]["file_data"].as_str().unwrap_or_default();
                self.pdf(&decode(data.split_once(',').map_or(data, |(_, d)| d)))
            }
            _ => self.text(&part.to_string()),
        }
    }

    fn gemini(&self, body: &Value) -> u64 {
        let mut tokens = 0;
        let system = body["systemInstruction"]["parts"].as_array();
        let contents = body["contents"].as_array().into_iter().flatten();
        let parts = system
            .into_iter()
            .flatten()
            .chain(contents.flat_map(|c| c["parts"].as_array().into_iter().flatten()));
        for part in parts {
            tokens += if let Some(text) = part["text"].as_str() {
                self.text(text)
            } else if let Some(data) = part["inlineData"]["data"].as_str() {
                self.image(Some(&decode(data)), false)
            } else {
                self.text(&part.to_string())
            };
        }
        if let Some(tools) = body.get("tools") {
            tokens += self.text(&tools.to_string());
        }
        tokens
    }

    /// Tokens in prefix order, with the cumulative count at each breakpoint.
    fn anthropic(&self, body: &Value) -> BilledInput {
        let mut total = 0;
        let mut write = 0;
        let mut write_1h = 0;
        let mut breakpoint = |total: u64, block: &Value| {
            if let Some(cache_control) = block.get("cache_control").filter(|c| c.is_object()) {
                write = total;
                if cache_control["ttl"] == "1h" {
                    write_1h = total;
                }
            }
        };
        for tool in body["tools"].as_array().into_iter().flatten() {
            let mut definition = tool.clone();
            if let Some(object) = definition.as_object_mut() {
                object.remove("cache_control");
            }
            total += self.text(&definition.to_string());
            breakpoint(total, tool);
        }
        match &body["system"] {
            Value::String(text) => total += self.text(text),
            Value::Array(blocks) => {
                for block in blocks {
                    total += self.anthropic_block(block);
                    breakpoint(total, block);
                }
            }
            _ => {}
        }
        for message in body["messages"].as_array().into_iter().flatten() {
            total += 3;
            match &message["content"] {
                Value::String(text) => total += self.text(text),
                Value::Array(blocks) => {
                    for block in blocks {
                        total += self.anthropic_block(block);
                        breakpoint(total, block);
                    }
                }
                _ => {}
            }
        }
        total += 3;
        BilledInput {
            prompt_tokens: total,
            cache_write_tokens: write,
            cache_write_1h_tokens: write_1h,
        }
    }

    fn anthropic_block(&self, block: &Value) -> u64 {
        let source = &block["source"];
        match block["type"].as_str() {
            Some("text") => self.text(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => {
                self.text(block["name"].as_str().unwrap_or_default())
                    + self.text(&block["input"].to_string())
            }
            Some("tool_result") => match &block["content"] {
                Value::String(text) => self.text(text),
                Value::Array(blocks) => blocks.iter().map(|b| self.anthropic_block(b)).sum(),
                _ => 0,
            },
            Some("image") => {
                let bytes = match source["type"].as_str() {
                    Some("base64") => Some(decode(source["data"].as_str().unwrap_or_default())),
                    _ => self.fetch(source["url"].as_str().unwrap_or_default()),
                };
                self.image(bytes.as_deref(), false)
            }
            Some("document") => match source["type"].as_str() {
                Some("text") => self.text(source["data"].as_str().unwrap_or_default()),
                Some("base64") => self.pdf(&decode(source["data"].as_str().unwrap_or_default())),
                Some("url") => self.pdf(
                    &self
                        .fetch(source["url"].as_str().unwrap_or_default())
                        .unwrap_or_default(),
                ),
                _ => self.text(&source.to_string()),
            },
            _ => self.text(&block.to_string()),
        }
    }

    /// A URL's bytes: a data URL's payload, or a file the fake hosts.
    fn fetch(&self, url: &str) -> Option<Vec<u8>> {
        match url.strip_prefix("data:") {
            Some(rest) => rest.split_once(',').map(|(_, data)| decode(data)),
            None => self.hosted.get(url).cloned(),
        }
    }

    /// One image as this provider bills it; an image it cannot read is billed as the
    /// largest it could be.
    fn image(&self, bytes: Option<&[u8]>, low: bool) -> u64 {
        let size = bytes.and_then(png_size);
        self.image_of_size(size, low)
    }

    fn image_of_size(&self, size: Option<(u32, u32)>, low: bool) -> u64 {
        match self.wire {
            Wire::OpenAi => {
                let (base, tile) = if self.model.contains("gpt-4o-mini") {
                    (2_833, 5_667)
                } else {
                    (85, 170)
                };
                if low {
                    return base;
                }
                let tiles = size.map_or(8, |(w, h)| {
                    let (w, h) = (f64::from(w), f64::from(h));
                    let fit = (2048.0 / w.max(h)).min(1.0);
                    let (w, h) = (w * fit, h * fit);
                    let short = (768.0 / w.min(h)).min(1.0);
                    let (w, h) = ((w * short).round() as u64, (h * short).round() as u64);
                    w.div_ceil(512) * h.div_ceil(512)
                });
                base + tile * tiles
            }
            Wire::Anthropic => size.map_or(1_600, |(w, h)| {
                let (w, h) = (f64::from(w), f64::from(h));
                let scale = (1568.0 / w.max(h))
                    .min((1_200_000.0 / (w * h)).sqrt())
                    .min(1.0);
                ((w * scale).round() * (h * scale).round() / 750.0).ceil() as u64
            }),
            Wire::Gemini => size.map_or(258, |(w, h)| {
                if w <= 384 && h <= 384 {
                    258
                } else {
                    258 * u64::from(w.div_ceil(768) * h.div_ceil(768))
                }
            }),
        }
    }

    /// Each page's text and an image of each page.
    fn pdf(&self, pdf: &[u8]) -> u64 {
        let text = String::from_utf8_lossy(pdf);
        let pages = text
            .match_indices("/Type /Page")
            .filter(|(at, _)| !text[at + "/Type /Page".len()..].starts_with('s'))
            .count() as u64;
        let page_text: Vec<&str> = text
            .split(") Tj")
            .filter_map(|before| before.rsplit_once('(').map(|(_, string)| string))
            .collect();
        let page_image =
            self.image_of_size(Some((PAGE_POINTS.0 * 3 / 2, PAGE_POINTS.1 * 3 / 2)), false);
        self.text(&page_text.join("\n")) + pages * page_image
    }
}

fn decode(base64: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(base64)
        .unwrap_or_default()
}

/// A PNG's size, from its IHDR chunk.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") || bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(bytes.get(16..20)?.try_into().ok()?);
    let height = u32::from_be_bytes(bytes.get(20..24)?.try_into().ok()?);
    Some((width, height))
}

/// A valid PNG of `width` × `height` pixels (1-bit grayscale, all black): small even for
/// large sizes.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let row = 1 + width.div_ceil(8) as usize;
    let raw = vec![0u8; row * height as usize];
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([1, 0, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [
        (b"IHDR", ihdr),
        (b"IDAT", miniz_oxide::deflate::compress_to_vec_zlib(&raw, 9)),
        (b"IEND", Vec::new()),
    ] {
        png.extend((data.len() as u32).to_be_bytes());
        let mut chunk = kind.to_vec();
        chunk.extend(&data);
        png.extend(&chunk);
        png.extend(crc32(&chunk).to_be_bytes());
    }
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A valid PDF of `pages` US-letter pages, each showing `text` (uncompressed, so that
/// its page tree and text can be read as they are).
pub fn pdf(pages: u32, text: &str) -> Vec<u8> {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('(', "\\(")
        .replace(')', "\\)");
    let content = format!("BT /F1 11 Tf 72 720 Td ({escaped}) Tj ET");
    let (width, height) = PAGE_POINTS;
    // 1: catalog, 2: pages, 3: font, then a page and its content per page.
    let kids: Vec<String> = (0..pages).map(|i| format!("{} 0 R", 4 + 2 * i)).collect();
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {pages} >>",
            kids.join(" ")
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    for i in 0..pages {
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width} {height}] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
            5 + 2 * i
        ));
        objects.push(format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        ));
    }
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, object) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend(format!("{} 0 obj\n{object}\nendobj\n", i + 1).bytes());
    }
    let xref = pdf.len();
    pdf.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).bytes());
    for offset in offsets {
        pdf.extend(format!("{offset:010} 00000 n \n").bytes());
    }
    pdf.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .bytes(),
    );
    pdf
}

/// Standard base64, as the APIs take it.
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_is_billed_by_the_documented_formulas() {
        let hosted = HashMap::new();
        let biller = |wire, model| Biller {
            wire,
            model,
            counter: TokenCounter::Cl100kBase,
            hosted: &hosted,
        };
        let image = png(2048, 4096);
        assert_eq!(png_size(&image), Some((2048, 4096)));
        // OpenAI's examples: 2048 × 4096 at high detail is 1,105 tokens.
        assert_eq!(
            biller(Wire::OpenAi, "gpt-4o").image(Some(&image), false),
            1_105
        );
        assert_eq!(
            biller(Wire::OpenAi, "gpt-4o-mini").image(Some(&png(1024, 1024)), false),
            2_833 + 4 * 5_667
        );
        // Anthropic: 1092 × 1092 is about 1,590 tokens.
        assert_eq!(
            biller(Wire::Anthropic, "claude").image(Some(&png(1092, 1092)), false),
            1_590
        );
        // Gemini: 6 tiles of 258.
        assert_eq!(
            biller(Wire::Gemini, "gemini-2.0-flash").image(Some(&png(1600, 900)), false),
            6 * 258
        );
        // A three-page PDF: its text and three page images.
        let anthropic = biller(Wire::Anthropic, "claude");
        let page_image = anthropic.image_of_size(Some((918, 1188)), false);
        assert_eq!(
            anthropic.pdf(&pdf(3, "Quarterly results.")),
            3 * page_image
                + anthropic.text("Quarterly results.\nQuarterly results.\nQuarterly results.")
        );
    }
}
