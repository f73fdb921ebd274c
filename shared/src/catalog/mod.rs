//! The catalog: providers, models and routing rules (the seed's tables), their enums, and
//! (with the routing issue) the in-process snapshot cache the hot path reads.

pub mod types;

pub use types::{ApiFormat, AuthType, HealthStatus, PowerLevel, TaskType, Tier, UnknownValue};
