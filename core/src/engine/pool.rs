//! Named, bounded pools: `concurrency` workers pull from a queue of at most `queue` waiting jobs
//! ([`JobQueue`]).
//!
//! Space in the queue is a depth counter bounded by `queue` (see [`Space`]). A job holds its slot from
//! acceptance until it starts running, including while it is parked behind an earlier message with the
//! same key, so nothing waits outside the bound.

use crate::engine::publish::Job;
use concurrent_queue::{ConcurrentQueue, PopError};
use event_listener::Event;
use parking_lot::Mutex;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
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
    ///
    /// For an `ordered` handler whose key is busy, the publisher waits for the key's turn, then runs
    /// the job itself, so order holds. If the publisher drops its `publish` future (a timeout, a
    /// `select!`), the job it was running and the ones not started yet are dead-lettered with reason
    /// `cancelled` ([`DeadLetterReason::Cancelled`](crate::DeadLetterReason::Cancelled)): re-drive them.
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
    /// Workers started so far: they start when a job finds none idle, up to `concurrency`, and
    /// stay until shutdown.
    pub workers: usize,
    /// The overload policy.
    pub overload: Overload,
}

/// The running pool.
pub(crate) struct Pool {
    pub(crate) name: String,
    pub(crate) config: PoolConfig,
    space: Space,
    pub(crate) queue: JobQueue,
    max_depth: AtomicUsize,
    /// Set at the shutdown deadline: workers stop taking jobs, and no new worker starts.
    pub(crate) stopping: AtomicBool,
    /// The workers started so far (at most `concurrency`; see [`Pool::enqueue`]). They stay until
    /// the queue closes.
    pub(crate) workers: Mutex<Vec<JoinHandle<()>>>,
    /// Number of workers started or being started: `workers.len()` without the lock.
    started: AtomicUsize,
    /// Where workers are spawned: the runtime `build()` ran in.
    runtime: tokio::runtime::Handle,
    /// Jobs whose worker was aborted at the shutdown deadline.
    pub(crate) casualties: Mutex<Vec<crate::engine::worker::Casualty>>,
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
    pub(crate) fn new(name: String, config: PoolConfig, runtime: tokio::runtime::Handle) -> Self {
        Pool {
            name,
            config,
            space: Space::new(config.queue),
            queue: JobQueue::new(config.queue),
            max_depth: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            workers: Mutex::new(Vec::new()),
            started: AtomicUsize::new(0),
            runtime,
            casualties: Mutex::new(Vec::new()),
        }
    }

