//! Delayed delivery in memory (`PublishOptions::deliver_at` / `deliver_after` on
//! `Herald::publish_with`): jobs wait here for their time, then enter their pool's queue.
//!
//! A delayed job was accepted at publish like any other: its pool's overload policy was applied
//! then, it holds a slot of its pool's queue while it waits (so memory stays bounded by the
//! queues), and the ledger counts it `queued` (and `delayed`). One timer task per runtime
//! sleeps until the earliest due time. An `ordered` job waits here holding its key, so later jobs
//! of the key wait behind it: per key, delivery order is publish order, delays included, as in the
//! outbox, whose relay claims a key's rows in id order.
//!
//! Shutdown takes the jobs still waiting and dead-letters them with reason `shutdown`: held in
//! memory only, they cannot outlive the process (the outbox is the durable way to delay).

use crate::engine::publish::Job;
use crate::engine::worker::Casualty;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The jobs waiting for their time, and the timer task's wake-up.
#[derive(Debug, Default)]
pub(crate) struct Delays {
    state: Mutex<State>,
    /// An earlier due time arrived: the timer task looks again.
    wake: Notify,
    stop: CancellationToken,
}

#[derive(Debug, Default)]
struct State {
    /// By due time, then arrival (`seq`): jobs due at the same moment keep their order.
    waiting: BTreeMap<(Instant, u64), Job>,
    seq: u64,
    /// Set at shutdown once the waiting jobs were taken.
    shut: bool,
}

impl Delays {
    /// Keeps a queued job (holding its slot, and its key if `ordered`) until `due`.
    pub(crate) fn hold(&self, job: Job, due: Instant) {
        let mut state = self.state.lock();
        if state.shut {
            drop(state);
            let pool = job.handler.pool.clone();
            pool.casualties.lock().push(Casualty::queued(job));
            return;
        }
        job.handler.counters.delayed();
        let earliest = state.waiting.keys().next().map(|(at, _)| *at);
        let seq = state.seq;
        state.seq += 1;
        state.waiting.insert((due, seq), job);
        drop(state);
        if earliest.is_none_or(|earliest| due < earliest) {
            self.wake.notify_one();
        }
    }

    /// Moves every job whose time has come into its pool's queue (under the lock, so shutdown
    /// finds each job either here or in a queue); returns the next due time.
    fn release_due(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut state = self.state.lock();
        while let Some(entry) = state.waiting.first_entry() {
            if entry.key().0 > now {
                return Some(entry.key().0);
            }
            let job = entry.remove();
            job.handler.counters.delay_ended();
            job.handler.pool.clone().enqueue(job);
        }
        None
    }

    /// The timer task: releases due jobs, then sleeps until the next due time or an earlier
    /// arrival.
    pub(crate) async fn run(self: Arc<Self>) {
        loop {
            let next = self.release_due();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = self.wake.notified() => {}
                () = sleep => {}
            }
        }
    }

    /// Stops the timer task (the last handle to the runtime is gone).
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }

    /// Shutdown: every job still waiting (still queued), for the dead letters; the timer stops.
    pub(crate) fn drain(&self) -> Vec<Job> {
        self.stop.cancel();
        let mut state = self.state.lock();
        state.shut = true;
        std::mem::take(&mut state.waiting)
            .into_values()
            .inspect(|job| job.handler.counters.delay_ended())
            .collect()
    }
}
