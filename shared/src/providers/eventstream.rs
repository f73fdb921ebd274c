//! An incremental decoder of the AWS event-stream binary framing (`application/
//! vnd.amazon.eventstream`, what Bedrock's ConverseStream answers with): bytes go in as
//! they arrive, split anywhere, and whole checked messages come out.
//!
//! A message: a 12-byte prelude (total length, headers length, both big-endian u32, and
//! the CRC32 of those 8 bytes), the headers (name length u8, name, value type u8, value),
//! the payload, and the CRC32 of everything before it. A bad checksum, an impossible
//! length or a header of unknown type is an invalid answer; the body ending inside a
//! message is a cut stream.

use super::error::ProviderError;
use super::sse::SseEvent;

const PRELUDE_BYTES: usize = 12;
const CRC_BYTES: usize = 4;
/// The smallest message: a prelude and the message CRC, nothing else.
const MIN_MESSAGE_BYTES: usize = PRELUDE_BYTES + CRC_BYTES;
/// AWS caps a message at 16 MiB and its headers at 128 KiB.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
const MAX_HEADERS_BYTES: usize = 128 * 1024;

/// One decoded message: its string-valued headers (others are skipped) and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The message as the event the stream decoders read: an event's `:event-type`
    /// (`messageStart`, `contentBlockDelta`...), an exception's `exception:` and its
    /// `:exception-type` (`exception:throttlingException`), an error's `error:` and its
    /// `:error-code`; the payload as the data (an error's `:error-message` when it has
    /// none).
    pub fn into_event(self) -> SseEvent {
        let kind = match self.header(":message-type").unwrap_or("event") {
            "exception" => format!(
                "exception:{}",
                self.header(":exception-type").unwrap_or("unknown")
            ),
            "error" => format!("error:{}", self.header(":error-code").unwrap_or("unknown")),
            _ => self.header(":event-type").unwrap_or_default().to_owned(),
        };
        let mut data = String::from_utf8_lossy(&self.payload).into_owned();
        if data.is_empty()
            && let Some(message) = self.header(":error-message")
        {
            data = serde_json::json!({ "message": message }).to_string();
        }
        SseEvent {
            event: Some(kind),
            data,
            id: None,
        }
    }
}

/// The decoder: keeps the bytes of an unfinished message between pushes.
#[derive(Debug, Default)]
pub(crate) struct EventStreamDecoder {
    buffer: Vec<u8>,
}

impl EventStreamDecoder {
    pub fn new() -> EventStreamDecoder {
        EventStreamDecoder::default()
    }

    /// Feeds the next bytes; returns the messages they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Message>, ProviderError> {
        self.buffer.extend_from_slice(bytes);
        let mut messages = Vec::new();
        let mut start = 0;
        while let Some(total) = self.next_length(start)? {
            if self.buffer.len() - start < total {
                break;
            }
            messages.push(decode_message(&self.buffer[start..start + total])?);
            start += total;
        }
        self.buffer.drain(..start);
        Ok(messages)
    }

    /// The end of the body: an error if it came inside a message.
    pub fn finish(&mut self) -> Result<(), ProviderError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(ProviderError::StreamInterrupted {
                message: format!(
                    "the event stream ended inside a message ({} bytes of it received)",
                    self.buffer.len()
                ),
            })
        }
    }

    /// The length of the message at `start`, once its prelude is in and checked.
    fn next_length(&self, start: usize) -> Result<Option<usize>, ProviderError> {
        let Some(prelude) = self.buffer.get(start..start + PRELUDE_BYTES) else {
            return Ok(None);
        };
        let total = be_u32(&prelude[0..4]) as usize;
        let headers = be_u32(&prelude[4..8]) as usize;
        if crc32(&prelude[..8]) != be_u32(&prelude[8..12]) {
            return Err(invalid("an event-stream prelude fails its checksum"));
        }
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&total)
            || headers > MAX_HEADERS_BYTES
            || headers > total - MIN_MESSAGE_BYTES
        {
            return Err(invalid("an event-stream message has impossible lengths"));
        }
        Ok(Some(total))
    }
}

/// One whole message whose prelude was checked.
fn decode_message(bytes: &[u8]) -> Result<Message, ProviderError> {
    let body_end = bytes.len() - CRC_BYTES;
    if crc32(&bytes[..body_end]) != be_u32(&bytes[body_end..]) {
        return Err(invalid("an event-stream message fails its checksum"));
    }
    let headers_len = be_u32(&bytes[4..8]) as usize;
    let headers = decode_headers(&bytes[PRELUDE_BYTES..PRELUDE_BYTES + headers_len])?;
    Ok(Message {
        headers,
        payload: bytes[PRELUDE_BYTES + headers_len..body_end].to_vec(),
    })
}

