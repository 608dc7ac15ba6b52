//! Running one job: attempts with rate limit, timeout and panic capture, retries with backoff, and the
//! failure disposition. Also the worker loop that pulls jobs from a pool.

use crate::dead_letter::{DeadLetter, DeadLetterId, DeadLetterReason, FailureKind};
use crate::delivery::HandlerStatus;
use crate::dispatch::{Attempts, Job};
use crate::error::{Disposition, HandlerError, HandlerErrorKind, HandlerFailure};
use crate::handler::{AnyReply, OnFailure};
use crate::invocation::Invocation;
use crate::ledger::Ending;
use crate::pool::Pool;
use crate::retry;
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A pool worker: takes jobs until the queue closes.
pub(crate) async fn run_worker(pool: Arc<Pool>) {
    loop {
        // The synchronous first look also keeps rustc from copying the ~1.8 kB `run_started` future
        // twice per job (callgrind: ~400 instructions of `memcpy` per job when the loop only awaited).
        let job = match pool.queue.try_take() {
            Some(job) => job,
            None => match pool.queue.pop().await {
                Some(job) => job,
                None => return,
            },
        };
        if pool.stopping.load(Ordering::Acquire) {
            pool.casualties.lock().push(Casualty::queued(job));
            continue;
        }
        pool.release();
        job.handler.counters.started();
        run_started(job).await;
    }
}

/// Runs `CallerRuns` jobs on the caller's task.
pub(crate) async fn run_inline(jobs: Vec<Job>) {
    for job in jobs {
        run_started(job).await;
    }
}

/// Runs a started job, then the jobs parked behind its key. There is no `.await` between taking the
/// next parked job and handing it to `execute`, so an abort at shutdown never loses it.
async fn run_started(job: Job) {
    let mut current = Some(job);
    while let Some(job) = current.take() {
        let handler = job.handler.clone();
        let key = handler
            .lanes
            .as_ref()
            .and(job.dispatch.envelope.key.clone());
        execute(job).await;
        if let (Some(lanes), Some(key)) = (&handler.lanes, key) {
            if let Some(next) = lanes.next(&key) {
                next.handler.pool.release();
                next.handler.counters.started();
                current = Some(next);
            }
        }
    }
}

/// Attempts and errors of one job so far.
#[derive(Debug, Default, Clone)]
pub(crate) struct Progress {
    pub(crate) attempts: u32,
    pub(crate) first_error: Option<(String, DateTime<Utc>)>,
    pub(crate) last_error: Option<(String, DateTime<Utc>)>,
}

impl Progress {
    fn record(&mut self, error: &HandlerError) {
        let entry = (error.to_string(), Utc::now());
        if self.first_error.is_none() {
            self.first_error = Some(entry.clone());
        }
        self.last_error = Some(entry);
    }
}

/// A job whose worker stopped at the shutdown deadline: still queued, or cut off while running.
#[derive(Debug)]
pub(crate) struct Casualty {
    pub(crate) job: Job,
    pub(crate) started: bool,
    pub(crate) progress: Progress,
}

impl Casualty {
    pub(crate) fn queued(job: Job) -> Self {
        Casualty {
            job,
            started: false,
            progress: Progress::default(),
        }
    }
}

/// Holds a running job. If the worker is aborted (shutdown deadline), the drop hands the job to its
/// pool's casualties, which `shutdown` dead-letters, instead of losing it.
struct InFlight {
    job: Option<Job>,
    progress: Progress,
}

impl InFlight {
    fn job(&self) -> &Job {
        self.job.as_ref().expect("job is present until disarmed")
    }

    fn disarm(&mut self) -> Job {
        self.job.take().expect("disarmed once")
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(job) = self.job.take() else { return };
        let progress = std::mem::take(&mut self.progress);
        let pool = job.handler.pool.clone();
        if pool.stopping.load(Ordering::Acquire) {
            // Aborted at the shutdown deadline: `shutdown` dead-letters the casualties.
            pool.casualties.lock().push(Casualty {
                job,
                started: true,
                progress,
            });
            return;
        }
        // A `CallerRuns` job whose publisher dropped the publish future mid-run: dead-letter it now.
        let herald = job.dispatch.herald.clone();
        herald.inner.background.spawn(async move {
            let error = HandlerError::with_kind(
                HandlerErrorKind::Cancelled,
                "cancelled: the publisher dropped its `publish` future while the handler ran on its task (CallerRuns)",
            );
            tracing::error!(handler = job.handler.desc.name, message_id = %job.dispatch.envelope.id, "{error}; message dead-lettered");
            let entry = dead_letter_entry(&job, DeadLetterReason::Failed, &progress, Some(&error));
            let disposition = match job.dispatch.herald.inner.store_dead_letter(entry).await {
                Ok(_) => Disposition::DeadLettered,
                // Logged in full by the store path.
                Err(_) => Disposition::Logged,
            };
            job.handler.counters.finished(if disposition == Disposition::DeadLettered { Ending::DeadLettered } else { Ending::Ignored });
            let failure = HandlerFailure {
                handler: job.handler.desc.name,
                message_id: job.dispatch.envelope.id,
                attempts: progress.attempts,
                error,
                disposition,
            };
            job.dispatch.sink.report(job.dispatch.envelope.id, job.handler.desc.name, HandlerStatus::Failed(failure), None);
        });
    }
}

