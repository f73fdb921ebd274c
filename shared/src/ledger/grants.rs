//! Quota grants (ledger.md, "Quota grants"; online charging as RFC 4006 runs it): a `serve`
//! instance holds one credit hold per busy account — its grant — and admits that account's
//! requests against it in memory, with no database round trip, while their worst case fits.
//! Captures are queued and written in batches every `flush_delay` (one statement:
//! `sb_capture_granted`), each batch shrinking the grants by what it charged. Rate limits
//! leave the hot path the same way: the instance takes a share of a key's or a provider's
//! window (`sb_take_share`) and spends it locally.
//!
//! - **Sizing.** A grant is extended by about what the account spent here in the last
//!   [`SIZING_WINDOW`] (at least [`MIN_REQUESTS`] worst cases), never more than
//!   [`MAX_FRACTION`] of the account's room (balance and monthly cap, less every other
//!   active hold). When the room is below [`MIN_REQUESTS`] worst cases the account is low:
//!   the grant gives back what it holds beyond what is in flight and takes exactly one
//!   request's worth at a time — per-request holds in effect, so exactly K of N holds for
//!   an account that can afford K.
//! - **Recalled** when another instance (or a per-request admission) would refuse the
//!   account for credits or its monthly cap: the refused side marks the account's other
//!   grants recalled ([`recall_grants`]) and tries again for up to [`RECALL_WAIT`]; each
//!   instance looks for recalls among its grants at every flush and shrinks a recalled grant
//!   to what it has in flight and not yet written. So no account is refused while another
//!   instance sits on its money.
//! - **Returned** when idle for `idle` with nothing in flight or unwritten; a grant's hold
//!   expires like any other (`SWITCHBOARD_HOLD_TTL_SECS`, refreshed by each extension), so a
//!   crashed instance's grants free themselves.
//! - **What a crash can lose**: the captures queued and not yet written (at most one
//!   `flush_delay` of them, plus a batch in flight, and never more than [`MAX_QUEUED`]:
//!   past it answers wait for their batch). Never an overspend: every admitted
//!   request's worst case was inside a grant held in the database. Never a double charge:
//!   captures are idempotent by ledger id.
//! - **A batch that cannot be written** is retried every flush; after the settlement
//!   budget its captures go to the process's pending charges (the spool) and are written
//!   from there once the database is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio::sync::Notify;
use tokio_postgres::types::Type;

use super::spool::{CaptureRecord, PendingCharge, PendingCharges};
use super::{LedgerError, check_amount};
use crate::db::hot::HotClient;
use crate::db::{DbError, DbPool};

/// A grant covers at least this many worst cases; an account whose room is below it is
/// admitted one request at a time.
pub const MIN_REQUESTS: i64 = 8;
/// An account takes a grant once this many of its requests arrived here within
/// [`HOT_WINDOW`]; a quieter account keeps per-request holds (a grant would only sit on its
/// money).
pub const HOT_REQUESTS: u32 = 8;
pub const HOT_WINDOW: Duration = Duration::from_secs(1);
/// A grant takes at most this share of an account's room at each extension, so other
/// instances always find room too.
pub const MAX_FRACTION: Decimal = Decimal::from_parts(25, 0, 0, false, 2);
/// The spend a grant extension is sized on.
pub const SIZING_WINDOW: Duration = Duration::from_secs(10);
/// How long an admission about to be refused waits for other instances to give back
/// recalled grants, trying again every [`RECALL_POLL`].
pub const RECALL_WAIT: Duration = Duration::from_secs(1);
pub const RECALL_POLL: Duration = Duration::from_millis(100);
/// The most captures one batch carries.
const MAX_BATCH: usize = 256;
/// Answers whose captures are queued and not yet written, at most: past this an answer
/// waits for the batches to catch up (backpressure) before it is delivered, so a crash
/// never loses more than this plus the batch being written, however far the load outruns
/// the database.
pub const MAX_QUEUED: usize = 4 * MAX_BATCH;
/// A batch that could not be written for this long goes to the pending charges.
const FLUSH_BUDGET: Duration = Duration::from_secs(4);
/// Rate-limit shares: the part of a limit one refill takes.
const SHARE_DIVISOR: i64 = 8;
const MAX_SHARE_REQUESTS: i64 = 200;
const MAX_SHARE_TOKENS: i64 = 1_000_000;

