//! The traits the engine talks to for messages that live outside it: a [`MessageSource`] that
//! yields stored messages to deliver and settles them (an outbox table, a broker queue), and a
//! [`MessageSink`] that takes outgoing messages and confirms them (a broker exchange, an HTTP feed).
//!
//! A source is driven by a [`Relay`](crate::outbox::Relay) (`Relay::builder(source, &herald)`):
//! it receives a batch, hands each message to [`Herald::ingest`](crate::Herald::ingest) (the same
//! pools, retries, dead letters and ledger as `publish`), keeps the leases of the messages still
//! running, and settles the batch with what the engine decided. The SQL outboxes are sources too.
//!
//! A crate outside `herald-core` implements these traits with public items only; the
//! `herald-transport-memory` crate is one, and the `herald-conformance` kit checks any of them.

pub use crate::model::stored_message::{
    HandlerProgress, OutgoingMessage, Progress, Settlement, StoredMessage,
};
use async_trait::async_trait;
use std::fmt;
use std::time::Duration;

/// Any error a source or sink passes on as the cause of a [`SourceError`] or [`SinkError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a transport can do, declared truthfully by the transport (the relay and tools read it;
/// the conformance kit checks the ones it can observe).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Each message is acknowledged (or settled) on its own, not by an offset over many.
    pub per_message_ack: bool,
    /// A message can be delivered again after a delay without the consumer holding it.
    pub native_delay: bool,
    /// Messages with the same ordering key are delivered one at a time, in publish order.
    pub ordered_by_key: bool,
    /// Messages survive a restart of the process (and of the broker or database).
    pub persistent: bool,
}

impl Capabilities {
    /// Nothing declared: build on it with the methods below.
    pub const fn none() -> Self {
        Capabilities {
            per_message_ack: false,
            native_delay: false,
            ordered_by_key: false,
            persistent: false,
        }
    }

    /// Declares [`per_message_ack`](Self::per_message_ack).
    pub const fn with_per_message_ack(mut self) -> Self {
        self.per_message_ack = true;
        self
    }

    /// Declares [`native_delay`](Self::native_delay).
    pub const fn with_native_delay(mut self) -> Self {
        self.native_delay = true;
        self
    }

    /// Declares [`ordered_by_key`](Self::ordered_by_key).
    pub const fn with_ordered_by_key(mut self) -> Self {
        self.ordered_by_key = true;
        self
    }

    /// Declares [`persistent`](Self::persistent).
    pub const fn with_persistent(mut self) -> Self {
        self.persistent = true;
        self
    }
}

/// Names one received message in its source until it is settled (a row id, a delivery tag, an
/// index into the source's own table): chosen by the source, opaque to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Receipt(pub u64);

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One message a source handed out, held under a lease until settled.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// How the source finds it again.
    pub receipt: Receipt,
    /// The message.
    pub message: StoredMessage,
}

