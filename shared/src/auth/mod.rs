//! Gateway API keys (`sk-sb-...`): generation, hashing, format checks and the bootstrap
//! admin key. Keys are 192 random bits, shown once, stored only as SHA-256.

use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::db::DbError;
use crate::secret::Secret;

pub const KEY_PREFIX: &str = "sk-sb-";
/// Random bytes in a generated key (192 bits, hex encoded).
const KEY_RANDOM_BYTES: usize = 24;
/// How many characters of a key are kept in clear for display (`sk-sb-1a2b`).
const DISPLAY_PREFIX_LEN: usize = 10;
/// The bootstrap admin account that owns keys created from `SWITCHBOARD_ADMIN_KEY`.
pub const BOOTSTRAP_ADMIN_USER: &str = "admin";

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

/// What [`ensure_bootstrap_admin`] did.
#[derive(Debug)]
pub enum BootstrapAdmin {
    /// The configured `SWITCHBOARD_ADMIN_KEY` was inserted now.
    InsertedConfigured,
    /// The configured key was already present.
    ConfiguredPresent,
    /// No key was configured and no admin key existed: this one was generated and must be
    /// shown to the operator once.
    Generated(Secret),
    /// No key configured, and an active admin key already exists.
    Existing,
}

/// Makes sure an admin key exists: the configured one (inserted hashed if missing), else
/// any active admin key, else a generated one returned for printing once.
pub async fn ensure_bootstrap_admin(
    client: &impl GenericClient,
    configured: Option<&Secret>,
) -> Result<BootstrapAdmin, DbError> {
    client
        .execute(
            "INSERT INTO accounts (user_id, tier) VALUES ($1, 'enterprise') ON CONFLICT (user_id) DO NOTHING",
            &[&BOOTSTRAP_ADMIN_USER],
        )
        .await?;

    if let Some(key) = configured {
        let hash = hash_api_key(key.expose());
        let inserted = client
            .execute(
                "INSERT INTO gateway_api_keys (id, user_id, name, key_hash, key_prefix, role)
                 VALUES ($1, $2, 'bootstrap admin (SWITCHBOARD_ADMIN_KEY)', $3, $4, 'admin')
                 ON CONFLICT (key_hash) DO NOTHING",
                &[
                    &Uuid::new_v4(),
                    &BOOTSTRAP_ADMIN_USER,
                    &hash.as_slice(),
                    &display_prefix(key.expose()),
                ],
            )
            .await?;
        return Ok(if inserted == 1 {
            BootstrapAdmin::InsertedConfigured
        } else {
            BootstrapAdmin::ConfiguredPresent
        });
    }

    let existing = client
        .query_opt(
            "SELECT 1 FROM gateway_api_keys WHERE role = 'admin' AND revoked_at IS NULL LIMIT 1",
            &[],
        )
        .await?;
    if existing.is_some() {
        return Ok(BootstrapAdmin::Existing);
    }

    let key = generate_api_key();
    client
        .execute(
            "INSERT INTO gateway_api_keys (id, user_id, name, key_hash, key_prefix, role)
             VALUES ($1, $2, 'bootstrap admin (generated)', $3, $4, 'admin')",
            &[
                &Uuid::new_v4(),
                &BOOTSTRAP_ADMIN_USER,
                &key.hash.as_slice(),
                &key.display_prefix,
            ],
        )
        .await?;
    Ok(BootstrapAdmin::Generated(key.plaintext))
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

/// Who is calling: the gateway key and its account, as loaded (and briefly cached) by hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: Uuid,
    pub user_id: String,
    pub role: KeyRole,
    /// The key's own limit; `None` → the tier's default.
    pub rpm_limit: Option<i32>,
    pub tier: crate::catalog::Tier,
    pub default_power_level: Option<crate::catalog::PowerLevel>,
    /// Providers for which the user has an active BYOK key (loaded with the key, so routing
    /// needs no query of its own; changes show within the key cache's TTL).
    pub byok_provider_ids: Vec<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    User,
    Admin,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == KeyRole::Admin
    }
}

/// Why a key was refused. Messages never contain the key.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing API key: send `Authorization: Bearer sk-sb-...`")]
    Missing,
    #[error("invalid API key")]
    Invalid,
    #[error("this API key has been revoked")]
    Revoked,
    #[error("this account is {0}")]
    AccountDisabled(String),
}

/// Looks a key up by its hash: one indexed query joining the key and its account.
pub async fn lookup_key(
    client: &impl GenericClient,
    hash: &[u8; 32],
) -> Result<Result<Caller, AuthError>, DbError> {
    let row = client
        .query_opt(
            "SELECT k.id, k.user_id, k.role, k.rpm_limit, k.revoked_at IS NOT NULL, a.tier, a.status,
                    a.default_power_level,
                    ARRAY(SELECT b.provider_id FROM user_api_keys b
                          WHERE b.user_id = k.user_id AND b.is_active
                            AND (b.is_validated OR b.validation_error IS NULL)
                          ORDER BY b.provider_id)
             FROM gateway_api_keys k JOIN accounts a ON a.user_id = k.user_id
             WHERE k.key_hash = $1",
            &[&hash.as_slice()],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Err(AuthError::Invalid));
    };
    if row.get::<_, bool>(4) {
        return Ok(Err(AuthError::Revoked));
    }
    let status: String = row.get(6);
    if status != "active" {
        return Ok(Err(AuthError::AccountDisabled(status)));
    }
    let role = if row.get::<_, String>(2) == "admin" {
        KeyRole::Admin
    } else {
        KeyRole::User
    };
    // The schema's CHECK constraints guarantee these parse; a failure means a corrupt row.
    let tier = row
        .get::<_, String>(5)
        .parse()
        .map_err(|_| DbError::Corrupt("unknown tier on an account".into()))?;
    let default_power_level = row
        .get::<_, Option<String>>(7)
        .map(|p| p.parse())
        .transpose()
        .map_err(|_| DbError::Corrupt("unknown power level on an account".into()))?;
    Ok(Ok(Caller {
        key_id: row.get(0),
        user_id: row.get(1),
        role,
        rpm_limit: row.get(3),
        tier,
        default_power_level,
        byok_provider_ids: row.get(8),
    }))
}

/// Extracts the presented key from `Authorization: Bearer …` or `x-api-key: …`.
pub fn presented_key(headers: &http::HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim();
        if let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        {
            return Some(token.trim()).filter(|t| !t.is_empty());
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}
