//! An incremental Server-Sent Events parser (the WHATWG event-stream rules) for upstream
//! streams: bytes go in as they arrive, split anywhere (inside a line, a `\r\n` pair or a
//! multi-byte UTF-8 character), and complete events come out.

use super::error::ProviderError;

/// Longest line accepted; a longer one means the upstream is not speaking SSE.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; `None` means the default type (`message`).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    pub id: Option<String>,
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, unterminated line.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` at the start of the next belongs to it.
    after_cr: bool,
    /// Whether the stream's first line was seen (a leading BOM is dropped).
    started: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feeds the next bytes; returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, ProviderError> {
        let mut events = Vec::new();
        let mut rest = bytes;
        if rest.is_empty() {
            // Keep `after_cr` for the next non-empty chunk.
            return Ok(events);
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            let terminator = rest[end];
            rest = &rest[end + 1..];
            if terminator == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.process_line(&line) {
                events.push(event);
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > MAX_LINE_BYTES {
            return Err(ProviderError::invalid_response(
                "an event-stream line exceeds 16 MiB",
            ));
        }
        Ok(events)
    }

    /// The end of the byte stream: a last line without terminator is processed and an
    /// event still missing its blank line is dispatched.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut last = None;
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            last = self.process_line(&line);
        }
        last.or_else(|| self.dispatch())
    }

    fn process_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        let mut line = line;
        if !self.started {
            self.started = true;
            if let Some(stripped) = line.strip_prefix("\u{feff}".as_bytes()) {
                line = stripped;
            }
        }
        if line.is_empty() {
            return self.dispatch();
        }
        if line.first() == Some(&b':') {
            // A comment (keep-alive such as `: OPENROUTER PROCESSING`).
            return None;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            // `retry:` and unknown fields are ignored, as the standard says.
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id: self.id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(parser.push(chunk).unwrap());
        }
        events.extend(parser.finish());
        events
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
            id: None,
        }
    }

    /// Every split of `input` into two and three pieces gives the same events as one push.
    fn assert_split_invariant(input: &[u8], expected: &[SseEvent]) {
        assert_eq!(parse_all(&[input]), expected, "whole input");
        for i in 0..=input.len() {
            assert_eq!(
                parse_all(&[&input[..i], &input[i..]]),
                expected,
                "split at {i}"
            );
            for j in i..=input.len() {
                assert_eq!(
                    parse_all(&[&input[..i], &input[i..j], &input[j..]]),
                    expected,
                    "split at {i} and {j}"
                );
            }
        }
        // Byte by byte.
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(parse_all(&bytes), expected, "byte by byte");
    }

    #[test]
    fn openai_style_frames_at_every_split_point() {
        let input = b"data: {\"a\":1}\n\ndata: {\"b\":\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80\"}\n\ndata: [DONE]\n\n";
        assert_split_invariant(
            input,
            &[
                ev(None, "{\"a\":1}"),
                ev(None, "{\"b\":\"héllo € 😀\"}"),
                ev(None, "[DONE]"),
            ],
        );
    }

    #[test]
    fn crlf_cr_and_lf_line_endings_at_every_split_point() {
        let input = b"event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\revent: c\ndata: 3\n\n";
        assert_split_invariant(
            input,
            &[ev(Some("a"), "1"), ev(Some("b"), "2"), ev(Some("c"), "3")],
        );
    }

    #[test]
    fn comments_keepalives_multiline_data_and_fields() {
        let input = b": OPENROUTER PROCESSING\n\n:keep-alive\n\nevent: message_start\ndata: line one\ndata:line two\ndata\nid: 7\nretry: 100\nunknown: x\n\n";
        let expected = vec![SseEvent {
            event: Some("message_start".to_owned()),
            data: "line one\nline two\n".to_owned(),
            id: Some("7".to_owned()),
        }];
        assert_split_invariant(input, &expected);
    }

    #[test]
    fn event_without_data_is_not_dispatched_and_resets_the_type() {
        assert_eq!(
            parse_all(&[b"event: ping\n\ndata: x\n\n"]),
            vec![ev(None, "x")]
        );
    }

    #[test]
    fn missing_trailing_blank_line_and_missing_final_newline_at_eof() {
        assert_split_invariant(b"data: a\n\ndata: b\n", &[ev(None, "a"), ev(None, "b")]);
        assert_split_invariant(b"data: a\n\ndata: b", &[ev(None, "a"), ev(None, "b")]);
        assert_split_invariant(b"data: a\r\n\r\ndata: b\r", &[ev(None, "a"), ev(None, "b")]);
    }

    #[test]
    fn leading_bom_is_dropped_and_only_one_space_is_stripped() {
        assert_split_invariant(
            b"\xef\xbb\xbfdata:  two spaces\n\n",
            &[ev(None, " two spaces")],
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        assert_eq!(
            parse_all(&[b"data: \xff\xfe\n\n"]),
            vec![ev(None, "\u{fffd}\u{fffd}")]
        );
    }

    #[test]
    fn empty_input_and_only_comments_give_nothing() {
        assert!(parse_all(&[b""]).is_empty());
        assert!(parse_all(&[b": ping\n\n: ping\n"]).is_empty());
    }

    #[test]
    fn oversized_line_is_an_error() {
        let mut parser = SseParser::new();
        let big = vec![b'a'; MAX_LINE_BYTES + 1];
        assert!(parser.push(&big).is_err());
    }
}
