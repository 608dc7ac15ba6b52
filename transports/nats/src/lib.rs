//! NATS JetStream for [Herald](https://docs.rs/herald): a [`MessageSink`] that publishes each
//! message's wire envelope (`docs/WIRE.md`) to a subject of a JetStream stream and counts it as
//! confirmed on the stream's PubAck, and a [`MessageSource`] that reads the stream through a
//! durable pull consumer, so that any number of processes share its messages.
//!
//! How the source maps Herald's leases onto JetStream:
//! - a **lease** is JetStream's `ack_wait` on a delivered message (set when the consumer is
//!   created, [`NatsJetStreamBuilder::ack_wait`]); `max_ack_pending` bounds how many messages
//!   the consumer holds unacknowledged, so prefetch is bounded;
//! - **receive** is one pull request for up to `limit` messages that expires on the server
//!   after [`fetch_wait`](NatsJetStreamBuilder::fetch_wait); a failed pull (a lost connection,
//!   a consumer the server no longer has) makes the next `receive` look the consumer up again,
//!   re-creating it if needed (idle heartbeats are not used: see `pull` in the source);
//! - **keep** sends `+WPI` (in progress), which restarts `ack_wait`; a message whose lease ran
//!   out before it was kept (the server may have redelivered it) is reported lost;
//! - **settle**: done or failed for good → a double ack (`+ACK` with the server's reply
//!   awaited); release → `-NAK` without delay; retry → a copy with attempt + 1 and the
//!   handlers that finished is published (PubAck awaited) with a `Herald-Not-Before` header
//!   and the consumer's name (`Herald-Consumer`: the stream's other durable consumers ack it
//!   unread, so that one consumer's retry never reaches them), and the original is double-acked. A copy received before its time is given back with a
//!   delayed `-NAK` for the time left, JetStream's native delay, so no consumer holds it;
//! - a message that is not a wire envelope is handed to Herald as a malformed message: Herald
//!   dead-letters it with reason `malformed`, and the settlement acks it.
//!
//! ```no_run
//! # async fn run(herald: herald_core::Herald) -> Result<(), Box<dyn std::error::Error>> {
//! use herald_core::outbox::Relay;
//! use herald_transport_nats::NatsJetStream;
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let nats = NatsJetStream::builder("nats://127.0.0.1:4222", "ORDERS", "notifier")
//!     .ack_wait(Duration::from_secs(30))
//!     .connect()
//!     .await?;
//! let relay = Relay::builder(Arc::new(nats.clone()), &herald)
//!     .lease(Duration::from_secs(30))
//!     .start();
//! # relay.stop().await; Ok(()) }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

/// The NATS client this transport is built on (for [`NatsJetStream::context`] and its types).
pub use async_nats;

use async_nats::jetstream::{self, consumer::pull, stream, AckKind};
use async_trait::async_trait;
use futures_util::StreamExt;
use herald_core::ports::{
    Capabilities, Confirmation, MessageSink, MessageSource, OutgoingMessage, Receipt, Received,
    Settlement, SinkError, SourceError, StoredMessage,
};
use herald_core::wire;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// JetStream's de-duplication header: the Herald message id (a retry's copy adds
/// `:<attempt>:<consumer>`).
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// The header holding the Herald message id (also inside the envelope), for tools.
pub const ID_HEADER: &str = "Herald-Id";
/// The header holding the message's wire name, for tools and subject-free filtering.
pub const NAME_HEADER: &str = "Herald-Name";
/// On a retry's copy: when it is due, in milliseconds since the Unix epoch.
pub const NOT_BEFORE_HEADER: &str = "Herald-Not-Before";
/// On a retry's copy: the durable consumer it is for. The stream's other consumers ack it unread
/// (each consumer retries its own copies).
pub const CONSUMER_HEADER: &str = "Herald-Consumer";

/// Could not connect to NATS or prepare the stream and consumer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsTransportError {
    /// The server could not be reached (the URL is not repeated here: it may hold a password).
    #[error("could not connect to NATS: {source}; check the URL (nats://[user:password@]host:port) and that the server is up")]
    Connect {
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// JetStream refused or did not answer while setting up.
    #[error("JetStream could not {operation}: {source}; check that the server runs with JetStream enabled (-js)")]
    JetStream {
        /// What was being done.
        operation: &'static str,
        /// The client's error.
        #[source]
        source: async_nats::Error,
    },
    /// `create_stream(false)` and the stream does not exist.
    #[error("the JetStream stream `{stream}` does not exist: {source}; create it, or let the transport create it")]
    NoStream {
        /// The stream's name.
        stream: String,
        /// The client's error.
        #[source]
        source: async_nats::Error,
    },
}