#[derive(Debug, Clone, Copy)]
pub struct GrantSettings {
    /// Captures are written within this delay (`SWITCHBOARD_LEDGER_FLUSH_MS`).
    pub flush_delay: Duration,
    /// A grant's hold lifetime, refreshed by each extension.
    pub hold_ttl: Duration,
    /// An unused grant is returned after this.
    pub idle: Duration,
    /// Captures queued at most before answers wait for them ([`MAX_QUEUED`]).
    pub max_queued: usize,
}

/// One account's grant in this instance.
#[derive(Debug, Default)]
struct GrantState {
    grant_id: Option<String>,
    /// The grant hold's amount in the database, as this instance knows it.
    held: Decimal,
    /// Worst cases of the requests admitted and not yet settled.
    reserved: Decimal,
    /// Captured here, not yet written (still inside `held`).
    unflushed: Decimal,
    /// The balance as last read, less what was captured here since.
    balance: Decimal,
    last_used: Option<Instant>,
    /// Spend in the current sizing window.
    window_started: Option<Instant>,
    window_spent: Decimal,
    last_window_spent: Decimal,
    /// Requests seen in the current [`HOT_WINDOW`].
    hot_started: Option<Instant>,
    hot_count: u32,
    /// Being returned: nothing is reserved from it any more.
    returning: bool,
}

impl GrantState {
    fn available(&self) -> Decimal {
        self.held - self.reserved - self.unflushed
    }

    /// Counts a request; whether the account is busy enough here for a grant.
    fn hot(&mut self, now: Instant) -> bool {
        match self.hot_started {
            Some(started) if now.duration_since(started) < HOT_WINDOW => {
                self.hot_count = self.hot_count.saturating_add(1)
            }
            _ => {
                self.hot_started = Some(now);
                self.hot_count = 1;
            }
        }
        self.hot_count >= HOT_REQUESTS
    }

    fn spend_rate(&mut self, now: Instant) -> Decimal {
        match self.window_started {
            Some(started) if now.duration_since(started) < SIZING_WINDOW => {}
            _ => {
                self.last_window_spent = self.window_spent;
                self.window_spent = Decimal::ZERO;
                self.window_started = Some(now);
            }
        }
        self.window_spent.max(self.last_window_spent)
    }
}

#[derive(Default)]
struct AccountSlot {
    /// One extension at a time per account.
    refill: tokio::sync::Mutex<()>,
    state: Mutex<GrantState>,
}

impl AccountSlot {
    fn state(&self) -> std::sync::MutexGuard<'_, GrantState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request admitted against a grant: its worst case, to settle.
#[derive(Debug)]
pub struct GrantTicket {
    pub user_id: String,
    pub worst_case: Decimal,
    grant_id: String,
}

struct Queued {
    grant_id: String,
    capture: CaptureRecord,
    queued_at: Instant,
}

/// A rate-limit window share.
#[derive(Debug, Clone, Copy)]
struct Share {
    window_ends: DateTime<Utc>,
    requests: i64,
    tokens: i64,
}

/// The grants of one process.
pub struct GrantBook {
    pool: DbPool,
    settings: GrantSettings,
    instance: String,
    next_grant: AtomicU64,
    accounts: Mutex<HashMap<String, Arc<AccountSlot>>>,
    shares: Mutex<HashMap<String, Share>>,
    share_refill: tokio::sync::Mutex<()>,
    queue: Mutex<Vec<Queued>>,
    wake: Notify,
    /// Told after every batch (written, put back or kept): answers waiting for room.
    drained: Notify,
    pending: Option<Arc<dyn PendingCharges>>,
    /// Extensions and batches one at a time: an extension reads what this instance keeps in
    /// flight and unwritten, which a batch in progress would make stale.
    writes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for GrantBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantBook")
            .field("instance", &self.instance)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Why a rate-limit share was refused: come back after this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitReached {
    pub retry_after: Duration,
}

impl GrantBook {
    pub fn new(
        pool: DbPool,
        settings: GrantSettings,
        pending: Option<Arc<dyn PendingCharges>>,
    ) -> GrantBook {
        GrantBook {
            pool,
            settings,
            instance: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            next_grant: AtomicU64::new(1),
            accounts: Mutex::new(HashMap::new()),
            shares: Mutex::new(HashMap::new()),
            share_refill: tokio::sync::Mutex::new(()),
            queue: Mutex::new(Vec::new()),
            wake: Notify::new(),
            drained: Notify::new(),
            pending,
            writes: tokio::sync::Mutex::new(()),
        }
    }