    /// Starts one more worker if the pool has fewer than `concurrency`. Called when a job was
    /// queued and no worker was idle to take it.
    ///
    /// Workers start on demand rather than all at `build()`: each is a task as large as the
    /// worker's future, so a pool of 1,000 that mostly runs a few handlers at once would hold
    /// 1,000 of them (docs/BENCHMARKS.md, W2). A started worker stays, parked while idle, until
    /// the queue closes. No worker starts once the shutdown deadline has passed (`stopping`):
    /// `shutdown` aborts the ones in `workers` and dead-letters what is still queued.
    fn start_worker(self: &Arc<Self>) {
        let mut started = self.started.load(Ordering::Relaxed);
        loop {
            if started >= self.config.concurrency {
                return;
            }
            match self.started.compare_exchange_weak(
                started,
                started + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => started = actual,
            }
        }
        // Under the lock: `shutdown` sets `stopping` before it takes the list, so a worker is
        // either in the list it aborts or never spawned.
        let mut workers = self.workers.lock();
        if self.stopping.load(Ordering::Acquire) {
            self.started.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        workers.push(
            self.runtime
                .spawn(crate::engine::worker::run_worker(self.clone())),
        );
    }

    /// Takes one slot of queue space without waiting.
    pub(crate) fn try_reserve(&self) -> Room {
        match self.space.try_take(false) {
            Take::Taken(depth) => {
                self.observe_depth(depth);
                Room::Reserved
            }
            Take::Full | Take::Closed => Room::Full,
        }
    }

    /// Waits for one slot of queue space, up to `max_wait`. Returns false on timeout or when closed.
    pub(crate) async fn reserve(&self, max_wait: Option<Duration>) -> bool {
        let taken = match max_wait {
            None => self.space.take().await,
            Some(limit) => tokio::time::timeout(limit, self.space.take())
                .await
                .ok()
                .flatten(),
        };
        match taken {
            Some(depth) => {
                self.observe_depth(depth);
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
        self.space.give_back();
    }

    /// Puts a job that already holds a slot into the queue, and starts a worker if none is idle
    /// and the pool has fewer than `concurrency`. The queue is as large as the number of slots,
    /// so this cannot find it full.
    pub(crate) fn enqueue(self: &Arc<Self>, job: Job) {
        match self.queue.push(job) {
            Ok(Woken::Idle) => {}
            Ok(Woken::Nobody) => self.start_worker(),
            Err(job) => self.refused(job),
        }
    }

    /// Unreachable while slots and queue capacity agree; keeps the job rather than lose it.
    #[cold]
    fn refused(&self, job: Job) {
        tracing::error!(pool = %self.name, "queue refused a job that held a slot; parking it as a casualty");
        self.casualties
            .lock()
            .push(crate::engine::worker::Casualty::queued(job));
    }

    /// A worker takes the next job without waiting.
    #[inline]
    pub(crate) fn try_take(self: &Arc<Self>) -> Option<Job> {
        let (job, woken) = self.queue.try_take()?;
        if woken == Woken::Nobody {
            self.start_worker();
        }
        Some(job)
    }

    /// A worker waits for the next job; `None` once the queue is closed and empty.
    pub(crate) async fn take(self: &Arc<Self>) -> Option<Job> {
        let (job, woken) = self.queue.pop().await?;
        if woken == Woken::Nobody {
            self.start_worker();
        }
        Some(job)
    }

    /// Removes the oldest queued job (for `DropOldest`); its slot passes to the caller.
    pub(crate) fn evict_oldest(&self) -> Option<Job> {
        self.queue.try_pop()
    }

    pub(crate) fn depth(&self) -> usize {
        self.space.depth.load(Ordering::Relaxed)
    }

    fn observe_depth(&self, depth: usize) {
        self.max_depth.fetch_max(depth, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> PoolStats {
        PoolStats {
            name: self.name.clone(),
            concurrency: self.config.concurrency,
            queue: self.config.queue,
            depth: self.depth(),
            max_depth: self.max_depth.load(Ordering::Relaxed),
            workers: self.started.load(Ordering::Relaxed),
            overload: self.config.overload,
        }
    }
}

/// The jobs waiting for a worker: a bounded lock-free queue, and an event that wakes idle workers.
///
/// The queue's `queue` slots (40 B each) are allocated at the first job, not at `build()`: a pool
/// that never receives one (the default pool, when every handler names its own) holds nothing
/// (docs/BENCHMARKS.md, W2). Not an unbounded queue that allocates as it fills: its blocks are
/// allocated on the publisher's thread and freed on a worker's, ~150 instructions per job in
/// malloc and free (callgrind, W1).
///
/// It replaces an `async_channel`, whose every send and receive notifies an `event_listener::Event`
/// (three per job: receivers, streams, senders), and `Event::notify` always takes the event's lock;
/// with 64 workers listening on one event that lock was contended (`perf`: ~5% of W1 in
/// `lock_contended`). Here a push touches the event only when a worker is idle, and wakes at most one:
/// while a woken worker is still on its way, later pushes wake nobody, and each worker that takes a job
/// wakes the next idle one if more jobs are waiting, so wake-ups follow the work instead of the pushes.
pub(crate) struct JobQueue {
    jobs: OnceLock<ConcurrentQueue<Job>>,
    bound: usize,
    /// Workers inside [`pop`](Self::pop) that found the queue empty.
    idle: AtomicUsize,
    ready: Event,
}

/// Whom a push (or a worker taking a job with more behind it) woke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// An idle worker, or none was needed.
    Idle,
    /// No worker was idle: the pool may start one.
    Nobody,
}

impl JobQueue {
    fn new(bound: usize) -> Self {
        JobQueue {
            jobs: OnceLock::new(),
            bound,
            idle: AtomicUsize::new(0),
            ready: Event::new(),
        }
    }

    /// Queues a job; hands it back if the queue is full or closed.
    fn push(&self, job: Job) -> Result<Woken, Job> {
        self.jobs
            .get_or_init(|| ConcurrentQueue::bounded(self.bound))
            .push(job)
            .map_err(|err| err.into_inner())?;
        Ok(self.wake_one())
    }

    /// Wakes one idle worker unless one is already on its way.
    fn wake_one(&self) -> Woken {
        // Pairs with the idle worker's SeqCst increment before its second look at the queue: either it
        // sees the job, or this load sees it idle.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.idle.load(Ordering::SeqCst) > 0 {
            self.ready.notify(1);
            Woken::Idle
        } else {
            Woken::Nobody
        }
    }

    /// The oldest job, if any; a queue not allocated yet is empty.
    #[inline]
    fn pop_now(&self) -> Result<Job, PopError> {
        match self.jobs.get() {
            Some(jobs) => jobs.pop(),
            None => Err(PopError::Empty),
        }
    }

    /// Takes the oldest job without waiting.
    pub(crate) fn try_pop(&self) -> Option<Job> {
        self.jobs.get()?.pop().ok()
    }

    /// A worker takes the oldest job without waiting (waking another idle worker if more are queued).
    fn try_take(&self) -> Option<(Job, Woken)> {
        self.jobs.get()?.pop().ok().map(|job| self.taken(job))
    }

    /// Takes the oldest job, waiting for one; `None` once the queue is closed and empty.
    /// Cancel-safe: a cancelled wait takes nothing, and a wake-up it had received passes on.
    async fn pop(&self) -> Option<(Job, Woken)> {
        loop {
            match self.pop_now() {
                Ok(job) => return Some(self.taken(job)),
                Err(PopError::Closed) => return None,
                Err(PopError::Empty) => {}
            }
            let _idle = Idle::enter(&self.idle);
            let listener = self.ready.listen();
            match self.pop_now() {
                Ok(job) => {
                    drop(_idle);
                    return Some(self.taken(job));
                }
                Err(PopError::Closed) => return None,
                Err(PopError::Empty) => listener.await,
            }
        }
    }

    /// A worker took `job`: if more are waiting, another idle worker joins (or none was idle).
    #[inline]
    fn taken(&self, job: Job) -> (Job, Woken) {
        if self.jobs.get().is_none_or(ConcurrentQueue::is_empty) {
            (job, Woken::Idle)
        } else {
            (job, self.wake_one())
        }
    }

    /// Refuses new jobs; workers take what is queued, then their `pop` returns `None`.
    pub(crate) fn close(&self) {
        // A pool that never had a job gets an empty queue (allocating nothing), closed.
        self.jobs.get_or_init(ConcurrentQueue::unbounded).close();
        self.ready.notify(usize::MAX);
    }
}

/// Counts a worker as idle for as long as it waits inside [`JobQueue::pop`].
struct Idle<'a>(&'a AtomicUsize);

impl<'a> Idle<'a> {
    fn enter(idle: &'a AtomicUsize) -> Self {
        idle.fetch_add(1, Ordering::SeqCst);
        Idle(idle)
    }
}

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Slots of queue space: a depth counter that never exceeds `bound`, and an event that wakes waiting
/// publishers when a slot comes back or the space closes.
///
/// It replaces a `tokio::sync::Semaphore`, whose `add_permits` takes a mutex on every release, i.e. on
/// every job start (benches/dispatch.rs). Taking and giving back a slot are one atomic operation each;
/// the event (and its lock) is only touched while a publisher is waiting. As with the
/// semaphore, a publisher that cannot wait (`try_publish`, `Reject`, ...) finds the space full while
/// any publisher waits, and waiters are woken in the order they started waiting, one per slot given
/// back. Unlike the semaphore, which hands a slot to the first waiter inside `add_permits`, a woken
/// waiter takes the slot itself, so a publisher that starts waiting at that moment may take it first
/// (the woken one then waits again).
struct Space {
    bound: usize,
    depth: AtomicUsize,
    /// Publishers inside [`take`](Self::take).
    waiting: AtomicUsize,
    closed: AtomicBool,
    room: Event,
}

enum Take {
    /// A slot was taken; the depth including it.
    Taken(usize),
    Full,
    Closed,
}

impl Space {
    fn new(bound: usize) -> Self {
        Space {
            bound,
            depth: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            room: Event::new(),
        }
    }

    /// Takes a slot if one is free. A newcomer (`in_line` false) does not overtake waiting publishers.
    fn try_take(&self, in_line: bool) -> Take {
        if self.closed.load(Ordering::SeqCst) {
            return Take::Closed;
        }
        if !in_line && self.waiting.load(Ordering::SeqCst) > 0 {
            return Take::Full;
        }
        let mut depth = self.depth.load(Ordering::SeqCst);
        loop {
            if depth >= self.bound {
                return Take::Full;
            }
            match self.depth.compare_exchange_weak(
                depth,
                depth + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return Take::Taken(depth + 1),
                Err(actual) => depth = actual,
            }
        }
    }

    /// Waits for a slot; `None` once the space is closed. Cancel-safe: a dropped wait takes nothing,
    /// and a wake-up it had received passes to the next waiter.
    async fn take(&self) -> Option<usize> {
        let _in_line = InLine::join(&self.waiting);
        loop {
            match self.try_take(true) {
                Take::Taken(depth) => return Some(depth),
                Take::Closed => return None,
                Take::Full => {}
            }
            // Listen, then look again: a slot given back in between is not missed.
            let listener = self.room.listen();
            match self.try_take(true) {
                Take::Taken(depth) => return Some(depth),
                Take::Closed => return None,
                Take::Full => listener.await,
            }
        }
    }

    fn give_back(&self) {
        self.depth.fetch_sub(1, Ordering::SeqCst);
        // `Event::notify` always takes the event's lock: skip it when nobody waits. A publisher that
        // joins the line after this load sees the lower depth on its first look (both are SeqCst).
        if self.waiting.load(Ordering::SeqCst) > 0 {
            // One more waiter per slot, even if an earlier wake-up is still on its way.
            self.room.notify_additional(1);
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.room.notify(usize::MAX);
    }
}

/// Counts a publisher as waiting for as long as it is inside [`Space::take`].
struct InLine<'a>(&'a AtomicUsize);

impl<'a> InLine<'a> {
    fn join(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::SeqCst);
        InLine(waiting)
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_depth_never_exceeds_the_bound_and_every_waiter_gets_a_slot() {
        let space = Arc::new(Space::new(3));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (space, peak) = (space.clone(), peak.clone());
                tokio::spawn(async move {
                    for _ in 0..2_000 {
                        let depth = space.take().await.expect("open");
                        peak.fetch_max(depth, Ordering::Relaxed);
                        tokio::task::yield_now().await;
                        space.give_back();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        assert!(peak.load(Ordering::Relaxed) <= 3);
        assert_eq!(space.depth.load(Ordering::Relaxed), 0);
        assert_eq!(space.waiting.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn closing_wakes_every_waiter_with_a_refusal_and_newcomers_do_not_overtake_them() {
        let space = Arc::new(Space::new(1));
        assert!(matches!(space.try_take(false), Take::Taken(1)));
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let space = space.clone();
                tokio::spawn(async move { space.take().await })
            })
            .collect();
        while space.waiting.load(Ordering::SeqCst) < 4 {
            tokio::task::yield_now().await;
        }
        space.give_back();
        assert!(
            matches!(space.try_take(false), Take::Full),
            "a waiter is served first"
        );
        space.close();
        let served: Vec<_> = futures_util::future::join_all(waiters)
            .await
            .into_iter()
            .map(|r| r.expect("waiter"))
            .collect();
        assert!(served.iter().filter(|s| s.is_some()).count() <= 1);
        assert!(matches!(space.try_take(false), Take::Closed));
    }
}
