//! The transactional outbox (the seeds' §7–8): a message is written into the `herald_outbox` table in
//! the same database transaction as the state change, and a [`Relay`] delivers it to the handlers
//! after commit. Rolled back means never delivered; committed means delivered at least once.
//!
//! One store, [`SqlOutbox<D>`](SqlOutbox), generic over the SQL [`Dialect`] `D`, serves three
//! databases (the dialect brings its SQL text, value encoders and the few algorithms that differ;
//! see `dialect.rs`):
//! - [`SqliteOutbox`] (feature `sqlite`, the default): one file in WAL mode, for one process.
//! - [`PgOutbox`] (feature `postgres`): several relays, in one or many processes, share the table with
//!   `FOR UPDATE SKIP LOCKED` and leases, and wake on `LISTEN/NOTIFY`.
//! - [`MySqlOutbox`] (feature `mysql`, MySQL 8 or MariaDB 10.6+): as PostgreSQL, with
//!   `FOR UPDATE SKIP LOCKED` and leases; relays wake by polling.
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
//!
//! // Without a transaction of your own: a pooled connection (the row commits at once).
//! outbox.publish(&mut *pool.acquire().await?, OrderPlaced { id: 8 }).await?;
//! # relay.stop().await; Ok(()) }
//! ```
//!
//! # Publishing
//! `publish`, `publish_with` and `publish_all` take the transaction (`&mut *tx` or `&mut tx`, any
//! [`OutboxConnection`]), and their futures are `Send` and can be awaited in `tokio::spawn`, a web handler or a Herald handler
//! (on its [inbox](crate::inbox) transaction). A payload whose JSON is larger than the outbox's
//! limit ([`DEFAULT_MAX_PAYLOAD_BYTES`], 1 MiB, or `max_payload_bytes(n)`) is refused before anything
//! is written; every error hands the message back ([`OutboxPublishError`]).
//!
//! # Rows
//! `status` is `pending` until every handler has either succeeded or reached its failure
//! disposition (dead letter, log, ignore): then `processed` (all succeeded) or `failed` (at least one
//! did not; see the dead letters). Progress is kept per handler in `handlers_done`, so a retry runs
//! only the handlers that have not finished. Processed rows stay for the retention period: they are
//! the event store read by [`events_after`](SqliteOutbox::events_after).

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) mod dialect;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod local_wake;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod ops;
mod relay;
// The SQL backends' relay side and its adapter to `MessageSource`: nothing else uses them.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) mod row;
mod schema;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) mod sla;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod source;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod sql;

#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use crate::model::stored_message::OUTBOX_HANDLER;
/// The ops port's data, re-exported where they were first defined.
pub use crate::ports::feed::{OutboxStatus, StoredEvent, StuckKey};
pub use relay::{Relay, RelayBuilder, RelayStats, RelayWatch};
pub use schema::{Migration, MIGRATIONS_TABLE};

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub use dialect::Dialect;
#[cfg(feature = "mysql")]
pub use mysql::MySqlOutbox;
#[cfg(feature = "postgres")]
pub use postgres::PgOutbox;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub use sql::{is_transient, SqlOutbox};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteOutbox;

use std::fmt;
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
    #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
    #[error("outbox database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database has no Herald schema (or an older one): run the migrations first.
    #[error("the database has no Herald outbox schema (table `herald_outbox` is missing): create the outbox with `SqliteOutbox::new`/`PgOutbox::new`/`MySqlOutbox::new`, which applies Herald's migrations")]
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

