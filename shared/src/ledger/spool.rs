//! Captures that could not commit within their retry budget (the database is down or
//! unreachable), kept durably until they do: no delivered answer goes uncharged because of
//! an outage.
//!
//! - [`CaptureRecord`]: one capture, owned and serialisable — the charge, the usage rows
//!   and the billing event it writes, under its ledger id. Writing it again is idempotent
//!   (`sb_capture` by ledger id: a capture that already committed is a duplicate, nothing
//!   more is written), so a record may be replayed any number of times.
//! - [`PendingCharges`]: where a process keeps such records. `serve` keeps them in a
//!   [`FileSpool`] under its data directory; the chat Lambda function in an SQS queue
//!   (`ledger::queue`, drained by the billing-export function). Either is durable before
//!   the answer (or the stream) ends.
//! - [`FileSpool::drain`]: writes every kept record into the ledger once the database is
//!   back, oldest first, and forgets a file only when each of its records committed (or was
//!   refused for good and set aside in `rejected.jsonl` for an operator).
//! - [`write_pending`]: writing one record, the step both drains share.

use std::fmt;
use std::future::Future;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Capture, CaptureKind, LedgerError, UsageLogRow};
use crate::db::{DbError, DbPool};

/// One capture, owned: what the request's settlement writes, and what a pending charge
/// keeps until the database takes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaptureRecord {
    pub ledger_id: String,
    pub user_id: String,
    pub amount: Decimal,
    pub kind: CaptureKind,
    pub usage_logs: Vec<UsageLogRow>,
    pub billing_properties: Value,
}

impl CaptureRecord {
    pub fn as_capture(&self) -> Capture<'_> {
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

/// A kept record with the time it was kept (for the oldest pending charge's age).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingCharge {
    pub kept_at: DateTime<Utc>,
    #[serde(flatten)]
    pub capture: CaptureRecord,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the pending-charge spool at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the pending-charge queue: {0}")]
    Queue(String),
}

fn io_error(path: &Path, source: std::io::Error) -> SpoolError {
    SpoolError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub type KeepFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SpoolError>> + Send + 'a>>;

/// Where captures that could not commit are kept until they do. `keep` returns only once
/// the record is durable (flushed to disk, or acknowledged by the queue).
pub trait PendingCharges: Send + Sync + fmt::Debug {
    fn keep<'a>(&'a self, charge: &'a PendingCharge) -> KeepFuture<'a>;
}

/// What one drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    /// Records written into the ledger now.
    pub captured: u64,
    /// Records found already written (a capture that committed but whose answer was lost,
    /// or a record replayed after a crash of the drain).
    pub duplicates: u64,
    /// Records the ledger refused for good, set aside in `rejected.jsonl`.
    pub rejected: u64,
    /// Records still kept (the database failed during the drain).
    pub pending: u64,
    /// When the oldest record still kept was kept.
    pub oldest_pending: Option<DateTime<Utc>>,
}

/// How long one record's capture may take during a drain before the drain stops.
pub const DRAIN_TRY_TIMEOUT: Duration = Duration::from_secs(10);

const ACTIVE: &str = "pending.jsonl";
const DRAINING_PREFIX: &str = "draining-";
const REJECTED: &str = "rejected.jsonl";

/// An append-only file of pending charges (one JSON line each, each flushed with
/// `fdatasync` before `keep` returns), under `serve`'s data directory. Survives a restart:
/// the next process drains what the last one kept.
#[derive(Debug)]
pub struct FileSpool {
    dir: PathBuf,
    /// The file records are appended to (opened on first use).
    active: tokio::sync::Mutex<Option<std::fs::File>>,
    /// One drain at a time.
    draining: tokio::sync::Mutex<()>,
}

