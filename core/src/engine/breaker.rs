//! The circuit breaker of one handler (`circuit_breaker(failures = 5, open_for = "30s")`).
//!
//! Closed, it lets every attempt through and counts failed attempts in a row. At `failures` it
//! opens for `open_for`: no attempt runs, and jobs wait without spending any attempt of their
//! retry budget. Then it is half-open: exactly one attempt runs as the probe. The probe's success
//! closes it and every waiting job goes on; its failure opens it again.
//!
//! Jobs wait in one of two places, so that nothing waits outside the ledger:
//! - a queued job that a worker is about to start is **held** here, still queued (it keeps its
//!   slot of the pool's queue, as a job parked behind its key does) and the worker moves on to
//!   other work. Closing the breaker puts the held jobs back into their pool's queue; the end of
//!   an open period puts the first one back, to be the probe.
//! - a job already running (between retries, or on its publisher's task under `CallerRuns`)
//!   waits in place, still in flight, before its next attempt.
//!
//! Shutdown takes the held jobs and dead-letters them with reason `shutdown` like any queued job;
//! a job waiting in place is in flight and ends as any running job does at the deadline.
//!
//! Written here rather than taken from a crate: the breakers on crates.io (`failsafe`,
//! `recloser`, …) decide per call and *reject* a call while open, leaving the caller to fail or
//! retry it, and their half-open state lets several calls through. Herald must instead keep the
//! job (no failure, no attempt spent), let exactly one probe through, and wake the waiting jobs
//! when the breaker closes; that is a queue of jobs and a wake-up, not a call filter.

use crate::engine::counters::HandlerCounters;
use crate::engine::observe::{BreakerChange, BreakerState};
use crate::engine::publish::Job;
use crate::engine::worker::Casualty;
use crate::model::error::{HandlerError, HandlerErrorKind};
use crate::model::options::CircuitBreaker;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the breaker lets an attempt do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Closed: the attempt runs and its result is counted.
    Closed,
    /// Half-open: this attempt is the probe; its result closes or re-opens the breaker.
    Probe,
}

/// What an attempt's result says about the partner behind the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Success,
    Failure,
    /// Says nothing about the partner: a permanent error (bad input), an extractor that failed,
    /// a malformed message, a duplicate.
    Neutral,
}

