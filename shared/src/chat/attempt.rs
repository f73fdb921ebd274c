//! The state of one run ([`Run`]) and what each candidate attempt needs: its credential,
//! its price, its usage row, and the bookkeeping of a failure (the shared breaker for the
//! platform's own credential, the user's key for BYOK) or of a success (the capture).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::answer::Routed;
use super::error::ChatError;
use super::services::ChatServices;
use super::settle::{CaptureItem, Hold, Settled};
use super::work::{Route, Work};
use crate::auth::Caller;
use crate::breaker;
use crate::catalog::{AuthType, PowerLevel, TaskType};
use crate::db::DbError;
use crate::keys::byok::{self, ByokUse};
use crate::ledger::{self, CaptureKind, TokenBuckets, TokenPrices, UsageLogRow};
use crate::providers::{ProviderError, UpstreamTarget, Usage};
use crate::routing::Candidate;

/// One request between its plan and its settlement.
pub(super) struct Run {
    pub services: ChatServices,
    pub caller: Caller,
    pub work: Work,
    pub route: Route,
    pub request_id: String,
    /// The ledger's own id for the hold, the capture and the billing event: unique per
    /// request even when a client reuses an `x-request-id`.
    pub ledger_id: String,
    pub power_level: PowerLevel,
    pub task_type: TaskType,
    pub candidates: Vec<Candidate>,
    pub prompt_tokens: u32,
    pub user_agent: Option<String>,
    pub started: Instant,
    /// No attempt starts after this, and one under way is cut at it (the request timeout,
    /// or the Lambda deadline less the margin).
    pub attempts_end: Instant,
    /// A committed stream ends, settled, at this.
    pub stream_end: Instant,
    /// Attempts made so far (failed ones; the successful one is added at settlement).
    pub attempts: Vec<UsageLogRow>,
    /// Offers (provider, BYOK or not) that answered 429 in this request: not tried again.
    /// A user's own key at its limit leaves the platform's key for that provider usable.
    pub rate_limited: HashSet<(i32, bool)>,
    /// A BYOK candidate skipped because the user's key is cooling down after a 429.
    pub byok_cooling: Option<Duration>,
    /// The request's `Server-Timing` counters (and its trace, when tracing is on).
    pub timing: crate::timing::RequestTiming,
    /// The span of the attempt under way (tracing on): a stream's lasts to its end.
    pub attempt_span: Option<crate::otel::ActiveSpan>,
}

/// Why an attempt failed.
pub(super) struct Failure {
    pub error: ProviderError,
    /// Cut by the run's own deadline, not by the provider's time limits: says nothing
    /// about the provider.
    pub gateway_deadline: bool,
}

impl Failure {
    pub fn upstream(error: ProviderError) -> Failure {
        Failure {
            error,
            gateway_deadline: false,
        }
    }

    pub fn deadline(phase: crate::providers::TimeoutPhase) -> Failure {
        Failure {
            error: ProviderError::Timeout { phase },
            gateway_deadline: true,
        }
    }
}

/// What one finished (or cut) call used and cost.
pub(super) struct Settlement {
    pub usage: Usage,
    pub provider_cost: ledger::Cost,
    pub charged: Decimal,
}

/// How the successful attempt left the provider, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Health {
    /// It answered: close a breaker that had failures.
    Answered,
    /// A stream broke off after it began: a provider failure, charged for what came.
    BrokeMidStream,
    /// Ended by the client or the time limit: says nothing about the provider.
    Unknown,
}

/// How the successful attempt went, for its settlement.
pub struct Success<'a> {
    pub latency: Duration,
    /// Streams: the time to the first content.
    pub ttft: Option<Duration>,
    pub settlement: &'a Settlement,
    /// Recorded on the usage row (for example "client disconnected").
    pub note: Option<&'a str>,
    pub health: Health,
}