    pub fn settings(&self) -> GrantSettings {
        self.settings
    }

    fn slot(&self, user_id: &str) -> Arc<AccountSlot> {
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(accounts.entry(user_id.to_string()).or_default())
    }

    fn reserve(slot: &AccountSlot, worst_case: Decimal) -> Option<String> {
        let mut state = slot.state();
        let grant_id = state.grant_id.clone()?;
        if state.returning || state.available() < worst_case {
            return None;
        }
        state.reserved += worst_case;
        state.last_used = Some(Instant::now());
        Some(grant_id)
    }

    /// Admits a request whose worst case is `worst_case`: in memory while the account's
    /// grant has room, else after extending it (one round trip). Refused like a hold.
    /// `None`: the account has no grant here and is not busy enough for one — admit it with
    /// a per-request hold.
    pub async fn admit(
        &self,
        user_id: &str,
        worst_case: Decimal,
    ) -> Result<Option<GrantTicket>, LedgerError> {
        check_amount(worst_case, "hold amount")?;
        let slot = self.slot(user_id);
        let ticket = |grant_id| GrantTicket {
            user_id: user_id.to_string(),
            worst_case,
            grant_id,
        };
        {
            let mut state = slot.state();
            let hot = state.hot(Instant::now());
            if state.grant_id.is_none() && !hot {
                return Ok(None);
            }
        }
        if let Some(grant_id) = Self::reserve(&slot, worst_case) {
            return Ok(Some(ticket(grant_id)));
        }
        let mut one_refill = slot.refill.lock().await;
        if let Some(grant_id) = Self::reserve(&slot, worst_case) {
            return Ok(Some(ticket(grant_id)));
        }
        // What an extension adds may be taken by requests on the fast path before this one
        // reserves it: extend again (each extension is refused when the account has no
        // room left, which ends the loop). A refusal while other instances hold grants on
        // the account recalls them and tries again.
        let recall_until = Instant::now() + RECALL_WAIT;
        let mut extensions = 0;
        loop {
            match self.extend(user_id, &slot, worst_case).await {
                Ok(()) => {
                    if let Some(grant_id) = Self::reserve(&slot, worst_case) {
                        return Ok(Some(ticket(grant_id)));
                    }
                    extensions += 1;
                    if extensions == 8 {
                        return Err(LedgerError::InsufficientCredits {
                            available: slot.state().available().max(Decimal::ZERO),
                            needed: worst_case,
                        });
                    }
                }
                Err(
                    refused @ (LedgerError::InsufficientCredits { .. }
                    | LedgerError::MonthlyCapExceeded { .. }),
                ) => {
                    let own = slot.state().grant_id.clone();
                    if Instant::now() >= recall_until
                        || !self.recalled_others(user_id, own.as_deref()).await
                    {
                        return Err(refused);
                    }
                    // Other requests of the account go on meanwhile (they may find room
                    // a capture freed, or join the wait).
                    drop(one_refill);
                    tokio::time::sleep(RECALL_POLL).await;
                    one_refill = slot.refill.lock().await;
                    if let Some(grant_id) = Self::reserve(&slot, worst_case) {
                        return Ok(Some(ticket(grant_id)));
                    }
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// Recalls the account's grants held elsewhere; whether there were any to wait for.
    async fn recalled_others(&self, user_id: &str, own: Option<&str>) -> bool {
        let Ok(client) = self.pool.get().await else {
            return false;
        };
        recall_grants(&**client, user_id, own)
            .await
            .is_ok_and(|held| held > Decimal::ZERO)
    }

    /// Extends (or takes) the account's grant so that `worst_case` fits.
    async fn extend(
        &self,
        user_id: &str,
        slot: &AccountSlot,
        worst_case: Decimal,
    ) -> Result<(), LedgerError> {
        let _no_batch = self.writes.lock().await;
        let (grant_id, want, keep) = {
            let mut state = slot.state();
            let now = Instant::now();
            let rate = state.spend_rate(now);
            let floor = worst_case * Decimal::from(MIN_REQUESTS);
            let want = (rate + worst_case).max(floor);
            let grant_id = state.grant_id.clone().unwrap_or_else(|| {
                format!(
                    "grant:{}:{}",
                    self.instance,
                    self.next_grant.fetch_add(1, Ordering::Relaxed)
                )
            });
            (grant_id, want, state.reserved + state.unflushed)
        };
        for attempt in 0..2 {
            let grant_id = if attempt == 0 {
                grant_id.clone()
            } else {
                format!(
                    "grant:{}:{}",
                    self.instance,
                    self.next_grant.fetch_add(1, Ordering::Relaxed)
                )
            };
            let client = self.pool.get().await.map_err(DbError::from)?;
            let row = client
                .query_hot_one(
                    "SELECT verdict, delta, room, balance, month_spend, cap
                     FROM sb_grant($1, $2, $3, $4, $5, $6, $7 * interval '1 second', $8)",
                    &[
                        (&user_id, Type::TEXT),
                        (&grant_id, Type::TEXT),
                        (&want, Type::NUMERIC),
                        (&worst_case, Type::NUMERIC),
                        (&(worst_case * Decimal::from(MIN_REQUESTS)), Type::NUMERIC),
                        (&keep, Type::NUMERIC),
                        (
                            &i64::try_from(self.settings.hold_ttl.as_secs()).unwrap_or(900),
                            Type::INT8,
                        ),
                        (&MAX_FRACTION, Type::NUMERIC),
                    ],
                )
                .await
                .map_err(|e| LedgerError::Db(DbError::Postgres(e)))?;
            let verdict: String = row.try_get(0).map_err(db)?;
            let delta: Option<Decimal> = row.try_get(1).map_err(db)?;
            let room: Option<Decimal> = row.try_get(2).map_err(db)?;
            let balance: Option<Decimal> = row.try_get(3).map_err(db)?;
            let month_spend: Option<Decimal> = row.try_get(4).map_err(db)?;
            let cap: Option<Decimal> = row.try_get(5).map_err(db)?;
            {
                let mut state = slot.state();
                if let Some(balance) = balance {
                    state.balance = balance - state.unflushed;
                }
                if verdict != "grant_closed"
                    && let Some(delta) = delta
                {
                    if state.grant_id.as_deref() != Some(&grant_id) {
                        state.held = Decimal::ZERO;
                    }
                    state.grant_id = Some(grant_id.clone());
                    state.held += delta;
                }
            }
            return match verdict.as_str() {
                "granted" | "single" => Ok(()),
                "grant_closed" => {
                    // The old grant expired or was returned: a new one, once.
                    slot.state().grant_id = None;
                    continue;
                }
                "insufficient_credits" => Err(LedgerError::InsufficientCredits {
                    available: room.unwrap_or_default().max(Decimal::ZERO),
                    needed: worst_case,
                }),
                "monthly_cap_exceeded" => Err(LedgerError::MonthlyCapExceeded {
                    cap: cap.unwrap_or_default(),
                    committed: month_spend.unwrap_or_default(),
                    needed: worst_case,
                }),
                "account_disabled" => Err(LedgerError::AccountDisabled),
                "no_account" => Err(LedgerError::NoAccount),
                other => Err(LedgerError::Db(DbError::Corrupt(format!(
                    "unknown grant verdict {other}"
                )))),
            };
        }
        Err(LedgerError::Db(DbError::Corrupt(
            "a new grant was closed at once".into(),
        )))
    }

    /// A request that ended without a charge: its worst case back to the grant.
    pub fn release(&self, ticket: &GrantTicket) {
        let slot = self.slot(&ticket.user_id);
        let mut state = slot.state();
        state.reserved = (state.reserved - ticket.worst_case).max(Decimal::ZERO);
    }

    /// Queues the capture of a granted request; answers the account's estimated balance
    /// (the last balance read, less what was captured here since).
    pub fn capture(&self, ticket: &GrantTicket, capture: CaptureRecord) -> Decimal {
        let slot = self.slot(&ticket.user_id);
        let balance = {
            let mut state = slot.state();
            state.reserved = (state.reserved - ticket.worst_case).max(Decimal::ZERO);
            state.unflushed += capture.amount;
            state.balance -= capture.amount;
            state.window_spent += capture.amount;
            state.balance
        };
        let queued = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.push(Queued {
                grant_id: ticket.grant_id.clone(),
                capture,
                queued_at: Instant::now(),
            });
            queue.len()
        };
        crate::metrics::grant_captures_queued(queued);
        if queued >= MAX_BATCH {
            self.wake.notify_one();
        }
        balance
    }

    /// Waits while more than `max_queued` captures are waiting for their batch (the load
    /// outruns the database): an answer is delivered only once its capture is among the
    /// last `max_queued`. Bounded by the settlement budget, after which a batch that cannot
    /// be written goes to the pending charges anyway.
    pub async fn room(&self) {
        let deadline = tokio::time::Instant::now() + FLUSH_BUDGET + Duration::from_secs(1);
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.queued() <= self.settings.max_queued {
                return;
            }
            self.wake.notify_one();
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                return;
            }
        }
    }

    /// A request's slot in a rate-limit window (`bucket`, `rpm` requests and `tpm` tokens a
    /// minute; `tokens` this request's): from this instance's share, refilled from the
    /// shared window when spent.
    pub async fn take_slot(
        &self,
        bucket: &str,
        rpm: Option<i32>,
        tpm: Option<i64>,
        tokens: i64,
    ) -> Result<(), LimitReached> {
        if rpm.is_none() && tpm.is_none() {
            return Ok(());
        }
        let tokens = tokens.max(0);
        if self.spend_share(bucket, tpm.is_some(), tokens) {
            return Ok(());
        }
        let _one_refill = self.share_refill.lock().await;
        if self.spend_share(bucket, tpm.is_some(), tokens) {
            return Ok(());
        }
        // Refill only what is short: requests when none is left, tokens when this request's
        // do not fit.
        let (have_requests, have_tokens) = self.share_left(bucket);
        let want_requests = if have_requests >= 1 {
            0
        } else {
            rpm.map_or(MAX_SHARE_REQUESTS, |r| {
                (i64::from(r) / SHARE_DIVISOR).clamp(1, MAX_SHARE_REQUESTS)
            })
        };
        let short_tokens = tpm.is_some() && have_tokens < tokens;
        let want_tokens = match tpm {
            Some(t) if short_tokens => (t / SHARE_DIVISOR).clamp(1, MAX_SHARE_TOKENS).max(tokens),
            _ => 0,
        };
        let min_tokens = if short_tokens {
            tokens - have_tokens.max(0)
        } else {
            0
        };
        let row = async {
            let client = self.pool.get().await.map_err(DbError::from)?;
            client
                .query_hot_one(
                    "SELECT share_window, share_requests, share_tokens, retry_after_secs
                     FROM sb_take_share($1, $2, $3, $4, $5, $6)",
                    &[
                        (&bucket, Type::TEXT),
                        (&rpm, Type::INT4),
                        (
                            &i32::try_from(want_requests).unwrap_or(i32::MAX),
                            Type::INT4,
                        ),
                        (&tpm, Type::INT8),
                        (&want_tokens, Type::INT8),
                        (&min_tokens, Type::INT8),
                    ],
                )
                .await
                .map_err(DbError::Postgres)
        }
        .await;
        let row = match row {
            Ok(row) => row,
            // The database is out of reach: the limit cannot be checked; let the request
            // through rather than fail it (its money is held, the window is best effort).
            Err(error) => {
                tracing::warn!(%error, bucket, "rate-limit share unavailable; admitting");
                return Ok(());
            }
        };
        let window_start: DateTime<Utc> = row.try_get(0).unwrap_or_else(|_| Utc::now());
        let requests: i32 = row.try_get(1).unwrap_or(0);
        let granted_tokens: i64 = row.try_get(2).unwrap_or(0);
        let retry_after: i32 = row.try_get(3).unwrap_or(1);
        let refused = (want_requests > 0 && requests <= 0) || granted_tokens < min_tokens;
        if refused {
            return Err(LimitReached {
                retry_after: Duration::from_secs(u64::try_from(retry_after.max(1)).unwrap_or(1)),
            });
        }
        let mut shares = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        let window_ends = window_start + chrono::Duration::seconds(60);
        let share = shares.entry(bucket.to_string()).or_insert(Share {
            window_ends,
            requests: 0,
            tokens: 0,
        });
        if share.window_ends != window_ends {
            *share = Share {
                window_ends,
                requests: 0,
                tokens: 0,
            };
        }
        share.requests = (share.requests + i64::from(requests) - 1).max(0);
        share.tokens =
            (share.tokens + granted_tokens - if tpm.is_some() { tokens } else { 0 }).max(0);
        Ok(())
    }

    /// What this instance's share of `bucket`'s current window has left.
    fn share_left(&self, bucket: &str) -> (i64, i64) {
        let shares = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        match shares.get(bucket) {
            Some(share) if Utc::now() < share.window_ends => (share.requests, share.tokens),
            _ => (0, 0),
        }
    }

    fn spend_share(&self, bucket: &str, counts_tokens: bool, tokens: i64) -> bool {
        let mut shares = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(share) = shares.get_mut(bucket) else {
            return false;
        };
        if Utc::now() >= share.window_ends {
            shares.remove(bucket);
            return false;
        }
        if share.requests < 1 || (counts_tokens && share.tokens < tokens) {
            return false;
        }
        share.requests -= 1;
        if counts_tokens {
            share.tokens -= tokens;
        }
        true
    }

    /// `serve`'s writer: flushes the queued captures every `flush_delay` (sooner when a
    /// batch is full), returns idle grants, and at `stop` writes what is left.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut ticker = tokio::time::interval(self.settings.flush_delay);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_upkeep = Instant::now();
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = ticker.tick() => {}
                () = self.wake.notified() => {}
            }
            self.flush().await;
            self.answer_recalls().await;
            if last_upkeep.elapsed() >= Duration::from_secs(1) {
                last_upkeep = Instant::now();
                self.return_idle().await;
            }
        }
        // Shutting down: everything queued is written (or kept), every grant returned.
        let deadline = Instant::now() + FLUSH_BUDGET;
        while !self.queue_is_empty() && Instant::now() < deadline {
            self.flush().await;
        }
        self.keep_queued_as_pending().await;
        self.drained.notify_waiters();
        self.return_all().await;
    }

