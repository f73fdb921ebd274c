//! [`plan_candidates`]: from a request and a catalog snapshot to the ordered list of
//! (provider, model) candidates the chat function tries, or the reason there is none.
//!
//! 1. Source: `auto` → the active rules matching power level, tier (NULL = any) and task
//!    type (NULL = any); a name → first every offer whose `model_id` equals it (ids may
//!    contain `/`), else `provider_slug/model_id` split at the first `/`; else 404. Only
//!    models of the route's `model_type` are kept (a name that exists only as the other
//!    kind is a 400).
//! 2. Filters, in this order (the one that removes the last candidate is reported):
//!    deprecation (a deprecated model is swapped for its `replacement_model_id`, followed
//!    through up to [`MAX_REPLACEMENT_HOPS`] hops; none → removed), tier (403), model
//!    disabled, provider disabled, provider `down`, capabilities, context window (the
//!    prompt alone must fit; when it fits nowhere the request is a 400
//!    `context_length_exceeded`), rule token bounds, power-level cost
//!    ceiling (`auto` only, see [`super::ceilings`]), `requires_byok`, credential (BYOK key
//!    for a BYOK-capable provider, else a system key for a system provider, else
//!    `auth_type = none`), and circuit breaker (providers in cooldown are dropped unless
//!    every candidate is in cooldown, then all are kept).
//!    `auto` then applies the power level's latency ceiling to measured models (never
//!    removing the last candidate: the fastest stays).
//!    Each candidate's output is its [`OutputBudget`]: the requested `max_tokens` clamped
//!    to the model's output limit and to what the context window leaves after the prompt
//!    (api.md: clients send large defaults; a client-side limit is never a 503).
//! 3. Order: offers whose output limit fits the requested `max_tokens` before those that
//!    would clamp it, then non-fallback candidates by priority (rule `priority`; for named models the
//!    model's `power_level_priority`), cache-capable first inside a priority when the power
//!    level prefers cached prompts, then BYOK-backed first, then a weighted
//!    random draw by the rule's `weight` (named offers weigh the same); then fallback rules
//!    by `fallback_order` (same tie-breaks). Duplicates (same provider and model) keep their
//!    first place.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use rand::Rng;

use super::ceilings::blended_cost_per_1m;
use super::error::{RoutingError, RoutingFilter};
use super::request::{RoutingContext, RoutingRequest};
use super::weighted::weighted_order;
use crate::catalog::{
    ApiFormat, AuthType, Catalog, HealthStatus, Model, ModelType, Provider, RoutingRule, Tier,
};

/// How many `replacement_model_id` links a deprecated model is followed through.
pub const MAX_REPLACEMENT_HOPS: usize = 4;

pub use crate::catalog::DEFAULT_OUTPUT_TOKENS;

/// Weight of each offer of a model requested by name (offers share load equally).
const NAMED_OFFER_WEIGHT: i32 = 1;

/// One (provider, model) pair the chat function may call, with everything it needs to
/// call it without querying again.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub provider: Arc<Provider>,
    pub model: Arc<Model>,
    /// The rule that selected it (`auto` only).
    pub rule_id: Option<i32>,
    pub is_fallback: bool,
    /// Call with the user's own key (else the system key, or no key for `auth_type = none`).
    pub byok: bool,
    /// The deprecated model this candidate stands in for.
    pub was_replacement_for: Option<Arc<Model>>,
    /// The provider's breaker is open; kept only because every candidate is in cooldown.
    pub in_cooldown: bool,
    /// The most output this call may produce (the hold's output side).
    pub output: OutputBudget,
}

/// The output tokens one call may produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputBudget {
    /// The request's `max_tokens` (or `max_completion_tokens`), at most the model's output
    /// limit (`max_tokens` in the catalog, else [`DEFAULT_OUTPUT_TOKENS`]) and what the
    /// context window leaves after the prompt; without one, those limits.
    pub max_tokens: u32,
    /// The request asked for more than `max_tokens` (`_metadata.max_tokens_clamped_to`).
    pub clamped: bool,
}

