//! `dedupe`: a bounded window of message ids a handler has completed (and ids running now).
//!
//! A job whose id is running elsewhere waits for that run's outcome instead of being reported as a
//! duplicate: only a completed id makes a duplicate (a failed run leaves the id free to run again).

use event_listener::{Event, EventListener};
use lru::LruCache;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::num::NonZeroUsize;

/// Completed ids (least recently used evicted past the window) and ids running now.
#[derive(Debug)]
pub(crate) struct DedupeWindow {
    inner: Mutex<Window>,
    /// Notified whenever a running id is released.
    released: Event,
}

/// The answer to a claim.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The id is now claimed by the caller.
    Run,
    /// The id has completed: a duplicate.
    Completed,
    /// The id is running elsewhere: wait on this, then claim again.
    Busy(EventListener),
}

#[derive(Debug)]
struct Window {
    completed: LruCache<String, ()>,
    running: HashSet<String>,
}

impl DedupeWindow {
    pub(crate) fn new(capacity: NonZeroUsize) -> Self {
        DedupeWindow {
            inner: Mutex::new(Window {
                completed: LruCache::new(capacity),
                running: HashSet::new(),
            }),
            released: Event::new(),
        }
    }

    /// Claims `id` for a run.
    pub(crate) fn claim(&self, id: &str) -> Claim {
        let mut window = self.inner.lock();
        if window.completed.contains(id) {
            return Claim::Completed;
        }
        if window.running.contains(id) {
            // Listening under the lock: the release, which takes the lock first, cannot be missed.
            return Claim::Busy(self.released.listen());
        }
        window.running.insert(id.to_owned());
        Claim::Run
    }

    /// Ends a claim. A completed id is remembered; a failed one may run again when re-sent.
    pub(crate) fn release(&self, id: &str, completed: bool) {
        {
            let mut window = self.inner.lock();
            window.running.remove(id);
            if completed {
                window.completed.put(id.to_owned(), ());
            }
        }
        self.released.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(claim: Claim) -> bool {
        matches!(claim, Claim::Run)
    }

    #[test]
    fn a_completed_id_is_a_duplicate_and_a_failed_one_is_not() {
        let window = DedupeWindow::new(NonZeroUsize::new(2).expect("non-zero"));
        assert!(runs(window.claim("a")));
        assert!(
            matches!(window.claim("a"), Claim::Busy(_)),
            "a running id is busy, not a duplicate"
        );
        window.release("a", true);
        assert!(
            matches!(window.claim("a"), Claim::Completed),
            "completed id is a duplicate"
        );
        assert!(runs(window.claim("b")));
        window.release("b", false);
        assert!(runs(window.claim("b")), "a failed id may run again");
        window.release("b", true);
        assert!(runs(window.claim("c")));
        window.release("c", true);
        assert!(
            runs(window.claim("a")),
            "the window is bounded: `a` was evicted"
        );
    }

    #[tokio::test]
    async fn a_busy_claim_wakes_when_the_running_one_is_released() {
        let window = std::sync::Arc::new(DedupeWindow::new(NonZeroUsize::new(8).expect("8")));
        assert!(runs(window.claim("x")));
        let Claim::Busy(released) = window.claim("x") else {
            panic!("x is running")
        };
        let releaser = window.clone();
        tokio::spawn(async move { releaser.release("x", false) });
        released.await;
        assert!(runs(window.claim("x")), "the failed run left x free");
    }
}
