//! [`Catalog`]: one immutable snapshot of every provider, model and routing rule, with
//! the indexes routing looks things up by (row id, provider slug, the upstream model id
//! string, rules by power level). Built once per refresh, shared behind an `Arc`.

use std::collections::HashMap;
use std::sync::Arc;

use super::tables::{Model, Provider, RoutingRule};
use super::types::{PowerLevel, Tier};

#[derive(Debug, Default)]
pub struct Catalog {
    providers: Vec<Arc<Provider>>,
    models: Vec<Arc<Model>>,
    rules: Vec<Arc<RoutingRule>>,
    provider_by_id: HashMap<i32, usize>,
    provider_by_slug: HashMap<String, usize>,
    model_by_id: HashMap<i32, usize>,
    /// Upstream model id string → every offer of it (one per provider), in row-id order.
    offers_by_model_id: HashMap<String, Vec<usize>>,
    rules_by_power_level: HashMap<PowerLevel, Vec<usize>>,
}

impl Catalog {
    /// Builds the snapshot and its indexes. Rows are kept in the given order.
    pub fn new(providers: Vec<Provider>, models: Vec<Model>, rules: Vec<RoutingRule>) -> Self {
        let providers: Vec<Arc<Provider>> = providers.into_iter().map(Arc::new).collect();
        let models: Vec<Arc<Model>> = models.into_iter().map(Arc::new).collect();
        let rules: Vec<Arc<RoutingRule>> = rules.into_iter().map(Arc::new).collect();

        let mut provider_by_id = HashMap::with_capacity(providers.len());
        let mut provider_by_slug = HashMap::with_capacity(providers.len());
        for (index, provider) in providers.iter().enumerate() {
            provider_by_id.insert(provider.id, index);
            provider_by_slug.insert(provider.provider_slug.clone(), index);
        }
        let mut model_by_id = HashMap::with_capacity(models.len());
        let mut offers_by_model_id: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, model) in models.iter().enumerate() {
            model_by_id.insert(model.id, index);
            offers_by_model_id
                .entry(model.model_id.clone())
                .or_default()
                .push(index);
        }
        let mut rules_by_power_level: HashMap<PowerLevel, Vec<usize>> = HashMap::new();
        for (index, rule) in rules.iter().enumerate() {
            rules_by_power_level
                .entry(rule.power_level)
                .or_default()
                .push(index);
        }
        Self {
            providers,
            models,
            rules,
            provider_by_id,
            provider_by_slug,
            model_by_id,
            offers_by_model_id,
            rules_by_power_level,
        }
    }

    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    pub fn models(&self) -> &[Arc<Model>] {
        &self.models
    }

    pub fn rules(&self) -> &[Arc<RoutingRule>] {
        &self.rules
    }

    pub fn provider(&self, id: i32) -> Option<&Arc<Provider>> {
        self.provider_by_id
            .get(&id)
            .and_then(|&i| self.providers.get(i))
    }

    pub fn provider_by_slug(&self, slug: &str) -> Option<&Arc<Provider>> {
        self.provider_by_slug
            .get(slug)
            .and_then(|&i| self.providers.get(i))
    }

    /// A model by its row id.
    pub fn model(&self, id: i32) -> Option<&Arc<Model>> {
        self.model_by_id.get(&id).and_then(|&i| self.models.get(i))
    }

    /// Every offer (one per provider) of the upstream model id `model_id`, active or not.
    pub fn offers(&self, model_id: &str) -> impl Iterator<Item = &Arc<Model>> {
        self.offers_by_model_id
            .get(model_id)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.models.get(i))
    }

    /// The offer of `model_id` by the provider `provider_slug`.
    pub fn offer(&self, provider_slug: &str, model_id: &str) -> Option<&Arc<Model>> {
        let provider = self.provider_by_slug(provider_slug)?;
        self.offers(model_id).find(|m| m.provider_id == provider.id)
    }

    /// Every rule (active or not) for this power level.
    pub fn rules_for(&self, power_level: PowerLevel) -> impl Iterator<Item = &Arc<RoutingRule>> {
        self.rules_by_power_level
            .get(&power_level)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.rules.get(i))
    }

    /// The offers a user of `tier` may request by name (for `GET /v1/models`): model and
    /// provider active, both within the tier, not deprecated (a deprecated model is reachable
    /// only through its replacement). Health is not considered: it changes by the minute.
    pub fn models_for_tier(
        &self,
        tier: Tier,
    ) -> impl Iterator<Item = (&Arc<Model>, &Arc<Provider>)> {
        self.models.iter().filter_map(move |model| {
            let provider = self.provider(model.provider_id)?;
            let usable = model.is_active
                && !model.is_deprecated
                && provider.is_active
                && tier >= model.min_tier_required
                && tier >= provider.min_tier_required;
            usable.then_some((model, provider))
        })
    }
}
