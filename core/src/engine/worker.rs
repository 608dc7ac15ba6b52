//! Running one job: attempts with rate limit, timeout and panic capture, retries with backoff, and the
//! failure disposition. Also the worker loop that pulls jobs from a pool.

use crate::contract::handler::AnyReply;
use crate::contract::invocation::Invocation;
use crate::engine::breaker::{Admit, Pass, Verdict};
use crate::engine::counters::Ending;
use crate::engine::dedupe::{Claim, DedupeWindow};
use crate::engine::lanes::Parked;
use crate::engine::observe::{AfterFailure, AttemptOutcome, Hooks};
use crate::engine::pool::Pool;
use crate::engine::publish::{Attempts, Job};
use crate::engine::runtime::HandlerRuntime;
use crate::engine::start_within;
use crate::model::dead_letter::{DeadLetter, DeadLetterId, DeadLetterReason, FailureKind};
use crate::model::envelope::Envelope;
use crate::model::error::{Disposition, HandlerError, HandlerErrorKind, HandlerFailure};
use crate::model::options::OnFailure;
use crate::model::outcome::HandlerStatus;
use crate::model::retry;
use crate::ports::trace;
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;
use tracing::Instrument;

/// A pool worker: takes jobs until the queue closes.
// A block rather than an `async fn`: the argument of an `async fn` is stored twice in its
// future (as the argument and as the local it is moved into), and this future is part of every
// worker's task for as long as the worker lives (docs/BENCHMARKS.md, W2).
#[allow(clippy::manual_async_fn)]
pub(crate) fn run_worker(
    pool: Arc<Pool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    async move {
        loop {
            // The synchronous first look also keeps rustc from copying the job's future twice
            // per job (callgrind: ~400 instructions of `memcpy` per job when the loop only
            // awaited).
            let job = match pool.try_take() {
                Some(job) => job,
                None => match pool.take().await {
                    Some(job) => job,
                    None => return,
                },
            };
            if pool.stopping.load(Ordering::Acquire) {
                pool.casualties.lock().push(Casualty::queued(job));
                continue;
            }
            if let Some(run) = begin(job) {
                run.await;
            }
        }
    }
}

/// Starts a job a worker took ([`start`]: `None` if its breaker holds it) and makes the one
/// future the worker awaits for it: a single `.await` in the worker, since each value live
/// across two of them takes room of its own in the worker's future.
#[inline]
fn begin(job: Job) -> Option<OnWorker> {
    let (job, pass) = start(job)?;
    Some(if plain(&job, pass) {
        OnWorker::plain(job)
    } else {
        // Boxed: its future (~600 B) would otherwise be part of every worker's task, which
        // lives as long as the worker (docs/BENCHMARKS.md, W2).
        OnWorker {
            stage: Stage::Rest(Box::pin(run_started(job, pass, Runner::Worker))),
            flight: PlainFlight { job: None },
        }
    })
}

/// Whether a started job needs none of the machinery around a handler call: no dedupe, circuit
/// breaker, rate limiter, timeout, SLA, key to pass on, attempt observer or span. Such a job runs
/// its first attempt in an [`OnWorker`]; only a failure goes on to [`execute`].
#[inline]
fn plain(job: &Job, pass: Option<Pass>) -> bool {
    let handler = &job.handler;
    pass.is_none()
        && handler.breaker.is_none()
        && handler.dedupe.is_none()
        && handler.rate.is_none()
        && handler.desc.options.timeout.is_none()
        && handler.slas.is_empty()
        && (handler.lanes.is_none() || job.dispatch.envelope.key.is_none())
        && !handler.counters.hooks().watching()
        && !tracing::span_enabled!(tracing::Level::INFO)
}

/// Holds a [`plain`] job during its first attempt: the job alone (its attempt's number follows
/// from it), since this guard is part of every busy worker's task (docs/BENCHMARKS.md, W2). Dropped
/// armed (the worker aborted at the shutdown deadline), it hands the job to an [`InFlight`]
/// guard, whose drop makes it a casualty as for any other job.
struct PlainFlight {
    job: Option<Job>,
}

/// The number of a [`plain`] job's attempt, as `execute` counts: a relay's attempt `n` is `n`,
/// any other job's first is 1.
fn plain_attempt(job: &Job) -> u32 {
    match job.attempts {
        Attempts::Policy => 1,
        Attempts::Once(attempt) => attempt.max(1),
    }
}

impl Drop for PlainFlight {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            let attempts = plain_attempt(&job);
            drop(InFlight {
                job: Some(job),
                progress: Progress {
                    attempts,
                    errors: None,
                },
                claim: None,
                attempt_started: None,
                probing: false,
            });
        }
    }
}

/// A job on a worker: the first attempt of a [`plain`] job, polled by hand, or the boxed
/// [`run_started`] of any other.
///
/// Polled by hand rather than written as an `async fn`: a generator keeps room for the result
/// of each `.await` (here ~100 B) beside what it holds, and this future is part of every busy
/// worker's task (docs/BENCHMARKS.md, W2). A plain job's stage holds the handler's future and
/// its guard the job. A success settles here; a failure, panic included, goes on to [`execute`]
/// for the retry decision and what follows, as if its first attempt had run there.
struct OnWorker {
    // Declared first, so dropped first: the handler's future goes before its job's guard
    // records the job, as in `execute`.
    stage: Stage,
    flight: PlainFlight,
}

