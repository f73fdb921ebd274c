//! Gateway API keys (`sk-sb-...`): the bootstrap admin key, the caller a key stands for,
//! and its lookup by hash. Generation, hashing and the format: [`format`].

pub mod bootstrap;
mod cache;
pub mod format;
pub mod issued;
pub mod self_service;
mod store;

pub use cache::KeyCache;
pub use format::{
    GeneratedKey, KEY_PREFIX, display_prefix, generate_api_key, hash_api_key, validate_key_format,
};

use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::db::DbError;
use crate::secret::Secret;

/// The bootstrap admin account that owns keys created from `SWITCHBOARD_ADMIN_KEY`.
pub const BOOTSTRAP_ADMIN_USER: &str = "admin";

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

/// Who acts, for the audit log.
pub struct Actor<'a> {
    pub caller: &'a Caller,
    pub request_id: Option<&'a str>,
}

impl Actor<'_> {
    /// Writes one audit entry (`before` / `after` already masked) as this actor.
    pub async fn record(
        &self,
        client: &impl GenericClient,
        action: &str,
        entity_type: &str,
        entity_id: Option<&str>,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> Result<(), DbError> {
        let entry = AuditEntry {
            actor_key_id: Some(self.caller.key_id),
            actor: &self.caller.user_id,
            action,
            entity_type,
            entity_id,
            before,
            after,
            request_id: self.request_id,
        };
        audit::record(client, &entry).await?;
        Ok(())
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
