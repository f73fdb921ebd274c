//! Prompt token estimation, for routing's context-window filter and the ledger hold.
//!
//! - OpenAI-family models are counted with their real BPE encoding (tiktoken-rs's BPE over
//!   our compact copies of the vocabularies in `tokens/vocabulary.rs`):
//!   `gpt-4o*`, `chatgpt-4o*`, `gpt-4.1*`, `gpt-4.5*`, `gpt-5*`, `o1*`, `o3*`, `o4*` →
//!   `o200k_base`; other `gpt-4*`, `gpt-3.5*`, `gpt-35*` → `cl100k_base`. A provider prefix
//!   (`openai/gpt-4o` on OpenRouter) is ignored. Each encoding is built once per process,
//!   on first use (`cl100k_base` about 4 MB of memory, `o200k_base` about 8 MB; tens of
//!   milliseconds each), or up front with [`preload_encodings`].
//! - Every other model uses a conservative heuristic, a rough pre-split like BPE's: each
//!   run of ASCII letters counts ⌈len/4⌉ tokens (⌈len/2⌉ beyond 12 letters, which are
//!   rarely words), each run of digits ⌈len/3⌉, each ASCII punctuation character 1, each
//!   run of whitespace 1 (a single space before a word 0, as BPE merges it), each non-ASCII
//!   character 2/3 (2-byte UTF-8: accented Latin, Cyrillic, Greek…), 1.5 (3-byte: CJK) or
//!   3 (4-byte: emoji); the sum is rounded up. It is at or above `cl100k_base` and `o200k_base` on English prose (by
//!   about 30 %), code, accented Latin, Cyrillic, CJK and emoji (unit-tested); it can
//!   undercount random strings such as base64.
//! - Messages follow OpenAI's accounting: 3 tokens per message, plus the tokens of every
//!   text field (role, content, name, tool calls…), plus 1 per `name`, plus 3 for the
//!   reply primer. Images and PDFs are counted by size and pages (`media.rs`): in the
//!   estimate ([`estimate_prompt_tokens`]) at a typical provider's size, and for the hold at
//!   the most each candidate's provider can bill ([`prompt_bound`]).

mod image_size;
mod media;
mod pdf;
mod vocabulary;

use serde_json::Value;

pub use media::{
    MAX_PDF_PAGES, MediaBiller, PDF_TEXT_TOKENS_PER_PAGE, PromptMedia, UNKNOWN_IMAGE_TOKENS,
};
use vocabulary::Encoding;
/// Framing tokens of every message (`<|start|>role<|message|>…<|end|>`).
pub const TOKENS_PER_MESSAGE: u32 = 3;
/// Extra token when a message has a `name`.
pub const TOKENS_PER_NAME: u32 = 1;
/// Tokens priming the reply (`<|start|>assistant<|message|>`).
pub const REPLY_PRIMER_TOKENS: u32 = 3;

/// Keys whose values are markup, not prompt text.
const SKIPPED_KEYS: &[&str] = &["type", "cache_control", "detail"];

/// How a model's text is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCounter {
    /// OpenAI's `cl100k_base` (GPT-4, GPT-3.5).
    Cl100kBase,
    /// OpenAI's `o200k_base` (GPT-4o, GPT-4.1, o-series).
    O200kBase,
    /// The documented character heuristic (every other model).
    Heuristic,
}