enum Stage {
    /// The handler's call (or a route's publish).
    Call(futures_util::future::BoxFuture<'static, Result<AnyReply, HandlerError>>),
    /// The attempt failed: the rest of the job, in [`execute`].
    Rest(futures_util::future::BoxFuture<'static, ()>),
    Done,
}

impl OnWorker {
    fn plain(job: Job) -> Self {
        let attempt = plain_attempt(&job);
        start_within::check(&job.handler, &job.dispatch, attempt);
        let call = match &job.handler.forward {
            None => (job.handler.desc.call)(invocation(&job, attempt)),
            Some(forward) => forward.publish(&job.dispatch.envelope, &job.dispatch.payload),
        };
        OnWorker {
            stage: Stage::Call(call),
            flight: PlainFlight { job: Some(job) },
        }
    }
}

impl std::future::Future for OnWorker {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            match &mut this.stage {
                Stage::Call(call) => {
                    // Panics caught as `call_future` does.
                    let result =
                        match std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx)))
                        {
                            Ok(Poll::Pending) => return Poll::Pending,
                            Ok(Poll::Ready(result)) => result,
                            Err(panic) => {
                                Err(HandlerError::panicked(panic_message(panic.as_ref())))
                            }
                        };
                    let job = this
                        .flight
                        .job
                        .take()
                        .expect("armed until the attempt ends");
                    let attempt = plain_attempt(&job);
                    match result {
                        Ok(reply) => {
                            this.stage = Stage::Done;
                            job.handler.counters.finished(Ending::Succeeded);
                            job.settle(HandlerStatus::Succeeded { attempts: attempt }, Some(reply));
                            return Poll::Ready(());
                        }
                        // The job passes to `execute`'s guard before anything can cut it off.
                        Err(error) => {
                            this.stage = Stage::Rest(Box::pin(execute(
                                job,
                                None,
                                Some((attempt, Err(error))),
                            )))
                        }
                    }
                }
                Stage::Rest(rest) => {
                    let done = rest.as_mut().poll(cx);
                    if done.is_ready() {
                        this.stage = Stage::Done;
                    }
                    return done;
                }
                Stage::Done => return Poll::Ready(()),
            }
        }
    }
}

/// A queued job starts on a worker: it gives its slot back and counts as started, unless its
/// handler's open circuit breaker holds it (still queued, keeping its slot). Returns the job and
/// the breaker's pass for its first attempt.
fn start(job: Job) -> Option<(Job, Option<Pass>)> {
    let (job, pass) = if job.handler.breaker.is_none() {
        // No clone of the handler's `Arc` here: a reference count shared by the publisher and
        // every worker is a contended cache line per job.
        (job, None)
    } else {
        let handler = job.handler.clone();
        let breaker = handler.breaker.as_ref().expect("checked above");
        match breaker.admit_or_hold(job, &handler.counters) {
            Admit::Run(job, pass) => (job, Some(pass)),
            Admit::Held => return None,
        }
    };
    job.handler.pool.release();
    job.handler.counters.started();
    Some((job, pass))
}

/// A job its publisher runs on its own task (`CallerRuns`).
#[derive(Debug)]
pub(crate) enum CallerJob {
    /// Ready to run.
    Run(Job),
    /// Parked behind its key (`ordered`): it arrives here in its turn.
    Wait(oneshot::Receiver<Job>),
}

/// The `CallerRuns` jobs of one publish, run one after another on the publisher's task.
///
/// Cancel-safe: if the publisher drops its `publish` future, the job running at that moment is
/// dead-lettered by its [`InFlight`] guard, and every job not started yet is dead-lettered here
/// (reason `cancelled`), each passing its key on, so none vanishes and no key stays blocked.
#[derive(Debug, Default)]
pub(crate) struct CallerJobs {
    jobs: VecDeque<CallerJob>,
}

impl CallerJobs {
    pub(crate) fn push(&mut self, job: CallerJob) {
        self.jobs.push_back(job);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Runs every job, in order.
    pub(crate) async fn run(mut self) {
        while let Some(next) = self.jobs.front_mut() {
            let job = match next {
                CallerJob::Run(_) => match self.jobs.pop_front() {
                    Some(CallerJob::Run(job)) => job,
                    _ => unreachable!("the front was a ready job"),
                },
                CallerJob::Wait(turn) => {
                    // The turn comes when the job before it with the same key has ended. Left in
                    // the list while waiting, so a cancelled wait is cleaned up by `Drop`.
                    let turn = turn.await;
                    self.jobs.pop_front();
                    match turn {
                        Ok(job) => job,
                        // Shutdown drained the lane and dead-lettered the job.
                        Err(_) => continue,
                    }
                }
            };
            run_started(job, None, Runner::Caller).await;
        }
    }
}

impl Drop for CallerJobs {
    fn drop(&mut self) {
        for next in self.jobs.drain(..) {
            let job = match next {
                CallerJob::Run(job) => job,
                CallerJob::Wait(mut turn) => {
                    // No turn can arrive after `close`; one that arrived before is taken here.
                    turn.close();
                    match turn.try_recv() {
                        Ok(job) => job,
                        // Still parked: the lane records it when its turn finds nobody waiting.
                        Err(_) => continue,
                    }
                }
            };
            cancelled(job, Progress::default(), false, false);
        }
    }
}

/// Where a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runner {
    /// A pool worker: it runs the next job of an `ordered` key itself.
    Worker,
    /// The publisher's task (`CallerRuns`): it runs only its own jobs and hands the key on.
    Caller,
}

