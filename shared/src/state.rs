//! The state every router shares: configuration, the database pool, the HTTP client for
//! upstream calls, and the key services (BYOK vault, system provider keys), built once per
//! process (per Lambda instance), never per request.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::KeyCache;
use crate::config::Config;
use crate::credentials::{AwsContext, SecretsError, SystemKeys};
use crate::db::{DbError, DbPool, connect_pool_with};
use crate::keys::{KeyServices, KeySetupError, KeyVault};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: DbPool,
    pub key_cache: Arc<KeyCache>,
    /// One client for every upstream call (connection reuse); redirects are not followed.
    pub http: reqwest::Client,
    /// Seals and opens BYOK keys (KMS or the local master key).
    pub vault: Arc<KeyVault>,
    /// The platform's own provider keys.
    pub system_keys: Arc<SystemKeys>,
    /// The in-process catalog snapshot (providers, models, rules), refreshed every few seconds.
    pub catalog: Arc<crate::catalog::CatalogCache>,
    /// Calls upstream providers in their own wire formats.
    pub providers: crate::providers::ProviderClient,
    /// This process's group-commit queues of admissions and captures (one per state, so
    /// that states built for other databases never share them).
    pub ledger: Arc<crate::chat::LedgerQueues>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "neither DATABASE_URL nor DATABASE_SECRET_ARN is set (only `switchboard serve` starts an embedded database)"
    )]
    NoDatabase,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Keys(#[from] KeySetupError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

/// The shared upstream client: no redirects (a provider must not bounce a key-bearing
/// request elsewhere), bounded connect time; per-request timeouts are set by callers.
pub fn upstream_http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        // Building fails only when the TLS backend cannot start, which no client survives.
        .unwrap_or_default()
}

impl AppState {
    /// A state without key services: BYOK operations answer 503 until
    /// [`AppState::with_key_services`] attaches them.
    pub fn new(config: Config, pool: DbPool) -> Self {
        let key_cache = Arc::new(KeyCache::new(config.keys.key_cache_ttl, 10_000));
        let catalog = Arc::new(crate::catalog::CatalogCache::new(
            config.routing.catalog_ttl,
        ));
        let http = upstream_http_client();
        let providers = crate::providers::ProviderClient::from_http(
            http.clone(),
            crate::providers::Timeouts::default(),
        );
        let ledger = Arc::new(crate::chat::LedgerQueues::new(
            pool.clone(),
            config.ledger.max_batch,
        ));
        Self {
            config: Arc::new(config),
            ledger,
            pool,
            key_cache,
            http,
            vault: Arc::new(KeyVault::unconfigured()),
            system_keys: Arc::new(SystemKeys::none()),
            catalog,
            providers,
        }
    }

    /// Captures that cannot commit within their retry budget are kept in `pending` until
    /// they do (`serve`'s spool, a Lambda function's queue).
    pub fn with_pending_charges(mut self, pending: Arc<dyn crate::ledger::PendingCharges>) -> Self {
        self.ledger = Arc::new(
            crate::chat::LedgerQueues::new(self.pool.clone(), self.config.ledger.max_batch)
                .with_pending_charges(pending),
        );
        self
    }

    /// Admission against quota grants (`serve`): the book whose writer the caller runs
    /// (`GrantBook::run`). Attach the pending charges first: granted captures that cannot
    /// be written go there.
    pub fn with_grants(
        mut self,
        settings: crate::ledger::GrantSettings,
    ) -> (Self, Arc<crate::ledger::GrantBook>) {
        let mut queues =
            crate::chat::LedgerQueues::new(self.pool.clone(), self.config.ledger.max_batch);
        if let Some(pending) = self.ledger.pending_charges() {
            queues = queues.with_pending_charges(Arc::clone(pending));
        }
        let (queues, book) = queues.with_grants(settings);
        self.ledger = Arc::new(queues);
        (self, book)
    }

    /// What a health-check run uses.
    pub fn health(&self) -> crate::health::HealthServices {
        crate::health::HealthServices {
            config: Arc::clone(&self.config),
            pool: self.pool.clone(),
            catalog: Arc::clone(&self.catalog),
            system_keys: Arc::clone(&self.system_keys),
            http: self.providers.http().clone(),
            aws: self.providers.aws_credentials().clone(),
        }
    }

    /// What the BYOK operations use.
    pub fn byok(&self) -> crate::keys::byok::ByokServices<'_> {
        crate::keys::byok::ByokServices {
            pool: &self.pool,
            vault: &self.vault,
            key_cache: &self.key_cache,
            http: &self.http,
            allow_private_upstreams: self.config.server.allow_private_upstreams,
        }
    }

    /// What a chat run uses (cheap: shared handles).
    pub fn chat(&self) -> crate::chat::ChatServices {
        crate::chat::ChatServices {
            config: Arc::clone(&self.config),
            pool: self.pool.clone(),
            catalog: Arc::clone(&self.catalog),
            vault: Arc::clone(&self.vault),
            system_keys: Arc::clone(&self.system_keys),
            key_cache: Arc::clone(&self.key_cache),
            providers: self.providers.clone(),
            ledger: Arc::clone(&self.ledger),
        }
    }

    pub fn with_key_services(mut self, services: KeyServices) -> Self {
        self.vault = services.vault;
        self.system_keys = services.system_keys;
        self
    }

    /// Builds the pool from `DATABASE_URL` only (no AWS, no key services).
    pub fn from_config(config: Config) -> Result<Self, StateError> {
        let url = config.database.url.clone().ok_or(StateError::NoDatabase)?;
        let pool = connect_pool_with(&url, config.database.pool_size, &config.database.tls)?;
        Ok(Self::new(config, pool))
    }

    /// Everything a Lambda function needs: the database (`DATABASE_URL`, or the RDS secret
    /// at `DATABASE_SECRET_ARN`) and the key services (KMS or the local master key, system
    /// provider keys).
    pub async fn load(mut config: Config) -> Result<Self, StateError> {
        let aws = AwsContext::default();
        config.billing.lago_api_key = crate::credentials::lago_api_key(&config, &aws).await?;
        crate::credentials::fill_billing_secrets(&mut config, &aws).await?;
        let url = crate::credentials::database_url(&config, &aws)
            .await?
            .ok_or(StateError::NoDatabase)?;
        let pool = connect_pool_with(&url, config.database.pool_size, &config.database.tls)?;
        let services = KeyServices::from_config(&config, &aws).await?;
        Ok(Self::new(config, pool).with_key_services(services))
    }
}
