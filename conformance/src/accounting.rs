//! Jepsen-style accounting of one run: every id a publish was tried for, every id the sink
//! confirmed, every id a handler took effect for, and every id that went to the dead letters.
//! At the end, [`Accounting::report`] says what was lost (confirmed, never delivered nor
//! dead-lettered), what was unexpected (delivered, never published) and how many duplicates
//! there were.
//!
//! Share one [`Accounting`] (it is a cheap clone) between the publisher and the handlers:
//!
//! ```
//! use herald::MessageId;
//! use herald_conformance::accounting::Accounting;
//!
//! let books = Accounting::new();
//! let id = MessageId::new();
//! books.attempted(id); // before the publish: its outcome may be unknown
//! books.confirmed(id); // the sink said `Confirmed`
//! books.delivered(id); // in the handler: the effect happened
//! let report = books.report(0);
//! report.assert_exactly_once();
//! assert_eq!((report.confirmed, report.delivered), (1, 1));
//! ```
//!
//! A publish that was tried but not confirmed (a timeout, a connection that dropped before the
//! broker answered) is *indeterminate*, as in Jepsen: the broker may have stored it, so its
//! delivery is neither lost nor unexpected. Duplicates come in two kinds: redeliveries that a
//! handler's `dedupe` option (or the inbox) absorbed, which a transport that delivers at least once
//! may produce and which are only reported, and duplicate *effects* (a handler ran twice for one
//! id), which [`Report::assert_exactly_once`] refuses.

use herald::MessageId;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

/// The books of one run, shared by the publisher and the handlers (clones share the same books).
#[derive(Debug, Clone, Default)]
pub struct Accounting {
    books: Arc<Mutex<Books>>,
}

#[derive(Debug, Default)]
struct Books {
    attempted: HashSet<MessageId>,
    confirmed: BTreeSet<MessageId>,
    delivered: HashMap<MessageId, u32>,
    dead_lettered: HashSet<MessageId>,
}

impl Accounting {
    /// Empty books.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Books) -> T) -> T {
        f(&mut self.books.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A publish of `id` is about to be tried (call it before the sink answers).
    pub fn attempted(&self, id: MessageId) {
        self.with(|books| books.attempted.insert(id));
    }

    /// The sink confirmed `id` (it counts as attempted too).
    pub fn confirmed(&self, id: MessageId) {
        self.with(|books| {
            books.attempted.insert(id);
            books.confirmed.insert(id);
        });
    }

    /// A handler took effect for `id` (call it once per effect, from the handler).
    pub fn delivered(&self, id: MessageId) {
        self.with(|books| *books.delivered.entry(id).or_default() += 1);
    }

    /// `id` ended in the dead letters instead of being delivered.
    pub fn dead_lettered(&self, id: MessageId) {
        self.with(|books| books.dead_lettered.insert(id));
    }

    /// How many ids the sink confirmed.
    pub fn confirmed_count(&self) -> usize {
        self.with(|books| books.confirmed.len())
    }

    /// How many distinct ids a handler took effect for.
    pub fn delivered_count(&self) -> usize {
        self.with(|books| books.delivered.len())
    }

    /// The ids the sink confirmed, oldest id first.
    pub fn confirmed_ids(&self) -> Vec<MessageId> {
        self.with(|books| books.confirmed.iter().copied().collect())
    }

    /// The ids a publish was tried for (confirmed or not).
    pub fn attempted_ids(&self) -> Vec<MessageId> {
        self.with(|books| books.attempted.iter().copied().collect())
    }

    /// How many effects `id` had.
    pub fn effects(&self, id: MessageId) -> u32 {
        self.with(|books| books.delivered.get(&id).copied().unwrap_or(0))
    }

    /// Whether every confirmed id was delivered or dead-lettered (what a case waits for).
    pub fn is_complete(&self) -> bool {
        self.with(|books| {
            books
                .confirmed
                .iter()
                .all(|id| books.delivered.contains_key(id) || books.dead_lettered.contains(id))
        })
    }

    /// The books closed: `deduplicated` is how many redeliveries the handlers' `dedupe` option or
    /// the inbox absorbed (the ledger's `deduplicated` count), reported beside the rest.
    pub fn report(&self, deduplicated: u64) -> Report {
        self.with(|books| {
            let lost = books
                .confirmed
                .iter()
                .filter(|id| !books.delivered.contains_key(id) && !books.dead_lettered.contains(id))
                .copied()
                .collect();
            let mut unexpected: Vec<MessageId> = books
                .delivered
                .keys()
                .chain(books.dead_lettered.iter())
                .filter(|id| !books.attempted.contains(id))
                .copied()
                .collect();
            unexpected.sort_unstable();
            unexpected.dedup();
            Report {
                confirmed: books.confirmed.len(),
                indeterminate: books.attempted.len() - books.confirmed.len(),
                delivered: books.delivered.len(),
                dead_lettered: books.dead_lettered.len(),
                lost,
                unexpected,
                duplicate_effects: books
                    .delivered
                    .values()
                    .map(|n| u64::from(n.saturating_sub(1)))
                    .sum(),
                duplicates_removed: deduplicated,
            }
        })
    }
}

/// What the books say at the end of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Ids the sink confirmed.
    pub confirmed: usize,
    /// Ids tried but never confirmed: the broker may or may not have them.
    pub indeterminate: usize,
    /// Distinct ids a handler took effect for.
    pub delivered: usize,
    /// Ids that went to the dead letters.
    pub dead_lettered: usize,
    /// Confirmed, but neither delivered nor dead-lettered: must be empty.
    pub lost: Vec<MessageId>,
    /// Delivered or dead-lettered, but never published: must be empty.
    pub unexpected: Vec<MessageId>,
    /// Effects beyond the first for one id (a handler ran twice): must be 0 where the handlers
    /// dedupe.
    pub duplicate_effects: u64,
    /// Redeliveries the `dedupe` option or the inbox absorbed (at-least-once delivery at work).
    pub duplicates_removed: u64,
}