/// A source could not do what the relay asked. The relay counts it in `RelayStats::errors`, logs
/// it and tries again after its poll interval; a message whose settlement was not recorded is
/// delivered again once its lease expires (at least once).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The source's backend (database, broker) failed.
    #[error("the message source could not {operation}: {source}; the relay tries again, and a message not settled is delivered again after its lease")]
    Backend {
        /// What was asked: `receive`, `keep`, `settle`, `sweep`.
        operation: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

impl SourceError {
    /// A backend failure during `operation`.
    pub fn backend(operation: &'static str, source: impl Into<BoxError>) -> Self {
        SourceError::Backend {
            operation,
            source: source.into(),
        }
    }
}

/// Where stored messages come from: a queue, a table or a log that leases messages to a relay.
///
/// The rules every source keeps (the conformance kit checks them):
/// - a message is handed to one relay at a time, while its lease lasts or until it is settled;
/// - with `ordered_by_key`, a batch never holds two messages of one key, nor a message whose key
///   has an earlier unsettled message, nor a key another relay holds;
/// - [`Settlement::Retry`] makes the message due again after its delay, as attempt + 1, with the
///   progress recorded; [`Settlement::Release`] makes it due again at once, as it was;
///   [`Settlement::Done`] and [`Settlement::FailedForGood`] finish it;
/// - a settlement for a message whose lease this owner lost is ignored.
#[async_trait]
pub trait MessageSource: Send + Sync + fmt::Debug + 'static {
    /// Leases up to `limit` due messages to `owner` for `lease`.
    ///
    /// # Errors
    /// When the backend fails; nothing is leased then.
    async fn receive(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Received>, SourceError>;

    /// Extends the leases `owner` holds on `receipts` to `lease` from now. Returns the receipts it
    /// kept; one missing from the answer is lost (its lease expired and another relay took it, or
    /// it was changed by hand): the relay stops waiting for it and never settles it.
    ///
    /// # Errors
    /// When the backend fails; the relay tries again at its next heartbeat.
    async fn keep(
        &self,
        owner: &str,
        receipts: &[Receipt],
        lease: Duration,
    ) -> Result<Vec<Receipt>, SourceError>;

    /// Records what the engine decided for each message of a batch (messages whose lease
    /// `owner` lost are left alone).
    ///
    /// # Errors
    /// When the backend fails; the leases then expire and the messages are delivered again.
    async fn settle(
        &self,
        owner: &str,
        settled: Vec<(Receipt, Settlement)>,
    ) -> Result<(), SourceError>;

    /// Waits until new messages may be due, or `timeout` passes (a timer is a correct
    /// implementation). Several relays may wait on one source at once.
    async fn wait(&self, timeout: Duration);

    /// What this source can do.
    fn capabilities(&self) -> Capabilities;

    /// Whether a batch's settlement may run beside the next `receive` (false where writes are
    /// serialised anyway, as on SQLite, so they would only wait for each other).
    fn overlaps_settle(&self) -> bool {
        true
    }

    /// Settles a batch, then leases the next one: the relay's step between two batches where
    /// [`overlaps_settle`](Self::overlaps_settle) is false. A source whose writes are serialised
    /// can do both in one write (the SQL outbox on SQLite: one transaction per batch instead of
    /// two). The default settles, then receives.
    ///
    /// Returns both answers: a failed settlement does not keep the next batch from being leased,
    /// and the messages of a batch whose settlement failed are delivered again after their lease.
    async fn settle_and_receive(
        &self,
        owner: &str,
        settled: Vec<(Receipt, Settlement)>,
        limit: usize,
        lease: Duration,
    ) -> (Result<(), SourceError>, Result<Vec<Received>, SourceError>) {
        let settle = self.settle(owner, settled).await;
        (settle, self.receive(owner, limit, lease).await)
    }

    /// Deletes finished messages older than `older_than`, `batch` per step (a store that keeps
    /// them, such as the outbox's event store); returns how many. Sources that keep nothing
    /// return 0.
    ///
    /// # Errors
    /// When the backend fails; the relay tries again at its next sweep.
    async fn sweep(&self, older_than: Duration, batch: usize) -> Result<u64, SourceError> {
        let _ = (older_than, batch);
        Ok(0)
    }
}

/// How the destination answered for one published message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Confirmation {
    /// The destination has it (stored, or accepted by the broker).
    Confirmed,
    /// The destination refused it; the message was not published.
    Failed {
        /// Why, in the destination's words.
        reason: String,
    },
}

impl Confirmation {
    /// Whether the message was confirmed.
    pub fn is_confirmed(&self) -> bool {
        matches!(self, Confirmation::Confirmed)
    }
}

/// A sink could not publish a batch at all: none of its messages was confirmed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The sink's backend (broker, database, HTTP endpoint) failed.
    #[error("the message sink could not publish the batch: {source}; no message of it was confirmed, publish it again")]
    Backend {
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

impl SinkError {
    /// A backend failure.
    pub fn backend(source: impl Into<BoxError>) -> Self {
        SinkError::Backend {
            source: source.into(),
        }
    }
}

/// Where outgoing messages go: a broker exchange or topic, another service's feed.
#[async_trait]
pub trait MessageSink: Send + Sync + fmt::Debug + 'static {
    /// Publishes a batch and resolves when the destination has answered for every message: one
    /// [`Confirmation`] per message, in the batch's order.
    ///
    /// # Errors
    /// When nothing of the batch could be published.
    async fn publish(&self, batch: Vec<OutgoingMessage>) -> Result<Vec<Confirmation>, SinkError>;

    /// What this sink can do.
    fn capabilities(&self) -> Capabilities;

    /// Where it publishes, for people: `rabbitmq:orders`, `nats:orders.placed`. It names routes
    /// (`route:<message>-><destination>`) and appears in errors and logs, so it never holds a
    /// password or a token.
    fn destination(&self) -> String {
        "sink".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_seam_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<StoredMessage>();
        assert_send_sync::<Progress>();
        assert_send_sync::<Settlement>();
        assert_send_sync::<OutgoingMessage>();
        assert_send_sync::<Received>();
        assert_send_sync::<Capabilities>();
        assert_send_sync::<Confirmation>();
        assert_send_sync::<SourceError>();
        assert_send_sync::<SinkError>();
        assert_send_sync::<Arc<dyn MessageSource>>();
        assert_send_sync::<Arc<dyn MessageSink>>();
    }

    #[test]
    fn a_source_error_keeps_its_cause() {
        let cause = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let error = SourceError::backend("receive", cause);
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("reset by peer"));
        assert!(error.to_string().contains("could not receive"));
    }

    #[test]
    fn capabilities_are_declared_one_by_one() {
        let declared = Capabilities::none().with_ordered_by_key().with_persistent();
        assert!(declared.ordered_by_key && declared.persistent);
        assert!(!declared.per_message_ack && !declared.native_delay);
    }
}
