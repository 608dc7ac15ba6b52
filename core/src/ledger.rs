//! The ledger: per-handler counters that prove nothing was lost.
//!
//! Every accepted handler job ends in exactly one bucket, so at any quiet moment
//! `accepted = succeeded + dead_lettered + dropped + ignored + deduplicated + in_flight + queued`
//! (plus `deferred`: single attempts handed back to an outbox relay, which keeps the message).
//! Counts are per handler job: an event fanned out to four handlers is four accepted jobs.

use metrics::{counter, gauge, Counter, Gauge};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters of one handler, mirrored to the `metrics` facade.
#[derive(Debug)]
pub(crate) struct Counters {
    accepted: AtomicU64,
    succeeded: AtomicU64,
    failed_attempts: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
    deduplicated: AtomicU64,
    ignored: AtomicU64,
    deferred: AtomicU64,
    in_flight: AtomicU64,
    queued: AtomicU64,
    mirror: Mirror,
}

/// `metrics` handles, resolved once at build so the hot path does no label lookups.
#[derive(Debug)]
struct Mirror {
    accepted: Counter,
    succeeded: Counter,
    failed_attempts: Counter,
    retried: Counter,
    dead_lettered: Counter,
    rejected: Counter,
    dropped: Counter,
    deduplicated: Counter,
    ignored: Counter,
    deferred: Counter,
    in_flight: Gauge,
    queued: Gauge,
}

impl Mirror {
    fn new(handler: &'static str) -> Self {
        let c = |outcome: &'static str| counter!("herald_messages_total", "handler" => handler, "outcome" => outcome);
        Mirror {
            accepted: c("accepted"),
            succeeded: c("succeeded"),
            failed_attempts: counter!("herald_failed_attempts_total", "handler" => handler),
            retried: counter!("herald_retries_total", "handler" => handler),
            dead_lettered: c("dead_lettered"),
            rejected: c("rejected"),
            dropped: c("dropped"),
            deduplicated: c("deduplicated"),
            ignored: c("ignored"),
            deferred: c("deferred"),
            in_flight: gauge!("herald_in_flight", "handler" => handler),
            queued: gauge!("herald_queued", "handler" => handler),
        }
    }
}

/// How a finished job ended, for the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Succeeded,
    DeadLettered,
    Ignored,
    Deduplicated,
    Deferred,
}

impl Counters {
    pub(crate) fn new(handler: &'static str) -> Self {
        Counters {
            accepted: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            deduplicated: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            mirror: Mirror::new(handler),
        }
    }

    /// A job entered a pool's queue.
    pub(crate) fn accepted_queued(&self) {
        self.queued.fetch_add(1, Relaxed);
        self.accepted.fetch_add(1, Relaxed);
        self.mirror.accepted.increment(1);
        self.mirror.queued.increment(1.0);
    }

    /// A job runs at once (`CallerRuns`, re-drive on the caller's task).
    pub(crate) fn accepted_running(&self) {
        self.in_flight.fetch_add(1, Relaxed);
        self.accepted.fetch_add(1, Relaxed);
        self.mirror.accepted.increment(1);
        self.mirror.in_flight.increment(1.0);
    }

    /// A job was accepted and dropped at once (`DropNewest`).
    pub(crate) fn accepted_dropped(&self) {
        self.dropped.fetch_add(1, Relaxed);
        self.accepted.fetch_add(1, Relaxed);
        self.mirror.accepted.increment(1);
        self.mirror.dropped.increment(1);
    }

    /// A queued job starts running.
    pub(crate) fn started(&self) {
        self.in_flight.fetch_add(1, Relaxed);
        self.queued.fetch_sub(1, Relaxed);
        self.mirror.in_flight.increment(1.0);
        self.mirror.queued.decrement(1.0);
    }

    /// A running job ended.
    pub(crate) fn finished(&self, ending: Ending) {
        self.bucket(ending).fetch_add(1, Relaxed);
        self.in_flight.fetch_sub(1, Relaxed);
        self.mirror_ending(ending);
        self.mirror.in_flight.decrement(1.0);
    }

