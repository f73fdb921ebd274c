//! OpenAI's `cl100k_base` and `o200k_base` encodings, built on tiktoken-rs's BPE from our
//! own compact copies of their vocabularies.
//!
//! tiktoken-rs embeds each vocabulary as base64 text (1.7 MB and 3.6 MB); with them the
//! chat binary grew by 6.3 MB, past its 15 MB budget. The files beside this module hold
//! the same tokens, in rank order, each as a length byte followed by its bytes,
//! zlib-compressed (0.45 MB and 1.04 MB): the chat binary grows by 2.5 MB instead. A unit test checks every token against
//! tiktoken-rs's own tables; `regenerate_embedded_vocabularies` (an ignored test) rewrites
//! the files from them after a tiktoken-rs upgrade.
//!
//! Each encoding is built once per process, on first use. A build failure (a corrupt file,
//! which the tests rule out) is logged and the caller falls back to the heuristic.

use std::sync::LazyLock;

use rustc_hash::FxHashMap;
use tiktoken_rs::{CoreBPE, ENDOFPROMPT, ENDOFTEXT, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, Rank};

const CL100K_BASE_RANKS: &[u8] = include_bytes!("cl100k_base.ranks.zlib");
const O200K_BASE_RANKS: &[u8] = include_bytes!("o200k_base.ranks.zlib");