fn decode_headers(mut bytes: &[u8]) -> Result<Vec<(String, String)>, ProviderError> {
    let truncated = || invalid("an event-stream header is truncated");
    let mut headers = Vec::new();
    while let Some((&name_len, rest)) = bytes.split_first() {
        let name_len = usize::from(name_len);
        let name = rest.get(..name_len).ok_or_else(truncated)?;
        let name = String::from_utf8_lossy(name).into_owned();
        let (&kind, rest) = rest[name_len..].split_first().ok_or_else(truncated)?;
        let fixed = |n: usize| rest.get(n..).ok_or_else(truncated);
        bytes = match kind {
            // true, false
            0 | 1 => rest,
            // byte, short, int, long, timestamp, uuid
            2 => fixed(1)?,
            3 => fixed(2)?,
            4 => fixed(4)?,
            5 | 8 => fixed(8)?,
            9 => fixed(16)?,
            // bytes, string: u16 length, then the value
            6 | 7 => {
                let len = rest.get(..2).ok_or_else(truncated)?;
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                let value = rest.get(2..2 + len).ok_or_else(truncated)?;
                if kind == 7 {
                    headers.push((name, String::from_utf8_lossy(value).into_owned()));
                }
                &rest[2 + len..]
            }
            _ => return Err(invalid("an event-stream header has an unknown type")),
        };
    }
    Ok(headers)
}

fn invalid(message: &str) -> ProviderError {
    ProviderError::invalid_response(message)
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// CRC-32 (IEEE 802.3, the zlib one) table, built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
};

pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc = CRC_TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc ^ 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An encoder for the tests: string headers only.
    fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        let mut header_bytes = Vec::new();
        for (name, value) in headers {
            header_bytes.push(name.len() as u8);
            header_bytes.extend_from_slice(name.as_bytes());
            header_bytes.push(7);
            header_bytes.extend_from_slice(&(value.len() as u16).to_be_bytes());
            header_bytes.extend_from_slice(value.as_bytes());
        }
        let total = MIN_MESSAGE_BYTES + header_bytes.len() + payload.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(total as u32).to_be_bytes());
        out.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32(&out).to_be_bytes());
        out.extend_from_slice(&header_bytes);
        out.extend_from_slice(payload);
        out.extend_from_slice(&crc32(&out).to_be_bytes());
        out
    }

    fn event(kind: &str, payload: &str) -> Vec<u8> {
        encode(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn a_known_message_from_the_aws_documentation_shape() {
        // An empty message: prelude + CRC only (total 16, headers 0).
        let mut empty = Vec::new();
        empty.extend_from_slice(&16u32.to_be_bytes());
        empty.extend_from_slice(&0u32.to_be_bytes());
        empty.extend_from_slice(&crc32(&empty).to_be_bytes());
        empty.extend_from_slice(&crc32(&empty).to_be_bytes());
        let messages = EventStreamDecoder::new().push(&empty).unwrap();
        assert_eq!(
            messages,
            vec![Message {
                headers: vec![],
                payload: vec![]
            }]
        );
        // The framing's own example: prelude 00 00 00 10 | 00 00 00 00 | 05 c2 48 eb.
        assert_eq!(&empty[8..12], &[0x05, 0xc2, 0x48, 0xeb]);
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let mut body = event("messageStart", r#"{"role":"assistant"}"#);
        body.extend(event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hé"}}"#,
        ));
        body.extend(encode(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
            ],
            br#"{"message":"slow down"}"#,
        ));
        let whole = EventStreamDecoder::new().push(&body).unwrap();
        assert_eq!(whole.len(), 3);
        for cut in 0..=body.len() {
            let mut decoder = EventStreamDecoder::new();
            let mut messages = decoder.push(&body[..cut]).unwrap();
            messages.extend(decoder.push(&body[cut..]).unwrap());
            decoder.finish().unwrap();
            assert_eq!(messages, whole, "split at {cut}");
        }
        // One byte at a time.
        let mut decoder = EventStreamDecoder::new();
        let mut messages = Vec::new();
        for byte in &body {
            messages.extend(decoder.push(std::slice::from_ref(byte)).unwrap());
        }
        assert_eq!(messages, whole);
        let events: Vec<SseEvent> = whole.into_iter().map(Message::into_event).collect();
        assert_eq!(events[0].event.as_deref(), Some("messageStart"));
        assert_eq!(
            events[1].data,
            r#"{"contentBlockIndex":0,"delta":{"text":"Hé"}}"#
        );
        assert_eq!(
            events[2].event.as_deref(),
            Some("exception:throttlingException")
        );
    }

    #[test]
    fn bad_checksums_and_cut_bodies_are_errors() {
        let good = event("messageStop", r#"{"stopReason":"end_turn"}"#);
        // Any flipped byte: the prelude CRC, the lengths or the message CRC catches it.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            let mut decoder = EventStreamDecoder::new();
            let outcome = decoder
                .push(&bad)
                .and_then(|messages| decoder.finish().map(|()| messages));
            assert!(outcome.is_err(), "flipped byte {i} went unnoticed");
        }
        let mut decoder = EventStreamDecoder::new();
        assert!(decoder.push(&good[..good.len() - 1]).unwrap().is_empty());
        let error = decoder.finish().unwrap_err();
        assert!(
            matches!(error, ProviderError::StreamInterrupted { .. }),
            "{error:?}"
        );
        // Impossible lengths with a valid prelude CRC.
        let mut tiny = Vec::new();
        tiny.extend_from_slice(&8u32.to_be_bytes());
        tiny.extend_from_slice(&0u32.to_be_bytes());
        tiny.extend_from_slice(&crc32(&tiny).to_be_bytes());
        assert!(EventStreamDecoder::new().push(&tiny).is_err());
    }
}