/// The default largest serialized JSON payload an outbox accepts at publish: 1 MiB. Raise or lower
/// it per outbox with [`SqlOutbox::max_payload_bytes`].
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// An outbox publish (`publish`, `publish_with`, `publish_all`) that wrote nothing. The message
/// comes back inside the error, so the caller never loses it; for `publish_all`, `M` is the
/// `Vec` of every message of the batch, in order.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum OutboxPublishError<M> {
    /// The serialized JSON payload is larger than the outbox's limit. Nothing was written (for
    /// `publish_all`: no message of the batch).
    #[error("the `{name}` payload{} is {size} bytes of JSON, over this outbox's limit of {limit} bytes: nothing was written and the message is returned to you; make it smaller (keep large data elsewhere and publish a reference to it) or raise the limit with `.max_payload_bytes({size})` on the outbox", batch_position(*.index))]
    TooLarge {
        /// The message (for `publish_all`: every message of the batch), returned untouched.
        message: M,
        /// The message's wire name.
        name: &'static str,
        /// The size of its serialized JSON payload, in bytes.
        size: usize,
        /// The outbox's limit, in bytes.
        limit: usize,
        /// For `publish_all`: the position in the batch of the first message over the limit.
        index: Option<usize>,
    },
    /// The message could not be serialized, or the database refused the write. The message is
    /// returned to you; roll the transaction back (a batch may be partly written in it), then retry.
    #[error("the message was not written to the outbox ({source}); it is returned to you: roll the transaction back, then retry")]
    Failed {
        /// The message (for `publish_all`: every message of the batch), returned untouched.
        message: M,
        /// What went wrong.
        #[source]
        source: OutboxError,
    },
}

fn batch_position(index: Option<usize>) -> String {
    index.map_or_else(String::new, |i| format!(" at position {i} of the batch"))
}

impl<M> OutboxPublishError<M> {
    /// Takes the message (for `publish_all`: the batch) back out of the error.
    pub fn into_message(self) -> M {
        match self {
            OutboxPublishError::TooLarge { message, .. }
            | OutboxPublishError::Failed { message, .. } => message,
        }
    }

    /// Borrows the returned message (for `publish_all`: the batch).
    pub fn message(&self) -> &M {
        match self {
            OutboxPublishError::TooLarge { message, .. }
            | OutboxPublishError::Failed { message, .. } => message,
        }
    }
}

impl<M> fmt::Debug for OutboxPublishError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboxPublishError::TooLarge {
                name,
                size,
                limit,
                index,
                ..
            } => f
                .debug_struct("TooLarge")
                .field("name", name)
                .field("size", size)
                .field("limit", limit)
                .field("index", index)
                .finish_non_exhaustive(),
            OutboxPublishError::Failed { source, .. } => f
                .debug_struct("Failed")
                .field("source", source)
                .finish_non_exhaustive(),
        }
    }
}

