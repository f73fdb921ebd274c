//! One chat request from plan to settlement (design README, steps 3–8): build the candidate
//! plan, admit the request (rate limits + credit hold, one round trip), call candidates in
//! order within one deadline, then capture the cost (or release the hold) together with one
//! usage row per attempt — always before the response is finished.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchboard_core::admission::{self, AdmissionError, AdmissionRequest, ProviderLimit};
use switchboard_core::auth::Caller;
use switchboard_core::catalog::{AuthType, PowerLevel, TaskType};
use switchboard_core::db::group::GroupCommit;
use switchboard_core::db::{DbError, DbPool};
use switchboard_core::http::ApiError;
use switchboard_core::keys::byok;
use switchboard_core::ledger::Authorization;
use switchboard_core::ledger::{
    self, Capture, CaptureKind, LedgerError, TokenBuckets, TokenPrices, UsageLogRow,
};
use switchboard_core::providers::{ChatRequest, ProviderError, UpstreamTarget, Usage};
use switchboard_core::routing::{
    Candidate, RoutingContext, RoutingError, RoutingRequest, plan_candidates,
};
use switchboard_core::state::AppState;
use switchboard_core::{breaker, tokens};

// Group commit (`GroupCommit`): one batch statement carries at most
// `SWITCHBOARD_LEDGER_MAX_BATCH` requests (default 64; 1 turns grouping off). How many
// batches of admissions, and separately of captures, a process has in PostgreSQL at once is
// `SWITCHBOARD_LEDGER_BATCHES` (default 2: at concurrency 32 on the 2-core benchmark
// machine, 1, 2, 3 and 4 in flight served 3,069, 2,678, 2,359 and 2,024 requests/s; more in
// flight batch less, and one slow commit would hold up every admission of the process).
// Every request of an account (and of a key, and of a provider) writes the same few rows;
// PostgreSQL serialises those writes, and each waiter queued inside it costs lock-manager
// work. Measured with `scripts/bench` before group commit (one hot account, concurrency 32,
// 2 cores): with all 16 pooled connections in play PostgreSQL burnt 2.9 ms of CPU per
// request for 540 requests/s; with 3 of each in flight, 1.0 ms for 1,100–1,250 requests/s.
// Requests beyond them wait in the queue, holding no connection, and go together in the
// next batch.

/// An admission waiting for its batch (owned: the batch runs in its own task).
struct AdmissionItem {
    user_id: String,
    request_id: String,
    key_id: uuid::Uuid,
    key_rpm: i32,
    provider: Option<ProviderLimit>,
    hold: Decimal,
    hold_ttl: Duration,
}

impl AdmissionItem {
    fn as_request(&self) -> AdmissionRequest<'_> {
        AdmissionRequest {
            user_id: &self.user_id,
            request_id: &self.request_id,
            key_id: self.key_id,
            key_rpm: self.key_rpm,
            provider: self.provider,
            hold: self.hold,
            hold_ttl: self.hold_ttl,
        }
    }
}

/// A capture waiting for its batch.
struct CaptureItem {
    request_id: String,
    user_id: String,
    amount: Decimal,
    kind: CaptureKind,
    usage_logs: Vec<UsageLogRow>,
    billing_properties: Value,
}

impl CaptureItem {
    fn as_capture(&self) -> Capture<'_> {
        Capture {
            request_id: &self.request_id,
            user_id: &self.user_id,
            amount: self.amount,
            kind: self.kind,
            usage_logs: &self.usage_logs,
            billing_properties: self.billing_properties.clone(),
        }
    }
}

type Admitted = Result<Authorization, AdmissionError>;
type Captured = Result<ledger::Captured, LedgerError>;

struct LedgerQueues {
    admissions: GroupCommit<AdmissionItem, Admitted>,
    captures: GroupCommit<CaptureItem, Captured>,
}

fn ledger_queues(state: &AppState) -> &'static LedgerQueues {
    static QUEUES: std::sync::OnceLock<LedgerQueues> = std::sync::OnceLock::new();
    QUEUES.get_or_init(|| LedgerQueues {
        admissions: GroupCommit::new(state.config.ledger_batches, state.config.ledger_max_batch),
        captures: GroupCommit::new(state.config.ledger_batches, state.config.ledger_max_batch),
    })
}

