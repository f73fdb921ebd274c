//! [`HealthServices`]: what a health-check run uses of the process (built by the
//! composition root).

use std::sync::Arc;

use crate::catalog::CatalogCache;
use crate::config::Config;
use crate::credentials::SystemKeys;
use crate::db::DbPool;
use crate::providers::AwsCredentialSource;

#[derive(Clone)]
pub struct HealthServices {
    pub config: Arc<Config>,
    pub pool: DbPool,
    /// Invalidated when a status or an activation changed.
    pub catalog: Arc<CatalogCache>,
    /// The platform's keys the probes authenticate with.
    pub system_keys: Arc<SystemKeys>,
    /// The upstream client (the same connections as chat).
    pub http: reqwest::Client,
    /// What Bedrock probes are signed with (the chat calls' AWS credentials).
    pub aws: AwsCredentialSource,
}
