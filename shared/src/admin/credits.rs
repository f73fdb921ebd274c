//! Credits: top-ups (positive amounts) and adjustments (negative amounts) through the
//! ledger, idempotent by `idempotency_key`, and the paginated list of a user's ledger
//! entries.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::{GenericClient, Row};
use utoipa::{IntoParams, ToSchema};

use super::input::{check_money, check_text, money, money_text, serialize_money};
use super::page::{Page, Paged, fetch};
use super::users::require;
use super::{Actor, AdminError, audit_json};
use crate::ledger::{self, CreditKind};

/// Integer digits of `ledger_entries.amount_usd` (`numeric(20, 9)`).
const AMOUNT_INTEGER_DIGITS: u32 = 11;

/// `POST /admin/users/{id}/credits`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditRequest {
    /// Positive: a top-up; negative: an adjustment down. Never zero; at most 9 decimals.
    #[serde(deserialize_with = "money")]
    #[schema(schema_with = super::schema::money)]
    pub amount_usd: Decimal,
    #[serde(default)]
    pub reason: Option<String>,
    /// Makes the request safe to retry: the same key with the same amount returns the
    /// original entry (200); with different content, 409. When absent, one is generated
    /// (and the request is not idempotent).
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// One `ledger_entries` row. Positive amounts add credit, negative ones spend it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LedgerEntryView {
    pub id: i64,
    pub user_id: String,
    /// `topup`, `adjustment`, `capture`, `refund` or `byok_fee`.
    pub kind: String,
    #[serde(serialize_with = "serialize_money")]
    #[schema(schema_with = super::schema::money)]
    pub amount_usd: Decimal,
    pub idempotency_key: String,
    pub request_id: Option<String>,
    pub reason: Option<String>,
    pub actor: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The entry written (or found, for a repeated idempotency key) and the balance after it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CreditResult {
    #[serde(flatten)]
    pub entry: LedgerEntryView,
    /// The user's balance now.
    #[serde(serialize_with = "serialize_money")]
    #[schema(schema_with = super::schema::money)]
    pub credits_balance: Decimal,
    /// True when this idempotency key had already been applied (nothing changed).
    pub duplicate: bool,
}

/// Filters of `GET /admin/users/{id}/ledger`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LedgerFilter {
    /// `topup`, `adjustment`, `capture`, `refund` or `byok_fee`.
    pub kind: Option<String>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    pub offset: Option<i64>,
}

const KINDS: &[&str] = &["topup", "adjustment", "capture", "refund", "byok_fee"];

const SELECT: &str = "SELECT id, user_id, kind, amount_usd, idempotency_key, request_id, reason, actor, created_at \
    FROM ledger_entries";

fn view_of(row: &Row) -> Result<LedgerEntryView, AdminError> {
    Ok(LedgerEntryView {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        kind: row.try_get(2)?,
        amount_usd: row.try_get(3)?,
        idempotency_key: row.try_get(4)?,
        request_id: row.try_get(5)?,
        reason: row.try_get(6)?,
        actor: row.try_get(7)?,
        created_at: row.try_get(8)?,
    })
}

/// Adds or removes credit. Returns the entry and whether it already existed.
pub async fn credit(
    client: &mut tokio_postgres::Client,
    actor: &Actor,
    user_id: &str,
    request: CreditRequest,
) -> Result<CreditResult, AdminError> {
    let amount = check_money(
        "amount_usd",
        request.amount_usd,
        AMOUNT_INTEGER_DIGITS,
        true,
    )?;
    if amount.is_zero() {
        return Err(AdminError::invalid(
            "amount_usd",
            "amount_usd must not be zero",
        ));
    }
    if let Some(reason) = &request.reason {
        check_text("reason", reason, 0, 1000)?;
    }
    let idempotency_key = match request.idempotency_key {
        Some(key) => {
            check_text("idempotency_key", &key, 1, 200)?;
            key
        }
        None => format!("admin-credit:{}", uuid::Uuid::new_v4()),
    };
    let kind = if amount.is_sign_positive() {
        CreditKind::TopUp
    } else {
        CreditKind::Adjustment
    };

    let tx = client.transaction().await?;
    // Lock the account first so the audit row's "before" balance is the one changed.
    let before: Decimal = tx
        .query_opt(
            "SELECT balance_usd FROM accounts WHERE user_id = $1 FOR UPDATE",
            &[&user_id],
        )
        .await?
        .ok_or_else(|| super::users::not_found(user_id))?
        .try_get(0)?;
    let credited = ledger::credit(
        &tx,
        user_id,
        amount,
        kind,
        &idempotency_key,
        request.reason.as_deref(),
        Some(&actor.user_id),
    )
    .await?;
    let entry = view_of(
        &tx.query_one(&format!("{SELECT} WHERE id = $1"), &[&credited.entry_id])
            .await?,
    )?;
    let result = CreditResult {
        entry,
        credits_balance: credited.balance,
        duplicate: credited.duplicate,
    };
    if credited.duplicate {
        // Nothing was written: no audit row.
        return Ok(result);
    }
    actor
        .audit(
            &tx,
            if kind == CreditKind::TopUp {
                "credits.topup"
            } else {
                "credits.adjustment"
            },
            "user",
            user_id,
            Some(json!({ "credits_balance": money_text(&before) })),
            audit_json(&result),
        )
        .await?;
    tx.commit().await?;
    Ok(result)
}

pub async fn list(
    client: &impl GenericClient,
    user_id: &str,
    filter: &LedgerFilter,
) -> Result<Paged<LedgerEntryView>, AdminError> {
    let page = Page::new(filter.limit, filter.offset)?;
    if let Some(kind) = &filter.kind
        && !KINDS.contains(&kind.as_str())
    {
        return Err(AdminError::invalid(
            "kind",
            format!("kind must be one of: {}", KINDS.join(", ")),
        ));
    }
    require(client, user_id, false).await?;
    let condition = "user_id = $1 AND ($2::text IS NULL OR kind = $2)";
    let (rows, total) = fetch(
        client,
        &format!("{SELECT} WHERE {condition} ORDER BY id DESC"),
        &format!("SELECT count(*) FROM ledger_entries WHERE {condition}"),
        &[&user_id, &filter.kind],
        page,
    )
    .await?;
    let data = rows.iter().map(view_of).collect::<Result<Vec<_>, _>>()?;
    Ok(page.result(data, total))
}
