#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Routing against the real seed catalog in PostgreSQL: the seed's three rules across the
//! four tiers, three power levels and each capability; every filter (rows changed in the
//! test database, catalog reloaded); ordering (priority, BYOK first, weighted draw,
//! fallbacks, duplicates); breaker and health; the hold amount; and two property tests
//! (weighted draws converge to the weights; random catalogs never yield a filtered-out
//! candidate, checked against an independent oracle).

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use switchboard_core::catalog::{
    AuthType, Catalog, HealthStatus, Model, ModelType, PowerLevel, Provider, RoutingRule, TaskType,
    Tier, load_catalog,
};
use switchboard_core::config::PowerLevelCeilings;
use switchboard_core::http::ApiError;
use switchboard_core::ledger;
use switchboard_core::routing::{
    Candidate, CandidatePlan, DEFAULT_OUTPUT_TOKENS, OutputBudget, RequiredCapabilities,
    RoutingContext, RoutingError, RoutingFilter, RoutingRequest, blended_cost_per_1m,
    plan_candidates,
};
use switchboard_tests::test_db::TestDb;

const LLAMA: &str = "openrouter/meta-llama/llama-3-70b-instruct";
const TURBO: &str = "openai/gpt-4-turbo";
const GPT4O: &str = "openai/gpt-4o";
const CLAUDE: &str = "anthropic/claude-3-5-sonnet-20241022";

async fn exec(db: &TestDb, sql: &str) {
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn catalog(db: &TestDb) -> Catalog {
    let client = db.pool().get().await.unwrap();
    load_catalog(&**client).await.unwrap()
}

fn request(tier: Tier, power_level: PowerLevel, model: &str) -> RoutingRequest {
    RoutingRequest {
        user_id: "user-1".into(),
        tier,
        power_level,
        task_type: TaskType::Chat,
        model: model.into(),
        model_type: ModelType::Chat,
        capabilities: RequiredCapabilities::default(),
        estimated_prompt_tokens: 100,
        requested_output_tokens: None,
        byok_providers: HashSet::new(),
    }
}

fn auto(tier: Tier, power_level: PowerLevel) -> RoutingRequest {
    request(tier, power_level, "auto")
}

fn every_system_key(_: &str) -> bool {
    true
}

fn no_system_key(_: &str) -> bool {
    false
}

fn plan_at(
    catalog: &Catalog,
    request: &RoutingRequest,
    has_system_key: &(dyn Fn(&str) -> bool + Sync),
    now: DateTime<Utc>,
    seed: u64,
) -> Result<CandidatePlan, RoutingError> {
    let ceilings = PowerLevelCeilings::default();
    let context = RoutingContext {
        now,
        has_system_key,
        ceilings: &ceilings,
    };
    plan_candidates(catalog, request, &context, &mut StdRng::seed_from_u64(seed))
}

fn plan(catalog: &Catalog, request: &RoutingRequest) -> Result<CandidatePlan, RoutingError> {
    plan_at(catalog, request, &every_system_key, Utc::now(), 1)
}

/// `provider_slug/model_id` of each candidate, in order.
fn route(plan: &CandidatePlan) -> Vec<String> {
    plan.candidates
        .iter()
        .map(|c| format!("{}/{}", c.provider.provider_slug, c.model.model_id))
        .collect()
}

fn routed(catalog: &Catalog, request: &RoutingRequest) -> Vec<String> {
    match plan(catalog, request) {
        Ok(plan) => route(&plan),
        Err(e) => panic!("{:?} → {e}", request.model),
    }
}

/// The HTTP status the gateway answers for a routing error (`http/error.rs`).
fn http_status(error: &RoutingError) -> u16 {
    ApiError::from(error.clone()).status().as_u16()
}

/// The error `code` of that answer.
fn error_code(error: &RoutingError) -> &'static str {
    ApiError::from(error.clone()).kind().1
}

fn removed_by(catalog: &Catalog, request: &RoutingRequest) -> (RoutingFilter, String) {
    match plan(catalog, request) {
        Err(e @ RoutingError::NoAvailableProvider { filter, .. }) => {
            assert_eq!(http_status(&e), 503);
            assert_eq!(error_code(&e), "no_available_provider");
            (filter, e.to_string())
        }
        other => panic!("expected 503, got {other:?}"),
    }
}

fn provider_id(catalog: &Catalog, slug: &str) -> i32 {
    catalog.provider_by_slug(slug).unwrap().id
}

fn model_row_id(catalog: &Catalog, slug: &str, model_id: &str) -> i32 {
    catalog.offer(slug, model_id).unwrap().id
}

// ------------------------------------------------------------------ the seed, as a table

/// Expected outcome of `auto` for each tier: a candidate, a 403 naming the tier needed, or
/// a 503 naming the filter.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Routes(&'static str),
    Forbidden(Tier),
    Unavailable(RoutingFilter),
}

use Outcome::{Forbidden, Routes, Unavailable};

#[derive(Debug, Clone, Copy)]
enum Need {
    Nothing,
    Streaming,
    FunctionCalling,
    Vision,
    JsonMode,
}

impl Need {
    fn capabilities(self) -> RequiredCapabilities {
        let mut c = RequiredCapabilities::default();
        match self {
            Need::Nothing => {}
            Need::Streaming => c.streaming = true,
            Need::FunctionCalling => c.function_calling = true,
            Need::Vision => c.vision = true,
            Need::JsonMode => c.json_mode = true,
        }
        c
    }
}

const CAPABILITY: Outcome = Unavailable(RoutingFilter::Capability);

/// (power level, what the request needs, outcome for free / starter / professional /
/// enterprise). The seed: eco → Llama 3 70B (OpenRouter; no tools, vision or json mode),
/// balanced → GPT-4 Turbo (everything), precision → Claude 3.5 Sonnet (starter and up; no
/// json mode). The tier filter runs before the capability filter.
const SEED_TABLE: &[(PowerLevel, Need, [Outcome; 4])] = &[
    (PowerLevel::Eco, Need::Nothing, [Routes(LLAMA); 4]),
    (PowerLevel::Eco, Need::Streaming, [Routes(LLAMA); 4]),
    (PowerLevel::Eco, Need::FunctionCalling, [CAPABILITY; 4]),
    (PowerLevel::Eco, Need::Vision, [CAPABILITY; 4]),
    (PowerLevel::Eco, Need::JsonMode, [CAPABILITY; 4]),
    (PowerLevel::Balanced, Need::Nothing, [Routes(TURBO); 4]),
    (PowerLevel::Balanced, Need::Streaming, [Routes(TURBO); 4]),
    (
        PowerLevel::Balanced,
        Need::FunctionCalling,
        [Routes(TURBO); 4],
    ),
    (PowerLevel::Balanced, Need::Vision, [Routes(TURBO); 4]),
    (PowerLevel::Balanced, Need::JsonMode, [Routes(TURBO); 4]),
    (
        PowerLevel::Precision,
        Need::Nothing,
        [
            Forbidden(Tier::Starter),
            Routes(CLAUDE),
            Routes(CLAUDE),
            Routes(CLAUDE),
        ],
    ),
    (
        PowerLevel::Precision,
        Need::Streaming,
        [
            Forbidden(Tier::Starter),
            Routes(CLAUDE),
            Routes(CLAUDE),
            Routes(CLAUDE),
        ],
    ),
    (
        PowerLevel::Precision,
        Need::FunctionCalling,
        [
            Forbidden(Tier::Starter),
            Routes(CLAUDE),
            Routes(CLAUDE),
            Routes(CLAUDE),
        ],
    ),
    (
        PowerLevel::Precision,
        Need::Vision,
        [
            Forbidden(Tier::Starter),
            Routes(CLAUDE),
            Routes(CLAUDE),
            Routes(CLAUDE),
        ],
    ),
    (
        PowerLevel::Precision,
        Need::JsonMode,
        [Forbidden(Tier::Starter), CAPABILITY, CAPABILITY, CAPABILITY],
    ),
];

