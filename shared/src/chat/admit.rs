//! Before the first upstream call: the candidate plan (no database write) and the
//! admission — rate limits and the credit hold in one round trip.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

use super::attempt::Run;
use super::error::ChatError;
use super::input::RequestOptions;
use super::input::lambda_margin;
use super::services::ChatServices;
use super::settle::{AdmissionItem, Hold};
use super::work::{Route, Work};
use crate::admission::{self, AdmissionError, ProviderLimit};
use crate::auth::Caller;
use crate::ledger;
use crate::routing::{Candidate, RoutingContext, RoutingRequest, plan_candidates};

/// What an entry point hands to [`plan`].
pub(super) struct Input {
    pub caller: Caller,
    pub work: Work,
    pub request_id: String,
    pub options: RequestOptions,
    pub route: Route,
}

/// Estimates the prompt, builds the candidate plan and the run's deadlines.
pub(super) async fn plan(
    services: &ChatServices,
    input: Input,
    started: Instant,
) -> Result<Run, ChatError> {
    let Input {
        caller,
        work,
        request_id,
        options,
        route,
    } = input;
    let power_level = options
        .power_level
        .or(caller.default_power_level)
        .unwrap_or_default();
    let task_type = options.task_type.unwrap_or_default();

    let catalog = services.catalog.get(&services.pool).await?;

    let prompt_tokens = work.estimate_prompt_tokens();

    let mut system_key_slugs = HashSet::new();
    for provider in catalog.providers() {
        if provider.is_system_provider && services.system_keys.has(&provider.provider_slug).await {
            system_key_slugs.insert(provider.provider_slug.clone());
        }
    }
    let has_system_key = |slug: &str| system_key_slugs.contains(slug);
    let routing_request = RoutingRequest {
        user_id: caller.user_id.clone(),
        tier: caller.tier,
        power_level,
        task_type,
        model: work.model().to_string(),
        model_type: work.model_type(),
        capabilities: work.required_capabilities(),
        estimated_prompt_tokens: prompt_tokens,
        requested_output_tokens: work.requested_output_tokens(),
        byok_providers: caller.byok_provider_ids.iter().copied().collect(),
    };
    let context = RoutingContext {
        now: chrono::Utc::now(),
        has_system_key: &has_system_key,
        ceilings: &services.config.routing.ceilings,
    };
    let plan = plan_candidates(&catalog, &routing_request, &context, &mut rand::rng())?;
    let mut candidates: Vec<Candidate> = plan.candidates;
    // Fields the ledger cannot price may go out only on the user's own key.
    if let Some(field) = work.price_raising_fields().first().copied() {
        candidates.retain(|c| c.byok);
        if candidates.is_empty() {
            return Err(ChatError::invalid_param(
                field,
                format!(
                    "`{field}` makes the provider charge more than the catalog's token prices, so it is accepted only on your own provider key (BYOK); remove it to use the platform's key"
                ),
            ));
        }
    }
    candidates.truncate(services.config.chat.max_attempts.max(1));

    // Lambda ends the invocation at its deadline: everything ends, settled, before it.
    let hard_end = options.invocation_deadline.map(|deadline| {
        let left = deadline
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        Instant::now() + left.saturating_sub(lambda_margin(left))
    });
    if let Some(trace) = options.timing.trace() {
        trace.set_root("gen_ai.operation.name", work.operation_name());
        trace.set_root("gen_ai.request.model", work.model());
    }
    let attempts_end = started + services.config.chat.request_timeout;
    let stream_end = started + services.config.chat.max_stream_duration;
    Ok(Run {
        services: services.clone(),
        caller,
        work,
        route,
        request_id,
        ledger_id: uuid::Uuid::new_v4().to_string(),
        power_level,
        task_type,
        candidates,
        prompt_tokens,
        user_agent: options.user_agent,
        started,
        attempts_end: hard_end.map_or(attempts_end, |end| end.min(attempts_end)),
        stream_end: hard_end.map_or(stream_end, |end| end.min(stream_end)),
        timing: options.timing.clone(),
        attempt_span: None,
        attempts: Vec::new(),
        rate_limited: HashSet::new(),
        byok_cooling: None,
    })
}

