//! A PDF's page count, for the hold: the providers bill a PDF by its pages.
//!
//! Read from the page tree: the largest `/Count` of a `/Type /Pages` node (the root counts
//! every page; incremental updates may leave older roots, and the largest is the safe
//! side), else the number of `/Type /Page` objects. Both are looked for in the file's bytes
//! and in its compressed object streams (`/Type /ObjStm` with `/FlateDecode`, where PDF 1.5
//! writers put the page tree), inflated with a size limit. `None` when neither is found
//! (encrypted, damaged or not a PDF): the hold then assumes the most pages a provider
//! accepts.

/// At most this many bytes are inflated from a PDF's object streams altogether (a
/// deflate bomb costs no more than this).
const MAX_INFLATED_BYTES: usize = 64 << 20;
/// A dictionary is looked for at most this far on either side of its `/Type` (a page
/// tree node is small; one with a longer `/Kids` is still counted by its page objects).
const DICTIONARY_WINDOW: usize = 16 << 10;
/// At most this many `/Type /Pages` nodes and object streams are read: crafted input
/// repeating them costs no more than this.
const MAX_NODES: usize = 4_096;

pub(super) fn page_count(pdf: &[u8]) -> Option<u32> {
    let mut sources: Vec<Vec<u8>> = Vec::new();
    let mut budget = MAX_INFLATED_BYTES;
    for stream in object_streams(pdf) {
        if budget == 0 {
            break;
        }
        match miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(stream, budget) {
            Ok(inflated) => {
                budget = budget.saturating_sub(inflated.len());
                sources.push(inflated);
            }
            // What a damaged or oversized stream inflated counts against the budget too.
            Err(error) => budget = budget.saturating_sub(error.output.len()),
        }
    }
    let texts: Vec<&[u8]> = std::iter::once(pdf)
        .chain(sources.iter().map(Vec::as_slice))
        .collect();
    let mut nodes = MAX_NODES;
    let tree_count = texts
        .iter()
        .filter_map(|text| largest_pages_count(text, &mut nodes))
        .max();
    if let Some(count) = tree_count.filter(|count| *count > 0) {
        return Some(count);
    }
    let objects: usize = texts.iter().map(|text| page_objects(text)).sum();
    u32::try_from(objects).ok().filter(|count| *count > 0)
}

/// Positions right after each `/Type /<name>` (any whitespace between, or none) where the
/// name ends there (so `/Page` does not match `/Pages`).
fn type_positions<'a>(text: &'a [u8], name: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    find_all(text, b"/Type").filter_map(move |at| {
        let mut i = at + b"/Type".len();
        while text.get(i).is_some_and(|b| is_white(*b)) {
            i += 1;
        }
        if text.get(i) != Some(&b'/') || !text[i + 1..].starts_with(name) {
            return None;
        }
        let end = i + 1 + name.len();
        let delimited = text.get(end).is_none_or(|b| !b.is_ascii_alphanumeric());
        delimited.then_some(end)
    })
}

fn page_objects(text: &[u8]) -> usize {
    type_positions(text, b"Page").count()
}

/// The largest `/Count` among the dictionaries that say `/Type /Pages`, reading at most
/// `nodes` more of them (the budget is shared by every text of one PDF).
fn largest_pages_count(text: &[u8], nodes: &mut usize) -> Option<u32> {
    let mut largest = None;
    for at in type_positions(text, b"Pages") {
        if *nodes == 0 {
            break;
        }
        *nodes -= 1;
        let count =
            enclosing_dictionary(text, at).and_then(|(start, end)| count_in(&text[start..end]));
        largest = largest.max(count);
    }
    largest
}

/// The `<<`…`>>` around `at`, nested dictionaries skipped, within
/// [`DICTIONARY_WINDOW`] on either side.
fn enclosing_dictionary(text: &[u8], at: usize) -> Option<(usize, usize)> {
    let floor = at.saturating_sub(DICTIONARY_WINDOW);
    let ceiling = at.saturating_add(DICTIONARY_WINDOW).min(text.len());
    let mut depth = 0usize;
    let mut i = at;
    let start = loop {
        if i < floor + 2 {
            return None;
        }
        i -= 1;
        if text[i - 1..=i] == *b">>" {
            depth += 1;
            i -= 1;
        } else if text[i - 1..=i] == *b"<<" {
            if depth == 0 {
                break i - 1;
            }
            depth -= 1;
            i -= 1;
        }
    };
    let mut depth = 0usize;
    let mut j = at;
    while j + 1 < ceiling {
        if text[j..j + 2] == *b"<<" {
            depth += 1;
            j += 2;
        } else if text[j..j + 2] == *b">>" {
            if depth == 0 {
                return Some((start, j + 2));
            }
            depth -= 1;
            j += 2;
        } else {
            j += 1;
        }
    }
    None
}