/// Runs a started job, then (on a worker) the jobs parked behind its key. There is no `.await`
/// between taking the next parked job and handing it to `execute`, so an abort at shutdown never
/// loses it.
async fn run_started(job: Job, pass: Option<Pass>, runner: Runner) {
    // Reassigned in place rather than taken out of an `Option` each turn: every running job's
    // future carries these locals (docs/BENCHMARKS.md, W2), and only an ordered job's handler
    // is cloned to pass its key on.
    let (mut job, mut pass) = (job, pass);
    loop {
        let lane = match (&job.handler.lanes, &job.dispatch.envelope.key) {
            (Some(_), Some(key)) => Some((job.handler.clone(), key.clone())),
            _ => None,
        };
        execute(job, pass, None).await;
        let Some((handler, key)) = lane else { return };
        match pass_key(&handler, &key, runner == Runner::Worker) {
            Some((next, next_pass)) => (job, pass) = (next, next_pass),
            None => return,
        }
    }
}

/// The job holding `key` ended: the key passes to the next job parked behind it. A queued job is
/// returned for the current worker to run when `on_worker` (unless its handler's circuit breaker
/// holds it), and otherwise goes into its pool's queue with the slot it holds; a delayed one
/// waits for its time first, holding the key. A caller job is handed to its waiting publisher, or
/// dead-lettered (reason `cancelled`) if that publisher gave up, and the key passes on again.
pub(crate) fn pass_key(
    handler: &HandlerRuntime,
    key: &str,
    on_worker: bool,
) -> Option<(Job, Option<Pass>)> {
    let lanes = handler.lanes.as_ref()?;
    loop {
        match lanes.next(key)? {
            Parked::Queued(job) if job.due().is_some() => {
                crate::engine::publish::queue_when_due(job);
                return None;
            }
            Parked::Queued(job) if on_worker => return start(job),
            Parked::Queued(job) => {
                job.handler.pool.clone().enqueue(job);
                return None;
            }
            Parked::Caller { job, turn } => match turn.send(job) {
                Ok(()) => return None,
                Err(job) => {
                    // Holds the key now; recording it must not pass the key again from inside.
                    cancelled(job, Progress::default(), false, true);
                }
            },
        }
    }
}

/// A `CallerRuns` job whose publisher gave up (dropped its `publish` future) before or while it ran:
/// dead-lettered with reason `cancelled`, and its dedupe claim released. `key_passed_by_caller` is
/// true when the caller of this function passes the job's key on itself.
fn cancelled(job: Job, progress: Progress, started: bool, key_passed_by_caller: bool) {
    let handler = job.handler.clone();
    let error = HandlerError::with_kind(
        HandlerErrorKind::Cancelled,
        if started {
            "cancelled: the publisher dropped its `publish` future while the handler ran on its task (CallerRuns)"
        } else {
            "cancelled: the publisher dropped its `publish` future before the handler could run on its task (CallerRuns)"
        },
    );
    tracing::error!(handler = handler.desc.name, message_id = %job.dispatch.envelope.id, "{error}; message dead-lettered (reason `cancelled`)");
    let mut entry = dead_letter_entry(&job, DeadLetterReason::Cancelled, &progress, Some(&error));
    if !started {
        entry.failure = None;
    }
    let herald = job.dispatch.herald.clone();
    let key = handler
        .lanes
        .as_ref()
        .and(job.dispatch.envelope.key.clone());
    // Until the entry is stored the job stays in flight in the ledger; then it is settled.
    herald.inner.background.spawn(async move {
        let disposition = match job.dispatch.herald.inner.store_dead_letter(entry).await {
            Ok(_) => Disposition::DeadLettered,
            // Logged in full by the store path.
            Err(_) => Disposition::Logged,
        };
        job.handler
            .counters
            .finished(if disposition == Disposition::DeadLettered {
                Ending::DeadLettered
            } else {
                Ending::Ignored
            });
        let failure = HandlerFailure {
            handler: job.handler.desc.name,
            message_id: job.dispatch.envelope.id,
            attempts: progress.attempts,
            error,
            disposition,
        };
        job.settle(HandlerStatus::Failed(failure), None);
    });
    if let (false, Some(key)) = (key_passed_by_caller, key) {
        if let Some(next) = pass_key(&handler, &key, false) {
            unreachable!("pass_key off a worker returns no job, got {next:?}");
        }
    }
}

