//! The prepaid credit ledger (ledger.md): holds before a call, capture of the actual cost
//! after it, release on every failure path, expiry of abandoned holds, monthly caps, top-ups
//! and adjustments — exact decimals, idempotent by request id / idempotency key, and
//! correct under concurrency. Each operation is one call of a server-side function
//! (`migrations/0005_ledger_functions.sql`): one round trip, one transaction, the account row
//! locked first.

pub mod cost;
pub mod grants;
pub mod queue;
pub mod spool;

use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::db::DbError;
use crate::db::hot::HotClient;

pub use grants::{
    GrantBook, GrantSettings, GrantTicket, LimitReached, MAX_QUEUED, RECALL_POLL, RECALL_WAIT,
    recall_grants,
};
pub use queue::SqsPendingCharges;
pub use spool::{CaptureRecord, FileSpool, PendingCharge, PendingCharges, SpoolError};

pub use cost::{
    CacheWrites, Cost, HoldOffer, TokenBuckets, TokenPrices, byok_fee, cost_of, hold_amount,
    max_cost, max_cost_with, round_up_money,
};

/// Default lifetime of a hold (its one definition is the configuration's).
pub use crate::config::DEFAULT_HOLD_TTL;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(
        "insufficient credits: {available} USD available, this request may cost up to {needed} USD"
    )]
    InsufficientCredits { available: Decimal, needed: Decimal },
    #[error(
        "monthly spending cap of {cap} USD reached ({committed} USD spent or reserved this month, this request may cost up to {needed} USD)"
    )]
    MonthlyCapExceeded {
        cap: Decimal,
        committed: Decimal,
        needed: Decimal,
    },
    #[error("the account is not active")]
    AccountDisabled,
    #[error("no account for this user")]
    NoAccount,
    #[error("request id `{0}` was already used for a different hold")]
    RequestIdReused(String),
    #[error("idempotency key `{0}` was already used for a different operation")]
    IdempotencyKeyReused(String),
    #[error("invalid amount: {0}")]
    InvalidAmount(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for LedgerError {
    fn from(error: tokio_postgres::Error) -> Self {
        LedgerError::Db(DbError::Postgres(error))
    }
}

/// A hold that was placed (or had already been placed by the same request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// True when this request id already held exactly this amount (a retried call).
    pub duplicate: bool,
    pub balance: Decimal,
    /// Active holds, this one included.
    pub held: Decimal,
    pub month_spend: Decimal,
    pub cap: Option<Decimal>,
}

impl Authorization {
    /// What the user could still spend.
    pub fn available(&self) -> Decimal {
        self.balance - self.held
    }
}

pub(crate) fn check_amount(amount: Decimal, what: &str) -> Result<(), LedgerError> {
    if amount.is_sign_negative() && !amount.is_zero() {
        return Err(LedgerError::InvalidAmount(format!(
            "{what} must not be negative"
        )));
    }
    if amount.scale() > cost::MONEY_SCALE {
        return Err(LedgerError::InvalidAmount(format!(
            "{what} has more than 9 decimal places"
        )));
    }
    Ok(())
}

/// Places a hold of `amount` for `request_id` if the balance and the monthly cap allow it.
/// One round trip. Retrying with the same request id and amount is a no-op that succeeds.
pub async fn authorize(
    client: &impl GenericClient,
    user_id: &str,
    request_id: &str,
    amount: Decimal,
    ttl: Duration,
) -> Result<Authorization, LedgerError> {
    check_amount(amount, "hold amount")?;
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
    let row = client
        .query_typed_one(
            "SELECT verdict, balance, held, month_spend, cap
             FROM sb_authorize($1, $2, $3, $4 * interval '1 second')",
            &[
                (&user_id, Type::TEXT),
                (&request_id, Type::TEXT),
                (&amount, Type::NUMERIC),
                (&ttl_secs, Type::INT8),
            ],
        )
        .await?;
    interpret_authorize(&row, amount, request_id)
}