/// `/Count N` at the top level of a dictionary's text.
fn count_in(dictionary: &[u8]) -> Option<u32> {
    let mut depth = 0usize;
    let mut i = 0;
    while i + 1 < dictionary.len() {
        match &dictionary[i..i + 2] {
            b"<<" => {
                depth += 1;
                i += 2;
                continue;
            }
            b">>" => {
                depth = depth.saturating_sub(1);
                i += 2;
                continue;
            }
            _ => {}
        }
        // Depth 1 is the dictionary itself.
        if depth == 1 && dictionary[i..].starts_with(b"/Count") {
            let mut j = i + b"/Count".len();
            if dictionary.get(j).is_some_and(u8::is_ascii_alphanumeric) {
                i = j;
                continue;
            }
            while dictionary.get(j).is_some_and(|b| is_white(*b)) {
                j += 1;
            }
            let digits = dictionary[j..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            return std::str::from_utf8(&dictionary[j..j + digits])
                .ok()?
                .parse()
                .ok();
        }
        i += 1;
    }
    None
}

/// The raw bytes of the `/Type /ObjStm` streams compressed with `/FlateDecode`, in
/// order; one that starts inside the previous one's data is not a stream (each byte is
/// searched once).
fn object_streams(pdf: &[u8]) -> Vec<&[u8]> {
    let mut streams = Vec::new();
    let mut read_up_to = 0;
    for at in type_positions(pdf, b"ObjStm") {
        if streams.len() >= MAX_NODES {
            break;
        }
        if at < read_up_to {
            continue;
        }
        let Some((start, end)) = enclosing_dictionary(pdf, at) else {
            continue;
        };
        if find_all(&pdf[start..end], b"/FlateDecode").next().is_none() {
            continue;
        }
        let mut i = end;
        while pdf.get(i).is_some_and(|b| is_white(*b)) {
            i += 1;
        }
        if !pdf[i..].starts_with(b"stream") {
            continue;
        }
        i += b"stream".len();
        // The keyword ends with CRLF or LF.
        if pdf.get(i) == Some(&b'\r') {
            i += 1;
        }
        if pdf.get(i) == Some(&b'\n') {
            i += 1;
        }
        // No `endstream` after this one: none after any later one either.
        let Some(length) = find_all(&pdf[i..], b"endstream").next() else {
            break;
        };
        streams.push(&pdf[i..i + length]);
        read_up_to = i + length;
    }
    streams
}

fn is_white(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n' | b'\x0c' | b'\0')
}

fn find_all<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(move |(_, window)| *window == needle)
        .map(|(at, _)| at)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small valid PDF of `pages` pages with a line of text each (uncompressed).
    pub(crate) fn plain_pdf(pages: u32) -> Vec<u8> {
        let kids: Vec<String> = (0..pages).map(|i| format!("{} 0 R", 3 + i)).collect();
        let mut objects = vec![
            "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
            format!(
                "<< /Type /Pages /Kids [{}] /Count {pages} >>",
                kids.join(" ")
            ),
        ];
        for _ in 0..pages {
            objects.push("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>".to_owned());
        }
        let mut pdf = b"%PDF-1.4\n".to_vec();
        for (i, object) in objects.iter().enumerate() {
            pdf.extend(format!("{} 0 obj\n{object}\nendobj\n", i + 1).bytes());
        }
        pdf.extend(b"trailer\n<< /Root 1 0 R >>\n%%EOF\n");
        pdf
    }

    #[test]
    fn the_page_tree_counts() {
        assert_eq!(page_count(&plain_pdf(1)), Some(1));
        assert_eq!(page_count(&plain_pdf(7)), Some(7));
        // Compact writers leave out the spaces.
        let compact = b"%PDF-1.7\n1 0 obj<</Type/Pages/Kids[3 0 R]/Count 12>>endobj 3 0 obj<</Type/Page/Parent 1 0 R>>endobj";
        assert_eq!(page_count(compact), Some(12));
        // A nested dictionary's /Count is not the page tree's; an intermediate node's
        // count is smaller than the root's.
        let nested = b"<</Type /Pages /Resources <</Count 99>> /Count 3 /Kids [4 0 R 5 0 R]>> <</Type /Pages /Count 2 /Parent 1 0 R>>";
        assert_eq!(page_count(nested), Some(3));
    }

    #[test]
    fn page_objects_when_no_tree_count() {
        let objects = b"<</Type /Page>> <</Type/Page /Rotate 90>> <</Type /Pages /Kids []>>";
        assert_eq!(page_count(objects), Some(2));
    }

    #[test]
    fn the_page_tree_inside_a_compressed_object_stream() {
        let inner =
            b"1 0 2 40 <</Type /Pages /Kids [2 0 R] /Count 25>> <</Type /Page /Parent 1 0 R>>";
        let compressed = miniz_oxide::deflate::compress_to_vec_zlib(inner, 6);
        let mut pdf =
            b"%PDF-1.5\n4 0 obj\n<< /Type /ObjStm /N 2 /First 9 /Filter /FlateDecode /Length "
                .to_vec();
        pdf.extend(compressed.len().to_string().bytes());
        pdf.extend(b" >>\nstream\r\n");
        pdf.extend(&compressed);
        pdf.extend(b"\r\nendstream\nendobj\n%%EOF\n");
        assert_eq!(page_count(&pdf), Some(25));
    }

    #[test]
    fn crafted_repetition_costs_a_bounded_time() {
        // Megabytes of unclosed page-tree nodes and stream headers without their end.
        let mut crafted = b"%PDF-1.7\n".to_vec();
        for _ in 0..100_000 {
            crafted.extend(b"<</Type /Pages /Kids [");
        }
        for _ in 0..100_000 {
            crafted.extend(b"<</Type/ObjStm/Filter/FlateDecode>>stream\n");
        }
        let started = std::time::Instant::now();
        assert_eq!(page_count(&crafted), None);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn unreadable_pdfs_have_no_count() {
        assert_eq!(page_count(b"%PDF-1.4\n"), None);
        assert_eq!(page_count(b""), None);
        assert_eq!(page_count(b"<</Type /Pages /Count 0>>"), None);
        // A damaged object stream is skipped.
        assert_eq!(
            page_count(b"<</Type /ObjStm /Filter /FlateDecode>> stream\nnot zlib\nendstream"),
            None
        );
    }
}
