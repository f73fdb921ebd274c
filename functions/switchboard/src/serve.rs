//! `switchboard serve` and `switchboard migrate`: resolve the database (configured, or the
//! embedded private cluster), apply migrations and the seed, make sure the local master key
//! and a bootstrap admin key exist, then serve every route until Ctrl-C / SIGTERM, running
//! the provider health check on a timer meanwhile. The listener and its limits for slow
//! clients are in [`listener`].

mod body_deadline;
pub mod listener;

use std::io::Write;
use std::sync::Arc;

use switchboard_core::auth::bootstrap::{AdminKeyError, AdminKeyOutcome, bootstrap_admin_key};
use switchboard_core::config::Config;
use switchboard_core::credentials::AwsContext;
use switchboard_core::credentials::SecretsError;
use switchboard_core::db::{DbError, DbPool, connect_pool_with, migrate};
use switchboard_core::keys::master_key::MasterKeyError;
use switchboard_core::keys::{KeyServices, KeySetupError};
use switchboard_core::ledger::spool::{self, FileSpool, SpoolError};
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
    #[error(transparent)]
    Export(#[from] switchboard_core::billing::ExportError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
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

/// `switchboard export-billing`: one whole billing pass (the pending budget alerts and
/// the Lago export, `switchboard_core::billing::run_pass`) against the configured
/// database (the schema migrated first), within 5 minutes, then exit. With
/// `SWITCHBOARD_PENDING_CHARGES_QUEUE_URL` set it first drains the Lambda functions'
/// pending-charge queue, as the billing-export function does (its report is logged).
pub async fn export_billing(
    config: Config,
) -> Result<switchboard_core::billing::PassReport, ServeError> {
    let database = Database::resolve(&config).await?;
    let result = async {
        let pool = connect_pool_with(&database.url, 2, &config.database.tls)?;
        migrate_pool(&pool).await?;
        if let Some(url) = &config.ledger.pending_charges_queue_url {
            let queue = switchboard_core::ledger::SqsPendingCharges::new(
                AwsContext::default().sdk_config().await,
                url.clone(),
            );
            queue
                .drain(&pool, switchboard_core::billing::CLI_PASS_BUDGET / 2)
                .await?;
        }
        let http = switchboard_core::state::upstream_http_client();
        Ok(switchboard_core::billing::run_pass(
            &pool,
            &http,
            &config.billing,
            switchboard_core::billing::CLI_PASS_BUDGET,
        )
        .await?)
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
    let limits = listener::ListenerLimits::from_settings(&config.server, config.database.pool_size);
    let tcp = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Listen {
            address: listen.to_string(),
            source,
        })?;
    let spool = Arc::new(FileSpool::open(config.server.spool_dir())?);
    let grants = config
        .ledger
        .grants
        .then_some(switchboard_core::ledger::GrantSettings {
            flush_delay: config.ledger.flush_delay,
            hold_ttl: config.ledger.hold_ttl,
            idle: config.ledger.grant_idle,
            max_queued: switchboard_core::ledger::MAX_QUEUED,
        });
    let mut state = AppState::new(config, pool)
        .with_key_services(key_services)
        .with_pending_charges(spool.clone());
    let mut book = None;
    if let Some(settings) = grants {
        let (granted, grant_book) = state.with_grants(settings);
        state = granted;
        book = Some(grant_book);
    }
    let mut timers = spawn_timers(&state, spool);
    if let Some(book) = book {
        tracing::info!(
            flush_ms = book.settings().flush_delay.as_millis() as u64,
            "admission against quota grants; captures written every {} ms",
            book.settings().flush_delay.as_millis()
        );
        // Stopped first once the listener has drained: it writes what the last requests
        // captured, and returns the grants, before the database goes.
        timers.insert(
            0,
            Timer::spawn("ledger grants", move |stopped| book.run(stopped)),
        );
    }
    let app = crate::app(state);
    tracing::info!(address = %listen, "Switchboard is listening on http://{listen}");
    listener::serve(tcp, app, limits, switchboard_core::http::shutdown_signal()).await;
    for timer in timers {
        timer.stop().await;
    }
    Ok(())
}

/// Background work `serve` runs itself (in AWS, EventBridge schedules run it): the health
/// check every `SWITCHBOARD_HEALTH_CHECK_INTERVAL_SECS` and, when Lago is configured, the
/// billing export every `SWITCHBOARD_BILLING_EXPORT_INTERVAL_SECS`.
struct Timer {
    name: &'static str,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Resolves when the timer is told to stop (or its sender is dropped).
type Stopped = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl Timer {
    fn spawn<Fut>(name: &'static str, run: impl FnOnce(Stopped) -> Fut) -> Timer
    where
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped: Stopped = Box::pin(async move {
            let _ = stopped.await;
        });
        Timer {
            name,
            stop,
            task: tokio::spawn(run(stopped)),
        }
    }

    /// Stops the timer (cancelling a run in flight) and waits for it, before the database
    /// it uses is stopped.
    async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::warn!(%error, timer = self.name, "a timer ended abnormally");
        }
    }
}

fn spawn_timers(state: &AppState, spool: Arc<FileSpool>) -> Vec<Timer> {
    let interval = state.config.health.interval;
    tracing::info!(
        interval_secs = interval.as_secs(),
        "health check runs every {} s",
        interval.as_secs()
    );
    let health_state = state.clone();
    let mut timers = vec![Timer::spawn("health check", move |stopped| {
        switchboard_core::health::run_every(health_state.health(), interval, stopped)
    })];
    tracing::info!(spool = %spool.dir().display(), "captures that cannot commit are kept in the pending-charge spool and written when the database is back");
    let pool = state.pool.clone();
    timers.push(Timer::spawn("pending charges", move |stopped| {
        spool::drain_every(spool, pool, spool::DRAIN_INTERVAL, stopped)
    }));
    let billing = state.config.billing.clone();
    if switchboard_core::billing::enabled(&billing) {
        tracing::info!(
            interval_secs = billing.export_interval.as_secs(),
            lago = billing.lago_api_url.is_some(),
            alerts = billing.alert_webhook_url.is_some(),
            "billing pass (Lago export, budget alerts) runs every {} s",
            billing.export_interval.as_secs()
        );
        let (pool, http) = (state.pool.clone(), state.http.clone());
        timers.push(Timer::spawn("billing", move |stopped| {
            switchboard_core::billing::run_every(pool, http, billing, stopped)
        }));
    } else {
        tracing::info!(
            "billing export off: set SWITCHBOARD_LAGO_API_URL and SWITCHBOARD_LAGO_API_KEY to send usage to Lago"
        );
    }
    timers
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