    /// A queued job left the queue without running (evicted by `DropOldest`: dropped; shutdown: dead-lettered).
    pub(crate) fn left_queue(&self, dropped: bool) {
        if dropped {
            self.dropped.fetch_add(1, Relaxed);
            self.mirror.dropped.increment(1);
        } else {
            self.dead_lettered.fetch_add(1, Relaxed);
            self.mirror.dead_lettered.increment(1);
        }
        self.queued.fetch_sub(1, Relaxed);
        self.mirror.queued.decrement(1.0);
    }

    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Relaxed);
        self.mirror.rejected.increment(1);
    }

    pub(crate) fn failed_attempt(&self) {
        self.failed_attempts.fetch_add(1, Relaxed);
        self.mirror.failed_attempts.increment(1);
    }

    pub(crate) fn retried(&self) {
        self.retried.fetch_add(1, Relaxed);
        self.mirror.retried.increment(1);
    }

    fn bucket(&self, ending: Ending) -> &AtomicU64 {
        match ending {
            Ending::Succeeded => &self.succeeded,
            Ending::DeadLettered => &self.dead_lettered,
            Ending::Ignored => &self.ignored,
            Ending::Deduplicated => &self.deduplicated,
            Ending::Deferred => &self.deferred,
        }
    }

    fn mirror_ending(&self, ending: Ending) {
        match ending {
            Ending::Succeeded => self.mirror.succeeded.increment(1),
            Ending::DeadLettered => self.mirror.dead_lettered.increment(1),
            Ending::Ignored => self.mirror.ignored.increment(1),
            Ending::Deduplicated => self.mirror.deduplicated.increment(1),
            Ending::Deferred => self.mirror.deferred.increment(1),
        }
    }

    /// Jobs queued or running.
    pub(crate) fn pending(&self) -> u64 {
        self.queued.load(Relaxed) + self.in_flight.load(Relaxed)
    }

    pub(crate) fn snapshot(&self) -> Counts {
        Counts {
            accepted: self.accepted.load(Relaxed),
            succeeded: self.succeeded.load(Relaxed),
            failed_attempts: self.failed_attempts.load(Relaxed),
            retried: self.retried.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            deduplicated: self.deduplicated.load(Relaxed),
            ignored: self.ignored.load(Relaxed),
            deferred: self.deferred.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            queued: self.queued.load(Relaxed),
        }
    }
}

/// A reading of the ledger counters (per handler, or summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Handler jobs Herald took responsibility for.
    pub accepted: u64,
    /// Jobs whose handler succeeded.
    pub succeeded: u64,
    /// Attempts that failed (a job retried twice then succeeding counts 2).
    pub failed_attempts: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Jobs stored in the dead letters after failing (or on shutdown).
    pub dead_lettered: u64,
    /// Publishes refused and handed back to the caller (not accepted).
    pub rejected: u64,
    /// Jobs dropped on overflow (`DropNewest`/`DropOldest`); they are in the dead letters with reason `overflow`.
    pub dropped: u64,
    /// Jobs skipped because the handler had already completed the same id.
    pub deduplicated: u64,
    /// Jobs that failed with `on_failure = log` or `ignore`.
    pub ignored: u64,
    /// Single attempts that failed and were handed back to a relay, which keeps the message stored
    /// and schedules the next attempt (durable delivery only).
    pub deferred: u64,
    /// Jobs running now.
    pub in_flight: u64,
    /// Jobs waiting in a queue now.
    pub queued: u64,
}

impl Counts {
    /// The sum of the buckets every accepted job ends in.
    pub fn accounted(&self) -> u64 {
        self.succeeded
            + self.dead_lettered
            + self.dropped
            + self.ignored
            + self.deferred
            + self.deduplicated
            + self.in_flight
            + self.queued
    }

    /// Whether `accepted` equals [`accounted`](Self::accounted): nothing was lost.
    pub fn is_balanced(&self) -> bool {
        self.accepted == self.accounted()
    }

    fn add(&mut self, other: &Counts) {
        self.accepted += other.accepted;
        self.succeeded += other.succeeded;
        self.failed_attempts += other.failed_attempts;
        self.retried += other.retried;
        self.dead_lettered += other.dead_lettered;
        self.rejected += other.rejected;
        self.dropped += other.dropped;
        self.deduplicated += other.deduplicated;
        self.ignored += other.ignored;
        self.deferred += other.deferred;
        self.in_flight += other.in_flight;
        self.queued += other.queued;
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "accepted {} = succeeded {} + dead-lettered {} + dropped {} + ignored {} + deduplicated {} + deferred {} + in flight {} + queued {} (rejected {}, failed attempts {}, retried {})",
            self.accepted,
            self.succeeded,
            self.dead_lettered,
            self.dropped,
            self.ignored,
            self.deduplicated,
            self.deferred,
            self.in_flight,
            self.queued,
            self.rejected,
            self.failed_attempts,
            self.retried
        )
    }
}

/// The whole ledger: totals and per handler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerSnapshot {
    /// Sum over all handlers.
    pub total: Counts,
    /// Per handler name.
    pub handlers: BTreeMap<&'static str, Counts>,
}

impl LedgerSnapshot {
    pub(crate) fn from_handlers<'a>(
        handlers: impl Iterator<Item = (&'static str, &'a Counters)>,
    ) -> Self {
        let mut snapshot = LedgerSnapshot::default();
        for (name, counters) in handlers {
            let counts = counters.snapshot();
            snapshot.total.add(&counts);
            snapshot.handlers.insert(name, counts);
        }
        snapshot
    }

    /// Whether every handler's ledger balances.
    pub fn is_balanced(&self) -> bool {
        self.total.is_balanced() && self.handlers.values().all(Counts::is_balanced)
    }
}

impl fmt::Display for LedgerSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "total: {}", self.total)?;
        for (name, counts) in &self.handlers {
            writeln!(f, "  {name}: {counts}")?;
        }
        Ok(())
    }
}
