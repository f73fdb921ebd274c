//! OpenAI's `cl100k_base` and `o200k_base` encodings: our own compact copies of their
//! vocabularies, and a BPE token counter over them that gives exactly tiktoken's counts.
//!
//! tiktoken-rs embeds each vocabulary as base64 text (1.7 MB and 3.6 MB); with them the
//! chat binary grew by 6.3 MB, past its 15 MB budget. The files beside this module hold
//! the same tokens, in rank order, each as a length byte followed by its bytes,
//! zlib-compressed (0.45 MB and 1.04 MB): the chat binary grows by 2.5 MB instead. A unit
//! test checks every token against tiktoken-rs's own tables; `regenerate_embedded_vocabularies`
//! (an ignored test) rewrites the files from them after a tiktoken-rs upgrade.
//!
//! Memory: tiktoken-rs's `CoreBPE` keeps three copies of a vocabulary, each token in an
//! allocation of its own (about 45 MB of resident memory for `o200k_base`, 24 MB for
//! `cl100k_base`). Counting needs only bytes → rank, so [`Bpe`] keeps the decompressed file
//! itself (every token is a slice of it) and one hash table of slices (about 8 MB and 4 MB),
//! and builds in a fraction of the time. The pre-tokenization pattern, the merge order
//! (lowest rank first, leftmost on ties) and so the counts are tiktoken's; a unit test
//! compares them with tiktoken-rs on assorted text.
//!
//! Each encoding is built once per process, on first use. A build failure (a corrupt file,
//! which the tests rule out) is logged and the caller falls back to the heuristic.

use std::collections::BinaryHeap;
use std::sync::LazyLock;

use rustc_hash::FxHashMap;
use tiktoken_rs::Rank;

const CL100K_BASE_RANKS: &[u8] = include_bytes!("cl100k_base.ranks.zlib");
const O200K_BASE_RANKS: &[u8] = include_bytes!("o200k_base.ranks.zlib");

/// `cl100k_base`'s pre-tokenization pattern (tiktoken's, as tiktoken-rs spells it).
const CL100K_BASE_PATTERN: &str = "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++|\\p{N}{1,3}+| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*+|\\s++$|\\s*[\\r\\n]|\\s+(?!\\S)|\\s";

/// Pieces at least this long are merged with a heap (tiktoken's threshold).
const LARGE_PIECE: usize = 100;

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

    /// The process-wide tokenizer, built on first use; `None` if it could not be built.
    pub(crate) fn tokenizer(self) -> Option<&'static Bpe> {
        static CL100K_BASE: LazyLock<Option<Bpe>> =
            LazyLock::new(|| Encoding::Cl100kBase.build_logged());
        static O200K_BASE: LazyLock<Option<Bpe>> =
            LazyLock::new(|| Encoding::O200kBase.build_logged());
        match self {
            Encoding::Cl100kBase => CL100K_BASE.as_ref(),
            Encoding::O200kBase => O200K_BASE.as_ref(),
        }
    }

    fn build_logged(self) -> Option<Bpe> {
        self.build()
            .inspect_err(|error| {
                tracing::error!(encoding = self.name(), %error, "token encoding unavailable; estimating with the heuristic");
            })
            .ok()
    }

    fn build(self) -> Result<Bpe, VocabularyError> {
        let raw = miniz_oxide::inflate::decompress_to_vec_zlib(self.compressed_ranks())
            .map_err(|_| VocabularyError::Corrupt("not a zlib stream"))?;
        // Built once per process and kept for its whole life: the tokens borrow from it.
        let raw: &'static [u8] = Box::leak(raw.into_boxed_slice());
        let tokens = split_ranks(raw)?;
        let mut ranks: FxHashMap<&'static [u8], Rank> =
            FxHashMap::with_capacity_and_hasher(tokens.len(), Default::default());
        for (rank, token) in tokens.into_iter().enumerate() {
            let rank =
                Rank::try_from(rank).map_err(|_| VocabularyError::Corrupt("too many tokens"))?;
            ranks.insert(token, rank);
        }
        // BPE needs every single byte as a token.
        if (0..=u8::MAX).any(|b| !ranks.contains_key(std::slice::from_ref(&b))) {
            return Err(VocabularyError::Corrupt("a byte is missing"));
        }
        let pattern = fancy_regex::Regex::new(self.pattern())
            .map_err(|e| VocabularyError::Tokenizer(e.to_string()))?;
        Ok(Bpe { ranks, pattern })
    }
}