    /// Captures queued and not yet written.
    pub fn queued(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn queue_is_empty(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Writes one batch. On failure the batch goes back to the front of the queue, unless
    /// it waited past the budget: then it is kept as pending charges.
    pub async fn flush(&self) {
        self.flush_one().await;
        self.drained.notify_waiters();
    }

    async fn flush_one(&self) {
        let _no_extension = self.writes.lock().await;
        let batch: Vec<Queued> = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let n = queue.len().min(MAX_BATCH);
            queue.drain(..n).collect()
        };
        if batch.is_empty() {
            return;
        }
        crate::metrics::record_batch("grant_capture", batch.len());
        match self.write(&batch).await {
            Ok(outcomes) => {
                for (queued, (verdict, balance)) in batch.iter().zip(outcomes) {
                    let slot = self.slot(&queued.capture.user_id);
                    let mut state = slot.state();
                    state.unflushed = (state.unflushed - queued.capture.amount).max(Decimal::ZERO);
                    if verdict == "ok" && state.grant_id.as_deref() == Some(&queued.grant_id) {
                        state.held = (state.held - queued.capture.amount).max(Decimal::ZERO);
                    }
                    if let Some(balance) = balance {
                        state.balance = balance - state.unflushed;
                    }
                    if verdict == "no_account" {
                        tracing::error!(
                            target: "switchboard::pending_charge",
                            ledger_id = %queued.capture.ledger_id,
                            user_id = %queued.capture.user_id,
                            "a granted capture names an account that no longer exists"
                        );
                    }
                }
                let left = self
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len();
                crate::metrics::grant_captures_queued(left);
            }
            Err(error) => {
                let oldest = batch.iter().map(|q| q.queued_at).min();
                if oldest.is_some_and(|t| t.elapsed() >= FLUSH_BUDGET) {
                    tracing::warn!(%error, captures = batch.len(), "granted captures could not be written in time; keeping them as pending charges");
                    self.keep_as_pending(batch).await;
                } else {
                    tracing::warn!(%error, captures = batch.len(), "granted captures could not be written; retrying");
                    let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                    let rest = std::mem::take(&mut *queue);
                    *queue = batch;
                    queue.extend(rest);
                }
            }
        }
    }

    async fn write(&self, batch: &[Queued]) -> Result<Vec<(String, Option<Decimal>)>, DbError> {
        let client = self.pool.get().await.map_err(DbError::from)?;
        let mut grant_ids = Vec::with_capacity(batch.len());
        let mut request_ids = Vec::with_capacity(batch.len());
        let mut user_ids = Vec::with_capacity(batch.len());
        let mut amounts = Vec::with_capacity(batch.len());
        let mut kinds = Vec::with_capacity(batch.len());
        let mut logs = Vec::with_capacity(batch.len());
        let mut properties = Vec::with_capacity(batch.len());
        for queued in batch {
            let capture = &queued.capture;
            grant_ids.push(queued.grant_id.as_str());
            request_ids.push(capture.ledger_id.as_str());
            user_ids.push(capture.user_id.as_str());
            amounts.push(capture.amount);
            kinds.push(capture.kind.as_str());
            logs.push(
                serde_json::to_value(&capture.usage_logs)
                    .map_err(|e| DbError::Corrupt(format!("usage rows: {e}")))?,
            );
            properties.push(capture.billing_properties.clone());
        }
        let rows = tokio::time::timeout(
            FLUSH_BUDGET,
            client.query_hot(
                "SELECT verdict, balance FROM sb_capture_granted($1, $2, $3, $4, $5, $6, $7)",
                &[
                    (&grant_ids, Type::TEXT_ARRAY),
                    (&request_ids, Type::TEXT_ARRAY),
                    (&user_ids, Type::TEXT_ARRAY),
                    (&amounts, Type::NUMERIC_ARRAY),
                    (&kinds, Type::TEXT_ARRAY),
                    (&logs, Type::JSONB_ARRAY),
                    (&properties, Type::JSONB_ARRAY),
                ],
            ),
        )
        .await
        .map_err(|_| DbError::Unavailable("the capture batch did not commit in time".into()))?
        .map_err(DbError::Postgres)?;
        if rows.len() != batch.len() {
            return Err(DbError::Corrupt(format!(
                "sb_capture_granted answered {} rows for {} captures",
                rows.len(),
                batch.len()
            )));
        }
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    async fn keep_as_pending(&self, batch: Vec<Queued>) {
        for queued in batch {
            {
                let slot = self.slot(&queued.capture.user_id);
                let mut state = slot.state();
                state.unflushed = (state.unflushed - queued.capture.amount).max(Decimal::ZERO);
            }
            let charge = PendingCharge {
                kept_at: Utc::now(),
                capture: queued.capture,
            };
            let kept = match &self.pending {
                Some(pending) => pending.keep(&charge).await.is_ok(),
                None => false,
            };
            crate::metrics::record_pending_capture();
            if kept {
                crate::metrics::pending_charge_kept();
            } else {
                tracing::error!(
                    target: "switchboard::pending_charge",
                    ledger_id = %charge.capture.ledger_id,
                    user_id = %charge.capture.user_id,
                    amount_usd = %charge.capture.amount.normalize(),
                    "pending charge: a granted capture could not be written nor kept"
                );
            }
        }
    }

    async fn keep_queued_as_pending(&self) {
        let batch: Vec<Queued> =
            std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner));
        if !batch.is_empty() {
            self.keep_as_pending(batch).await;
        }
    }

