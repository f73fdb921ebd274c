//! Routing: which (provider, model) candidates a chat request may use, in which order —
//! the [`CandidatePlan`] — or why there is none ([`RoutingError`]: 404, 403, 400 for a
//! prompt too long for every model, or 503 naming the filter). Pure functions over a catalog snapshot ([`crate::catalog::Catalog`]): no
//! HTTP types, no queries per request (the user's BYOK providers come from
//! [`crate::keys::byok::active_byok_provider_ids`]).
//!
//! - [`plan`]: sources (`auto` rules, a model id, `provider_slug/model_id`), the filters of
//!   routing.md in order, and the ordering (priority, BYOK first, weighted draw, fallbacks).
//! - [`ceilings`]: the power-level cost ceilings and how they apply to `auto`.
//! - [`weighted`]: the weighted random draw without replacement (random source injected).

pub mod ceilings;
pub mod error;
pub mod plan;
pub mod request;
pub mod weighted;

pub use ceilings::blended_cost_per_1m;
pub use error::{RoutingError, RoutingFilter};
pub use plan::{
    Candidate, CandidatePlan, DEFAULT_OUTPUT_TOKENS, MAX_REPLACEMENT_HOPS, OutputBudget,
    plan_candidates,
};
pub use request::{RequiredCapabilities, RoutingContext, RoutingRequest};