#[derive(Debug, thiserror::Error)]
enum VocabularyError {
    #[error("embedded vocabulary is corrupt: {0}")]
    Corrupt(&'static str),
    #[error("building the tokenizer: {0}")]
    Tokenizer(String),
}

/// One encoding: bytes → rank, and the pattern that splits text into pieces.
pub(crate) struct Bpe {
    ranks: FxHashMap<&'static [u8], Rank>,
    pattern: fancy_regex::Regex,
}

impl Bpe {
    /// Tokens of `text` (special-token strings count as ordinary text), as tiktoken's
    /// `encode_ordinary(text).len()`; `None` if the pattern gave up on the text (its
    /// backtracking limit), where tiktoken would panic.
    pub(crate) fn count_ordinary(&self, text: &str) -> Option<usize> {
        let mut count = 0;
        for piece in self.pattern.find_iter(text) {
            let piece = piece.ok()?.as_str().as_bytes();
            count += if self.ranks.contains_key(piece) {
                1
            } else if piece.len() < LARGE_PIECE {
                self.merged_parts(piece)
            } else {
                self.merged_parts_large(piece)
            };
        }
        Some(count)
    }

    fn rank(&self, bytes: &[u8]) -> Rank {
        self.ranks.get(bytes).copied().unwrap_or(Rank::MAX)
    }

    /// How many tokens BPE merges `piece` (2 bytes or more) into: tiktoken's
    /// `_byte_pair_merge`, counting instead of collecting.
    fn merged_parts(&self, piece: &[u8]) -> usize {
        // (start, rank of the pair starting here); the last two entries close the list.
        let mut parts: Vec<(usize, Rank)> = Vec::with_capacity(piece.len() + 1);
        let mut min_rank: (Rank, usize) = (Rank::MAX, usize::MAX);
        for i in 0..piece.len().saturating_sub(1) {
            let rank = self.rank(&piece[i..i + 2]);
            if rank < min_rank.0 {
                min_rank = (rank, i);
            }
            parts.push((i, rank));
        }
        parts.push((piece.len() - 1, Rank::MAX));
        parts.push((piece.len(), Rank::MAX));

        let get_rank = |parts: &Vec<(usize, Rank)>, i: usize| {
            if i + 3 < parts.len() {
                self.rank(&piece[parts[i].0..parts[i + 3].0])
            } else {
                Rank::MAX
            }
        };
        while min_rank.0 != Rank::MAX {
            let i = min_rank.1;
            if i > 0 {
                parts[i - 1].1 = get_rank(&parts, i - 1);
            }
            parts[i].1 = get_rank(&parts, i);
            parts.remove(i + 1);
            min_rank = (Rank::MAX, usize::MAX);
            for (i, &(_, rank)) in parts[..parts.len() - 1].iter().enumerate() {
                if rank < min_rank.0 {
                    min_rank = (rank, i);
                }
            }
        }
        parts.len() - 1
    }