    /// Shrinks the grants another admission recalled (one statement per flush while this
    /// instance holds grants; more only when one was recalled).
    pub async fn answer_recalls(&self) {
        let held: Vec<(String, Arc<AccountSlot>)> = {
            let accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
            accounts
                .values()
                .filter_map(|slot| {
                    let grant_id = slot.state().grant_id.clone()?;
                    Some((grant_id, Arc::clone(slot)))
                })
                .collect()
        };
        if held.is_empty() {
            return;
        }
        let ids: Vec<&str> = held.iter().map(|(id, _)| id.as_str()).collect();
        let recalled: Vec<String> = {
            let Ok(client) = self.pool.get().await else {
                return;
            };
            match client
                .query_hot(
                    "SELECT request_id FROM credit_holds
                     WHERE request_id = ANY($1) AND recalled_at IS NOT NULL",
                    &[(&ids, Type::TEXT_ARRAY)],
                )
                .await
            {
                Ok(rows) => rows.iter().filter_map(|r| r.try_get(0).ok()).collect(),
                Err(error) => {
                    tracing::debug!(%error, "could not look for recalled grants");
                    return;
                }
            }
        };
        for grant_id in recalled {
            if let Some((_, slot)) = held.iter().find(|(id, _)| *id == grant_id) {
                self.shrink(slot, &grant_id).await;
            }
        }
    }