/// The connection an outbox publish writes on: the transaction of your state change, as `&mut *tx`
/// or `&mut tx`, or a pooled connection outside a transaction of your own, as
/// `&mut *pool.acquire().await?` (the row then commits at once).
///
/// `publish` takes this rather than sqlx's `Acquire<'c>`: with `Acquire<'c>`, the future of a
/// publish on a borrowed transaction is not `Send` (rustc must prove `&'x mut Connection:
/// Acquire<'c>` for every lifetime `'x`, and sqlx implements it only for `'x = 'c`), so it could
/// not be awaited in `tokio::spawn`, a web handler or a Herald handler. This trait has no lifetime
/// parameter and holds for every borrow.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub trait OutboxConnection<DB: sqlx::Database>: Send {
    /// The connection to write on.
    fn connection(&mut self) -> &mut DB::Connection;
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
impl<DB: sqlx::Database> OutboxConnection<DB> for &mut sqlx::Transaction<'_, DB> {
    fn connection(&mut self) -> &mut DB::Connection {
        self
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
impl<DB: sqlx::Database> OutboxConnection<DB> for &mut sqlx::pool::PoolConnection<DB> {
    fn connection(&mut self) -> &mut DB::Connection {
        self
    }
}

#[cfg(feature = "sqlite")]
impl OutboxConnection<sqlx::Sqlite> for &mut sqlx::SqliteConnection {
    fn connection(&mut self) -> &mut sqlx::SqliteConnection {
        self
    }
}

#[cfg(feature = "postgres")]
impl OutboxConnection<sqlx::Postgres> for &mut sqlx::PgConnection {
    fn connection(&mut self) -> &mut sqlx::PgConnection {
        self
    }
}

#[cfg(feature = "mysql")]
impl OutboxConnection<sqlx::MySql> for &mut sqlx::MySqlConnection {
    fn connection(&mut self) -> &mut sqlx::MySqlConnection {
        self
    }
}

/// Why a message could not be made into a row; the caller puts the message back in with
/// [`RowRefused::returning`].
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) enum RowRefused {
    TooLarge {
        name: &'static str,
        size: usize,
        limit: usize,
        index: Option<usize>,
    },
    Failed(OutboxError),
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
impl RowRefused {
    pub(crate) fn returning<M>(self, message: M) -> OutboxPublishError<M> {
        match self {
            RowRefused::TooLarge {
                name,
                size,
                limit,
                index,
            } => OutboxPublishError::TooLarge {
                message,
                name,
                size,
                limit,
                index,
            },
            RowRefused::Failed(source) => OutboxPublishError::Failed { message, source },
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
impl From<OutboxError> for RowRefused {
    fn from(error: OutboxError) -> Self {
        RowRefused::Failed(error)
    }
}

/// A message made ready for an outbox row: its envelope, payload and headers as stored.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) struct NewRow {
    pub(crate) envelope: crate::model::envelope::Envelope,
    pub(crate) payload: String,
    pub(crate) headers: String,
    /// When the row is due, if it is delayed (`publish_with` only).
    pub(crate) deliver: Option<crate::model::envelope::DeliverAt>,
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
impl NewRow {
    /// Serializes `message`, refusing a payload over `max_payload_bytes`.
    pub(crate) fn new<M: crate::model::message::Message>(
        message: &M,
        options: crate::model::envelope::PublishOptions,
        max_payload_bytes: usize,
    ) -> Result<Self, RowRefused> {
        let payload = serde_json::to_string(message).map_err(OutboxError::from)?;
        if payload.len() > max_payload_bytes {
            return Err(RowRefused::TooLarge {
                name: M::NAME,
                size: payload.len(),
                limit: max_payload_bytes,
                index: None,
            });
        }
        let deliver = options.deliver;
        let mut envelope =
            crate::model::envelope::Envelope::new(std::borrow::Cow::Borrowed(M::NAME));
        envelope.key = message.key();
        envelope.idempotency_key = options.idempotency_key;
        envelope.headers = options.headers;
        // The trace context of the current span (the caller's, or the outbox's `create` span),
        // stored in the row's headers so the relay's consumers continue the trace, hours later.
        crate::ports::trace::capture(&mut envelope.headers);
        let headers = row::headers_json(&envelope)?;
        Ok(NewRow {
            envelope,
            payload,
            headers,
            deliver,
        })
    }

    /// Every message of a batch, or the first refusal (with its position): all checked before
    /// anything is written.
    pub(crate) fn batch<M: crate::model::message::Message>(
        messages: &[M],
        max_payload_bytes: usize,
    ) -> Result<Vec<Self>, RowRefused> {
        messages
            .iter()
            .enumerate()
            .map(|(position, message)| {
                NewRow::new(
                    message,
                    crate::model::envelope::PublishOptions::new(),
                    max_payload_bytes,
                )
                .map_err(|refused| match refused {
                    RowRefused::TooLarge {
                        name, size, limit, ..
                    } => RowRefused::TooLarge {
                        name,
                        size,
                        limit,
                        index: Some(position),
                    },
                    failed => failed,
                })
            })
            .collect()
    }
}

/// Columns bound per row by `publish_all` (message_id, message_type, key, payload, headers,
/// occurred_at).
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) const BULK_COLUMNS: usize = 6;

/// Relay and retention settings shared by both backends.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(30);
