//! The shape of a gateway key (`sk-sb-...`): generation, hashing, display prefix and the
//! format check. Keys are 192 random bits, shown once, stored only as SHA-256. A leaf:
//! the configuration checks `SWITCHBOARD_ADMIN_KEY` with it.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::secret::Secret;

pub const KEY_PREFIX: &str = "sk-sb-";
/// Random bytes in a generated key (192 bits, hex encoded).
const KEY_RANDOM_BYTES: usize = 24;
/// How many characters of a key are kept in clear for display (`sk-sb-1a2b`).
const DISPLAY_PREFIX_LEN: usize = 10;

/// A freshly generated key: the plaintext (to show once) and what is stored.
pub struct GeneratedKey {
    pub plaintext: Secret,
    pub hash: [u8; 32],
    pub display_prefix: String,
}

pub fn generate_api_key() -> GeneratedKey {
    let mut bytes = [0u8; KEY_RANDOM_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let plaintext = format!("{KEY_PREFIX}{}", hex(&bytes));
    GeneratedKey {
        hash: hash_api_key(&plaintext),
        display_prefix: display_prefix(&plaintext),
        plaintext: Secret::new(plaintext),
    }
}

pub fn hash_api_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub fn display_prefix(key: &str) -> String {
    key.chars().take(DISPLAY_PREFIX_LEN).collect()
}

/// Checks that a configured key looks like one of ours and carries enough entropy.
/// The error never contains the key.
pub fn validate_key_format(key: &str) -> Result<(), &'static str> {
    let Some(rest) = key.strip_prefix(KEY_PREFIX) else {
        return Err("must start with sk-sb-");
    };
    if rest.len() < 32 {
        return Err("must have at least 32 characters after sk-sb- (128 bits or more)");
    }
    if !rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("may contain only letters, digits, '-' and '_' after sk-sb-");
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_unique_well_formed_and_hash_stably() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert_ne!(a.plaintext, b.plaintext);
        assert!(a.plaintext.expose().starts_with("sk-sb-"));
        assert_eq!(
            a.plaintext.expose().len(),
            KEY_PREFIX.len() + 2 * KEY_RANDOM_BYTES
        );
        assert!(validate_key_format(a.plaintext.expose()).is_ok());
        assert_eq!(a.hash, hash_api_key(a.plaintext.expose()));
        assert_eq!(a.display_prefix.len(), DISPLAY_PREFIX_LEN);
        assert!(a.plaintext.expose().starts_with(&a.display_prefix));
    }

    #[test]
    fn format_check_refuses_weak_or_foreign_keys() {
        assert!(validate_key_format("sk-abc").is_err());
        assert!(validate_key_format("sk-sb-short").is_err());
        assert!(validate_key_format("sk-sb-0123456789abcdef0123456789abcde!").is_err());
        assert!(validate_key_format("sk-sb-0123456789abcdef0123456789abcdef").is_ok());
    }

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(
            hex(&hash_api_key("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
