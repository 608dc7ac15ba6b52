//! Observing the engine: a hook at each step of a handler job's life, for metrics exporters,
//! tracing (OpenTelemetry), deadline checks and audits, without touching the worker.
//!
//! Register an [`AttemptObserver`] with [`HeraldBuilder::observe`](crate::HeraldBuilder::observe).
//! Herald calls it, for every handler job:
//!
//! - [`on_attempt_start`](AttemptObserver::on_attempt_start) just before the handler is called
//!   (after the dedupe claim and the rate limiter), and
//!   [`on_attempt_end`](AttemptObserver::on_attempt_end) when the call returned, timed out,
//!   panicked or was cut off, with its [`AttemptOutcome`] and duration;
//! - [`on_final`](AttemptObserver::on_final) once, when the job has ended, with its
//!   [`HandlerStatus`] (and so its [`Disposition`]), whatever ended it: a handler outcome, a
//!   duplicate, an overflow drop, a shutdown, a cancelled `CallerRuns` publisher;
//! - [`on_ledger`](AttemptObserver::on_ledger) for every movement of the handler's ledger
//!   (accepted, rejected, started, ended, evicted, …), exactly as
//!   [`Herald::ledger`](crate::Herald::ledger) counts them, so gauges such as "jobs queued" stay exact;
//! - [`on_sla`](AttemptObserver::on_sla) when this process opens, fulfils or breaches a deadline
//!   SLA's expectation ([`SlaEvent`]; not a job's hook: it runs on the task that recorded it).
//!
//! The `metrics`-crate counters (`herald_messages_total{handler,outcome}`,
//! `herald_failed_attempts_total`, `herald_retries_total`, `herald_in_flight`, `herald_queued`) are
//! one such observer, installed by default; [`HeraldBuilder::metrics`](crate::HeraldBuilder::metrics)
//! turns it off.
//!
//! Hooks run inline on the task that moves the job (a pool worker, a publisher, shutdown), so keep
//! them short and never block or await in them; do not publish from a hook. A hook that panics is
//! caught and logged at error level: an observer can never lose a job.
//!
//! # Example: a latency histogram per handler
//!
//! ```
//! use herald_core::observe::{AttemptEnd, AttemptObserver, AttemptOutcome};
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//!
//! /// Attempt durations per handler, in buckets of powers of two milliseconds.
//! #[derive(Default)]
//! struct Latency {
//!     buckets: Mutex<HashMap<(&'static str, u32), u64>>,
//! }
//!
//! impl AttemptObserver for Latency {
//!     fn on_attempt_end(&self, attempt: &AttemptEnd<'_>) {
//!         let millis = attempt.duration.as_millis().max(1) as u64;
//!         let bucket = 64 - millis.leading_zeros(); // 1 ms → 1, 2-3 ms → 2, 4-7 ms → 3, …
//!         *self.buckets.lock().unwrap().entry((attempt.handler, bucket)).or_default() += 1;
//!         if let AttemptOutcome::Failed { error, .. } = &attempt.outcome {
//!             eprintln!("{} failed after {:?}: {error}", attempt.handler, attempt.duration);
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), herald_core::BuildError> {
//! let latency = Arc::new(Latency::default());
//! let herald = herald_core::Herald::builder()
//!     .observe(latency.clone()) // an `Arc` of an observer is an observer: keep a handle to read it
//!     .build()?;
//! # let _ = (herald, latency.buckets.lock().unwrap().len());
//! # Ok(())
//! # }
//! ```

use crate::model::envelope::{Envelope, MessageId};
use crate::model::error::{Disposition, HandlerError};
use crate::model::outcome::HandlerStatus;
use metrics::{counter, gauge, Counter, Gauge};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

/// Hooks into the life of every handler job. Every method does nothing by default: implement the
/// ones you need.
///
/// Observers are registered with [`HeraldBuilder::observe`](crate::HeraldBuilder::observe) and called
/// in registration order. See the [module docs](self) for when each hook runs and an example.
pub trait AttemptObserver: Send + Sync + 'static {
    /// An attempt starts: the handler is called now.
    fn on_attempt_start(&self, attempt: &AttemptStart<'_>) {
        let _ = attempt;
    }

    /// An attempt ended: returned, timed out, panicked, or was cut off.
    fn on_attempt_end(&self, attempt: &AttemptEnd<'_>) {
        let _ = attempt;
    }

    /// The job ended; called exactly once per accepted job (unless it is `lost`, a Herald bug that
    /// [`on_ledger`](Self::on_ledger) reports).
    fn on_final(&self, job: &FinalEvent<'_>) {
        let _ = job;
    }

    /// The handler's ledger moved: one call per count [`Herald::ledger`](crate::Herald::ledger) makes.
    fn on_ledger(&self, event: &LedgerEvent) {
        let _ = event;
    }

    /// An SLA expectation moved in this process: opened, fulfilled (on time or late) or
    /// breached (see [`SlaEvent`]).
    fn on_sla(&self, event: &SlaEvent<'_>) {
        let _ = event;
    }
}

