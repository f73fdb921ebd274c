//! Admission of one chat request, in a single round trip (`sb_admit`): the calling key's
//! requests-per-minute limit, the first candidate provider's RPM/TPM limits, then the
//! credit hold. Limits are fixed one-minute windows in Postgres, shared by every instance.

use std::time::Duration;

use rust_decimal::Decimal;
use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::catalog::Tier;
use crate::db::DbError;
use crate::db::hot::HotClient;
use crate::ledger::{self, Authorization, LedgerError};

/// Default requests per minute of a gateway key whose own `rpm_limit` is unset.
pub fn default_rpm(tier: Tier) -> i32 {
    match tier {
        Tier::Free => 20,
        Tier::Starter => 60,
        Tier::Professional => 300,
        Tier::Enterprise => 3000,
    }
}

/// A provider's limits and what this request takes of them.
#[derive(Debug, Clone, Copy)]
pub struct ProviderLimit {
    pub provider_id: i32,
    pub rpm: Option<i32>,
    pub tpm: Option<i32>,
    /// Estimated tokens of this request (prompt + requested output).
    pub tokens: i64,
}

impl ProviderLimit {
    pub(crate) fn bucket(&self) -> Option<String> {
        (self.rpm.is_some() || self.tpm.is_some()).then(|| format!("provider:{}", self.provider_id))
    }
}

#[derive(Debug, Clone)]
pub struct AdmissionRequest<'a> {
    pub user_id: &'a str,
    pub request_id: &'a str,
    pub key_id: uuid::Uuid,
    pub key_rpm: i32,
    pub provider: Option<ProviderLimit>,
    pub hold: Decimal,
    pub hold_ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    Key,
    Provider,
}

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("rate limit exceeded for this API key; retry after {} s", retry_after.as_secs())]
    KeyRateLimited { retry_after: Duration },
    #[error("the provider's rate limit is reached; retry after {} s", retry_after.as_secs())]
    ProviderRateLimited { retry_after: Duration },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<tokio_postgres::Error> for AdmissionError {
    fn from(error: tokio_postgres::Error) -> Self {
        AdmissionError::Ledger(LedgerError::Db(DbError::Postgres(error)))
    }
}

/// Rate limits, then the hold — one round trip.
pub async fn admit(
    client: &impl HotClient,
    request: &AdmissionRequest<'_>,
) -> Result<Authorization, AdmissionError> {
    ledger::check_amount(request.hold, "hold amount")?;
    let ttl_secs = ttl_secs(request.hold_ttl);
    let key_bucket = key_bucket(request.key_id);
    let provider_bucket = request.provider.as_ref().and_then(ProviderLimit::bucket);
    let provider_rpm = request.provider.and_then(|p| p.rpm);
    let provider_tpm = request.provider.and_then(|p| p.tpm).map(i64::from);
    let provider_tokens = request.provider.map(|p| p.tokens).unwrap_or(0);
    let row = client
        .query_hot_one(
            "SELECT verdict, balance, held, month_spend, cap, retry_after_secs
             FROM sb_admit($1, $2, $3, $4 * interval '1 second', $5, $6, $7, $8, $9, $10)",
            &[
                (&request.user_id, Type::TEXT),
                (&request.request_id, Type::TEXT),
                (&request.hold, Type::NUMERIC),
                (&ttl_secs, Type::INT8),
                (&key_bucket, Type::TEXT),
                (&request.key_rpm, Type::INT4),
                (&provider_bucket, Type::TEXT),
                (&provider_rpm, Type::INT4),
                (&provider_tokens, Type::INT8),
                (&provider_tpm, Type::INT8),
            ],
        )
        .await?;
    interpret_admit(&row, request)
}