impl Run {
    /// Admits the request: the key's rate limit, the first candidate's provider limits,
    /// then the hold for the worst case of the candidates that may be tried. A provider at
    /// its limit gives way to the next candidate (one more round trip, only then).
    pub(super) async fn admit(&mut self) -> Result<Hold, ChatError> {
        let key_rpm = self
            .caller
            .rpm_limit
            .unwrap_or_else(|| admission::default_rpm(self.caller.tier));
        if let Some(book) = self.services.ledger.grants().cloned()
            && let Some(hold) = self.admit_granted(book, key_rpm).await?
        {
            return Ok(hold);
        }
        loop {
            let Some(first) = self.candidates.first() else {
                return Err(ChatError::RateLimited {
                    message: "every candidate provider is at its rate limit".into(),
                    retry_after: Duration::from_secs(60),
                });
            };
            let item = AdmissionItem {
                user_id: self.caller.user_id.clone(),
                ledger_id: self.ledger_id.clone(),
                key_id: self.caller.key_id,
                key_rpm,
                provider: Some(provider_limit(first, self.prompt_tokens)),
                hold: self.hold_amount(),
                hold_ttl: self.services.config.ledger.hold_ttl,
            };
            self.note_labels(first);
            let mut span = crate::otel::child(
                self.timing.trace(),
                "admission",
                crate::otel::SpanKind::Internal,
            );
            let waited = Instant::now();
            let admitted = self.services.ledger.admit(item).await;
            self.timing.add_db(waited.elapsed());
            let admitted = admitted.map_err(ChatError::internal)?;
            let outcome = admission_outcome(&admitted);
            crate::metrics::record_admission(outcome);
            if let Some(span) = span.as_mut() {
                span.set("switchboard.admission", outcome);
            }
            drop(span);
            match admitted {
                Ok((_, hold)) => return Ok(hold),
                Err(AdmissionError::KeyRateLimited { retry_after }) => {
                    return Err(ChatError::RateLimited {
                        message: format!(
                            "rate limit of {key_rpm} requests per minute reached for this API key"
                        ),
                        retry_after,
                    });
                }
                Err(AdmissionError::ProviderRateLimited { retry_after }) => {
                    if self.candidates.len() == 1 {
                        return Err(ChatError::RateLimited {
                            message: format!(
                                "the provider `{}` is at its rate limit",
                                self.candidates[0].provider.provider_slug
                            ),
                            retry_after,
                        });
                    }
                    self.candidates.remove(0);
                }
                Err(AdmissionError::Ledger(
                    refused @ (ledger::LedgerError::InsufficientCredits { .. }
                    | ledger::LedgerError::MonthlyCapExceeded { .. }),
                )) => {
                    // Refused while a `serve` instance's grant may sit on the account's
                    // money: recall it and try the hold again (the rate-limit slots are
                    // taken already).
                    let waited = Instant::now();
                    let hold = self.hold_after_recall().await;
                    self.timing.add_db(waited.elapsed());
                    return match hold {
                        Some(hold) => {
                            crate::metrics::record_admission("admitted_after_recall");
                            Ok(hold)
                        }
                        None => Err(refused.into()),
                    };
                }
                Err(AdmissionError::Ledger(error)) => return Err(error.into()),
            }
        }
    }

    /// The per-request hold again after recalling the account's grants, for up to
    /// [`ledger::RECALL_WAIT`] while grants are left to recall (ledger.md, "Quota grants":
    /// no account is refused while another instance sits on its money).
    async fn hold_after_recall(&self) -> Option<Hold> {
        let until = Instant::now() + ledger::RECALL_WAIT;
        let pool = &self.services.pool;
        let user_id = &self.caller.user_id;
        while Instant::now() < until {
            let recalled = {
                let client = pool.get().await.ok()?;
                ledger::recall_grants(&**client, user_id, None).await.ok()?
            };
            if recalled.is_zero() {
                return None;
            }
            tokio::time::sleep(ledger::RECALL_POLL).await;
            let client = pool.get().await.ok()?;
            let held = ledger::authorize(
                &**client,
                user_id,
                &self.ledger_id,
                self.hold_amount(),
                self.services.config.ledger.hold_ttl,
            )
            .await;
            if held.is_ok() {
                return Some(Hold::new(pool.clone(), self.ledger_id.clone()));
            }
        }
        None
    }

    /// Admission against the account's quota grant and this instance's rate-limit shares
    /// (`serve`): in memory, unless a grant or a share must be refilled.
    /// `None`: the account is not busy enough here for a grant (a per-request hold).
    async fn admit_granted(
        &mut self,
        book: std::sync::Arc<ledger::GrantBook>,
        key_rpm: i32,
    ) -> Result<Option<Hold>, ChatError> {
        let waited = Instant::now();
        let outcome = self.admit_granted_inner(&book, key_rpm).await;
        self.timing.add_db(waited.elapsed());
        let label = match &outcome {
            Ok(None) => return outcome,
            Ok(Some(_)) => "admitted",
            Err(ChatError::RateLimited { .. }) => "rate_limited",
            Err(ChatError::Ledger(ledger::LedgerError::InsufficientCredits { .. })) => {
                "insufficient_credits"
            }
            Err(ChatError::Ledger(ledger::LedgerError::MonthlyCapExceeded { .. })) => "monthly_cap",
            Err(_) => "error",
        };
        crate::metrics::record_admission(label);
        outcome
    }

