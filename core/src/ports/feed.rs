//! The port that readers and operators use: the event feed (stored events in commit order) and the
//! operations on a durable store (status, dead letters, re-drive). The CLI, an HTTP feed or a console
//! talk to `dyn OutboxOps`, whatever database is behind it.

use crate::model::dead_letter::DeadLetterId;
use crate::model::sla::SlaStatus;

use crate::ports::dead_letters::DeadLetterStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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

    /// The SLA expectations kept in the same store, counted by SLA and state (empty when the
    /// store keeps none: the default).
    ///
    /// # Errors
    /// When the store cannot be read.
    async fn sla_status(&self) -> Result<Vec<SlaStatus>, OpsError> {
        Ok(Vec::new())
    }

    /// Ordering keys held up by a failing message: the key's oldest pending message has failed at
    /// least once and waits for its next attempt, and later messages of the key wait behind it
    /// (per-key order). Oldest first, at most `limit`. Empty when the store cannot tell (the
    /// default).
    ///
    /// # Errors
    /// When the store cannot be read.
    async fn stuck_keys(&self, limit: usize) -> Result<Vec<StuckKey>, OpsError> {
        let _ = limit;
        Ok(Vec::new())
    }
}

/// An ordering key whose oldest pending message keeps failing while later messages of the key
/// wait behind it ([`OutboxOps::stuck_keys`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StuckKey {
    /// The ordering key.
    pub key: String,
    /// The outbox row that holds the key up (its oldest pending message).
    pub head: i64,
    /// That message's type (wire name).
    pub message_type: String,
    /// How many of its attempts failed so far.
    pub failed_attempts: u64,
    /// Its last error.
    pub last_error: Option<String>,
    /// When it last failed.
    pub last_failed_at: Option<DateTime<Utc>>,
    /// Later pending messages of the key, waiting behind it.
    pub waiting: u64,
}

impl StuckKey {
    /// A stuck key (for stores outside herald-core that implement [`OutboxOps::stuck_keys`]).
    pub fn new(key: impl Into<String>, head: i64, message_type: impl Into<String>) -> Self {
        StuckKey {
            key: key.into(),
            head,
            message_type: message_type.into(),
            failed_attempts: 0,
            last_error: None,
            last_failed_at: None,
            waiting: 0,
        }
    }
}

/// What the outbox holds now (`herald outbox status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxStatus {
    /// Rows waiting for delivery, due now or later (in flight included).
    pub pending: u64,
    /// Pending rows that a relay holds a live lease on right now.
    pub in_flight: u64,
    /// Pending rows that failed at least once and wait for their next attempt.
    pub retrying: u64,
    /// Pending rows published with a delivery time still to come
    /// ([`PublishOptions::deliver_at`](crate::PublishOptions::deliver_at)); they do not count in
    /// the lag until then.
    #[serde(default)]
    pub delayed: u64,
    /// Finished rows where a handler failed for good (see the dead letters).
    pub failed: u64,
    /// Finished rows where every handler succeeded (kept for the retention period).
    pub processed: u64,
    /// Since when the longest-waiting pending row has been due: its publish, or for a delayed row
    /// its delivery time (a row re-driven on PostgreSQL: its re-drive). Rows still waiting for
    /// their delivery time are left out.
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// How long that row has been due: how far delivery lags behind.
    pub lag: Option<Duration>,
    /// Dead letters stored in the same database.
    pub dead_letters: u64,
}

/// One stored event, as [`events_after`](EventFeed::events_after) returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The offset to pass to the next `events_after` call: strictly increasing in the returned order.
    pub position: i64,
    /// The outbox row id.
    pub id: i64,
    /// The message id.
    pub message_id: String,
    /// The message's wire name.
    pub message_type: String,
    /// The ordering key.
    pub key: Option<String>,
    /// The payload (a JSON string value when the stored text is not JSON).
    pub payload: serde_json::Value,
    /// Headers: idempotency key, correlation and causation ids, extras.
    pub headers: serde_json::Value,
    /// When it was published.
    pub occurred_at: DateTime<Utc>,
    /// Its delivery status (`pending`, `processed`, `failed`).
    pub status: String,
}
