//! `switchboard serve` and `switchboard migrate`: resolve the database (configured, or the
//! embedded private cluster), apply migrations and the seed, make sure the local master key
//! and a bootstrap admin key exist, then serve every route until Ctrl-C / SIGTERM, running
//! the provider health check on a timer meanwhile.

use std::io::Write;

use switchboard_core::auth::bootstrap::{AdminKeyError, AdminKeyOutcome, bootstrap_admin_key};
use switchboard_core::config::Config;
use switchboard_core::credentials::AwsContext;
use switchboard_core::credentials::SecretsError;
use switchboard_core::db::{DbError, DbPool, connect_pool_with, migrate};
use switchboard_core::keys::master_key::MasterKeyError;
use switchboard_core::keys::{KeyServices, KeySetupError};
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
    #[error(transparent)]
    AdminKey(#[from] AdminKeyError),
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
            switchboard_core::credentials::database_url(config, &AwsContext::default()).await?
        {
            return Ok(Self {
                url,
                embedded: None,
            });
        }
        let cluster =
            EmbeddedPostgres::start(&config.server.data_dir, config.server.pg_bin_dir.as_deref())
                .await?;
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
        let pool = connect_pool_with(&database.url, 1, &config.database.tls)?;
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
    let pool = connect_pool_with(url, config.database.pool_size, &config.database.tls)?;
    let report = migrate_pool(&pool).await?;
    tracing::info!(applied = ?report.applied, already_applied = report.already_applied.len(), "database schema up to date");

    let aws = AwsContext::default();
    let key_services = KeyServices::from_config(&config, &aws).await?;

    let mut client = pool.get().await.map_err(DbError::from)?;
    match bootstrap_admin_key(&mut client, &config, &aws).await? {
        AdminKeyOutcome::Generated(key) => announce_admin_key(&key),
        AdminKeyOutcome::Inserted => tracing::info!("configured bootstrap admin key stored"),
        AdminKeyOutcome::GeneratedIntoSecret => tracing::info!(
            "generated a bootstrap admin key and stored it in SWITCHBOARD_ADMIN_KEY_SECRET_ARN"
        ),
        AdminKeyOutcome::Present
        | AdminKeyOutcome::Existing
        | AdminKeyOutcome::SecretEmptyAdminExists => {}
    }
    drop(client);

    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Listen {
            address: listen.to_string(),
            source,
        })?;
    let state = AppState::new(config, pool).with_key_services(key_services);
    let health_timer = spawn_health_timer(&state);
    let app = crate::app(state);
    tracing::info!(address = %listen, "Switchboard is listening on http://{listen}");
    let served = axum::serve(switchboard_core::http::without_nagle(listener), app)
        .with_graceful_shutdown(switchboard_core::http::shutdown_signal())
        .await
        .map_err(ServeError::Server);
    health_timer.stop().await;
    served
}

/// The health check on a timer (`SWITCHBOARD_HEALTH_CHECK_INTERVAL_SECS`): in Lambda the
/// EventBridge schedule runs it; `serve` is a long-running process, so it runs it itself.
struct HealthTimer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn_health_timer(state: &AppState) -> HealthTimer {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let interval = state.config.health.interval;
    tracing::info!(
        interval_secs = interval.as_secs(),
        "health check runs every {} s",
        interval.as_secs()
    );
    let task = tokio::spawn(switchboard_core::health::run_every(
        state.clone(),
        interval,
        async move {
            // A dropped sender stops the timer too.
            let _ = stopped.await;
        },
    ));
    HealthTimer { stop, task }
}

impl HealthTimer {
    /// Stops the timer (cancelling a run in flight) and waits for it, before the database
    /// it uses is stopped.
    async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "health check timer ended abnormally");
        }
    }
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