/// Share an observer: register an `Arc` clone and keep another to read what it gathered.
impl<T: AttemptObserver + ?Sized> AttemptObserver for Arc<T> {
    fn on_attempt_start(&self, attempt: &AttemptStart<'_>) {
        (**self).on_attempt_start(attempt);
    }
    fn on_attempt_end(&self, attempt: &AttemptEnd<'_>) {
        (**self).on_attempt_end(attempt);
    }
    fn on_final(&self, job: &FinalEvent<'_>) {
        (**self).on_final(job);
    }
    fn on_ledger(&self, event: &LedgerEvent) {
        (**self).on_ledger(event);
    }
    fn on_sla(&self, event: &SlaEvent<'_>) {
        (**self).on_sla(event);
    }
}

/// An attempt is about to call the handler.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AttemptStart<'a> {
    /// The handler's name.
    pub handler: &'static str,
    /// The message's envelope (id, name, key, headers…).
    pub envelope: &'a Envelope,
    /// The attempt number, starting at 1.
    pub attempt: u32,
}

/// An attempt ended.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AttemptEnd<'a> {
    /// The handler's name.
    pub handler: &'static str,
    /// The message's envelope.
    pub envelope: &'a Envelope,
    /// The attempt number, starting at 1.
    pub attempt: u32,
    /// How it ended and what follows.
    pub outcome: AttemptOutcome<'a>,
    /// From the call of the handler to its end (rate-limit waits and retry delays excluded).
    pub duration: Duration,
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum AttemptOutcome<'a> {
    /// The handler returned `Ok`.
    Succeeded,
    /// The handler reported the message as already handled
    /// ([`HandlerErrorKind::Duplicate`](crate::HandlerErrorKind::Duplicate)): the job is deduplicated.
    Duplicate,
    /// The attempt failed: the handler returned `Err`, panicked
    /// ([`HandlerErrorKind::Panicked`](crate::HandlerErrorKind::Panicked)) or timed out
    /// ([`HandlerErrorKind::TimedOut`](crate::HandlerErrorKind::TimedOut)).
    Failed {
        /// The attempt's error.
        error: &'a HandlerError,
        /// What follows.
        then: AfterFailure,
    },
    /// The attempt was cut off before it ended: shutdown reached its deadline, or the publisher of
    /// a `CallerRuns` job dropped its `publish` future. The job is dead-lettered (see `on_final`).
    Interrupted,
}

impl AttemptOutcome<'_> {
    /// The attempt's error, when it failed.
    pub fn error(&self) -> Option<&HandlerError> {
        match self {
            AttemptOutcome::Failed { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether this process runs another attempt of the job.
    pub fn retry_follows(&self) -> bool {
        matches!(
            self,
            AttemptOutcome::Failed {
                then: AfterFailure::Retry { .. },
                ..
            }
        )
    }
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AfterFailure {
    /// Another attempt, after this delay (the retry policy's backoff).
    Retry {
        /// The delay before the next attempt.
        delay: Duration,
    },
    /// The attempt was a single delivery by a relay, which keeps the message stored and schedules
    /// the next attempt itself ([`HandlerStatus::Deferred`]).
    Deferred,
    /// No attempt follows (attempts exhausted, or a permanent error): the handler's `on_failure`
    /// route decides where the message goes; `on_final` reports the [`Disposition`].
    Final,
}

/// A job ended.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct FinalEvent<'a> {
    /// The handler's name.
    pub handler: &'static str,
    /// The message's envelope.
    pub envelope: &'a Envelope,
    /// How the job ended, as its [`Delivery`](crate::Delivery) reports it.
    pub status: &'a HandlerStatus,
}

impl FinalEvent<'_> {
    /// Where a failed job went (dead letters, log, ignored); `None` when it did not fail.
    pub fn disposition(&self) -> Option<Disposition> {
        match self.status {
            HandlerStatus::Failed(failure) => Some(failure.disposition),
            _ => None,
        }
    }

    /// Attempts the job made in this process (0 when it never ran: dropped, deduplicated before
    /// running, or interrupted while queued).
    pub fn attempts(&self) -> u32 {
        match self.status {
            HandlerStatus::Succeeded { attempts } => *attempts,
            HandlerStatus::Failed(failure) => failure.attempts,
            HandlerStatus::Deferred { attempt, .. } => *attempt,
            _ => 0,
        }
    }
}

/// One movement of a handler's ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerEvent {
    /// The handler's name.
    pub handler: &'static str,
    /// What moved.
    pub change: LedgerChange,
}

