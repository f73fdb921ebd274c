//! The cost formula (ledger.md): disjoint token buckets (uncached input, cached input,
//! 5-minute and 1-hour prompt-cache writes, output), each priced per one million tokens,
//! summed exactly and rounded UP to 1e-9 USD once per call. Rounding up means the
//! platform never under-charges by a fraction; the error is below one nano-dollar per call.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// Decimal places kept for money: 1e-9 USD.
pub const MONEY_SCALE: u32 = 9;

/// A model's list prices in USD per one million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPrices {
    pub input_per_1m: Decimal,
    pub output_per_1m: Decimal,
    /// Cached input; `None` means the provider gives no discount (input price applies).
    pub cached_input_per_1m: Option<Decimal>,
    /// 5-minute prompt-cache writes; `None` means 1.25 × the input price.
    #[serde(default)]
    pub cache_write_per_1m: Option<Decimal>,
    /// 1-hour prompt-cache writes; `None` means 2 × the input price.
    #[serde(default)]
    pub cache_write_1h_per_1m: Option<Decimal>,
}

impl TokenPrices {
    /// A catalog model's prices.
    pub fn of(model: &crate::catalog::Model) -> Self {
        Self {
            input_per_1m: model.cost_per_1m_input_tokens,
            output_per_1m: model.cost_per_1m_output_tokens,
            cached_input_per_1m: model.cost_per_1m_tokens_cached,
            cache_write_per_1m: model.cost_per_1m_cache_write_tokens,
            cache_write_1h_per_1m: model.cost_per_1m_cache_write_1h_tokens,
        }
    }

    /// The price of a 5-minute cache write: the catalog's, else 1.25 × input.
    pub fn cache_write_price(&self) -> Decimal {
        self.cache_write_per_1m
            .unwrap_or(self.input_per_1m * Decimal::new(125, 2))
    }

    /// The price of a 1-hour cache write: the catalog's, else 2 × input.
    pub fn cache_write_1h_price(&self) -> Decimal {
        self.cache_write_1h_per_1m
            .unwrap_or(self.input_per_1m * Decimal::from(2u32))
    }

    /// The most one prompt token can cost: the input price, or, when the request may
    /// write the prompt cache, the dearest write it may cause (a 1-hour breakpoint may
    /// come with 5-minute ones; a 5-minute one never writes for an hour).
    pub fn highest_prompt_price(&self, cache_writes: CacheWrites) -> Decimal {
        match cache_writes {
            CacheWrites::None => self.input_per_1m,
            CacheWrites::FiveMinutes => self.input_per_1m.max(self.cache_write_price()),
            CacheWrites::OneHour => self
                .input_per_1m
                .max(self.cache_write_price())
                .max(self.cache_write_1h_price()),
        }
    }
}

/// The longest-lived prompt-cache write a request may cause: its `cache_control`
/// breakpoints (system, messages, tool results, tools), or the ones the gateway adds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum CacheWrites {
    #[default]
    None,
    /// `cache_control` without a `ttl`, or `"ttl": "5m"`.
    FiveMinutes,
    /// `"ttl": "1h"`.
    OneHour,
}

impl CacheWrites {
    /// The write one `cache_control` value asks for.
    pub fn of_cache_control(cache_control: &serde_json::Value) -> CacheWrites {
        match cache_control.get("ttl").and_then(serde_json::Value::as_str) {
            Some("1h") => CacheWrites::OneHour,
            _ => CacheWrites::FiveMinutes,
        }
    }
}

/// Token counts in disjoint buckets: a token is counted in exactly one of them.
/// Reasoning tokens belong to `output`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBuckets {
    pub uncached_input: u64,
    pub cached_input: u64,
    /// Prompt-cache writes that live 5 minutes (Anthropic).
    #[serde(default)]
    pub cache_write: u64,
    /// Prompt-cache writes that live 1 hour (Anthropic).
    #[serde(default)]
    pub cache_write_1h: u64,
    pub output: u64,
}

impl TokenBuckets {
    pub fn prompt_tokens(&self) -> u64 {
        self.uncached_input + self.cached_input + self.cache_write + self.cache_write_1h
    }

    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens() + self.output
    }
}

/// A call's cost. `input_usd + output_usd == total_usd` exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    /// Every input bucket together (uncached, cached, cache writes).
    pub input_usd: Decimal,
    pub output_usd: Decimal,
    pub total_usd: Decimal,
}