impl OutputBudget {
    pub fn of(model: &Model, prompt_tokens: u32, requested: Option<u32>) -> OutputBudget {
        let mut limit = model
            .max_tokens
            .and_then(|max| u32::try_from(max).ok())
            .filter(|max| *max > 0)
            .unwrap_or(DEFAULT_OUTPUT_TOKENS);
        if let Ok(window) = u32::try_from(model.context_window)
            && window > 0
        {
            limit = limit.min(window.saturating_sub(prompt_tokens).max(1));
        }
        match requested {
            Some(requested) if requested > limit => OutputBudget {
                max_tokens: limit,
                clamped: true,
            },
            Some(requested) => OutputBudget {
                max_tokens: requested,
                clamped: false,
            },
            None => OutputBudget {
                max_tokens: limit,
                clamped: false,
            },
        }
    }
}

/// The ordered candidates of one request; never empty when returned by
/// [`plan_candidates`].
#[derive(Debug, Clone, PartialEq)]
pub struct CandidatePlan {
    pub candidates: Vec<Candidate>,
}

/// A candidate while it goes through the filters.
#[derive(Debug, Clone)]
struct Draft {
    provider: Arc<Provider>,
    model: Arc<Model>,
    rule: Option<Arc<RoutingRule>>,
    was_replacement_for: Option<Arc<Model>>,
    byok: bool,
    in_cooldown: bool,
}

/// Builds the candidate plan for `request` from `catalog` (see the module docs for the
/// rules). `rng` decides the weighted draw; pass a seeded one in tests.
pub fn plan_candidates<R: Rng + ?Sized>(
    catalog: &Catalog,
    request: &RoutingRequest,
    context: &RoutingContext<'_>,
    rng: &mut R,
) -> Result<CandidatePlan, RoutingError> {
    // The model name is the caller's text: keep error messages bounded.
    let model: String = request.model.chars().take(200).collect();
    let target = if request.is_auto() {
        format!("`auto` (power level {})", request.power_level)
    } else {
        format!("model `{model}`")
    };
    let drafts = source_candidates(catalog, request, &target)?;
    let mut filtering = Filtering {
        drafts,
        target,
        request,
        debug: tracing::enabled!(tracing::Level::DEBUG),
    };
    filtering.apply_filters(catalog, context)?;
    let prefer_cached = context.ceilings.prefers_cached(request.power_level);
    let prompt = request.estimated_prompt_tokens;
    Ok(CandidatePlan {
        candidates: order(
            filtering.drafts,
            rng,
            |d| prefer_cached && can_serve_from_cache(&d.model, &d.provider, prompt),
            |d| OutputBudget::of(&d.model, prompt, request.requested_output_tokens),
        ),
    })
}

fn source_candidates(
    catalog: &Catalog,
    request: &RoutingRequest,
    target: &str,
) -> Result<Vec<Draft>, RoutingError> {
    let draft = |model: &Arc<Model>, rule: Option<&Arc<RoutingRule>>| {
        catalog.provider(model.provider_id).map(|provider| Draft {
            provider: Arc::clone(provider),
            model: Arc::clone(model),
            rule: rule.cloned(),
            was_replacement_for: None,
            byok: false,
            in_cooldown: false,
        })
    };
    if request.is_auto() {
        let drafts: Vec<Draft> = catalog
            .rules_for(request.power_level)
            .filter(|rule| rule.matches(request.power_level, request.tier, request.task_type))
            .filter_map(|rule| draft(catalog.model(rule.model_id)?, Some(rule)))
            .filter(|d| d.model.model_type == request.model_type)
            .collect();
        if drafts.is_empty() {
            return Err(RoutingError::NoAvailableProvider {
                target: target.to_string(),
                filter: RoutingFilter::RuleMatch,
                detail: format!(
                    "no active routing rule for {} models at power level {}, tier {}, task type {}",
                    request.model_type, request.power_level, request.tier, request.task_type
                ),
            });
        }
        return Ok(drafts);
    }

    let mut drafts: Vec<Draft> = catalog
        .offers(&request.model)
        .filter_map(|model| draft(model, None))
        .collect();
    if drafts.is_empty()
        && let Some((slug, model_id)) = request.model.split_once('/')
        && let Some(model) = catalog.offer(slug, model_id)
    {
        drafts.extend(draft(model, None));
    }
    if drafts.is_empty() {
        return Err(RoutingError::ModelNotFound {
            model: request.model.chars().take(200).collect(),
        });
    }
    // Only the route's kind of model: a name that exists only as the other kind is the
    // caller's mistake (400), not a missing model.
    let other_kind = drafts[0].model.model_type;
    drafts.retain(|d| d.model.model_type == request.model_type);
    if drafts.is_empty() {
        return Err(RoutingError::WrongModelType {
            model: request.model.chars().take(200).collect(),
            actual: other_kind,
            expected: request.model_type,
        });
    }
    Ok(drafts)
}

