//! [`GroupCommit`]: the writes that concurrent requests of one process have waiting at the
//! same moment go to PostgreSQL as one batch (one statement, one transaction, one commit)
//! instead of one each. Most of PostgreSQL's work per hot-path write is paid per statement
//! (measured with `scripts/bench`), so under load a batch of n costs far less than n calls;
//! a request alone (every Lambda invocation) is a batch of one, with no added wait.
//!
//! There is no background task and no timer: a request queues its item, then either finds
//! its result already delivered or becomes the leader of the next batch, which takes every
//! item queued by then. At most `in_flight` batches run at once; items that arrive while
//! they run form the next batch. Every batch, a batch of one included, runs in a spawned
//! task, so a cancelled submitter (a client gone) never cancels a write half-way: the
//! write completes and its result is delivered or, when nobody waits for it any more,
//! dropped — a result with an obligation (an admitted hold) settles itself on drop. An item
//! still queued when its submitter is cancelled is withdrawn, never written
//! ([`OnCancel::Withdraw`]), or written all the same ([`OnCancel::Write`]), as the queue
//! was built. Every request waits for its own write, so nothing is left to do after its
//! response.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, oneshot};

/// What happens to a queued item whose submitter is cancelled before a batch took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCancel {
    /// Taken out of the queue: never written (admissions: no hold nobody would release, no
    /// rate-limit slot used for nothing).
    Withdraw,
    /// Written by the next batch all the same (captures: a charge is never dropped).
    Write,
}

/// A per-process queue of `T` waiting to be written, each answered with an `R`.
pub struct GroupCommit<T, R> {
    queue: Mutex<Vec<Queued<T, R>>>,
    next_ticket: AtomicU64,
    slots: Arc<Semaphore>,
    max_batch: usize,
    on_cancel: OnCancel,
}

struct Queued<T, R> {
    ticket: u64,
    item: T,
    reply: oneshot::Sender<R>,
}

/// The batch runner died (a panic) or returned fewer results than items: the item's
/// outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the batch this write was part of did not report its outcome")]
pub struct BatchLost;

/// Withdraws a submitter's item from the queue if it is still there when the submitter
/// is dropped (cancelled) before its answer.
struct Withdraw<'a, T, R> {
    group: &'a GroupCommit<T, R>,
    ticket: u64,
    armed: bool,
}

