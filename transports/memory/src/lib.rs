//! An in-memory broker for [Herald](https://docs.rs/herald): a [`MessageSink`] that takes and
//! confirms messages, and a [`MessageSource`] that leases them to a relay, settles them with retry
//! delays and keeps per-key order. Failed messages reach Herald's dead letters through
//! [`Herald::ingest`](herald_core::Herald::ingest), as with every source.
//!
//! It lives in its own crate and uses only `herald-core`'s public items: it is the proof that a
//! transport (RabbitMQ, NATS, Redis, Kafka) plugs in from outside the engine, and the reference the
//! conformance kit (`herald-conformance`) runs first. Nothing survives the process: use it in tests
//! and in single-process setups where an outbox is not wanted.
//!
//! ```no_run
//! # async fn run(herald: herald_core::Herald) -> Result<(), Box<dyn std::error::Error>> {
//! use herald_core::outbox::Relay;
//! use herald_core::ports::{MessageSink, OutgoingMessage};
//! use herald_core::PublishOptions;
//! use herald_transport_memory::MemoryBroker;
//! use std::sync::Arc;
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct OrderPlaced { id: u64 }
//! # impl herald_core::Message for OrderPlaced { const NAME: &'static str = "order.placed";
//! #   const KIND: herald_core::MessageKind = herald_core::MessageKind::Event; type Reply = (); }
//!
//! let broker = MemoryBroker::new();
//! let relay = Relay::builder(Arc::new(broker.clone()), &herald).start();
//!
//! let message = OutgoingMessage::new(&OrderPlaced { id: 7 }, PublishOptions::new())?;
//! let confirmations = broker.publish(vec![message]).await?;
//! assert!(confirmations[0].is_confirmed());
//! # relay.stop().await; Ok(()) }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

use async_trait::async_trait;
use herald_core::ports::lag::{ConsumerLag, LagReading};
use herald_core::ports::{
    Capabilities, Confirmation, MessageSink, MessageSource, OutgoingMessage, Receipt, Received,
    Settlement, SinkError, SourceError, StoredMessage,
};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// An in-memory broker: publish into it as a [`MessageSink`], relay out of it as a
/// [`MessageSource`]. Cheap to clone (one `Arc`); clones share the same queue.
#[derive(Debug, Clone)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    capacity: usize,
    state: Mutex<State>,
    arrived: Notify,
}

#[derive(Debug, Default)]
struct State {
    next_receipt: u64,
    /// Unsettled messages, in publish order (a receipt is its position).
    pending: BTreeMap<u64, Entry>,
    stats: BrokerStats,
}

#[derive(Debug)]
struct Entry {
    message: StoredMessage,
    due: Instant,
    lease: Option<Lease>,
}

#[derive(Debug)]
struct Lease {
    owner: String,
    until: Instant,
}

/// What a broker has done since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerStats {
    /// Messages published and confirmed.
    pub published: u64,
    /// Messages refused at publish (the broker was full).
    pub refused: u64,
    /// Messages settled as done (every handler succeeded).
    pub done: u64,
    /// Messages settled as failed for good (their dead letters are in Herald's store).
    pub failed_for_good: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Messages given back without an attempt.
    pub released: u64,
    /// Settlements ignored because their lease had passed to another owner.
    pub stale_settlements: u64,
}

impl MemoryBroker {
    /// The default bound on unsettled messages: 100,000.
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// An empty broker holding at most [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY) unsettled
    /// messages.
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// An empty broker holding at most `capacity` unsettled messages (at least 1); a publish beyond
    /// it is refused per message with [`Confirmation::Failed`].
    pub fn with_capacity(capacity: usize) -> Self {
        MemoryBroker {
            shared: Arc::new(Shared {
                capacity: capacity.max(1),
                state: Mutex::new(State::default()),
                arrived: Notify::new(),
            }),
        }
    }

    /// Messages published and not yet settled as done or failed for good (leased or not).
    pub fn pending(&self) -> usize {
        self.shared.state.lock().pending.len()
    }

    /// What the broker has done so far.
    pub fn stats(&self) -> BrokerStats {
        self.shared.state.lock().stats
    }

