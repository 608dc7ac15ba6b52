//! The port that readers and operators use: the event feed (stored events in commit order) and the
//! operations on a durable store (status, dead letters, re-drive). The CLI, an HTTP feed or a console
//! talk to `dyn OutboxOps`, whatever database is behind it.

use crate::dead_letter::{DeadLetterId, DeadLetterStore};
use crate::outbox::{OutboxStatus, StoredEvent};
use async_trait::async_trait;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// A feed or ops call failed; the source is the store's own error.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct OpsError {
    context: &'static str,
    #[source]
    source: Box<dyn StdError + Send + Sync>,
}

impl OpsError {
    /// Wraps a store's error with what was being done.
    pub fn new(context: &'static str, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        OpsError {
            context,
            source: source.into(),
        }
    }
}

/// Stored events in commit order, for readers that keep their own offset (the seeds' "event store +
/// API").
#[async_trait]
pub trait EventFeed: Send + Sync + fmt::Debug {
    /// Events after `offset` (exclusive), in position order, at most `limit`. Keep the last returned
    /// `position` as your next offset; a row that commits late is never skipped.
    ///
    /// # Errors
    /// When the store cannot be read.
    async fn events_after(&self, offset: i64, limit: usize) -> Result<Vec<StoredEvent>, OpsError>;
}

/// Operations on a durable outbox, for ops tools.
#[async_trait]
pub trait OutboxOps: EventFeed {
    /// Counts by state and the lag.
    ///
    /// # Errors
    /// When the store cannot be read.
    async fn status(&self) -> Result<OutboxStatus, OpsError>;

    /// The dead letters kept in the same store.
    fn dead_letters(&self) -> Arc<dyn DeadLetterStore>;

    /// Moves a dead letter back into the outbox, due now and for its handler only, so that a running
    /// relay delivers it (no handler code needed here). Returns the outbox row, or `None` when no
    /// dead letter has this id.
    ///
    /// # Errors
    /// When the store cannot be written (nothing changes).
    async fn redrive(&self, id: DeadLetterId) -> Result<Option<i64>, OpsError>;
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
#[async_trait]
impl<D: crate::outbox::Dialect> EventFeed for crate::outbox::SqlOutbox<D> {
    async fn events_after(&self, offset: i64, limit: usize) -> Result<Vec<StoredEvent>, OpsError> {
        crate::outbox::SqlOutbox::events_after(self, offset, limit)
            .await
            .map_err(|e| OpsError::new("reading the event feed", e))
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
#[async_trait]
impl<D: crate::outbox::Dialect> OutboxOps for crate::outbox::SqlOutbox<D> {
    async fn status(&self) -> Result<OutboxStatus, OpsError> {
        crate::outbox::SqlOutbox::status(self)
            .await
            .map_err(|e| OpsError::new("reading the outbox status", e))
    }

    fn dead_letters(&self) -> Arc<dyn DeadLetterStore> {
        Arc::new(crate::outbox::SqlOutbox::dead_letters(self))
    }

    async fn redrive(&self, id: DeadLetterId) -> Result<Option<i64>, OpsError> {
        crate::outbox::SqlOutbox::dead_letters(self)
            .redrive_to_outbox(id)
            .await
            .map_err(|e| OpsError::new("re-driving a dead letter into the outbox", e))
    }
}