/// Maps a row `(verdict, balance, held, month_spend, cap, …)` of `sb_authorize` (or of
/// `sb_admit`, which starts with the same columns) to the outcome.
pub(crate) fn interpret_authorize(
    row: &tokio_postgres::Row,
    amount: Decimal,
    request_id: &str,
) -> Result<Authorization, LedgerError> {
    let verdict: String = row.get(0);
    let balance: Option<Decimal> = row.get(1);
    let held: Option<Decimal> = row.get(2);
    let month_spend: Option<Decimal> = row.get(3);
    let cap: Option<Decimal> = row.get(4);
    let (balance, held, month_spend) = (
        balance.unwrap_or_default(),
        held.unwrap_or_default(),
        month_spend.unwrap_or_default(),
    );
    match verdict.as_str() {
        "ok" | "duplicate" => Ok(Authorization {
            duplicate: verdict == "duplicate",
            balance,
            held,
            month_spend,
            cap,
        }),
        "insufficient_credits" => Err(LedgerError::InsufficientCredits {
            available: (balance - held).max(Decimal::ZERO),
            needed: amount,
        }),
        "monthly_cap_exceeded" => Err(LedgerError::MonthlyCapExceeded {
            cap: cap.unwrap_or_default(),
            committed: month_spend + held,
            needed: amount,
        }),
        "account_disabled" => Err(LedgerError::AccountDisabled),
        "no_account" => Err(LedgerError::NoAccount),
        "request_id_reused" => Err(LedgerError::RequestIdReused(request_id.to_string())),
        other => Err(LedgerError::Db(DbError::Corrupt(format!(
            "sb_authorize answered `{other}`"
        )))),
    }
}

/// What a capture charges: the model's cost (platform key) or the BYOK platform fee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureKind {
    Usage,
    ByokFee,
}

impl CaptureKind {
    fn as_str(self) -> &'static str {
        match self {
            CaptureKind::Usage => "capture",
            CaptureKind::ByokFee => "byok_fee",
        }
    }
}

/// One `llm_usage_logs` row: one per attempt of a request (fallbacks are later attempts).
/// Money fields are exact decimals (serialised as strings).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UsageLogRow {
    pub user_id: String,
    pub request_id: String,
    pub attempt: i16,
    pub provider_id: Option<i32>,
    pub model_id: Option<i32>,
    pub user_key_id: Option<i32>,
    pub provider_slug: Option<String>,
    pub model_name: Option<String>,
    pub power_level: Option<String>,
    pub task_type: Option<String>,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub total_tokens: i32,
    pub cached_tokens: i32,
    pub cost_input_usd: Decimal,
    pub cost_output_usd: Decimal,
    pub cost_total_usd: Decimal,
    pub charged_usd: Decimal,
    pub used_byok: bool,
    pub stream: bool,
    pub latency_ms: Option<i32>,
    pub tokens_per_second: Option<Decimal>,
    pub status_code: Option<i32>,
    pub error_message: Option<String>,
    pub was_fallback: bool,
    pub fallback_reason: Option<String>,
    pub user_agent: Option<String>,
    /// The prices the row was charged at, USD per one million tokens, as applied (a null
    /// catalog price resolved); `None` on attempts that were not priced.
    pub price_input_per_1m: Option<Decimal>,
    pub price_cached_input_per_1m: Option<Decimal>,
    pub price_cache_write_per_1m: Option<Decimal>,
    pub price_cache_write_1h_per_1m: Option<Decimal>,
    pub price_output_per_1m: Option<Decimal>,
    /// The route that spent the credits (`/v1/chat/completions`, `/v1/messages`,
    /// `/v1/embeddings`).
    pub route: Option<String>,
    /// Streams: milliseconds from the attempt's start to its first content.
    pub ttft_ms: Option<i32>,
}