    /// [`Self::merged_parts`] for long pieces in O(n log n): tiktoken's
    /// `_byte_pair_merge_large`, which merges in the same order.
    fn merged_parts_large(&self, piece: &[u8]) -> usize {
        #[derive(Clone, Copy)]
        struct Node {
            prev: usize,
            end: usize,
            next_end: usize,
            next_rank: Rank,
        }
        #[derive(PartialEq, Eq)]
        struct Merge {
            start: usize,
            rank: Rank,
        }
        impl Ord for Merge {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                // A max-heap popping the lowest rank, then the leftmost start.
                other
                    .rank
                    .cmp(&self.rank)
                    .then_with(|| other.start.cmp(&self.start))
            }
        }
        impl PartialOrd for Merge {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        let len = piece.len();
        let mut nodes: Vec<Node> = (0..len)
            .map(|i| Node {
                prev: i.wrapping_sub(1),
                end: i + 1,
                next_end: i + 2,
                next_rank: Rank::MAX,
            })
            .collect();
        let mut heap = BinaryHeap::with_capacity(len);
        for i in 0..len - 1 {
            let rank = self.rank(&piece[i..i + 2]);
            if rank != Rank::MAX {
                heap.push(Merge { start: i, rank });
                nodes[i].next_rank = rank;
            }
        }
        let potential_merge =
            |nodes: &mut Vec<Node>, heap: &mut BinaryHeap<Merge>, start: usize, next_end: usize| {
                nodes[start].next_end = next_end;
                nodes[start].next_rank = Rank::MAX;
                if next_end <= len {
                    let rank = self.rank(&piece[start..next_end]);
                    if rank != Rank::MAX {
                        heap.push(Merge { start, rank });
                        nodes[start].next_rank = rank;
                    }
                }
            };
        while let Some(left) = heap.pop() {
            if left.rank != nodes[left.start].next_rank {
                continue; // invalidated by an earlier merge
            }
            let left_start = left.start;
            let right_start = nodes[left_start].end;
            let right_end = nodes[left_start].next_end;
            let right_next_end = nodes[right_start].next_end;
            nodes[left_start].end = right_end;
            potential_merge(&mut nodes, &mut heap, left_start, right_next_end);
            if right_end < len {
                nodes[right_end].prev = left_start;
            }
            if left_start > 0 {
                let prev_start = nodes[left_start].prev;
                potential_merge(&mut nodes, &mut heap, prev_start, right_end);
            }
            nodes[right_start].next_rank = Rank::MAX;
        }
        let mut count = 0;
        let mut i = 0;
        while i < len {
            count += 1;
            i = nodes[i].end;
        }
        count
    }
}

/// The tokens of a decompressed rank file, in rank order (slices of it).
fn split_ranks(raw: &[u8]) -> Result<Vec<&[u8]>, VocabularyError> {
    let mut tokens = Vec::with_capacity(200_000);
    let mut rest = raw;
    while let Some((&length, tail)) = rest.split_first() {
        let length = usize::from(length);
        let (Some(token), Some(after)) = (tail.get(..length), tail.get(length..)) else {
            return Err(VocabularyError::Corrupt("truncated token"));
        };
        if token.is_empty() {
            return Err(VocabularyError::Corrupt("empty token"));
        }
        tokens.push(token);
        rest = after;
    }
    Ok(tokens)
}

/// The tokens of a compressed rank file, in rank order.
#[cfg(test)]
fn decode_ranks(compressed: &[u8]) -> Result<Vec<Vec<u8>>, VocabularyError> {
    let raw = miniz_oxide::inflate::decompress_to_vec_zlib(compressed)
        .map_err(|_| VocabularyError::Corrupt("not a zlib stream"))?;
    Ok(split_ranks(&raw)?.into_iter().map(<[u8]>::to_vec).collect())
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
    use tiktoken_rs::CoreBPE;

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
        let mut samples: Vec<String> = [
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
            "ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé",
        ]
        .map(str::to_string)
        .into();
        // Pieces of 100 bytes and more take the heap-based merge.
        samples.push("Pneumonoultramicroscopicsilicovolcanoconiosis".repeat(5));
        samples
            .push("aGVsbG8gd29ybGQhIGJhc2U2NCBlbmNvZGVkIHRleHQgd2l0aG91dCBhbnkgc3BhY2Vz".repeat(4));
        samples.push("\n\n\n\t\t    \n".repeat(30));
        samples.push("The quick brown fox jumps over the lazy dog. ".repeat(40));
        for encoding in [Encoding::Cl100kBase, Encoding::O200kBase] {
            let ours = encoding.tokenizer().unwrap();
            for text in &samples {
                assert_eq!(
                    ours.count_ordinary(text),
                    Some(reference(encoding).count_ordinary(text)),
                    "{encoding:?}: {text:?}"
                );
            }
        }
    }

    #[test]
    fn both_merges_agree() {
        let bpe = Encoding::Cl100kBase.tokenizer().unwrap();
        for piece in [
            "ab",
            "hello",
            "Pneumonoultramicroscopicsilicovolcanoconiosis",
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            "qxjvkwzpqxjvkwzpqxjvkwzpqxjvkwzp",
        ] {
            assert_eq!(
                bpe.merged_parts(piece.as_bytes()),
                bpe.merged_parts_large(piece.as_bytes()),
                "{piece}"
            );
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
