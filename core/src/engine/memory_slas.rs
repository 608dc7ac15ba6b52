//! The default SLA store: expectations in memory, with the same rules as the SQL stores. They do
//! not survive a restart; give the builder an outbox (`.sla_store(outbox.clone())`) for that.

use crate::model::envelope::MessageId;
use crate::model::sla::{
    ExpectationState, Fulfilment, NewExpectation, SlaBreached, SlaExpectation, SlaStatus,
};
use crate::ports::sla::{SlaStore, SlaStoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;

/// How many finished (fulfilled or breached) expectations the in-memory store keeps by default.
pub const DEFAULT_KEEP_FINISHED: usize = 100_000;

/// SLA expectations in memory: the default store of a runtime with SLAs and no
/// [`sla_store`](crate::HeraldBuilder::sla_store). Open expectations are always kept; of the
/// finished ones (fulfilled, breached) the newest `keep_finished` are, so a late B can still be
/// recorded against a breach that recent. Counts cover every expectation ever opened.
///
/// Its sweep does not deliver the breach events: the runtime publishes them in memory.
pub struct InMemorySlaStore {
    book: Mutex<Book>,
    keep_finished: usize,
}

#[derive(Default)]
struct Book {
    expectations: HashMap<(String, MessageId), SlaExpectation>,
    /// Per SLA and key, the expectations that still accept a fulfilment (open or breached).
    by_key: HashMap<(String, String), Vec<MessageId>>,
    /// Open expectations by due time.
    due: BTreeSet<(DateTime<Utc>, String, MessageId)>,
    /// Finished expectations, oldest first: the ones forgotten first.
    finished: VecDeque<(String, MessageId)>,
    counts: BTreeMap<String, SlaStatus>,
}

impl Default for InMemorySlaStore {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_KEEP_FINISHED)
    }
}

impl fmt::Debug for InMemorySlaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let book = self.book.lock();
        f.debug_struct("InMemorySlaStore")
            .field("expectations", &book.expectations.len())
            .field("keep_finished", &self.keep_finished)
            .finish()
    }
}

impl InMemorySlaStore {
    /// A store that keeps the newest `keep_finished` finished expectations (open ones are
    /// always kept).
    pub fn with_capacity(keep_finished: usize) -> Self {
        InMemorySlaStore {
            book: Mutex::new(Book::default()),
            keep_finished,
        }
    }
}

impl Book {
    fn count(&mut self, sla: &str, from: Option<ExpectationState>, to: ExpectationState) {
        let status = self
            .counts
            .entry(sla.to_owned())
            .or_insert_with(|| SlaStatus::new(sla));
        if let Some(from) = from {
            let count = match from {
                ExpectationState::Pending => &mut status.pending,
                ExpectationState::Fulfilled => &mut status.fulfilled,
                ExpectationState::FulfilledLate => &mut status.fulfilled_late,
                ExpectationState::Breached => &mut status.breached,
            };
            *count = count.saturating_sub(1);
        }
        status.add(to, 1);
    }

    /// Forgets the oldest finished expectations beyond `keep`.
    fn trim(&mut self, keep: usize) {
        while self.finished.len() > keep {
            let Some((sla, id)) = self.finished.pop_front() else {
                return;
            };
            let key = (sla, id);
            // A reopened expectation is pending again: it stays.
            if self
                .expectations
                .get(&key)
                .is_some_and(|e| e.state != ExpectationState::Pending)
            {
                if let Some(expectation) = self.expectations.remove(&key) {
                    let index = (expectation.sla, expectation.key);
                    if let Some(ids) = self.by_key.get_mut(&index) {
                        ids.retain(|other| *other != id);
                        if ids.is_empty() {
                            self.by_key.remove(&index);
                        }
                    }
                }
            }
        }
    }
}

#[async_trait]
impl SlaStore for InMemorySlaStore {
    fn durable(&self) -> bool {
        false
    }