/// Attempts and errors of one job so far.
#[derive(Debug, Default, Clone)]
pub(crate) struct Progress {
    pub(crate) attempts: u32,
    /// Boxed: allocated at the first failure only, and every running job's future carries this
    /// struct (docs/BENCHMARKS.md, W2: 88 bytes inline, 8 boxed).
    errors: Option<Box<Errors>>,
}

/// The first and the last error of a job, with when they happened.
#[derive(Debug, Clone)]
struct Errors {
    first: (String, DateTime<Utc>),
    last: (String, DateTime<Utc>),
}

impl Progress {
    fn record(&mut self, error: &HandlerError) {
        let entry = (error.to_string(), Utc::now());
        match &mut self.errors {
            None => {
                self.errors = Some(Box::new(Errors {
                    first: entry.clone(),
                    last: entry,
                }))
            }
            Some(errors) => errors.last = entry,
        }
    }

    fn first_error(&self) -> Option<&(String, DateTime<Utc>)> {
        self.errors.as_ref().map(|errors| &errors.first)
    }

    fn last_error(&self) -> Option<&(String, DateTime<Utc>)> {
        self.errors.as_ref().map(|errors| &errors.last)
    }
}

/// A job whose worker stopped at the shutdown deadline: still queued (a delayed one, or one held
/// by a circuit breaker, included), or cut off while running.
#[derive(Debug)]
pub(crate) struct Casualty {
    pub(crate) job: Job,
    pub(crate) started: bool,
    pub(crate) progress: Progress,
    /// A `CallerRuns` job parked behind its key, its publisher waiting for its turn.
    pub(crate) on_caller: bool,
}

impl Casualty {
    pub(crate) fn queued(job: Job) -> Self {
        Casualty {
            job,
            started: false,
            progress: Progress::default(),
            on_caller: false,
        }
    }
}

/// Holds a running job. If the worker is aborted (shutdown deadline), the drop hands the job to its
/// pool's casualties, which `shutdown` dead-letters, instead of losing it. If a `CallerRuns`
/// publisher drops its `publish` future, the drop dead-letters the job (reason `cancelled`). Either
/// way the job's dedupe claim is released, so a later re-send of its id is not taken for a duplicate,
/// and an attempt cut off mid-call is reported to the observers as interrupted.
struct InFlight {
    job: Option<Job>,
    progress: Progress,
    /// The dedupe id this job has claimed, released when it ends however it ends.
    claim: Option<String>,
    /// The attempt running now and when it started, kept only when observers watch attempts.
    attempt_started: Option<(u32, Instant)>,
    /// The attempt running now is its circuit breaker's probe: if the job is cut off, the next
    /// attempt probes instead.
    probing: bool,
}

impl InFlight {
    fn job(&self) -> &Job {
        self.job.as_ref().expect("job is present until disarmed")
    }

    /// Counts the next attempt and returns its number.
    #[inline]
    fn next_attempt(&mut self) -> u32 {
        self.progress.attempts += 1;
        self.progress.attempts
    }

    /// The handler is about to be called: observers see the attempt start.
    #[inline]
    fn attempt_starts(&mut self, hooks: &Hooks, attempt: u32) {
        hooks.attempt_start(&self.job().dispatch.envelope, attempt);
        self.attempt_started = Some((attempt, Instant::now()));
    }

    /// The call returned and the retry decision is made: observers see the attempt end.
    #[inline]
    fn attempt_ends(&mut self, hooks: &Hooks, outcome: AttemptOutcome<'_>) {
        if let Some((attempt, started)) = self.attempt_started.take() {
            hooks.attempt_end(
                &self.job().dispatch.envelope,
                attempt,
                outcome,
                started.elapsed(),
            );
        }
    }

    /// Ends the dedupe claim: a completed id is remembered, a failed one may run again.
    fn release_claim(&mut self, completed: bool) {
        if let Some(id) = self.claim.take() {
            if let Some(window) = &self.job().handler.dedupe {
                window.release(&id, completed);
            }
        }
    }

    fn disarm(&mut self) -> Job {
        self.job.take().expect("disarmed once")
    }

