//! `dedupe`: a bounded window of message ids a handler has completed (and ids running now).

use lru::LruCache;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::num::NonZeroUsize;

/// Completed ids (least recently used evicted past the window) and ids running now.
#[derive(Debug)]
pub(crate) struct DedupeWindow {
    inner: Mutex<Window>,
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
        }
    }

    /// Claims `id` for a run. False when it was completed already or is running now: a duplicate.
    pub(crate) fn claim(&self, id: &str) -> bool {
        let mut window = self.inner.lock();
        if window.completed.contains(id) || window.running.contains(id) {
            return false;
        }
        window.running.insert(id.to_owned());
        true
    }

    /// Ends a claim. A completed id is remembered; a failed one may run again when re-sent.
    pub(crate) fn release(&self, id: &str, completed: bool) {
        let mut window = self.inner.lock();
        window.running.remove(id);
        if completed {
            window.completed.put(id.to_owned(), ());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_id_is_a_duplicate_and_a_failed_one_is_not() {
        let window = DedupeWindow::new(NonZeroUsize::new(2).expect("non-zero"));
        assert!(window.claim("a"));
        assert!(!window.claim("a"), "running id is a duplicate");
        window.release("a", true);
        assert!(!window.claim("a"), "completed id is a duplicate");
        assert!(window.claim("b"));
        window.release("b", false);
        assert!(window.claim("b"), "a failed id may run again");
        window.release("b", true);
        assert!(window.claim("c"));
        window.release("c", true);
        assert!(window.claim("a"), "the window is bounded: `a` was evicted");
    }
}