/// What moved in a handler's ledger. Every accepted job ends in one `Ended`, `Evicted` or
/// `Unqueued` (or in `Accepted(Admission::Dropped)` at once), so
/// `queued = Accepted(Queued) - Started - Evicted - Unqueued` and
/// `in flight = Accepted(OnCaller) + Started - Ended` at every moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LedgerChange {
    /// A job was accepted.
    Accepted(Admission),
    /// A message was handed back to its publisher: its pool was full and could not wait, or Herald
    /// is shutting down.
    Rejected,
    /// A queued job started running.
    Started,
    /// A running job ended.
    Ended(Ending),
    /// A queued job was evicted by `DropOldest` (dropped to the dead letters, reason `overflow`).
    Evicted,
    /// A queued job was dead-lettered at shutdown without running (reason `shutdown`).
    Unqueued,
    /// A job ended without a recorded outcome: a Herald bug, the ledger no longer balances.
    Lost,
    /// An attempt failed.
    FailedAttempt,
    /// A retry was scheduled.
    Retried,
    /// A queued job waits for its delivery time
    /// ([`PublishOptions::deliver_at`](crate::PublishOptions::deliver_at)); it stays queued.
    Delayed,
    /// A delayed job reached its time and entered its pool's queue (or shutdown took it).
    DelayEnded,
    /// The handler's circuit breaker moved, or held a job.
    Breaker(BreakerChange),
    /// A job's first attempt started later than the handler's `start_within` after the
    /// message's time (it runs all the same).
    StartLate,
}

/// An SLA expectation moved, as this process recorded it (an expectation opened or fulfilled in
/// an outbox's publishing transaction is not reported here: the transaction may still roll back;
/// the store's counts include it).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SlaEvent<'a> {
    /// The SLA's name.
    pub sla: &'a str,
    /// The correlation key.
    pub key: &'a str,
    /// The message id of the A that opened the expectation.
    pub a_message_id: MessageId,
    /// What happened to it.
    pub change: SlaChange,
}

/// What happened to an SLA expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlaChange {
    /// An A opened it.
    Opened,
    /// A B (or the expected handler's completion) fulfilled it by its due time.
    Fulfilled,
    /// A B fulfilled it after its due time, or after it was breached.
    FulfilledLate,
    /// It was due with nothing fulfilling it: this process emitted its `SlaBreached`.
    Breached,
}

impl SlaChange {
    /// The word used in logs and metrics: `opened`, `fulfilled`, `fulfilled_late`, `breached`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlaChange::Opened => "opened",
            SlaChange::Fulfilled => "fulfilled",
            SlaChange::FulfilledLate => "fulfilled_late",
            SlaChange::Breached => "breached",
        }
    }
}

/// A movement of a handler's circuit breaker ([`CircuitBreaker`](crate::CircuitBreaker)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerChange {
    /// It opened: `failures` attempts failed in a row, or the probe failed.
    Opened,
    /// The open period passed: one attempt runs as the probe (half-open).
    Probe,
    /// The probe succeeded: it closed, and the jobs it held run.
    Closed,
    /// A job was made to wait while it is open (no attempt is spent).
    Held,
}

/// Where a handler's circuit breaker stands ([`Herald::circuit_breaker`](crate::Herald::circuit_breaker)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go through; `failures` counts the failed attempts in a row so far.
    Closed {
        /// Failed attempts in a row.
        failures: u32,
    },
    /// No call goes through until the open period ends.
    Open,
    /// The open period ended: one probe runs (or the next job to come will be the probe).
    HalfOpen,
}

/// How a job was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Into its pool's queue.
    Queued,
    /// To run at once on its publisher's task (`CallerRuns`, re-drive).
    OnCaller,
    /// Dropped at once (`DropNewest`): in the dead letters with reason `overflow`.
    Dropped,
}

/// The ledger bucket a running job ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ending {
    /// The handler succeeded.
    Succeeded,
    /// The job is in the dead letters.
    DeadLettered,
    /// The job failed with `on_failure = log` or `ignore` (or its dead letter could only be logged).
    Ignored,
    /// The job was a duplicate of a completed id.
    Deduplicated,
    /// A single attempt failed and was handed back to the relay that delivered it.
    Deferred,
}