/// Admits a batch of requests in one round trip (`sb_admit_many`, group commit): each gets
/// the outcome [`admit`] would give it if the batch were admitted one request after another,
/// in order. A batch of one is [`admit`]. The outer error is the batch statement's own
/// failure, when nothing of the batch was written.
pub async fn admit_many(
    client: &impl HotClient,
    requests: &[AdmissionRequest<'_>],
) -> Result<Vec<Result<Authorization, AdmissionError>>, tokio_postgres::Error> {
    if let [request] = requests {
        return match admit(client, request).await {
            Err(AdmissionError::Ledger(LedgerError::Db(DbError::Postgres(error)))) => Err(error),
            outcome => Ok(vec![outcome]),
        };
    }
    // Amounts the ledger refuses are answered here and left out of the statement.
    let checked: Vec<Result<(), LedgerError>> = requests
        .iter()
        .map(|r| ledger::check_amount(r.hold, "hold amount"))
        .collect();
    let sent: Vec<&AdmissionRequest<'_>> = requests
        .iter()
        .zip(&checked)
        .filter(|(_, checked)| checked.is_ok())
        .map(|(request, _)| request)
        .collect();
    let rows = if sent.is_empty() {
        Vec::new()
    } else {
        let user_ids: Vec<&str> = sent.iter().map(|r| r.user_id).collect();
        let request_ids: Vec<&str> = sent.iter().map(|r| r.request_id).collect();
        let amounts: Vec<Decimal> = sent.iter().map(|r| r.hold).collect();
        let ttls: Vec<i64> = sent.iter().map(|r| ttl_secs(r.hold_ttl)).collect();
        let key_buckets: Vec<String> = sent.iter().map(|r| key_bucket(r.key_id)).collect();
        let key_rpms: Vec<i32> = sent.iter().map(|r| r.key_rpm).collect();
        let provider_buckets: Vec<Option<String>> = sent
            .iter()
            .map(|r| r.provider.as_ref().and_then(ProviderLimit::bucket))
            .collect();
        let provider_rpms: Vec<Option<i32>> = sent
            .iter()
            .map(|r| r.provider.and_then(|p| p.rpm))
            .collect();
        let provider_tokens: Vec<i64> = sent
            .iter()
            .map(|r| r.provider.map(|p| p.tokens).unwrap_or(0))
            .collect();
        let provider_tpms: Vec<Option<i64>> = sent
            .iter()
            .map(|r| r.provider.and_then(|p| p.tpm).map(i64::from))
            .collect();
        client
            .query_hot(
                "SELECT verdict, balance, held, month_spend, cap, retry_after_secs
                 FROM sb_admit_many($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    (&user_ids, Type::TEXT_ARRAY),
                    (&request_ids, Type::TEXT_ARRAY),
                    (&amounts, Type::NUMERIC_ARRAY),
                    (&ttls, Type::INT8_ARRAY),
                    (&key_buckets, Type::TEXT_ARRAY),
                    (&key_rpms, Type::INT4_ARRAY),
                    (&provider_buckets, Type::TEXT_ARRAY),
                    (&provider_rpms, Type::INT4_ARRAY),
                    (&provider_tokens, Type::INT8_ARRAY),
                    (&provider_tpms, Type::INT8_ARRAY),
                ],
            )
            .await?
    };
    let mut rows = rows.iter();
    Ok(requests
        .iter()
        .zip(checked)
        .map(|(request, checked)| {
            checked?;
            rows.next().map_or_else(
                || {
                    Err(AdmissionError::Ledger(LedgerError::Db(DbError::Corrupt(
                        "sb_admit_many answered fewer rows than requests".into(),
                    ))))
                },
                |row| interpret_admit(row, request),
            )
        })
        .collect())
}

fn ttl_secs(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1)
}

pub(crate) fn key_bucket(key_id: uuid::Uuid) -> String {
    format!("key:{key_id}")
}

/// Maps a row `(verdict, balance, held, month_spend, cap, retry_after_secs)` of `sb_admit`
/// or `sb_admit_many` to the outcome.
fn interpret_admit(
    row: &tokio_postgres::Row,
    request: &AdmissionRequest<'_>,
) -> Result<Authorization, AdmissionError> {
    let verdict: &str = row.get(0);
    let retry_after = Duration::from_secs(row.get::<_, Option<i32>>(5).unwrap_or(1).max(1) as u64);
    match verdict {
        "key_rate_limited" => Err(AdmissionError::KeyRateLimited { retry_after }),
        "provider_rate_limited" => Err(AdmissionError::ProviderRateLimited { retry_after }),
        _ => Ok(ledger::interpret_authorize(
            row,
            request.hold,
            request.request_id,
        )?),
    }
}

/// Takes a slot of a fallback candidate's provider limits (a second round trip, only on the
/// fallback path). `Ok(None)` when admitted, `Ok(Some(retry_after))` when the limit is hit.
pub async fn take_provider_slot(
    client: &impl GenericClient,
    limit: &ProviderLimit,
) -> Result<Option<Duration>, DbError> {
    let Some(bucket) = limit.bucket() else {
        return Ok(None);
    };
    let tpm = limit.tpm.map(i64::from);
    let row = client
        .query_typed_one(
            "SELECT admitted, retry_after_secs FROM sb_take_slot($1, $2, $3, $4)",
            &[
                (&bucket, Type::TEXT),
                (&limit.rpm, Type::INT4),
                (&limit.tokens, Type::INT8),
                (&tpm, Type::INT8),
            ],
        )
        .await?;
    Ok((!row.get::<_, bool>(0)).then(|| Duration::from_secs(row.get::<_, i32>(1).max(1) as u64)))
}

/// Deletes counter windows older than `keep` (the scheduled job). Returns how many.
pub async fn prune_counters(client: &impl GenericClient, keep: Duration) -> Result<u64, DbError> {
    let secs = i64::try_from(keep.as_secs()).unwrap_or(i64::MAX);
    let row = client
        .query_typed_one(
            "SELECT sb_prune_rate_limits($1 * interval '1 second')",
            &[(&secs, Type::INT8)],
        )
        .await?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}
