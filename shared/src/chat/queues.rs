//! The ledger's group-commit queues of one process ([`LedgerQueues`], kept in `AppState`):
//! the admissions (rate limits + hold) and the captures that concurrent requests have
//! waiting at the same moment go to PostgreSQL as one statement each (`db::group`).
//!
//! One batch statement carries at most `SWITCHBOARD_LEDGER_MAX_BATCH` requests (default 64;
//! 1 turns grouping off). How many batches of admissions, and separately of captures, a
//! process has in PostgreSQL at once is `SWITCHBOARD_LEDGER_BATCHES` (default 2: at
//! concurrency 32 on the 2-core benchmark machine, 1, 2, 3 and 4 in flight served 3,069,
//! 2,678, 2,359 and 2,024 requests/s; more in flight batch less, and one slow commit would
//! hold up every admission of the process). Every request of an account (and of a key, and
//! of a provider) writes the same few rows; PostgreSQL serialises those writes, and each
//! waiter queued inside it costs lock-manager work. Measured with `scripts/bench` before
//! group commit (one hot account, concurrency 32, 2 cores): with all 16 pooled connections
//! in play PostgreSQL burnt 2.9 ms of CPU per request for 540 requests/s; with 3 of each in
//! flight, 1.0 ms for 1,100–1,250 requests/s. Requests beyond them wait in the queue,
//! holding no connection, and go together in the next batch.

use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::Value;

use super::hold::Hold;
use crate::admission::{self, AdmissionError, AdmissionRequest, ProviderLimit};
use crate::db::group::{BatchLost, GroupCommit, OnCancel};
use crate::db::{DbError, DbPool};
use crate::ledger::{self, Authorization, Capture, CaptureKind, LedgerError, UsageLogRow};

/// An admission waiting for its batch (owned: the batch runs in its own task).
pub(crate) struct AdmissionItem {
    pub user_id: String,
    pub ledger_id: String,
    pub key_id: uuid::Uuid,
    pub key_rpm: i32,
    pub provider: Option<ProviderLimit>,
    pub hold: Decimal,
    pub hold_ttl: Duration,
}

impl AdmissionItem {
    fn as_request(&self) -> AdmissionRequest<'_> {
        AdmissionRequest {
            user_id: &self.user_id,
            request_id: &self.ledger_id,
            key_id: self.key_id,
            key_rpm: self.key_rpm,
            provider: self.provider,
            hold: self.hold,
            hold_ttl: self.hold_ttl,
        }
    }
}

/// A capture waiting for its batch.
#[derive(Debug, Clone)]
pub(crate) struct CaptureItem {
    pub ledger_id: String,
    pub user_id: String,
    pub amount: Decimal,
    pub kind: CaptureKind,
    pub usage_logs: Vec<UsageLogRow>,
    pub billing_properties: Value,
}

impl CaptureItem {
    fn as_capture(&self) -> Capture<'_> {
        Capture {
            request_id: &self.ledger_id,
            user_id: &self.user_id,
            amount: self.amount,
            kind: self.kind,
            usage_logs: &self.usage_logs,
            billing_properties: self.billing_properties.clone(),
        }
    }
}

/// An admitted request: its verdict and the hold it now owns. A result that nobody
/// receives (its submitter gone) is dropped, and the [`Hold`] releases itself.
pub(crate) type Admitted = Result<(Authorization, Hold), AdmissionError>;
pub(crate) type Captured = Result<ledger::Captured, LedgerError>;

/// The admission and capture queues of one process.
pub struct LedgerQueues {
    pool: DbPool,
    admissions: GroupCommit<AdmissionItem, Admitted>,
    captures: GroupCommit<CaptureItem, Captured>,
}

impl LedgerQueues {
    /// At most `in_flight` batches of each kind at once, each of at most `max_batch`.
    pub fn new(pool: DbPool, in_flight: usize, max_batch: usize) -> Self {
        LedgerQueues {
            pool,
            // A queued admission whose request is gone is never written: no hold nobody
            // would release, no rate-limit slot used for nothing.
            admissions: GroupCommit::new(in_flight, max_batch, OnCancel::Withdraw),
            // A charge is never dropped.
            captures: GroupCommit::new(in_flight, max_batch, OnCancel::Write),
        }
    }

    pub(crate) async fn admit(&self, item: AdmissionItem) -> Result<Admitted, BatchLost> {
        let pool = self.pool.clone();
        self.admissions
            .submit(item, move |batch| admit_batch(pool.clone(), batch))
            .await
    }

    pub(crate) async fn capture(&self, item: CaptureItem) -> Result<Captured, BatchLost> {
        let pool = self.pool.clone();
        self.captures
            .submit(item, move |batch| capture_batch(pool.clone(), batch))
            .await
    }
}

/// Admits a batch: one statement, or, if that statement fails, one request at a time (so
/// one bad request never fails the others). Each admitted request gets its [`Hold`].
async fn admit_batch(pool: DbPool, items: Vec<AdmissionItem>) -> Vec<Admitted> {
    let outcomes = match pool.get().await {
        Err(error) => items
            .iter()
            .map(|_| Err(LedgerError::Db(DbError::from_pool_ref(&error)).into()))
            .collect(),
        Ok(client) => {
            let requests: Vec<AdmissionRequest<'_>> =
                items.iter().map(AdmissionItem::as_request).collect();
            match admission::admit_many(&*client, &requests).await {
                Ok(outcomes) => outcomes,
                Err(error) if requests.len() > 1 => {
                    tracing::warn!(error = %error, size = requests.len(), "admission batch failed; admitting one by one");
                    let mut outcomes = Vec::with_capacity(requests.len());
                    for request in &requests {
                        outcomes.push(admission::admit(&*client, request).await);
                    }
                    outcomes
                }
                Err(error) => vec![Err(error.into())],
            }
        }
    };
    items
        .into_iter()
        .zip(outcomes)
        .map(|(item, outcome)| {
            outcome.map(|authorization| (authorization, Hold::new(pool.clone(), item.ledger_id)))
        })
        .collect()
}

/// Captures a batch: one statement, or, if that statement fails, one capture at a time.
async fn capture_batch(pool: DbPool, items: Vec<CaptureItem>) -> Vec<Captured> {
    let client = match pool.get().await {
        Ok(client) => client,
        Err(error) => {
            return items
                .iter()
                .map(|_| Err(LedgerError::Db(DbError::from_pool_ref(&error))))
                .collect();
        }
    };
    let captures: Vec<Capture<'_>> = items.iter().map(CaptureItem::as_capture).collect();
    match ledger::capture_many(&*client, &captures).await {
        Ok(outcomes) => outcomes,
        Err(error) if captures.len() > 1 => {
            tracing::warn!(error = %error, size = captures.len(), "capture batch failed; capturing one by one");
            let mut outcomes = Vec::with_capacity(captures.len());
            for capture in &captures {
                outcomes.push(ledger::capture(&*client, capture).await);
            }
            outcomes
        }
        Err(error) => vec![Err(error.into())],
    }
}