    /// Reports the attempt's result to the handler's circuit breaker, if it has one.
    #[inline]
    fn breaker_result(&mut self, pass: Option<Pass>, result: &Result<AnyReply, HandlerError>) {
        if let Some(pass) = pass {
            let handler = &self.job().handler;
            if let Some(breaker) = &handler.breaker {
                breaker.record(pass, Verdict::of(result), &handler.counters);
            }
            self.probing = false;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.job.is_none() {
            return;
        }
        if self.probing {
            if let Some(breaker) = &self.job().handler.breaker {
                breaker.abandon_probe();
            }
        }
        self.release_claim(false);
        let Some(job) = self.job.take() else { return };
        if let Some((attempt, started)) = self.attempt_started.take() {
            job.handler.counters.hooks().attempt_end(
                &job.dispatch.envelope,
                attempt,
                AttemptOutcome::Interrupted,
                started.elapsed(),
            );
        }
        let progress = std::mem::take(&mut self.progress);
        let pool = job.handler.pool.clone();
        if pool.stopping.load(Ordering::Acquire) {
            // Aborted at the shutdown deadline: `shutdown` dead-letters the casualties.
            pool.casualties.lock().push(Casualty {
                job,
                started: true,
                progress,
                on_caller: false,
            });
            return;
        }
        // A `CallerRuns` job whose publisher dropped the publish future mid-run.
        cancelled(job, progress, true, false);
    }
}

/// Runs one job. Its steps, each a function below:
///
/// 1. [`claim_dedupe`] (`dedupe` handlers): claim the message's id; a completed id ends the job as
///    a duplicate, an id running elsewhere is waited for.
///
/// Then, for each attempt:
///
/// 2. The circuit breaker, if the handler has one: the first attempt of a job a worker started
///    was let through by it already; any other attempt waits in place while it is open (in
///    flight, no attempt spent). Then [`wait_for_rate`]: the handler's rate limiter.
/// 3. [`call_future`]: the handler under its timeout, with panics caught; observers see the attempt start
///    before and end after the retry decision. A first attempt starting later than the handler's
///    `start_within` is logged and counted first (`start_within.rs`).
/// 4. [`decide`]: the retry decision ([`Next`]).
/// 5. The disposition: [`succeed`] (after [`record_completion`] for a handler SLAs expect),
///    [`skip_duplicate`], [`retry_later`] (back to step 2),
///    [`defer`] to the relay, or [`dispose`] of the failure (dead-letter, log or ignore).
///
/// The [`InFlight`] guard holds the job throughout, so a worker aborted or a publisher gone at any
/// `.await` still ends the job in a recorded state.
///
/// `done` is the number and result of an attempt an [`OnWorker`] made already (a [`plain`] job,
/// which needs none of steps 1 and 2): the job goes on from step 4 with it.
async fn execute(
    job: Job,
    first_pass: Option<Pass>,
    done: Option<(u32, Result<AnyReply, HandlerError>)>,
) {
    let handler = job.handler.clone();
    let hooks = handler.counters.hooks();
    // Built in place: a constructor returning the guard by value costs a `memcpy` per job.
    let mut guard = InFlight {
        progress: Progress::default(),
        claim: None,
        attempt_started: None,
        probing: first_pass == Some(Pass::Probe),
        job: Some(job),
    };
    let mut first_pass = first_pass;
    if let Attempts::Once(attempt) = guard.job().attempts {
        guard.progress.attempts = attempt.saturating_sub(1);
    }
    if let Some(window) = &handler.dedupe {
        // The claim may wait for another run of this id, which may itself wait for the breaker:
        // the breaker is asked again after the claim, and a probe given now is handed on.
        if first_pass.take() == Some(Pass::Probe) {
            guard.probing = false;
            if let Some(breaker) = &handler.breaker {
                breaker.abandon_probe();
            }
        }
        if claim_dedupe(window, &mut guard).await == Claimed::Duplicate {
            return;
        }
    }
    let mut delays = None;
    let mut done = done;
    loop {
        let (attempt, pass, result) = match done.take() {
            Some((attempt, result)) => {
                guard.progress.attempts = attempt;
                (attempt, None, result)
            }
            None => {
                let pass = match &handler.breaker {
                    None => None,
                    Some(breaker) => Some(match first_pass.take() {
                        Some(pass) => pass,
                        None => Box::pin(breaker.wait_in_place(&handler.counters)).await,
                    }),
                };
                guard.probing = pass == Some(Pass::Probe);
                let attempt = guard.next_attempt();
                if handler.rate.is_some() {
                    Box::pin(wait_for_rate(&handler)).await;
                }
                start_within::check(&handler, &guard.job().dispatch, attempt);
                if hooks.watching() {
                    guard.attempt_starts(hooks, attempt);
                }
                // The attempt's future is built before the one `.await`, so that no span, invocation or
                // other temporary is held beside it in this (every running job's) future.
                let (attempt_future, traced) =
                    match attempt_span(&handler, &guard.job().dispatch.envelope, attempt) {
                        None => match &handler.forward {
                            None => ((handler.desc.call)(invocation(guard.job(), attempt)), false),
                            Some(forward) => {
                                let dispatch = &guard.job().dispatch;
                                (
                                    forward.publish(&dispatch.envelope, &dispatch.payload),
                                    false,
                                )
                            }
                        },
                        Some(span) => (traced(guard.job(), attempt, span), true),
                    };
                let result = if traced {
                    // Timeout and panic capture are inside, so that the span records them.
                    attempt_future.await
                } else {
                    call_future(attempt_future, handler.desc.options.timeout).await
                };
                (attempt, pass, result)
            }
        };
        guard.breaker_result(pass, &result);
        let next = decide(&mut guard, result, attempt, &mut delays);
        if hooks.watching() {
            guard.attempt_ends(hooks, next.outcome());
        }
        match next {
            // By reference: moving the guard costs a `memcpy` per job; it is disarmed inside.
            Next::Succeed(reply) => {
                if !handler.slas.is_empty() {
                    Box::pin(record_completion(&guard)).await;
                }
                return succeed(&mut guard, attempt, reply);
            }
            Next::Duplicate(error) => return skip_duplicate(&mut guard, &error),
            Next::Retry { error, delay } => {
                Box::pin(retry_later(&guard, attempt, &error, delay)).await
            }
            Next::Defer(error) => return defer(&mut guard, attempt, error),
            Next::Dispose(error) => {
                guard.release_claim(false);
                return Box::pin(dispose(guard, error)).await;
            }
        }
    }
}

/// The span of one attempt, after the OpenTelemetry messaging conventions: a handler's attempt
/// is a `process` span (kind consumer), a route's is a `send` span (kind producer) to its
/// destination. Its parent is the trace context the message carries, when a propagator is
/// installed ([`crate::ports::trace`]).
///
/// `None` unless a subscriber wants it, checked with `span_enabled!` (a cached atomic load):
/// otherwise the span macro's fallback to the `log` crate (`tracing`'s `log` feature, which sqlx
/// turns on) would still build and record a span per attempt, and a span held across the
/// attempt's `.await` would grow every job's future.
#[inline]
fn attempt_span(
    handler: &HandlerRuntime,
    envelope: &Envelope,
    attempt: u32,
) -> Option<tracing::Span> {
    if !tracing::span_enabled!(tracing::Level::INFO) {
        return None;
    }
    Some(attempt_span_enabled(handler, envelope, attempt))
}

#[cold]
#[inline(never)]
fn attempt_span_enabled(
    handler: &HandlerRuntime,
    envelope: &Envelope,
    attempt: u32,
) -> tracing::Span {
    let span = match &handler.forward {
        None => tracing::info_span!(
            "herald.process",
            otel.name = %format_args!("process {}", envelope.name),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "herald",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = %envelope.name,
            messaging.message.id = %envelope.id,
            messaging.message.conversation_id = %envelope.correlation_id(),
            herald.handler = handler.desc.name,
            herald.attempt = attempt,
            error.type = tracing::field::Empty,
        ),
        Some(forward) => {
            tracing::info_span!(
                "herald.send",
                otel.name = %format_args!("send {}", forward.destination()),
                otel.kind = "producer",
                otel.status_code = tracing::field::Empty,
                messaging.system = "herald",
                messaging.operation.type = "send",
                messaging.operation.name = "send",
                messaging.destination.name = %forward.destination(),
                messaging.message.id = %envelope.id,
                messaging.message.conversation_id = %envelope.correlation_id(),
                herald.handler = handler.desc.name,
                herald.attempt = attempt,
                error.type = tracing::field::Empty,
            )
        }
    };
    trace::continue_trace(&span, &envelope.headers);
    span
}

/// Step 3 inside the attempt's span (boxed: only traced attempts pay for it, and the job's future
/// does not grow). A route publishes inside the span, so the copy it sends carries the `send`
/// span as the trace parent of the consumer's. A failure marks the span as an error, with the
/// failure kind as `error.type`.
#[cold]
#[inline(never)]
fn traced(
    job: &Job,
    attempt: u32,
    span: tracing::Span,
) -> futures_util::future::BoxFuture<'static, Result<AnyReply, HandlerError>> {
    let handler = &job.handler;
    let attempt = match &handler.forward {
        None => (handler.desc.call)(invocation(job, attempt)),
        Some(forward) => {
            let dispatch = &job.dispatch;
            span.in_scope(|| forward.publish(&dispatch.envelope, &dispatch.payload))
        }
    };
    let attempt = call_future(attempt, handler.desc.options.timeout);
    Box::pin(async move {
        let result = attempt.instrument(span.clone()).await;
        if let Err(error) = &result {
            if error.kind() != HandlerErrorKind::Duplicate {
                span.record("otel.status_code", "error");
                span.record("error.type", FailureKind::of(error).as_str());
            }
        }
        result
    })
}