impl Run {
    /// The credential and upstream address for one candidate. `Ok(None)`: no usable
    /// credential (the BYOK key was removed, deactivated or is cooling down): skip it.
    pub async fn upstream_target(
        &mut self,
        candidate: &Candidate,
    ) -> Result<Option<(UpstreamTarget, Option<i32>)>, ChatError> {
        let services = &self.services;
        let (api_key, user_key_id) = if candidate.byok {
            let client = services.pool.get().await.map_err(DbError::from)?;
            match byok::byok_key_for_use(
                &**client,
                &services.vault,
                &self.caller.user_id,
                candidate.provider.id,
            )
            .await
            {
                Ok(ByokUse::Ready { key_id, key }) => (Some(key), Some(key_id)),
                Ok(ByokUse::Missing) => return Ok(None),
                Ok(ByokUse::CoolingDown { retry_after }) => {
                    self.byok_cooling = Some(
                        self.byok_cooling
                            .map_or(retry_after, |other| other.min(retry_after)),
                    );
                    return Ok(None);
                }
                Err(error) => {
                    tracing::warn!(provider = %candidate.provider.provider_slug, %error, "BYOK key unusable; skipping candidate");
                    return Ok(None);
                }
            }
        } else if matches!(
            candidate.provider.auth_type,
            AuthType::None | AuthType::AwsSigv4
        ) {
            // aws_sigv4: signed with the process's AWS credentials, no stored key.
            (None, None)
        } else {
            match services
                .system_keys
                .get(&candidate.provider.provider_slug)
                .await
            {
                Some(key) => (Some(key), None),
                None => return Ok(None),
            }
        };
        Ok(Some((
            UpstreamTarget {
                api_format: candidate.provider.api_format,
                base_url: candidate.provider.base_url.clone(),
                auth_type: candidate.provider.auth_type,
                model_id: candidate.model.model_id.clone(),
                api_key,
                // The limit the hold assumed: in place of a larger request value, or when
                // the request has none.
                max_output_tokens: Some(candidate.output.max_tokens),
                forward_unpriced_fields: candidate.byok,
                auto_cache_control: self.adds_cache_control(candidate),
                traceparent: None,
                responses_api: candidate.provider.supports_responses_api,
                account_tag: (services.config.chat.bedrock_request_tags
                    && candidate.provider.api_format == crate::catalog::ApiFormat::Bedrock)
                    .then(|| self.caller.user_id.clone()),
            },
            user_key_id,
        )))
    }

    /// Whether this call gets prompt-cache breakpoints the request did not set: an
    /// Anthropic-format candidate, a power level that prefers cached prompts, and
    /// `SWITCHBOARD_AUTO_CACHE_CONTROL` on. The hold then covers cache writes.
    pub fn adds_cache_control(&self, candidate: &Candidate) -> bool {
        let routing = &self.services.config.routing;
        routing.auto_cache_control
            && candidate.provider.api_format == crate::catalog::ApiFormat::Anthropic
            && routing.ceilings.prefers_cached(self.power_level)
            && !self.work.has_cache_control()
    }

    pub fn price(&self, candidate: &Candidate, usage: &Usage) -> Settlement {
        let buckets = TokenBuckets {
            uncached_input: usage.uncached_input_tokens,
            cached_input: usage.cached_input_tokens,
            cache_write: usage
                .cache_write_input_tokens
                .saturating_sub(usage.cache_write_1h_input_tokens),
            cache_write_1h: usage
                .cache_write_1h_input_tokens
                .min(usage.cache_write_input_tokens),
            output: usage.output_tokens,
        };
        let prices = TokenPrices::of(&candidate.model);
        let provider_cost = ledger::cost_of(buckets, &prices);
        let charged = if candidate.byok {
            ledger::byok_fee(
                provider_cost.total_usd,
                self.services.config.chat.byok_fee_percent,
            )
        } else {
            provider_cost.total_usd
        };
        Settlement {
            usage: *usage,
            provider_cost,
            charged,
        }
    }

