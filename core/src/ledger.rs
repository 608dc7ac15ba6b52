//! The ledger: per-handler counters that prove nothing was lost.
//!
//! Every accepted handler job ends in exactly one bucket, so at any quiet moment
//! `accepted = succeeded + dead_lettered + dropped + ignored + deduplicated + in_flight + queued`
//! (plus `deferred`: single attempts handed back to an outbox relay, which keeps the message).
//! Counts are per handler job: an event fanned out to four handlers is four accepted jobs.

use crate::delivery::HandlerStatus;
use crate::envelope::Envelope;
use crate::observe::{Admission, Hooks, LedgerChange};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Release},
};

/// Live counters of one handler, the source of truth of the ledger. Every movement is also reported
/// to the handler's [`Hooks`]: the built-in `metrics` observer and the registered observers
/// (`core/src/observe.rs`).
///
/// Every counter only grows, and each is written by one side in the common case: the publisher
/// ([`Intake`]) or the workers ([`Outcomes`]), on separate cache lines so that the two do not take the
/// line from each other on every job. `queued` and `in_flight` are not stored: they are derived from
/// the monotonic counters in [`snapshot`](Counters::snapshot), which saves two read-modify-writes per
/// job (a job used to move `queued` up, then `queued` down and `in_flight` up, then `in_flight` down).
/// The snapshot reads the later stages of a job's life before the earlier ones (outcomes, then
/// starts, then intake), and every counter is written with `Release` after the job's previous stage,
/// so a derived count is never negative and every reading balances exactly.
#[derive(Debug)]
pub(crate) struct Counters {
    intake: Intake,
    outcomes: Outcomes,
    hooks: Hooks,
}

/// Written when a job is accepted or refused (the publisher's side).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Intake {
    /// Accepted into a pool's queue.
    queued: AtomicU64,
    /// Accepted and run at once (`CallerRuns`, re-drive on the caller's task).
    running: AtomicU64,
    /// Accepted and dropped at once (`DropNewest`).
    dropped: AtomicU64,
    /// Taken out of the queue by `DropOldest`.
    evicted: AtomicU64,
    rejected: AtomicU64,
}

/// Written when a job starts and ends (the workers' side).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Outcomes {
    /// Queued jobs that started running.
    started: AtomicU64,
    succeeded: AtomicU64,
    dead_lettered: AtomicU64,
    ignored: AtomicU64,
    deduplicated: AtomicU64,
    deferred: AtomicU64,
    /// Queued jobs dead-lettered at shutdown without running.
    unqueued: AtomicU64,
    /// Jobs that ended without a recorded outcome (a bug): they leave `in_flight`/`queued` and are
    /// accounted nowhere, so the ledger stops balancing and says why.
    lost: AtomicU64,
    failed_attempts: AtomicU64,
    retried: AtomicU64,
}

/// How a finished job ended, for the ledger (public for observers as [`crate::observe::Ending`]).
pub(crate) use crate::observe::Ending;

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Release);
}

impl Counters {
    pub(crate) fn new(hooks: Hooks) -> Self {
        Counters {
            intake: Intake::default(),
            outcomes: Outcomes::default(),
            hooks,
        }
    }

    /// The hooks every movement of this ledger is reported to; the worker reports attempts there.
    #[inline]
    pub(crate) fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// A job settled (its bucket is already counted): observers see `on_final`.
    #[inline]
    pub(crate) fn settled(&self, envelope: &Envelope, status: &HandlerStatus) {
        self.hooks.job_final(envelope, status);
    }

    /// A job entered a pool's queue.
    #[inline]
    pub(crate) fn accepted_queued(&self) {
        bump(&self.intake.queued);
        self.hooks.ledger(LedgerChange::Accepted(Admission::Queued));
    }

    /// A job runs at once (`CallerRuns`, re-drive on the caller's task).
    #[inline]
    pub(crate) fn accepted_running(&self) {
        bump(&self.intake.running);
        self.hooks
            .ledger(LedgerChange::Accepted(Admission::OnCaller));
    }

    /// A job was accepted and dropped at once (`DropNewest`).
    #[inline]
    pub(crate) fn accepted_dropped(&self) {
        bump(&self.intake.dropped);
        self.hooks
            .ledger(LedgerChange::Accepted(Admission::Dropped));
    }

    /// A queued job starts running.
    #[inline]
    pub(crate) fn started(&self) {
        bump(&self.outcomes.started);
        self.hooks.ledger(LedgerChange::Started);
    }

    /// A running job ended.
    #[inline]
    pub(crate) fn finished(&self, ending: Ending) {
        bump(self.bucket(ending));
        self.hooks.ledger(LedgerChange::Ended(ending));
    }

    /// A queued job left the queue without running (evicted by `DropOldest`: dropped; shutdown: dead-lettered).
    #[inline]
    pub(crate) fn left_queue(&self, dropped: bool) {
        if dropped {
            bump(&self.intake.evicted);
            self.hooks.ledger(LedgerChange::Evicted);
        } else {
            bump(&self.outcomes.unqueued);
            self.hooks.ledger(LedgerChange::Unqueued);
        }
    }

    /// A job was dropped without a recorded outcome (see `Job`'s `Drop`).
    #[inline]
    pub(crate) fn lost(&self) {
        bump(&self.outcomes.lost);
        self.hooks.ledger(LedgerChange::Lost);
    }

    #[inline]
    pub(crate) fn rejected(&self) {
        bump(&self.intake.rejected);
        self.hooks.ledger(LedgerChange::Rejected);
    }