/// Settings for [`NatsJetStream`]; made by [`NatsJetStream::builder`].
#[must_use = "a builder does nothing until `connect` is called"]
#[derive(Debug, Clone)]
pub struct NatsJetStreamBuilder {
    url: String,
    stream: String,
    consumer: String,
    subject: Option<String>,
    create_stream: bool,
    ack_wait: Duration,
    max_ack_pending: i64,
    fetch_wait: Duration,
    publish_timeout: Duration,
}

impl NatsJetStreamBuilder {
    /// The subject messages are published to and consumed from (default `<stream>.messages`).
    /// A stream the transport creates captures exactly this subject.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Whether to create the stream (file storage) when it is missing (default true). When
    /// false, a missing stream is an error of [`connect`](Self::connect).
    pub fn create_stream(mut self, create: bool) -> Self {
        self.create_stream = create;
        self
    }

    /// The consumer's `ack_wait`: the lease of a delivered message (default 30 s). Give the
    /// relay the same lease; `keep` restarts it.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// How many messages the consumer may hold unacknowledged (default 1 000): the bound on
    /// prefetch across every process sharing the consumer.
    pub fn max_ack_pending(mut self, max: u32) -> Self {
        self.max_ack_pending = i64::from(max.max(1));
        self
    }

    /// How long a `receive` waits on its pull request when fewer than `limit` messages are
    /// ready (default 100 ms): the latency of a partial batch.
    pub fn fetch_wait(mut self, wait: Duration) -> Self {
        self.fetch_wait = wait.max(Duration::from_millis(10));
        self
    }