struct Filtering<'r> {
    drafts: Vec<Draft>,
    target: String,
    request: &'r RoutingRequest,
    /// Log each candidate a filter removes without emptying the list (the routing debug
    /// output, `RUST_LOG=switchboard_core::routing=debug`); off, nothing is formatted.
    debug: bool,
}

impl Filtering<'_> {
    fn apply_filters(
        &mut self,
        catalog: &Catalog,
        context: &RoutingContext<'_>,
    ) -> Result<(), RoutingError> {
        let request = self.request;

        self.replace_deprecated(catalog)?;

        // Tier: its own error (403), naming the lowest tier that would have kept one.
        let needed = self
            .drafts
            .iter()
            .map(|d| d.model.min_tier_required.max(d.provider.min_tier_required))
            .min()
            .unwrap_or(Tier::Free);
        self.drafts.retain(|d| {
            request.tier >= d.model.min_tier_required
                && request.tier >= d.provider.min_tier_required
        });
        if self.drafts.is_empty() {
            return Err(RoutingError::TierTooLow {
                target: self.target.clone(),
                tier: request.tier,
                needed,
            });
        }

        self.keep(
            RoutingFilter::ModelDisabled,
            |d| d.model.is_active,
            |d| {
                format!(
                    "model `{}` at `{}` is disabled",
                    d.model.model_id, d.provider.provider_slug
                )
            },
        )?;
        self.keep(
            RoutingFilter::ProviderDisabled,
            |d| d.provider.is_active,
            |d| format!("provider `{}` is disabled", d.provider.provider_slug),
        )?;
        self.keep(
            RoutingFilter::ProviderDown,
            |d| d.provider.health_status != HealthStatus::Down,
            |d| format!("provider `{}` is down", d.provider.provider_slug),
        )?;
        self.keep(
            RoutingFilter::Capability,
            |d| missing_capabilities(request, d).is_empty(),
            |d| {
                format!(
                    "`{}` at `{}` lacks {}",
                    d.model.model_id,
                    d.provider.provider_slug,
                    missing_capabilities(request, d).join(", ")
                )
            },
        )?;
        // The prompt alone must fit; the output is clamped to what is left
        // (`OutputBudget`). When it fits nowhere, the request itself is too long.
        let prompt = u64::from(request.estimated_prompt_tokens);
        self.keep(
            RoutingFilter::ContextWindow,
            |d| prompt < positive(d.model.context_window),
            |d| {
                format!(
                    "the prompt of about {prompt} tokens does not fit the context window of {} tokens of `{}`",
                    d.model.context_window, d.model.model_id
                )
            },
        )
        .map_err(|error| match error {
            RoutingError::NoAvailableProvider { detail, .. } => {
                RoutingError::ContextLengthExceeded { detail }
            }
            other => other,
        })?;
        // A rule's token bounds see the prompt and the output the call may really produce.
        let total = |d: &Draft| {
            prompt
                + request.requested_output_tokens.map_or(0, |requested| {
                    let budget = OutputBudget::of(
                        &d.model,
                        request.estimated_prompt_tokens,
                        Some(requested),
                    );
                    u64::from(budget.max_tokens)
                })
        };
        self.keep(
            RoutingFilter::RuleTokenBounds,
            |d| {
                d.rule.as_ref().is_none_or(|rule| {
                    rule.min_tokens.is_none_or(|min| total(d) >= positive(min))
                        && rule.max_tokens.is_none_or(|max| total(d) <= positive(max))
                })
            },
            |d| {
                let bound = |b: Option<i32>| b.map_or_else(|| "-".to_string(), |b| b.to_string());
                let (min, max) = d
                    .rule
                    .as_ref()
                    .map_or((None, None), |r| (r.min_tokens, r.max_tokens));
                format!(
                    "about {} tokens are outside the rule's bounds {}..{}",
                    total(d),
                    bound(min),
                    bound(max)
                )
            },
        )?;
        if request.is_auto() {
            let ceiling_for = |d: &Draft| {
                if d.was_replacement_for.is_none() {
                    context.ceilings.explicit_rule_ceiling(request.power_level)
                } else {
                    context.ceilings.ceiling(request.power_level)
                }
            };
            self.keep(
                RoutingFilter::CostCeiling,
                |d| blended_cost_per_1m(&d.model) <= ceiling_for(d),
                |d| {
                    format!(
                        "`{}` blends to ${} per 1M tokens, above the ${} allowed for {}",
                        d.model.model_id,
                        blended_cost_per_1m(&d.model).normalize(),
                        ceiling_for(d).normalize(),
                        request.power_level
                    )
                },
            )?;
        }
        // A provider signed with the platform's AWS credentials (Bedrock) takes no user key.
        let has_byok_key = |d: &Draft| {
            d.provider.is_byok_supported
                && d.provider.auth_type != AuthType::AwsSigv4
                && request.byok_providers.contains(&d.provider.id)
        };
        self.keep(
            RoutingFilter::RequiresByok,
            |d| !d.rule.as_ref().is_some_and(|r| r.requires_byok) || has_byok_key(d),
            |d| {
                format!(
                    "the rule for `{}` requires your own `{}` key",
                    d.model.model_id, d.provider.provider_slug
                )
            },
        )?;
        self.keep(
            RoutingFilter::Credential,
            |d| {
                has_byok_key(d)
                    || (d.provider.is_system_provider
                        && (context.has_system_key)(&d.provider.provider_slug))
                    || matches!(d.provider.auth_type, AuthType::None | AuthType::AwsSigv4)
            },
            |d| {
                format!(
                    "no key of yours and no system key for provider `{}`",
                    d.provider.provider_slug
                )
            },
        )?;
        for draft in &mut self.drafts {
            draft.byok = has_byok_key(draft);
        }
        if request.is_auto() {
            self.latency_ceiling(context);
        }

        // Circuit breaker: never empties the list.
        let now = context.now;
        if self.drafts.iter().all(|d| d.provider.breaker_is_open(now)) {
            for draft in &mut self.drafts {
                draft.in_cooldown = true;
            }
        } else {
            self.drafts.retain(|d| !d.provider.breaker_is_open(now));
        }
        Ok(())
    }

    /// The power level's latency ceiling, on measured models only (enough samples in the
    /// window; streams by their time to first token, other calls by their time to the
    /// complete answer). Never empties the list: when every candidate is too slow, the
    /// fastest stays.
    fn latency_ceiling(&mut self, context: &RoutingContext<'_>) {
        let request = self.request;
        let limit = i64::from(context.ceilings.max_latency_ms(request.power_level));
        let min_samples = i64::from(context.ceilings.latency_min_samples);
        let streaming = request.capabilities.streaming;
        let measured = |d: &Draft| {
            let (value, samples) = if streaming {
                (d.model.avg_ttft_ms, d.model.ttft_samples)
            } else {
                (d.model.avg_latency_ms, d.model.latency_samples)
            };
            value
                .filter(|_| i64::from(samples) >= min_samples)
                .map(i64::from)
        };
        let too_slow = |d: &Draft| measured(d).is_some_and(|ms| ms > limit);
        let fastest = if self.drafts.iter().all(too_slow) {
            self.drafts.iter().filter_map(measured).min()
        } else {
            None
        };
        let (kept, removed): (Vec<Draft>, Vec<Draft>) = std::mem::take(&mut self.drafts)
            .into_iter()
            .partition(|d| match fastest {
                Some(best) => measured(d) == Some(best),
                None => !too_slow(d),
            });
        self.drafts = kept;
        if self.debug {
            let what = if streaming {
                "time to first token"
            } else {
                "latency"
            };
            for d in removed {
                let detail = format!(
                    "`{}` at `{}`: measured {what} {} ms, above the {limit} ms allowed for {}",
                    d.model.model_id,
                    d.provider.provider_slug,
                    measured(&d).unwrap_or_default(),
                    request.power_level
                );
                removal(RoutingFilter::LatencyCeiling, &detail);
            }
        }
    }

    /// Swaps each deprecated model for its replacement chain's first non-deprecated model;
    /// removes the ones with none.
    fn replace_deprecated(&mut self, catalog: &Catalog) -> Result<(), RoutingError> {
        let mut removed = Vec::new();
        let mut kept = Vec::with_capacity(self.drafts.len());
        for mut draft in std::mem::take(&mut self.drafts) {
            if !draft.model.is_deprecated {
                kept.push(draft);
                continue;
            }
            let original = Arc::clone(&draft.model);
            let mut current = Arc::clone(&draft.model);
            let mut hops = 0;
            while current.is_deprecated && hops < MAX_REPLACEMENT_HOPS {
                match current
                    .replacement_model_id
                    .and_then(|id| catalog.model(id))
                {
                    Some(next) => current = Arc::clone(next),
                    None => break,
                }
                hops += 1;
            }
            match catalog.provider(current.provider_id) {
                Some(provider) if !current.is_deprecated => {
                    draft.provider = Arc::clone(provider);
                    draft.model = current;
                    draft.was_replacement_for = Some(original);
                    kept.push(draft);
                }
                _ => removed.push(format!(
                    "`{}` is deprecated without a usable replacement",
                    original.model_id
                )),
            }
        }
        self.drafts = kept;
        if self.drafts.is_empty() {
            return Err(self.exhausted(RoutingFilter::Deprecated, removed));
        }
        Ok(())
    }

    /// Keeps the drafts passing `test`; when none is left, the error names `filter` and
    /// describes what removed the last ones.
    fn keep(
        &mut self,
        filter: RoutingFilter,
        test: impl Fn(&Draft) -> bool,
        describe: impl Fn(&Draft) -> String,
    ) -> Result<(), RoutingError> {
        let (kept, removed): (Vec<Draft>, Vec<Draft>) = std::mem::take(&mut self.drafts)
            .into_iter()
            .partition(|d| test(d));
        self.drafts = kept;
        if self.drafts.is_empty() {
            return Err(self.exhausted(filter, removed.iter().map(describe).collect()));
        }
        if self.debug {
            for d in &removed {
                removal(filter, &describe(d));
            }
        }
        Ok(())
    }

    fn exhausted(&self, filter: RoutingFilter, details: Vec<String>) -> RoutingError {
        let mut seen = HashSet::new();
        let unique: Vec<String> = details
            .into_iter()
            .filter(|d| seen.insert(d.clone()))
            .take(3)
            .collect();
        RoutingError::NoAvailableProvider {
            target: self.target.clone(),
            filter,
            detail: unique.join("; "),
        }
    }
}