    /// The usage row of one attempt.
    fn attempt_row(
        &self,
        candidate: &Candidate,
        user_key_id: Option<i32>,
        latency: Duration,
        status_code: Option<u16>,
        outcome: Result<&Settlement, &str>,
    ) -> UsageLogRow {
        let attempt = self.attempts.len() + 1;
        let mut row = UsageLogRow {
            user_id: self.caller.user_id.clone(),
            request_id: self.request_id.clone(),
            attempt: i16::try_from(attempt).unwrap_or(i16::MAX),
            provider_id: Some(candidate.provider.id),
            model_id: Some(candidate.model.id),
            user_key_id,
            provider_slug: Some(candidate.provider.provider_slug.clone()),
            model_name: Some(candidate.model.model_id.clone()),
            power_level: Some(self.power_level.to_string()),
            task_type: Some(self.task_type.to_string()),
            used_byok: candidate.byok,
            stream: self.work.is_stream(),
            route: Some(self.route.path().to_string()),
            latency_ms: Some(i32::try_from(latency.as_millis()).unwrap_or(i32::MAX)),
            status_code: status_code.map(i32::from),
            was_fallback: attempt > 1,
            fallback_reason: self.attempts.last().and_then(|a| a.error_message.clone()),
            user_agent: self.user_agent.clone(),
            ..UsageLogRow::default()
        };
        match outcome {
            Ok(settlement) => {
                let usage = &settlement.usage;
                row.prompt_tokens = clamp_i32(usage.input_tokens());
                row.completion_tokens = clamp_i32(usage.output_tokens);
                row.total_tokens = clamp_i32(usage.total_tokens());
                row.cached_tokens = clamp_i32(usage.cached_input_tokens);
                row.cost_input_usd = settlement.provider_cost.input_usd;
                row.cost_output_usd = settlement.provider_cost.output_usd;
                row.cost_total_usd = settlement.provider_cost.total_usd;
                row.charged_usd = settlement.charged;
                let prices = TokenPrices::of(&candidate.model);
                row.price_input_per_1m = Some(prices.input_per_1m);
                row.price_cached_input_per_1m =
                    Some(prices.cached_input_per_1m.unwrap_or(prices.input_per_1m));
                row.price_cache_write_per_1m = Some(prices.cache_write_price());
                row.price_cache_write_1h_per_1m = Some(prices.cache_write_1h_price());
                row.price_output_per_1m = Some(prices.output_per_1m);
                let secs = latency.as_secs_f64();
                if secs > 0.0 && usage.output_tokens > 0 {
                    row.tokens_per_second =
                        Decimal::from_f64_retain(usage.output_tokens as f64 / secs)
                            .map(|d| d.round_dp(3));
                }
            }
            Err(message) => row.error_message = Some(message.chars().take(500).collect()),
        }
        row
    }