/// What [`claim_dedupe`] decided.
#[derive(Debug, PartialEq, Eq)]
enum Claimed {
    /// The id is this job's to run.
    Run,
    /// The id has completed: the job was settled as a duplicate.
    Duplicate,
}

/// Step 1: claims the message's dedupe id. Another job with this id running now decides: its
/// success makes this one a duplicate, its failure lets this one run. A duplicate is only ever
/// reported for an id that has completed.
async fn claim_dedupe(window: &DedupeWindow, guard: &mut InFlight) -> Claimed {
    let id = guard.job().dispatch.envelope.dedupe_id();
    loop {
        match window.claim(&id) {
            Claim::Run => break,
            Claim::Busy(released) => released.await,
            Claim::Completed => {
                let job = guard.disarm();
                job.handler.counters.finished(Ending::Deduplicated);
                tracing::debug!(handler = job.handler.desc.name, message_id = %job.dispatch.envelope.id, dedupe_id = %id, "duplicate skipped");
                job.settle(HandlerStatus::Deduplicated, None);
                return Claimed::Duplicate;
            }
        }
    }
    guard.claim = Some(id);
    Claimed::Run
}

/// Step 2: waits for the handler's rate limiter, if it has one.
async fn wait_for_rate(handler: &HandlerRuntime) {
    if let Some(rate) = &handler.rate {
        rate.until_ready().await;
    }
}