    #[inline]
    pub(crate) fn failed_attempt(&self) {
        bump(&self.outcomes.failed_attempts);
        self.hooks.ledger(LedgerChange::FailedAttempt);
    }

    #[inline]
    pub(crate) fn retried(&self) {
        bump(&self.outcomes.retried);
        self.hooks.ledger(LedgerChange::Retried);
    }

    fn bucket(&self, ending: Ending) -> &AtomicU64 {
        match ending {
            Ending::Succeeded => &self.outcomes.succeeded,
            Ending::DeadLettered => &self.outcomes.dead_lettered,
            Ending::Ignored => &self.outcomes.ignored,
            Ending::Deduplicated => &self.outcomes.deduplicated,
            Ending::Deferred => &self.outcomes.deferred,
        }
    }

    /// Jobs queued or running.
    pub(crate) fn pending(&self) -> u64 {
        let counts = self.snapshot();
        counts.queued + counts.in_flight
    }

    pub(crate) fn snapshot(&self) -> Counts {
        // Later stages first (see the type's docs): each value read is at most what the earlier
        // stages read after it account for.
        let o = &self.outcomes;
        let succeeded = o.succeeded.load(Acquire);
        let dead_lettered = o.dead_lettered.load(Acquire);
        let ignored = o.ignored.load(Acquire);
        let deduplicated = o.deduplicated.load(Acquire);
        let deferred = o.deferred.load(Acquire);
        let failed_attempts = o.failed_attempts.load(Acquire);
        let retried = o.retried.load(Acquire);
        let started = o.started.load(Acquire);
        let unqueued = o.unqueued.load(Acquire);
        let lost = o.lost.load(Acquire);
        let i = &self.intake;
        let evicted = i.evicted.load(Acquire);
        let queued_in = i.queued.load(Acquire);
        let running_in = i.running.load(Acquire);
        let dropped_in = i.dropped.load(Acquire);
        let rejected = i.rejected.load(Acquire);
        let ended = succeeded + dead_lettered + ignored + deduplicated + deferred;
        // A lost job is taken out of the running jobs first, then out of the queued ones.
        let running = (started + running_in).saturating_sub(ended);
        let lost_running = lost.min(running);
        Counts {
            accepted: queued_in + running_in + dropped_in,
            succeeded,
            failed_attempts,
            retried,
            dead_lettered: dead_lettered + unqueued,
            rejected,
            dropped: dropped_in + evicted,
            deduplicated,
            ignored,
            deferred,
            lost,
            in_flight: running - lost_running,
            queued: queued_in.saturating_sub(started + evicted + unqueued + (lost - lost_running)),
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
    /// Jobs that ended without a recorded outcome. Always 0 unless Herald has a bug; when it is not,
    /// the ledger does not balance ([`is_balanced`](Self::is_balanced) is false) and says so.
    pub lost: u64,
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

    /// Whether `accepted` equals [`accounted`](Self::accounted) and no job was lost.
    pub fn is_balanced(&self) -> bool {
        self.lost == 0 && self.accepted == self.accounted()
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
        self.lost += other.lost;
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
        )?;
        if !self.is_balanced() {
            write!(
                f,
                " DOES NOT BALANCE: {} job(s) lost without a recorded outcome, accepted - accounted = {}",
                self.lost,
                self.accepted as i128 - self.accounted() as i128
            )?;
        }
        Ok(())
    }
}

/// The whole ledger: totals and per handler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerSnapshot {
    /// Sum over all handlers.
    pub total: Counts,
    /// Per handler name.
    pub handlers: BTreeMap<&'static str, Counts>,
    /// Dead letters the store evicted to stay within its bound ([`DeadLetterStore::evicted`](crate::DeadLetterStore::evicted)):
    /// they were counted in `dead_lettered` and logged in full, but are no longer in the store.
    pub dead_letters_evicted: u64,
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
        if self.dead_letters_evicted > 0 {
            writeln!(
                f,
                "  dead letters evicted from the store (logged in full): {}",
                self.dead_letters_evicted
            )?;
        }
        for (name, counts) in &self.handlers {
            writeln!(f, "  {name}: {counts}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn every_reading_balances_while_jobs_move_through_every_stage() {
        let counters = &Counters::new(Hooks::new(
            "ledger-test",
            true,
            crate::observe::Observers::default(),
        ));
        let done = &AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(move || {
                while !done.load(Acquire) {
                    let counts = counters.snapshot();
                    assert!(counts.is_balanced(), "{counts}");
                }
            });
            let (to_start, started) = std::sync::mpsc::channel::<()>();
            let publisher = scope.spawn(move || {
                for n in 0..200_000u32 {
                    match n % 4 {
                        0 | 1 => {
                            counters.accepted_queued();
                            to_start.send(()).expect("worker alive");
                        }
                        2 => {
                            counters.accepted_running();
                            counters.finished(Ending::Ignored);
                        }
                        _ => counters.accepted_dropped(),
                    }
                }
            });
            for n in 0u32.. {
                if started.recv().is_err() {
                    break;
                }
                counters.started();
                counters.finished(if n % 2 == 0 {
                    Ending::Succeeded
                } else {
                    Ending::DeadLettered
                });
            }
            publisher.join().expect("publisher");
            done.store(true, Release);
        });
        let counts = counters.snapshot();
        assert!(counts.is_balanced());
        assert_eq!((counts.queued, counts.in_flight), (0, 0));
        assert_eq!(counts.accepted, 200_000);
        assert_eq!(counts.succeeded + counts.dead_lettered, 100_000);
    }
}