    /// Records a failed attempt: its usage row and what it says. Only a failure of the
    /// platform's own credential counts toward the shared provider breaker; a user's key
    /// refused (401/403) is marked unvalidated, and one at its limit (429) cools down for
    /// that user alone. The gateway's own failures (the run's deadline, its resources:
    /// [`crate::local_failure`]) say nothing about the provider: no breaker, no BYOK
    /// write, and a usage row without the provider's id, so that neither the breaker's
    /// window nor the health check's passive signal (both read usage rows by provider id)
    /// counts them; the row keeps the provider's slug and model for the record.
    pub async fn record_failure(
        &mut self,
        candidate: &Candidate,
        user_key_id: Option<i32>,
        latency: Duration,
        failure: &Failure,
    ) {
        let error = &failure.error;
        let local = error.local_failure();
        let message = if failure.gateway_deadline {
            "the request deadline passed during this attempt".to_string()
        } else if local.is_some() {
            format!("the gateway's own failure, not the provider's: {error}")
        } else {
            error.to_string()
        };
        let mut row = self.attempt_row(
            candidate,
            user_key_id,
            latency,
            error.upstream_status(),
            Err(&message),
        );
        if failure.gateway_deadline || local.is_some() {
            row.provider_id = None;
        }
        self.attempts.push(row);
        if let Some(mut span) = self.attempt_span.take() {
            span.fail(attempt_outcome(error));
            span.set("error.type", attempt_outcome(error));
        }
        self.note_labels(candidate);
        crate::metrics::record_attempt(
            &candidate.model.model_id,
            &candidate.provider.provider_slug,
            attempt_outcome(error),
        );
        if let Some(local) = local {
            crate::metrics::record_local_error(local);
            return;
        }
        if failure.gateway_deadline {
            return;
        }
        let rate_limited = error.upstream_status() == Some(429);
        if rate_limited {
            self.rate_limited
                .insert((candidate.provider.id, candidate.byok));
        }
        let is_auth_failure = error.is_auth_failure();
        let worth_a_write = if candidate.byok {
            user_key_id.is_some() && (is_auth_failure || rate_limited)
        } else {
            error.is_provider_failure()
        };
        if !worth_a_write {
            return;
        }
        let services = self.services.clone();
        let client = match services.pool.get().await {
            Ok(client) => client,
            Err(db) => {
                tracing::warn!(error = %db, "could not record a failed attempt's effect");
                return;
            }
        };
        let user_id = &self.caller.user_id;
        match (candidate.byok, user_key_id) {
            (true, Some(key_id)) if is_auth_failure => {
                let status = error.upstream_status().unwrap_or(401);
                if let Err(e) =
                    byok::mark_byok_key_invalid(&**client, user_id, key_id, status).await
                {
                    tracing::warn!(error = %e, "could not mark the BYOK key invalid");
                }
                services.key_cache.forget_user(user_id);
            }
            (true, Some(key_id)) => {
                let cooldown = error
                    .retry_after()
                    .unwrap_or(services.config.breaker.cooldown);
                match byok::cool_down_byok_key(&**client, user_id, key_id, cooldown).await {
                    Ok(_) => {
                        tracing::info!(provider = %candidate.provider.provider_slug, cooldown_secs = cooldown.as_secs(), "the user's own key is rate limited; cooling it down")
                    }
                    Err(e) => tracing::warn!(error = %e, "could not cool down the BYOK key"),
                }
            }
            _ => record_breaker_failure(&services, &**client, candidate, error).await,
        }
    }

    /// The request's metric labels: the candidate that served it, or was tried last.
    pub(super) fn note_labels(&self, candidate: &Candidate) {
        if let Some(trace) = self.timing.trace() {
            trace.set_root(
                "gen_ai.provider.name",
                candidate.provider.provider_slug.as_str(),
            );
            trace.set_root("switchboard.power_level", self.power_level.as_str());
            trace.set_root("switchboard.byok", candidate.byok);
        }
        self.timing.set_labels(crate::metrics::RequestLabels {
            model: candidate.model.model_id.clone(),
            provider: candidate.provider.provider_slug.clone(),
            power_level: self.power_level.as_str(),
            byok: candidate.byok,
            fallback: self.attempts.len() > 1,
        });
    }