/// What one attempt hands to the handler. Built here only.
#[inline]
fn invocation(job: &Job, attempt: u32) -> Invocation {
    Invocation::new(job.dispatch.clone(), attempt, job.handler.desc.name)
}

/// What follows an attempt.
enum Next {
    /// It succeeded.
    Succeed(AnyReply),
    /// The handler reported the message as already handled.
    Duplicate(HandlerError),
    /// It failed; another attempt follows after `delay`.
    Retry {
        error: HandlerError,
        delay: std::time::Duration,
    },
    /// A relay's single attempt failed before the last one: handed back to the relay.
    Defer(HandlerError),
    /// It failed and no attempt follows: the handler's `on_failure` route.
    Dispose(HandlerError),
}

impl Next {
    fn outcome(&self) -> AttemptOutcome<'_> {
        match self {
            Next::Succeed(_) => AttemptOutcome::Succeeded,
            Next::Duplicate(_) => AttemptOutcome::Duplicate,
            Next::Retry { error, delay } => AttemptOutcome::Failed {
                error,
                then: AfterFailure::Retry { delay: *delay },
            },
            Next::Defer(error) => AttemptOutcome::Failed {
                error,
                then: AfterFailure::Deferred,
            },
            Next::Dispose(error) => AttemptOutcome::Failed {
                error,
                then: AfterFailure::Final,
            },
        }
    }
}

/// Step 4, the retry decision: a failure is counted and recorded, then retried after the policy's
/// next delay unless the error is permanent or the attempts are exhausted. A relay's single attempt
/// (`Attempts::Once`) is handed back to the relay before the last attempt.
#[inline]
fn decide(
    guard: &mut InFlight,
    result: Result<AnyReply, HandlerError>,
    attempt: u32,
    delays: &mut Option<retry::Delays>,
) -> Next {
    let error = match result {
        Ok(reply) => return Next::Succeed(reply),
        Err(error) if error.kind() == HandlerErrorKind::Duplicate => return Next::Duplicate(error),
        Err(error) => error,
    };
    let job = guard.job();
    let handler = &job.handler;
    let options = &handler.desc.options;
    let mode = job.attempts;
    handler.counters.failed_attempt();
    guard.progress.record(&error);
    let delay = match mode {
        _ if error.is_permanent() => None,
        Attempts::Policy => delays
            .get_or_insert_with(|| retry::delays(&options.retry))
            .next(),
        Attempts::Once(_) if attempt < options.retry.max_attempts => return Next::Defer(error),
        Attempts::Once(_) => None,
    };
    match delay {
        Some(delay) => Next::Retry { error, delay },
        None => Next::Dispose(error),
    }
}

/// Step 5 on success: the id completes, the job settles with the reply.
#[inline]
fn succeed(guard: &mut InFlight, attempt: u32, reply: AnyReply) {
    guard.release_claim(true);
    let job = guard.disarm();
    job.handler.counters.finished(Ending::Succeeded);
    job.settle(HandlerStatus::Succeeded { attempts: attempt }, Some(reply));
}

/// Step 5 on success of a handler that SLAs expect: the fulfilment is stored before the job
/// settles (a relay then finishes its row only once the fulfilment is stored). The guard stays
/// armed meanwhile.
#[cold]
#[inline(never)]
async fn record_completion(guard: &InFlight) {
    let job = guard.job();
    let herald = &job.dispatch.herald;
    if let Some(slas) = &herald.inner.slas {
        slas.record_completion(
            &herald.inner.background,
            &job.handler.slas,
            &job.dispatch.envelope,
            &job.dispatch.payload,
        )
        .await;
    }
}

/// Step 5 when the handler said the message was already handled: the id completes, the job is a
/// duplicate.
fn skip_duplicate(guard: &mut InFlight, reason: &HandlerError) {
    guard.release_claim(true);
    let job = guard.disarm();
    job.handler.counters.finished(Ending::Deduplicated);
    tracing::debug!(handler = job.handler.desc.name, message_id = %job.dispatch.envelope.id, reason = %reason, "duplicate skipped");
    job.settle(HandlerStatus::Deduplicated, None);
}

/// Step 5 before a retry: logs the failure and sleeps for the backoff delay.
async fn retry_later(
    guard: &InFlight,
    attempt: u32,
    error: &HandlerError,
    delay: std::time::Duration,
) {
    let job = guard.job();
    tracing::warn!(
        handler = job.handler.desc.name,
        message_id = %job.dispatch.envelope.id,
        attempt,
        error = %error,
        retry_in = ?delay,
        "handler attempt failed; retrying"
    );
    job.handler.counters.retried();
    tokio::time::sleep(delay).await;
}

