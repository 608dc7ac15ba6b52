//! `shutdown(deadline)`: stop intake, drain until the deadline, dead-letter what remains. Nothing is dropped.

use crate::engine::counters::Ending;
use crate::engine::lanes::Parked;
use crate::engine::runtime::Herald;
use crate::engine::worker::{self, Casualty};
use crate::model::dead_letter::{DeadLetterReason, FailureKind};
use crate::model::ledger::LedgerSnapshot;
use crate::model::outcome::HandlerStatus;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What `shutdown` did.
#[derive(Debug, Clone)]
pub struct ShutdownReport {
    /// Time from the call to the end of the shutdown.
    pub elapsed: Duration,
    /// Whether every queued and running job finished before the deadline.
    pub drained: bool,
    /// Jobs that were still queued at the deadline, now in the dead letters (reason `shutdown`).
    pub dead_lettered_queued: u64,
    /// Jobs that were running at the deadline, cancelled and now in the dead letters (reason `shutdown`).
    pub dead_lettered_running: u64,
    /// `CallerRuns` jobs still running on their publishers' tasks (they finish there).
    pub still_running_on_callers: u64,
    /// The ledger at the end.
    pub ledger: LedgerSnapshot,
}

impl Herald {
    /// Stops intake (publish then returns `ShuttingDown` with the message), drains queued and running
    /// work until `deadline`, then cancels what is left and dead-letters it with reason `shutdown`.
    ///
    /// Queued work includes delayed messages still waiting for their time (those due before the
    /// deadline are delivered) and jobs held by an open circuit breaker.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let started = Instant::now();
        let inner = &self.inner;
        inner.accepting.store(false, Ordering::Release);
        if let Some(slas) = &inner.slas {
            // Expectations stay in their store: a durable one is swept by the next process.
            slas.stop();
        }
        for pool in &inner.pools {
            // Publishers waiting for room get `ShuttingDown` instead of waiting forever.
            pool.close_space();
        }
        let pending = || {
            inner
                .handlers
                .iter()
                .map(|h| h.counters.pending())
                .sum::<u64>()
        };
        while pending() > 0 && started.elapsed() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let drained = pending() == 0;

        // Jobs waiting for their delivery time or held by an open circuit breaker are queued
        // jobs outside the pool queues: taken first, so that none moves into a queue after the
        // queues are emptied below (a job held later goes to its pool's casualties).
        let mut casualties: Vec<Casualty> = inner
            .delays
            .drain()
            .into_iter()
            .map(Casualty::queued)
            .collect();
        for handler in &inner.handlers {
            if let Some(breaker) = &handler.breaker {
                casualties.extend(breaker.drain().into_iter().map(Casualty::queued));
            }
        }

        for pool in &inner.pools {
            pool.stopping.store(true, Ordering::Release);
            pool.queue.close();
            let workers = std::mem::take(&mut *pool.workers.lock());
            for worker in &workers {
                worker.abort();
            }
            for worker in workers {
                // A worker that panicked or was cancelled has already handed its job to the casualties.
                let _ = worker.await;
            }
        }

        for pool in &inner.pools {
            while let Some(job) = pool.queue.try_pop() {
                casualties.push(Casualty::queued(job));
            }
            casualties.append(&mut pool.casualties.lock());
        }
        for handler in &inner.handlers {
            if let Some(lanes) = &handler.lanes {
                casualties.extend(lanes.drain().into_iter().map(|parked| match parked {
                    Parked::Queued(job) => Casualty::queued(job),
                    // Its publisher's wait ends with the sender dropped here.
                    Parked::Caller { job, .. } => Casualty {
                        on_caller: true,
                        ..Casualty::queued(job)
                    },
                }));
            }
        }

        let (mut queued, mut running) = (0, 0);
        for casualty in casualties {
            let Casualty {
                job,
                started,
                progress,
                on_caller,
            } = casualty;
            let counters = &job.handler.counters;
            if started {
                running += 1;
                counters.finished(Ending::DeadLettered);
            } else if on_caller {
                // Accepted to run on its publisher's task (counted in flight), still parked behind
                // its key.
                queued += 1;
                counters.finished(Ending::DeadLettered);
            } else {
                queued += 1;
                counters.left_queue(false);
            }
            tracing::warn!(
                handler = job.handler.desc.name,
                message_id = %job.dispatch.envelope.id,
                started,
                "shutdown deadline reached: message dead-lettered (reason `shutdown`)"
            );
            let mut entry =
                worker::dead_letter_entry(&job, DeadLetterReason::Shutdown, &progress, None);
            if started {
                entry.failure = Some(FailureKind::Shutdown);
            }
            // Logged in full if the store refuses it.
            let _ = inner.store_dead_letter(entry).await;
            job.settle(HandlerStatus::Interrupted, None);
        }

        inner.background.close();
        inner.background.wait().await;
        if let Some(slas) = &inner.slas {
            slas.stopped(
                deadline
                    .saturating_sub(started.elapsed())
                    .max(Duration::from_secs(1)),
            )
            .await;
        }
        ShutdownReport {
            elapsed: started.elapsed(),
            drained,
            dead_lettered_queued: queued,
            dead_lettered_running: running,
            still_running_on_callers: pending(),
            ledger: self.ledger(),
        }
    }
}