    /// Captures the cost of the successful attempt with every attempt's usage row and the
    /// billing event, in one transaction (retried within the settlement budget), then does
    /// the best-effort bookkeeping: the breaker and the BYOK key's counters.
    pub async fn settle_success(
        &mut self,
        hold: Hold,
        candidate: &Candidate,
        user_key_id: Option<i32>,
        success: Success<'_>,
    ) -> Settled {
        let Success {
            latency,
            ttft,
            settlement,
            note,
            health,
        } = success;
        let mut row = self.attempt_row(candidate, user_key_id, latency, Some(200), Ok(settlement));
        row.error_message = note.map(|n| n.chars().take(500).collect());
        row.ttft_ms = ttft.map(|t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX));
        self.attempts.push(row);
        let item = CaptureItem {
            ledger_id: hold.ledger_id().to_string(),
            user_id: self.caller.user_id.clone(),
            amount: settlement.charged,
            kind: if candidate.byok {
                CaptureKind::ByokFee
            } else {
                CaptureKind::Usage
            },
            usage_logs: self.attempts.clone(),
            billing_properties: json!({
                "request_id": self.request_id,
                "model": candidate.model.model_id,
                "provider": candidate.provider.provider_slug,
                "byok": candidate.byok,
                "prompt_tokens": settlement.usage.input_tokens(),
                "cached_tokens": settlement.usage.cached_input_tokens,
                "completion_tokens": settlement.usage.output_tokens,
                "provider_cost_usd": settlement.provider_cost.total_usd.to_string(),
                "charged_usd": settlement.charged.to_string(),
                // Lago's properties (api.md, "Billing export").
                "input_tokens": settlement.usage.uncached_input_tokens,
                "cached_input_tokens": settlement.usage.cached_input_tokens,
                "cache_write_input_tokens": settlement.usage.cache_write_input_tokens,
                "output_tokens": settlement.usage.output_tokens,
                "cost_usd": settlement.charged.normalize().to_string(),
                "power_level": self.power_level.to_string(),
                "task_type": self.task_type.to_string(),
            }),
        };
        self.note_labels(candidate);
        crate::metrics::record_attempt(
            &candidate.model.model_id,
            &candidate.provider.provider_slug,
            "2xx",
        );
        if let Some(mut span) = self.attempt_span.take() {
            span.set("gen_ai.response.model", candidate.model.model_id.as_str());
            span.set("gen_ai.usage.input_tokens", settlement.usage.input_tokens());
            span.set("gen_ai.usage.output_tokens", settlement.usage.output_tokens);
        }
        if let Some(trace) = self.timing.trace() {
            trace.set_root("gen_ai.response.model", candidate.model.model_id.as_str());
            trace.set_root("gen_ai.usage.input_tokens", settlement.usage.input_tokens());
            trace.set_root("gen_ai.usage.output_tokens", settlement.usage.output_tokens);
            trace.set_root("switchboard.fallback", self.attempts.len() > 1);
        }
        let mut span = crate::otel::child(
            self.timing.trace(),
            "settlement",
            crate::otel::SpanKind::Internal,
        );
        let waited = Instant::now();
        let settled = hold.capture(&self.services.ledger, item).await;
        self.timing.add_db(waited.elapsed());
        if let Some(span) = span.as_mut() {
            let outcome = match settled {
                Settled::Captured { .. } => "captured",
                Settled::Pending => "pending",
            };
            span.set("switchboard.settlement", outcome);
        }
        drop(span);
        if let Settled::Captured { .. } = settled {
            crate::metrics::record_capture(
                self.route.path(),
                &candidate.model.model_id,
                &candidate.provider.provider_slug,
                &settlement.usage,
                settlement.provider_cost.total_usd,
                settlement.charged,
                ttft,
            );
        }
        self.after_success(candidate, user_key_id, settlement, health)
            .await;
        settled
    }

    /// Best-effort, after the capture: never turns a paid answer into an error.
    async fn after_success(
        &self,
        candidate: &Candidate,
        user_key_id: Option<i32>,
        settlement: &Settlement,
        health: Health,
    ) {
        let platform = !candidate.byok;
        let breaker_failure = platform && health == Health::BrokeMidStream;
        // Rare paths, off the common one: close a breaker that had failures.
        let close_breaker = platform
            && health == Health::Answered
            && (candidate.provider.breaker_consecutive_failures > 0
                || candidate.provider.breaker_open_until.is_some());
        if !breaker_failure && !close_breaker && user_key_id.is_none() {
            return;
        }
        let services = &self.services;
        let client = match services.pool.get().await {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(%error, "could not do the bookkeeping after a capture");
                return;
            }
        };
        if breaker_failure {
            let error = ProviderError::StreamInterrupted {
                message: "the stream broke off after it began".into(),
            };
            record_breaker_failure(services, &**client, candidate, &error).await;
        } else if close_breaker {
            if let Err(e) = breaker::record_success(&**client, candidate.provider.id).await {
                tracing::warn!(error = %e, "could not close the circuit breaker");
            }
            services.catalog.invalidate();
        }
        if let Some(key_id) = user_key_id {
            let tokens = i64::try_from(settlement.usage.total_tokens()).unwrap_or(i64::MAX);
            if let Err(e) = byok::record_byok_usage(
                &**client,
                &self.caller.user_id,
                key_id,
                tokens,
                settlement.provider_cost.total_usd,
            )
            .await
            {
                tracing::warn!(error = %e, "could not update the BYOK key's usage counters");
            }
        }
    }

    /// `_metadata` of a successful answer (design README step 8). `credits_remaining` is
    /// null and `charge_pending` true when the capture could not be written.
    pub fn metadata(
        &self,
        candidate: &Candidate,
        settlement: &Settlement,
        settled: &Settled,
    ) -> Value {
        let mut metadata = json!({
            "provider_used": candidate.provider.provider_slug,
            "model_used": candidate.model.model_id,
            "cost_usd": settlement.charged.normalize().to_string(),
            "provider_cost_usd": settlement.provider_cost.total_usd.normalize().to_string(),
            "credits_remaining": Value::Null,
            "power_level": self.power_level,
            "task_type": self.task_type,
            "user_tier": self.caller.tier,
            "byok": candidate.byok,
            "attempts": self.attempts.len(),
            "request_id": self.request_id,
        });
        if candidate.output.clamped {
            metadata["max_tokens_clamped_to"] = json!(candidate.output.max_tokens);
        }
        match settled {
            Settled::Captured { balance } => {
                metadata["credits_remaining"] = json!(balance.normalize().to_string());
            }
            Settled::Pending => metadata["charge_pending"] = json!(true),
        }
        metadata
    }

    /// The error that ends a request after every candidate failed or was skipped.
    pub fn exhausted_error(&self, last: Option<ProviderError>, deadline_passed: bool) -> ChatError {
        if deadline_passed {
            return ChatError::UpstreamTimeout(
                "the request deadline passed before any provider answered".into(),
            );
        }
        match last {
            // No candidate's format could express the request: the request's problem (400
            // naming the field), not an upstream failure.
            Some(error @ ProviderError::Unsupported { .. }) => error.into(),
            // The gateway could not make the last call itself: 503, not the providers' 502.
            Some(error @ ProviderError::Local { .. }) => error.into(),
            Some(error @ ProviderError::Timeout { .. }) => {
                ChatError::UpstreamTimeout(format!("every candidate failed; last: {error}"))
            }
            Some(error) => match error.upstream_status() {
                Some(status) => ChatError::Upstream(format!(
                    "every candidate failed; the last upstream answered HTTP {status}"
                )),
                None => ChatError::Upstream(format!("every candidate failed; last: {error}")),
            },
            None => match self.byok_cooling {
                Some(retry_after) => ChatError::RateLimited {
                    message: "your own provider key is cooling down after the provider answered 429, and no other candidate could serve the request".into(),
                    retry_after,
                },
                None => ChatError::NoAvailableProvider(
                    "no candidate had a usable credential".into(),
                ),
            },
        }
    }
}