/// Rounds up (towards +∞) to 1e-9 USD.
pub fn round_up_money(amount: Decimal) -> Decimal {
    amount.round_dp_with_strategy(MONEY_SCALE, RoundingStrategy::ToPositiveInfinity)
}

fn per_million(tokens: u64, price_per_1m: Decimal) -> Decimal {
    // u64 tokens × a price with ≤ 9 decimals stays far inside Decimal's 96-bit mantissa.
    Decimal::from(tokens) * price_per_1m / Decimal::from(1_000_000u32)
}

/// The cost of one call. The total is the exact sum rounded up once; the input part is
/// rounded up on its own and the output part is the remainder, so the parts add up.
pub fn cost_of(tokens: TokenBuckets, prices: &TokenPrices) -> Cost {
    let cached_price = prices.cached_input_per_1m.unwrap_or(prices.input_per_1m);
    let exact_input = per_million(tokens.uncached_input, prices.input_per_1m)
        + per_million(tokens.cached_input, cached_price)
        + per_million(tokens.cache_write, prices.cache_write_price())
        + per_million(tokens.cache_write_1h, prices.cache_write_1h_price());
    let exact_output = per_million(tokens.output, prices.output_per_1m);
    let total_usd = round_up_money(exact_input + exact_output);
    let input_usd = round_up_money(exact_input).min(total_usd);
    Cost {
        input_usd,
        output_usd: total_usd - input_usd,
        total_usd,
    }
}

/// The most a call may cost: every prompt token uncached at the input price plus the
/// maximum output at the output price (the amount held before the call).
pub fn max_cost(prompt_tokens: u64, max_output_tokens: u64, prices: &TokenPrices) -> Decimal {
    max_cost_with(prompt_tokens, max_output_tokens, prices, CacheWrites::None)
}

/// [`max_cost`], with every prompt token at the dearest cache write the request may
/// cause ([`TokenPrices::highest_prompt_price`]).
pub fn max_cost_with(
    prompt_tokens: u64,
    max_output_tokens: u64,
    prices: &TokenPrices,
    cache_writes: CacheWrites,
) -> Decimal {
    round_up_money(
        per_million(prompt_tokens, prices.highest_prompt_price(cache_writes))
            + per_million(max_output_tokens, prices.output_per_1m),
    )
}

/// One offer a request may be sent to, as the hold sees it.
#[derive(Debug, Clone)]
pub struct HoldOffer {
    pub prices: TokenPrices,
    /// The most prompt tokens this offer's provider can bill: images and PDF pages at its
    /// documented maximum (`tokens::prompt_bound`).
    pub prompt_tokens: u64,
    /// The most output the call may produce (the request's `max_tokens`, else the
    /// model's, else the catalog default).
    pub max_output_tokens: u64,
    /// On the user's own key the platform charges only its fee on the provider cost.
    pub byok: bool,
    /// The prompt-cache writes the call may cause: its prompt is then held at that write
    /// price.
    pub cache_writes: CacheWrites,
}

/// The hold (ledger.md): the worst case over the offers that may be tried, each at its
/// [`max_cost_with`] (for a BYOK offer, the platform fee on it). The one place a hold
/// amount is computed.
pub fn hold_amount(
    offers: impl IntoIterator<Item = HoldOffer>,
    byok_fee_percent: Decimal,
) -> Decimal {
    offers
        .into_iter()
        .map(|offer| {
            let cost = max_cost_with(
                offer.prompt_tokens,
                offer.max_output_tokens,
                &offer.prices,
                offer.cache_writes,
            );
            if offer.byok {
                byok_fee(cost, byok_fee_percent)
            } else {
                cost
            }
        })
        .max()
        .unwrap_or(Decimal::ZERO)
}

