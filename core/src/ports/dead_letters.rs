//! The dead-letter store the engine writes to, and its error.

use crate::model::dead_letter::DeadLetter;
use crate::model::dead_letter::DeadLetterId;
use async_trait::async_trait;
use std::fmt;

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