    /// How long the sink waits for a PubAck before the message counts as failed (default 5 s).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Connects, creates the stream if missing (and allowed), and creates or looks up the
    /// durable consumer.
    ///
    /// # Errors
    /// When the server cannot be reached, JetStream is not enabled, the stream is missing and
    /// may not be created, or the consumer cannot be created.
    pub async fn connect(self) -> Result<NatsJetStream, NatsTransportError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(self.url.as_str())
            .await
            .map_err(|source| NatsTransportError::Connect { source })?;
        let mut context = jetstream::new(client);
        context.set_timeout(self.publish_timeout);
        let subject = self
            .subject
            .clone()
            .unwrap_or_else(|| format!("{}.messages", self.stream));
        let jet = |operation| move |source| NatsTransportError::JetStream { operation, source };
        let stream = if self.create_stream {
            context
                .get_or_create_stream(stream::Config {
                    name: self.stream.clone(),
                    subjects: vec![subject.clone()],
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| jet("create the stream")(e.into()))?
        } else {
            context
                .get_stream(&self.stream)
                .await
                .map_err(|e| NatsTransportError::NoStream {
                    stream: self.stream.clone(),
                    source: e.into(),
                })?
        };
        let config = pull::Config {
            durable_name: Some(self.consumer.clone()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_ack_pending: self.max_ack_pending,
            filter_subject: subject.clone(),
            ..Default::default()
        };
        let consumer = stream
            .get_or_create_consumer(&self.consumer, config.clone())
            .await
            .map_err(|e| jet("create the durable consumer")(e.into()))?;
        Ok(NatsJetStream {
            shared: Arc::new(Shared {
                stream_name: self.stream,
                subject,
                context,
                stream,
                consumer_config: config,
                consumer: tokio::sync::RwLock::new(consumer),
                stale: AtomicBool::new(false),
                ack_wait: self.ack_wait,
                fetch_wait: self.fetch_wait,
                publish_timeout: self.publish_timeout,
                next_receipt: AtomicU64::new(0),
                held: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// One JetStream stream and one durable pull consumer, as a sink and as a source. Cheap to
/// clone (one `Arc`); clones share the connection and the receipts they handed out.
#[derive(Clone)]
pub struct NatsJetStream {
    shared: Arc<Shared>,
}

struct Shared {
    stream_name: String,
    subject: String,
    context: jetstream::Context,
    stream: stream::Stream,
    consumer_config: pull::Config,
    consumer: tokio::sync::RwLock<jetstream::consumer::PullConsumer>,
    /// Set when a pull failed (a lost connection, a consumer gone): the next `receive` looks
    /// the consumer up again (re-creating it if the server lost it).
    stale: AtomicBool,
    ack_wait: Duration,
    fetch_wait: Duration,
    publish_timeout: Duration,
    next_receipt: AtomicU64,
    held: Mutex<HashMap<u64, Held>>,
}

/// What a receipt names: the delivered JetStream message, the message read from it, who holds
/// it and when its lease was last started.
struct Held {
    owner: String,
    delivery: jetstream::Message,
    message: StoredMessage,
    leased_at: Instant,
}

impl fmt::Debug for NatsJetStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsJetStream")
            .field("stream", &self.shared.stream_name)
            .field("subject", &self.shared.subject)
            .field("consumer", &self.shared.consumer_config.durable_name)
            .field("held", &self.shared.held.lock().len())
            .finish_non_exhaustive()
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl NatsJetStream {
    /// The capabilities declared as sink and as source. Per-key order is not declared: the
    /// consumer hands messages out concurrently and a retry's copy goes to the end of the
    /// stream. Persistent: a stream the transport creates uses file storage.
    pub const CAPABILITIES: Capabilities = Capabilities::none()
        .with_per_message_ack()
        .with_native_delay()
        .with_persistent();

    /// Settings for stream `stream` on the server at `url` (`nats://[user:password@]host:port`),
    /// read by the durable consumer `consumer`.
    pub fn builder(
        url: impl Into<String>,
        stream: impl Into<String>,
        consumer: impl Into<String>,
    ) -> NatsJetStreamBuilder {
        NatsJetStreamBuilder {
            url: url.into(),
            stream: stream.into(),
            consumer: consumer.into(),
            subject: None,
            create_stream: true,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1_000,
            fetch_wait: Duration::from_millis(100),
            publish_timeout: Duration::from_secs(5),
        }
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.shared.stream_name
    }

    /// The subject messages are published to.
    pub fn subject(&self) -> &str {
        &self.shared.subject
    }

    /// The JetStream context, for tools and tests (publishing raw messages, deleting the stream).
    pub fn context(&self) -> &jetstream::Context {
        &self.shared.context
    }

    /// Messages of the stream the consumer has not finished: not yet delivered, or delivered
    /// and not acknowledged (held, released, or a retry's copy waiting for its time).
    ///
    /// # Errors
    /// When JetStream does not answer.
    pub async fn unfinished(&self) -> Result<u64, async_nats::Error> {
        let consumer = self.shared.consumer.read().await;
        let info = consumer.get_info().await?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    /// Deletes the stream (and with it the consumer): for tests and tools.
    ///
    /// # Errors
    /// When JetStream refuses.
    pub async fn delete_stream(&self) -> Result<(), async_nats::Error> {
        self.shared
            .context
            .delete_stream(&self.shared.stream_name)
            .await?;
        Ok(())
    }

    /// The durable consumer's name.
    fn consumer_name(&self) -> &str {
        self.shared
            .consumer_config
            .durable_name
            .as_deref()
            .unwrap_or_default()
    }

    /// Looks the consumer up again after a failed pull (re-creating it if the server lost it).
    async fn refresh_consumer(&self) -> Result<(), SourceError> {
        if !self.shared.stale.load(Ordering::Acquire) {
            return Ok(());
        }
        let name = self
            .shared
            .consumer_config
            .durable_name
            .clone()
            .unwrap_or_default();
        let consumer = self
            .shared
            .stream
            .get_or_create_consumer(&name, self.shared.consumer_config.clone())
            .await
            .map_err(|e| SourceError::backend("receive", e))?;
        *self.shared.consumer.write().await = consumer;
        self.shared.stale.store(false, Ordering::Release);
        tracing::info!(consumer = %name, "the JetStream consumer was looked up again after a failed pull");
        Ok(())
    }

    /// Pulls up to `limit` messages with one pull request that expires on the server after
    /// `fetch_wait`. Neither a `no_wait` fetch nor idle heartbeats: against nats-server 2.9
    /// with async-nats 0.46 both lost deliveries (a message went to a request the client had
    /// stopped reading and came back only after `ack_wait`). A request that expires on the
    /// server ends on the server's answer, so none outlives the client's interest.
    async fn pull(&self, limit: usize) -> Result<Vec<jetstream::Message>, SourceError> {
        let consumer = self.shared.consumer.read().await.clone();
        let wait = self.shared.fetch_wait;
        let batch = consumer
            .batch()
            .max_messages(limit)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| SourceError::backend("receive", e))?;
        collect(batch).await
    }

    /// The stored message a delivery holds; one that is not a wire envelope is handed over so
    /// that Herald dead-letters it as malformed (its id is not a UUID, and says why).
    fn read_delivery(delivery: &jetstream::Message) -> StoredMessage {
        match wire::decode(&delivery.payload) {
            Ok(message) => message,
            Err(error) => {
                let header = |name: &str| {
                    delivery
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(name))
                        .map(|v| v.as_str().to_owned())
                        .unwrap_or_default()
                };
                let sequence = delivery.info().map(|i| i.stream_sequence).unwrap_or(0);
                tracing::warn!(subject = %delivery.subject, sequence, %error, "a JetStream message is not a Herald wire envelope; it goes to the dead letters as malformed");
                StoredMessage {
                    message_id: format!("malformed wire envelope: {error}"),
                    name: header(NAME_HEADER),
                    key: None,
                    payload: String::from_utf8_lossy(&delivery.payload).into_owned(),
                    headers: malformed_headers(
                        delivery.subject.as_str(),
                        sequence,
                        &header(ID_HEADER),
                    ),
                    occurred_at: chrono::Utc::now(),
                    attempt: 1,
                    progress: herald_core::Progress::new(),
                    only_handlers: None,
                }
            }
        }
    }

    /// Settles one held message: a double ack, a retry's copy then a double ack, or a `-NAK`.
    async fn settle_one(
        &self,
        held: Held,
        settlement: Settlement,
    ) -> Result<(), async_nats::Error> {
        let outcome = match settlement {
            Settlement::Done { .. } | Settlement::FailedForGood { .. } => {
                held.delivery.double_ack().await
            }
            Settlement::Retry {
                progress,
                delay,
                replacement_id,
                ..
            } => {
                let mut message = held.message;
                message.progress = progress;
                message.attempt = message.attempt.saturating_add(1);
                if let Some(id) = replacement_id {
                    message.message_id = id.to_string();
                }
                match self.publish_retry(&message, delay).await {
                    Ok(()) => held.delivery.double_ack().await,
                    // The copy was not stored: give the original back for its delay instead.
                    Err(error) => {
                        tracing::warn!(%error, "could not publish a retry's copy; the original is redelivered after the delay instead");
                        held.delivery.ack_with(AckKind::Nak(Some(delay))).await
                    }
                }
            }
            // Release, and any settlement a newer Herald adds: give it back at once.
            _ => held.delivery.ack_with(AckKind::Nak(None)).await,
        };
        if let Err(error) = &outcome {
            tracing::warn!(%error, "a settlement did not reach JetStream; the message is delivered again after its ack_wait");
        }
        outcome
    }

    /// Publishes a retry's copy: attempt + 1, the handlers that finished, due after `delay`.
    async fn publish_retry(
        &self,
        message: &StoredMessage,
        delay: Duration,
    ) -> Result<(), async_nats::Error> {
        let mut headers = async_nats::HeaderMap::new();
        let consumer = self.consumer_name();
        let dedupe = format!("{}:{}:{consumer}", message.message_id, message.attempt);
        headers.insert(MSG_ID_HEADER, dedupe.as_str());
        headers.insert(ID_HEADER, message.message_id.as_str());
        headers.insert(NAME_HEADER, message.name.as_str());
        let due = now_millis().saturating_add(millis(delay)).to_string();
        headers.insert(NOT_BEFORE_HEADER, due.as_str());
        headers.insert(CONSUMER_HEADER, consumer);
        let ack = self
            .shared
            .context
            .publish_with_headers(
                self.shared.subject.clone(),
                headers,
                wire::encode_stored(message).into(),
            )
            .await?;
        tokio::time::timeout(self.shared.publish_timeout, ack)
            .await
            .map_err(|_| "no PubAck for the retry's copy in time")??;
        Ok(())
    }
}

/// Every message of a pull; a failed pull (a dropped connection, a consumer gone) is an error
/// when it brought nothing, and ends the batch early otherwise.
async fn collect(
    mut batch: jetstream::consumer::pull::Batch,
) -> Result<Vec<jetstream::Message>, SourceError> {
    let mut pulled = Vec::new();
    while let Some(next) = batch.next().await {
        match next {
            Ok(message) => pulled.push(message),
            Err(error) if pulled.is_empty() => {
                return Err(SourceError::backend("receive", error));
            }
            Err(error) => {
                tracing::warn!(%error, "a JetStream pull ended early");
                break;
            }
        }
    }
    Ok(pulled)
}

/// Which consumer a retry's copy is for, if it is one.
fn for_consumer(delivery: &jetstream::Message) -> Option<&str> {
    Some(delivery.headers.as_ref()?.get(CONSUMER_HEADER)?.as_str())
}

/// When a retry's copy is due, if it is one.
fn not_before(delivery: &jetstream::Message) -> Option<u64> {
    delivery
        .headers
        .as_ref()?
        .get(NOT_BEFORE_HEADER)?
        .as_str()
        .parse()
        .ok()
}

/// The extra headers of a malformed message: where it was, and the `Herald-Id` its producer gave.
fn malformed_headers(subject: &str, sequence: u64, id: &str) -> String {
    serde_json::json!({ "extra": {
        "nats-subject": subject,
        "nats-stream-sequence": sequence.to_string(),
        "herald-id-header": id,
    } })
    .to_string()
}

#[async_trait]
impl MessageSink for NatsJetStream {
    async fn publish(&self, batch: Vec<OutgoingMessage>) -> Result<Vec<Confirmation>, SinkError> {
        // Send every message first, then await the PubAcks: JetStream answers them in a pipeline.
        let mut pending = Vec::with_capacity(batch.len());
        for message in &batch {
            let id = message.envelope.id.to_string();
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(MSG_ID_HEADER, id.as_str());
            headers.insert(ID_HEADER, id.as_str());
            headers.insert(NAME_HEADER, message.envelope.name.as_ref());
            let sent = self
                .shared
                .context
                .publish_with_headers(
                    self.shared.subject.clone(),
                    headers,
                    wire::encode(message).into(),
                )
                .await;
            pending.push(sent);
        }
        let mut confirmations = Vec::with_capacity(pending.len());
        for sent in pending {
            let confirmation = match sent {
                Err(error) => Confirmation::Failed {
                    reason: format!("not sent to JetStream: {error}"),
                },
                Ok(ack) => match tokio::time::timeout(self.shared.publish_timeout, ack).await {
                    Ok(Ok(_ack)) => Confirmation::Confirmed,
                    Ok(Err(error)) => Confirmation::Failed {
                        reason: format!("JetStream did not confirm: {error}"),
                    },
                    Err(_) => Confirmation::Failed {
                        reason: format!(
                            "no PubAck from JetStream within {:?}",
                            self.shared.publish_timeout
                        ),
                    },
                },
            };
            confirmations.push(confirmation);
        }
        Ok(confirmations)
    }

    fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES
    }

    fn destination(&self) -> String {
        format!("nats:{}", self.subject())
    }
}

/// The consumer's lag for metrics and consoles: one reading, subscription `nats:<stream>`,
/// with the stream's messages its durable consumer has not finished
/// ([`unfinished`](NatsJetStream::unfinished)).
#[async_trait]
impl herald_core::ports::lag::ConsumerLag for NatsJetStream {
    async fn lag(&self) -> Result<Vec<herald_core::ports::lag::LagReading>, SourceError> {
        let unfinished = self
            .unfinished()
            .await
            .map_err(|error| SourceError::backend("lag", error))?;
        Ok(vec![herald_core::ports::lag::LagReading::new(
            format!("nats:{}", self.stream()),
            unfinished,
        )])
    }
}

#[async_trait]
impl MessageSource for NatsJetStream {
    async fn receive(
        &self,
        owner: &str,
        limit: usize,
        _lease: Duration,
    ) -> Result<Vec<Received>, SourceError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.refresh_consumer().await?;
        let pulled = match self.pull(limit).await {
            Ok(pulled) => pulled,
            Err(error) => {
                self.shared.stale.store(true, Ordering::Release);
                return Err(error);
            }
        };
        let now = now_millis();
        let mut received = Vec::with_capacity(pulled.len());
        for delivery in pulled {
            if for_consumer(&delivery).is_some_and(|c| c != self.consumer_name()) {
                // Another consumer's retry copy: not this consumer's message.
                if let Err(error) = delivery.double_ack().await {
                    tracing::warn!(%error, "could not ack another consumer's retry copy; it returns after the lease");
                }
                continue;
            }
            if let Some(due) = not_before(&delivery).filter(|due| *due > now) {
                // A retry's copy before its time: JetStream holds it for the time left.
                let left = Duration::from_millis(due - now);
                if let Err(error) = delivery.ack_with(AckKind::Nak(Some(left))).await {
                    tracing::warn!(%error, "could not give back a retry before its time; it returns after the lease");
                }
                continue;
            }
            let message = Self::read_delivery(&delivery);
            let receipt = self.shared.next_receipt.fetch_add(1, Ordering::Relaxed);
            self.shared.held.lock().insert(
                receipt,
                Held {
                    owner: owner.to_owned(),
                    delivery,
                    message: message.clone(),
                    leased_at: Instant::now(),
                },
            );
            received.push(Received {
                receipt: Receipt(receipt),
                message,
            });
        }
        Ok(received)
    }

    async fn keep(
        &self,
        owner: &str,
        receipts: &[Receipt],
        _lease: Duration,
    ) -> Result<Vec<Receipt>, SourceError> {
        let mut kept = Vec::with_capacity(receipts.len());
        for receipt in receipts {
            let delivery = {
                let mut held = self.shared.held.lock();
                let Some(entry) = held.get(&receipt.0).filter(|h| h.owner == owner) else {
                    continue;
                };
                if entry.leased_at.elapsed() >= self.shared.ack_wait {
                    // Its ack_wait ran out: JetStream may have delivered it to someone else.
                    held.remove(&receipt.0);
                    continue;
                }
                entry.delivery.clone()
            };
            delivery
                .ack_with(AckKind::Progress)
                .await
                .map_err(|e| SourceError::backend("keep", e))?;
            if let Some(entry) = self.shared.held.lock().get_mut(&receipt.0) {
                entry.leased_at = Instant::now();
            }
            kept.push(*receipt);
        }
        Ok(kept)
    }

    async fn settle(
        &self,
        owner: &str,
        settled: Vec<(Receipt, Settlement)>,
    ) -> Result<(), SourceError> {
        let mine: Vec<(Held, Settlement)> = {
            let mut held = self.shared.held.lock();
            settled
                .into_iter()
                .filter_map(|(receipt, settlement)| match held.get(&receipt.0) {
                    Some(entry) if entry.owner == owner => {
                        held.remove(&receipt.0).map(|h| (h, settlement))
                    }
                    _ => None,
                })
                .collect()
        };
        // Every settlement of the batch is sent before any answer is awaited: a double ack is
        // a round trip, and JetStream answers them in a pipeline (one round trip per batch
        // instead of one per message).
        let outcomes = futures_util::future::join_all(
            mine.into_iter()
                .map(|(held, settlement)| self.settle_one(held, settlement)),
        )
        .await;
        let first_error = outcomes.into_iter().find_map(Result::err);
        match first_error {
            Some(error) => Err(SourceError::backend("settle", error)),
            None => Ok(()),
        }
    }

    async fn wait(&self, timeout: Duration) {
        tokio::time::sleep(timeout).await;
    }

    fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transport_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<NatsJetStream>();
        assert_send_sync::<NatsJetStreamBuilder>();
        assert_send_sync::<NatsTransportError>();
    }

    #[tokio::test]
    async fn a_failed_connect_does_not_show_the_password() {
        let error = NatsJetStream::builder("nats://herald:s3cret@127.0.0.1:1", "S", "c")
            .connect()
            .await
            .map(|_| ());
        match error {
            Ok(()) => panic!("connected to a closed port"),
            Err(error) => assert!(!format!("{error} {error:?}").contains("s3cret"), "{error}"),
        }
    }

    #[test]
    fn malformed_headers_are_json_with_escapes() {
        let text = malformed_headers("s.m", 3, "a\"b\\c");
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value["extra"]["herald-id-header"], "a\"b\\c");
        assert_eq!(value["extra"]["nats-stream-sequence"], "3");
    }
}
