//! The fake Bedrock runtime of [`FakeUpstream`](super::FakeUpstream): `POST
//! /bedrock/model/{modelId}/converse` and `.../converse-stream` (base URL
//! [`FakeUpstream::bedrock_base_url`](super::FakeUpstream::bedrock_base_url)).
//!
//! Every request's SigV4 signature is recomputed here, independently of the gateway's
//! signer, with the test credentials ([`ACCESS_KEY_ID`], [`SECRET_ACCESS_KEY`],
//! [`SESSION_TOKEN`], region [`REGION`], service `bedrock`): an unknown access key is
//! answered 403 `UnrecognizedClientException`, a wrong signature 403
//! `InvalidSignatureException`, as AWS does, without consuming a scripted step.
//!
//! Answers come from the same script of [`Step`]s as the other formats: a reply is a
//! Converse JSON answer, or for `converse-stream` real event-stream frames (prelude,
//! headers, payload, CRC32s): `messageStart`, `contentBlockDelta`s, tool-use blocks,
//! `messageStop`, `metadata`. A status step is the matching AWS exception
//! (`ThrottlingException` for 429, `ValidationException` for 400...); a cut stream sends
//! its first frames and half of the next, then drops the connection; a malformed stream
//! sends a frame with a wrong checksum.

use std::time::Duration;

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{FinishReason, Reply, Shared, Step, resolve_delays};

/// The test credentials the fake checks signatures with.
pub const ACCESS_KEY_ID: &str = "AKIDFAKEBEDROCK0001";
pub const SECRET_ACCESS_KEY: &str = "fake/bedrock+secret-access-key-0123456789";
pub const SESSION_TOKEN: &str = "fake-bedrock-session-token-FQoGZXIvYXdzEXAMPLE";
pub const REGION: &str = "us-east-1";
/// The path prefix of the fake's Bedrock routes.
pub const PREFIX: &str = "/bedrock";

/// Signatures the fake checked so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignatureCounts {
    pub verified: usize,
    pub refused: usize,
}

/// Answers one request under [`PREFIX`].
pub(super) async fn handle(
    shared: &Shared,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if let Err((kind, message)) = verify_signature(method, path, headers, body) {
        shared.lock().bedrock_signatures.refused += 1;
        return aws_error(403, kind, message);
    }
    shared.lock().bedrock_signatures.verified += 1;
    let Some(rest) = path
        .strip_prefix(PREFIX)
        .and_then(|p| p.strip_prefix("/model/"))
    else {
        return aws_error(404, "UnknownOperationException", "unknown operation");
    };
    let (model, stream) = match rest.rsplit_once('/') {
        Some((model, "converse")) => (model, false),
        Some((model, "converse-stream")) => (model, true),
        _ => return aws_error(404, "UnknownOperationException", "unknown operation"),
    };
    if method != "POST" {
        return aws_error(405, "UnknownOperationException", "use POST");
    }
    let model = percent_decode(model);
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if let Err(message) = validate(&request) {
        return aws_error(400, "ValidationException", &message);
    }
    let step = {
        let mut inner = shared.lock();
        match inner.steps.pop_front() {
            Some(step) => step,
            None => Step::Reply(inner.default.clone()),
        }
    };
    respond(&model, stream, resolve_delays(step).await).await
}

fn validate(request: &Value) -> Result<(), String> {
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("1 validation error detected: Value null at 'messages' failed to satisfy constraint: Member must not be null")?;
    for message in messages {
        match message.get("role").and_then(Value::as_str) {
            Some("user" | "assistant") => {}
            _ => return Err("a message role must be user or assistant".to_owned()),
        }
        let content = message
            .get("content")
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty())
            .ok_or("a message needs a non-empty content array")?;
        for block in content {
            if block
                .get("text")
                .and_then(Value::as_str)
                .is_some_and(|t| t.trim().is_empty())
            {
                return Err("The text field in the ContentBlock object is blank.".to_owned());
            }
        }
    }
    if let Some(max) = request.pointer("/inferenceConfig/maxTokens")
        && max.as_u64().is_none_or(|m| m == 0)
    {
        return Err("maxTokens must be a positive integer".to_owned());
    }
    Ok(())
}

