//! What the relay reads from and writes back to a SQL backend, and the conversions between a
//! backend's rows and the public stored-message form ([`StoredMessage`], [`Settlement`]).

use super::OutboxError;
use crate::model::envelope::{Envelope, MessageId};
use crate::model::stored_message::{Progress, Settlement, StoredMessage};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::fmt;
use std::time::Duration;

/// A row a relay holds a lease on.
#[derive(Debug, Clone)]
pub(crate) struct ClaimedRow {
    pub(crate) id: i64,
    pub(crate) message_id: String,
    pub(crate) message_type: String,
    pub(crate) key: Option<String>,
    pub(crate) payload: String,
    pub(crate) headers: String,
    pub(crate) occurred_at: DateTime<Utc>,
    pub(crate) fail_count: i32,
    pub(crate) handlers_done: Vec<String>,
    pub(crate) only_handlers: Option<Vec<String>>,
}

/// How one delivery of a row ended, to be written back.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Every handler finished: `failed` when one of them failed for good.
    Done {
        id: i64,
        failed: bool,
        handlers_done: Vec<String>,
        error: Option<String>,
        /// A new message id for a row whose own cannot be read: written into the row, so that the
        /// row, its dead letters and their re-drive agree.
        new_message_id: Option<MessageId>,
    },
    /// Some handler failed before its last attempt: try again after `delay`.
    Retry {
        id: i64,
        handlers_done: Vec<String>,
        delay: Duration,
        error: String,
        /// As for `Done`.
        new_message_id: Option<MessageId>,
    },
    /// Nothing ran (a pool rejected, shutdown): give the row back without counting an attempt.
    Release { id: i64 },
}

/// A backend's relay side.
#[async_trait]
pub(crate) trait Backend: Send + Sync + fmt::Debug + 'static {
    /// Leases up to `limit` due rows: never two of one key, never a key with an earlier pending row,
    /// never a key that has a row leased by anyone (in flight).
    async fn claim(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedRow>, OutboxError>;
    /// Extends the leases `owner` holds on `ids` to `lease` from now, in one statement. Returns
    /// the ids it renewed; an id missing from the answer is no longer leased by `owner` (its lease
    /// expired and another relay took the row, or the row was changed by hand): the lease is lost.
    async fn renew(
        &self,
        owner: &str,
        ids: &[i64],
        lease: Duration,
    ) -> Result<Vec<i64>, OutboxError>;
    /// Writes the outcomes back in one transaction (rows whose lease was lost are left alone).
    async fn finish(&self, owner: &str, outcomes: Vec<Outcome>) -> Result<(), OutboxError>;
    /// Writes a batch's outcomes, then leases the next batch (see
    /// `MessageSource::settle_and_receive`); SQLite does both in one transaction.
    async fn finish_and_claim(
        &self,
        owner: &str,
        outcomes: Vec<Outcome>,
        limit: usize,
        lease: Duration,
    ) -> (
        Result<(), OutboxError>,
        Result<Vec<ClaimedRow>, OutboxError>,
    ) {
        let finished = self.finish(owner, outcomes).await;
        (finished, self.claim(owner, limit, lease).await)
    }
    /// Whether a batch's write-back may run beside the next claim (true where writers run
    /// concurrently; SQLite's single writer would only make them wait for each other's lock).
    fn overlaps_write_back(&self) -> bool {
        true
    }
    /// Something that waits for new rows.
    async fn waiter(&self) -> Box<dyn Waiter>;
    /// Deletes finished rows older than `older_than`, `batch` rows per statement.
    async fn delete_finished(&self, older_than: Duration, batch: usize)
        -> Result<u64, OutboxError>;
}

/// Waits for new rows (`LISTEN` on PostgreSQL, a timer on SQLite).
#[async_trait]
pub(crate) trait Waiter: Send {
    async fn wait(&mut self, timeout: Duration);
}

/// Waits by sleeping.
#[derive(Debug)]
pub(crate) struct Sleeper;

#[async_trait]
impl Waiter for Sleeper {
    async fn wait(&mut self, timeout: Duration) {
        tokio::time::sleep(timeout).await;
    }
}

impl ClaimedRow {
    /// The public stored form of the row (its `fail_count` becomes the attempt number).
    pub(crate) fn to_stored(&self) -> StoredMessage {
        StoredMessage {
            message_id: self.message_id.clone(),
            name: self.message_type.clone(),
            key: self.key.clone(),
            payload: self.payload.clone(),
            headers: self.headers.clone(),
            occurred_at: self.occurred_at,
            attempt: u32::try_from(self.fail_count.max(0))
                .unwrap_or(u32::MAX)
                .saturating_add(1),
            progress: Progress::from_stored(&self.handlers_done),
            only_handlers: self.only_handlers.clone(),
        }
    }
}

impl Outcome {
    /// What to write back to row `id` for the engine's settlement.
    pub(crate) fn from_settlement(id: i64, settlement: Settlement) -> Self {
        match settlement {
            Settlement::Done { progress } => Outcome::Done {
                id,
                failed: false,
                handlers_done: progress.to_stored(),
                error: None,
                new_message_id: None,
            },
            Settlement::FailedForGood {
                progress,
                error,
                replacement_id,
            } => Outcome::Done {
                id,
                failed: true,
                handlers_done: progress.to_stored(),
                error,
                new_message_id: replacement_id,
            },
            Settlement::Retry {
                progress,
                delay,
                error,
                replacement_id,
            } => Outcome::Retry {
                id,
                handlers_done: progress.to_stored(),
                delay,
                error,
                new_message_id: replacement_id,
            },
            Settlement::Release => Outcome::Release { id },
        }
    }
}

/// The row and its new message id, for an outcome that replaces an unreadable one.
pub(crate) fn new_message_id(outcome: &Outcome) -> Option<(i64, MessageId)> {
    match outcome {
        Outcome::Done {
            id,
            new_message_id: Some(new),
            ..
        }
        | Outcome::Retry {
            id,
            new_message_id: Some(new),
            ..
        } => Some((*id, *new)),
        _ => None,
    }
}

/// Forgets that `handler` finished, so the relay runs it again (re-drive).
pub(crate) fn forget(done: &mut Vec<String>, handler: &str) {
    let mut progress = Progress::from_stored(done);
    progress.forget(handler);
    *done = progress.to_stored();
}

/// JSON array text of handler names, or `None` when empty.
pub(crate) fn handlers_json(handlers: &[String]) -> Option<String> {
    if handlers.is_empty() {
        None
    } else {
        serde_json::to_string(handlers).ok()
    }
}

/// Parses a JSON array of handler names (NULL → empty).
pub(crate) fn parse_handlers(text: Option<&str>) -> Result<Vec<String>, OutboxError> {
    match text {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| OutboxError::Corrupt(format!("handler list `{text}`: {e}"))),
    }
}

/// The stored headers JSON for an envelope.
pub(crate) fn headers_json(envelope: &Envelope) -> Result<String, OutboxError> {
    Ok(StoredMessage::headers_json(envelope))
}
