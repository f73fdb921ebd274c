#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The catalog against a real PostgreSQL: loading the seed into typed rows and indexes, and
//! the in-process cache (TTL refresh, invalidation, a failed refresh keeping the last good
//! snapshot, the first load failing, single flight).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rust_decimal::Decimal;
use switchboard_core::catalog::{
    ApiFormat, AuthType, Catalog, CatalogCache, CatalogError, CatalogSource, HealthStatus,
    ModelType, PowerLevel, Tier, load_catalog,
};
use switchboard_tests::test_db::{TestDb, with_database};
use tokio_postgres::NoTls;

fn pool_for(url: &str) -> Pool {
    let manager = Manager::from_config(
        url.parse().unwrap(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(4)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .build()
        .unwrap()
}

async fn exec(db: &TestDb, sql: &str) {
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(sql)
        .await
        .unwrap();
}

fn provider_count(catalog: &Catalog) -> usize {
    catalog.providers().len()
}

const NEW_PROVIDER: &str = "INSERT INTO llm_providers (provider_name, provider_slug, base_url)
     VALUES ('Extra', 'extra', 'https://extra.example/v1')";

#[tokio::test]
async fn the_seed_loads_into_typed_rows_and_indexes() {
    let db = TestDb::new().await;
    let client = db.pool().get().await.unwrap();
    let catalog = load_catalog(&**client).await.unwrap();
    // The original seed and Bedrock's provider with its five models (0027, inactive).
    assert_eq!(catalog.providers().len(), 8);
    assert_eq!(catalog.models().len(), 11);
    assert_eq!(catalog.rules().len(), 9);

    let anthropic = catalog.provider_by_slug("anthropic").unwrap();
    assert_eq!(anthropic.api_format, ApiFormat::Anthropic);
    assert_eq!(anthropic.auth_type, AuthType::XApiKey);
    assert_eq!(anthropic.health_status, HealthStatus::Unknown);
    assert_eq!(anthropic.rate_limit_rpm, Some(4000));
    assert!(anthropic.is_system_provider && anthropic.is_byok_supported);
    assert!(!catalog.provider_by_slug("groq").unwrap().is_system_provider);
    assert_eq!(
        catalog.provider(anthropic.id).unwrap().provider_slug,
        "anthropic"
    );
    assert!(catalog.provider_by_slug("nope").is_none());

    let gpt4o = catalog.offer("openai", "gpt-4o").unwrap();
    assert_eq!(gpt4o.cost_per_1m_input_tokens, Decimal::new(250, 2));
    assert_eq!(gpt4o.cost_per_1m_output_tokens, Decimal::from(10));
    assert_eq!(gpt4o.cached_input_price(), Decimal::new(125, 2));
    assert_eq!(gpt4o.power_level, Some(PowerLevel::Balanced));
    assert_eq!(gpt4o.context_window, 128_000);
    assert_eq!(gpt4o.max_tokens, Some(16_384));
    // NULL cached price = the input price.
    let turbo = catalog.offer("openai", "gpt-4-turbo").unwrap();
    assert_eq!(turbo.cost_per_1m_tokens_cached, None);
    assert_eq!(turbo.cached_input_price(), Decimal::from(10));
    let claude = catalog.offers("claude-3-5-sonnet-20241022").next().unwrap();
    assert_eq!(claude.min_tier_required, Tier::Starter);
    assert_eq!(catalog.model(claude.id).unwrap().model_id, claude.model_id);
    // Model ids with `/` are plain keys.
    let llama: Vec<_> = catalog.offers("meta-llama/llama-3-70b-instruct").collect();
    assert_eq!(llama.len(), 1);
    assert_eq!(
        catalog
            .provider(llama[0].provider_id)
            .unwrap()
            .provider_slug,
        "openrouter"
    );
    assert!(catalog.offer("anthropic", "gpt-4o").is_none());

    for (level, model_id) in [
        (PowerLevel::Eco, "meta-llama/llama-3-70b-instruct"),
        (PowerLevel::Balanced, "gpt-4-turbo"),
        (PowerLevel::Precision, "claude-3-5-sonnet-20241022"),
    ] {
        // One chat rule per level (each level also has the two embedding rules).
        let rules: Vec<_> = catalog
            .rules_for(level)
            .filter(|r| catalog.model(r.model_id).unwrap().model_type == ModelType::Chat)
            .collect();
        assert_eq!(rules.len(), 1, "{level}");
        assert_eq!(catalog.rules_for(level).count(), 3, "{level}");
        let rule = rules[0];
        assert_eq!(catalog.model(rule.model_id).unwrap().model_id, model_id);
        assert_eq!((rule.priority, rule.weight), (1, 100));
        assert_eq!((rule.user_tier, rule.task_type), (None, None));
        assert!(rule.is_active && !rule.is_fallback && !rule.requires_byok);
    }

    // What `GET /v1/models` lists per tier.
    let listed = |tier| {
        let mut ids: Vec<String> = catalog
            .models_for_tier(tier)
            .map(|(m, p)| format!("{}/{}", p.provider_slug, m.model_id))
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        listed(Tier::Free),
        vec![
            "google/text-embedding-004",
            "openai/gpt-4-turbo",
            "openai/gpt-4o",
            "openai/text-embedding-3-small",
            "openrouter/meta-llama/llama-3-70b-instruct"
        ]
    );
    assert_eq!(listed(Tier::Starter).len(), 6);
}

#[tokio::test]
async fn new_columns_and_states_round_trip() {
    let db = TestDb::new().await;
    exec(
        &db,
        "UPDATE llm_providers SET health_status = 'down', is_active = false, disabled_reason = 'health',
             breaker_open_until = '2030-01-01T00:00:00Z', breaker_consecutive_failures = 3,
             auth_type = 'none', min_tier_required = 'enterprise'
         WHERE provider_slug = 'groq';
         UPDATE llm_models SET is_deprecated = true, deprecation_date = '2025-06-30',
             replacement_model_id = (SELECT id FROM llm_models WHERE model_id = 'gpt-4o'),
             avg_tokens_per_second = 87.5, power_level = NULL
         WHERE model_id = 'gpt-4-turbo';
         UPDATE llm_routing_rules SET user_tier = 'starter', task_type = 'code', min_tokens = 10,
             max_tokens = 20, requires_byok = true, is_fallback = true, fallback_order = 2
         WHERE power_level = 'eco';",
    )
    .await;
    let client = db.pool().get().await.unwrap();
    let catalog = load_catalog(&**client).await.unwrap();
    let groq = catalog.provider_by_slug("groq").unwrap();
    assert_eq!(groq.health_status, HealthStatus::Down);
    assert!(!groq.is_active);
    assert_eq!(groq.disabled_reason.as_deref(), Some("health"));
    assert_eq!(groq.auth_type, AuthType::None);
    assert_eq!(groq.min_tier_required, Tier::Enterprise);
    assert_eq!(groq.breaker_consecutive_failures, 3);
    let open_until = groq.breaker_open_until.unwrap();
    assert!(groq.breaker_is_open(open_until - chrono::Duration::seconds(1)));
    assert!(!groq.breaker_is_open(open_until));

    let turbo = catalog.offer("openai", "gpt-4-turbo").unwrap();
    assert!(turbo.is_deprecated);
    assert_eq!(
        turbo.replacement_model_id,
        Some(catalog.offer("openai", "gpt-4o").unwrap().id)
    );
    assert_eq!(turbo.avg_tokens_per_second, Some(Decimal::new(875, 1)));
    assert_eq!(turbo.power_level, None);
    assert_eq!(turbo.deprecation_date.unwrap().to_string(), "2025-06-30");

    let eco = catalog.rules_for(PowerLevel::Eco).next().unwrap();
    assert_eq!(eco.user_tier, Some(Tier::Starter));
    assert_eq!(eco.task_type.map(|t| t.as_str()), Some("code"));
    assert_eq!((eco.min_tokens, eco.max_tokens), (Some(10), Some(20)));
    assert!(eco.requires_byok && eco.is_fallback);
    assert_eq!(eco.fallback_order, 2);
}

#[tokio::test]
async fn cached_snapshot_refreshes_after_the_ttl() {
    let db = TestDb::new().await;
    let cache = CatalogCache::new(Duration::from_millis(300));
    assert!(cache.current().is_none());
    let first = cache.get(db.pool()).await.unwrap();
    assert_eq!(provider_count(&first), 8);

    exec(&db, NEW_PROVIDER).await;
    // Within the TTL: the same snapshot, no query.
    let again = cache.get(db.pool()).await.unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(provider_count(&again), 8);

    tokio::time::sleep(Duration::from_millis(350)).await;
    let refreshed = cache.get(db.pool()).await.unwrap();
    assert_eq!(provider_count(&refreshed), 9);
    assert!(Arc::ptr_eq(&refreshed, &cache.current().unwrap()));
    // Holders of the old snapshot keep a consistent view.
    assert_eq!(provider_count(&first), 8);
}

#[tokio::test]
async fn invalidate_makes_the_next_call_reload() {
    let db = TestDb::new().await;
    let cache = CatalogCache::new(Duration::from_secs(3600));
    let first = cache.get(db.pool()).await.unwrap();
    exec(&db, NEW_PROVIDER).await;
    assert_eq!(provider_count(&cache.get(db.pool()).await.unwrap()), 8);
    cache.invalidate();
    let reloaded = cache.get(db.pool()).await.unwrap();
    assert_eq!(provider_count(&reloaded), 9);
    assert!(!Arc::ptr_eq(&first, &reloaded));
    // And it is fresh again afterwards.
    assert!(Arc::ptr_eq(&reloaded, &cache.get(db.pool()).await.unwrap()));
}

#[tokio::test]
async fn a_failed_refresh_keeps_serving_the_last_good_snapshot() {
    let db = TestDb::new().await;
    // The cache's own pool, so dropping the database really breaks it.
    let pool = pool_for(db.url());
    let cache = CatalogCache::new(Duration::from_millis(100));
    let good = cache.get(&pool).await.unwrap();
    assert_eq!(provider_count(&good), 8);
    drop(db); // DROP DATABASE … WITH (FORCE): connections end, reconnects fail.

    tokio::time::sleep(Duration::from_millis(150)).await;
    for _ in 0..3 {
        let served = cache.get(&pool).await.unwrap();
        assert!(Arc::ptr_eq(&good, &served));
    }
    // The failure postpones the next attempt by one TTL.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(Arc::ptr_eq(&good, &cache.get(&pool).await.unwrap()));
}

#[tokio::test]
async fn only_the_first_load_can_fail() {
    let db = TestDb::new().await;
    let missing = pool_for(&with_database(db.url(), "sbtest_does_not_exist"));
    let cache = CatalogCache::new(Duration::from_secs(5));
    let error = cache.get(&missing).await.unwrap_err();
    assert!(matches!(error, CatalogError::Pool(_)), "{error:?}");
    assert!(cache.current().is_none());
    // A later call tries again (and succeeds against a working source).
    assert_eq!(provider_count(&cache.get(db.pool()).await.unwrap()), 8);
}

/// A source that counts its loads, takes `delay` per load, and can be switched to a
/// broken pool.
struct CountingSource {
    pool: Pool,
    broken: Pool,
    fail: AtomicBool,
    loads: AtomicUsize,
    delay: Duration,
}

impl CatalogSource for CountingSource {
    async fn load_catalog(&self) -> Result<Catalog, CatalogError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let pool = if self.fail.load(Ordering::SeqCst) {
            &self.broken
        } else {
            &self.pool
        };
        let client = pool.get().await?;
        load_catalog(&**client).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_load() {
    let db = TestDb::new().await;
    let source = Arc::new(CountingSource {
        pool: db.pool().clone(),
        broken: pool_for(&with_database(db.url(), "sbtest_does_not_exist")),
        fail: AtomicBool::new(false),
        loads: AtomicUsize::new(0),
        delay: Duration::from_millis(500),
    });
    let cache = Arc::new(CatalogCache::new(Duration::from_millis(600)));

    // No snapshot yet: everyone waits for the one load.
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let (cache, source) = (Arc::clone(&cache), Arc::clone(&source));
            tokio::spawn(async move { cache.get(&*source).await.unwrap() })
        })
        .collect();
    let mut snapshots = Vec::new();
    for caller in callers {
        snapshots.push(caller.await.unwrap());
    }
    assert_eq!(source.loads.load(Ordering::SeqCst), 1);
    assert!(snapshots.iter().all(|s| Arc::ptr_eq(s, &snapshots[0])));
    let first = Arc::clone(&snapshots[0]);

    // Stale snapshot: one caller reloads, the others get the old one without waiting.
    tokio::time::sleep(Duration::from_millis(650)).await;
    exec(&db, NEW_PROVIDER).await;
    let started = std::time::Instant::now();
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let (cache, source) = (Arc::clone(&cache), Arc::clone(&source));
            tokio::spawn(async move {
                let snapshot = cache.get(&*source).await.unwrap();
                (snapshot, std::time::Instant::now())
            })
        })
        .collect();
    let mut old = 0;
    let mut new = 0;
    for caller in callers {
        let (snapshot, done) = caller.await.unwrap();
        if Arc::ptr_eq(&snapshot, &first) {
            old += 1;
            // Served at once, not after the 500 ms load.
            assert!(
                done - started < Duration::from_millis(400),
                "{:?}",
                done - started
            );
        } else {
            assert_eq!(provider_count(&snapshot), 9);
            new += 1;
        }
    }
    assert_eq!(source.loads.load(Ordering::SeqCst), 2);
    assert!(new >= 1, "the reloading caller gets the new snapshot");
    assert_eq!(old + new, 16);
    assert_eq!(provider_count(&cache.current().unwrap()), 9);

    // A failing reload under concurrency: one attempt, everyone keeps the last snapshot.
    tokio::time::sleep(Duration::from_millis(650)).await;
    source.fail.store(true, Ordering::SeqCst);
    let last_good = cache.current().unwrap();
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (cache, source) = (Arc::clone(&cache), Arc::clone(&source));
            tokio::spawn(async move { cache.get(&*source).await.unwrap() })
        })
        .collect();
    for caller in callers {
        assert!(Arc::ptr_eq(&caller.await.unwrap(), &last_good));
    }
    assert_eq!(source.loads.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_zero_ttl_reloads_on_every_call() {
    let db = TestDb::new().await;
    let cache = Arc::new(CatalogCache::new(Duration::ZERO));
    let a = cache.get(db.pool()).await.unwrap();
    // The future is Send: handlers may await it on a multi-threaded runtime.
    let (task_cache, pool) = (Arc::clone(&cache), db.pool().clone());
    let b = tokio::spawn(async move { task_cache.get(&pool).await.unwrap() })
        .await
        .unwrap();
    assert!(!Arc::ptr_eq(&a, &b));
}

/// Read-your-writes (api.md, Admin function): right after `POST /admin/models` answers 201,
/// every request of the same process sees the model — none is served the snapshot from
/// before the write while one caller reloads. Before the fix, 39 of 40 such requests were
/// 404 "does not exist".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_created_is_used_at_once_by_every_concurrent_request() {
    use axum::body::Body;
    use http::{Request, StatusCode};
    use serde_json::json;
    use switchboard_tests::gateway::{Gateway, chat_request};
    use tower::ServiceExt;

    let gw = Gateway::start().await;
    let key = gw.user("alice", "enterprise", "100.00").await;
    let admin = gw.user("root", "enterprise", "0").await;
    gw.db
        .pool()
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE gateway_api_keys SET role = 'admin' WHERE user_id = 'root'",
            &[],
        )
        .await
        .unwrap();
    let hello =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    // A warm snapshot, fresh for the whole test (TTL 5 s).
    let (status, _, _) = gw.chat(&key, &hello("gpt-4o"), &[]).await;
    assert_eq!(status, StatusCode::OK);

    for round in 0..3 {
        let model_id = format!("fresh-model-{round}");
        let openai_id: i32 = gw
            .db
            .pool()
            .get()
            .await
            .unwrap()
            .query_one(
                "SELECT id FROM llm_providers WHERE provider_slug = 'openai'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let create = Request::post("/admin/models")
            .header("authorization", format!("Bearer {admin}"))
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"provider_id": openai_id, "model_id": model_id, "context_window": 128000,
                       "max_tokens": 4096, "cost_per_1m_input_tokens": "1.00",
                       "cost_per_1m_output_tokens": "2.00"})
                .to_string(),
            ))
            .unwrap();
        let created = gw.send(create).await;
        assert_eq!(created.status(), StatusCode::CREATED, "round {round}");
        let callers: Vec<_> = (0..50)
            .map(|_| {
                let app = gw.app.clone();
                let request = chat_request(&key, &hello(&model_id), &[]);
                tokio::spawn(async move { app.oneshot(request).await.unwrap().status() })
            })
            .collect();
        let mut statuses = Vec::new();
        for caller in callers {
            statuses.push(caller.await.unwrap());
        }
        let not_ok: Vec<_> = statuses.iter().filter(|s| **s != StatusCode::OK).collect();
        assert!(not_ok.is_empty(), "round {round}: {not_ok:?}");
    }
    gw.assert_ledger_consistent("alice").await;
}