async fn respond(model: &str, stream: bool, step: Step) -> Response {
    match step {
        Step::Reply(reply) => reply_response(model, stream, &reply, None, None),
        Step::SlowStream { reply, frame_delay } => {
            if stream {
                reply_response(model, stream, &reply, Some(frame_delay), None)
            } else {
                tokio::time::sleep(frame_delay).await;
                reply_response(model, stream, &reply, None, None)
            }
        }
        Step::CutStream {
            reply,
            after_frames,
        } => reply_response(model, stream, &reply, None, Some(after_frames)),
        Step::Status {
            status,
            body,
            retry_after: _,
        } => {
            let kind = match status {
                400 => "ValidationException",
                403 => "AccessDeniedException",
                404 => "ResourceNotFoundException",
                408 => "ModelTimeoutException",
                424 => "ModelErrorException",
                429 => "ThrottlingException",
                503 => "ServiceUnavailableException",
                _ => "InternalServerException",
            };
            let message =
                body.as_ref()
                    .and_then(|b| b.get("message"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| match status {
                        429 => "Too many requests, please wait before trying again.".to_owned(),
                        403 => "You don't have access to the model with the specified model ID."
                            .to_owned(),
                        _ => format!("{kind} from the fake Bedrock runtime"),
                    });
            aws_error(status, kind, &message)
        }
        Step::Malformed => {
            let mut frame = event("messageStart", &json!({"role": "assistant"}));
            let last = frame.len() - 1;
            frame[last] ^= 0xff;
            binary_response(vec![frame], None, false)
        }
        Step::Raw {
            status,
            content_type,
            body,
        } => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if let Ok(value) = HeaderValue::from_str(&content_type) {
                response.headers_mut().insert(CONTENT_TYPE, value);
            }
            response
        }
        Step::Reset => super::reset_connection(),
        Step::Delay { .. } => aws_error(500, "InternalServerException", "unresolved delay"),
    }
}

fn reply_response(
    model: &str,
    stream: bool,
    reply: &Reply,
    frame_delay: Option<Duration>,
    cut_after: Option<usize>,
) -> Response {
    if !stream {
        let body = converse_json(model, reply).to_string();
        return match cut_after {
            // Half the JSON, then the connection drops.
            Some(_) => {
                binary_response(vec![body.as_bytes()[..body.len() / 2].to_vec()], None, true)
            }
            None => {
                let mut response = Response::new(Body::from(body));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
        };
    }
    let mut frames = stream_frames(reply);
    match cut_after {
        Some(after) => {
            // Never the last frames; half of the next one, then the connection drops.
            let keep = after.min(frames.len().saturating_sub(2));
            let partial = frames[keep][..frames[keep].len() / 2].to_vec();
            frames.truncate(keep);
            frames.push(partial);
            binary_response(frames, frame_delay, true)
        }
        None => binary_response(frames, frame_delay, false),
    }
}

fn stop_reason(reply: &Reply) -> &'static str {
    match reply.effective_finish_reason() {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "content_filtered",
    }
}

/// Converse's usage: `inputTokens` without the cache reads and writes.
fn usage_json(reply: &Reply) -> Value {
    let usage = &reply.usage;
    json!({
        "inputTokens": usage.anthropic_input_tokens(),
        "outputTokens": usage.completion_tokens,
        "totalTokens": usage.prompt_tokens + usage.completion_tokens,
        "cacheReadInputTokens": usage.cached_tokens,
        "cacheWriteInputTokens": usage.cache_creation_tokens,
    })
}

fn tool_id(reply: &Reply, i: usize) -> String {
    reply.tool_calls[i]
        .id
        .clone()
        .unwrap_or_else(|| format!("tooluse_fake_{i}"))
}

fn converse_json(_model: &str, reply: &Reply) -> Value {
    let mut content = Vec::new();
    if reply.has_text_block() {
        content.push(json!({"text": reply.text}));
    }
    for (i, call) in reply.tool_calls.iter().enumerate() {
        content.push(json!({"toolUse": {
            "toolUseId": tool_id(reply, i), "name": call.name, "input": call.arguments
        }}));
    }
    json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason(reply),
        "usage": usage_json(reply),
        "metrics": {"latencyMs": 12}
    })
}

/// The frames of a ConverseStream answer; the last two are `messageStop` and `metadata`.
fn stream_frames(reply: &Reply) -> Vec<Vec<u8>> {
    let mut frames = vec![event("messageStart", &json!({"role": "assistant"}))];
    let mut block = 0;
    if reply.has_text_block() {
        // The text in two deltas (split on a character boundary).
        let chars: Vec<char> = reply.text.chars().collect();
        let (a, b) = chars.split_at(chars.len() / 2);
        for piece in [a, b] {
            let piece: String = piece.iter().collect();
            if !piece.is_empty() {
                frames.push(event(
                    "contentBlockDelta",
                    &json!({"contentBlockIndex": block, "delta": {"text": piece}, "p": "abcdefgh"}),
                ));
            }
        }
        frames.push(event(
            "contentBlockStop",
            &json!({"contentBlockIndex": block}),
        ));
        block += 1;
    }
    for (i, call) in reply.tool_calls.iter().enumerate() {
        frames.push(event(
            "contentBlockStart",
            &json!({"contentBlockIndex": block,
                    "start": {"toolUse": {"toolUseId": tool_id(reply, i), "name": call.name}}}),
        ));
        frames.push(event(
            "contentBlockDelta",
            &json!({"contentBlockIndex": block,
                    "delta": {"toolUse": {"input": call.arguments.to_string()}}}),
        ));
        frames.push(event(
            "contentBlockStop",
            &json!({"contentBlockIndex": block}),
        ));
        block += 1;
    }
    frames.push(event(
        "messageStop",
        &json!({"stopReason": stop_reason(reply)}),
    ));
    frames.push(event(
        "metadata",
        &json!({"usage": usage_json(reply), "metrics": {"latencyMs": 12}}),
    ));
    frames
}