    async fn admit_granted_inner(
        &mut self,
        book: &std::sync::Arc<ledger::GrantBook>,
        key_rpm: i32,
    ) -> Result<Option<Hold>, ChatError> {
        let Some(ticket) = book.admit(&self.caller.user_id, self.hold_amount()).await? else {
            return Ok(None);
        };
        let key_bucket = admission::key_bucket(self.caller.key_id);
        if let Err(reached) = book.take_slot(&key_bucket, Some(key_rpm), None, 0).await {
            book.release(&ticket);
            return Err(ChatError::RateLimited {
                message: format!(
                    "rate limit of {key_rpm} requests per minute reached for this API key"
                ),
                retry_after: reached.retry_after,
            });
        }
        loop {
            let Some(first) = self.candidates.first() else {
                book.release(&ticket);
                return Err(ChatError::RateLimited {
                    message: "every candidate provider is at its rate limit".into(),
                    retry_after: Duration::from_secs(60),
                });
            };
            self.note_labels(first);
            let limit = provider_limit(first, self.prompt_tokens);
            let Some(bucket) = limit.bucket() else {
                break;
            };
            let taken = book
                .take_slot(&bucket, limit.rpm, limit.tpm.map(i64::from), limit.tokens)
                .await;
            match taken {
                Ok(()) => break,
                Err(reached) if self.candidates.len() == 1 => {
                    book.release(&ticket);
                    return Err(ChatError::RateLimited {
                        message: format!(
                            "the provider `{}` is at its rate limit",
                            first.provider.provider_slug
                        ),
                        retry_after: reached.retry_after,
                    });
                }
                Err(_) => {
                    self.candidates.remove(0);
                }
            }
        }
        Ok(Some(Hold::granted(
            self.services.pool.clone(),
            self.ledger_id.clone(),
            std::sync::Arc::clone(book),
            ticket,
        )))
    }

    /// The hold (ledger.md): the worst case over the candidates that may be tried — the
    /// provider cost for platform-key candidates, the platform fee for BYOK ones.
    fn hold_amount(&self) -> Decimal {
        let cache_writes = self.work.cache_writes();
        let prompt = self.work.prompt_bounds(self.prompt_tokens);
        let offers = self.candidates.iter().map(|c| ledger::HoldOffer {
            prices: ledger::TokenPrices::of(&c.model),
            prompt_tokens: prompt.for_candidate(c),
            max_output_tokens: u64::from(c.output.max_tokens),
            byok: c.byok,
            // The breakpoints the gateway adds are 5-minute ones.
            cache_writes: if self.adds_cache_control(c) {
                cache_writes.max(ledger::CacheWrites::FiveMinutes)
            } else {
                cache_writes
            },
        });
        ledger::hold_amount(offers, self.services.config.chat.byok_fee_percent)
    }

    /// A fallback candidate takes a slot of its own provider's limits (one more round trip,
    /// on the fallback path only). `false`: that provider is at its limit, skip it.
    pub(super) async fn fallback_admitted(&self, candidate: &Candidate) -> bool {
        if candidate.provider.rate_limit_rpm.is_none()
            && candidate.provider.rate_limit_tpm.is_none()
        {
            return true;
        }
        let limit = provider_limit(candidate, self.prompt_tokens);
        if let (Some(book), Some(bucket)) = (self.services.ledger.grants(), limit.bucket()) {
            return book
                .take_slot(&bucket, limit.rpm, limit.tpm.map(i64::from), limit.tokens)
                .await
                .is_ok();
        }
        match self.services.pool.get().await {
            Ok(client) => match admission::take_provider_slot(&**client, &limit).await {
                Ok(None) => true,
                Ok(Some(_)) => false,
                Err(error) => {
                    tracing::warn!(%error, "could not check a fallback provider's rate limit");
                    true
                }
            },
            Err(_) => true,
        }
    }
}

fn provider_limit(candidate: &Candidate, prompt_tokens: u32) -> ProviderLimit {
    ProviderLimit {
        provider_id: candidate.provider.id,
        rpm: candidate.provider.rate_limit_rpm,
        tpm: candidate.provider.rate_limit_tpm,
        tokens: i64::from(prompt_tokens) + i64::from(candidate.output.max_tokens),
    }
}

/// An admission's verdict, for `switchboard_ledger_admissions_total` (a fixed vocabulary).
fn admission_outcome(admitted: &super::settle::Admitted) -> &'static str {
    match admitted {
        Ok(_) => "admitted",
        Err(AdmissionError::KeyRateLimited { .. }) => "key_rate_limited",
        Err(AdmissionError::ProviderRateLimited { .. }) => "provider_rate_limited",
        Err(AdmissionError::Ledger(error)) => match error {
            ledger::LedgerError::InsufficientCredits { .. } => "insufficient_credits",
            ledger::LedgerError::MonthlyCapExceeded { .. } => "monthly_cap",
            ledger::LedgerError::AccountDisabled | ledger::LedgerError::NoAccount => {
                "account_disabled"
            }
            _ => "error",
        },
    }
}
