//! Named, bounded pools: `concurrency` workers pull from a queue of at most `queue` waiting jobs.
//!
//! Space in the queue is a semaphore of `queue` permits. A job holds its permit from acceptance until
//! it starts running, including while it is parked behind an earlier message with the same key, so
//! nothing waits outside the bound.

use crate::dispatch::Job;
use parking_lot::Mutex;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// What a pool does when its queue is full. Every rejection or drop is counted and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    /// Backpressure: `publish(..).await` waits for room; after `max_wait` (if set) it is a rejection.
    Wait {
        /// Longest wait before rejecting; `None` waits as long as it takes.
        max_wait: Option<Duration>,
    },
    /// `publish` returns [`PublishError::Rejected`](crate::PublishError::Rejected) carrying the message back.
    Reject,
    /// The handler runs on the publisher's own task (slowing the publisher down).
    CallerRuns,
    /// The new message goes to the dead letters with reason `overflow`.
    DropNewest,
    /// The oldest queued message goes to the dead letters with reason `overflow`, making room.
    DropOldest,
}

impl Overload {
    /// Backpressure without a time limit.
    pub const WAIT: Overload = Overload::Wait { max_wait: None };

    /// Backpressure for at most `max_wait`, then a rejection.
    pub fn wait_at_most(max_wait: Duration) -> Self {
        Overload::Wait {
            max_wait: Some(max_wait),
        }
    }
}

impl fmt::Display for Overload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Overload::Wait { max_wait: None } => f.write_str("wait"),
            Overload::Wait { max_wait: Some(d) } => write!(f, "wait(max {d:?})"),
            Overload::Reject => f.write_str("reject"),
            Overload::CallerRuns => f.write_str("caller_runs"),
            Overload::DropNewest => f.write_str("drop_newest"),
            Overload::DropOldest => f.write_str("drop_oldest"),
        }
    }
}

/// Configuration of one pool: `PoolConfig::new().concurrency(4).queue(100).overload(Overload::Reject)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct PoolConfig {
    pub(crate) concurrency: usize,
    pub(crate) queue: usize,
    pub(crate) overload: Overload,
}

impl PoolConfig {
    /// 64 concurrent handlers, a queue of 1,024, `Overload::WAIT`.
    pub fn new() -> Self {
        PoolConfig {
            concurrency: 64,
            queue: 1024,
            overload: Overload::WAIT,
        }
    }

    /// Handlers running at once (at least 1).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Messages waiting (at least 1).
    pub fn queue(mut self, queue: usize) -> Self {
        self.queue = queue;
        self
    }

    /// What happens when the queue is full.
    pub fn overload(mut self, overload: Overload) -> Self {
        self.overload = overload;
        self
    }

    pub(crate) fn problems(&self, pool: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.concurrency == 0 {
            problems.push(format!(
                "pool `{pool}` has concurrency 0, so nothing would ever run: set `.concurrency(n)` with n >= 1"
            ));
        }
        if self.queue == 0 {
            problems.push(format!(
                "pool `{pool}` has a queue of 0, so every message would overflow: set `.queue(n)` with n >= 1"
            ));
        }
        problems
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// A reading of one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    /// Pool name (`default` for the default pool).
    pub name: String,
    /// Handlers running at once.
    pub concurrency: usize,
    /// Queue bound.
    pub queue: usize,
    /// Jobs waiting now (queued and parked behind a key).
    pub depth: usize,
    /// The largest depth seen since start; never above `queue`.
    pub max_depth: usize,
    /// The overload policy.
    pub overload: Overload,
}

/// The running pool.
pub(crate) struct Pool {
    pub(crate) name: String,
    pub(crate) config: PoolConfig,
    space: Semaphore,
    pub(crate) tx: async_channel::Sender<Job>,
    pub(crate) rx: async_channel::Receiver<Job>,
    max_depth: AtomicUsize,
    /// Set at the shutdown deadline: workers stop taking jobs.
    pub(crate) stopping: AtomicBool,
    pub(crate) workers: Mutex<Vec<JoinHandle<()>>>,
    /// Jobs whose worker was aborted at the shutdown deadline.
    pub(crate) casualties: Mutex<Vec<crate::worker::Casualty>>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Result of asking for room without waiting.
pub(crate) enum Room {
    Reserved,
    Full,
}

impl Pool {
    pub(crate) fn new(name: String, config: PoolConfig) -> Self {
        let (tx, rx) = async_channel::bounded(config.queue);
        Pool {
            name,
            config,
            space: Semaphore::new(config.queue),
            tx,
            rx,
            max_depth: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            workers: Mutex::new(Vec::new()),
            casualties: Mutex::new(Vec::new()),
        }
    }

    /// Takes one slot of queue space without waiting.
    pub(crate) fn try_reserve(&self) -> Room {
        match self.space.try_acquire() {
            Ok(permit) => {
                permit.forget();
                self.observe_depth();
                Room::Reserved
            }
            Err(_) => Room::Full,
        }
    }

    /// Waits for one slot of queue space, up to `max_wait`. Returns false on timeout or when closed.
    pub(crate) async fn reserve(&self, max_wait: Option<Duration>) -> bool {
        let acquired = match max_wait {
            None => self.space.acquire().await.ok(),
            Some(limit) => tokio::time::timeout(limit, self.space.acquire())
                .await
                .ok()
                .and_then(Result::ok),
        };
        match acquired {
            Some(permit) => {
                permit.forget();
                self.observe_depth();
                true
            }
            None => false,
        }
    }

    /// Wakes every publisher waiting for room, with a refusal (at shutdown).
    pub(crate) fn close_space(&self) {
        self.space.close();
    }

    /// Gives back a slot: a job started running, or a reservation was abandoned.
    pub(crate) fn release(&self) {
        self.space.add_permits(1);
    }

    /// Puts a job that already holds a slot into the queue. The channel is as large as the number of
    /// slots, so this cannot find it full.
    pub(crate) fn enqueue(&self, job: Job) {
        if let Err(err) = self.tx.try_send(job) {
            // Unreachable while slots and channel capacity agree; keep the job rather than lose it.
            let job = err.into_inner();
            tracing::error!(pool = %self.name, "queue refused a job that held a slot; parking it as a casualty");
            self.casualties
                .lock()
                .push(crate::worker::Casualty::queued(job));
        }
    }

    /// Removes the oldest queued job (for `DropOldest`); its slot passes to the caller.
    pub(crate) fn evict_oldest(&self) -> Option<Job> {
        self.rx.try_recv().ok()
    }

    pub(crate) fn depth(&self) -> usize {
        self.config
            .queue
            .saturating_sub(self.space.available_permits())
    }

    fn observe_depth(&self) {
        self.max_depth.fetch_max(self.depth(), Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> PoolStats {
        PoolStats {
            name: self.name.clone(),
            concurrency: self.config.concurrency,
            queue: self.config.queue,
            depth: self.depth(),
            max_depth: self.max_depth.load(Ordering::Relaxed),
            overload: self.config.overload,
        }
    }
}