/// Everything one capture writes, atomically.
#[derive(Debug, Clone)]
pub struct Capture<'a> {
    pub request_id: &'a str,
    pub user_id: &'a str,
    /// What the user is charged (may exceed the hold; never silently dropped).
    pub amount: Decimal,
    pub kind: CaptureKind,
    pub usage_logs: &'a [UsageLogRow],
    /// Properties of the billing event (tokens, cost, model, provider, byok).
    pub billing_properties: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// True when this request had already been captured (nothing was written).
    pub duplicate: bool,
    pub balance: Decimal,
}

/// Charges the actual cost, closes the hold, writes the usage rows and the billing event —
/// one round trip, one transaction. A second capture of the same request is a no-op.
pub async fn capture(
    client: &impl HotClient,
    capture: &Capture<'_>,
) -> Result<Captured, LedgerError> {
    check_amount(capture.amount, "capture amount")?;
    let logs = serde_json::to_value(capture.usage_logs)
        .map_err(|e| LedgerError::Db(DbError::Corrupt(format!("usage rows: {e}"))))?;
    let row = client
        .query_hot_one(
            "SELECT verdict, balance FROM sb_capture($1, $2, $3, $4, $5, $6)",
            &[
                (&capture.request_id, Type::TEXT),
                (&capture.user_id, Type::TEXT),
                (&capture.amount, Type::NUMERIC),
                (&capture.kind.as_str(), Type::TEXT),
                (&logs, Type::JSONB),
                (&capture.billing_properties, Type::JSONB),
            ],
        )
        .await?;
    interpret_capture(&row)
}