async fn record_breaker_failure(
    services: &ChatServices,
    client: &impl tokio_postgres::GenericClient,
    candidate: &Candidate,
    error: &ProviderError,
) {
    match breaker::record_failure(
        client,
        candidate.provider.id,
        error.retry_after(),
        &services.config.breaker,
    )
    .await
    {
        Ok(true) => {
            tracing::warn!(provider = %candidate.provider.provider_slug, "circuit breaker open");
            services.catalog.invalidate();
        }
        Ok(false) => {}
        Err(db) => tracing::warn!(error = %db, "could not record the provider failure"),
    }
}

impl Routed {
    pub(super) fn of(candidate: &Candidate) -> Routed {
        Routed {
            provider_slug: candidate.provider.provider_slug.clone(),
            model_id: candidate.model.model_id.clone(),
            max_tokens_clamped_to: candidate
                .output
                .clamped
                .then_some(candidate.output.max_tokens),
        }
    }
}

fn clamp_i32(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Secret-free description of the upstream for logs.
pub(super) fn describe(candidate: &Candidate) -> String {
    format!(
        "{}/{}",
        candidate.provider.provider_slug, candidate.model.model_id
    )
}

/// A failed provider call, for `switchboard_upstream_attempts_total` (a fixed vocabulary).
fn attempt_outcome(error: &ProviderError) -> &'static str {
    match error.upstream_status() {
        Some(429) => "429",
        Some(status) => crate::metrics::status_class(status),
        None if matches!(error, ProviderError::Timeout { .. }) => "timeout",
        None if error.local_failure().is_some() => "local",
        None => "network",
    }
}
