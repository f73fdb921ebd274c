//! Routing: the power levels' cost ceilings and how long the catalog snapshot is served.

use std::time::Duration;

use rust_decimal::Decimal;

use super::ConfigError;
use super::env::Env;

/// How long the catalog snapshot is served when `SWITCHBOARD_CATALOG_TTL_SECS` is unset.
pub const DEFAULT_CATALOG_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RoutingSettings {
    /// Power-level cost ceilings for `auto` (the design's routing table).
    pub ceilings: PowerLevelCeilings,
    /// How long the in-process catalog snapshot is served before a refresh: the bound on
    /// how late another instance sees an admin's catalog change
    /// (`SWITCHBOARD_CATALOG_TTL_SECS`, default 5).
    pub catalog_ttl: Duration,
}

/// Maximum blended cost (USD per one million tokens) per power level. How a model is
/// measured against them: `routing::ceilings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerLevelCeilings {
    pub eco: Decimal,
    pub balanced: Decimal,
    pub precision: Decimal,
}

impl Default for PowerLevelCeilings {
    /// The design's table: eco $0.50, balanced $5.00, precision $100.00.
    fn default() -> Self {
        Self {
            eco: Decimal::new(50, 2),
            balanced: Decimal::new(500, 2),
            precision: Decimal::new(10_000, 2),
        }
    }
}

impl RoutingSettings {
    pub(super) fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            ceilings: PowerLevelCeilings::default(),
            catalog_ttl: env.seconds(
                "SWITCHBOARD_CATALOG_TTL_SECS",
                0,
                300,
                DEFAULT_CATALOG_TTL,
            )?,
        })
    }
}
