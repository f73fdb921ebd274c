//! One chat request: how many candidates, how long, and the BYOK fee.

use std::time::Duration;

use rust_decimal::Decimal;

use super::ConfigError;
use super::env::Env;

#[derive(Debug, Clone)]
pub struct ChatSettings {
    /// Candidates tried per request at most (`SWITCHBOARD_MAX_ATTEMPTS`, default 3).
    pub max_attempts: usize,
    /// One overall deadline per non-streamed request, under API Gateway's 29 s
    /// (`SWITCHBOARD_REQUEST_TIMEOUT_SECS`, default 25).
    pub request_timeout: Duration,
    /// The longest a stream may last from its request (`SWITCHBOARD_MAX_STREAM_SECS`,
    /// default 600, below the hold TTL). Under Lambda a stream also ends
    /// `chat::LAMBDA_DEADLINE_MARGIN` before the invocation deadline, whichever is first.
    pub max_stream_duration: Duration,
    /// Platform fee on BYOK calls, percent of the provider cost
    /// (`SWITCHBOARD_BYOK_FEE_PERCENT`, default 0).
    pub byok_fee_percent: Decimal,
    /// Stored Responses API responses expire after this
    /// (`SWITCHBOARD_RESPONSES_TTL_DAYS`, default 30).
    pub responses_ttl: Duration,
    /// Send the account id to Bedrock as `requestMetadata` (invocation logs can be filtered
    /// and split by it) (`SWITCHBOARD_BEDROCK_REQUEST_TAGS`, default off).
    pub bedrock_request_tags: bool,
}

impl ChatSettings {
    pub(super) fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            max_attempts: env.number("SWITCHBOARD_MAX_ATTEMPTS", 1, 10)?.unwrap_or(3),
            request_timeout: env.seconds(
                "SWITCHBOARD_REQUEST_TIMEOUT_SECS",
                1,
                900,
                Duration::from_secs(25),
            )?,
            max_stream_duration: env.seconds(
                "SWITCHBOARD_MAX_STREAM_SECS",
                1,
                86_400,
                Duration::from_secs(600),
            )?,
            responses_ttl: Duration::from_secs(
                86_400
                    * env
                        .number("SWITCHBOARD_RESPONSES_TTL_DAYS", 1, 3_650)?
                        .unwrap_or(30) as u64,
            ),
            bedrock_request_tags: env
                .flag("SWITCHBOARD_BEDROCK_REQUEST_TAGS")?
                .unwrap_or(false),
            byok_fee_percent: match env.get("SWITCHBOARD_BYOK_FEE_PERCENT") {
                None => Decimal::ZERO,
                Some(v) => v
                    .trim()
                    .parse::<Decimal>()
                    .ok()
                    .filter(|d| *d >= Decimal::ZERO && *d <= Decimal::from(100))
                    .ok_or_else(|| ConfigError {
                        variable: "SWITCHBOARD_BYOK_FEE_PERCENT",
                        reason: format!("`{v}` is not a percentage between 0 and 100"),
                    })?,
            },
        })
    }
}
