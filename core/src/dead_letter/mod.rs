//! Dead letters: messages that did not succeed, kept with their history for inspection and re-drive.

use crate::envelope::Envelope;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "mysql")]
pub use mysql::MySqlDeadLetters;
#[cfg(feature = "postgres")]
pub use postgres::PgDeadLetters;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub use sql::SqlDeadLetters;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteDeadLetters;

/// Identifies one dead letter in its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeadLetterId(pub i64);

impl fmt::Display for DeadLetterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a message is in the dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// Its handler failed on every attempt (or with a permanent error).
    Failed,
    /// The pool overflowed under `DropNewest`/`DropOldest`.
    Overflow,
    /// The runtime shut down before it finished.
    Shutdown,
    /// The stored payload could not be decoded.
    Malformed,
    /// Its publisher gave up (dropped the `publish` future) while the job was to run, or ran, on the
    /// publisher's task (`CallerRuns`).
    Cancelled,
}

impl DeadLetterReason {
    /// The reason as stored (`failed`, `overflow`, `shutdown`, `malformed`, `cancelled`).
    pub fn as_str(&self) -> &'static str {
        match self {
            DeadLetterReason::Failed => "failed",
            DeadLetterReason::Overflow => "overflow",
            DeadLetterReason::Shutdown => "shutdown",
            DeadLetterReason::Malformed => "malformed",
            DeadLetterReason::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DeadLetterReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "failed" => Ok(DeadLetterReason::Failed),
            "overflow" => Ok(DeadLetterReason::Overflow),
            "shutdown" => Ok(DeadLetterReason::Shutdown),
            "malformed" => Ok(DeadLetterReason::Malformed),
            "cancelled" => Ok(DeadLetterReason::Cancelled),
            other => Err(format!("unknown dead-letter reason `{other}`")),
        }
    }
}

/// What kind of failure put a message in the dead letters, as data (no parsing of error text).
///
/// `None` on a [`DeadLetter`] means no attempt failed: the message was dropped on overflow, or was
/// still queued when the runtime shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The handler returned an error (retries, if any, were used up).
    Error,
    /// The handler returned an error marked [`permanent`](crate::HandlerError::permanent): no retry.
    PermanentError,
    /// The handler panicked.
    Panic,
    /// The attempt ran past the handler's `timeout`.
    Timeout,
    /// An extractor could not be built (state missing at run time, a failed inbox transaction, ...).
    Extraction,
    /// The stored message could not be decoded (bad payload, headers or id, unknown type).
    Malformed,
    /// The attempt was cancelled: its publisher dropped the `publish` future while the handler ran
    /// on the publisher's task (`CallerRuns`).
    Cancelled,
    /// The attempt was cut off by `shutdown` at its deadline.
    Shutdown,
}

impl FailureKind {
    /// The kind of a handler error.
    pub fn of(error: &crate::HandlerError) -> Self {
        use crate::HandlerErrorKind as K;
        match error.kind() {
            K::Panicked => FailureKind::Panic,
            K::TimedOut => FailureKind::Timeout,
            K::Extraction => FailureKind::Extraction,
            K::Malformed => FailureKind::Malformed,
            K::Shutdown => FailureKind::Shutdown,
            K::Cancelled => FailureKind::Cancelled,
            _ if error.is_permanent() => FailureKind::PermanentError,
            _ => FailureKind::Error,
        }
    }

    /// The kind as stored (`error`, `permanent_error`, `panic`, `timeout`, `extraction`,
    /// `malformed`, `cancelled`, `shutdown`).
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureKind::Error => "error",
            FailureKind::PermanentError => "permanent_error",
            FailureKind::Panic => "panic",
            FailureKind::Timeout => "timeout",
            FailureKind::Extraction => "extraction",
            FailureKind::Malformed => "malformed",
            FailureKind::Cancelled => "cancelled",
            FailureKind::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FailureKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            FailureKind::Error,
            FailureKind::PermanentError,
            FailureKind::Panic,
            FailureKind::Timeout,
            FailureKind::Extraction,
            FailureKind::Malformed,
            FailureKind::Cancelled,
            FailureKind::Shutdown,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == s)
        .ok_or_else(|| format!("unknown failure kind `{s}`"))
    }
}

