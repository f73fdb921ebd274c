//! A fresh, migrated PostgreSQL database per test (the crates.io test-db pattern): the
//! migrations run once into a template database named after the schema's fingerprint,
//! then each test gets `CREATE DATABASE … TEMPLATE …` (fast, isolated) and drops it at the
//! end. Safe across the processes nextest runs in parallel (an advisory lock guards the
//! template build).
//!
//! The server comes from `TEST_DATABASE_URL`, else `DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/postgres`.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rand::RngCore;
use switchboard_core::db::migrate;
use tokio_postgres::{Client, NoTls};

const TEMPLATE_LOCK_KEY: i64 = 0x5342_5445_4d50;

pub struct TestDb {
    name: String,
    url: String,
    admin_url: String,
    pool: Pool,
}

/// The URL of the server's maintenance database used to create and drop test databases.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL server ({e}); run the tests through ./scripts/test or set TEST_DATABASE_URL"));
    tokio::spawn(connection);
    client
}

fn template_name() -> String {
    format!("switchboard_tpl_{}", migrate::schema_fingerprint())
}

async fn ensure_template(admin: &Client, admin_url: &str) -> String {
    let template = template_name();
    admin
        .execute("SELECT pg_advisory_lock($1)", &[&TEMPLATE_LOCK_KEY])
        .await
        .expect("template lock");
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template])
        .await
        .expect("look up template")
        .is_some();
    if !exists {
        // Build under a temporary name and rename at the end, so a crash mid-way never
        // leaves a half-migrated template behind.
        let building = format!("{template}_building");
        // One statement per call: CREATE/DROP DATABASE cannot share an implicit transaction.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
            .await
            .expect("drop stale template build");
        admin
            .batch_execute(&format!("CREATE DATABASE {building}"))
            .await
            .expect("create template database");
        {
            let mut client = connect(&with_database(admin_url, &building)).await;
            migrate::run(&mut client)
                .await
                .expect("migrate template database");
        }
        // The migrating connection must be gone before the rename.
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                &[&building],
            )
            .await
            .expect("end template connections");
        admin
            .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {template}"))
            .await
            .expect("publish template database");
    }
    admin
        .execute("SELECT pg_advisory_unlock($1)", &[&TEMPLATE_LOCK_KEY])
        .await
        .expect("template unlock");
    template
}

impl TestDb {
    /// A new database with every migration (and the seed) applied.
    pub async fn new() -> TestDb {
        let admin_url = admin_url();
        let admin = connect(&admin_url).await;
        let template = ensure_template(&admin, &admin_url).await;
        let mut suffix = [0u8; 6];
        rand::rng().fill_bytes(&mut suffix);
        let name = format!(
            "sbtest_{}",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .await
            .expect("create test database");
        let url = with_database(&admin_url, &name);
        let pg: tokio_postgres::Config = url.parse().expect("test database URL");
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .expect("test pool");
        TestDb {
            name,
            url,
            admin_url,
            pool,
        }
    }

    /// A database with no migrations applied (for testing the runner itself).
    pub async fn empty() -> TestDb {
        let admin_url = admin_url();
        let admin = connect(&admin_url).await;
        let mut suffix = [0u8; 6];
        rand::rng().fill_bytes(&mut suffix);
        let name = format!(
            "sbtest_{}",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create empty test database");
        let url = with_database(&admin_url, &name);
        let pg: tokio_postgres::Config = url.parse().expect("test database URL");
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .build()
            .expect("test pool");
        TestDb {
            name,
            url,
            admin_url,
            pool,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A dedicated connection (not from the pool).
    pub async fn connect(&self) -> Client {
        connect(&self.url).await
    }

    /// An account of `tier` with one gateway key of `role` (`user` or `admin`; `rpm`:
    /// its requests-per-minute limit, `None` for the tier's); returns the key.
    #[allow(clippy::expect_used)]
    pub async fn account_with_key(
        &self,
        user_id: &str,
        tier: &str,
        role: &str,
        rpm: Option<i32>,
    ) -> String {
        let client = self.connect().await;
        client
            .execute(
                "INSERT INTO accounts (user_id, tier) VALUES ($1, $2)",
                &[&user_id, &tier],
            )
            .await
            .expect("insert the account");
        let key = switchboard_core::auth::generate_api_key();
        client
            .execute(
                "INSERT INTO gateway_api_keys (id, user_id, name, key_hash, key_prefix, role, rpm_limit)
                 VALUES ($1, $2, 'test', $3, $4, $5, $6)",
                &[
                    &uuid::Uuid::new_v4(),
                    &user_id,
                    &key.hash.as_slice(),
                    &key.display_prefix,
                    &role,
                    &rpm,
                ],
            )
            .await
            .expect("insert the key");
        key.plaintext.expose().to_owned()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.pool.close();
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread
        // with its own small runtime.
        let handle = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok((client, connection)) = tokio_postgres::connect(&admin_url, NoTls).await {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        });
        let _ = handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
    }
}