/// Admits a batch: one statement, or, if that statement fails, one request at a time (so
/// one bad request never fails the others).
async fn admit_batch(pool: DbPool, items: Vec<AdmissionItem>) -> Vec<Admitted> {
    let client = match pool.get().await {
        Ok(client) => client,
        Err(error) => {
            return items
                .iter()
                .map(|_| Err(LedgerError::Db(DbError::from_pool_ref(&error)).into()))
                .collect();
        }
    };
    let requests: Vec<AdmissionRequest<'_>> = items.iter().map(AdmissionItem::as_request).collect();
    match admission::admit_many(&*client, &requests).await {
        Ok(outcomes) => outcomes,
        Err(error) if requests.len() > 1 => {
            tracing::warn!(error = %error, size = requests.len(), "admission batch failed; admitting one by one");
            let mut outcomes = Vec::with_capacity(requests.len());
            for request in &requests {
                outcomes.push(admission::admit(&*client, request).await);
            }
            outcomes
        }
        Err(error) => vec![Err(error.into())],
    }
}

/// Captures a batch: one statement, or, if that statement fails, one capture at a time.
async fn capture_batch(pool: DbPool, items: Vec<CaptureItem>) -> Vec<Captured> {
    let client = match pool.get().await {
        Ok(client) => client,
        Err(error) => {
            return items
                .iter()
                .map(|_| Err(LedgerError::Db(DbError::from_pool_ref(&error))))
                .collect();
        }
    };
    let captures: Vec<Capture<'_>> = items.iter().map(CaptureItem::as_capture).collect();
    match ledger::capture_many(&*client, &captures).await {
        Ok(outcomes) => outcomes,
        Err(error) if captures.len() > 1 => {
            tracing::warn!(error = %error, size = captures.len(), "capture batch failed; capturing one by one");
            let mut outcomes = Vec::with_capacity(captures.len());
            for capture in &captures {
                outcomes.push(ledger::capture(&*client, capture).await);
            }
            outcomes
        }
        Err(error) => vec![Err(error.into())],
    }
}

/// Everything decided before the first upstream call.
pub struct Prepared {
    pub state: AppState,
    pub caller: Caller,
    pub request: ChatRequest,
    /// The `x-request-id` of this request: usage rows and `_metadata` carry it.
    pub request_id: String,
    /// The ledger's own id for the hold, the capture and the billing event: unique per
    /// request even when a client reuses an `x-request-id`.
    pub ledger_id: String,
    pub power_level: PowerLevel,
    pub task_type: TaskType,
    pub candidates: Vec<Candidate>,
    pub prompt_tokens: u32,
    pub started: Instant,
    pub user_agent: Option<String>,
    /// Attempts made so far (failed ones; the successful one is added at settlement).
    pub attempts: Vec<UsageLogRow>,
    /// Providers that answered 429 in this request: never retried within it.
    pub rate_limited_providers: HashSet<i32>,
}

fn header_enum<T: std::str::FromStr<Err = switchboard_core::catalog::UnknownValue>>(
    headers: &HeaderMap,
    name: &'static str,
) -> Result<Option<T>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::invalid_param(name, format!("{name} is not valid text")))?;
    text.trim().to_ascii_lowercase().parse().map(Some).map_err(
        |e: switchboard_core::catalog::UnknownValue| {
            ApiError::invalid_param(name, format!("{name}: {e}"))
        },
    )
}

impl From<RoutingErrorAnswer> for ApiError {
    fn from(RoutingErrorAnswer(error): RoutingErrorAnswer) -> Self {
        match error.http_status() {
            404 => ApiError::ModelNotFound(error.to_string()),
            403 => ApiError::Permission(error.to_string()),
            _ => ApiError::NoAvailableProvider(error.to_string()),
        }
    }
}

/// Routing errors answered in api.md's statuses (404 / 403 / 503).
pub struct RoutingErrorAnswer(pub RoutingError);

pub fn ledger_error(error: LedgerError) -> ApiError {
    match error {
        LedgerError::InsufficientCredits { .. } => ApiError::InsufficientCredits(error.to_string()),
        LedgerError::MonthlyCapExceeded { .. } => ApiError::MonthlyCapExceeded(error.to_string()),
        LedgerError::AccountDisabled => ApiError::Authentication("this account is disabled".into()),
        LedgerError::NoAccount => {
            ApiError::InsufficientCredits("this account has no credits".into())
        }
        LedgerError::InvalidAmount(_)
        | LedgerError::RequestIdReused(_)
        | LedgerError::IdempotencyKeyReused(_) => ApiError::internal(error),
        LedgerError::Db(db) => ApiError::from(db),
    }
}

