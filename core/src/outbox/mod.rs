//! The transactional outbox (the seeds' §7–8): a message is written into the `herald_outbox` table in
//! the same database transaction as the state change, and a [`Relay`] delivers it to the handlers
//! after commit. Rolled back means never delivered; committed means delivered at least once.
//!
//! Two backends share one design:
//! - [`SqliteOutbox`] (feature `sqlite`, the default): one file in WAL mode, for one process.
//! - [`PgOutbox`] (feature `postgres`): several relays, in one or many processes, share the table with
//!   `FOR UPDATE SKIP LOCKED` and leases, and wake on `LISTEN/NOTIFY`.
//!
//! ```no_run
//! # #[cfg(feature = "sqlite")]
//! # async fn run(herald: herald_core::Herald) -> Result<(), Box<dyn std::error::Error>> {
//! use herald_core::outbox::{self, SqliteOutbox};
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct OrderPlaced { id: u64 }
//! # impl herald_core::Message for OrderPlaced { const NAME: &'static str = "order.placed";
//! #   const KIND: herald_core::MessageKind = herald_core::MessageKind::Event; type Reply = (); }
//! # impl herald_core::Event for OrderPlaced {}
//! let pool = outbox::sqlite::connect("app.db").await?;
//! let outbox = SqliteOutbox::new(pool.clone()).await?; // applies Herald's migrations
//! let relay = outbox.relay(&herald).start();
//!
//! let mut tx = pool.begin().await?;
//! // ... the state change, on `&mut *tx` ...
//! outbox.publish(&mut *tx, OrderPlaced { id: 7 }).await?;
//! tx.commit().await?; // only now can the relay see the event
//! # relay.stop().await; Ok(()) }
//! ```
//!
//! # Rows
//! `status` is `pending` until every handler has either succeeded or reached its failure
//! disposition (dead letter, log, ignore): then `processed` (all succeeded) or `failed` (at least one
//! did not; see the dead letters). Progress is kept per handler in `handlers_done`, so a retry runs
//! only the handlers that have not finished. Processed rows stay for the retention period: they are
//! the event store read by [`events_after`](SqliteOutbox::events_after).

mod relay;
pub(crate) mod row;
mod schema;

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use relay::{Relay, RelayBuilder, RelayStats};
pub use row::OUTBOX_HANDLER;
pub use schema::{Migration, MIGRATIONS_TABLE};

#[cfg(feature = "postgres")]
pub use postgres::PgOutbox;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteOutbox;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Row statuses, as stored.
pub mod status {
    /// Waiting for (another) delivery attempt.
    pub const PENDING: &str = "pending";
    /// Every handler succeeded.
    pub const PROCESSED: &str = "processed";
    /// Finished, but at least one handler failed for good (dead-lettered, logged or ignored).
    pub const FAILED: &str = "failed";
}

/// An outbox operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The database reported an error.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[error("outbox database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database has no Herald schema (or an older one): run the migrations first.
    #[error("the database has no Herald outbox schema (table `herald_outbox` is missing): create the outbox with `SqliteOutbox::new`/`PgOutbox::new`, which applies Herald's migrations")]
    NoSchema,
    /// The database holds a schema newer than this build of Herald knows.
    #[error("the database's Herald schema is at version {found}, newer than this build knows ({known}): upgrade Herald")]
    SchemaTooNew {
        /// The version in the database.
        found: i64,
        /// The newest version this build ships.
        known: i64,
    },
    /// A message could not be serialized into the outbox.
    #[error("the message could not be serialized to JSON: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A stored value is not what Herald wrote.
    #[error("corrupt outbox row: {0}")]
    Corrupt(String),
    /// The database server did not answer the first connection in time.
    #[error("no answer from the database server within {0:?}: check its host and port, that it runs, and any firewall in between")]
    ConnectTimedOut(std::time::Duration),
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
    /// Finished rows where a handler failed for good (see the dead letters).
    pub failed: u64,
    /// Finished rows where every handler succeeded (kept for the retention period).
    pub processed: u64,
    /// When the oldest pending row was published.
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// Age of the oldest pending row: how far delivery lags behind publishing.
    pub lag: Option<Duration>,
    /// Dead letters stored in the same database.
    pub dead_letters: u64,
}

/// One stored event, as [`events_after`](SqliteOutbox::events_after) returns it.
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

/// A message made ready for an outbox row: its envelope, payload and headers as stored.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) struct NewRow {
    pub(crate) envelope: crate::envelope::Envelope,
    pub(crate) payload: String,
    pub(crate) headers: String,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl NewRow {
    pub(crate) fn new<M: crate::message::Message>(
        message: &M,
        options: crate::envelope::PublishOptions,
    ) -> Result<Self, OutboxError> {
        let mut envelope = crate::envelope::Envelope::new(std::borrow::Cow::Borrowed(M::NAME));
        envelope.key = message.key();
        envelope.idempotency_key = options.idempotency_key;
        envelope.headers = options.headers;
        let payload = serde_json::to_string(message)?;
        let headers = row::headers_json(&envelope)?;
        Ok(NewRow {
            envelope,
            payload,
            headers,
        })
    }
}

/// Columns bound per row by `publish_all` (message_id, message_type, key, payload, headers,
/// occurred_at).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const BULK_COLUMNS: usize = 6;

/// Relay and retention settings shared by both backends.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(30);