    /// Shrinks a recalled grant to what is in flight and not yet written. No request
    /// reserves from it meanwhile (`returning`), and no batch or extension runs.
    async fn shrink(&self, slot: &AccountSlot, grant_id: &str) {
        // Skipped while an extension runs (it gives back what is not in flight itself when
        // the account is low); the recall stays marked for the next flush.
        let Ok(_one_refill) = slot.refill.try_lock() else {
            return;
        };
        let _no_batch = self.writes.lock().await;
        let keep = {
            let mut state = slot.state();
            if state.grant_id.as_deref() != Some(grant_id) {
                return;
            }
            state.returning = true;
            state.reserved + state.unflushed
        };
        let shrunk = async {
            let client = self.pool.get().await.map_err(DbError::from)?;
            let row = client
                .query_hot_one(
                    "SELECT held, delta FROM sb_shrink_grant($1, $2)",
                    &[(&grant_id, Type::TEXT), (&keep, Type::NUMERIC)],
                )
                .await
                .map_err(DbError::Postgres)?;
            let held: Option<Decimal> = row.try_get(0).map_err(DbError::Postgres)?;
            let delta: Option<Decimal> = row.try_get(1).map_err(DbError::Postgres)?;
            Ok::<_, DbError>((held, delta.unwrap_or_default()))
        }
        .await;
        let mut state = slot.state();
        state.returning = false;
        match shrunk {
            Ok((Some(_), delta)) if state.grant_id.as_deref() == Some(grant_id) => {
                state.held += delta;
                tracing::debug!(grant_id, %delta, "recalled grant shrunk");
            }
            // No longer active (expired): the next extension takes a new one.
            Ok((None, _)) if state.grant_id.as_deref() == Some(grant_id) => {
                state.grant_id = None;
                state.held = Decimal::ZERO;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, grant_id, "could not shrink a recalled grant; trying again")
            }
        }
    }

    /// Returns the grants unused for `idle`, with nothing in flight or unwritten.
    async fn return_idle(&self) {
        let idle = self.settings.idle;
        let candidates: Vec<(String, Arc<AccountSlot>)> = {
            let accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
            accounts
                .iter()
                .map(|(user, slot)| (user.clone(), Arc::clone(slot)))
                .collect()
        };
        for (user, slot) in candidates {
            let grant = {
                let state = slot.state();
                let idle_long = state.last_used.is_none_or(|t| t.elapsed() >= idle);
                (idle_long && state.reserved.is_zero() && state.unflushed.is_zero())
                    .then(|| state.grant_id.clone())
                    .flatten()
            };
            if let Some(grant_id) = grant {
                self.return_grant(&user, &slot, &grant_id).await;
            }
        }
    }

    async fn return_all(&self) {
        let all: Vec<(String, Arc<AccountSlot>)> = {
            let accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
            accounts
                .iter()
                .map(|(user, slot)| (user.clone(), Arc::clone(slot)))
                .collect()
        };
        for (user, slot) in all {
            let grant_id = slot.state().grant_id.clone();
            if let Some(grant_id) = grant_id {
                self.return_grant(&user, &slot, &grant_id).await;
            }
        }
    }

    async fn return_grant(&self, user: &str, slot: &AccountSlot, grant_id: &str) {
        let Ok(_refill) = slot.refill.try_lock() else {
            return;
        };
        {
            let mut state = slot.state();
            if state.grant_id.as_deref() != Some(grant_id)
                || !state.reserved.is_zero()
                || !state.unflushed.is_zero()
            {
                return;
            }
            // From here no request reserves from it: they wait on `refill`, held here.
            state.returning = true;
        }
        let released = async {
            let client = self.pool.get().await.map_err(DbError::from)?;
            super::release(&**client, grant_id, &[]).await
        }
        .await;
        match released {
            Ok(_) => {
                let mut state = slot.state();
                state.returning = false;
                if state.grant_id.as_deref() == Some(grant_id) {
                    state.grant_id = None;
                    state.held = Decimal::ZERO;
                }
            }
            // Kept, and tried again at the next upkeep (it would expire on its own).
            Err(error) => {
                slot.state().returning = false;
                tracing::warn!(%error, user, grant_id, "could not return a grant; trying again");
            }
        }
    }
}

/// Marks the account's active grants, except `own`, recalled (their instances shrink them
/// to what they have in flight within a flush); answers what they hold (zero: nothing to
/// wait for). Called only on the way to refusing an admission.
pub async fn recall_grants(
    client: &impl tokio_postgres::GenericClient,
    user_id: &str,
    own: Option<&str>,
) -> Result<Decimal, DbError> {
    let row = client
        .query_typed_one(
            "SELECT sb_recall_grants($1, $2)",
            &[(&user_id, Type::TEXT), (&own, Type::TEXT)],
        )
        .await
        .map_err(DbError::Postgres)?;
    row.try_get(0).map_err(DbError::Postgres)
}

fn db(error: tokio_postgres::Error) -> LedgerError {
    LedgerError::Db(DbError::Postgres(error))
}