fn outcome(catalog: &Catalog, request: &RoutingRequest) -> Outcome {
    match plan(catalog, request) {
        Ok(plan) => {
            let routes = route(&plan);
            assert_eq!(routes.len(), 1, "{routes:?}");
            let candidate = &plan.candidates[0];
            assert!(candidate.rule_id.is_some());
            assert!(!candidate.byok);
            assert!(candidate.was_replacement_for.is_none());
            let expected = [LLAMA, TURBO, CLAUDE, GPT4O]
                .into_iter()
                .find(|r| *r == routes[0])
                .unwrap_or_else(|| panic!("unexpected route {routes:?}"));
            Routes(expected)
        }
        Err(e @ RoutingError::TierTooLow { needed, .. }) => {
            assert_eq!(http_status(&e), 403);
            Forbidden(needed)
        }
        Err(e @ RoutingError::NoAvailableProvider { filter, .. }) => {
            assert_eq!(http_status(&e), 503);
            Unavailable(filter)
        }
        Err(e) => panic!("unexpected {e:?}"),
    }
}

#[tokio::test]
async fn seed_rules_across_tiers_power_levels_and_capabilities() {
    let db = TestDb::new().await;
    let catalog = catalog(&db).await;
    let mut checked = 0;
    for (power_level, need, outcomes) in SEED_TABLE {
        for (tier, expected) in Tier::ALL.iter().zip(outcomes) {
            // The seed's rules have no task type: every task type routes the same.
            for task_type in TaskType::ALL {
                let mut req = auto(*tier, *power_level);
                req.capabilities = need.capabilities();
                req.task_type = *task_type;
                assert_eq!(
                    outcome(&catalog, &req),
                    *expected,
                    "{power_level} / {need:?} / {tier} / {task_type}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * 5 * 4 * 4);
}

#[tokio::test]
async fn seed_errors_say_what_removed_the_last_candidate() {
    let db = TestDb::new().await;
    let catalog = catalog(&db).await;

    let e = plan(&catalog, &auto(Tier::Free, PowerLevel::Precision)).unwrap_err();
    // api.md: 403 permission_error (the message names the tier needed).
    assert!(matches!(e, RoutingError::TierTooLow { .. }), "{e:?}");
    assert_eq!(
        (http_status(&e), error_code(&e)),
        (403, "permission_denied")
    );
    assert_eq!(
        e.to_string(),
        "`auto` (power level precision) requires the starter tier or higher (your tier is free)"
    );

    let mut req = auto(Tier::Free, PowerLevel::Eco);
    req.capabilities.vision = true;
    let (filter, message) = removed_by(&catalog, &req);
    assert_eq!(filter, RoutingFilter::Capability);
    assert_eq!(
        message,
        "no available provider for `auto` (power level eco): every candidate was removed by \
         the capability filter (`meta-llama/llama-3-70b-instruct` at `openrouter` lacks vision)"
    );
}

// ------------------------------------------------------------------ requested models

#[tokio::test]
async fn requested_model_names_resolve_or_are_not_found() {
    let db = TestDb::new().await;
    let catalog = catalog(&db).await;
    let named = |model: &str| request(Tier::Free, PowerLevel::Balanced, model);

    assert_eq!(routed(&catalog, &named("gpt-4o")), vec![GPT4O]);
    assert_eq!(routed(&catalog, &named("openai/gpt-4o")), vec![GPT4O]);
    // A model id containing `/` matches exactly first…
    assert_eq!(
        routed(&catalog, &named("meta-llama/llama-3-70b-instruct")),
        vec![LLAMA]
    );
    // …and pinning its provider splits at the first `/` only.
    assert_eq!(
        routed(
            &catalog,
            &named("openrouter/meta-llama/llama-3-70b-instruct")
        ),
        vec![LLAMA]
    );
    // Named requests are not limited by power-level ceilings or rules.
    assert_eq!(
        routed(
            &catalog,
            &request(Tier::Free, PowerLevel::Eco, "gpt-4-turbo")
        ),
        vec![TURBO]
    );
    let gpt4o = plan(&catalog, &named("gpt-4o")).unwrap();
    assert_eq!(gpt4o.candidates[0].rule_id, None);

    for unknown in [
        "gpt-5-ultra",
        "openai/nope",
        "anthropic/gpt-4o",
        "nope/gpt-4o",
        "",
        "GPT-4O",
    ] {
        let e = plan(&catalog, &named(unknown)).unwrap_err();
        assert_eq!(
            e,
            RoutingError::ModelNotFound {
                model: unknown.into()
            }
        );
        assert_eq!(http_status(&e), 404);
        assert_eq!(error_code(&e), "model_not_found");
    }
}

#[tokio::test]
async fn an_exact_model_id_wins_over_a_provider_prefix() {
    let db = TestDb::new().await;
    // A provider whose slug equals the prefix of OpenRouter's model id.
    exec(
        &db,
        "INSERT INTO llm_providers (provider_name, provider_slug, base_url, is_system_provider)
         VALUES ('Meta', 'meta-llama', 'https://meta.example/v1', true);
         INSERT INTO llm_models (provider_id, model_name, model_id, context_window,
                                 cost_per_1m_input_tokens, cost_per_1m_output_tokens)
         SELECT id, 'Llama', 'llama-3-70b-instruct', 8192, 0.1, 0.1
         FROM llm_providers WHERE provider_slug = 'meta-llama';",
    )
    .await;
    let catalog = catalog(&db).await;
    let named = |model: &str| request(Tier::Free, PowerLevel::Balanced, model);
    assert_eq!(
        routed(&catalog, &named("meta-llama/llama-3-70b-instruct")),
        vec![LLAMA]
    );
    assert!(matches!(
        plan(
            &catalog,
            &named("meta-llama/meta-llama/llama-3-70b-instruct")
        ),
        Err(RoutingError::ModelNotFound { .. })
    ));
    assert_eq!(
        routed(&catalog, &named("llama-3-70b-instruct")),
        vec!["meta-llama/llama-3-70b-instruct"]
    );
}

// ------------------------------------------------------------------ each filter

#[tokio::test]
async fn rules_match_power_level_tier_and_task_type_exactly() {
    let db = TestDb::new().await;
    exec(
        &db,
        "UPDATE llm_routing_rules SET task_type = 'code' WHERE power_level = 'eco';
         UPDATE llm_routing_rules SET user_tier = 'professional' WHERE power_level = 'balanced';",
    )
    .await;
    let catalog = catalog(&db).await;

    let mut code = auto(Tier::Free, PowerLevel::Eco);
    code.task_type = TaskType::Code;
    assert_eq!(routed(&catalog, &code), vec![LLAMA]);
    let (filter, message) = removed_by(&catalog, &auto(Tier::Free, PowerLevel::Eco));
    assert_eq!(filter, RoutingFilter::RuleMatch);
    assert!(
        message.contains(
            "no active routing rule for chat models at power level eco, tier free, task type chat"
        ),
        "{message}"
    );

    assert_eq!(
        routed(&catalog, &auto(Tier::Professional, PowerLevel::Balanced)),
        vec![TURBO]
    );
    // A tier-specific rule is for that tier only (not "at least that tier").
    for tier in [Tier::Free, Tier::Starter, Tier::Enterprise] {
        let (filter, _) = removed_by(&catalog, &auto(tier, PowerLevel::Balanced));
        assert_eq!(filter, RoutingFilter::RuleMatch, "{tier}");
    }

    exec(&db, "UPDATE llm_routing_rules SET is_active = false").await;
    let catalog = self::catalog(&db).await;
    let mut code = auto(Tier::Free, PowerLevel::Eco);
    code.task_type = TaskType::Code;
    assert_eq!(removed_by(&catalog, &code).0, RoutingFilter::RuleMatch);
}

#[tokio::test]
async fn deprecated_models_route_to_their_replacement_or_are_removed() {
    let db = TestDb::new().await;
    exec(
        &db,
        "UPDATE llm_models SET is_deprecated = true,
             replacement_model_id = (SELECT id FROM llm_models WHERE model_id = 'gpt-4o')
         WHERE model_id = 'gpt-4-turbo';",
    )
    .await;
    let catalog = catalog(&db).await;
    let turbo_id = model_row_id(&catalog, "openai", "gpt-4-turbo");

    // Through the balanced rule (GPT-4o blends to $4.375, within balanced's own $5).
    let plan = plan(&catalog, &auto(Tier::Free, PowerLevel::Balanced)).unwrap();
    assert_eq!(route(&plan), vec![GPT4O]);
    let candidate = &plan.candidates[0];
    assert_eq!(candidate.was_replacement_for.as_ref().unwrap().id, turbo_id);
    assert!(candidate.rule_id.is_some(), "the rule is kept");
    // Named.
    let named = request(Tier::Free, PowerLevel::Balanced, "gpt-4-turbo");
    let plan = self::plan(&catalog, &named).unwrap();
    assert_eq!(route(&plan), vec![GPT4O]);
    assert_eq!(
        plan.candidates[0]
            .was_replacement_for
            .as_ref()
            .unwrap()
            .model_id,
        "gpt-4-turbo"
    );

    // A replacement must itself be usable: here it is disabled.
    exec(
        &db,
        "UPDATE llm_models SET is_active = false WHERE model_id = 'gpt-4o'",
    )
    .await;
    let catalog = self::catalog(&db).await;
    assert_eq!(
        removed_by(&catalog, &auto(Tier::Free, PowerLevel::Balanced)).0,
        RoutingFilter::ModelDisabled
    );

    // Deprecated without a replacement.
    exec(
        &db,
        "UPDATE llm_models SET replacement_model_id = NULL WHERE model_id = 'gpt-4-turbo'",
    )
    .await;
    let catalog = self::catalog(&db).await;
    let (filter, message) = removed_by(&catalog, &auto(Tier::Free, PowerLevel::Balanced));
    assert_eq!(filter, RoutingFilter::Deprecated);
    assert!(message.contains("`gpt-4-turbo` is deprecated"), "{message}");
    assert_eq!(removed_by(&catalog, &named).0, RoutingFilter::Deprecated);

    // A replacement that is deprecated too is followed; a cycle ends as deprecated.
    exec(
        &db,
        "UPDATE llm_models SET is_active = true, is_deprecated = true,
             replacement_model_id = (SELECT id FROM llm_models WHERE model_id = 'claude-3-5-sonnet-20241022')
         WHERE model_id = 'gpt-4o';
         UPDATE llm_models SET replacement_model_id = (SELECT id FROM llm_models WHERE model_id = 'gpt-4o')
         WHERE model_id = 'gpt-4-turbo';",
    )
    .await;
    let catalog = self::catalog(&db).await;
    assert_eq!(
        routed(
            &catalog,
            &request(Tier::Starter, PowerLevel::Balanced, "gpt-4-turbo")
        ),
        vec![CLAUDE]
    );
    exec(
        &db,
        "UPDATE llm_models SET is_deprecated = true,
             replacement_model_id = (SELECT id FROM llm_models WHERE model_id = 'gpt-4-turbo')
         WHERE model_id = 'claude-3-5-sonnet-20241022';",
    )
    .await;
    let catalog = self::catalog(&db).await;
    assert_eq!(
        removed_by(
            &catalog,
            &request(Tier::Starter, PowerLevel::Balanced, "gpt-4-turbo")
        )
        .0,
        RoutingFilter::Deprecated
    );
}

#[tokio::test]
async fn tier_filter_uses_provider_and_model_minimums() {
    let db = TestDb::new().await;
    let catalog = catalog(&db).await;
    // Claude needs starter (model row).
    let named = request(
        Tier::Free,
        PowerLevel::Balanced,
        "claude-3-5-sonnet-20241022",
    );
    assert_eq!(
        plan(&catalog, &named).unwrap_err(),
        RoutingError::TierTooLow {
            target: "model `claude-3-5-sonnet-20241022`".into(),
            tier: Tier::Free,
            needed: Tier::Starter,
        }
    );
    // The provider's minimum counts too; the error names the higher of the two.
    exec(
        &db,
        "UPDATE llm_providers SET min_tier_required = 'professional' WHERE provider_slug = 'openai'",
    )
    .await;
    let catalog = self::catalog(&db).await;
    for tier in [Tier::Free, Tier::Starter] {
        match plan(&catalog, &auto(tier, PowerLevel::Balanced)) {
            Err(RoutingError::TierTooLow { needed, .. }) => {
                assert_eq!(needed, Tier::Professional)
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        routed(&catalog, &auto(Tier::Professional, PowerLevel::Balanced)),
        vec![TURBO]
    );
    assert_eq!(
        routed(&catalog, &auto(Tier::Enterprise, PowerLevel::Balanced)),
        vec![TURBO]
    );
}

#[tokio::test]
async fn disabled_and_down_providers_and_models_are_removed() {
    let db = TestDb::new().await;
    let named = request(Tier::Free, PowerLevel::Balanced, "gpt-4o");

    exec(
        &db,
        "UPDATE llm_models SET is_active = false WHERE model_id = 'gpt-4o'",
    )
    .await;
    let (filter, message) = removed_by(&catalog(&db).await, &named);
    assert_eq!(filter, RoutingFilter::ModelDisabled);
    assert!(message.contains("model disabled filter"), "{message}");

    exec(
        &db,
        "UPDATE llm_models SET is_active = true WHERE model_id = 'gpt-4o';
         UPDATE llm_providers SET is_active = false, disabled_reason = 'admin' WHERE provider_slug = 'openai';",
    )
    .await;
    assert_eq!(
        removed_by(&catalog(&db).await, &named).0,
        RoutingFilter::ProviderDisabled
    );

    exec(
        &db,
        "UPDATE llm_providers SET is_active = true, disabled_reason = NULL, health_status = 'down'
         WHERE provider_slug = 'openai'",
    )
    .await;
    let catalog_down = catalog(&db).await;
    let (filter, message) = removed_by(&catalog_down, &named);
    assert_eq!(filter, RoutingFilter::ProviderDown);
    assert!(message.contains("provider `openai` is down"), "{message}");
    assert_eq!(
        removed_by(&catalog_down, &auto(Tier::Free, PowerLevel::Balanced)).0,
        RoutingFilter::ProviderDown
    );

    // Degraded and unknown providers stay candidates.
    for status in ["degraded", "unknown", "healthy"] {
        exec(
            &db,
            &format!(
                "UPDATE llm_providers SET health_status = '{status}' WHERE provider_slug = 'openai'"
            ),
        )
        .await;
        assert_eq!(routed(&catalog(&db).await, &named), vec![GPT4O], "{status}");
    }
}

#[tokio::test]
async fn capabilities_need_both_model_and_provider_support() {
    let db = TestDb::new().await;
    let mut vision = request(Tier::Free, PowerLevel::Balanced, "gpt-4o");
    vision.capabilities.vision = true;
    assert_eq!(routed(&catalog(&db).await, &vision), vec![GPT4O]);

    exec(
        &db,
        "UPDATE llm_providers SET supports_vision = false, supports_function_calling = false,
             supports_streaming = false
         WHERE provider_slug = 'openai'",
    )
    .await;
    let catalog = catalog(&db).await;
    let (filter, message) = removed_by(&catalog, &vision);
    assert_eq!(filter, RoutingFilter::Capability);
    assert!(
        message.ends_with("(`gpt-4o` at `openai` lacks vision)"),
        "{message}"
    );
    let mut everything = request(Tier::Free, PowerLevel::Balanced, "gpt-4o");
    everything.capabilities = RequiredCapabilities {
        streaming: true,
        function_calling: true,
        vision: true,
        json_mode: true,
        token_input: false,
    };
    let (_, message) = removed_by(&catalog, &everything);
    assert!(
        message.contains("lacks streaming, function calling, vision"),
        "{message}"
    );
    // Json mode is a model capability only.
    let mut json = request(Tier::Free, PowerLevel::Balanced, "gpt-4o");
    json.capabilities.json_mode = true;
    assert_eq!(routed(&catalog, &json), vec![GPT4O]);
}

/// The output of each candidate: the request's `max_tokens` clamped to the model's output
/// limit and to what the context window leaves after the prompt (api.md: a client-side
/// limit is never a 503); only a prompt that alone fits nowhere is refused, with a 400.
#[tokio::test]
async fn output_is_clamped_to_the_model_and_a_prompt_too_long_is_a_400() {
    let db = TestDb::new().await;
    let catalog = catalog(&db).await;
    let output = |plan: &CandidatePlan| plan.candidates[0].output;
    // Llama 3 70B: 8,192-token context window, 8,192 output tokens.
    let mut req = auto(Tier::Free, PowerLevel::Eco);
    req.estimated_prompt_tokens = 8_000;
    req.requested_output_tokens = Some(192);
    let exact = plan(&catalog, &req).unwrap();
    assert_eq!(route(&exact), vec![LLAMA], "exactly the window");
    assert_eq!(
        output(&exact),
        OutputBudget {
            max_tokens: 192,
            clamped: false
        }
    );
    // One more than the window leaves: clamped to what is left, not refused.
    for requested in [193, 32_000, 128_000] {
        req.requested_output_tokens = Some(requested);
        let clamped = plan(&catalog, &req).unwrap();
        assert_eq!(route(&clamped), vec![LLAMA]);
        assert_eq!(
            output(&clamped),
            OutputBudget {
                max_tokens: 192,
                clamped: true
            },
            "{requested}"
        );
    }
    // No max_tokens: what the window leaves, and no clamp to report.
    req.requested_output_tokens = None;
    assert_eq!(
        output(&plan(&catalog, &req).unwrap()),
        OutputBudget {
            max_tokens: 192,
            clamped: false
        }
    );
    // The prompt alone does not fit: 400 context_length_exceeded on `messages`.
    req.estimated_prompt_tokens = 8_192;
    req.requested_output_tokens = Some(32_000);
    let error = plan(&catalog, &req).unwrap_err();
    assert!(
        matches!(error, RoutingError::ContextLengthExceeded { .. }),
        "{error:?}"
    );
    assert_eq!(http_status(&error), 400);
    assert_eq!(error_code(&error), "context_length_exceeded");
    assert_eq!(
        ApiError::from(error.clone()).body()["error"]["param"],
        "messages"
    );
    assert!(
        error
            .to_string()
            .contains("the prompt of about 8192 tokens does not fit the context window of 8192 tokens of `meta-llama/llama-3-70b-instruct`"),
        "{error}"
    );

    // GPT-4o: 16,384 output tokens at most, whatever the client's default.
    let mut named = request(Tier::Free, PowerLevel::Balanced, "gpt-4o");
    named.requested_output_tokens = Some(16_384);
    assert_eq!(
        output(&plan(&catalog, &named).unwrap()),
        OutputBudget {
            max_tokens: 16_384,
            clamped: false
        }
    );
    for requested in [16_385, 32_000, 128_000] {
        named.requested_output_tokens = Some(requested);
        assert_eq!(
            output(&plan(&catalog, &named).unwrap()),
            OutputBudget {
                max_tokens: 16_384,
                clamped: true
            }
        );
    }
}

/// `auto` prefers an offer whose output limit fits the requested `max_tokens` over one that
/// would clamp it, before priority; when none fits, priority decides as usual.
#[tokio::test]
async fn offers_that_fit_the_requested_output_come_before_those_that_clamp_it() {
    let db = TestDb::new().await;
    // Balanced: GPT-4 Turbo (4,096 output) at priority 1 (seed), GPT-4o (16,384) at 2.
    add_rule(&db, "gpt-4o", "balanced", "priority", "2").await;
    let catalog = catalog(&db).await;
    let mut req = auto(Tier::Starter, PowerLevel::Balanced);
    req.requested_output_tokens = Some(1_000);
    assert_eq!(route(&plan(&catalog, &req).unwrap()), vec![TURBO, GPT4O]);
    req.requested_output_tokens = Some(10_000);
    let plan10k = plan(&catalog, &req).unwrap();
    assert_eq!(route(&plan10k), vec![GPT4O, TURBO]);
    assert!(!plan10k.candidates[0].output.clamped);
    assert_eq!(plan10k.candidates[1].output.max_tokens, 4_096);
    req.requested_output_tokens = Some(32_000);
    assert_eq!(route(&plan(&catalog, &req).unwrap()), vec![TURBO, GPT4O]);
}

#[tokio::test]
async fn rule_token_bounds_apply_to_prompt_plus_output() {
    let db = TestDb::new().await;
    exec(
        &db,
        "UPDATE llm_routing_rules SET min_tokens = 1000, max_tokens = 2000 WHERE power_level = 'eco'",
    )
    .await;
    let catalog = catalog(&db).await;
    let mut req = auto(Tier::Free, PowerLevel::Eco);
    for (prompt, output, routes) in [
        (100, None, false),
        (999, None, false),
        (900, Some(100), true),
        (1000, None, true),
        (2000, None, true),
        (1900, Some(101), false),
        (2001, None, false),
    ] {
        req.estimated_prompt_tokens = prompt;
        req.requested_output_tokens = output;
        match plan(&catalog, &req) {
            Ok(plan) => assert!(routes, "{prompt}+{output:?} routed to {:?}", route(&plan)),
            Err(RoutingError::NoAvailableProvider { filter, detail, .. }) => {
                assert!(!routes, "{prompt}+{output:?}");
                assert_eq!(filter, RoutingFilter::RuleTokenBounds);
                assert!(
                    detail.contains("outside the rule's bounds 1000..2000"),
                    "{detail}"
                );
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    // Bounds belong to rules: a named request ignores them.
    let named = request(
        Tier::Free,
        PowerLevel::Eco,
        "meta-llama/llama-3-70b-instruct",
    );
    assert_eq!(routed(&catalog, &named), vec![LLAMA]);
}

#[tokio::test]
async fn power_level_ceilings_trust_explicit_rules_up_to_the_next_level() {
    let db = TestDb::new().await;
    // The documented decision on the seed: every seed rule passes.
    let seed = catalog(&db).await;
    let blend = |slug: &str, model: &str| blended_cost_per_1m(seed.offer(slug, model).unwrap());
    assert_eq!(
        blend("openrouter", "meta-llama/llama-3-70b-instruct"),
        Decimal::new(325, 3)
    );
    assert_eq!(blend("openai", "gpt-4-turbo"), Decimal::from(15));
    assert_eq!(
        blend("anthropic", "claude-3-5-sonnet-20241022"),
        Decimal::from(6)
    );
    assert_eq!(blend("openai", "gpt-4o"), Decimal::new(4375, 3));
    let ceilings = PowerLevelCeilings::default();
    assert_eq!(ceilings.ceiling(PowerLevel::Eco), Decimal::new(50, 2));
    assert_eq!(
        ceilings.explicit_rule_ceiling(PowerLevel::Eco),
        Decimal::from(5)
    );
    assert_eq!(
        ceilings.explicit_rule_ceiling(PowerLevel::Balanced),
        Decimal::from(100)
    );
    assert_eq!(
        ceilings.explicit_rule_ceiling(PowerLevel::Precision),
        Decimal::from(100)
    );

    // An eco rule for GPT-4o ($4.375 ≤ balanced's $5) is trusted; one for GPT-4 Turbo
    // ($15 > $5) is not.
    exec(
        &db,
        "UPDATE llm_routing_rules SET model_id = (SELECT id FROM llm_models WHERE model_id = 'gpt-4o')
         WHERE power_level = 'eco'",
    )
    .await;
    assert_eq!(
        routed(&catalog(&db).await, &auto(Tier::Free, PowerLevel::Eco)),
        vec![GPT4O]
    );
    exec(
        &db,
        "UPDATE llm_routing_rules SET model_id = (SELECT id FROM llm_models WHERE model_id = 'gpt-4-turbo')
         WHERE power_level = 'eco'",
    )
    .await;
    let (filter, message) = removed_by(&catalog(&db).await, &auto(Tier::Free, PowerLevel::Eco));
    assert_eq!(filter, RoutingFilter::CostCeiling);
    assert!(
        message.contains("`gpt-4-turbo` blends to $15 per 1M tokens, above the $5 allowed for eco"),
        "{message}"
    );

    // Balanced and precision rules may go up to $100: a $150 blend is too much.
    exec(
        &db,
        "UPDATE llm_models SET cost_per_1m_input_tokens = 100, cost_per_1m_output_tokens = 300
         WHERE model_id = 'claude-3-5-sonnet-20241022'",
    )
    .await;
    assert_eq!(
        removed_by(
            &catalog(&db).await,
            &auto(Tier::Starter, PowerLevel::Precision)
        )
        .0,
        RoutingFilter::CostCeiling
    );
    // Named requests are never limited by the ceilings.
    assert_eq!(
        routed(
            &catalog(&db).await,
            &request(Tier::Starter, PowerLevel::Eco, "claude-3-5-sonnet-20241022")
        ),
        vec![CLAUDE]
    );

    // A replacement reached through a rule must fit the level's own ceiling: eco's
    // deprecated Llama replaced by GPT-4o ($4.375 > $0.50) is removed.
    exec(
        &db,
        "UPDATE llm_routing_rules SET model_id = (SELECT id FROM llm_models WHERE model_id = 'meta-llama/llama-3-70b-instruct')
         WHERE power_level = 'eco';
         UPDATE llm_models SET is_deprecated = true,
             replacement_model_id = (SELECT id FROM llm_models WHERE model_id = 'gpt-4o')
         WHERE model_id = 'meta-llama/llama-3-70b-instruct';",
    )
    .await;
    let (filter, message) = removed_by(&catalog(&db).await, &auto(Tier::Free, PowerLevel::Eco));
    assert_eq!(filter, RoutingFilter::CostCeiling);
    assert!(
        message.contains("above the $0.5 allowed for eco"),
        "{message}"
    );

    // Ceilings are configurable.
    let catalog = catalog(&db).await;
    let generous = PowerLevelCeilings {
        eco: Decimal::from(5),
        ..PowerLevelCeilings::default()
    };
    let context = RoutingContext {
        now: Utc::now(),
        has_system_key: &every_system_key,
        ceilings: &generous,
    };
    let plan = plan_candidates(
        &catalog,
        &auto(Tier::Free, PowerLevel::Eco),
        &context,
        &mut StdRng::seed_from_u64(1),
    )
    .unwrap();
    assert_eq!(route(&plan), vec![GPT4O]);
}

#[tokio::test]
async fn credentials_byok_system_keys_and_keyless_providers() {
    let db = TestDb::new().await;
    let catalog = catalog(&db).await;
    let openai = provider_id(&catalog, "openai");
    let named = request(Tier::Free, PowerLevel::Balanced, "gpt-4o");

    // A system provider with its system key.
    let plan = plan_at(&catalog, &named, &every_system_key, Utc::now(), 1).unwrap();
    assert!(!plan.candidates[0].byok);
    // No system key and no BYOK key.
    let e = plan_at(&catalog, &named, &no_system_key, Utc::now(), 1).unwrap_err();
    assert!(
        matches!(
            e,
            RoutingError::NoAvailableProvider {
                filter: RoutingFilter::Credential,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("no key of yours and no system key for provider `openai`")
    );
    // The user's key.
    let mut with_key = named.clone();
    with_key.byok_providers.insert(openai);
    let plan = plan_at(&catalog, &with_key, &no_system_key, Utc::now(), 1).unwrap();
    assert!(plan.candidates[0].byok);
    // BYOK is used even when a system key exists.
    let plan = plan_at(&catalog, &with_key, &every_system_key, Utc::now(), 1).unwrap();
    assert!(plan.candidates[0].byok);

    // A provider that does not accept BYOK ignores a stored key; a non-system provider
    // has no system key even if one is configured.
    exec(
        &db,
        "UPDATE llm_providers SET is_byok_supported = false WHERE provider_slug = 'openai';
         UPDATE llm_providers SET is_system_provider = false WHERE provider_slug = 'anthropic';",
    )
    .await;
    let changed = self::catalog(&db).await;
    let e = plan_at(&changed, &with_key, &no_system_key, Utc::now(), 1).unwrap_err();
    assert!(e.to_string().contains("credential filter"), "{e}");
    let plan = plan_at(&changed, &with_key, &every_system_key, Utc::now(), 1).unwrap();
    assert!(!plan.candidates[0].byok);
    let claude = request(
        Tier::Starter,
        PowerLevel::Balanced,
        "claude-3-5-sonnet-20241022",
    );
    assert!(plan_at(&changed, &claude, &every_system_key, Utc::now(), 1).is_err());

    // `auth_type = none` (a local Ollama) needs no key at all.
    exec(
        &db,
        "UPDATE llm_providers SET auth_type = 'none', is_system_provider = false
         WHERE provider_slug = 'anthropic'",
    )
    .await;
    let keyless = self::catalog(&db).await;
    let plan = plan_at(&keyless, &claude, &no_system_key, Utc::now(), 1).unwrap();
    assert_eq!(route(&plan), vec![CLAUDE]);
    assert_eq!(plan.candidates[0].provider.auth_type, AuthType::None);
    assert!(!plan.candidates[0].byok);
}

#[tokio::test]
async fn requires_byok_rules_need_the_users_key() {
    let db = TestDb::new().await;
    exec(
        &db,
        "UPDATE llm_routing_rules SET requires_byok = true WHERE power_level = 'eco'",
    )
    .await;
    let catalog = catalog(&db).await;
    let mut req = auto(Tier::Free, PowerLevel::Eco);
    let (filter, message) = removed_by(&catalog, &req);
    assert_eq!(filter, RoutingFilter::RequiresByok);
    assert!(
        message.contains("requires your own `openrouter` key"),
        "{message}"
    );
    req.byok_providers
        .insert(provider_id(&catalog, "openrouter"));
    let plan = plan(&catalog, &req).unwrap();
    assert_eq!(route(&plan), vec![LLAMA]);
    assert!(plan.candidates[0].byok);
}

#[tokio::test]
async fn circuit_breaker_skips_providers_in_cooldown_unless_all_are() {
    let db = TestDb::new().await;
    // A second offer of gpt-4o, on OpenRouter.
    exec(
        &db,
        "INSERT INTO llm_models (provider_id, model_name, model_id, max_tokens, context_window,
             supports_json_mode, supports_vision, supports_function_calling,
             cost_per_1m_input_tokens, cost_per_1m_output_tokens, power_level_priority)
         SELECT id, 'GPT-4o via OpenRouter', 'gpt-4o', 16384, 128000, true, true, true, 2.5, 10, 10
         FROM llm_providers WHERE provider_slug = 'openrouter';",
    )
    .await;
    let named = request(Tier::Free, PowerLevel::Balanced, "gpt-4o");
    let both: BTreeSet<String> = [GPT4O, "openrouter/gpt-4o"].map(String::from).into();
    let as_set = |plan: &CandidatePlan| route(plan).into_iter().collect::<BTreeSet<_>>();

    let now = Utc::now();
    let plan = plan_at(&catalog(&db).await, &named, &every_system_key, now, 1).unwrap();
    assert_eq!(as_set(&plan), both);
    assert!(plan.candidates.iter().all(|c| !c.in_cooldown));

    // OpenAI in cooldown: skipped.
    exec(
        &db,
        "UPDATE llm_providers SET breaker_open_until = now() + interval '1 hour'
         WHERE provider_slug = 'openai'",
    )
    .await;
    let catalog_open = catalog(&db).await;
    let plan = plan_at(&catalog_open, &named, &every_system_key, Utc::now(), 1).unwrap();
    assert_eq!(route(&plan), vec!["openrouter/gpt-4o"]);
    // The cooldown ends at `breaker_open_until`.
    let later = Utc::now() + Duration::hours(2);
    let plan = plan_at(&catalog_open, &named, &every_system_key, later, 1).unwrap();
    assert_eq!(as_set(&plan), both);

    // Only candidate, in cooldown: kept (trying beats refusing).
    let pinned = request(Tier::Free, PowerLevel::Balanced, "openai/gpt-4o");
    let plan = plan_at(&catalog_open, &pinned, &every_system_key, Utc::now(), 1).unwrap();
    assert_eq!(route(&plan), vec![GPT4O]);
    assert!(plan.candidates[0].in_cooldown);

    // Every candidate in cooldown: all kept, ordered as usual (BYOK first here).
    exec(
        &db,
        "UPDATE llm_providers SET breaker_open_until = now() + interval '1 hour'
         WHERE provider_slug = 'openrouter'",
    )
    .await;
    let catalog_all = catalog(&db).await;
    let mut byok = named.clone();
    byok.byok_providers
        .insert(provider_id(&catalog_all, "openrouter"));
    for seed in 0..20 {
        let plan = plan_at(&catalog_all, &byok, &every_system_key, Utc::now(), seed).unwrap();
        assert_eq!(route(&plan), vec!["openrouter/gpt-4o", GPT4O]);
        assert!(plan.candidates.iter().all(|c| c.in_cooldown));
    }
    // A past `breaker_open_until` is a closed breaker.
    exec(
        &db,
        "UPDATE llm_providers SET breaker_open_until = now() - interval '1 second'",
    )
    .await;
    let plan = plan_at(
        &catalog(&db).await,
        &named,
        &every_system_key,
        Utc::now(),
        1,
    )
    .unwrap();
    assert_eq!(as_set(&plan), both);
    assert!(plan.candidates.iter().all(|c| !c.in_cooldown));
}

// ------------------------------------------------------------------ ordering

/// Adds a routing rule for the model `model_id` (upstream id) with the given fields.
async fn add_rule(
    db: &TestDb,
    model_id: &str,
    power_level: &str,
    extra_columns: &str,
    extra_values: &str,
) {
    let (columns, values) = if extra_columns.is_empty() {
        (String::new(), String::new())
    } else {
        (format!(", {extra_columns}"), format!(", {extra_values}"))
    };
    exec(
        db,
        &format!(
            "INSERT INTO llm_routing_rules (model_id, power_level{columns})
             SELECT id, '{power_level}'{values} FROM llm_models WHERE model_id = '{model_id}'"
        ),
    )
    .await;
}

#[tokio::test]
async fn priority_orders_candidates() {
    let db = TestDb::new().await;
    add_rule(&db, "gpt-4o", "balanced", "priority", "0").await;
    add_rule(
        &db,
        "claude-3-5-sonnet-20241022",
        "balanced",
        "priority",
        "2",
    )
    .await;
    let catalog = catalog(&db).await;
    for seed in 0..20 {
        let plan = plan_at(
            &catalog,
            &auto(Tier::Starter, PowerLevel::Balanced),
            &every_system_key,
            Utc::now(),
            seed,
        )
        .unwrap();
        assert_eq!(route(&plan), vec![GPT4O, TURBO, CLAUDE]);
    }
    // A free user loses Claude (starter) without an error: others remain.
    assert_eq!(
        routed(&catalog, &auto(Tier::Free, PowerLevel::Balanced)),
        vec![GPT4O, TURBO]
    );
}

#[tokio::test]
async fn byok_backed_candidates_go_first_within_a_priority() {
    let db = TestDb::new().await;
    // Same priority (1) and weight as the seed's GPT-4 Turbo rule.
    add_rule(
        &db,
        "claude-3-5-sonnet-20241022",
        "balanced",
        "priority",
        "1",
    )
    .await;
    let catalog = catalog(&db).await;
    let anthropic = provider_id(&catalog, "anthropic");

    let mut without = HashSet::new();
    for seed in 0..40 {
        let plan = plan_at(
            &catalog,
            &auto(Tier::Starter, PowerLevel::Balanced),
            &every_system_key,
            Utc::now(),
            seed,
        )
        .unwrap();
        without.insert(route(&plan));
    }
    assert_eq!(
        without.len(),
        2,
        "without BYOK both orders occur: {without:?}"
    );

    let mut byok = auto(Tier::Starter, PowerLevel::Balanced);
    byok.byok_providers.insert(anthropic);
    for seed in 0..40 {
        let plan = plan_at(&catalog, &byok, &every_system_key, Utc::now(), seed).unwrap();
        assert_eq!(route(&plan), vec![CLAUDE, TURBO]);
        assert!(plan.candidates[0].byok && !plan.candidates[1].byok);
    }

    // Priority still comes first: a BYOK candidate of a later priority stays behind.
    exec(
        &db,
        "UPDATE llm_routing_rules SET priority = 2
         WHERE model_id = (SELECT id FROM llm_models WHERE model_id = 'claude-3-5-sonnet-20241022')",
    )
    .await;
    let catalog = self::catalog(&db).await;
    for seed in 0..10 {
        let plan = plan_at(&catalog, &byok, &every_system_key, Utc::now(), seed).unwrap();
        assert_eq!(route(&plan), vec![TURBO, CLAUDE]);
    }
}

#[tokio::test]
async fn fallback_rules_come_last_by_fallback_order() {
    let db = TestDb::new().await;
    // Fallbacks with a *lower* priority than the main rule still come after it.
    add_rule(
        &db,
        "gpt-4o",
        "balanced",
        "priority, is_fallback, fallback_order",
        "0, true, 2",
    )
    .await;
    add_rule(
        &db,
        "claude-3-5-sonnet-20241022",
        "balanced",
        "priority, is_fallback, fallback_order",
        "0, true, 1",
    )
    .await;
    let catalog = catalog(&db).await;
    let plan = plan(&catalog, &auto(Tier::Starter, PowerLevel::Balanced)).unwrap();
    assert_eq!(route(&plan), vec![TURBO, CLAUDE, GPT4O]);
    assert_eq!(
        plan.candidates
            .iter()
            .map(|c| c.is_fallback)
            .collect::<Vec<_>>(),
        vec![false, true, true]
    );

    // With the main candidate gone, the fallbacks remain, in order.
    exec(
        &db,
        "UPDATE llm_models SET is_active = false WHERE model_id = 'gpt-4-turbo'",
    )
    .await;
    let catalog = self::catalog(&db).await;
    assert_eq!(
        routed(&catalog, &auto(Tier::Starter, PowerLevel::Balanced)),
        vec![CLAUDE, GPT4O]
    );
}

#[tokio::test]
async fn duplicate_candidates_keep_their_first_place() {
    let db = TestDb::new().await;
    add_rule(&db, "gpt-4-turbo", "balanced", "priority", "5").await;
    add_rule(&db, "gpt-4o", "balanced", "priority", "3").await;
    add_rule(
        &db,
        "gpt-4o",
        "balanced",
        "is_fallback, fallback_order",
        "true, 1",
    )
    .await;
    let catalog = catalog(&db).await;
    let first_turbo_rule = catalog
        .rules()
        .iter()
        .filter(|r| r.model_id == model_row_id(&catalog, "openai", "gpt-4-turbo"))
        .map(|r| r.id)
        .min()
        .unwrap();
    let plan = plan(&catalog, &auto(Tier::Free, PowerLevel::Balanced)).unwrap();
    assert_eq!(route(&plan), vec![TURBO, GPT4O]);
    assert_eq!(plan.candidates[0].rule_id, Some(first_turbo_rule));
    assert!(
        !plan.candidates[1].is_fallback,
        "kept at its non-fallback place"
    );
}

#[tokio::test]
async fn named_offers_order_by_power_level_priority_then_share_load() {
    let db = TestDb::new().await;
    exec(
        &db,
        "INSERT INTO llm_models (provider_id, model_name, model_id, max_tokens, context_window,
             cost_per_1m_input_tokens, cost_per_1m_output_tokens, power_level_priority)
         SELECT id, 'GPT-4o via OpenRouter', 'gpt-4o', 16384, 128000, 2.5, 10, 5
         FROM llm_providers WHERE provider_slug = 'openrouter';",
    )
    .await;
    let catalog = catalog(&db).await;
    let named = request(Tier::Free, PowerLevel::Balanced, "gpt-4o");
    for seed in 0..10 {
        let plan = plan_at(&catalog, &named, &every_system_key, Utc::now(), seed).unwrap();
        assert_eq!(route(&plan), vec!["openrouter/gpt-4o", GPT4O]);
    }
    // BYOK-backed first within the same priority.
    exec(
        &db,
        "UPDATE llm_models SET power_level_priority = 10 WHERE model_id = 'gpt-4o'",
    )
    .await;
    let catalog = self::catalog(&db).await;
    let mut orders = HashSet::new();
    for seed in 0..40 {
        let plan = plan_at(&catalog, &named, &every_system_key, Utc::now(), seed).unwrap();
        orders.insert(route(&plan));
    }
    assert_eq!(orders.len(), 2, "equal offers share the load: {orders:?}");
    let mut byok = named.clone();
    byok.byok_providers.insert(provider_id(&catalog, "openai"));
    for seed in 0..20 {
        let plan = plan_at(&catalog, &byok, &every_system_key, Utc::now(), seed).unwrap();
        assert_eq!(route(&plan), vec![GPT4O, "openrouter/gpt-4o"]);
    }
}

// ------------------------------------------------------------------ the hold amount

/// A candidate's worst case, through the ledger's one hold function.
fn max_cost(candidate: &Candidate, prompt: u32, requested_output: Option<u32>) -> Decimal {
    max_cost_over_candidates(std::slice::from_ref(candidate), prompt, requested_output)
}

/// The hold over the first `n` candidates (the ones that may be tried).
fn max_cost_over(
    plan: &CandidatePlan,
    n: usize,
    prompt: u32,
    requested_output: Option<u32>,
) -> Decimal {
    let n = n.min(plan.candidates.len());
    max_cost_over_candidates(&plan.candidates[..n], prompt, requested_output)
}

fn max_cost_over_candidates(
    candidates: &[Candidate],
    prompt: u32,
    requested_output: Option<u32>,
) -> Decimal {
    let offers = candidates.iter().map(|c| ledger::HoldOffer {
        prices: ledger::TokenPrices::of(&c.model),
        prompt_tokens: u64::from(prompt),
        max_output_tokens: u64::from(
            OutputBudget::of(&c.model, prompt, requested_output).max_tokens,
        ),
        byok: c.byok,
        cache_writes: ledger::CacheWrites::None,
    });
    ledger::hold_amount(offers, Decimal::ZERO)
}

#[tokio::test]
async fn max_cost_is_the_worst_case_of_the_candidates_that_may_be_tried() {
    let db = TestDb::new().await;
    add_rule(&db, "gpt-4o", "balanced", "priority", "0").await;
    add_rule(
        &db,
        "claude-3-5-sonnet-20241022",
        "balanced",
        "is_fallback",
        "true",
    )
    .await;
    let catalog = catalog(&db).await;
    let plan = plan(&catalog, &auto(Tier::Starter, PowerLevel::Balanced)).unwrap();
    assert_eq!(route(&plan), vec![GPT4O, TURBO, CLAUDE]);
    let [gpt4o, turbo, claude] = &plan.candidates[..] else {
        panic!()
    };

    // prompt × input + (requested output, else the model's max_tokens) × output, per 1M.
    assert_eq!(max_cost(turbo, 1000, None), Decimal::new(13288, 5)); // 0.01 + 4096 × 30e-6
    assert_eq!(max_cost(turbo, 1000, Some(100)), Decimal::new(13, 3)); // 0.01 + 0.003
    assert_eq!(max_cost(gpt4o, 1000, None), Decimal::new(16634, 5)); // 0.0025 + 16384 × 10e-6
    assert_eq!(max_cost(claude, 1000, None), Decimal::new(12588, 5)); // 0.003 + 8192 × 15e-6
    let budget = |c: &Candidate, requested| OutputBudget::of(&c.model, 1000, requested);
    assert_eq!(budget(turbo, None).max_tokens, 4096);
    assert_eq!(budget(turbo, Some(7)).max_tokens, 7);
    // Above the model's output limit: clamped to it, and said so.
    assert_eq!(
        budget(turbo, Some(10_000)),
        OutputBudget {
            max_tokens: 4096,
            clamped: true
        }
    );
    assert!(!budget(turbo, Some(4096)).clamped);

    assert_eq!(max_cost_over(&plan, 1, 1000, None), Decimal::new(16634, 5));
    assert_eq!(max_cost_over(&plan, 3, 1000, None), Decimal::new(16634, 5));
    // With a large requested output: GPT-4o (16,384 limit) holds 10,000 × 10e-6; GPT-4
    // Turbo is clamped to its 4,096 and holds 0.01 + 4096 × 30e-6.
    assert_eq!(
        max_cost_over(&plan, 1, 1000, Some(10_000)),
        Decimal::new(1025, 4)
    );
    assert_eq!(
        max_cost_over(&plan, 2, 1000, Some(10_000)),
        Decimal::new(13288, 5)
    );
    assert_eq!(
        max_cost_over(&plan, 3, 1000, Some(100)),
        Decimal::new(13, 3)
    );
    assert_eq!(max_cost_over(&plan, 0, 1000, None), Decimal::ZERO);

    // No max_tokens anywhere: the documented default; sub-nano amounts round up.
    exec(
        &db,
        "UPDATE llm_models SET max_tokens = NULL, cost_per_1m_input_tokens = 0.0015,
             cost_per_1m_output_tokens = 0
         WHERE model_id = 'gpt-4o'",
    )
    .await;
    let catalog = self::catalog(&db).await;
    let plan = self::plan(
        &catalog,
        &request(Tier::Free, PowerLevel::Balanced, "gpt-4o"),
    )
    .unwrap();
    let candidate = &plan.candidates[0];
    assert_eq!(
        OutputBudget::of(&candidate.model, 1, None).max_tokens,
        DEFAULT_OUTPUT_TOKENS
    );
    assert_eq!(max_cost(candidate, 1, None), Decimal::new(2, 9)); // 1.5e-9 → 2e-9
    assert_eq!(max_cost(candidate, 0, None), Decimal::ZERO);
}

// ------------------------------------------------------------------ properties

#[tokio::test]
async fn weighted_draws_converge_to_the_weights_and_skip_filtered_candidates() {
    let db = TestDb::new().await;
    exec(
        &db,
        "UPDATE llm_routing_rules SET weight = 10 WHERE power_level = 'balanced'",
    )
    .await;
    add_rule(&db, "gpt-4o", "balanced", "priority, weight", "1, 30").await;
    add_rule(
        &db,
        "claude-3-5-sonnet-20241022",
        "balanced",
        "priority, weight",
        "1, 60",
    )
    .await;
    // The heaviest rule points at a provider that is down: it must never be drawn.
    add_rule(
        &db,
        "meta-llama/llama-3-70b-instruct",
        "balanced",
        "priority, weight",
        "1, 1000",
    )
    .await;
    exec(
        &db,
        "UPDATE llm_providers SET health_status = 'down' WHERE provider_slug = 'openrouter'",
    )
    .await;
    let catalog = catalog(&db).await;
    let ceilings = PowerLevelCeilings::default();
    let context = RoutingContext {
        now: Utc::now(),
        has_system_key: &every_system_key,
        ceilings: &ceilings,
    };
    let req = auto(Tier::Professional, PowerLevel::Balanced);
    let mut rng = StdRng::seed_from_u64(42);

    const DRAWS: u32 = 20_000;
    let index = |route: &str| {
        [TURBO, GPT4O, CLAUDE]
            .iter()
            .position(|r| *r == route)
            .unwrap()
    };
    let mut first = [0u32; 3];
    // After Claude (60) is drawn first, the rest is drawn from 10 : 30.
    let (mut after_claude, mut gpt4o_after_claude) = (0u32, 0u32);
    for _ in 0..DRAWS {
        let plan = plan_candidates(&catalog, &req, &context, &mut rng).unwrap();
        let routes = route(&plan);
        assert_eq!(routes.len(), 3, "{routes:?}");
        assert!(
            !routes.iter().any(|r| r == LLAMA),
            "a filtered-out candidate was drawn"
        );
        first[index(&routes[0])] += 1;
        if routes[0] == CLAUDE {
            after_claude += 1;
            gpt4o_after_claude += u32::from(routes[1] == GPT4O);
        }
    }
    let expected = [0.1, 0.3, 0.6];
    let chi_square: f64 = first
        .iter()
        .zip(expected)
        .map(|(&observed, p)| {
            let e = p * f64::from(DRAWS);
            (f64::from(observed) - e).powi(2) / e
        })
        .sum();
    // 2 degrees of freedom: 13.8 is the 99.9th percentile.
    assert!(chi_square < 13.8, "χ² = {chi_square}, counts {first:?}");
    for (observed, p) in first.iter().zip(expected) {
        let share = f64::from(*observed) / f64::from(DRAWS);
        assert!((share - p).abs() < 0.015, "{first:?}");
    }
    let share = f64::from(gpt4o_after_claude) / f64::from(after_claude);
    assert!((share - 0.75).abs() < 0.03, "{share}");
}

/// An independent statement of the filters (no deprecation here): the (provider, model)
/// pairs that may appear in the plan of `request`.
fn eligible_by_oracle(
    catalog: &Catalog,
    request: &RoutingRequest,
    has_system_key: bool,
    now: DateTime<Utc>,
) -> BTreeSet<(i32, i32)> {
    let ceilings = PowerLevelCeilings::default();
    let prompt = u64::from(request.estimated_prompt_tokens);
    // The output a call may produce: the request's, at most the model's limit (4,096 when
    // unset) and what the window leaves (at least 1).
    let output = |m: &Model| {
        request.requested_output_tokens.map_or(0, |o| {
            let limit = m
                .max_tokens
                .filter(|max| *max > 0)
                .map_or(4_096, |max| max as u64);
            let left = (m.context_window as u64).saturating_sub(prompt).max(1);
            u64::from(o).min(limit).min(left)
        })
    };
    let caps = request.capabilities;
    let mut eligible: Vec<(i32, i32, bool)> = Vec::new();
    for rule in catalog.rules() {
        let matches = rule.is_active
            && rule.power_level == request.power_level
            && rule.user_tier.is_none_or(|t| t == request.tier)
            && rule.task_type.is_none_or(|t| t == request.task_type);
        if !matches {
            continue;
        }
        let m = catalog.model(rule.model_id).unwrap();
        let p = catalog.provider(m.provider_id).unwrap();
        let byok = p.is_byok_supported && request.byok_providers.contains(&p.id);
        let ok = request.tier >= m.min_tier_required
            && request.tier >= p.min_tier_required
            && m.is_active
            && p.is_active
            && p.health_status != HealthStatus::Down
            && (!caps.streaming || (m.supports_streaming && p.supports_streaming))
            && (!caps.function_calling
                || (m.supports_function_calling && p.supports_function_calling))
            && (!caps.vision || (m.supports_vision && p.supports_vision))
            && (!caps.json_mode || m.supports_json_mode)
            && prompt < m.context_window as u64
            && rule
                .min_tokens
                .is_none_or(|min| prompt + output(m) >= min as u64)
            && rule
                .max_tokens
                .is_none_or(|max| prompt + output(m) <= max as u64)
            && blended_cost_per_1m(m) <= ceilings.explicit_rule_ceiling(request.power_level)
            && (!rule.requires_byok || byok)
            && (byok || (p.is_system_provider && has_system_key) || p.auth_type == AuthType::None);
        if ok {
            eligible.push((p.id, m.id, p.breaker_is_open(now)));
        }
    }
    if eligible.iter().any(|(_, _, open)| !open) {
        eligible.retain(|(_, _, open)| !open);
    }
    eligible.into_iter().map(|(p, m, _)| (p, m)).collect()
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn randomized_catalog(seed: &Catalog, rng: &mut StdRng, now: DateTime<Utc>) -> Catalog {
    let tiers = Tier::ALL;
    let tier = |rng: &mut StdRng| {
        if rng.random_bool(0.7) {
            Tier::Free
        } else {
            pick(rng, tiers)
        }
    };
    // The catalog of the original seed: the Bedrock rows (0027) would change every draw.
    let providers: Vec<Provider> = seed
        .providers()
        .iter()
        .filter(|p| p.provider_slug != "bedrock")
        .map(|p| {
            let mut p = (**p).clone();
            p.is_active = rng.random_bool(0.9);
            p.health_status = if rng.random_bool(0.1) {
                HealthStatus::Down
            } else {
                pick(rng, HealthStatus::ALL)
            };
            p.breaker_open_until = match rng.random_range(0..5) {
                0 => Some(now + Duration::minutes(5)),
                1 => Some(now - Duration::minutes(5)),
                _ => None,
            };
            p.supports_streaming = rng.random_bool(0.9);
            p.supports_function_calling = rng.random_bool(0.8);
            p.supports_vision = rng.random_bool(0.8);
            p.is_byok_supported = rng.random_bool(0.8);
            p.is_system_provider = rng.random_bool(0.6);
            p.auth_type = if rng.random_bool(0.1) {
                AuthType::None
            } else {
                AuthType::Bearer
            };
            p.min_tier_required = tier(rng);
            p
        })
        .collect();
    let provider_ids: Vec<i32> = providers.iter().map(|p| p.id).collect();
    let prices = [0.1, 0.3, 1.0, 2.5, 2.5, 10.0, 30.0, 300.0];
    let mut models: Vec<Model> = Vec::new();
    let templates: Vec<_> = seed
        .models()
        .iter()
        .filter(|m| provider_ids.contains(&m.provider_id))
        .collect();
    for (i, template) in templates.into_iter().cycle().take(8).enumerate() {
        let mut m = (**template).clone();
        m.id = 1000 + i as i32;
        m.model_id = format!("model-{i}");
        m.model_type = ModelType::Chat;
        m.provider_id = pick(rng, &provider_ids);
        m.is_active = rng.random_bool(0.85);
        m.is_deprecated = false;
        m.supports_streaming = rng.random_bool(0.9);
        m.supports_function_calling = rng.random_bool(0.7);
        m.supports_vision = rng.random_bool(0.7);
        m.supports_json_mode = rng.random_bool(0.7);
        m.context_window = rng.random_range(2_000..200_000);
        m.max_tokens = rng.random_bool(0.7).then(|| rng.random_range(500..20_000));
        m.cost_per_1m_input_tokens = Decimal::try_from(pick(rng, &prices)).unwrap();
        m.cost_per_1m_output_tokens = Decimal::try_from(pick(rng, &prices)).unwrap();
        m.min_tier_required = tier(rng);
        models.push(m);
    }
    let model_ids: Vec<i32> = models.iter().map(|m| m.id).collect();
    let template = seed.rules()[0].as_ref().clone();
    let rules: Vec<RoutingRule> = (0..rng.random_range(6..20))
        .map(|i| {
            let mut r = template.clone();
            r.id = 5000 + i;
            r.model_id = pick(rng, &model_ids);
            r.power_level = pick(rng, PowerLevel::ALL);
            r.user_tier = rng.random_bool(0.3).then(|| pick(rng, tiers));
            r.task_type = rng.random_bool(0.3).then(|| pick(rng, TaskType::ALL));
            r.priority = rng.random_range(0..3);
            r.weight = rng.random_range(1..100);
            r.min_tokens = rng.random_bool(0.2).then(|| rng.random_range(0..5_000));
            r.max_tokens = rng
                .random_bool(0.2)
                .then(|| r.min_tokens.unwrap_or(0) + rng.random_range(1..50_000));
            r.requires_byok = rng.random_bool(0.2);
            r.is_fallback = rng.random_bool(0.25);
            r.fallback_order = rng.random_range(0..3);
            r.is_active = rng.random_bool(0.9);
            r
        })
        .collect();
    Catalog::new(providers, models, rules)
}

#[tokio::test]
async fn random_catalogs_never_yield_a_filtered_out_candidate() {
    let db = TestDb::new().await;
    let seed = catalog(&db).await;
    let mut rng = StdRng::seed_from_u64(2024);
    let now = Utc::now();
    let ceilings = PowerLevelCeilings::default();
    let (mut planned, mut refused) = (0, 0);
    for iteration in 0..3_000 {
        let catalog = randomized_catalog(&seed, &mut rng, now);
        let mut req = auto(pick(&mut rng, Tier::ALL), pick(&mut rng, PowerLevel::ALL));
        req.task_type = pick(&mut rng, TaskType::ALL);
        req.capabilities = RequiredCapabilities {
            streaming: rng.random_bool(0.2),
            function_calling: rng.random_bool(0.2),
            vision: rng.random_bool(0.2),
            json_mode: rng.random_bool(0.2),
            token_input: false,
        };
        req.estimated_prompt_tokens = rng.random_range(0..20_000);
        req.requested_output_tokens = rng.random_bool(0.5).then(|| rng.random_range(0..8_000));
        req.byok_providers = catalog
            .providers()
            .iter()
            .filter(|_| rng.random_bool(0.3))
            .map(|p| p.id)
            .collect();
        let has_system_key = rng.random_bool(0.7);
        let keys = move |_: &str| has_system_key;
        let context = RoutingContext {
            now,
            has_system_key: &keys,
            ceilings: &ceilings,
        };
        let expected = eligible_by_oracle(&catalog, &req, has_system_key, now);
        match plan_candidates(&catalog, &req, &context, &mut rng) {
            Ok(plan) => {
                planned += 1;
                let got: BTreeSet<(i32, i32)> = plan
                    .candidates
                    .iter()
                    .map(|c| (c.provider.id, c.model.id))
                    .collect();
                assert_eq!(got.len(), plan.candidates.len(), "#{iteration}: duplicates");
                assert_eq!(got, expected, "#{iteration}: {req:?}");
                // Ordering: fallbacks last by fallback_order, then offers that do not clamp
                // the requested output, then priority, BYOK first.
                let rules: HashMap<i32, &RoutingRule> =
                    catalog.rules().iter().map(|r| (r.id, r.as_ref())).collect();
                let keys: Vec<(bool, i32, bool, i32, bool)> = plan
                    .candidates
                    .iter()
                    .map(|c| {
                        let rule = rules[&c.rule_id.unwrap()];
                        let fallback_order = if rule.is_fallback {
                            rule.fallback_order
                        } else {
                            0
                        };
                        let clamps = req
                            .requested_output_tokens
                            .is_some_and(|o| o > c.output.max_tokens);
                        (
                            rule.is_fallback,
                            fallback_order,
                            clamps,
                            rule.priority,
                            !c.byok,
                        )
                    })
                    .collect();
                assert!(
                    keys.windows(2).all(|w| w[0] <= w[1]),
                    "#{iteration}: {keys:?}"
                );
                for c in plan.candidates.iter() {
                    assert_eq!(
                        c.byok,
                        c.provider.is_byok_supported && req.byok_providers.contains(&c.provider.id)
                    );
                    assert_eq!(c.in_cooldown, c.provider.breaker_is_open(now));
                }
            }
            Err(e) => {
                refused += 1;
                assert!(
                    expected.is_empty(),
                    "#{iteration}: {e} but {expected:?} were eligible"
                );
                assert!(matches!(http_status(&e), 400 | 403 | 503), "{e:?}");
            }
        }
    }
    // The generator exercises both outcomes.
    assert!(
        planned > 500 && refused > 500,
        "{planned} planned, {refused} refused"
    );
}
