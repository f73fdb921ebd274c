//! Settlement: the ledger's group-commit queues of one process and the hold of one
//! request, kept together because each needs the other (an admission answers a [`Hold`];
//! a hold is captured through the queue).
//!
//! The ledger's group-commit queues of one process ([`LedgerQueues`], kept in `ChatServices`):
//! the admissions (rate limits + hold) and the captures that concurrent requests have
//! waiting at the same moment go to PostgreSQL as one statement each (`db::group`).
//!
//! One batch statement carries at most `SWITCHBOARD_LEDGER_MAX_BATCH` requests (default 64;
//! 1 turns grouping off). A process has at most [`BATCHES_IN_FLIGHT`] batches of
//! admissions, and separately of captures, in PostgreSQL at once; requests beyond them
//! wait in the queue, holding no connection, and go together in the next batch.
//!
//! [`Hold`]: the credit hold of one admitted request, an obligation settled exactly once —
//! captured, released, or, when a capture cannot be written, left active and logged as a
//! pending charge. A hold dropped unsettled (an orphaned admission, a run that died)
//! releases itself in a spawned task.
//!
//! Both settlements are idempotent by the ledger id (a second capture or release of the
//! same request changes nothing), so they are retried within a short budget when the
//! database fails: a capture that committed but whose answer was lost is found as a
//! duplicate on the next try.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

use crate::admission::{self, AdmissionError, AdmissionRequest, ProviderLimit};
use crate::db::group::{BatchLost, GroupCommit, OnCancel};
use crate::db::{DbError, DbPool};
use crate::ledger::{
    self, Authorization, Capture, GrantBook, GrantSettings, GrantTicket, LedgerError,
    PendingCharge, PendingCharges, UsageLogRow,
};

/// Batches of admissions, and separately of captures, one process has in PostgreSQL at
/// once. More in flight batch less, and one slow commit (an `fsync` stall) must not hold
/// up every admission of the process; the sweep that chose 2 is in `bench/README.md`
/// ("Batches in flight per process").
pub const BATCHES_IN_FLIGHT: usize = 2;

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

/// A capture waiting for its batch (or, when it cannot commit, for the spool).
pub(crate) type CaptureItem = ledger::CaptureRecord;

/// An admitted request: its verdict and the hold it now owns. A result that nobody
/// receives (its submitter gone) is dropped, and the [`Hold`] releases itself.
pub(crate) type Admitted = Result<(Authorization, Hold), AdmissionError>;
pub(crate) type Captured = Result<ledger::Captured, LedgerError>;

/// The admission and capture queues of one process, and where its captures that cannot
/// commit are kept until they do.
pub struct LedgerQueues {
    pool: DbPool,
    admissions: GroupCommit<AdmissionItem, Admitted>,
    captures: GroupCommit<CaptureItem, Captured>,
    pending: Option<Arc<dyn PendingCharges>>,
    /// `serve`: quota grants (admission in memory, captures written in batches).
    grants: Option<Arc<GrantBook>>,
}

impl LedgerQueues {
    /// At most `in_flight` batches of each kind at once, each of at most `max_batch`.
    pub fn new(pool: DbPool, max_batch: usize) -> Self {
        let in_flight = BATCHES_IN_FLIGHT;
        LedgerQueues {
            pool,
            // A queued admission whose request is gone is never written: no hold nobody
            // would release, no rate-limit slot used for nothing.
            admissions: GroupCommit::new(in_flight, max_batch, OnCancel::Withdraw),
            // A charge is never dropped.
            captures: GroupCommit::new(in_flight, max_batch, OnCancel::Write),
            pending: None,
            grants: None,
        }
    }

    /// Admits against quota grants (`serve`): see `ledger::grants`. Their captures that
    /// cannot be written go to the pending charges set here (attach those first).
    pub fn with_grants(mut self, settings: GrantSettings) -> (Self, Arc<GrantBook>) {
        let book = Arc::new(GrantBook::new(
            self.pool.clone(),
            settings,
            self.pending.clone(),
        ));
        self.grants = Some(Arc::clone(&book));
        (self, book)
    }

    pub fn pending_charges(&self) -> Option<&Arc<dyn PendingCharges>> {
        self.pending.as_ref()
    }

    pub(crate) fn grants(&self) -> Option<&Arc<GrantBook>> {
        self.grants.as_ref()
    }

