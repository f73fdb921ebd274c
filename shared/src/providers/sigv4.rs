//! AWS Signature Version 4 for the Bedrock runtime: the canonical request, the string to
//! sign and the signing key, by the published algorithm, with `sha2` alone (HMAC-SHA256 is
//! a few lines on top of it), so no AWS signing crate reaches the chat binary. Only what a
//! Bedrock call needs: a request without query string, its headers, its whole body.

use sha2::{Digest, Sha256};

use super::aws_credentials::AwsCredentials;

/// The algorithm name in the `Authorization` header and the string to sign.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const HMAC_BLOCK: usize = 64;

/// What is signed: one request without query string.
#[derive(Debug)]
pub(crate) struct SignableRequest<'a> {
    pub method: &'a str,
    /// The path as sent on the wire (its segments already percent-encoded).
    pub path: &'a str,
    /// Every header to sign besides `x-amz-date` and `x-amz-security-token`, which
    /// [`sign`] adds (`host` among them). Names in any case.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The headers a signed request carries in addition to its own.
#[derive(Debug)]
pub(crate) struct Signature {
    pub amz_date: String,
    pub authorization: String,
}

/// Signs `request` at `amz_date` (`YYYYMMDD'T'HHMMSS'Z'`). The session token, if any, must
/// be sent as `x-amz-security-token`; it is signed too.
pub(crate) fn sign(
    request: &SignableRequest<'_>,
    credentials: &AwsCredentials,
    region: &str,
    service: &str,
    amz_date: &str,
) -> Signature {
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), canonical_value(value)))
        .collect();
    headers.push(("x-amz-date".to_owned(), amz_date.to_owned()));
    if let Some(token) = &credentials.session_token {
        headers.push((
            "x-amz-security-token".to_owned(),
            token.expose().trim().to_owned(),
        ));
    }
    headers.sort();
    let signed_headers = headers
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    let canonical_request = format!(
        "{}\n{}\n\n{}\n{}\n{}",
        request.method,
        canonical_uri(request.path),
        canonical_headers,
        signed_headers,
        hex(&Sha256::digest(request.body))
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let secret = format!("AWS4{}", credentials.secret_access_key.expose().trim());
    let key = hmac(secret.as_bytes(), date.as_bytes());
    let key = hmac(&key, region.as_bytes());
    let key = hmac(&key, service.as_bytes());
    let key = hmac(&key, b"aws4_request");
    let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
    Signature {
        amz_date: amz_date.to_owned(),
        authorization: format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            credentials.access_key_id.trim()
        ),
    }
}

/// `YYYYMMDD'T'HHMMSS'Z'` of a time.
pub(crate) fn amz_date(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Every service but S3 signs its path encoded once more: each segment as sent (so a
/// `%3A` of a model id becomes `%253A`), `/` kept.
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    path.split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// RFC 3986 encoding: unreserved characters kept, every other byte `%XX` (upper case).
pub(crate) fn uri_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A header value trimmed, its inner runs of spaces folded to one.
fn canonical_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// HMAC-SHA256 (RFC 2104).
pub(crate) fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; HMAC_BLOCK];
    if key.len() > HMAC_BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    /// The credentials of AWS's published SigV4 test suite.
    fn suite_credentials(token: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: token.map(Secret::new),
            expires_at: None,
        }
    }

    fn suite(method: &str) -> String {
        let request = SignableRequest {
            method,
            path: "/",
            headers: &[("Host", "example.amazonaws.com")],
            body: b"",
        };
        sign(
            &request,
            &suite_credentials(None),
            "us-east-1",
            "service",
            "20150830T123600Z",
        )
        .authorization
    }

    #[test]
    fn aws_test_suite_get_and_post_vanilla() {
        assert_eq!(
            suite("GET"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert_eq!(
            suite("POST"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        assert_eq!(
            hex(&hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // A key longer than the block is hashed first (RFC 4231 case 6).
        assert_eq!(
            hex(&hmac(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn session_token_is_signed_and_paths_are_encoded_again() {
        let request = SignableRequest {
            method: "POST",
            path: "/model/us.anthropic.claude-v1%3A0/converse",
            headers: &[("host", "bedrock-runtime.us-east-1.amazonaws.com")],
            body: b"{}",
        };
        let signed = sign(
            &request,
            &suite_credentials(Some("token")),
            "us-east-1",
            "bedrock",
            "20150830T123600Z",
        );
        assert!(
            signed
                .authorization
                .contains("SignedHeaders=host;x-amz-date;x-amz-security-token"),
            "{}",
            signed.authorization
        );
        assert_eq!(
            canonical_uri("/model/us.anthropic.claude-v1%3A0/converse"),
            "/model/us.anthropic.claude-v1%253A0/converse"
        );
        assert!(!format!("{signed:?}").contains("wJalr"));
    }
}