/// Captures a batch in one round trip (`sb_capture_many`, group commit): each capture gets
/// the outcome [`capture`] would give it. A batch of one is [`capture`]. The outer error is
/// the batch statement's own failure, when nothing of the batch was written.
pub async fn capture_many(
    client: &impl HotClient,
    captures: &[Capture<'_>],
) -> Result<Vec<Result<Captured, LedgerError>>, tokio_postgres::Error> {
    if let [one] = captures {
        return match capture(client, one).await {
            Err(LedgerError::Db(DbError::Postgres(error))) => Err(error),
            outcome => Ok(vec![outcome]),
        };
    }
    // What the ledger refuses is answered here and left out of the statement.
    let checked: Vec<Result<serde_json::Value, LedgerError>> = captures
        .iter()
        .map(|c| {
            check_amount(c.amount, "capture amount")?;
            serde_json::to_value(c.usage_logs)
                .map_err(|e| LedgerError::Db(DbError::Corrupt(format!("usage rows: {e}"))))
        })
        .collect();
    let sent: Vec<(&Capture<'_>, &serde_json::Value)> = captures
        .iter()
        .zip(&checked)
        .filter_map(|(capture, logs)| Some((capture, logs.as_ref().ok()?)))
        .collect();
    let rows = if sent.is_empty() {
        Vec::new()
    } else {
        let request_ids: Vec<&str> = sent.iter().map(|(c, _)| c.request_id).collect();
        let user_ids: Vec<&str> = sent.iter().map(|(c, _)| c.user_id).collect();
        let amounts: Vec<Decimal> = sent.iter().map(|(c, _)| c.amount).collect();
        let kinds: Vec<&str> = sent.iter().map(|(c, _)| c.kind.as_str()).collect();
        let logs: Vec<&serde_json::Value> = sent.iter().map(|(_, logs)| *logs).collect();
        let properties: Vec<&serde_json::Value> =
            sent.iter().map(|(c, _)| &c.billing_properties).collect();
        client
            .query_hot(
                "SELECT verdict, balance FROM sb_capture_many($1, $2, $3, $4, $5, $6)",
                &[
                    (&request_ids, Type::TEXT_ARRAY),
                    (&user_ids, Type::TEXT_ARRAY),
                    (&amounts, Type::NUMERIC_ARRAY),
                    (&kinds, Type::TEXT_ARRAY),
                    (&logs, Type::JSONB_ARRAY),
                    (&properties, Type::JSONB_ARRAY),
                ],
            )
            .await?
    };
    let mut rows = rows.iter();
    Ok(checked
        .into_iter()
        .map(|checked| {
            checked?;
            rows.next().map_or_else(
                || {
                    Err(LedgerError::Db(DbError::Corrupt(
                        "sb_capture_many answered fewer rows than captures".into(),
                    )))
                },
                interpret_capture,
            )
        })
        .collect())
}

fn interpret_capture(row: &tokio_postgres::Row) -> Result<Captured, LedgerError> {
    let verdict: &str = row.get(0);
    let balance: Option<Decimal> = row.get(1);
    match verdict {
        "ok" | "duplicate" => Ok(Captured {
            duplicate: verdict == "duplicate",
            balance: balance.unwrap_or_default(),
        }),
        "no_account" => Err(LedgerError::NoAccount),
        other => Err(LedgerError::Db(DbError::Corrupt(format!(
            "sb_capture answered `{other}`"
        )))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// The active hold was released now.
    Released,
    /// The hold was already closed (captured, released or expired): nothing changed.
    NotActive,
    /// There was no hold for this request.
    NoHold,
}

/// Releases the hold of a request that failed, writing its attempts' usage rows in the same
/// transaction. Idempotent.
pub async fn release(
    client: &impl GenericClient,
    request_id: &str,
    usage_logs: &[UsageLogRow],
) -> Result<Released, LedgerError> {
    let logs = serde_json::to_value(usage_logs)
        .map_err(|e| LedgerError::Db(DbError::Corrupt(format!("usage rows: {e}"))))?;
    let row = client
        .query_typed_one(
            "SELECT sb_release($1, $2)",
            &[(&request_id, Type::TEXT), (&logs, Type::JSONB)],
        )
        .await?;
    let verdict: String = row.get(0);
    Ok(match verdict.as_str() {
        "ok" => Released::Released,
        "not_active" => Released::NotActive,
        _ => Released::NoHold,
    })
}

/// Releases every hold past its expiry (the scheduled job). Returns how many.
pub async fn expire_holds(client: &impl GenericClient) -> Result<u64, LedgerError> {
    let row = client
        .query_typed_one("SELECT sb_expire_holds()", &[])
        .await?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

/// Money added or taken by an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditKind {
    /// Purchased credits (must be positive).
    TopUp,
    /// A correction, either sign.
    Adjustment,
    /// Money given back for a bad call (must be positive).
    Refund,
}

impl CreditKind {
    fn as_str(self) -> &'static str {
        match self {
            CreditKind::TopUp => "topup",
            CreditKind::Adjustment => "adjustment",
            CreditKind::Refund => "refund",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credited {
    /// True when this idempotency key had already been applied (nothing changed).
    pub duplicate: bool,
    pub balance: Decimal,
    pub entry_id: i64,
}

/// Adds (or, for a negative adjustment, removes) credit. Idempotent by `idempotency_key`.
pub async fn credit(
    client: &impl GenericClient,
    user_id: &str,
    amount: Decimal,
    kind: CreditKind,
    idempotency_key: &str,
    reason: Option<&str>,
    actor: Option<&str>,
) -> Result<Credited, LedgerError> {
    if amount.scale() > cost::MONEY_SCALE {
        return Err(LedgerError::InvalidAmount(
            "more than 9 decimal places".into(),
        ));
    }
    if amount.is_zero() {
        return Err(LedgerError::InvalidAmount("must not be zero".into()));
    }
    if matches!(kind, CreditKind::TopUp | CreditKind::Refund) && amount.is_sign_negative() {
        return Err(LedgerError::InvalidAmount(format!(
            "a {} must be positive",
            kind.as_str()
        )));
    }
    if idempotency_key.is_empty() || idempotency_key.len() > 200 {
        return Err(LedgerError::InvalidAmount(
            "idempotency key must have 1 to 200 characters".into(),
        ));
    }
    let row = client
        .query_typed_one(
            "SELECT verdict, balance, entry_id FROM sb_credit($1, $2, $3, $4, $5, $6)",
            &[
                (&user_id, Type::TEXT),
                (&amount, Type::NUMERIC),
                (&kind.as_str(), Type::TEXT),
                (&idempotency_key, Type::TEXT),
                (&reason, Type::TEXT),
                (&actor, Type::TEXT),
            ],
        )
        .await?;
    let verdict: String = row.get(0);
    let balance: Option<Decimal> = row.get(1);
    let entry_id: Option<i64> = row.get(2);
    match verdict.as_str() {
        "ok" | "duplicate" => Ok(Credited {
            duplicate: verdict == "duplicate",
            balance: balance.unwrap_or_default(),
            entry_id: entry_id.unwrap_or_default(),
        }),
        "no_account" => Err(LedgerError::NoAccount),
        "idempotency_key_reused" => Err(LedgerError::IdempotencyKeyReused(
            idempotency_key.to_string(),
        )),
        other => Err(LedgerError::Db(DbError::Corrupt(format!(
            "sb_credit answered `{other}`"
        )))),
    }
}

/// An account's money at a glance (`GET /v1/account`, admin user views).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountBalance {
    pub user_id: String,
    pub tier: String,
    pub status: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub credits_balance: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub credits_held: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub month_spend: Decimal,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub monthly_cap: Option<Decimal>,
}

pub async fn account_balance(
    client: &impl GenericClient,
    user_id: &str,
) -> Result<Option<AccountBalance>, LedgerError> {
    let row = client
        .query_typed_opt(
            "SELECT a.user_id, a.tier, a.status, a.balance_usd,
                    COALESCE((SELECT sum(h.amount_usd) FROM credit_holds h
                              WHERE h.user_id = a.user_id AND h.state = 'active' AND h.expires_at > now()), 0),
                    CASE WHEN a.month_spend_period = sb_current_period() THEN a.month_spend_usd ELSE 0 END,
                    a.monthly_cap_usd
             FROM accounts a WHERE a.user_id = $1",
            &[(&user_id, Type::TEXT)],
        )
        .await?;
    Ok(row.map(|r| AccountBalance {
        user_id: r.get(0),
        tier: r.get(1),
        status: r.get(2),
        credits_balance: r.get(3),
        credits_held: r.get(4),
        month_spend: r.get(5),
        monthly_cap: r.get(6),
    }))
}

/// The ledger's invariants for one account, as one query: the kept balance equals the sum
/// of its entries, and the kept month spend equals this month's captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvariantReport {
    pub balance: Decimal,
    pub sum_of_entries: Decimal,
    pub month_spend: Decimal,
    pub month_captures: Decimal,
    pub active_holds: i64,
}

impl InvariantReport {
    pub fn holds(&self) -> bool {
        self.balance == self.sum_of_entries && self.month_spend == self.month_captures
    }
}

pub async fn check_invariants(
    client: &impl GenericClient,
    user_id: &str,
) -> Result<InvariantReport, LedgerError> {
    let row = client
        .query_typed_one(
            "SELECT a.balance_usd,
                    COALESCE((SELECT sum(amount_usd) FROM ledger_entries e WHERE e.user_id = a.user_id), 0),
                    CASE WHEN a.month_spend_period = sb_current_period() THEN a.month_spend_usd ELSE 0 END,
                    COALESCE((SELECT -sum(amount_usd) FROM ledger_entries e
                              WHERE e.user_id = a.user_id AND e.kind IN ('capture', 'byok_fee')
                                AND e.created_at >= (sb_current_period()::timestamp AT TIME ZONE 'UTC')), 0),
                    (SELECT count(*) FROM credit_holds h WHERE h.user_id = a.user_id AND h.state = 'active')
             FROM accounts a WHERE a.user_id = $1",
            &[(&user_id, Type::TEXT)],
        )
        .await?;
    Ok(InvariantReport {
        balance: row.get(0),
        sum_of_entries: row.get(1),
        month_spend: row.get(2),
        month_captures: row.get(3),
        active_holds: row.get(4),
    })
}
