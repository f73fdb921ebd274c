//! The migration runner: plain SQL files from `migrations/`, compiled into the binary,
//! applied in order, each in its own transaction, recorded in `schema_migrations` with a
//! checksum so a second run is a no-op and an edited migration is refused. A session-level
//! advisory lock makes concurrent runners (two instances starting at once) safe.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::DbError;

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:expr, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../../migrations/", $name, ".sql")),
        }
    };
}

/// Every migration, in order. Add new files at the end; never edit an applied one.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_catalog"),
    migration!(2, "0002_accounts_ledger"),
    migration!(3, "0003_usage_health_audit"),
    migration!(4, "0004_seed_catalog"),
    migration!(5, "0005_ledger_functions"),
    migration!(6, "0006_admission"),
    migration!(8, "0008_perf"),
    migration!(9, "0009_group_commit"),
    migration!(10, "0010_byok_cooldown"),
    migration!(11, "0011_cache_write_prices"),
    migration!(12, "0012_usage_prices"),
    migration!(13, "0013_billing_export"),
    migration!(14, "0014_stripe"),
    migration!(15, "0015_budget_alerts"),
    migration!(16, "0016_billing_request_ids"),
    migration!(17, "0017_budget_alert_trigger_when"),
    migration!(18, "0018_embeddings"),
    migration!(19, "0019_model_performance"),
    migration!(20, "0020_hot_path_writes"),
    migration!(21, "0021_stripe_sessions"),
    migration!(22, "0022_billing_transaction_ids"),
    migration!(23, "0023_responses"),
    migration!(25, "0025_quota_grants"),
    migration!(26, "0026_grant_recall"),
    migration!(27, "0027_bedrock"),
];

/// Arbitrary constant naming the migration lock.
const MIGRATION_LOCK_KEY: i64 = 0x5357_4d49_4752;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this run.
    pub applied: Vec<i32>,
    /// Versions that were already applied.
    pub already_applied: Vec<i32>,
}

pub fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A short fingerprint of the whole schema, for naming test template databases.
pub fn schema_fingerprint() -> String {
    let mut hasher = Sha256::new();
    for m in MIGRATIONS {
        hasher.update(m.version.to_be_bytes());
        hasher.update(checksum(m.sql).as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Applies every pending migration.
pub async fn run(client: &mut Client) -> Result<MigrationReport, DbError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let result = run_locked(client).await;
    // Unlock even after a failure; if the connection itself is gone the lock went with it.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    let report = result?;
    unlocked?;
    Ok(report)
}

async fn run_locked(client: &mut Client) -> Result<MigrationReport, DbError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 checksum   text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let rows = client
        .query(
            "SELECT version, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?;
    let applied: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();

    if let Some((version, _)) = applied
        .iter()
        .find(|(v, _)| !MIGRATIONS.iter().any(|m| m.version == *v))
    {
        return Err(DbError::UnknownMigration { version: *version });
    }

    let mut report = MigrationReport::default();
    for migration in MIGRATIONS {
        let sum = checksum(migration.sql);
        if let Some((_, recorded)) = applied.iter().find(|(v, _)| *v == migration.version) {
            if *recorded != sum {
                return Err(DbError::MigrationChanged {
                    version: migration.version,
                    name: migration.name.to_string(),
                });
            }
            report.already_applied.push(migration.version);
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &sum],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        report.applied.push(migration.version);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered_and_unique() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        for m in MIGRATIONS {
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{} does not match its version",
                m.name
            );
            assert!(!m.sql.trim().is_empty());
        }
    }

    #[test]
    fn fingerprint_is_stable_and_short() {
        assert_eq!(schema_fingerprint(), schema_fingerprint());
        assert_eq!(schema_fingerprint().len(), 12);
    }
}