    /// Captures that cannot commit within their retry budget are kept in `pending` (the
    /// spool of `serve`, the queue of a Lambda function) until they do.
    pub fn with_pending_charges(mut self, pending: Arc<dyn PendingCharges>) -> Self {
        self.pending = Some(pending);
        self
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
    crate::metrics::record_batch("admission", items.len());
    let outcomes = match pooled(&pool).await {
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

/// A pooled connection for a ledger batch, its wait recorded in the metrics.
async fn pooled(pool: &DbPool) -> Result<deadpool_postgres::Object, deadpool_postgres::PoolError> {
    let waited = Instant::now();
    let client = pool.get().await;
    crate::metrics::record_pool_wait(waited.elapsed(), client.is_ok());
    client
}

/// Captures a batch: one statement, or, if that statement fails, one capture at a time.
async fn capture_batch(pool: DbPool, items: Vec<CaptureItem>) -> Vec<Captured> {
    crate::metrics::record_batch("capture", items.len());
    let client = match pooled(&pool).await {
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

// ---------------------------------------------------------------- the hold

/// How long a settlement keeps retrying. A Lambda stream ends this much and more before
/// the invocation deadline (see `chat::LAMBDA_DEADLINE_MARGIN`).
pub(crate) const SETTLE_BUDGET: Duration = Duration::from_secs(4);
/// Waits between tries.
const RETRY_DELAYS: [Duration; 4] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_millis(1000),
];
/// One try's longest wait (a database that hangs rather than fails).
const TRY_TIMEOUT: Duration = Duration::from_secs(2);

/// How a capture ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Written: the charge, the closed hold, the usage rows and the billing event.
    Captured { balance: Decimal },
    /// Could not be written within the budget: the hold stays active and no usage row
    /// claims the charge yet. It is kept in the process's spool or queue (when it has
    /// one) and written when the database is back, else logged for reconciliation.
    Pending,
}

pub(crate) struct Hold {
    pool: DbPool,
    ledger_id: String,
    /// Admitted against a quota grant rather than a hold row of its own.
    granted: Option<(Arc<GrantBook>, GrantTicket)>,
    /// Still to settle: dropped while open, it releases itself.
    open: bool,
}

impl Hold {
    pub(crate) fn new(pool: DbPool, ledger_id: String) -> Hold {
        crate::metrics::holds_active(1.0);
        Hold {
            pool,
            ledger_id,
            granted: None,
            open: true,
        }
    }

    /// A request admitted against its account's grant.
    pub(crate) fn granted(
        pool: DbPool,
        ledger_id: String,
        book: Arc<GrantBook>,
        ticket: GrantTicket,
    ) -> Hold {
        crate::metrics::holds_active(1.0);
        Hold {
            pool,
            ledger_id,
            granted: Some((book, ticket)),
            open: true,
        }
    }

    pub(crate) fn ledger_id(&self) -> &str {
        &self.ledger_id
    }

    /// Captures `item` (whose ledger id is this hold's), retrying within the budget.
    pub(crate) async fn capture(mut self, queues: &LedgerQueues, item: CaptureItem) -> Settled {
        self.open = false;
        crate::metrics::holds_active(-1.0);
        if let Some((book, ticket)) = self.granted.take() {
            // Written by the next batch, within the flush delay; the balance is this
            // instance's estimate.
            let balance = book.capture(&ticket, item);
            book.room().await;
            return Settled::Captured { balance };
        }
        let outcome = retry(&self.ledger_id, "capture", || async {
            match queues.capture(item.clone()).await {
                Ok(Ok(captured)) => Ok(captured.balance),
                Ok(Err(error)) => Err(Failure::from(error)),
                Err(lost) => Err(Failure::Transient(lost.to_string())),
            }
        })
        .await;
        match outcome {
            Ok(balance) => Settled::Captured { balance },
            Err(error @ Failure::Transient(_)) if queues.pending.is_some() => {
                keep_pending(queues, item, &error).await
            }
            Err(error) => {
                log_pending_charge(&item, &error);
                crate::metrics::record_pending_capture();
                Settled::Pending
            }
        }
    }

    /// Releases the hold, writing the failed attempts' usage rows with it.
    pub(crate) async fn release(mut self, usage_logs: &[UsageLogRow]) {
        self.open = false;
        crate::metrics::holds_active(-1.0);
        if let Some((book, ticket)) = self.granted.take() {
            book.release(&ticket);
            // The failed attempts' usage rows (the failure path only).
            if !usage_logs.is_empty() {
                release(&self.pool, &self.ledger_id, usage_logs).await;
            }
            return;
        }
        release(&self.pool, &self.ledger_id, usage_logs).await;
    }
}

/// Keeps a capture that could not commit in the process's spool or queue, durably, before
/// the answer ends. If even that fails, the charge is logged for reconciliation.
async fn keep_pending(queues: &LedgerQueues, item: CaptureItem, error: &Failure) -> Settled {
    let Some(pending) = &queues.pending else {
        log_pending_charge(&item, error);
        return Settled::Pending;
    };
    crate::metrics::record_pending_capture();
    let charge = PendingCharge {
        kept_at: chrono::Utc::now(),
        capture: item,
    };
    match pending.keep(&charge).await {
        Ok(()) => {
            crate::metrics::pending_charge_kept();
            tracing::warn!(
                target: "switchboard::pending_charge",
                ledger_id = %charge.capture.ledger_id,
                amount_usd = %charge.capture.amount.normalize(),
                %error,
                "the capture could not be written; kept as a pending charge until the database is back"
            );
        }
        Err(spool_error) => {
            tracing::error!(error = %spool_error, "the pending charge could not be kept either");
            log_pending_charge(&charge.capture, error);
        }
    }
    Settled::Pending
}

/// One line with everything reconciliation needs: the hold stays active (it expires after
/// SWITCHBOARD_HOLD_TTL_SECS; a later `sb_capture` with this ledger id still charges, once).
fn log_pending_charge(item: &CaptureItem, error: &Failure) {
    let (model, provider) = item
        .usage_logs
        .last()
        .map(|row| (row.model_name.clone(), row.provider_slug.clone()))
        .unwrap_or_default();
    tracing::error!(
        target: "switchboard::pending_charge",
        ledger_id = %item.ledger_id,
        request_id = item.usage_logs.last().map(|row| row.request_id.as_str()).unwrap_or_default(),
        user_id = %item.user_id,
        amount_usd = %item.amount.normalize(),
        kind = ?item.kind,
        model = model.as_deref().unwrap_or_default(),
        provider = provider.as_deref().unwrap_or_default(),
        error = %error,
        "pending charge: the capture could not be written; the hold stays active for reconciliation"
    );
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        crate::metrics::holds_active(-1.0);
        if let Some((book, ticket)) = self.granted.take() {
            book.release(&ticket);
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(ledger_id = %self.ledger_id, "a hold was dropped outside a runtime; it expires on its own");
            return;
        };
        tracing::warn!(ledger_id = %self.ledger_id, "a hold was dropped unsettled; releasing it");
        let (pool, ledger_id) = (self.pool.clone(), std::mem::take(&mut self.ledger_id));
        runtime.spawn(async move { release(&pool, &ledger_id, &[]).await });
    }
}

async fn release(pool: &DbPool, ledger_id: &str, usage_logs: &[UsageLogRow]) {
    let outcome = retry(ledger_id, "release", || async {
        let client = pool.get().await.map_err(DbError::from)?;
        ledger::release(&**client, ledger_id, usage_logs)
            .await
            .map_err(Failure::from)
    })
    .await;
    crate::metrics::record_release(outcome.is_ok());
    if let Err(error) = outcome {
        // Nothing is charged; the hold expires after SWITCHBOARD_HOLD_TTL_SECS.
        tracing::error!(%ledger_id, %error, "could not release the hold; it expires on its own");
    }
}

/// Why one try failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The database (or the batch carrying the write) failed: try again.
    #[error("{0}")]
    Transient(String),
    /// The ledger refused: trying again gives the same answer.
    #[error("{0}")]
    Permanent(String),
}

impl From<LedgerError> for Failure {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::Db(db) => Failure::from(db),
            other => Failure::Permanent(other.to_string()),
        }
    }
}

impl From<DbError> for Failure {
    fn from(error: DbError) -> Self {
        Failure::Transient(crate::report::error_chain(&error))
    }
}

/// Runs `attempt` until it succeeds, fails permanently, or the budget is spent.
async fn retry<T, F, Fut>(ledger_id: &str, what: &'static str, attempt: F) -> Result<T, Failure>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let give_up = Instant::now() + SETTLE_BUDGET;
    let mut delays = RETRY_DELAYS.iter();
    loop {
        let left = give_up.saturating_duration_since(Instant::now());
        let error = match tokio::time::timeout(TRY_TIMEOUT.min(left), attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error @ Failure::Permanent(_))) => return Err(error),
            Ok(Err(error)) => error,
            Err(_) => Failure::Transient("the database did not answer in time".into()),
        };
        let Some(delay) = delays.next().filter(|d| Instant::now() + **d < give_up) else {
            return Err(error);
        };
        tracing::warn!(%ledger_id, %error, "{what} failed; retrying");
        crate::metrics::record_settle_retry(what);
        tokio::time::sleep(*delay).await;
    }
}