/// Plans the request and admits it (rate limits and the hold). On success a hold exists
/// and the caller must end in [`settle_success`] or [`settle_failure`].
pub async fn prepare(
    state: AppState,
    caller: Caller,
    request: ChatRequest,
    request_id: String,
    headers: &HeaderMap,
) -> Result<Prepared, ApiError> {
    let started = Instant::now();
    let power_level = header_enum::<PowerLevel>(headers, "x-power-level")?
        .or(caller.default_power_level)
        .unwrap_or_default();
    let task_type = header_enum::<TaskType>(headers, "x-task-type")?.unwrap_or_default();
    let user_agent = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(200).collect());

    let catalog = state
        .catalog
        .get(&state.pool)
        .await
        .map_err(ApiError::internal)?;

    // The tokenizer follows the requested model's family; `auto` (or any non-OpenAI model)
    // gets the conservative heuristic. Tool definitions count too.
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| serde_json::to_value(m).unwrap_or(Value::Null))
        .collect();
    let mut prompt_tokens = tokens::estimate_prompt_tokens(&request.model, &messages);
    if let Some(tools) = &request.tools
        && let Ok(json) = serde_json::to_string(tools)
    {
        prompt_tokens =
            prompt_tokens.saturating_add(tokens::estimate_text_tokens(&request.model, &json));
    }

    let mut system_key_slugs = HashSet::new();
    for provider in catalog.providers() {
        if provider.is_system_provider && state.system_keys.has(&provider.provider_slug).await {
            system_key_slugs.insert(provider.provider_slug.clone());
        }
    }
    let has_system_key = |slug: &str| system_key_slugs.contains(slug);
    let routing_request = RoutingRequest {
        user_id: caller.user_id.clone(),
        tier: caller.tier,
        power_level,
        task_type,
        model: request.model.clone(),
        capabilities: request.required_capabilities(),
        estimated_prompt_tokens: prompt_tokens,
        requested_output_tokens: request.requested_output_tokens(),
        byok_providers: caller.byok_provider_ids.iter().copied().collect(),
    };
    let context = RoutingContext {
        now: chrono::Utc::now(),
        has_system_key: &has_system_key,
        ceilings: &state.config.ceilings,
    };
    let plan = plan_candidates(&catalog, &routing_request, &context, &mut rand::rng())
        .map_err(|e| ApiError::from(RoutingErrorAnswer(e)))?;
    let mut candidates: Vec<Candidate> = plan.candidates;
    candidates.truncate(state.config.max_attempts.max(1));

    let ledger_id = uuid::Uuid::new_v4().to_string();
    let requested_output = request.requested_output_tokens();
    let key_rpm = caller
        .rpm_limit
        .unwrap_or_else(|| admission::default_rpm(caller.tier));

    // The first candidate's provider limits are checked with the hold; a provider at its
    // limit gives way to the next candidate (one more round trip, only then).
    loop {
        let Some(first) = candidates.first() else {
            return Err(ApiError::RateLimited {
                message: "every candidate provider is at its rate limit".into(),
                retry_after: Duration::from_secs(60),
            });
        };
        let hold = hold_amount(&state, &candidates, prompt_tokens, requested_output);
        let provider_limit = provider_limit(first, prompt_tokens, requested_output);
        let item = AdmissionItem {
            user_id: caller.user_id.clone(),
            request_id: ledger_id.clone(),
            key_id: caller.key_id,
            key_rpm,
            provider: Some(provider_limit),
            hold,
            hold_ttl: state.config.hold_ttl,
        };
        let admitted = ledger_queues(&state)
            .admissions
            .submit(item, |batch| admit_batch(state.pool.clone(), batch))
            .await
            .map_err(ApiError::internal)?;
        match admitted {
            Ok(_) => break,
            Err(AdmissionError::KeyRateLimited { retry_after }) => {
                return Err(ApiError::RateLimited {
                    message: format!(
                        "rate limit of {key_rpm} requests per minute reached for this API key"
                    ),
                    retry_after,
                });
            }
            Err(AdmissionError::ProviderRateLimited { retry_after }) => {
                if candidates.len() == 1 {
                    return Err(ApiError::RateLimited {
                        message: format!(
                            "the provider `{}` is at its rate limit",
                            candidates[0].provider.provider_slug
                        ),
                        retry_after,
                    });
                }
                candidates.remove(0);
            }
            Err(AdmissionError::Ledger(error)) => return Err(ledger_error(error)),
        }
    }

    Ok(Prepared {
        state,
        caller,
        request,
        request_id,
        ledger_id,
        power_level,
        task_type,
        candidates,
        prompt_tokens,
        started,
        user_agent,
        attempts: Vec::new(),
        rate_limited_providers: HashSet::new(),
    })
}