    async fn open(&self, expectations: &[NewExpectation]) -> Result<u64, SlaStoreError> {
        let mut book = self.book.lock();
        let mut opened = 0;
        for new in expectations {
            let id = (new.sla.clone(), new.a_message_id);
            if book.expectations.contains_key(&id) {
                continue;
            }
            book.expectations.insert(id, SlaExpectation::open(new));
            book.by_key
                .entry((new.sla.clone(), new.key.clone()))
                .or_default()
                .push(new.a_message_id);
            book.due
                .insert((new.due_at, new.sla.clone(), new.a_message_id));
            book.count(&new.sla, None, ExpectationState::Pending);
            opened += 1;
        }
        Ok(opened)
    }

    async fn fulfil(
        &self,
        sla: &str,
        key: &str,
        by: MessageId,
        at: DateTime<Utc>,
    ) -> Result<Vec<Fulfilment>, SlaStoreError> {
        let mut book = self.book.lock();
        let Some(ids) = book.by_key.remove(&(sla.to_owned(), key.to_owned())) else {
            return Ok(Vec::new());
        };
        let mut moved = Vec::new();
        for id in ids {
            let Some(expectation) = book.expectations.get_mut(&(sla.to_owned(), id)) else {
                continue;
            };
            if !expectation.state.accepts_fulfilment() {
                continue;
            }
            let from = expectation.state;
            let to = from.fulfilled_at(at, expectation.due_at);
            expectation.state = to;
            expectation.fulfilled_at = Some(at);
            expectation.fulfilled_by = Some(by);
            let due = expectation.due_at;
            if from == ExpectationState::Pending {
                book.due.remove(&(due, sla.to_owned(), id));
                book.finished.push_back((sla.to_owned(), id));
            }
            book.count(sla, Some(from), to);
            moved.push(Fulfilment::new(id, to));
        }
        book.trim(self.keep_finished);
        Ok(moved)
    }

    async fn sweep(&self, limit: usize) -> Result<Vec<SlaBreached>, SlaStoreError> {
        let now = Utc::now();
        let mut book = self.book.lock();
        let mut breached = Vec::new();
        while breached.len() < limit {
            let Some(first) = book.due.first().cloned() else {
                break;
            };
            if first.0 > now {
                break;
            }
            book.due.remove(&first);
            let (due_at, sla, id) = first;
            let Some(expectation) = book.expectations.get_mut(&(sla.clone(), id)) else {
                continue;
            };
            expectation.state = ExpectationState::Breached;
            expectation.breached_at = Some(now);
            breached.push(SlaBreached {
                sla: sla.clone(),
                key: expectation.key.clone(),
                a_message_id: id,
                due_at,
                breached_at: now,
            });
            book.count(
                &sla,
                Some(ExpectationState::Pending),
                ExpectationState::Breached,
            );
            book.finished.push_back((sla, id));
        }
        book.trim(self.keep_finished);
        Ok(breached)
    }

    fn delivers_breaches(&self) -> bool {
        false
    }

    async fn reopen(&self, breach: &SlaBreached) -> Result<(), SlaStoreError> {
        let mut book = self.book.lock();
        let id = (breach.sla.clone(), breach.a_message_id);
        let Some(expectation) = book.expectations.get_mut(&id) else {
            return Ok(());
        };
        if expectation.state != ExpectationState::Breached {
            return Ok(());
        }
        expectation.state = ExpectationState::Pending;
        expectation.breached_at = None;
        let due = expectation.due_at;
        book.due
            .insert((due, breach.sla.clone(), breach.a_message_id));
        book.count(
            &breach.sla,
            Some(ExpectationState::Breached),
            ExpectationState::Pending,
        );
        Ok(())
    }

    async fn status(&self) -> Result<Vec<SlaStatus>, SlaStoreError> {
        let book = self.book.lock();
        let mut counts = book.counts.clone();
        for (due, sla, _) in &book.due {
            if let Some(status) = counts.get_mut(sla) {
                if status.next_due.is_none() {
                    status.next_due = Some(*due);
                }
            }
        }
        Ok(counts.into_values().collect())
    }