impl<T, R> Drop for Withdraw<'_, T, R> {
    fn drop(&mut self) {
        if self.armed {
            self.group
                .lock_queue()
                .retain(|queued| queued.ticket != self.ticket);
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> GroupCommit<T, R> {
    /// At most `in_flight` batches at once, each of at most `max_batch` items.
    pub fn new(in_flight: usize, max_batch: usize, on_cancel: OnCancel) -> Self {
        GroupCommit {
            queue: Mutex::new(Vec::new()),
            next_ticket: AtomicU64::new(0),
            slots: Arc::new(Semaphore::new(in_flight.max(1))),
            max_batch: max_batch.max(1),
            on_cancel,
        }
    }

    /// Writes `item` in the next batch and returns its result. `run` writes a batch and
    /// returns one result per item, in order. It is called once per batch this request
    /// leads (none when another request's batch carries the item).
    pub async fn submit<F, Fut>(&self, item: T, run: F) -> Result<R, BatchLost>
    where
        F: Fn(Vec<T>) -> Fut,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let (reply, mut result) = oneshot::channel();
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.lock_queue().push(Queued {
            ticket,
            item,
            reply,
        });
        let _withdraw = Withdraw {
            group: self,
            ticket,
            armed: self.on_cancel == OnCancel::Withdraw,
        };
        loop {
            tokio::select! {
                biased;
                answer = &mut result => return answer.map_err(|_| BatchLost),
                slot = self.slots.clone().acquire_owned() => {
                    let Ok(slot) = slot else { return Err(BatchLost) };
                    let batch = {
                        let mut queue = self.lock_queue();
                        let take = queue.len().min(self.max_batch);
                        queue.drain(..take).collect::<Vec<_>>()
                    };
                    if batch.is_empty() {
                        // Our item is in a batch that is running: wait for it.
                        drop(slot);
                        return result.await.map_err(|_| BatchLost);
                    }
                    let (items, replies): (Vec<T>, Vec<oneshot::Sender<R>>) =
                        batch.into_iter().map(|queued| (queued.item, queued.reply)).unzip();
                    let work = run(items);
                    tokio::spawn(async move {
                        let results = work.await;
                        drop(slot);
                        for (reply, result) in replies.into_iter().zip(results) {
                            // A submitter gone meanwhile: its result is dropped here.
                            let _ = reply.send(result);
                        }
                    });
                }
            }
        }
    }
}

impl<T, R> GroupCommit<T, R> {
    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Queued<T, R>>> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A runner that takes `delay` per batch and answers each item doubled.
    fn doubler(
        calls: Arc<AtomicUsize>,
        sizes: Arc<Mutex<Vec<usize>>>,
        delay: Duration,
    ) -> impl Fn(Vec<u32>) -> std::pin::Pin<Box<dyn Future<Output = Vec<u32>> + Send>> {
        move |items| {
            calls.fetch_add(1, Ordering::SeqCst);
            sizes.lock().unwrap().push(items.len());
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                items.into_iter().map(|i| i * 2).collect()
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_items_share_batches_and_each_gets_its_own_answer() {
        let group = Arc::new(GroupCommit::<u32, u32>::new(1, 64, OnCancel::Withdraw));
        let calls = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..100u32 {
            let (group, calls, sizes) = (group.clone(), calls.clone(), sizes.clone());
            tasks.push(tokio::spawn(async move {
                let run = doubler(calls, sizes, Duration::from_millis(5));
                (i, group.submit(i, run).await)
            }));
        }
        for task in tasks {
            let (i, answer) = task.await.unwrap();
            assert_eq!(answer, Ok(i * 2));
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(
            sizes.iter().sum::<usize>(),
            100,
            "every item written once: {sizes:?}"
        );
        assert!(
            calls.load(Ordering::SeqCst) < 100 && sizes.iter().any(|&n| n > 1),
            "concurrent items were batched: {sizes:?}"
        );
        assert!(
            sizes.iter().all(|&n| n <= 64),
            "no batch above the maximum: {sizes:?}"
        );
    }

    #[tokio::test]
    async fn an_item_alone_is_a_batch_of_one_with_no_wait() {
        let group = GroupCommit::<u32, u32>::new(3, 64, OnCancel::Withdraw);
        let calls = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        for i in 0..5 {
            let run = doubler(calls.clone(), sizes.clone(), Duration::ZERO);
            assert_eq!(group.submit(i, run).await, Ok(i * 2));
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1; 5]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_leader_does_not_lose_the_answers_of_its_batch() {
        let group = Arc::new(GroupCommit::<u32, u32>::new(1, 64, OnCancel::Withdraw));
        let calls = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        // A slow first batch holds the only slot while the others queue behind it.
        let first = {
            let (group, calls, sizes) = (group.clone(), calls.clone(), sizes.clone());
            tokio::spawn(async move {
                group
                    .submit(0, doubler(calls, sizes, Duration::from_millis(100)))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut followers = Vec::new();
        for i in 1..10u32 {
            let (group, calls, sizes) = (group.clone(), calls.clone(), sizes.clone());
            followers.push(tokio::spawn(async move {
                group
                    .submit(i, doubler(calls, sizes, Duration::from_millis(100)))
                    .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        // By now one follower leads the second batch; cancel every task that is still
        // waiting, leader included, except the last one.
        for follower in &followers[..8] {
            follower.abort();
        }
        let last = followers.pop().unwrap();
        assert_eq!(first.await.unwrap(), Ok(0));
        assert_eq!(last.await.unwrap(), Ok(18));
        assert_eq!(sizes.lock().unwrap().iter().sum::<usize>(), 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_runner_that_panics_or_answers_short_reports_the_items_lost() {
        let group = Arc::new(GroupCommit::<u32, u32>::new(1, 64, OnCancel::Withdraw));
        let panics = |_: Vec<u32>| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            panic!("the batch runner failed")
        };
        // The first is alone, the others queue behind it and share a batch; every batch
        // runs in its own task, whose panic loses its items: each submitter learns it.
        let mut tasks = Vec::new();
        for i in 0..5 {
            let group = group.clone();
            tasks.push(tokio::spawn(async move { group.submit(i, panics).await }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), Err(BatchLost));
        }
        let short = |_: Vec<u32>| async { Vec::new() };
        assert_eq!(group.submit(2, short).await, Err(BatchLost));
        // The slot came back every time: the next item still runs.
        let fine = |items: Vec<u32>| async move { items };
        assert_eq!(group.submit(3, fine).await, Ok(3));
    }

    /// Counts the results dropped without being received.
    struct Tracked(u32, Arc<AtomicUsize>);

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Holds the only slot with a slow batch of `0`, queues `1` behind it, cancels the
    /// submitter of `1`, and reports which items were written.
    async fn cancel_a_queued_submitter(on_cancel: OnCancel) -> Vec<u32> {
        let group = Arc::new(GroupCommit::<u32, u32>::new(1, 64, on_cancel));
        let written = Arc::new(Mutex::new(Vec::new()));
        let run = {
            let written = written.clone();
            move |items: Vec<u32>| {
                written.lock().unwrap().extend(items.iter().copied());
                async move {
                    tokio::time::sleep(Duration::from_millis(60)).await;
                    items
                }
            }
        };
        let first = {
            let (group, run) = (group.clone(), run.clone());
            tokio::spawn(async move { group.submit(0, run).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = {
            let (group, run) = (group.clone(), run.clone());
            tokio::spawn(async move { group.submit(1, run).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        second.abort();
        assert!(second.await.unwrap_err().is_cancelled());
        assert_eq!(first.await.unwrap(), Ok(0));
        // A later submitter leads the next batch: it carries `1` only if it was kept.
        assert_eq!(group.submit(2, run).await, Ok(2));
        written.lock().unwrap().clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_queued_item_whose_submitter_is_cancelled_is_withdrawn_or_kept() {
        assert_eq!(
            cancel_a_queued_submitter(OnCancel::Withdraw).await,
            vec![0, 2]
        );
        assert_eq!(
            cancel_a_queued_submitter(OnCancel::Write).await,
            vec![0, 1, 2]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_under_way_completes_and_its_orphaned_result_is_dropped() {
        let group = Arc::new(GroupCommit::<u32, Tracked>::new(1, 64, OnCancel::Withdraw));
        let dropped = Arc::new(AtomicUsize::new(0));
        let completed = Arc::new(AtomicUsize::new(0));
        let run = {
            let (dropped, completed) = (dropped.clone(), completed.clone());
            move |items: Vec<u32>| {
                let (dropped, completed) = (dropped.clone(), completed.clone());
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    completed.fetch_add(items.len(), Ordering::SeqCst);
                    items
                        .into_iter()
                        .map(|i| Tracked(i, dropped.clone()))
                        .collect()
                }
            }
        };
        // Alone, then cancelled while its write runs: the write still completes (it runs in
        // its own task) and the result nobody receives is dropped, where an obligation it
        // carries (a hold) settles itself.
        let alone = {
            let (group, run) = (group.clone(), run.clone());
            tokio::spawn(async move { group.submit(7, run).await.map(|t| t.0) })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        alone.abort();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(completed.load(Ordering::SeqCst), 1);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        assert_eq!(group.submit(8, run).await.map(|t| t.0), Ok(8));
    }
}
