//! The default dead-letter store: bounded, in memory.

use crate::model::dead_letter::DeadLetter;
use crate::model::dead_letter::DeadLetterId;
use crate::ports::dead_letters::DeadLetterError;
use crate::ports::dead_letters::DeadLetterStore;
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bounded in-memory dead letters (the default). When full, the oldest entry is evicted with an
/// error log that carries it in full, and counted in [`evicted`](Self::evicted); use a SQL store
/// where dead letters must survive restarts.
#[derive(Debug)]
pub struct InMemoryDeadLetters {
    capacity: usize,
    next_id: AtomicU64,
    evicted: AtomicU64,
    /// `herald_dead_letters_evicted_total`, resolved once with the recorder current at construction.
    evicted_metric: metrics::Counter,
    entries: Mutex<VecDeque<DeadLetter>>,
}

impl InMemoryDeadLetters {
    /// Default capacity: 10,000 entries.
    pub const DEFAULT_CAPACITY: usize = 10_000;

    /// A store that keeps at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        InMemoryDeadLetters {
            capacity: capacity.max(1),
            next_id: AtomicU64::new(1),
            evicted: AtomicU64::new(0),
            evicted_metric: metrics::counter!("herald_dead_letters_evicted_total"),
            entries: Mutex::new(VecDeque::new()),
        }
    }
}

impl Default for InMemoryDeadLetters {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

#[async_trait]
impl DeadLetterStore for InMemoryDeadLetters {
    async fn put(&self, mut entry: DeadLetter) -> Result<DeadLetterId, DeadLetterError> {
        let mut entries = self.entries.lock();
        // One entry per message and handler, as the SQL stores keep it: a second dead letter (a
        // message delivered again after a lost lease) updates the first.
        if let Some(first) = entries
            .iter_mut()
            .find(|e| e.envelope.id == entry.envelope.id && e.handler == entry.handler)
        {
            first.reason = entry.reason;
            first.failure = entry.failure;
            first.attempts = entry.attempts;
            first.last_error = entry.last_error;
            first.last_failed_at = entry.last_failed_at;
            first.dead_lettered_at = entry.dead_lettered_at;
            return Ok(first.id);
        }
        let id = DeadLetterId(self.next_id.fetch_add(1, Ordering::Relaxed) as i64);
        entry.id = id;
        if entries.len() >= self.capacity {
            if let Some(oldest) = entries.pop_front() {
                self.evicted.fetch_add(1, Ordering::Relaxed);
                self.evicted_metric.increment(1);
                tracing::error!(
                    dead_letter = %serde_json::to_string(&oldest).unwrap_or_default(),
                    capacity = self.capacity,
                    "in-memory dead letters are full: evicting the oldest entry (logged here in full); use a durable dead-letter store or raise the capacity"
                );
            }
        }
        entries.push_back(entry);
        Ok(id)
    }

    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, DeadLetterError> {
        Ok(self.entries.lock().iter().take(limit).cloned().collect())
    }

    async fn get(&self, id: DeadLetterId) -> Result<Option<DeadLetter>, DeadLetterError> {
        Ok(self.entries.lock().iter().find(|e| e.id == id).cloned())
    }

    async fn take(&self, id: DeadLetterId) -> Result<Option<DeadLetter>, DeadLetterError> {
        let mut entries = self.entries.lock();
        Ok(entries
            .iter()
            .position(|e| e.id == id)
            .and_then(|at| entries.remove(at)))
    }

    async fn purge(&self, id: Option<DeadLetterId>) -> Result<u64, DeadLetterError> {
        let mut entries = self.entries.lock();
        let before = entries.len();
        match id {
            Some(id) => entries.retain(|e| e.id != id),
            None => entries.clear(),
        }
        Ok((before - entries.len()) as u64)
    }

    async fn count(&self) -> Result<u64, DeadLetterError> {
        Ok(self.entries.lock().len() as u64)
    }

    fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}