impl Report {
    /// Checks that nothing was lost, nothing unexpected arrived, and every effect happened once.
    ///
    /// # Panics
    /// When one of them does not hold, with the whole report.
    pub fn assert_exactly_once(&self) {
        assert!(self.lost.is_empty(), "messages lost: {self}");
        assert!(self.unexpected.is_empty(), "unexpected messages: {self}");
        assert_eq!(self.duplicate_effects, 0, "duplicate effects: {self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} confirmed ({} indeterminate), {} delivered, {} dead-lettered, {} lost, {} unexpected, \
             {} duplicate effects, {} duplicates removed by dedupe",
            self.confirmed,
            self.indeterminate,
            self.delivered,
            self.dead_lettered,
            self.lost.len(),
            self.unexpected.len(),
            self.duplicate_effects,
            self.duplicates_removed
        )?;
        if !self.lost.is_empty() {
            write!(f, "; lost: {:?}", self.lost)?;
        }
        if !self.unexpected.is_empty() {
            write!(f, "; unexpected: {:?}", self.unexpected)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirmed_id_never_delivered_is_lost() {
        let books = Accounting::new();
        let (kept, lost) = (MessageId::new(), MessageId::new());
        books.confirmed(kept);
        books.confirmed(lost);
        books.delivered(kept);
        assert!(!books.is_complete());
        assert_eq!(books.report(0).lost, vec![lost]);
    }

    #[test]
    fn an_unpublished_delivery_is_unexpected_and_an_unconfirmed_one_is_not() {
        let books = Accounting::new();
        let (maybe, stranger) = (MessageId::new(), MessageId::new());
        books.attempted(maybe);
        books.delivered(maybe);
        books.delivered(stranger);
        let report = books.report(0);
        assert_eq!(report.unexpected, vec![stranger]);
        assert_eq!(report.indeterminate, 1);
    }

    #[test]
    fn duplicates_are_counted_apart_from_those_dedupe_removed() {
        let books = Accounting::new();
        let id = MessageId::new();
        books.confirmed(id);
        books.delivered(id);
        books.delivered(id);
        let report = books.report(3);
        assert_eq!(
            (report.duplicate_effects, report.duplicates_removed),
            (1, 3)
        );
        let refused = std::panic::catch_unwind(|| report.assert_exactly_once());
        assert!(refused.is_err(), "a duplicate effect fails the check");
    }

    #[test]
    fn the_books_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Accounting>();
        assert_send_sync::<Report>();
    }
}
