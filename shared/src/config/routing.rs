//! Routing: the power levels' settings (cost ceiling, latency ceiling, prefer cached), the
//! prompt-cache breakpoints added for Anthropic, and how long the catalog snapshot is
//! served.

use std::time::Duration;

use rust_decimal::Decimal;

use super::ConfigError;
use super::env::Env;

/// How long the catalog snapshot is served when `SWITCHBOARD_CATALOG_TTL_SECS` is unset.
pub const DEFAULT_CATALOG_TTL: Duration = Duration::from_secs(5);

/// Calls a model needs in the measuring window before its latency counts for routing, when
/// `SWITCHBOARD_LATENCY_MIN_SAMPLES` is unset.
pub const DEFAULT_LATENCY_MIN_SAMPLES: u32 = 5;

#[derive(Debug, Clone)]
pub struct RoutingSettings {
    /// Power-level settings for `auto` (the design's routing table).
    pub ceilings: PowerLevelCeilings,
    /// Add prompt-cache breakpoints to Anthropic-format calls of power levels that prefer
    /// cached prompts, when the request set none (`SWITCHBOARD_AUTO_CACHE_CONTROL`,
    /// default on).
    pub auto_cache_control: bool,
    /// How long the in-process catalog snapshot is served before a refresh: the bound on
    /// how late another instance sees an admin's catalog change
    /// (`SWITCHBOARD_CATALOG_TTL_SECS`, default 5).
    pub catalog_ttl: Duration,
}

/// The power levels' settings (the seed's table): the maximum blended cost (USD per one
/// million tokens; how a model is measured against it: `routing::ceilings`), the maximum
/// measured latency in milliseconds, and whether cache-capable candidates go first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerLevelCeilings {
    pub eco: Decimal,
    pub balanced: Decimal,
    pub precision: Decimal,
    pub eco_max_latency_ms: u32,
    pub balanced_max_latency_ms: u32,
    pub precision_max_latency_ms: u32,
    pub eco_prefer_cached: bool,
    pub balanced_prefer_cached: bool,
    pub precision_prefer_cached: bool,
    /// A model's measured latency counts once it has this many samples in the window
    /// (`SWITCHBOARD_LATENCY_MIN_SAMPLES`, default 5); below, it passes the latency filter.
    pub latency_min_samples: u32,
}

impl Default for PowerLevelCeilings {
    /// The seed's table: eco $0.50, 10 s, prefers cached; balanced $5.00, 5 s, prefers
    /// cached; precision $100.00, 2 s, does not.
    fn default() -> Self {
        Self {
            eco: Decimal::new(50, 2),
            balanced: Decimal::new(500, 2),
            precision: Decimal::new(10_000, 2),
            eco_max_latency_ms: 10_000,
            balanced_max_latency_ms: 5_000,
            precision_max_latency_ms: 2_000,
            eco_prefer_cached: true,
            balanced_prefer_cached: true,
            precision_prefer_cached: false,
            latency_min_samples: DEFAULT_LATENCY_MIN_SAMPLES,
        }
    }
}

impl PowerLevelCeilings {
    /// `SWITCHBOARD_{ECO,BALANCED,PRECISION}_{MAX_COST_PER_1M,MAX_LATENCY_MS,PREFER_CACHED}`
    /// over the defaults.
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let d = Self::default();
        let cost = |variable: &'static str, default: Decimal| match env.get(variable) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<Decimal>()
                .ok()
                .filter(|d| *d >= Decimal::ZERO)
                .ok_or_else(|| ConfigError {
                    variable,
                    reason: format!("`{v}` is not a price in USD per one million tokens"),
                }),
        };
        let latency = |variable: &'static str, default: u32| {
            Ok::<_, ConfigError>(
                env.number(variable, 1, 600_000)?
                    .map_or(default, |n| u32::try_from(n).unwrap_or(default)),
            )
        };
        Ok(Self {
            eco: cost("SWITCHBOARD_ECO_MAX_COST_PER_1M", d.eco)?,
            balanced: cost("SWITCHBOARD_BALANCED_MAX_COST_PER_1M", d.balanced)?,
            precision: cost("SWITCHBOARD_PRECISION_MAX_COST_PER_1M", d.precision)?,
            eco_max_latency_ms: latency("SWITCHBOARD_ECO_MAX_LATENCY_MS", d.eco_max_latency_ms)?,
            balanced_max_latency_ms: latency(
                "SWITCHBOARD_BALANCED_MAX_LATENCY_MS",
                d.balanced_max_latency_ms,
            )?,
            precision_max_latency_ms: latency(
                "SWITCHBOARD_PRECISION_MAX_LATENCY_MS",
                d.precision_max_latency_ms,
            )?,
            eco_prefer_cached: env
                .flag("SWITCHBOARD_ECO_PREFER_CACHED")?
                .unwrap_or(d.eco_prefer_cached),
            balanced_prefer_cached: env
                .flag("SWITCHBOARD_BALANCED_PREFER_CACHED")?
                .unwrap_or(d.balanced_prefer_cached),
            precision_prefer_cached: env
                .flag("SWITCHBOARD_PRECISION_PREFER_CACHED")?
                .unwrap_or(d.precision_prefer_cached),
            latency_min_samples: latency("SWITCHBOARD_LATENCY_MIN_SAMPLES", d.latency_min_samples)?,
        })
    }
}

impl RoutingSettings {
    pub(super) fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            ceilings: PowerLevelCeilings::from_env(env)?,
            auto_cache_control: env.flag("SWITCHBOARD_AUTO_CACHE_CONTROL")?.unwrap_or(true),
            catalog_ttl: env.seconds(
                "SWITCHBOARD_CATALOG_TTL_SECS",
                0,
                300,
                DEFAULT_CATALOG_TTL,
            )?,
        })
    }
}