    /// The capabilities the broker declares, as sink and as source.
    pub const CAPABILITIES: Capabilities = Capabilities::none()
        .with_per_message_ack()
        .with_native_delay()
        .with_ordered_by_key();
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl MessageSink for MemoryBroker {
    async fn publish(&self, batch: Vec<OutgoingMessage>) -> Result<Vec<Confirmation>, SinkError> {
        let now = Instant::now();
        let confirmations = {
            let mut state = self.shared.state.lock();
            batch
                .iter()
                .map(|outgoing| {
                    if state.pending.len() >= self.shared.capacity {
                        state.stats.refused += 1;
                        return Confirmation::Failed {
                            reason: format!(
                                "the in-memory broker holds {} unsettled messages, its capacity: \
                                 publish again once the relay has caught up, or raise the capacity",
                                self.shared.capacity
                            ),
                        };
                    }
                    let receipt = state.next_receipt;
                    state.next_receipt += 1;
                    state.pending.insert(
                        receipt,
                        Entry {
                            message: outgoing.to_stored(),
                            due: now,
                            lease: None,
                        },
                    );
                    state.stats.published += 1;
                    Confirmation::Confirmed
                })
                .collect()
        };
        self.shared.arrived.notify_waiters();
        Ok(confirmations)
    }

    fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES
    }

    fn destination(&self) -> String {
        "memory".to_owned()
    }
}

/// The broker's lag: one reading, subscription `memory`, with the messages not settled as done or
/// failed for good yet ([`pending`](MemoryBroker::pending)).
#[async_trait]
impl ConsumerLag for MemoryBroker {
    async fn lag(&self) -> Result<Vec<LagReading>, SourceError> {
        Ok(vec![LagReading::new("memory", self.pending() as u64)])
    }
}

#[async_trait]
impl MessageSource for MemoryBroker {
    async fn receive(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Received>, SourceError> {
        let now = Instant::now();
        let mut state = self.shared.state.lock();
        let mut received = Vec::new();
        // A key is blocked by an earlier message that is leased or not yet due: per-key order.
        let mut blocked: HashSet<String> = HashSet::new();
        for (receipt, entry) in &mut state.pending {
            if received.len() >= limit {
                break;
            }
            let key = entry.message.key.clone();
            if key.as_ref().is_some_and(|key| blocked.contains(key)) {
                continue;
            }
            let leased = entry.lease.as_ref().is_some_and(|held| held.until > now);
            let available = !leased && entry.due <= now;
            if let Some(key) = key {
                blocked.insert(key);
            }
            if available {
                entry.lease = Some(Lease {
                    owner: owner.to_owned(),
                    until: now + lease,
                });
                received.push(Received {
                    receipt: Receipt(*receipt),
                    message: entry.message.clone(),
                });
            }
        }
        Ok(received)
    }

    async fn keep(
        &self,
        owner: &str,
        receipts: &[Receipt],
        lease: Duration,
    ) -> Result<Vec<Receipt>, SourceError> {
        let until = Instant::now() + lease;
        let mut state = self.shared.state.lock();
        Ok(receipts
            .iter()
            .copied()
            .filter(|receipt| {
                let held = state
                    .pending
                    .get_mut(&receipt.0)
                    .and_then(|entry| entry.lease.as_mut())
                    .filter(|held| held.owner == owner);
                match held {
                    Some(held) => {
                        held.until = until;
                        true
                    }
                    None => false,
                }
            })
            .collect())
    }

    async fn settle(
        &self,
        owner: &str,
        settled: Vec<(Receipt, Settlement)>,
    ) -> Result<(), SourceError> {
        let now = Instant::now();
        {
            let mut state = self.shared.state.lock();
            let state = &mut *state;
            for (receipt, settlement) in settled {
                let owned = state
                    .pending
                    .get(&receipt.0)
                    .and_then(|entry| entry.lease.as_ref())
                    .is_some_and(|held| held.owner == owner);
                if !owned {
                    state.stats.stale_settlements += 1;
                    tracing::warn!(%receipt, %owner, "settlement for a message this owner no longer holds; ignored");
                    continue;
                }
                match settlement {
                    Settlement::Done { .. } => {
                        state.pending.remove(&receipt.0);
                        state.stats.done += 1;
                    }
                    Settlement::FailedForGood { .. } => {
                        state.pending.remove(&receipt.0);
                        state.stats.failed_for_good += 1;
                    }
                    Settlement::Retry {
                        progress,
                        delay,
                        replacement_id,
                        ..
                    } => {
                        if let Some(entry) = state.pending.get_mut(&receipt.0) {
                            entry.message.progress = progress;
                            entry.message.attempt = entry.message.attempt.saturating_add(1);
                            if let Some(id) = replacement_id {
                                entry.message.message_id = id.to_string();
                            }
                            entry.due = now + delay;
                            entry.lease = None;
                        }
                        state.stats.retried += 1;
                    }
                    // Release, and any settlement a newer Herald adds: give it back as it was.
                    _ => {
                        if let Some(entry) = state.pending.get_mut(&receipt.0) {
                            entry.lease = None;
                        }
                        state.stats.released += 1;
                    }
                }
            }
        }
        self.shared.arrived.notify_waiters();
        Ok(())
    }

    async fn wait(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.shared.arrived.notified()).await;
    }

    fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::Envelope;

    fn outgoing(key: Option<&str>) -> OutgoingMessage {
        let mut envelope = Envelope::new("memory.test");
        envelope.key = key.map(str::to_owned);
        OutgoingMessage {
            envelope,
            payload: "{}".to_owned(),
        }
    }

    #[tokio::test]
    async fn a_key_is_held_back_while_an_earlier_message_of_it_is_leased() {
        let broker = MemoryBroker::new();
        broker
            .publish(vec![
                outgoing(Some("a")),
                outgoing(Some("a")),
                outgoing(Some("b")),
                outgoing(None),
            ])
            .await
            .expect("publish");
        let lease = Duration::from_secs(30);
        let first = broker.receive("r1", 10, lease).await.expect("receive");
        let receipts: Vec<u64> = first.iter().map(|r| r.receipt.0).collect();
        assert_eq!(receipts, vec![0, 2, 3], "one message of key `a` at a time");
        assert!(broker
            .receive("r2", 10, lease)
            .await
            .expect("receive")
            .is_empty());
        broker
            .settle("r1", vec![(Receipt(0), Settlement::Release)])
            .await
            .expect("settle");
        let again = broker.receive("r2", 10, lease).await.expect("receive");
        assert_eq!(again.len(), 1);
        assert_eq!(
            again[0].receipt,
            Receipt(0),
            "the earlier message of `a` first"
        );
    }

    #[tokio::test]
    async fn a_full_broker_refuses_with_a_reason_and_keeps_the_rest() {
        let broker = MemoryBroker::with_capacity(1);
        let confirmations = broker
            .publish(vec![outgoing(None), outgoing(None)])
            .await
            .expect("publish");
        assert!(confirmations[0].is_confirmed());
        assert!(
            matches!(&confirmations[1], Confirmation::Failed { reason } if reason.contains("capacity"))
        );
        assert_eq!(broker.pending(), 1);
        assert_eq!(broker.stats().refused, 1);
    }

    #[tokio::test]
    async fn a_settlement_from_an_owner_that_lost_the_lease_is_ignored() {
        let broker = MemoryBroker::new();
        broker.publish(vec![outgoing(None)]).await.expect("publish");
        let taken = broker
            .receive("r1", 1, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(taken.len(), 1);
        let retaken = broker
            .receive("r2", 1, Duration::from_secs(30))
            .await
            .expect("receive");
        assert_eq!(retaken.len(), 1, "an expired lease passes to another owner");
        assert!(broker
            .keep("r1", &[Receipt(0)], Duration::from_secs(30))
            .await
            .expect("keep")
            .is_empty());
        let done = Settlement::Done {
            progress: herald_core::Progress::new(),
        };
        broker
            .settle("r1", vec![(Receipt(0), done)])
            .await
            .expect("settle");
        assert_eq!(broker.pending(), 1);
        assert_eq!(broker.stats().stale_settlements, 1);
    }

    #[test]
    fn the_broker_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<MemoryBroker>();
        assert_send_sync::<BrokerStats>();
    }
}