fn event(kind: &str, payload: &Value) -> Vec<u8> {
    encode_frame(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

/// One event-stream message with string headers (type 7).
pub fn encode_frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut header_bytes = Vec::new();
    for (name, value) in headers {
        header_bytes.push(name.len() as u8);
        header_bytes.extend_from_slice(name.as_bytes());
        header_bytes.push(7);
        header_bytes.extend_from_slice(&(value.len() as u16).to_be_bytes());
        header_bytes.extend_from_slice(value.as_bytes());
    }
    let total = 16 + header_bytes.len() + payload.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(payload);
    let message_crc = crc32(&out);
    out.extend_from_slice(&message_crc.to_be_bytes());
    out
}

/// CRC-32 (IEEE), bit by bit: slow and obviously right, for the fake.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn binary_response(frames: Vec<Vec<u8>>, frame_delay: Option<Duration>, abort: bool) -> Response {
    let state = Some((frames.into_iter(), true));
    let stream = futures_util::stream::unfold(state, move |state| async move {
        let (mut frames, first) = state?;
        match frames.next() {
            Some(frame) => {
                if !first && let Some(delay) = frame_delay {
                    tokio::time::sleep(delay).await;
                }
                Some((Ok(Bytes::from(frame)), Some((frames, false))))
            }
            None if abort => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "fake bedrock: stream cut by script",
                    )),
                    None,
                ))
            }
            None => None,
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    response
}

fn aws_error(status: u16, kind: &str, message: &str) -> Response {
    let mut response = Response::new(Body::from(json!({"message": message}).to_string()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"
    )) {
        headers.insert(HeaderName::from_static("x-amzn-errortype"), value);
    }
    response
}

// ---------------------------------------------------------------------------
// SigV4 verification (written from AWS's documented algorithm, apart from the gateway's)
// ---------------------------------------------------------------------------

type Refusal = (&'static str, &'static str);

const BAD_SIGNATURE: Refusal = (
    "InvalidSignatureException",
    "The request signature we calculated does not match the signature you provided.",
);

fn verify_signature(
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let missing = (
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    );
    let authorization = header("authorization").ok_or(missing)?;
    let rest = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or(BAD_SIGNATURE)?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (key, value) = part.trim().split_once('=').ok_or(BAD_SIGNATURE)?;
        match key {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            _ => return Err(BAD_SIGNATURE),
        }
    }
    let (credential, signed_headers, signature) = (
        credential.ok_or(BAD_SIGNATURE)?,
        signed_headers.ok_or(BAD_SIGNATURE)?,
        signature.ok_or(BAD_SIGNATURE)?,
    );
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, terminator] = scope[..] else {
        return Err(BAD_SIGNATURE);
    };
    if access_key != ACCESS_KEY_ID {
        return Err((
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    if region != REGION || service != "bedrock" || terminator != "aws4_request" {
        return Err(BAD_SIGNATURE);
    }
    if header("x-amz-security-token") != Some(SESSION_TOKEN) {
        return Err((
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    let amz_date = header("x-amz-date").ok_or(BAD_SIGNATURE)?;
    if !amz_date.starts_with(date) || !within_five_minutes(amz_date) {
        return Err(("InvalidSignatureException", "Signature expired."));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    for required in ["host", "x-amz-date", "x-amz-security-token"] {
        if !names.contains(&required) {
            return Err(BAD_SIGNATURE);
        }
    }
    let mut canonical_headers = String::new();
    for name in &names {
        let values: Vec<String> = headers
            .get_all(*name)
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if values.is_empty() {
            return Err(BAD_SIGNATURE);
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    // Every service but S3 signs each path segment encoded once more.
    let canonical_path = path
        .split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/");
    let canonical_request = format!(
        "{method}\n{canonical_path}\n\n{canonical_headers}\n{signed_headers}\n{}",
        hex(&Sha256::digest(body))
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac_sha256(
        format!("AWS4{SECRET_ACCESS_KEY}").as_bytes(),
        date.as_bytes(),
    );
    for part in [region, service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let expected = hex(&hmac_sha256(&key, string_to_sign.as_bytes()));
    if expected == signature {
        Ok(())
    } else {
        Err(BAD_SIGNATURE)
    }
}

fn within_five_minutes(amz_date: &str) -> bool {
    let Ok(signed) = chrono_free_parse(amz_date) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    signed.abs_diff(now) <= 300
}

/// `YYYYMMDD'T'HHMMSS'Z'` to Unix seconds (days from the civil date, Howard Hinnant's
/// algorithm).
fn chrono_free_parse(text: &str) -> Result<u64, ()> {
    let digits = |range: std::ops::Range<usize>| -> Result<i64, ()> {
        text.get(range).ok_or(())?.parse().map_err(|_| ())
    };
    if text.len() != 16 || &text[8..9] != "T" || !text.ends_with('Z') {
        return Err(());
    }
    let (y, m, d) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (hh, mm, ss) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).map_err(|_| ())
}

fn encode_segment(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_dates() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(chrono_free_parse("20150830T123600Z"), Ok(1_440_938_160));
    }
}