/// An observer registered on the builder, with its type's name for the log of a panic.
struct Registered {
    name: &'static str,
    observer: Box<dyn AttemptObserver>,
}

/// The observers registered on the builder, shared by every handler.
#[derive(Clone, Default)]
pub(crate) struct Observers {
    list: Arc<[Registered]>,
}

impl fmt::Debug for Observers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.list.iter().map(|r| r.name))
            .finish()
    }
}

impl Observers {
    pub(crate) fn new(list: Vec<(&'static str, Box<dyn AttemptObserver>)>) -> Self {
        Observers {
            list: list
                .into_iter()
                .map(|(name, observer)| Registered { name, observer })
                .collect(),
        }
    }

    // Out of line: the hot path pays one branch when no observer is registered.
    #[inline(never)]
    fn ledger(&self, event: &LedgerEvent) {
        self.each("on_ledger", |observer| observer.on_ledger(event));
    }

    #[inline(never)]
    fn attempt_start(&self, event: &AttemptStart<'_>) {
        self.each("on_attempt_start", |observer| {
            observer.on_attempt_start(event)
        });
    }

    #[inline(never)]
    fn attempt_end(&self, event: &AttemptEnd<'_>) {
        self.each("on_attempt_end", |observer| observer.on_attempt_end(event));
    }

    #[inline(never)]
    fn job_final(&self, event: &FinalEvent<'_>) {
        self.each("on_final", |observer| observer.on_final(event));
    }

    pub(crate) fn sla(&self, event: &SlaEvent<'_>) {
        self.each("on_sla", |observer| observer.on_sla(event));
    }

    /// Calls `hook` on every observer in order; a panic is caught and logged, and the next observer
    /// still runs.
    fn each(&self, hook: &'static str, call: impl Fn(&dyn AttemptObserver)) {
        for registered in self.list.iter() {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| call(&*registered.observer))) {
                observer_panicked(registered.name, hook, panic);
            }
        }
    }
}

#[cold]
#[inline(never)]
fn observer_panicked(
    observer: &'static str,
    hook: &'static str,
    panic: Box<dyn std::any::Any + Send>,
) {
    tracing::error!(
        observer,
        hook,
        panic = %crate::engine::worker::panic_message(panic.as_ref()),
        "an observer panicked; the panic is ignored and the job goes on"
    );
    // A payload whose own drop panics must not unwind into the engine either.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(panic)));
}

/// The hooks of one handler: the built-in `metrics` observer (called directly, no virtual call) and
/// the registered observers (skipped with one branch when there are none).
#[derive(Debug)]
pub(crate) struct Hooks {
    handler: &'static str,
    metrics: Option<MetricsObserver>,
    observers: Observers,
}

impl Hooks {
    /// `breaker`: whether the handler has a circuit breaker, `start_within`: whether it has a
    /// `start_within` deadline (their series are made only then).
    pub(crate) fn new(
        handler: &'static str,
        metrics: bool,
        series: HandlerSeries,
        observers: Observers,
    ) -> Self {
        Hooks {
            handler,
            metrics: metrics.then(|| MetricsObserver::new(handler, series)),
            observers,
        }
    }

    /// Whether any registered observer wants attempt events (the worker only reads the clock then).
    #[inline]
    pub(crate) fn watching(&self) -> bool {
        !self.observers.list.is_empty()
    }

    #[inline]
    pub(crate) fn ledger(&self, change: LedgerChange) {
        let event = LedgerEvent {
            handler: self.handler,
            change,
        };
        if let Some(metrics) = &self.metrics {
            metrics.on_ledger(&event);
        }
        if self.watching() {
            self.observers.ledger(&event);
        }
    }

    #[inline]
    pub(crate) fn attempt_start(&self, envelope: &Envelope, attempt: u32) {
        if self.watching() {
            self.observers.attempt_start(&AttemptStart {
                handler: self.handler,
                envelope,
                attempt,
            });
        }
    }

    #[inline]
    pub(crate) fn attempt_end(
        &self,
        envelope: &Envelope,
        attempt: u32,
        outcome: AttemptOutcome<'_>,
        duration: Duration,
    ) {
        if self.watching() {
            self.observers.attempt_end(&AttemptEnd {
                handler: self.handler,
                envelope,
                attempt,
                outcome,
                duration,
            });
        }
    }