impl Verdict {
    pub(crate) fn of<T>(result: &Result<T, HandlerError>) -> Self {
        match result {
            Ok(_) => Verdict::Success,
            Err(error) if error.is_permanent() => Verdict::Neutral,
            Err(error) => match error.kind() {
                HandlerErrorKind::Failed
                | HandlerErrorKind::Panicked
                | HandlerErrorKind::TimedOut => Verdict::Failure,
                _ => Verdict::Neutral,
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Queued jobs waiting for the breaker, oldest first; each holds its pool-queue slot.
    held: VecDeque<Job>,
    /// Set at shutdown once the held jobs were taken: a job held later is handed to its pool's
    /// casualties instead.
    shut: bool,
}

/// What the gate said under the lock.
enum Gate {
    Pass(Pass),
    /// Wait until the open period ends (`Some`), or for the running probe (`None`).
    Wait(Option<Instant>),
}

/// One handler's circuit breaker.
#[derive(Debug)]
pub(crate) struct Breaker {
    handler: &'static str,
    config: CircuitBreaker,
    state: Mutex<State>,
    /// Wakes the jobs waiting in place: the breaker closed, or a probe may run.
    changed: Notify,
    /// Cancels the end-of-open-period timers (shutdown).
    stop: CancellationToken,
}

/// What [`Breaker::admit_or_hold`] did with a job about to start.
pub(crate) enum Admit {
    /// The job starts now.
    Run(Job, Pass),
    /// The breaker keeps it until it may run.
    Held,
}

impl Breaker {
    pub(crate) fn new(handler: &'static str, config: CircuitBreaker) -> Self {
        Breaker {
            handler,
            config,
            state: Mutex::new(State {
                phase: Phase::Closed { failures: 0 },
                held: VecDeque::new(),
                shut: false,
            }),
            changed: Notify::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Where the breaker stands.
    pub(crate) fn state(&self) -> BreakerState {
        match self.state.lock().phase {
            Phase::Closed { failures } => BreakerState::Closed { failures },
            Phase::Open { until } if until > Instant::now() => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// The gate, under the lock: closed passes; open waits until its end, after which the first
    /// one through is the probe; half-open with a probe running waits for it.
    fn gate(&self, state: &mut State, counters: &HandlerCounters) -> Gate {
        match state.phase {
            Phase::Closed { .. } => Gate::Pass(Pass::Closed),
            Phase::Open { until } if until > Instant::now() => Gate::Wait(Some(until)),
            Phase::Open { .. } | Phase::HalfOpen { probing: false } => {
                state.phase = Phase::HalfOpen { probing: true };
                counters.breaker(BreakerChange::Probe);
                tracing::info!(
                    handler = self.handler,
                    "circuit breaker half-open: one attempt runs as the probe"
                );
                Gate::Pass(Pass::Probe)
            }
            Phase::HalfOpen { probing: true } => Gate::Wait(None),
        }
    }

    /// A queued job is about to start on a worker: it runs, or is held here (still queued,
    /// keeping its slot) while the breaker is open or a probe runs.
    pub(crate) fn admit_or_hold(&self, job: Job, counters: &HandlerCounters) -> Admit {
        let mut state = self.state.lock();
        match self.gate(&mut state, counters) {
            Gate::Pass(pass) => Admit::Run(job, pass),
            Gate::Wait(_) if state.shut => {
                drop(state);
                let pool = job.handler.pool.clone();
                pool.casualties.lock().push(Casualty::queued(job));
                Admit::Held
            }
            Gate::Wait(_) => {
                tracing::debug!(handler = self.handler, message_id = %job.dispatch.envelope.id, "circuit breaker open: job held, no attempt spent");
                counters.breaker(BreakerChange::Held);
                state.held.push_back(job);
                Admit::Held
            }
        }
    }

    /// A running job's next attempt waits here (in flight) until the breaker lets it through.
    pub(crate) async fn wait_in_place(&self, counters: &HandlerCounters) -> Pass {
        let mut counted = false;
        loop {
            // Registered before the look, so that a wake-up between the look and the wait is kept.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let until = {
                let mut state = self.state.lock();
                match self.gate(&mut state, counters) {
                    Gate::Pass(pass) => return pass,
                    Gate::Wait(until) => until,
                }
            };
            if !counted {
                counted = true;
                counters.breaker(BreakerChange::Held);
            }
            match until {
                Some(until) => {
                    tokio::select! {
                        () = &mut changed => {}
                        () = tokio::time::sleep_until(until) => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// Counts an attempt's result: in the closed state failures in a row open the breaker and a
    /// success resets the count; the probe's result closes or re-opens it.
    pub(crate) fn record(
        self: &Arc<Self>,
        pass: Pass,
        verdict: Verdict,
        counters: &HandlerCounters,
    ) {
        let mut released = Vec::new();
        {
            let mut state = self.state.lock();
            match (pass, verdict, state.phase) {
                (Pass::Probe, Verdict::Success, _) => {
                    state.phase = Phase::Closed { failures: 0 };
                    counters.breaker(BreakerChange::Closed);
                    tracing::info!(
                        handler = self.handler,
                        held = state.held.len(),
                        "circuit breaker closed: the probe succeeded; held jobs run again"
                    );
                    released.extend(state.held.drain(..));
                }
                (Pass::Probe, Verdict::Failure, _) => {
                    self.open(&mut state, counters, "the probe failed")
                }
                (Pass::Probe, Verdict::Neutral, _) => {
                    // No answer about the partner: the next attempt probes.
                    state.phase = Phase::HalfOpen { probing: false };
                    released.extend(state.held.pop_front());
                }
                (Pass::Closed, Verdict::Success, Phase::Closed { .. }) => {
                    state.phase = Phase::Closed { failures: 0 };
                }
                (Pass::Closed, Verdict::Failure, Phase::Closed { failures }) => {
                    let failures = failures.saturating_add(1);
                    if failures >= self.config.failures {
                        self.open(&mut state, counters, "failed attempts in a row");
                    } else {
                        state.phase = Phase::Closed { failures };
                    }
                }
                // An attempt let through while closed that ends after the breaker opened: the
                // probe decides now.
                (Pass::Closed, _, _) => {}
            }
        }
        self.changed.notify_waiters();
        requeue(released);
    }

    /// A probe that never ended (its worker was aborted, its publisher gave up): the next attempt
    /// probes.
    pub(crate) fn abandon_probe(&self) {
        let released = {
            let mut state = self.state.lock();
            if matches!(state.phase, Phase::HalfOpen { probing: true }) {
                state.phase = Phase::HalfOpen { probing: false };
            }
            state.held.pop_front()
        };
        self.changed.notify_waiters();
        requeue(released);
    }

    fn open(self: &Arc<Self>, state: &mut State, counters: &HandlerCounters, why: &str) {
        let until = Instant::now() + self.config.open_for;
        state.phase = Phase::Open { until };
        counters.breaker(BreakerChange::Opened);
        tracing::warn!(
            handler = self.handler,
            failures = self.config.failures,
            open_for = ?self.config.open_for,
            held = state.held.len(),
            "circuit breaker open ({why}): the handler's jobs wait without spending attempts"
        );
        // The end of the open period puts the first held job back into the queue to probe
        // (jobs waiting in place watch the time themselves).
        let breaker = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tokio::select! {
                        () = breaker.stop.cancelled() => {}
                        () = tokio::time::sleep_until(until) => breaker.open_period_over(),
                    }
                });
            }
            Err(_) => tracing::error!(
                handler = self.handler,
                "circuit breaker opened outside a tokio runtime: held jobs wait for the next job of this handler to probe"
            ),
        }
    }

    /// The open period ended: the first held job goes back into its pool's queue, where the
    /// first attempt to reach the gate becomes the probe.
    fn open_period_over(&self) {
        let released = {
            let mut state = self.state.lock();
            match state.phase {
                Phase::Open { until } if until <= Instant::now() => state.held.pop_front(),
                // Re-opened since (a later timer handles it), or already half-open or closed.
                _ => None,
            }
        };
        self.changed.notify_waiters();
        requeue(released);
    }

    /// Shutdown: the held jobs (still queued), for the dead letters; the timers stop.
    pub(crate) fn drain(&self) -> Vec<Job> {
        self.stop.cancel();
        let mut state = self.state.lock();
        state.shut = true;
        state.held.drain(..).collect()
    }
}

/// Held jobs go back into their pool's queue with the slot they kept.
fn requeue(jobs: impl IntoIterator<Item = Job>) {
    for job in jobs {
        job.handler.pool.clone().enqueue(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_that_say_something_about_the_partner_count() {
        let ok: Result<(), HandlerError> = Ok(());
        assert_eq!(Verdict::of(&ok), Verdict::Success);
        for failure in [
            HandlerError::msg("503"),
            HandlerError::panicked("boom".to_owned()),
            HandlerError::timed_out(std::time::Duration::from_secs(1)),
        ] {
            assert_eq!(Verdict::of::<()>(&Err(failure)), Verdict::Failure);
        }
        for neutral in [
            HandlerError::permanent(HandlerError::msg("400 bad request")),
            HandlerError::with_kind(HandlerErrorKind::Extraction, "no state"),
            HandlerError::with_kind(HandlerErrorKind::Duplicate, "seen"),
            HandlerError::malformed("not JSON".to_owned()),
        ] {
            assert_eq!(Verdict::of::<()>(&Err(neutral)), Verdict::Neutral);
        }
    }
}
