//! The webhook signature scheme Stripe uses, and Switchboard uses for its own webhooks:
//! a header `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`, where
//! several `v1` entries may appear (a secret being rolled) and one valid one is enough.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The header value for `body`, signed at `timestamp`.
pub fn sign(body: &[u8], secret: &str, timestamp: u64) -> String {
    let tag = aws_lc_rs::hmac::sign(&key(secret), &signed(timestamp, body));
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// Checks `header` for `body` at `now`: at most `tolerance` old (or ahead), and a `v1`
/// that matches, compared in constant time. The error says which check failed.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), &'static str> {
    let header = header.ok_or("missing")?;
    let mut timestamp: Option<u64> = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse().ok(),
            Some(("v1", v)) => signatures.push(v.to_string()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or("malformed")?;
    if signatures.is_empty() {
        return Err("malformed");
    }
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return Err("too old (or from the future)");
    }
    let key = key(secret);
    let message = signed(timestamp, body);
    let valid = signatures.iter().any(|hex| {
        decode_hex(hex).is_some_and(|tag| aws_lc_rs::hmac::verify(&key, &message, &tag).is_ok())
    });
    if valid { Ok(()) } else { Err("not valid") }
}

fn key(secret: &str) -> aws_lc_rs::hmac::Key {
    aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes())
}

fn signed(timestamp: u64, body: &[u8]) -> Vec<u8> {
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    message
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}
