//! Wakes this process's relays when this process publishes into its outbox.
//!
//! A relay between batches waits for new rows: `LISTEN` on PostgreSQL, a plain timer (the poll
//! interval, 100 ms by default) on SQLite and MySQL. An event published by the same process would
//! wait out that timer for nothing. The outbox cannot see the commit itself (the row is written
//! on the caller's transaction, which the caller commits), so a publish wakes the waiting relays
//! at once and opens a short *catch window*: while it lasts, a relay that found nothing (the
//! transaction has not committed yet) looks again after 1 ms, then 2, 4, … up to its poll
//! interval. Rows written by other processes are still found by the ordinary polling.

use super::row::Waiter;
use async_trait::async_trait;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long after a publish its commit is looked for with short waits: a request handler
/// usually commits within milliseconds of its publish; a longer transaction falls back to the
/// poll interval once the window has passed.
const CATCH_WINDOW: Duration = Duration::from_millis(250);
/// The first short wait inside the catch window; each empty look doubles it.
const FIRST_STEP: Duration = Duration::from_millis(1);

/// Publishes made by this process, shared by an outbox and its clones.
#[derive(Debug)]
pub(crate) struct LocalPublishes {
    base: Instant,
    /// Microseconds from `base` to the last publish, plus one (0: none yet).
    last: AtomicU64,
    /// Counts publishes: a relay that sees it move starts its short waits over.
    generation: AtomicU64,
    notify: Notify,
}

impl Default for LocalPublishes {
    fn default() -> Self {
        LocalPublishes {
            base: Instant::now(),
            last: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            notify: Notify::new(),
        }
    }
}

impl LocalPublishes {
    /// A row was written on a caller's transaction: its commit may follow at any moment.
    pub(crate) fn published(&self) {
        let micros = u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        self.last.store(micros + 1, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// Whether the last publish is recent enough that its commit may still be coming.
    fn in_window(&self) -> bool {
        match self.last.load(Ordering::Acquire) {
            0 => false,
            last => {
                let since = self
                    .base
                    .elapsed()
                    .saturating_sub(Duration::from_micros(last - 1));
                since < CATCH_WINDOW
            }
        }
    }
}

/// A relay's waiter: the dialect's own (a timer or `LISTEN`), woken early by this process's
/// publishes, with short waits inside the catch window.
pub(crate) struct LocalWaiter {
    inner: Box<dyn Waiter>,
    local: Arc<LocalPublishes>,
    step: Duration,
    seen_generation: u64,
}

impl LocalWaiter {
    pub(crate) fn new(inner: Box<dyn Waiter>, local: Arc<LocalPublishes>) -> Self {
        let seen_generation = local.generation.load(Ordering::Acquire);
        LocalWaiter {
            inner,
            local,
            step: FIRST_STEP,
            seen_generation,
        }
    }
}

#[async_trait]
impl Waiter for LocalWaiter {
    async fn wait(&mut self, timeout: Duration) {
        let notified = self.local.notify.notified();
        tokio::pin!(notified);
        // Registered before the checks below, so a publish between them is not missed.
        notified.as_mut().enable();
        let generation = self.local.generation.load(Ordering::Acquire);
        if generation != self.seen_generation {
            // A publish since the last look: look again soon, from the shortest wait.
            self.seen_generation = generation;
            self.step = FIRST_STEP;
        }
        if self.local.in_window() {
            let step = self.step.min(timeout);
            self.step = (self.step * 2).min(timeout.max(FIRST_STEP));
            tokio::select! {
                () = tokio::time::sleep(step) => {}
                () = notified => {}
            }
            return;
        }
        tokio::select! {
            () = self.inner.wait(timeout) => {}
            () = notified => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::outbox::row::Sleeper;

    #[tokio::test(start_paused = true)]
    async fn a_publish_wakes_a_waiting_relay_at_once() {
        let local = Arc::new(LocalPublishes::default());
        let mut waiter = LocalWaiter::new(Box::new(Sleeper), local.clone());
        let started = tokio::time::Instant::now();
        let publisher = tokio::spawn({
            let local = local.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                local.published();
            }
        });
        waiter.wait(Duration::from_secs(5)).await;
        publisher.await.expect("publisher");
        assert_eq!(started.elapsed(), Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn inside_the_window_the_waits_are_short_and_grow() {
        let local = Arc::new(LocalPublishes::default());
        let mut waiter = LocalWaiter::new(Box::new(Sleeper), local.clone());
        local.published();
        let mut waits = Vec::new();
        for _ in 0..4 {
            let started = tokio::time::Instant::now();
            waiter.wait(Duration::from_millis(100)).await;
            waits.push(started.elapsed().as_millis());
        }
        assert_eq!(waits, [1, 2, 4, 8]);
        // A new publish starts the short waits over.
        local.published();
        let started = tokio::time::Instant::now();
        waiter.wait(Duration::from_millis(100)).await;
        assert_eq!(started.elapsed(), Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_recent_publish_it_waits_the_whole_timeout() {
        let local = Arc::new(LocalPublishes::default());
        let mut waiter = LocalWaiter::new(Box::new(Sleeper), local.clone());
        let started = tokio::time::Instant::now();
        waiter.wait(Duration::from_millis(100)).await;
        assert_eq!(started.elapsed(), Duration::from_millis(100));
    }
}
