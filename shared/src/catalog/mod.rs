//! The catalog: providers, models and routing rules (the seed's tables) as typed rows
//! ([`tables`]), their closed vocabularies ([`types`]), the SQL that loads them
//! ([`queries`]), an indexed immutable snapshot ([`Catalog`]) and the in-process
//! [`CatalogCache`] the hot path reads instead of querying per request.

pub mod cache;
pub mod queries;
pub mod snapshot;
pub mod tables;
pub mod types;

pub use cache::{CatalogCache, CatalogSource, DEFAULT_CATALOG_TTL};

/// Output tokens assumed when a request sets no `max_tokens` and its model has none
/// either: the hold's upper bound (`routing::OutputBudget`) and the
/// `max_tokens` sent to formats that require one (Anthropic).
pub const DEFAULT_OUTPUT_TOKENS: u32 = 4096;
pub use queries::{
    CatalogError, PERFORMANCE_REFRESH, PERFORMANCE_WINDOW, load_catalog, refresh_model_performance,
};
pub use snapshot::Catalog;
pub use tables::{Model, Provider, RoutingRule};
pub use types::{
    ApiFormat, AuthType, HealthStatus, ModelType, PowerLevel, TaskType, Tier, UnknownValue,
};
