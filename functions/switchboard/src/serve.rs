//! `switchboard serve` and `switchboard migrate`: resolve the database (configured, or the
//! embedded private cluster), apply migrations and the seed, make sure the local master key
//! and a bootstrap admin key exist, then serve every route until Ctrl-C / SIGTERM.

use std::io::Write;

use switchboard_core::auth::{self, BootstrapAdmin};
use switchboard_core::config::Config;
use switchboard_core::db::{DbError, DbPool, connect_pool, migrate};
use switchboard_core::keys::master_key::MasterKeyError;
use switchboard_core::keys::secrets::SecretsError;
use switchboard_core::keys::{AwsContext, KeyServices, KeySetupError};
use switchboard_core::secret::Secret;
use switchboard_core::state::AppState;

use crate::embedded_pg::{EmbeddedError, EmbeddedPostgres};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    #[error(transparent)]
    KeySetup(#[from] KeySetupError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("cannot listen on {address}: {source} (set SWITCHBOARD_LISTEN to another address)")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Server(std::io::Error),
}

/// The configured database, or the embedded cluster started for this process.
pub(crate) struct Database {
    url: Secret,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    pub(crate) async fn resolve(config: &Config) -> Result<Self, ServeError> {
        // DATABASE_URL, else the RDS secret at DATABASE_SECRET_ARN (`migrate` in AWS).
        if let Some(url) =
            switchboard_core::keys::database_url(config, &AwsContext::default()).await?
        {
            return Ok(Self {
                url,
                embedded: None,
            });
        }
        let cluster =
            EmbeddedPostgres::start(&config.data_dir, config.pg_bin_dir.as_deref()).await?;
        Ok(Self {
            url: Secret::new(cluster.database_url()),
            embedded: Some(cluster),
        })
    }

    pub(crate) fn url(&self) -> &Secret {
        &self.url
    }

    pub(crate) fn stop(mut self) -> Result<(), ServeError> {
        if let Some(cluster) = self.embedded.as_mut() {
            cluster.stop()?;
        }
        Ok(())
    }
}

async fn migrate_pool(pool: &DbPool) -> Result<migrate::MigrationReport, ServeError> {
    let mut client = pool.get().await.map_err(DbError::from)?;
    Ok(migrate::run(&mut client).await?)
}

/// `switchboard migrate`: applies pending migrations and exits.
pub async fn migrate(config: Config) -> Result<migrate::MigrationReport, ServeError> {
    let database = Database::resolve(&config).await?;
    let result = async {
        let pool = connect_pool(&database.url, 1)?;
        migrate_pool(&pool).await
    }
    .await;
    database.stop()?;
    result
}

/// `switchboard serve`.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let database = Database::resolve(&config).await?;
    let result = serve_on(config, &database.url).await;
    let stopped = database.stop();
    result.and(stopped)
}

async fn serve_on(config: Config, url: &Secret) -> Result<(), ServeError> {
    let pool = connect_pool(url, config.db_pool_size)?;
    let report = migrate_pool(&pool).await?;
    tracing::info!(applied = ?report.applied, already_applied = report.already_applied.len(), "database schema up to date");

    let key_services = KeyServices::from_config(&config, &AwsContext::default()).await?;

    let client = pool.get().await.map_err(DbError::from)?;
    match auth::ensure_bootstrap_admin(&**client, config.admin_key.as_ref()).await? {
        BootstrapAdmin::Generated(key) => announce_admin_key(&key),
        BootstrapAdmin::InsertedConfigured => {
            tracing::info!("bootstrap admin key from SWITCHBOARD_ADMIN_KEY stored")
        }
        BootstrapAdmin::ConfiguredPresent | BootstrapAdmin::Existing => {}
    }
    drop(client);

    let listen = config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Listen {
            address: listen.to_string(),
            source,
        })?;
    let app = crate::app(AppState::new(config, pool).with_key_services(key_services));
    tracing::info!(address = %listen, "Switchboard is listening on http://{listen}");
    axum::serve(listener, app)
        .with_graceful_shutdown(switchboard_core::http::shutdown_signal())
        .await
        .map_err(ServeError::Server)
}

/// The one place a secret is printed: a generated admin key, once, to the operator.
#[allow(clippy::print_stdout)]
fn announce_admin_key(key: &Secret) {
    println!();
    println!("  Switchboard admin key (shown once; store it now, it cannot be shown again):");
    println!();
    println!("      {}", key.expose());
    println!();
    let _ = std::io::stdout().flush();
}
