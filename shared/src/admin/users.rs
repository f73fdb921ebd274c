//! Users (`accounts`): create with a tier and an optional monthly cap, list and read with
//! their money (balance, active holds, this month's spend), and partial updates of tier,
//! cap, status and default power level.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio_postgres::{GenericClient, Row};
use utoipa::{IntoParams, ToSchema};

use super::input::{
    check_money, check_text, check_user_id, money_opt, money_patch, nullable, present,
    serialize_money, serialize_money_opt,
};
use super::page::{Page, Paged, fetch};
use super::providers::{vocab, vocab_opt};
use super::{Actor, AdminError, audit_json};
use crate::catalog::{PowerLevel, Tier};

/// Integer digits of `accounts.monthly_cap_usd` (`numeric(20, 9)`).
const CAP_INTEGER_DIGITS: u32 = 11;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    Active,
    Suspended,
    Closed,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Suspended => "suspended",
            AccountStatus::Closed => "closed",
        }
    }
}

impl std::str::FromStr for AccountStatus {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "active" => Ok(AccountStatus::Active),
            "suspended" => Ok(AccountStatus::Suspended),
            "closed" => Ok(AccountStatus::Closed),
            _ => Err(()),
        }
    }
}

/// A user (account) with its money.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    /// The same as `id` (the column's name, as in `GET /v1/account`).
    pub user_id: String,
    #[schema(schema_with = super::schema::tier)]
    pub tier: Tier,
    pub status: AccountStatus,
    /// null: no monthly cap.
    #[serde(serialize_with = "serialize_money_opt")]
    #[schema(schema_with = super::schema::money_nullable)]
    pub monthly_cap_usd: Option<Decimal>,
    #[schema(schema_with = super::schema::power_level_nullable)]
    pub default_power_level: Option<PowerLevel>,
    /// Credits in USD (sum of the ledger's entries).
    #[serde(serialize_with = "serialize_money")]
    #[schema(schema_with = super::schema::money)]
    pub credits_balance: Decimal,
    /// Reserved by requests in flight.
    #[serde(serialize_with = "serialize_money")]
    #[schema(schema_with = super::schema::money)]
    pub credits_held: Decimal,
    /// Charged this UTC calendar month.
    #[serde(serialize_with = "serialize_money")]
    #[schema(schema_with = super::schema::money)]
    pub month_spend: Decimal,
    /// Lago's `external_subscription_id` for this account (the billing export).
    pub billing_subscription_id: String,
    /// Budget alerts at these percentages of the monthly cap (1-100).
    pub alert_thresholds_pct: Vec<i32>,
    /// A budget alert when the balance falls below this; null: none.
    #[serde(serialize_with = "serialize_money_opt")]
    #[schema(schema_with = super::schema::money_nullable)]
    pub low_balance_alert_usd: Option<Decimal>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /admin/users`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// `^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$` (also accepted as `user_id`).
    #[serde(alias = "user_id")]
    pub id: String,
    /// Default `free`.
    #[serde(default)]
    #[schema(schema_with = super::schema::tier_nullable)]
    pub tier: Option<Tier>,
    /// null or absent: no cap.
    #[serde(default, deserialize_with = "money_opt")]
    #[schema(schema_with = super::schema::money_nullable)]
    pub monthly_cap_usd: Option<Decimal>,
    #[serde(default)]
    #[schema(schema_with = super::schema::power_level_nullable)]
    pub default_power_level: Option<PowerLevel>,
    /// Default `active`.
    #[serde(default)]
    pub status: Option<AccountStatus>,
    /// Default: the user id.
    #[serde(default)]
    pub billing_subscription_id: Option<String>,
    /// Default `[]`.
    #[serde(default)]
    pub alert_thresholds_pct: Option<Vec<i32>>,
    #[serde(default, deserialize_with = "money_opt")]
    #[schema(schema_with = super::schema::money_nullable)]
    pub low_balance_alert_usd: Option<Decimal>,
}

/// `PATCH /admin/users/{id}`: only the fields present change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::schema::tier)]
    pub tier: Option<Tier>,
    /// null removes the cap.
    #[serde(default, deserialize_with = "money_patch")]
    #[schema(schema_with = super::schema::money_nullable)]
    pub monthly_cap_usd: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "present")]
    pub status: Option<AccountStatus>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = super::schema::power_level_nullable)]
    pub default_power_level: Option<Option<PowerLevel>>,
    /// null: back to the user id.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub billing_subscription_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub alert_thresholds_pct: Option<Vec<i32>>,
    /// null: no low-balance alert.
    #[serde(default, deserialize_with = "money_patch")]
    #[schema(schema_with = super::schema::money_nullable)]
    pub low_balance_alert_usd: Option<Option<Decimal>>,
}

/// Filters of `GET /admin/users`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    #[param(schema_with = super::schema::tier)]
    pub tier: Option<Tier>,
    #[param(inline)]
    pub status: Option<AccountStatus>,
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    pub offset: Option<i64>,
}

const SELECT: &str = "SELECT a.user_id, a.tier, a.status, a.monthly_cap_usd, a.default_power_level, a.balance_usd, \
    COALESCE((SELECT sum(h.amount_usd) FROM credit_holds h \
              WHERE h.user_id = a.user_id AND h.state = 'active' AND h.expires_at > now()), 0), \
    CASE WHEN a.month_spend_period = sb_current_period() THEN a.month_spend_usd ELSE 0 END, \
    a.created_at, a.updated_at, COALESCE(a.billing_subscription_id, a.user_id), \
    a.alert_thresholds_pct, a.low_balance_alert_usd \
    FROM accounts a";

fn view_of(row: &Row) -> Result<UserView, AdminError> {
    let id: String = row.try_get(0)?;
    Ok(UserView {
        user_id: id.clone(),
        id,
        tier: vocab(row, 1)?,
        status: vocab::<AccountStatus>(row, 2)?,
        monthly_cap_usd: row.try_get(3)?,
        default_power_level: vocab_opt(row, 4)?,
        credits_balance: row.try_get(5)?,
        credits_held: row.try_get(6)?,
        month_spend: row.try_get(7)?,
        billing_subscription_id: row.try_get(10)?,
        alert_thresholds_pct: row.try_get(11)?,
        low_balance_alert_usd: row.try_get(12)?,
        created_at: row.try_get(8)?,
        updated_at: row.try_get(9)?,
    })
}

/// The billing fields of an account, checked.
struct BillingFields {
    subscription: Option<String>,
    thresholds: Vec<i32>,
    low_balance: Option<Decimal>,
}

impl BillingFields {
    fn check(
        subscription: Option<String>,
        mut thresholds: Vec<i32>,
        low_balance: Option<Decimal>,
    ) -> Result<Self, AdminError> {
        if let Some(id) = &subscription {
            check_text("billing_subscription_id", id, 1, 200)?;
        }
        if thresholds.iter().any(|p| !(1..=100).contains(p)) || thresholds.len() > 20 {
            return Err(AdminError::invalid(
                "alert_thresholds_pct",
                "alert_thresholds_pct holds at most 20 percentages, each from 1 to 100",
            ));
        }
        thresholds.sort_unstable();
        thresholds.dedup();
        let low_balance = low_balance
            .map(|amount| check_money("low_balance_alert_usd", amount, CAP_INTEGER_DIGITS, false))
            .transpose()?;
        Ok(Self {
            subscription,
            thresholds,
            low_balance,
        })
    }

    async fn write(&self, client: &impl GenericClient, id: &str) -> Result<(), AdminError> {
        client
            .execute(
                "UPDATE accounts SET billing_subscription_id = $2, alert_thresholds_pct = $3,
                     low_balance_alert_usd = $4 WHERE user_id = $1",
                &[&id, &self.subscription, &self.thresholds, &self.low_balance],
            )
            .await?;
        Ok(())
    }
}

pub(crate) fn not_found(id: &str) -> AdminError {
    AdminError::NotFound(format!(
        "no user with id `{}`",
        super::input::truncate(id, 128)
    ))
}

/// 404 unless the account exists; with `lock`, the row stays locked for the transaction.
pub(crate) async fn require(
    client: &impl GenericClient,
    id: &str,
    lock: bool,
) -> Result<(), AdminError> {
    let sql = if lock {
        "SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE"
    } else {
        "SELECT 1 FROM accounts WHERE user_id = $1"
    };
    client
        .query_opt(sql, &[&id])
        .await?
        .map(|_| ())
        .ok_or_else(|| not_found(id))
}

pub async fn list(
    client: &impl GenericClient,
    filter: &UserFilter,
) -> Result<Paged<UserView>, AdminError> {
    let page = Page::new(filter.limit, filter.offset)?;
    let tier = filter.tier.map(Tier::as_str);
    let status = filter.status.map(AccountStatus::as_str);
    let condition = "($1::text IS NULL OR a.tier = $1) AND ($2::text IS NULL OR a.status = $2)";
    let (rows, total) = fetch(
        client,
        &format!("{SELECT} WHERE {condition} ORDER BY a.created_at, a.user_id"),
        &format!("SELECT count(*) FROM accounts a WHERE {condition}"),
        &[&tier, &status],
        page,
    )
    .await?;
    let data = rows.iter().map(view_of).collect::<Result<Vec<_>, _>>()?;
    Ok(page.result(data, total))
}

pub async fn get(client: &impl GenericClient, id: &str) -> Result<UserView, AdminError> {
    let row = client
        .query_opt(&format!("{SELECT} WHERE a.user_id = $1"), &[&id])
        .await?
        .ok_or_else(|| not_found(id))?;
    view_of(&row)
}

fn check_cap(cap: Option<Decimal>) -> Result<Option<Decimal>, AdminError> {
    cap.map(|c| check_money("monthly_cap_usd", c, CAP_INTEGER_DIGITS, false))
        .transpose()
}

pub async fn create(
    client: &mut tokio_postgres::Client,
    actor: &Actor,
    input: NewUser,
) -> Result<UserView, AdminError> {
    check_user_id("id", &input.id)?;
    let cap = check_cap(input.monthly_cap_usd)?;
    let tier = input.tier.unwrap_or(Tier::Free);
    let status = input.status.unwrap_or(AccountStatus::Active);
    let tx = client.transaction().await?;
    let inserted = tx
        .execute(
            "INSERT INTO accounts (user_id, tier, monthly_cap_usd, default_power_level, status) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO NOTHING",
            &[
                &input.id,
                &tier.as_str(),
                &cap,
                &input.default_power_level.map(PowerLevel::as_str),
                &status.as_str(),
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(AdminError::Conflict(format!(
            "a user with id `{}` already exists",
            input.id
        )));
    }
    let alerts = BillingFields::check(
        input.billing_subscription_id,
        input.alert_thresholds_pct.unwrap_or_default(),
        input.low_balance_alert_usd,
    )?;
    alerts.write(&tx, &input.id).await?;
    let view = get(&tx, &input.id).await?;
    actor
        .audit(
            &tx,
            "user.create",
            "user",
            &input.id,
            None,
            audit_json(&view),
        )
        .await?;
    tx.commit().await?;
    Ok(view)
}

pub async fn update(
    client: &mut tokio_postgres::Client,
    actor: &Actor,
    id: &str,
    patch: UserPatch,
) -> Result<UserView, AdminError> {
    let cap = match patch.monthly_cap_usd {
        Some(cap) => Some(check_cap(cap)?),
        None => None,
    };
    let tx = client.transaction().await?;
    require(&tx, id, true).await?;
    let before = get(&tx, id).await?;
    let tier = patch.tier.unwrap_or(before.tier);
    let status = patch.status.unwrap_or(before.status);
    let cap = cap.unwrap_or(before.monthly_cap_usd);
    let power = patch
        .default_power_level
        .unwrap_or(before.default_power_level);
    let billing = BillingFields::check(
        match patch.billing_subscription_id {
            Some(value) => value,
            None => Some(before.billing_subscription_id.clone()).filter(|s| s != id),
        },
        patch
            .alert_thresholds_pct
            .unwrap_or_else(|| before.alert_thresholds_pct.clone()),
        patch
            .low_balance_alert_usd
            .unwrap_or(before.low_balance_alert_usd),
    )?;
    if tier == before.tier
        && status == before.status
        && cap == before.monthly_cap_usd
        && power == before.default_power_level
        && billing.subscription.as_deref().unwrap_or(id) == before.billing_subscription_id
        && billing.thresholds == before.alert_thresholds_pct
        && billing.low_balance == before.low_balance_alert_usd
    {
        return Ok(before);
    }
    billing.write(&tx, id).await?;
    tx.execute(
        "UPDATE accounts SET tier = $2, status = $3, monthly_cap_usd = $4, default_power_level = $5 \
         WHERE user_id = $1",
        &[
            &id,
            &tier.as_str(),
            &status.as_str(),
            &cap,
            &power.map(PowerLevel::as_str),
        ],
    )
    .await?;
    let after = get(&tx, id).await?;
    actor
        .audit(
            &tx,
            "user.update",
            "user",
            id,
            audit_json(&before),
            audit_json(&after),
        )
        .await?;
    tx.commit().await?;
    Ok(after)
}