impl FileSpool {
    /// Opens (creating it, mode 0700) the spool directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<FileSpool, SpoolError> {
        let dir = dir.into();
        create_private_dir(&dir).map_err(|e| io_error(&dir, e))?;
        Ok(FileSpool {
            dir,
            active: tokio::sync::Mutex::new(None),
            draining: tokio::sync::Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes every kept record into the ledger (see the module docs). Stops at the first
    /// database failure, keeping the rest for the next drain.
    pub async fn drain(&self, pool: &DbPool) -> Result<DrainReport, SpoolError> {
        let _one_drain = self.draining.lock().await;
        self.seal_active().await?;
        let mut report = DrainReport::default();
        let files = self.draining_files()?;
        let mut stopped = false;
        for file in files {
            let records = read_records(&file).map_err(|e| io_error(&file, e))?;
            if stopped {
                count_pending(&mut report, &records);
                continue;
            }
            let mut all_written = true;
            for (index, record) in records.iter().enumerate() {
                let charge = match record {
                    Ok(charge) => charge,
                    Err(line) => {
                        self.reject(line, "not a pending charge (a torn or foreign line)")?;
                        report.rejected += 1;
                        continue;
                    }
                };
                match write_pending(pool, &charge.capture).await {
                    Written::Captured => report.captured += 1,
                    Written::Duplicate => report.duplicates += 1,
                    Written::Refused(reason) => {
                        let line = serde_json::to_string(charge).unwrap_or_default();
                        self.reject(&line, &reason)?;
                        report.rejected += 1;
                    }
                    Written::Unavailable(error) => {
                        tracing::warn!(
                            %error,
                            kept = records.len() - index,
                            "the database is still unavailable; pending charges stay in the spool"
                        );
                        count_pending(&mut report, &records[index..]);
                        all_written = false;
                        stopped = true;
                        break;
                    }
                }
            }
            if all_written {
                std::fs::remove_file(&file).map_err(|e| io_error(&file, e))?;
                sync_dir(&self.dir).map_err(|e| io_error(&self.dir, e))?;
            }
        }
        crate::metrics::pending_charges(report.pending, report.oldest_pending);
        if report.captured + report.duplicates + report.rejected > 0 {
            tracing::info!(
                captured = report.captured,
                duplicates = report.duplicates,
                rejected = report.rejected,
                pending = report.pending,
                "pending charges written from the spool"
            );
        }
        Ok(report)
    }

    /// The records kept now (without draining), oldest first.
    pub fn kept(&self) -> Result<Vec<PendingCharge>, SpoolError> {
        let mut kept = Vec::new();
        let mut files = self.draining_files()?;
        files.push(self.dir.join(ACTIVE));
        for file in files {
            if !file.exists() {
                continue;
            }
            let records = read_records(&file).map_err(|e| io_error(&file, e))?;
            kept.extend(records.into_iter().filter_map(Result::ok));
        }
        Ok(kept)
    }

    /// Moves the active file aside for draining: records kept from now on go to a new
    /// active file, so a drain never races an append.
    async fn seal_active(&self) -> Result<(), SpoolError> {
        let mut active = self.active.lock().await;
        let path = self.dir.join(ACTIVE);
        let has_records = std::fs::metadata(&path).is_ok_and(|m| m.len() > 0);
        if has_records {
            let sealed = self.dir.join(format!(
                "{DRAINING_PREFIX}{:020}.jsonl",
                Utc::now().timestamp_nanos_opt().unwrap_or_default()
            ));
            std::fs::rename(&path, &sealed).map_err(|e| io_error(&path, e))?;
            sync_dir(&self.dir).map_err(|e| io_error(&self.dir, e))?;
            *active = None;
        }
        Ok(())
    }

    fn draining_files(&self) -> Result<Vec<PathBuf>, SpoolError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io_error(&self.dir, e))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(DRAINING_PREFIX) && n.ends_with(".jsonl"))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Sets a record aside for an operator, with why.
    fn reject(&self, line: &str, reason: &str) -> Result<(), SpoolError> {
        tracing::error!(
            target: "switchboard::pending_charge",
            reason,
            "a pending charge was refused by the ledger; kept in rejected.jsonl for an operator"
        );
        let path = self.dir.join(REJECTED);
        let entry = serde_json::json!({"rejected_at": Utc::now(), "reason": reason, "line": line});
        append_durably(&path, &entry.to_string()).map_err(|e| io_error(&path, e))
    }
}

impl PendingCharges for FileSpool {
    fn keep<'a>(&'a self, charge: &'a PendingCharge) -> KeepFuture<'a> {
        Box::pin(async move {
            let line = serde_json::to_string(charge).map_err(|e| SpoolError::Io {
                path: self.dir.display().to_string(),
                source: std::io::Error::other(e),
            })?;
            let mut active = self.active.lock().await;
            let path = self.dir.join(ACTIVE);
            // The write and its fsync block: off the async threads, the lock kept so that
            // lines never interleave.
            let file = active.take();
            let (file, written) = tokio::task::spawn_blocking(move || {
                let mut file = match file {
                    Some(file) => file,
                    None => match open_append(&path) {
                        Ok(file) => file,
                        Err(error) => return (None, Err(io_error(&path, error))),
                    },
                };
                let written = writeln!(file, "{line}")
                    .and_then(|()| file.sync_data())
                    .map_err(|e| io_error(&path, e));
                (Some(file), written)
            })
            .await
            .map_err(|e| SpoolError::Io {
                path: self.dir.display().to_string(),
                source: std::io::Error::other(e),
            })?;
            *active = file;
            written
        })
    }
}

/// How often `serve` drains its spool ([`drain_every`]).
pub const DRAIN_INTERVAL: Duration = Duration::from_secs(5);

/// `serve`'s drain: at once (what a previous process kept), then every `period`, until
/// `stop` resolves. A drain cancelled half-way loses nothing: what it wrote stays written,
/// what it did not is drained next time.
pub async fn drain_every(
    spool: std::sync::Arc<FileSpool>,
    pool: DbPool,
    period: Duration,
    stop: impl Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => {}
        }
        tokio::select! {
            () = &mut stop => break,
            drained = spool.drain(&pool) => {
                if let Err(error) = drained {
                    tracing::error!(%error, "could not drain the pending-charge spool");
                }
            }
        }
    }
}