    async fn expectation(
        &self,
        sla: &str,
        a_message_id: MessageId,
    ) -> Result<Option<SlaExpectation>, SlaStoreError> {
        Ok(self
            .book
            .lock()
            .expectations
            .get(&(sla.to_owned(), a_message_id))
            .cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn new(sla: &str, key: &str, due_in_ms: i64) -> NewExpectation {
        let now = Utc::now();
        let mut new = NewExpectation {
            sla: sla.into(),
            key: key.into(),
            a_message_id: MessageId::new(),
            opened_at: now,
            due_at: now,
        };
        new.due_at = now + chrono::Duration::milliseconds(due_in_ms);
        new
    }

    #[tokio::test]
    async fn opening_twice_keeps_one_and_a_b_fulfils_every_open_expectation_of_its_key() {
        let store = InMemorySlaStore::default();
        let (a1, a2, other) = (
            new("s", "7", 60_000),
            new("s", "7", 60_000),
            new("s", "8", 1),
        );
        assert_eq!(
            store
                .open(&[a1.clone(), a2.clone(), other])
                .await
                .expect("in memory"),
            3
        );
        assert_eq!(
            store
                .open(std::slice::from_ref(&a1))
                .await
                .expect("in memory"),
            0
        );
        let moved = store
            .fulfil("s", "7", MessageId::new(), Utc::now())
            .await
            .expect("in memory");
        assert_eq!(moved.len(), 2);
        assert!(moved.iter().all(|f| f.state == ExpectationState::Fulfilled));
        assert!(store
            .fulfil("s", "7", MessageId::new(), Utc::now())
            .await
            .expect("in memory")
            .is_empty());
        let status = store.status().await.expect("in memory");
        assert_eq!((status[0].pending, status[0].fulfilled), (1, 2));
    }

    #[tokio::test]
    async fn a_due_expectation_is_breached_once_then_fulfilled_late_and_can_be_reopened() {
        let store = InMemorySlaStore::default();
        let late = new("s", "k", 1);
        store
            .open(std::slice::from_ref(&late))
            .await
            .expect("in memory");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let breached = store.sweep(10).await.expect("in memory");
        assert_eq!(breached.len(), 1);
        assert_eq!(breached[0].a_message_id, late.a_message_id);
        assert!(
            store.sweep(10).await.expect("in memory").is_empty(),
            "breached once"
        );
        store.reopen(&breached[0]).await.expect("in memory");
        assert_eq!(
            store.sweep(10).await.expect("in memory").len(),
            1,
            "reopened, swept again"
        );
        let moved = store
            .fulfil("s", "k", MessageId::new(), Utc::now())
            .await
            .expect("in memory");
        assert_eq!(moved[0].state, ExpectationState::FulfilledLate);
        let record = store
            .expectation("s", late.a_message_id)
            .await
            .expect("in memory")
            .expect("kept");
        assert_eq!(record.state, ExpectationState::FulfilledLate);
        assert!(record.breached_at.is_some() && record.fulfilled_at.is_some());
        let status = store.status().await.expect("in memory");
        assert_eq!(
            (
                status[0].pending,
                status[0].breached,
                status[0].fulfilled_late
            ),
            (0, 0, 1)
        );
    }

    #[tokio::test]
    async fn finished_expectations_beyond_the_bound_are_forgotten_but_still_counted() {
        let store = InMemorySlaStore::with_capacity(2);
        for n in 0..5 {
            let expectation = new("s", &n.to_string(), 60_000);
            store.open(&[expectation]).await.expect("in memory");
            store
                .fulfil("s", &n.to_string(), MessageId::new(), Utc::now())
                .await
                .expect("in memory");
        }
        assert_eq!(store.book.lock().expectations.len(), 2);
        assert_eq!(store.status().await.expect("in memory")[0].fulfilled, 5);
    }
}