    #[inline]
    pub(crate) fn job_final(&self, envelope: &Envelope, status: &HandlerStatus) {
        if self.watching() {
            self.observers.job_final(&FinalEvent {
                handler: self.handler,
                envelope,
                status,
            });
        }
    }
}

/// Which optional series a handler's `metrics` observer makes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HandlerSeries {
    /// It has a circuit breaker.
    pub(crate) breaker: bool,
    /// It has a `start_within` deadline.
    pub(crate) start_within: bool,
}

/// The built-in observer that mirrors one handler's ledger to the `metrics` facade. Its handles are
/// resolved once at build, so an event costs no label lookup.
#[derive(Debug)]
pub(crate) struct MetricsObserver {
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
    lost: Counter,
    in_flight: Gauge,
    queued: Gauge,
    delayed: Gauge,
    breaker: Option<BreakerMetrics>,
    start_late: Option<Counter>,
}

/// The series of a handler's circuit breaker: transitions by state, jobs held, and whether it is
/// open (1) or closed (0).
#[derive(Debug)]
struct BreakerMetrics {
    opened: Counter,
    probes: Counter,
    closed: Counter,
    held: Counter,
    open: Gauge,
}

impl MetricsObserver {
    pub(crate) fn new(handler: &'static str, series: HandlerSeries) -> Self {
        let c = |outcome: &'static str| counter!("herald_messages_total", "handler" => handler, "outcome" => outcome);
        MetricsObserver {
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
            lost: c("lost"),
            in_flight: gauge!("herald_in_flight", "handler" => handler),
            queued: gauge!("herald_queued", "handler" => handler),
            delayed: gauge!("herald_delayed", "handler" => handler),
            start_late: series
                .start_within
                .then(|| counter!("herald_start_late_total", "handler" => handler)),
            breaker: series.breaker.then(|| {
                let t = |to: &'static str| counter!("herald_circuit_breaker_transitions_total", "handler" => handler, "to" => to);
                BreakerMetrics {
                    opened: t("open"),
                    probes: t("half_open"),
                    closed: t("closed"),
                    held: counter!("herald_circuit_breaker_held_total", "handler" => handler),
                    open: gauge!("herald_circuit_breaker_open", "handler" => handler),
                }
            }),
        }
    }
}

impl AttemptObserver for MetricsObserver {
    #[inline]
    fn on_ledger(&self, event: &LedgerEvent) {
        match event.change {
            LedgerChange::Accepted(admission) => {
                self.accepted.increment(1);
                match admission {
                    Admission::Queued => self.queued.increment(1.0),
                    Admission::OnCaller => self.in_flight.increment(1.0),
                    Admission::Dropped => self.dropped.increment(1),
                }
            }
            LedgerChange::Rejected => self.rejected.increment(1),
            LedgerChange::Started => {
                self.in_flight.increment(1.0);
                self.queued.decrement(1.0);
            }
            LedgerChange::Ended(ending) => {
                match ending {
                    Ending::Succeeded => self.succeeded.increment(1),
                    Ending::DeadLettered => self.dead_lettered.increment(1),
                    Ending::Ignored => self.ignored.increment(1),
                    Ending::Deduplicated => self.deduplicated.increment(1),
                    Ending::Deferred => self.deferred.increment(1),
                }
                self.in_flight.decrement(1.0);
            }
            LedgerChange::Evicted => {
                self.dropped.increment(1);
                self.queued.decrement(1.0);
            }
            LedgerChange::Unqueued => {
                self.dead_lettered.increment(1);
                self.queued.decrement(1.0);
            }
            LedgerChange::Lost => self.lost.increment(1),
            LedgerChange::FailedAttempt => self.failed_attempts.increment(1),
            LedgerChange::Retried => self.retried.increment(1),
            LedgerChange::Delayed => self.delayed.increment(1.0),
            LedgerChange::DelayEnded => self.delayed.decrement(1.0),
            LedgerChange::Breaker(change) => {
                if let Some(breaker) = &self.breaker {
                    match change {
                        BreakerChange::Opened => {
                            breaker.opened.increment(1);
                            breaker.open.set(1.0);
                        }
                        BreakerChange::Probe => breaker.probes.increment(1),
                        BreakerChange::Closed => {
                            breaker.closed.increment(1);
                            breaker.open.set(0.0);
                        }
                        BreakerChange::Held => breaker.held.increment(1),
                    }
                }
            }
            LedgerChange::StartLate => {
                if let Some(start_late) = &self.start_late {
                    start_late.increment(1);
                }
            }
        }
    }
}