/// The platform fee charged on a BYOK call: `percent` of the provider cost, rounded up.
pub fn byok_fee(provider_cost: Decimal, percent: Decimal) -> Decimal {
    if percent <= Decimal::ZERO {
        return Decimal::ZERO;
    }
    round_up_money(provider_cost * percent / Decimal::from(100u32))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn gpt4o() -> TokenPrices {
        TokenPrices {
            input_per_1m: d("2.50"),
            output_per_1m: d("10.00"),
            cached_input_per_1m: Some(d("1.25")),
            ..TokenPrices::default()
        }
    }

    #[test]
    fn buckets_are_priced_once_each() {
        // 1,000 uncached + 500 cached input, 200 output on GPT-4o:
        // 1000×2.5 + 500×1.25 + 200×10 = 2500 + 625 + 2000 = 5125 → /1e6
        let cost = cost_of(
            TokenBuckets {
                uncached_input: 1000,
                cached_input: 500,
                output: 200,
                ..TokenBuckets::default()
            },
            &gpt4o(),
        );
        assert_eq!(cost.total_usd, d("0.005125"));
        assert_eq!(cost.input_usd, d("0.003125"));
        assert_eq!(cost.output_usd, d("0.002"));
        assert_eq!(cost.input_usd + cost.output_usd, cost.total_usd);
    }

    #[test]
    fn cached_tokens_without_a_discount_cost_the_input_price() {
        let prices = TokenPrices {
            input_per_1m: d("10"),
            output_per_1m: d("30"),
            cached_input_per_1m: None,
            ..TokenPrices::default()
        };
        let with_cache = cost_of(
            TokenBuckets {
                uncached_input: 100,
                cached_input: 900,
                output: 0,
                ..TokenBuckets::default()
            },
            &prices,
        );
        let without = cost_of(
            TokenBuckets {
                uncached_input: 1000,
                cached_input: 0,
                output: 0,
                ..TokenBuckets::default()
            },
            &prices,
        );
        assert_eq!(with_cache.total_usd, without.total_usd);
        assert_eq!(with_cache.total_usd, d("0.01"));
    }

    #[test]
    fn rounding_is_up_to_one_nano_dollar_per_call() {
        // 1 token at $0.30/1M = 0.0000003 exactly: no rounding needed.
        let llama = TokenPrices {
            input_per_1m: d("0.30"),
            output_per_1m: d("0.40"),
            cached_input_per_1m: None,
            ..TokenPrices::default()
        };
        assert_eq!(
            cost_of(
                TokenBuckets {
                    uncached_input: 1,
                    cached_input: 0,
                    output: 0,
                    ..TokenBuckets::default()
                },
                &llama
            )
            .total_usd,
            d("0.0000003")
        );
        // A price with more precision than money: 1 token at $0.0000001/1M = 1e-13 → rounds up to 1e-9.
        let tiny = TokenPrices {
            input_per_1m: d("0.0000001"),
            output_per_1m: d("0"),
            cached_input_per_1m: None,
            ..TokenPrices::default()
        };
        assert_eq!(
            cost_of(
                TokenBuckets {
                    uncached_input: 1,
                    cached_input: 0,
                    output: 0,
                    ..TokenBuckets::default()
                },
                &tiny
            )
            .total_usd,
            d("0.000000001")
        );
        // Buckets are summed before the one rounding: 2 × 1000 × 0.000333333333 / 1e6 =
        // 0.000000666666666 → 0.000000667, where rounding each bucket first would give
        // 2 × 0.000000334 = 0.000000668.
        let third = TokenPrices {
            input_per_1m: d("0.000333333333"),
            output_per_1m: d("0.000333333333"),
            cached_input_per_1m: None,
            ..TokenPrices::default()
        };
        let cost = cost_of(
            TokenBuckets {
                uncached_input: 1000,
                cached_input: 0,
                output: 1000,
                ..TokenBuckets::default()
            },
            &third,
        );
        assert_eq!(cost.total_usd, d("0.000000667"));
        assert_eq!(cost.input_usd, d("0.000000334"));
        assert_eq!(cost.output_usd, d("0.000000333"));
        assert_eq!(cost.input_usd + cost.output_usd, cost.total_usd);
        // Zero tokens cost zero.
        assert_eq!(
            cost_of(TokenBuckets::default(), &gpt4o()).total_usd,
            Decimal::ZERO
        );
    }

    #[test]
    fn max_cost_prices_everything_as_uncached() {
        // 1,000 prompt tokens + 4,096 max output on GPT-4 Turbo ($10/$30).
        let prices = TokenPrices {
            input_per_1m: d("10"),
            output_per_1m: d("30"),
            cached_input_per_1m: None,
            ..TokenPrices::default()
        };
        assert_eq!(max_cost(1000, 4096, &prices), d("0.13288"));
        // Never below the actual cost of any split of the same tokens.
        let actual = cost_of(
            TokenBuckets {
                uncached_input: 400,
                cached_input: 600,
                output: 4096,
                ..TokenBuckets::default()
            },
            &gpt4o(),
        );
        assert!(max_cost(1000, 4096, &gpt4o()) >= actual.total_usd);
    }

    #[test]
    fn byok_fee_is_a_rounded_up_percentage() {
        assert_eq!(byok_fee(d("0.001"), d("0")), Decimal::ZERO);
        assert_eq!(byok_fee(d("0.001"), d("5")), d("0.00005"));
        assert_eq!(byok_fee(d("0.0000000001"), d("5")), d("0.000000001"));
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let cost = cost_of(
            TokenBuckets {
                uncached_input: u32::MAX as u64,
                cached_input: u32::MAX as u64,
                output: u32::MAX as u64,
                ..TokenBuckets::default()
            },
            &gpt4o(),
        );
        assert!(cost.total_usd > Decimal::ZERO);
    }

    #[test]
    fn cache_writes_are_priced_by_lifetime_and_the_hold_covers_them() {
        let claude = TokenPrices {
            input_per_1m: d("3"),
            output_per_1m: d("15"),
            cached_input_per_1m: Some(d("0.30")),
            ..TokenPrices::default()
        };
        // Anthropic's rule when the catalog has no price: 1.25 × and 2 × the input price.
        assert_eq!(claude.cache_write_price(), d("3.75"));
        assert_eq!(claude.cache_write_1h_price(), d("6"));
        let tokens = TokenBuckets {
            uncached_input: 500,
            cached_input: 0,
            cache_write: 1000,
            cache_write_1h: 2000,
            output: 100,
        };
        let cost = cost_of(tokens, &claude);
        assert_eq!(cost.total_usd, d("0.01875"));
        assert_eq!(cost.input_usd + cost.output_usd, cost.total_usd);
        let priced = TokenPrices {
            cache_write_per_1m: Some(d("4")),
            cache_write_1h_per_1m: Some(d("7")),
            ..claude
        };
        assert_eq!(cost_of(tokens, &priced).total_usd, d("0.021"));
        // A prompt that may be written to the cache for an hour is held at the dearest
        // write price.
        let held = max_cost_with(tokens.prompt_tokens(), 100, &claude, CacheWrites::OneHour);
        assert!(held >= cost_of(tokens, &claude).total_usd, "{held}");
        assert!(max_cost(tokens.prompt_tokens(), 100, &claude) < cost.total_usd);
    }

    #[test]
    fn the_hold_prices_the_prompt_at_the_write_its_breakpoints_ask_for() {
        let claude = TokenPrices {
            input_per_1m: d("3"),
            output_per_1m: d("15"),
            cached_input_per_1m: Some(d("0.30")),
            ..TokenPrices::default()
        };
        let ttl = |value: serde_json::Value| CacheWrites::of_cache_control(&value);
        assert_eq!(
            ttl(serde_json::json!({"type": "ephemeral"})),
            CacheWrites::FiveMinutes
        );
        assert_eq!(
            ttl(serde_json::json!({"type": "ephemeral", "ttl": "5m"})),
            CacheWrites::FiveMinutes
        );
        assert_eq!(
            ttl(serde_json::json!({"type": "ephemeral", "ttl": "1h"})),
            CacheWrites::OneHour
        );
        assert!(CacheWrites::OneHour > CacheWrites::FiveMinutes);
        // 1,000 prompt tokens, no output: $3, $3.75 and $6 per 1M.
        let held = |writes| max_cost_with(1000, 0, &claude, writes);
        assert_eq!(held(CacheWrites::None), d("0.003"));
        assert_eq!(held(CacheWrites::FiveMinutes), d("0.00375"));
        assert_eq!(held(CacheWrites::OneHour), d("0.006"));
        // A catalog whose 5-minute price is the dearer one is still covered for an hour.
        let odd = TokenPrices {
            cache_write_per_1m: Some(d("7")),
            ..claude
        };
        assert_eq!(
            max_cost_with(1000, 0, &odd, CacheWrites::OneHour),
            d("0.007")
        );
        // Each offer's own prompt: the worst case over them.
        let offer = |prompt_tokens, cache_writes| HoldOffer {
            prices: claude,
            prompt_tokens,
            max_output_tokens: 0,
            byok: false,
            cache_writes,
        };
        assert_eq!(
            hold_amount(
                [
                    offer(1000, CacheWrites::OneHour),
                    offer(1500, CacheWrites::None)
                ],
                Decimal::ZERO
            ),
            d("0.006")
        );
    }
}