async fn execute(job: Job) {
    let handler = job.handler.clone();
    let options = &handler.desc.options;
    let mode = job.attempts;
    let mut guard = InFlight {
        job: Some(job),
        progress: Progress::default(),
    };
    if let Attempts::Once(attempt) = mode {
        guard.progress.attempts = attempt.saturating_sub(1);
    }
    let dedupe_id = handler
        .dedupe
        .as_ref()
        .map(|_| guard.job().dispatch.envelope.dedupe_id());
    if let (Some(window), Some(id)) = (&handler.dedupe, &dedupe_id) {
        if !window.claim(id) {
            let job = guard.disarm();
            handler.counters.finished(Ending::Deduplicated);
            tracing::debug!(handler = handler.desc.name, message_id = %job.dispatch.envelope.id, dedupe_id = %id, "duplicate skipped");
            job.dispatch.sink.report(
                job.dispatch.envelope.id,
                handler.desc.name,
                HandlerStatus::Deduplicated,
                None,
            );
            return;
        }
    }
    let mut delays = None;
    loop {
        guard.progress.attempts += 1;
        let attempt = guard.progress.attempts;
        if let Some(rate) = &handler.rate {
            rate.until_ready().await;
        }
        let invocation = Invocation {
            dispatch: guard.job().dispatch.clone(),
            attempt,
            handler: handler.desc.name,
        };
        match call(invocation, options.timeout, handler.desc.call).await {
            Ok(reply) => {
                if let (Some(window), Some(id)) = (&handler.dedupe, &dedupe_id) {
                    window.release(id, true);
                }
                let job = guard.disarm();
                handler.counters.finished(Ending::Succeeded);
                let status = HandlerStatus::Succeeded { attempts: attempt };
                job.dispatch.sink.report(
                    job.dispatch.envelope.id,
                    handler.desc.name,
                    status,
                    Some(reply),
                );
                return;
            }
            Err(error) if error.kind() == HandlerErrorKind::Duplicate => {
                if let (Some(window), Some(id)) = (&handler.dedupe, &dedupe_id) {
                    window.release(id, true);
                }
                let job = guard.disarm();
                handler.counters.finished(Ending::Deduplicated);
                tracing::debug!(handler = handler.desc.name, message_id = %job.dispatch.envelope.id, reason = %error, "duplicate skipped");
                job.dispatch.sink.report(
                    job.dispatch.envelope.id,
                    handler.desc.name,
                    HandlerStatus::Deduplicated,
                    None,
                );
                return;
            }
            Err(error) => {
                handler.counters.failed_attempt();
                guard.progress.record(&error);
                let delay = match mode {
                    _ if error.is_permanent() => None,
                    Attempts::Policy => delays
                        .get_or_insert_with(|| retry::delays(&options.retry))
                        .next(),
                    Attempts::Once(_) if attempt < options.retry.max_attempts => {
                        if let (Some(window), Some(id)) = (&handler.dedupe, &dedupe_id) {
                            window.release(id, false);
                        }
                        let job = guard.disarm();
                        handler.counters.finished(Ending::Deferred);
                        let status = HandlerStatus::Deferred { attempt, error };
                        job.dispatch.sink.report(
                            job.dispatch.envelope.id,
                            handler.desc.name,
                            status,
                            None,
                        );
                        return;
                    }
                    Attempts::Once(_) => None,
                };
                let Some(delay) = delay else {
                    if let (Some(window), Some(id)) = (&handler.dedupe, &dedupe_id) {
                        window.release(id, false);
                    }
                    dispose(guard, error).await;
                    return;
                };
                tracing::warn!(
                    handler = handler.desc.name,
                    message_id = %guard.job().dispatch.envelope.id,
                    attempt,
                    error = %error,
                    retry_in = ?delay,
                    "handler attempt failed; retrying"
                );
                handler.counters.retried();
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One attempt: the handler's future under its timeout, with panics caught.
async fn call(
    invocation: Invocation,
    timeout: Option<std::time::Duration>,
    call: crate::handler::HandlerFn,
) -> Result<AnyReply, HandlerError> {
    let attempt = AssertUnwindSafe(call(invocation)).catch_unwind();
    let caught = match timeout {
        Some(limit) => match tokio::time::timeout(limit, attempt).await {
            Ok(caught) => caught,
            Err(_) => return Err(HandlerError::timed_out(limit)),
        },
        None => attempt.await,
    };
    caught.unwrap_or_else(|panic| Err(HandlerError::panicked(panic_message(panic.as_ref()))))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// The last attempt failed: dead-letter, log or ignore, as the handler says.
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
                        job.dispatch.sink.report(
                            job.dispatch.envelope.id,
                            handler.desc.name,
                            HandlerStatus::Deferred { attempt, error },
                            None,
                        );
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
    job.dispatch.sink.report(
        job.dispatch.envelope.id,
        handler.desc.name,
        HandlerStatus::Failed(failure),
        None,
    );
}

/// The dead-letter record of a job.
pub(crate) fn dead_letter_entry(
    job: &Job,
    reason: DeadLetterReason,
    progress: &Progress,
    error: Option<&HandlerError>,
) -> DeadLetter {
    let (first_error, first_failed_at) = progress.first_error.clone().unzip();
    let (last_error, last_failed_at) = match (&progress.last_error, error) {
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