/// A message that did not succeed for one handler, with everything needed to understand and re-drive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Store id (assigned by the store).
    pub id: DeadLetterId,
    /// The original envelope (id, name, time, key, headers).
    pub envelope: Envelope,
    /// The payload as JSON (the raw text when it could not be decoded).
    pub payload: serde_json::Value,
    /// The handler it failed for.
    pub handler: String,
    /// Why it is here.
    pub reason: DeadLetterReason,
    /// What kind of failure the last attempt was; `None` when no attempt failed (overflow, or
    /// still queued at shutdown).
    #[serde(default)]
    pub failure: Option<FailureKind>,
    /// Attempts made.
    pub attempts: u32,
    /// The first error (a panic's message included).
    pub first_error: Option<String>,
    /// The last error.
    pub last_error: Option<String>,
    /// When the first attempt failed.
    pub first_failed_at: Option<DateTime<Utc>>,
    /// When the last attempt failed.
    pub last_failed_at: Option<DateTime<Utc>>,
    /// When it entered the dead letters.
    pub dead_lettered_at: DateTime<Utc>,
}

/// Where dead letters are kept. The in-memory store is the default; the SQL stores survive restarts.
#[async_trait]
pub trait DeadLetterStore: Send + Sync + fmt::Debug + 'static {
    /// Stores an entry (its `id` is ignored and assigned by the store). A second entry for the same
    /// message id and handler updates the first (reason, failure kind, attempts, last error and
    /// times; the first error and first failure time are kept) and returns its id.
    ///
    /// # Errors
    /// When the store cannot write; the caller logs the entry in full so it is not lost silently.
    async fn put(&self, entry: DeadLetter) -> Result<DeadLetterId, DeadLetterError>;
    /// Oldest first, at most `limit`.
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, DeadLetterError>;
    /// One entry.
    async fn get(&self, id: DeadLetterId) -> Result<Option<DeadLetter>, DeadLetterError>;
    /// Removes and returns one entry (for re-drive).
    async fn take(&self, id: DeadLetterId) -> Result<Option<DeadLetter>, DeadLetterError>;
    /// Removes entries: one, or all when `id` is `None`. Returns how many were removed.
    async fn purge(&self, id: Option<DeadLetterId>) -> Result<u64, DeadLetterError>;
    /// How many entries are stored.
    async fn count(&self) -> Result<u64, DeadLetterError>;
    /// How many entries this store has evicted to stay within its bound since it was created
    /// (each was logged in full at error level when it went). Stores that never evict return 0.
    fn evicted(&self) -> u64 {
        0
    }
}

/// A dead-letter store failed. The cause is kept as the error's [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterError {
    /// The database refused or could not run a statement (lost connection, missing table, no
    /// rights, ...): check the database, and that Herald's migrations ran (`SqlOutbox::new`).
    #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
    #[error("dead-letter store database error: {0}")]
    Database(#[source] sqlx::Error),
    /// A stored entry is not what Herald wrote (changed by hand or by another tool): fix or purge
    /// that entry.
    #[error("corrupt dead letter: {0}")]
    Corrupt(String),
    /// Another store's failure (a store outside herald-core, or an outbox error that is neither
    /// of the above), with its cause.
    #[error("dead-letter store error: {0}")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl DeadLetterError {
    /// Wraps any error of a store outside herald-core.
    pub fn other(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        DeadLetterError::Other(error.into())
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
impl From<sqlx::Error> for DeadLetterError {
    fn from(error: sqlx::Error) -> Self {
        DeadLetterError::Database(error)
    }
}

impl From<crate::outbox::OutboxError> for DeadLetterError {
    fn from(error: crate::outbox::OutboxError) -> Self {
        use crate::outbox::OutboxError;
        match error {
            #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
            OutboxError::Database(error) => DeadLetterError::Database(error),
            OutboxError::Corrupt(what) => DeadLetterError::Corrupt(what),
            other => DeadLetterError::Other(Box::new(other)),
        }
    }
}

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
