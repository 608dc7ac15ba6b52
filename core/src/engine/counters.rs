//! The ledger's live counters: written on the hot path, read as `Counts` snapshots.

/// How a finished job ended, for the ledger (public for observers as [`crate::observe::Ending`]).
pub(crate) use crate::engine::observe::Ending;
use crate::engine::observe::{Admission, BreakerChange, Hooks, LedgerChange};
use crate::model::envelope::Envelope;
use crate::model::ledger::{Counts, LedgerSnapshot};
use crate::model::outcome::HandlerStatus;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Release},
};

/// Live counters of one handler, the source of truth of the ledger. Every movement is also reported
/// to the handler's [`Hooks`]: the built-in `metrics` observer and the registered observers
/// (`core/src/engine/observe.rs`).
///
/// Every counter only grows, and each is written by one side in the common case: the publisher
/// ([`Intake`]) or the workers ([`Outcomes`]), on separate cache lines so that the two do not take the
/// line from each other on every job. `queued` and `in_flight` are not stored: they are derived from
/// the monotonic counters in [`snapshot`](HandlerCounters::snapshot), which saves two read-modify-writes per
/// job (a job used to move `queued` up, then `queued` down and `in_flight` up, then `in_flight` down).
/// The snapshot reads the later stages of a job's life before the earlier ones (outcomes, then
/// starts, then intake), and every counter is written with `Release` after the job's previous stage,
/// so a derived count is never negative and every reading balances exactly.
#[derive(Debug)]
pub(crate) struct HandlerCounters {
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
    /// Queued jobs that started waiting for their delivery time.
    delayed: AtomicU64,
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
    /// Delayed jobs that reached their time (or were taken at shutdown).
    delay_ended: AtomicU64,
    breaker_opened: AtomicU64,
    breaker_probes: AtomicU64,
    breaker_closed: AtomicU64,
    breaker_held: AtomicU64,
    start_late: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Release);
}

impl HandlerCounters {
    pub(crate) fn new(hooks: Hooks) -> Self {
        HandlerCounters {
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

    /// A queued job waits for its delivery time (it stays `queued`).
    #[inline]
    pub(crate) fn delayed(&self) {
        bump(&self.intake.delayed);
        self.hooks.ledger(LedgerChange::Delayed);
    }

    /// A delayed job reached its time and entered its pool's queue, or shutdown took it.
    #[inline]
    pub(crate) fn delay_ended(&self) {
        bump(&self.outcomes.delay_ended);
        self.hooks.ledger(LedgerChange::DelayEnded);
    }

    /// The handler's circuit breaker moved.
    pub(crate) fn breaker(&self, change: BreakerChange) {
        let counter = match change {
            BreakerChange::Opened => &self.outcomes.breaker_opened,
            BreakerChange::Probe => &self.outcomes.breaker_probes,
            BreakerChange::Closed => &self.outcomes.breaker_closed,
            BreakerChange::Held => &self.outcomes.breaker_held,
        };
        bump(counter);
        self.hooks.ledger(LedgerChange::Breaker(change));
    }

    /// A job's first attempt started later than the handler's `start_within`.
    pub(crate) fn start_late(&self) {
        bump(&self.outcomes.start_late);
        self.hooks.ledger(LedgerChange::StartLate);
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
        let delay_ended = o.delay_ended.load(Acquire);
        let started = o.started.load(Acquire);
        let unqueued = o.unqueued.load(Acquire);
        let lost = o.lost.load(Acquire);
        let i = &self.intake;
        let evicted = i.evicted.load(Acquire);
        let queued_in = i.queued.load(Acquire);
        let running_in = i.running.load(Acquire);
        let dropped_in = i.dropped.load(Acquire);
        let rejected = i.rejected.load(Acquire);
        let delayed = i.delayed.load(Acquire);
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
            delayed: delayed.saturating_sub(delay_ended),
            breaker_opened: o.breaker_opened.load(Acquire),
            breaker_probes: o.breaker_probes.load(Acquire),
            breaker_closed: o.breaker_closed.load(Acquire),
            breaker_held: o.breaker_held.load(Acquire),
            start_late: o.start_late.load(Acquire),
        }
    }
}

impl LedgerSnapshot {
    pub(crate) fn from_handlers<'a>(
        handlers: impl Iterator<Item = (&'static str, &'a HandlerCounters)>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn every_reading_balances_while_jobs_move_through_every_stage() {
        let counters = &HandlerCounters::new(Hooks::new(
            "ledger-test",
            true,
            crate::engine::observe::HandlerSeries::default(),
            crate::engine::observe::Observers::default(),
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