/// What writing one pending charge into the ledger did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Charged now.
    Captured,
    /// Already charged (by the request itself, or by an earlier drain): nothing written.
    Duplicate,
    /// The ledger refused it for good (why): trying again gives the same answer.
    Refused(String),
    /// The database failed or did not answer in time: keep the record and try later.
    Unavailable(String),
}

/// Writes one pending charge into the ledger (`sb_capture`, idempotent by its ledger id),
/// within [`DRAIN_TRY_TIMEOUT`]: the one step of every drain, the spool's and the Lambda
/// queue's (`ledger::queue`). Counted in the metrics by outcome.
pub async fn write_pending(pool: &DbPool, capture: &CaptureRecord) -> Written {
    let attempt = async {
        let client = pool.get().await.map_err(DbError::from)?;
        super::capture(&**client, &capture.as_capture()).await
    };
    let written = match tokio::time::timeout(DRAIN_TRY_TIMEOUT, attempt).await {
        Ok(Ok(captured)) if captured.duplicate => Written::Duplicate,
        Ok(Ok(_)) => Written::Captured,
        // Unavailable, or a conflict worth another try (serialization failure, deadlock):
        // kept. Anything else is the statement refused for good: set aside.
        Ok(Err(LedgerError::Db(db)))
            if db.is_unavailable() || db.sql_state().is_some_and(|s| s.starts_with("40")) =>
        {
            Written::Unavailable(crate::report::error_chain(&db))
        }
        Ok(Err(LedgerError::Db(db))) => Written::Refused(crate::report::error_chain(&db)),
        Ok(Err(other)) => Written::Refused(other.to_string()),
        Err(_) => Written::Unavailable("the database did not answer in time".into()),
    };
    match &written {
        Written::Captured => crate::metrics::pending_charge_written("captured"),
        Written::Duplicate => crate::metrics::pending_charge_written("duplicate"),
        Written::Refused(_) => crate::metrics::pending_charge_refused(),
        Written::Unavailable(_) => {}
    }
    written
}

fn count_pending(report: &mut DrainReport, records: &[Result<PendingCharge, String>]) {
    for charge in records.iter().filter_map(|r| r.as_ref().ok()) {
        report.pending += 1;
        report.oldest_pending = Some(
            report
                .oldest_pending
                .map_or(charge.kept_at, |oldest| oldest.min(charge.kept_at)),
        );
    }
}

/// Each line parsed; a line that is not a record (torn by a crash mid-write) is returned
/// as its text.
fn read_records(path: &Path) -> std::io::Result<Vec<Result<PendingCharge, String>>> {
    let file = std::fs::File::open(path)?;
    let mut records = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        records.push(serde_json::from_str(&line).map_err(|_| line));
    }
    Ok(records)
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    let existed = path.exists();
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    if !existed && let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(file)
}

fn append_durably(path: &Path, line: &str) -> std::io::Result<()> {
    let mut file = open_append(path)?;
    writeln!(file, "{line}")?;
    file.sync_data()
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// A new or renamed file survives a crash only once its directory entry is flushed.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(ledger_id: &str) -> PendingCharge {
        PendingCharge {
            kept_at: Utc::now(),
            capture: CaptureRecord {
                ledger_id: ledger_id.into(),
                user_id: "alice".into(),
                amount: Decimal::new(123, 6),
                kind: CaptureKind::Usage,
                usage_logs: vec![UsageLogRow {
                    user_id: "alice".into(),
                    request_id: "r-1".into(),
                    attempt: 1,
                    charged_usd: Decimal::new(123, 6),
                    ..UsageLogRow::default()
                }],
                billing_properties: serde_json::json!({"model": "gpt-4o"}),
            },
        }
    }

    #[tokio::test]
    async fn kept_records_survive_reopening_and_torn_lines_are_told_apart() {
        let dir = std::env::temp_dir().join(format!("sb-spool-{}", uuid::Uuid::new_v4()));
        let spool = FileSpool::open(&dir).unwrap();
        spool.keep(&charge("l-1")).await.unwrap();
        spool.keep(&charge("l-2")).await.unwrap();
        drop(spool);
        // A crash mid-write leaves a partial last line.
        let mut file = open_append(&dir.join(ACTIVE)).unwrap();
        write!(file, "{{\"kept_at\": \"2026-").unwrap();
        drop(file);
        let spool = FileSpool::open(&dir).unwrap();
        let kept: Vec<String> = spool
            .kept()
            .unwrap()
            .into_iter()
            .map(|c| c.capture.ledger_id)
            .collect();
        assert_eq!(kept, ["l-1", "l-2"]);
        let records = read_records(&dir.join(ACTIVE)).unwrap();
        assert_eq!(records.len(), 3);
        assert!(records[2].is_err());
        let money = &spool.kept().unwrap()[0].capture;
        assert_eq!(money.amount, Decimal::new(123, 6));
        assert_eq!(money.usage_logs[0].charged_usd, Decimal::new(123, 6));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(ACTIVE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