/// `cl100k_base`'s pre-tokenization pattern (tiktoken's, as tiktoken-rs spells it).
const CL100K_BASE_PATTERN: &str = "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++|\\p{N}{1,3}+| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*+|\\s++$|\\s*[\\r\\n]|\\s+(?!\\S)|\\s";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Cl100kBase,
    O200kBase,
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Encoding::Cl100kBase => "cl100k_base",
            Encoding::O200kBase => "o200k_base",
        }
    }

    fn compressed_ranks(self) -> &'static [u8] {
        match self {
            Encoding::Cl100kBase => CL100K_BASE_RANKS,
            Encoding::O200kBase => O200K_BASE_RANKS,
        }
    }

    fn pattern(self) -> &'static str {
        match self {
            Encoding::Cl100kBase => CL100K_BASE_PATTERN,
            Encoding::O200kBase => tiktoken_rs::O200K_BASE_PAT_STR,
        }
    }

    fn special_tokens(self) -> &'static [(&'static str, Rank)] {
        match self {
            Encoding::Cl100kBase => &[
                (ENDOFTEXT, 100_257),
                (FIM_PREFIX, 100_258),
                (FIM_MIDDLE, 100_259),
                (FIM_SUFFIX, 100_260),
                (ENDOFPROMPT, 100_276),
            ],
            Encoding::O200kBase => &[(ENDOFTEXT, 199_999), (ENDOFPROMPT, 200_018)],
        }
    }

    /// The process-wide tokenizer, built on first use; `None` if it could not be built.
    pub(crate) fn tokenizer(self) -> Option<&'static CoreBPE> {
        static CL100K_BASE: LazyLock<Option<CoreBPE>> =
            LazyLock::new(|| Encoding::Cl100kBase.build_logged());
        static O200K_BASE: LazyLock<Option<CoreBPE>> =
            LazyLock::new(|| Encoding::O200kBase.build_logged());
        match self {
            Encoding::Cl100kBase => CL100K_BASE.as_ref(),
            Encoding::O200kBase => O200K_BASE.as_ref(),
        }
    }

    fn build_logged(self) -> Option<CoreBPE> {
        self.build()
            .inspect_err(|error| {
                tracing::error!(encoding = self.name(), %error, "token encoding unavailable; estimating with the heuristic");
            })
            .ok()
    }

    fn build(self) -> Result<CoreBPE, VocabularyError> {
        let tokens = decode_ranks(self.compressed_ranks())?;
        let encoder: FxHashMap<Vec<u8>, Rank> = tokens
            .into_iter()
            .enumerate()
            .map(|(rank, token)| Ok((token, Rank::try_from(rank)?)))
            .collect::<Result<_, std::num::TryFromIntError>>()
            .map_err(|_| VocabularyError::Corrupt("too many tokens"))?;
        let special_tokens: FxHashMap<String, Rank> = self
            .special_tokens()
            .iter()
            .map(|(text, rank)| ((*text).to_string(), *rank))
            .collect();
        CoreBPE::new(encoder, special_tokens, self.pattern())
            .map_err(|e| VocabularyError::Tokenizer(e.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
enum VocabularyError {
    #[error("embedded vocabulary is corrupt: {0}")]
    Corrupt(&'static str),
    #[error("building the tokenizer: {0}")]
    Tokenizer(String),
}

/// The tokens of a compressed rank file, in rank order.
fn decode_ranks(compressed: &[u8]) -> Result<Vec<Vec<u8>>, VocabularyError> {
    let raw = miniz_oxide::inflate::decompress_to_vec_zlib(compressed)
        .map_err(|_| VocabularyError::Corrupt("not a zlib stream"))?;
    let mut tokens = Vec::with_capacity(200_000);
    let mut rest = raw.as_slice();
    while let Some((&length, tail)) = rest.split_first() {
        let length = usize::from(length);
        let (Some(token), Some(after)) = (tail.get(..length), tail.get(length..)) else {
            return Err(VocabularyError::Corrupt("truncated token"));
        };
        tokens.push(token.to_vec());
        rest = after;
    }
    Ok(tokens)
}

/// The compressed rank file of `tokens` (the format above).
#[cfg(test)]
fn encode_ranks(tokens: &[Vec<u8>]) -> Vec<u8> {
    let mut raw = Vec::new();
    for token in tokens {
        raw.push(u8::try_from(token.len()).unwrap());
        raw.extend_from_slice(token);
    }
    miniz_oxide::deflate::compress_to_vec_zlib(&raw, 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tiktoken-rs's own tables (built from its embedded base64 files, tests only).
    fn reference(encoding: Encoding) -> &'static CoreBPE {
        match encoding {
            Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
            Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
        }
    }

    /// Ordinary tokens are ranks 0, 1, … up to the first gap (special tokens come later).
    fn reference_tokens(encoding: Encoding) -> Vec<Vec<u8>> {
        let bpe = reference(encoding);
        (0..)
            .map_while(|rank: Rank| bpe.decode_bytes(&[rank]).ok())
            .collect()
    }

    #[test]
    fn embedded_vocabularies_equal_tiktoken_rs() {
        for encoding in [Encoding::Cl100kBase, Encoding::O200kBase] {
            let ours = decode_ranks(encoding.compressed_ranks()).unwrap();
            let theirs = reference_tokens(encoding);
            let expected_len = match encoding {
                Encoding::Cl100kBase => 100_256,
                Encoding::O200kBase => 199_998,
            };
            assert_eq!(ours.len(), expected_len, "{encoding:?}");
            assert!(ours == theirs, "{encoding:?}: tokens differ");
        }
    }

    #[test]
    fn counts_equal_tiktoken_rs() {
        let samples = [
            "hello world",
            "",
            "  leading and trailing spaces   ",
            "Line one\r\nLine two\n\n\tTabbed\n",
            "fn main() { println!(\"{}\", 1_000_000 + 42); }",
            "I'm sure you'll see they've done it. WE'LL SEE.",
            "Le cœur a ses raisons que la raison ne connaît point.",
            "我们今天去公园散步，天气非常好。",
            "Привет, как дела?",
            "😀🎉🚀 emoji 👩‍👩‍👧‍👦",
            "<|endoftext|> is ordinary text here",
            "https://example.com/path?query=1&x=y#frag",
            "1234567890 3.14159 -42 1e10",
        ];
        for encoding in [Encoding::Cl100kBase, Encoding::O200kBase] {
            let ours = encoding.tokenizer().unwrap();
            for text in samples {
                assert_eq!(
                    ours.count_ordinary(text),
                    reference(encoding).count_ordinary(text),
                    "{encoding:?}: {text:?}"
                );
            }
        }
    }

    #[test]
    fn corrupt_data_is_an_error_not_a_panic() {
        assert!(decode_ranks(b"not zlib").is_err());
        let truncated = miniz_oxide::deflate::compress_to_vec_zlib(&[5, b'a', b'b'], 6);
        assert!(decode_ranks(&truncated).is_err());
        let tokens = vec![b"a".to_vec(), b"bc".to_vec()];
        assert_eq!(decode_ranks(&encode_ranks(&tokens)).unwrap(), tokens);
    }

    /// `cargo test -p switchboard-core --lib regenerate_embedded_vocabularies -- --ignored`
    #[test]
    #[ignore = "rewrites the embedded vocabularies from tiktoken-rs's"]
    fn regenerate_embedded_vocabularies() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tokens");
        for encoding in [Encoding::Cl100kBase, Encoding::O200kBase] {
            let path = dir.join(format!("{}.ranks.zlib", encoding.name()));
            std::fs::write(&path, encode_ranks(&reference_tokens(encoding))).unwrap();
        }
    }
}