/// One line of the routing debug output (the request span carries the request id).
fn removal(filter: RoutingFilter, detail: &str) {
    tracing::debug!(%filter, detail, "routing removed a candidate");
}

fn positive(value: i32) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn missing_capabilities(request: &RoutingRequest, d: &Draft) -> Vec<&'static str> {
    let needed = request.capabilities;
    let (m, p) = (&d.model, &d.provider);
    let mut missing = Vec::new();
    // Embeddings go out in OpenAI's or Gemini's format; Anthropic's API has none.
    if request.model_type == ModelType::Embedding && p.api_format == ApiFormat::Anthropic {
        missing.push("an embeddings API");
    }
    if needed.token_input && p.api_format != ApiFormat::OpenAi {
        missing.push("token-array input");
    }
    if needed.streaming && !(m.supports_streaming && p.supports_streaming) {
        missing.push("streaming");
    }
    if needed.function_calling && !(m.supports_function_calling && p.supports_function_calling) {
        missing.push("function calling");
    }
    if needed.vision && !(m.supports_vision && p.supports_vision) {
        missing.push("vision");
    }
    if needed.json_mode && !m.supports_json_mode {
        missing.push("json mode");
    }
    missing
}

/// Ordering key of a group: fallbacks after the rest (by `fallback_order`), then offers
/// that serve the requested output unclamped, then priority, then (for power levels that
/// prefer cached prompts) cache-capable first, then BYOK-backed first. Inside a group the
/// order is a weighted draw.
type GroupKey = (bool, i32, bool, i32, bool, bool);