/// Step 5 for a relay's single attempt that failed before the last one: the relay keeps the message
/// and schedules the next attempt.
fn defer(guard: &mut InFlight, attempt: u32, error: HandlerError) {
    guard.release_claim(false);
    let job = guard.disarm();
    job.handler.counters.finished(Ending::Deferred);
    job.settle(HandlerStatus::Deferred { attempt, error }, None);
}

/// Step 3: an attempt's future (a handler's call, a route's publish) under the handler's timeout,
/// panics caught.
async fn call_future(
    attempt: futures_util::future::BoxFuture<'static, Result<AnyReply, HandlerError>>,
    timeout: Option<std::time::Duration>,
) -> Result<AnyReply, HandlerError> {
    let attempt = AssertUnwindSafe(attempt).catch_unwind();
    let caught = match timeout {
        Some(limit) => match tokio::time::timeout(limit, attempt).await {
            Ok(caught) => caught,
            Err(_) => return Err(HandlerError::timed_out(limit)),
        },
        None => attempt.await,
    };
    caught.unwrap_or_else(|panic| Err(HandlerError::panicked(panic_message(panic.as_ref()))))
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Step 5 after the last attempt failed (the dedupe claim already released): dead-letter, log or
/// ignore, as the handler's `on_failure` says.
async fn dispose(mut guard: InFlight, error: HandlerError) {
    let job = guard.job();
    let handler = job.handler.clone();
    let envelope = &job.dispatch.envelope;
    let attempts = guard.progress.attempts;
    let disposition = match handler.desc.options.on_failure {
        OnFailure::DeadLetter => {
            let reason = if error.kind() == HandlerErrorKind::Malformed {
                DeadLetterReason::Malformed
            } else {
                DeadLetterReason::Failed
            };
            tracing::error!(
                handler = handler.desc.name,
                message_id = %envelope.id,
                attempts,
                error = %error,
                "handler failed on its last attempt; message dead-lettered"
            );
            let entry = dead_letter_entry(job, reason, &guard.progress, Some(&error));
            // Keep the guard armed until the entry is stored: an abort mid-write still dead-letters it.
            match job.dispatch.herald.inner.store_dead_letter(entry).await {
                Ok(_) => Disposition::DeadLettered,
                Err(store_error) => {
                    if let Attempts::Once(attempt) = job.attempts {
                        // A relay still holds the message: it keeps its row pending and tries
                        // again, rather than mark it failed with no dead letter to re-drive.
                        let error = HandlerError::with_kind(
                            error.kind(),
                            format!("{error} (and the dead-letter store refused it: {store_error}; the message stays stored and is tried again)"),
                        );
                        let job = guard.disarm();
                        handler.counters.finished(Ending::Deferred);
                        job.settle(HandlerStatus::Deferred { attempt, error }, None);
                        return;
                    }
                    // In memory: the entry was logged in full at error level; say so.
                    Disposition::Logged
                }
            }
        }
        OnFailure::Log => {
            tracing::error!(
                handler = handler.desc.name,
                message_id = %envelope.id,
                attempts,
                error = %error,
                envelope = %serde_json::to_string(envelope).unwrap_or_default(),
                payload = %job.dispatch.payload.to_json(),
                "handler failed on its last attempt; logged for processing by hand (on_failure = log)"
            );
            Disposition::Logged
        }
        OnFailure::Ignore => {
            tracing::warn!(
                handler = handler.desc.name,
                message_id = %envelope.id,
                attempts,
                error = %error,
                "handler failed on its last attempt; ignored (on_failure = ignore)"
            );
            Disposition::Ignored
        }
    };
    let job = guard.disarm();
    let ending = if disposition == Disposition::DeadLettered {
        Ending::DeadLettered
    } else {
        Ending::Ignored
    };
    handler.counters.finished(ending);
    let failure = HandlerFailure {
        handler: handler.desc.name,
        message_id: job.dispatch.envelope.id,
        attempts,
        error,
        disposition,
    };
    job.settle(HandlerStatus::Failed(failure), None);
}

/// The dead-letter record of a job.
pub(crate) fn dead_letter_entry(
    job: &Job,
    reason: DeadLetterReason,
    progress: &Progress,
    error: Option<&HandlerError>,
) -> DeadLetter {
    let (first_error, first_failed_at) = progress.first_error().cloned().unzip();
    let (last_error, last_failed_at) = match (progress.last_error(), error) {
        (Some((message, at)), _) => (Some(message.clone()), Some(*at)),
        (None, Some(error)) => (Some(error.to_string()), Some(Utc::now())),
        (None, None) => (None, None),
    };
    DeadLetter {
        id: DeadLetterId(0),
        envelope: job.dispatch.envelope.clone(),
        payload: job.dispatch.payload.to_json(),
        handler: job.handler.desc.name.to_owned(),
        reason,
        failure: error.map(FailureKind::of),
        attempts: progress.attempts,
        first_error: first_error.or_else(|| last_error.clone()),
        last_error,
        first_failed_at: first_failed_at.or(last_failed_at),
        last_failed_at,
        dead_lettered_at: Utc::now(),
    }
}