fn provider_limit(
    candidate: &Candidate,
    prompt_tokens: u32,
    requested_output: Option<u32>,
) -> ProviderLimit {
    ProviderLimit {
        provider_id: candidate.provider.id,
        rpm: candidate.provider.rate_limit_rpm,
        tpm: candidate.provider.rate_limit_tpm,
        tokens: i64::from(prompt_tokens)
            + i64::from(candidate.output_token_limit(requested_output)),
    }
}

/// The hold (ledger.md): the worst case over the candidates that may be tried — the
/// provider cost for platform-key candidates, the platform fee for BYOK ones.
fn hold_amount(
    state: &AppState,
    candidates: &[Candidate],
    prompt_tokens: u32,
    requested_output: Option<u32>,
) -> Decimal {
    candidates
        .iter()
        .map(|c| {
            let cost = c.max_cost(prompt_tokens, requested_output);
            if c.byok {
                ledger::byok_fee(cost, state.config.byok_fee_percent)
            } else {
                cost
            }
        })
        .max()
        .unwrap_or(Decimal::ZERO)
}

/// The credential and upstream address for one candidate. `Ok(None)`: no usable credential
/// any more (the BYOK key was removed or deactivated since the plan): skip the candidate.
pub async fn upstream_target(
    prepared: &Prepared,
    candidate: &Candidate,
) -> Result<Option<(UpstreamTarget, Option<i32>)>, ApiError> {
    let state = &prepared.state;
    let (api_key, user_key_id) = if candidate.byok {
        let client = state
            .pool
            .get()
            .await
            .map_err(switchboard_core::db::DbError::from)?;
        match byok::byok_key_for_use(
            &**client,
            &state.vault,
            &prepared.caller.user_id,
            candidate.provider.id,
        )
        .await
        {
            Ok(Some((key_id, key))) => (Some(key), Some(key_id)),
            Ok(None) => return Ok(None),
            Err(error) => {
                tracing::warn!(provider = %candidate.provider.provider_slug, %error, "BYOK key unusable; skipping candidate");
                return Ok(None);
            }
        }
    } else if candidate.provider.auth_type == AuthType::None {
        (None, None)
    } else {
        match state
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
            default_max_tokens: candidate
                .model
                .max_tokens
                .and_then(|m| u32::try_from(m).ok()),
        },
        user_key_id,
    )))
}

/// What one finished (or cut) call used and cost.
pub struct Settlement {
    pub usage: Usage,
    pub provider_cost: ledger::Cost,
    pub charged: Decimal,
}