/// After an invalidation, callers wait for one load that began after it (never the old
/// snapshot while another caller reloads); when that load fails, they share its outcome
/// (the last good snapshot) instead of each trying the database, until one TTL later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_after_an_invalidation_wait_for_one_fresh_load() {
    let db = TestDb::new().await;
    let source = Arc::new(CountingSource {
        pool: db.pool().clone(),
        broken: pool_for(&with_database(db.url(), "sbtest_does_not_exist")),
        fail: AtomicBool::new(false),
        loads: AtomicUsize::new(0),
        delay: Duration::from_millis(200),
    });
    let cache = Arc::new(CatalogCache::new(Duration::from_millis(700)));
    let first = cache.get(&*source).await.unwrap();

    let concurrent_gets = |n: usize| {
        (0..n)
            .map(|_| {
                let (cache, source) = (Arc::clone(&cache), Arc::clone(&source));
                tokio::spawn(async move { cache.get(&*source).await.unwrap() })
            })
            .collect::<Vec<_>>()
    };
    exec(&db, NEW_PROVIDER).await;
    cache.invalidate();
    for caller in concurrent_gets(16) {
        assert_eq!(provider_count(&caller.await.unwrap()), 9);
    }
    assert_eq!(
        source.loads.load(Ordering::SeqCst),
        2,
        "one load for all 16"
    );

    // A failing load after an invalidation: one attempt, the last good snapshot for all.
    source.fail.store(true, Ordering::SeqCst);
    cache.invalidate();
    let last_good = cache.current().unwrap();
    for caller in concurrent_gets(8) {
        assert!(Arc::ptr_eq(&caller.await.unwrap(), &last_good));
    }
    assert_eq!(source.loads.load(Ordering::SeqCst), 3);
    // Within the TTL after the failure: served without another attempt.
    assert!(Arc::ptr_eq(&cache.get(&*source).await.unwrap(), &last_good));
    assert_eq!(source.loads.load(Ordering::SeqCst), 3);
    // Then the next caller tries again, and sees the database as it is now.
    source.fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(750)).await;
    let reloaded = cache.get(&*source).await.unwrap();
    assert_eq!(source.loads.load(Ordering::SeqCst), 4);
    assert!(!Arc::ptr_eq(&reloaded, &first) && !Arc::ptr_eq(&reloaded, &last_good));
}