/// The prompt tokens below which each format's provider caches nothing (Anthropic's and
/// OpenAI's minimum cacheable prompt is 1,024 tokens; Gemini's implicit caching starts at
/// 1,024 on Flash and 2,048 on Pro models: the larger is used).
pub fn min_cacheable_prompt_tokens(api_format: ApiFormat) -> u32 {
    match api_format {
        ApiFormat::OpenAi | ApiFormat::Anthropic | ApiFormat::Bedrock => 1_024,
        ApiFormat::Gemini => 2_048,
    }
}

/// Whether the offer can serve a prompt of `prompt_tokens` partly from the provider's
/// prompt cache for less: a cached-input price below the input price, and a prompt long
/// enough to be cached.
pub fn can_serve_from_cache(model: &Model, provider: &Provider, prompt_tokens: u32) -> bool {
    model
        .cost_per_1m_tokens_cached
        .is_some_and(|cached| cached < model.cost_per_1m_input_tokens)
        && prompt_tokens >= min_cacheable_prompt_tokens(provider.api_format)
}

fn order<R: Rng + ?Sized>(
    drafts: Vec<Draft>,
    rng: &mut R,
    cache_first: impl Fn(&Draft) -> bool,
    output: impl Fn(&Draft) -> OutputBudget,
) -> Vec<Candidate> {
    let mut groups: BTreeMap<GroupKey, Vec<(Draft, i32)>> = BTreeMap::new();
    for draft in drafts {
        let (is_fallback, fallback_order, priority, weight) = match &draft.rule {
            Some(rule) => (
                rule.is_fallback,
                if rule.is_fallback {
                    rule.fallback_order
                } else {
                    0
                },
                rule.priority,
                rule.weight,
            ),
            None => (
                false,
                0,
                draft.model.power_level_priority,
                NAMED_OFFER_WEIGHT,
            ),
        };
        groups
            .entry((
                is_fallback,
                fallback_order,
                output(&draft).clamped,
                priority,
                !cache_first(&draft),
                !draft.byok,
            ))
            .or_default()
            .push((draft, weight));
    }
    let mut seen = HashSet::new();
    let mut candidates = Vec::new();
    for (_, group) in groups {
        for draft in weighted_order(group, rng) {
            if !seen.insert((draft.provider.id, draft.model.id)) {
                continue;
            }
            candidates.push(Candidate {
                output: output(&draft),
                is_fallback: draft.rule.as_ref().is_some_and(|r| r.is_fallback),
                rule_id: draft.rule.as_ref().map(|r| r.id),
                provider: draft.provider,
                model: draft.model,
                byok: draft.byok,
                was_replacement_for: draft.was_replacement_for,
                in_cooldown: draft.in_cooldown,
            });
        }
    }
    candidates
}