pub fn price(prepared: &Prepared, candidate: &Candidate, usage: &Usage) -> Settlement {
    let buckets = TokenBuckets {
        uncached_input: usage.uncached_input_tokens + usage.cache_write_input_tokens,
        cached_input: usage.cached_input_tokens,
        output: usage.output_tokens,
    };
    let prices = TokenPrices {
        input_per_1m: candidate.model.cost_per_1m_input_tokens,
        output_per_1m: candidate.model.cost_per_1m_output_tokens,
        cached_input_per_1m: candidate.model.cost_per_1m_tokens_cached,
    };
    let provider_cost = ledger::cost_of(buckets, &prices);
    let charged = if candidate.byok {
        ledger::byok_fee(
            provider_cost.total_usd,
            prepared.state.config.byok_fee_percent,
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

fn clamp_i32(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The usage row of one attempt.
pub fn attempt_row(
    prepared: &Prepared,
    candidate: &Candidate,
    user_key_id: Option<i32>,
    latency: Duration,
    status_code: Option<u16>,
    outcome: Result<&Settlement, &str>,
) -> UsageLogRow {
    let attempt = prepared.attempts.len() + 1;
    let mut row = UsageLogRow {
        user_id: prepared.caller.user_id.clone(),
        request_id: prepared.request_id.clone(),
        attempt: i16::try_from(attempt).unwrap_or(i16::MAX),
        provider_id: Some(candidate.provider.id),
        model_id: Some(candidate.model.id),
        user_key_id,
        provider_slug: Some(candidate.provider.provider_slug.clone()),
        model_name: Some(candidate.model.model_id.clone()),
        power_level: Some(prepared.power_level.to_string()),
        task_type: Some(prepared.task_type.to_string()),
        used_byok: candidate.byok,
        stream: prepared.request.is_stream(),
        latency_ms: Some(i32::try_from(latency.as_millis()).unwrap_or(i32::MAX)),
        status_code: status_code.map(i32::from),
        was_fallback: attempt > 1,
        fallback_reason: prepared
            .attempts
            .last()
            .and_then(|a| a.error_message.clone()),
        user_agent: prepared.user_agent.clone(),
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
            let secs = latency.as_secs_f64();
            if secs > 0.0 && usage.output_tokens > 0 {
                row.tokens_per_second = Decimal::from_f64_retain(usage.output_tokens as f64 / secs)
                    .map(|d| d.round_dp(3));
            }
        }
        Err(message) => row.error_message = Some(message.chars().take(500).collect()),
    }
    row
}

/// Records a failed attempt: its usage row, the shared breaker, and a refused BYOK key.
pub async fn record_failure(
    prepared: &mut Prepared,
    candidate: &Candidate,
    user_key_id: Option<i32>,
    latency: Duration,
    error: &ProviderError,
) {
    let message = error.to_string();
    let row = attempt_row(
        prepared,
        candidate,
        user_key_id,
        latency,
        error.upstream_status(),
        Err(&message),
    );
    prepared.attempts.push(row);
    if error.upstream_status() == Some(429) {
        prepared
            .rate_limited_providers
            .insert(candidate.provider.id);
    }
    let state = prepared.state.clone();
    let Ok(client) = state.pool.get().await else {
        return;
    };
    if error.is_provider_failure() {
        match breaker::record_failure(
            &**client,
            candidate.provider.id,
            error.retry_after(),
            &state.config.breaker,
        )
        .await
        {
            Ok(true) => {
                tracing::warn!(provider = %candidate.provider.provider_slug, "circuit breaker open");
                state.catalog.invalidate();
            }
            Ok(false) => {}
            Err(db) => tracing::warn!(error = %db, "could not record the provider failure"),
        }
    }
    if error.is_auth_failure()
        && let (true, Some(key_id)) = (candidate.byok, user_key_id)
    {
        let status = error.upstream_status().unwrap_or(401);
        if let Err(e) =
            byok::mark_byok_key_invalid(&**client, &prepared.caller.user_id, key_id, status).await
        {
            tracing::warn!(error = %e, "could not mark the BYOK key invalid");
        }
        state.key_cache.clear();
    }
}

/// Captures the cost of the successful attempt with every attempt's usage row and the
/// billing event, in one transaction. Returns the balance after it.
pub async fn settle_success(
    prepared: &mut Prepared,
    candidate: &Candidate,
    user_key_id: Option<i32>,
    latency: Duration,
    settlement: &Settlement,
) -> Result<Decimal, ApiError> {
    settle_success_with_note(prepared, candidate, user_key_id, latency, settlement, None).await
}

/// [`settle_success`] for a stream that ended badly after it began (cut upstream, client
/// gone): the tokens produced are charged and the row says what happened.
pub async fn settle_success_with_note(
    prepared: &mut Prepared,
    candidate: &Candidate,
    user_key_id: Option<i32>,
    latency: Duration,
    settlement: &Settlement,
    note: Option<&str>,
) -> Result<Decimal, ApiError> {
    let mut row = attempt_row(
        prepared,
        candidate,
        user_key_id,
        latency,
        Some(200),
        Ok(settlement),
    );
    row.error_message = note.map(|n| n.chars().take(500).collect());
    prepared.attempts.push(row);
    let state = prepared.state.clone();
    let item = CaptureItem {
        request_id: prepared.ledger_id.clone(),
        user_id: prepared.caller.user_id.clone(),
        amount: settlement.charged,
        kind: if candidate.byok {
            CaptureKind::ByokFee
        } else {
            CaptureKind::Usage
        },
        usage_logs: prepared.attempts.clone(),
        billing_properties: json!({
            "request_id": prepared.request_id,
            "model": candidate.model.model_id,
            "provider": candidate.provider.provider_slug,
            "byok": candidate.byok,
            "prompt_tokens": settlement.usage.input_tokens(),
            "cached_tokens": settlement.usage.cached_input_tokens,
            "completion_tokens": settlement.usage.output_tokens,
            "provider_cost_usd": settlement.provider_cost.total_usd.to_string(),
            "charged_usd": settlement.charged.to_string(),
        }),
    };
    let captured = ledger_queues(&state)
        .captures
        .submit(item, |batch| capture_batch(state.pool.clone(), batch))
        .await
        .map_err(ApiError::internal)?
        .map_err(ledger_error)?;
    // Rare paths, off the common one: close a breaker that had failures, count BYOK use.
    let close_breaker = candidate.provider.breaker_consecutive_failures > 0
        || candidate.provider.breaker_open_until.is_some();
    if !close_breaker && user_key_id.is_none() {
        return Ok(captured.balance);
    }
    let client = state
        .pool
        .get()
        .await
        .map_err(switchboard_core::db::DbError::from)?;
    if close_breaker {
        if let Err(e) = breaker::record_success(&**client, candidate.provider.id).await {
            tracing::warn!(error = %e, "could not close the circuit breaker");
        }
        state.catalog.invalidate();
    }
    if let Some(key_id) = user_key_id {
        let tokens = i64::try_from(settlement.usage.total_tokens()).unwrap_or(i64::MAX);
        if let Err(e) = byok::record_byok_usage(
            &**client,
            &prepared.caller.user_id,
            key_id,
            tokens,
            settlement.provider_cost.total_usd,
        )
        .await
        {
            tracing::warn!(error = %e, "could not update the BYOK key's usage counters");
        }
    }
    Ok(captured.balance)
}

/// Releases the hold (every failure path), writing the failed attempts' usage rows.
pub async fn settle_failure(prepared: &Prepared) {
    let result = async {
        let client = prepared
            .state
            .pool
            .get()
            .await
            .map_err(switchboard_core::db::DbError::from)?;
        ledger::release(&**client, &prepared.ledger_id, &prepared.attempts)
            .await
            .map_err(ledger_error)
    }
    .await;
    if let Err(error) = result {
        // The hold expires on its own (SWITCHBOARD_HOLD_TTL_SECS); nothing is charged.
        tracing::error!(error = %error, ledger_id = %prepared.ledger_id, "could not release the hold");
    }
}

/// `_metadata` of a successful answer (design README step 8).
pub fn metadata(
    prepared: &Prepared,
    candidate: &Candidate,
    settlement: &Settlement,
    balance: Decimal,
) -> Value {
    json!({
        "provider_used": candidate.provider.provider_slug,
        "model_used": candidate.model.model_id,
        "cost_usd": settlement.charged.normalize().to_string(),
        "provider_cost_usd": settlement.provider_cost.total_usd.normalize().to_string(),
        "credits_remaining": balance.normalize().to_string(),
        "power_level": prepared.power_level,
        "task_type": prepared.task_type,
        "user_tier": prepared.caller.tier,
        "byok": candidate.byok,
        "attempts": prepared.attempts.len(),
        "request_id": prepared.request_id,
    })
}

/// The error that ends a request after every candidate failed.
pub fn exhausted_error(last: Option<ProviderError>, deadline_passed: bool) -> ApiError {
    if deadline_passed {
        return ApiError::UpstreamTimeout(
            "the request deadline passed before any provider answered".into(),
        );
    }
    match last {
        Some(error @ ProviderError::Timeout { .. }) => {
            ApiError::UpstreamTimeout(format!("every candidate failed; last: {error}"))
        }
        Some(error) => match error.upstream_status() {
            Some(status) => ApiError::Upstream(format!(
                "every candidate failed; the last upstream answered HTTP {status}"
            )),
            None => ApiError::Upstream(format!("every candidate failed; last: {error}")),
        },
        None => ApiError::NoAvailableProvider("no candidate had a usable credential".into()),
    }
}

/// Whether a failed attempt ends the request (not retryable: 400/404/422 from upstream).
pub fn is_final(error: &ProviderError) -> bool {
    !error.retryable()
}

/// Secret-free description of the upstream for logs.
pub fn describe(candidate: &Candidate) -> String {
    format!(
        "{}/{}",
        candidate.provider.provider_slug, candidate.model.model_id
    )
}
