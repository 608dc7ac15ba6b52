//! The ledger as data: per-handler counts that prove nothing was lost.
//!
//! Every accepted handler job ends in exactly one bucket, so at any quiet moment
//! `accepted = succeeded + dead_lettered + dropped + ignored + deduplicated + deferred + in_flight + queued`.
//! Counts are per handler job: an event fanned out to four handlers is four accepted jobs.

use crate::model::sla::SlaCounts;
use std::collections::BTreeMap;
use std::fmt;
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
    /// Jobs waiting in a queue now (delayed ones and ones held by an open circuit breaker
    /// included: each holds a slot of its pool's queue).
    pub queued: u64,
    /// Of `queued`, the jobs waiting for their delivery time now
    /// ([`PublishOptions::deliver_at`](crate::PublishOptions::deliver_at)). Not a bucket of its
    /// own: the balance counts them in `queued`.
    pub delayed: u64,
    /// Times the handler's circuit breaker opened (after its run of failures, or after a failed
    /// probe).
    pub breaker_opened: u64,
    /// Probes the circuit breaker let through after an open period (half-open).
    pub breaker_probes: u64,
    /// Times the circuit breaker closed again after a successful probe.
    pub breaker_closed: u64,
    /// Times a job was made to wait by the open circuit breaker, at no cost to its attempts
    /// (not a bucket: the job is still `queued` or `in_flight`).
    pub breaker_held: u64,
    /// Jobs whose first attempt started later than the handler's `start_within` after the
    /// message's time (informational: each was logged at warn level and still ran).
    pub start_late: u64,
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

    pub(crate) fn add(&mut self, other: &Counts) {
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
        self.delayed += other.delayed;
        self.breaker_opened += other.breaker_opened;
        self.breaker_probes += other.breaker_probes;
        self.breaker_closed += other.breaker_closed;
        self.breaker_held += other.breaker_held;
        self.start_late += other.start_late;
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
        if self.delayed > 0 {
            write!(f, " ({} of the queued wait for their time)", self.delayed)?;
        }
        if self.breaker_opened + self.breaker_held > 0 {
            write!(
                f,
                " (circuit breaker: opened {}, probes {}, closed {}, jobs held {})",
                self.breaker_opened, self.breaker_probes, self.breaker_closed, self.breaker_held
            )?;
        }
        if self.start_late > 0 {
            write!(f, " (started late: {})", self.start_late)?;
        }
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
    /// Per SLA name: the expectations this process opened, fulfilled (on time or late) and
    /// breached (the store's [`SlaStatus`](crate::SlaStatus) counts those of every process).
    pub slas: BTreeMap<String, SlaCounts>,
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
        for (name, counts) in &self.slas {
            writeln!(f, "  SLA {name}: {counts}")?;
        }
        Ok(())
    }
}