impl TokenCounter {
    /// The counter for an upstream model id (`gpt-4o`, `openai/gpt-4o`, `claude-…`).
    pub fn for_model(model_id: &str) -> Self {
        let name = model_id
            .rsplit('/')
            .next()
            .unwrap_or(model_id)
            .to_ascii_lowercase();
        let is_o_series = ["o1", "o3", "o4"]
            .iter()
            .any(|series| name == *series || name.starts_with(&format!("{series}-")));
        if is_o_series
            || ["gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5"]
                .iter()
                .any(|prefix| name.starts_with(prefix))
        {
            TokenCounter::O200kBase
        } else if [
            "gpt-4",
            "gpt-3.5",
            "gpt-35",
            "text-embedding-3",
            "text-embedding-ada",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        {
            TokenCounter::Cl100kBase
        } else {
            TokenCounter::Heuristic
        }
    }

    /// Tokens of `text` (special-token strings count as ordinary text).
    pub fn count(self, text: &str) -> u32 {
        let tokenizer = match self {
            TokenCounter::Cl100kBase => Encoding::Cl100kBase.tokenizer(),
            TokenCounter::O200kBase => Encoding::O200kBase.tokenizer(),
            TokenCounter::Heuristic => None,
        };
        // A text the encoding's pattern gives up on (pathological backtracking) gets the
        // heuristic too.
        let count = match tokenizer.and_then(|bpe| bpe.count_ordinary(text)) {
            Some(count) => u64::try_from(count).unwrap_or(u64::MAX),
            None => heuristic_count(text),
        };
        u32::try_from(count).unwrap_or(u32::MAX)
    }
}

/// The heuristic of the module docs, counted in sixths of a token.
fn heuristic_count(text: &str) -> u64 {
    let mut sixths: u64 = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_alphabetic() {
            let mut run: u64 = 1;
            while chars.next_if(char::is_ascii_alphabetic).is_some() {
                run += 1;
            }
            let tokens = if run <= 12 {
                run.div_ceil(4)
            } else {
                run.div_ceil(2)
            };
            sixths += 6 * tokens;
        } else if c.is_ascii_digit() {
            let mut run: u64 = 1;
            while chars.next_if(char::is_ascii_digit).is_some() {
                run += 1;
            }
            sixths += 6 * run.div_ceil(3);
        } else if c == ' ' && chars.peek().is_some_and(char::is_ascii_alphanumeric) {
            // BPE merges a single space into the word after it.
        } else if c.is_ascii_whitespace() {
            while chars.next_if(char::is_ascii_whitespace).is_some() {}
            sixths += 6;
        } else {
            sixths += match c.len_utf8() {
                1 => 6,
                2 => 4,
                3 => 9,
                _ => 18,
            };
        }
    }
    sixths.div_ceil(6)
}

/// Parses both embedded encodings now rather than on the first OpenAI-family request
/// (about 12 MB of memory together); for a Lambda cold start's init phase.
pub fn preload_encodings() {
    let _ = Encoding::Cl100kBase.tokenizer();
    let _ = Encoding::O200kBase.tokenizer();
}

/// Tokens of a piece of text for `model_id` (tool definitions, a system prompt sent
/// outside the messages, …).
pub fn estimate_text_tokens(model_id: &str, text: &str) -> u32 {
    TokenCounter::for_model(model_id).count(text)
}

/// Estimated prompt tokens of chat `messages` (JSON objects in OpenAI's shape; Anthropic's
/// content blocks work too) for `model_id`. Tool definitions are not included: add
/// [`estimate_text_tokens`] of their JSON.
pub fn estimate_prompt_tokens(model_id: &str, messages: &[Value]) -> u32 {
    let counter = TokenCounter::for_model(model_id);
    let total: u64 = messages
        .iter()
        .map(|message| message_tokens(counter, message))
        .sum::<u64>()
        + u64::from(REPLY_PRIMER_TOKENS);
    u32::try_from(total).unwrap_or(u32::MAX)
}

/// The hold's prompt tokens for one candidate: the `estimate` of
/// [`estimate_prompt_tokens`] with the prompt's `media` counted at the most the candidate's
/// provider bills for them instead of the estimate's size, and at most the candidate's
/// `context_window` (a provider refuses a longer prompt without billing it).
pub fn prompt_bound(
    estimate: u32,
    media: &PromptMedia,
    biller: MediaBiller<'_>,
    context_window: i32,
) -> u64 {
    let bound = u64::from(estimate)
        .saturating_sub(media.tokens(MediaBiller::Estimate))
        .saturating_add(media.tokens(biller));
    match u64::try_from(context_window) {
        Ok(window) if window > 0 => bound.min(window),
        _ => bound,
    }
}

fn message_tokens(counter: TokenCounter, message: &Value) -> u64 {
    let mut tokens = u64::from(TOKENS_PER_MESSAGE);
    match message {
        Value::Object(fields) => {
            for (key, value) in fields {
                if key == "name" {
                    tokens += u64::from(TOKENS_PER_NAME);
                }
                tokens += value_tokens(counter, value);
            }
        }
        other => tokens += value_tokens(counter, other),
    }
    tokens
}

/// Tokens of every text field under `value`; images and PDFs count the estimate of
/// `media.rs` (a document's title and context count as text too).
fn value_tokens(counter: TokenCounter, value: &Value) -> u64 {
    match value {
        Value::Null => 0,
        Value::String(text) => u64::from(counter.count(text)),
        Value::Bool(_) | Value::Number(_) => u64::from(counter.count(&value.to_string())),
        Value::Array(items) => items.iter().map(|item| value_tokens(counter, item)).sum(),
        Value::Object(fields) => {
            if let Some(media) = media::estimated_tokens(fields) {
                let captions: u64 = ["title", "context"]
                    .iter()
                    .filter_map(|key| fields.get(*key))
                    .map(|value| value_tokens(counter, value))
                    .sum();
                return media.saturating_add(captions);
            }
            fields
                .iter()
                .filter(|(key, _)| !SKIPPED_KEYS.contains(&key.as_str()))
                .map(|(_, value)| value_tokens(counter, value))
                .sum()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tiktoken_rs::ChatCompletionRequestMessage;

    use super::*;

    #[test]
    fn model_families() {
        for (model, counter) in [
            ("gpt-4o", TokenCounter::O200kBase),
            ("gpt-4o-mini-2024-07-18", TokenCounter::O200kBase),
            ("openai/gpt-4o", TokenCounter::O200kBase),
            ("gpt-4.1-nano", TokenCounter::O200kBase),
            ("o1", TokenCounter::O200kBase),
            ("o3-mini", TokenCounter::O200kBase),
            ("o4-mini", TokenCounter::O200kBase),
            ("gpt-4-turbo", TokenCounter::Cl100kBase),
            ("gpt-4", TokenCounter::Cl100kBase),
            ("gpt-3.5-turbo", TokenCounter::Cl100kBase),
            ("claude-3-5-sonnet-20241022", TokenCounter::Heuristic),
            ("meta-llama/llama-3-70b-instruct", TokenCounter::Heuristic),
            ("olmo-7b", TokenCounter::Heuristic),
            ("auto", TokenCounter::Heuristic),
        ] {
            assert_eq!(TokenCounter::for_model(model), counter, "{model}");
        }
    }

    #[test]
    fn known_bpe_counts() {
        assert_eq!(estimate_text_tokens("gpt-4", "hello world"), 2);
        assert_eq!(estimate_text_tokens("gpt-4o", "hello world"), 2);
        // "tiktoken is great!" is 6 tokens in cl100k_base (tiktoken's README).
        assert_eq!(
            estimate_text_tokens("gpt-3.5-turbo", "tiktoken is great!"),
            6
        );
        // Special tokens are plain text here, never a control token.
        assert!(estimate_text_tokens("gpt-4", "<|endoftext|>") > 1);
    }

    fn cookbook_messages() -> Vec<Value> {
        vec![
            json!({"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."}),
            json!({"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."}),
            json!({"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."}),
            json!({"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."}),
            json!({"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."}),
            json!({"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."}),
        ]
    }

    #[test]
    fn messages_match_openais_cookbook() {
        let messages = cookbook_messages();
        // OpenAI's "How to count tokens with tiktoken": 129 for gpt-4 / gpt-3.5-turbo,
        // 124 for gpt-4o, which the API reports as prompt_tokens.
        assert_eq!(estimate_prompt_tokens("gpt-4", &messages), 129);
        assert_eq!(estimate_prompt_tokens("gpt-4o", &messages), 124);

        // And the same as tiktoken-rs's own implementation of the formula.
        let typed: Vec<ChatCompletionRequestMessage> = messages
            .iter()
            .map(|m| ChatCompletionRequestMessage {
                role: m["role"].as_str().unwrap().to_string(),
                content: m["content"].as_str().map(str::to_string),
                name: m["name"].as_str().map(str::to_string),
                ..Default::default()
            })
            .collect();
        for model in ["gpt-4", "gpt-4o"] {
            assert_eq!(
                estimate_prompt_tokens(model, &messages) as usize,
                tiktoken_rs::num_tokens_from_messages(model, &typed).unwrap(),
                "{model}"
            );
        }
    }

    #[test]
    fn content_parts_and_images() {
        let text_only = [json!({"role": "user", "content": "hello world"})];
        // 3 (message) + 1 ("user") + 2 ("hello world") + 3 (primer).
        assert_eq!(estimate_prompt_tokens("gpt-4", &text_only), 9);
        let parts = [json!({"role": "user", "content": [
            {"type": "text", "text": "hello world"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ]})];
        // Neither image's size can be read: Claude's standard size each.
        assert_eq!(estimate_prompt_tokens("gpt-4", &parts), 9 + 2 * 1_600);
        // Anthropic-style image blocks count the same, and their payload is not text.
        let anthropic = [json!({"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A".repeat(100_000)}},
        ]})];
        assert_eq!(
            estimate_prompt_tokens("claude-3-5-sonnet-20241022", &anthropic),
            3 + heuristic_count("user") as u32 + 1_600 + 3
        );
    }

    #[test]
    fn the_hold_bound_swaps_the_estimates_media_for_the_candidates() {
        use base64::Engine;

        use crate::catalog::ApiFormat;

        let data = base64::engine::general_purpose::STANDARD.encode(pdf::tests::plain_pdf(3));
        let messages = [json!({"role": "user", "content": [
            {"type": "text", "text": "Summarise."},
            {"type": "anthropic_block", "block": {"type": "document", "title": "Report",
                "source": {"type": "base64", "media_type": "application/pdf", "data": data}}}
        ]})];
        let estimate = estimate_prompt_tokens("claude-sonnet-4-5", &messages);
        // The payload is not text: three pages at the estimate's 4,600, and a few words.
        let text = u64::from(estimate) - 3 * 4_600;
        assert!(text < 30, "{estimate}");
        let media = PromptMedia::of(&messages);
        let claude = MediaBiller::Model {
            format: ApiFormat::Anthropic,
            model_id: "claude-sonnet-4-5",
        };
        assert_eq!(
            prompt_bound(estimate, &media, claude, 200_000),
            text + 3 * 8_000
        );
        // Never more than the context window: a longer prompt is refused, not billed.
        assert_eq!(prompt_bound(estimate, &media, claude, 10_000), 10_000);
        // An OpenAI-format candidate cannot take the block (it refuses the request).
        let gpt = MediaBiller::Model {
            format: ApiFormat::OpenAi,
            model_id: "gpt-4o",
        };
        assert_eq!(prompt_bound(estimate, &media, gpt, 128_000), text);
    }

    #[test]
    fn tool_calls_are_counted() {
        let plain = [json!({"role": "assistant", "content": null})];
        let with_call = [json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
        ]})];
        assert!(
            estimate_prompt_tokens("gpt-4o", &with_call)
                > estimate_prompt_tokens("gpt-4o", &plain) + 5
        );
    }

    #[test]
    fn heuristic_is_documented_and_conservative() {
        assert_eq!(heuristic_count(""), 0);
        assert_eq!(heuristic_count("a"), 1);
        assert_eq!(heuristic_count("hello world"), 4); // 2 + 2, the space merges
        assert_eq!(heuristic_count("abcdefghijklmnop"), 8); // long run: 16 / 2
        assert_eq!(heuristic_count("1234567"), 3);
        assert_eq!(heuristic_count("a();\n\n  b"), 6);
        assert_eq!(heuristic_count("é"), 1);
        assert_eq!(heuristic_count("éé"), 2); // 4 / 6 each, rounded up
        assert_eq!(heuristic_count("我们"), 3); // 2 × 1.5
        assert_eq!(heuristic_count("😀"), 3);
        // At or above the real BPE counts, and within 2.5× of them, on ordinary text.
        for text in [
            "The quick brown fox jumps over the lazy dog. ".repeat(50),
            "fn main() {\n    let x: Vec<u32> = (0..10).map(|i| i * 2).collect();\n}\n".repeat(20),
            "Le cœur a ses raisons que la raison ne connaît point. ".repeat(20),
            "我们今天去公园散步，天气非常好。".repeat(20),
            "Привет, как дела? Всё хорошо.".repeat(20),
            "😀🎉🚀".repeat(20),
        ] {
            let heuristic = TokenCounter::Heuristic.count(&text);
            for counter in [TokenCounter::Cl100kBase, TokenCounter::O200kBase] {
                let real = counter.count(&text);
                assert!(
                    heuristic >= real && 2 * heuristic <= 5 * real,
                    "{heuristic} vs {real} ({counter:?}) for {text:.30}"
                );
            }
        }
    }
}
