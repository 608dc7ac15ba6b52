//! RabbitMQ for [Herald](https://docs.rs/herald), on [`lapin`]: a [`MessageSink`] that publishes
//! each message's wire envelope (`docs/WIRE.md`) with publisher confirms, and a [`MessageSource`]
//! that consumes a durable queue with manual acknowledgements and a bounded prefetch.
//!
//! How the source maps Herald's leases onto AMQP:
//! - a **lease** is an unacknowledged delivery: the broker sends at most `prefetch` of them
//!   (`basic.qos`), they wait in a buffer, and `receive` takes them from it;
//! - **keep**: RabbitMQ has no lease renewal (a delivery stays the consumer's until it is acked or
//!   its channel closes), so every delivery still held on the live channel is kept, and those
//!   whose channel closed are lost (the broker has already put them back in the queue);
//! - **settle**: done or failed for good → `basic.ack`; retry → RabbitMQ has no delayed nack: a
//!   copy, attempt + 1 with the handlers that finished, is published (confirmed) to the queue's
//!   delay queue `<queue>.herald-delay` with a per-message TTL, which dead-letters it back into
//!   the queue when it expires; then the original is acked. Release → `basic.nack` with requeue;
//! - a delivery that is not a wire envelope is handed to Herald as a malformed message: Herald
//!   dead-letters it with reason `malformed`, and the settlement acks it.
//!
//! **Reconnect**: a dropped connection (broker restart, connection closed by an operator) is
//! noticed on the next call, which opens a new connection, channels and consumer. Deliveries that
//! were not acked come back from the broker (at least once: the inbox removes the duplicates).
//!
//! ```no_run
//! # async fn run(herald: herald_core::Herald) -> Result<(), Box<dyn std::error::Error>> {
//! use herald_core::outbox::Relay;
//! use herald_transport_rabbitmq::RabbitMq;
//! use std::sync::Arc;
//!
//! let rabbit = RabbitMq::builder("amqp://guest:guest@127.0.0.1:5672/%2f", "orders")
//!     .prefetch(64)
//!     .connect()
//!     .await?;
//! let relay = Relay::builder(Arc::new(rabbit.clone()), &herald).start();
//! # relay.stop().await; Ok(()) }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

/// The AMQP client this transport is built on, for tools and benchmarks that talk to the broker
/// directly (`benches/transports.rs` compares against it).
pub use lapin;

use async_trait::async_trait;
use futures_util::StreamExt;
use herald_core::ports::{
    Capabilities, Confirmation, MessageSink, MessageSource, OutgoingMessage, Receipt, Received,
    Settlement, SinkError, SourceError, StoredMessage,
};
use herald_core::wire;
use lapin::acker::Acker;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation as AmqpConfirmation;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// The AMQP header carrying Herald's message id (also the `message_id` property and inside the
/// envelope), for tools and consumers that do not read the body.
pub const ID_HEADER: &str = "herald-id";
/// The AMQP header carrying the attempt of a re-published retry.
pub const ATTEMPT_HEADER: &str = "herald-attempt";
/// The suffix of the delay queue that holds retries until they are due (`<queue>.herald-delay`).
pub const DELAY_QUEUE_SUFFIX: &str = ".herald-delay";

/// How long `receive` waits for a first delivery when none is buffered.
const RECEIVE_WAIT: Duration = Duration::from_millis(50);
/// How long a reconnect may take to close the connection it replaces.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Could not connect to RabbitMQ or prepare the queues.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RabbitMqError {
    /// The URL is not an AMQP URL (it is not repeated here: it may hold a password).
    #[error("the AMQP URL is not valid; write it as amqp://user:password@host:port/vhost (vhost `/` is `%2f`)")]
    InvalidUrl,
    /// The settings cannot work.
    #[error("the RabbitMQ transport is misconfigured: {problem}")]
    Config {
        /// What is wrong, and how to fix it.
        problem: String,
    },
    /// RabbitMQ did not answer or refused a command.
    #[error("RabbitMQ could not {operation}: {source}; check that the broker is up and reachable and that the queue's arguments did not change")]
    Amqp {
        /// What was being done.
        operation: &'static str,
        /// lapin's error.
        #[source]
        source: lapin::Error,
    },
    /// The broker did not answer in time.
    #[error("RabbitMQ did not {operation} within {timeout:?}; check the broker's health")]
    Timeout {
        /// What was being waited for.
        operation: &'static str,
        /// How long.
        timeout: Duration,
    },
}

fn amqp(operation: &'static str) -> impl FnOnce(lapin::Error) -> RabbitMqError {
    move |source| RabbitMqError::Amqp { operation, source }
}

/// Builds a [`RabbitMq`]: `RabbitMq::builder(url, queue)…connect().await`.
#[derive(Clone)]
#[must_use = "a builder does nothing until `connect` is awaited"]
pub struct RabbitMqBuilder {
    url: String,
    queue: String,
    prefetch: u16,
    confirm_timeout: Duration,
    publish_to: Option<(String, String)>,
    expires_after: Option<Duration>,
    consume: bool,
}

impl fmt::Debug for RabbitMqBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: it is not shown.
        f.debug_struct("RabbitMqBuilder")
            .field("queue", &self.queue)
            .field("prefetch", &self.prefetch)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("publish_to", &self.publish_to)
            .field("expires_after", &self.expires_after)
            .field("consume", &self.consume)
            .finish_non_exhaustive()
    }
}

impl RabbitMqBuilder {
    /// How many deliveries the broker sends before the first is acked (`basic.qos`; default 32):
    /// the most this consumer buffers and holds at once.
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// How long a publish waits for the broker's confirm before it counts as failed (default
    /// 10 s).
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// Publishes to `exchange` with `routing_key` instead of straight to the queue (through the
    /// default exchange). The exchange and its binding to a queue are the application's; a
    /// message no queue takes is a failed confirmation (it is published as mandatory).
    pub fn publish_to(
        mut self,
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
    ) -> Self {
        self.publish_to = Some((exchange.into(), routing_key.into()));
        self
    }

    /// Lets the broker delete the queue and its delay queue once they go unused for `after`
    /// (`x-expires`), with their messages: for temporary queues, such as tests'. The delay queue
    /// has no consumer, so `after` must be longer than any retry delay. Off by default.
    pub fn expires_after(mut self, after: Duration) -> Self {
        self.expires_after = Some(after);
        self
    }

    /// Only publishes: `receive` is refused, with the reason. A transport takes no delivery until
    /// its first `receive` anyway (its consumer starts there, so a route's sink does not hold
    /// deliveries away from the real consumers); this makes a sink that must never consume say
    /// so when it is used as a source by mistake.
    pub fn publish_only(mut self) -> Self {
        self.consume = false;
        self
    }

    /// Connects and declares the durable queue and its delay queue. Consuming starts with the
    /// first `receive` (a relay's), not here.
    ///
    /// # Errors
    /// When the settings cannot work, the URL is not valid, the broker cannot be reached, or a
    /// queue exists with other arguments.
    pub async fn connect(self) -> Result<RabbitMq, RabbitMqError> {
        if self.prefetch == 0 {
            return Err(RabbitMqError::Config {
                problem: "prefetch is 0 (unlimited); give it a bound such as 32".into(),
            });
        }
        if self.queue.is_empty() {
            return Err(RabbitMqError::Config {
                problem: "the queue name is empty; name the queue".into(),
            });
        }
        if self.url.parse::<lapin::uri::AMQPUri>().is_err() {
            return Err(RabbitMqError::InvalidUrl);
        }
        let shared = Arc::new(Shared {
            delay_queue: format!("{}{DELAY_QUEUE_SUFFIX}", self.queue),
            config: self,
            link: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            next_receipt: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
            arrived: Arc::new(Notify::new()),
        });
        let rabbit = RabbitMq { shared };
        rabbit.link().await?;
        Ok(rabbit)
    }
}

/// One durable queue on RabbitMQ, as a sink and as a source. Cheap to clone (one `Arc`); clones
/// share the connection, the consumer and the deliveries they hold.
#[derive(Clone)]
pub struct RabbitMq {
    shared: Arc<Shared>,
}

struct Shared {
    config: RabbitMqBuilder,
    delay_queue: String,
    /// The live connection, replaced when it drops.
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    generation: AtomicU64,
    next_receipt: AtomicU64,
    held: Mutex<HashMap<u64, Held>>,
    /// Signalled when a delivery arrives, for `wait`.
    arrived: Arc<Notify>,
}

/// One connection with its publishing channel (confirms on) and its consuming channel.
struct Link {
    generation: u64,
    connection: Connection,
    publish: Channel,
    consume: Channel,
    deliveries: tokio::sync::Mutex<mpsc::UnboundedReceiver<Delivery>>,
    /// Deliveries in `deliveries`, not yet taken by `receive`.
    buffered: Arc<AtomicUsize>,
    /// Cleared when the consumer's stream ends or fails.
    alive: Arc<AtomicBool>,
    /// The consumer, started by the first `receive` on this connection (see [`Link::consumer`]):
    /// until then the sender waits here and no delivery is taken from the queue.
    consumer: tokio::sync::Mutex<Consumer>,
}

/// A link's consumer: not started (holding the sender its forwarder will feed), or running.
enum Consumer {
    Idle(mpsc::UnboundedSender<Delivery>),
    Running(tokio::task::JoinHandle<()>),
}

impl Link {
    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
            && self.connection.status().connected()
            && self.publish.status().connected()
            && self.consume.status().connected()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Consumer::Running(forwarder) = self.consumer.get_mut() {
            forwarder.abort();
        }
    }
}

/// What a receipt names: the delivery and the message read from it.
struct Held {
    owner: String,
    generation: u64,
    acker: Acker,
    message: StoredMessage,
}

impl fmt::Debug for RabbitMq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMq")
            .field("queue", &self.shared.config.queue)
            .field("held", &self.shared.held.lock().len())
            .finish_non_exhaustive()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn properties(id: &str, attempt: u32) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from(ID_HEADER),
        AMQPValue::LongString(LongString::from(id)),
    );
    headers.insert(
        ShortString::from(ATTEMPT_HEADER),
        AMQPValue::LongUInt(attempt),
    );
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(id))
        .with_headers(headers)
}

impl RabbitMq {
    /// The capabilities declared as sink and as source. Per-message ack: each delivery is acked
    /// on its own. Persistent: durable queues, persistent delivery mode, and a publish counts only
    /// on the broker's confirm. No native delay (retries go through the delay queue), and no
    /// per-key order (deliveries of one key can run at once, and a retry comes back later).
    pub const CAPABILITIES: Capabilities = Capabilities::none()
        .with_per_message_ack()
        .with_persistent();

    /// A builder for the queue `queue` on the broker at `url`
    /// (`amqp://user:password@host:port/vhost`).
    pub fn builder(url: impl Into<String>, queue: impl Into<String>) -> RabbitMqBuilder {
        RabbitMqBuilder {
            url: url.into(),
            queue: queue.into(),
            prefetch: 32,
            confirm_timeout: Duration::from_secs(10),
            publish_to: None,
            expires_after: None,
            consume: true,
        }
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        &self.shared.config.queue
    }

    /// How many times the connection was opened again after it dropped.
    pub fn reconnects(&self) -> u64 {
        self.shared
            .generation
            .load(Ordering::Acquire)
            .saturating_sub(1)
    }

    /// The delay queue's name (`<queue>.herald-delay`).
    pub fn delay_queue(&self) -> &str {
        &self.shared.delay_queue
    }

    /// Messages not finished: ready in the queue or the delay queue, buffered, or held.
    ///
    /// # Errors
    /// When the broker cannot be reached.
    pub async fn unfinished(&self) -> Result<u64, RabbitMqError> {
        let link = self.link().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let mut ready = 0_u64;
        for queue in [&self.shared.config.queue, &self.shared.delay_queue] {
            let declared = link
                .consume
                .queue_declare(queue, passive, FieldTable::default())
                .await
                .map_err(amqp("count the queue's messages"))?;
            ready += u64::from(declared.message_count());
        }
        let held = self
            .shared
            .held
            .lock()
            .values()
            .filter(|h| h.generation == link.generation)
            .count();
        Ok(ready + link.buffered.load(Ordering::Acquire) as u64 + held as u64)
    }

    /// Deletes the queue and its delay queue, with their messages (for tests and tools).
    ///
    /// # Errors
    /// When the broker cannot be reached.
    pub async fn delete_queues(&self) -> Result<(), RabbitMqError> {
        let link = self.link().await?;
        for queue in [&self.shared.delay_queue, &self.shared.config.queue] {
            link.publish
                .queue_delete(queue, Default::default())
                .await
                .map_err(amqp("delete the queue"))?;
        }
        Ok(())
    }

    /// Closes the connection (AMQP `connection.close`): deliveries not yet acked go back to the
    /// queue at once. Call it last, after the relay stopped and Herald shut down; a later call on
    /// this transport (or a clone) opens a new connection. Without it, a process that ends with
    /// the connection open leaves the broker to notice (lapin logs an I/O error at exit).
    ///
    /// # Errors
    /// When the broker does not confirm the close in time.
    pub async fn close(&self) -> Result<(), RabbitMqError> {
        let Some(link) = self.shared.link.lock().await.take() else {
            return Ok(());
        };
        if !link.connection.status().connected() {
            return Ok(());
        }
        match tokio::time::timeout(CLOSE_WAIT, link.connection.close(200, "herald closes")).await {
            Ok(closed) => closed.map_err(amqp("close the connection")),
            Err(_) => Err(RabbitMqError::Timeout {
                operation: "close the connection",
                timeout: CLOSE_WAIT,
            }),
        }
    }

    /// The live link, or a new one when the connection dropped.
    async fn link(&self) -> Result<Arc<Link>, RabbitMqError> {
        let mut slot = self.shared.link.lock().await;
        if let Some(link) = slot.as_ref() {
            if link.is_alive() {
                return Ok(link.clone());
            }
            tracing::warn!(queue = %self.shared.config.queue, "the RabbitMQ connection dropped; reconnecting");
            let old = slot.take();
            if let Some(old) = old {
                if old.connection.status().connected() {
                    let _ = tokio::time::timeout(
                        CLOSE_WAIT,
                        old.connection.close(200, "herald reconnects"),
                    )
                    .await;
                }
            }
        }
        let link = Arc::new(self.open().await?);
        *slot = Some(link.clone());
        Ok(link)
    }

    async fn open(&self) -> Result<Link, RabbitMqError> {
        let config = &self.shared.config;
        let properties = ConnectionProperties::default()
            .with_connection_name(LongString::from("herald-transport-rabbitmq"))
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        let connection = Connection::connect(&config.url, properties)
            .await
            .map_err(amqp("connect"))?;
        let publish = connection
            .create_channel()
            .await
            .map_err(amqp("open a channel"))?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp("turn on publisher confirms"))?;
        let consume = connection
            .create_channel()
            .await
            .map_err(amqp("open a channel"))?;
        consume
            .basic_qos(config.prefetch, BasicQosOptions::default())
            .await
            .map_err(amqp("set the prefetch"))?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let mut arguments = FieldTable::default();
        if let Some(after) = config.expires_after {
            let after = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
            arguments.insert(
                ShortString::from("x-expires"),
                AMQPValue::LongLongInt(after),
            );
        }
        consume
            .queue_declare(&config.queue, durable, arguments.clone())
            .await
            .map_err(amqp("declare the queue"))?;
        // Expired retries go back to the queue through the default exchange.
        let mut delay_arguments = arguments;
        delay_arguments.insert(
            ShortString::from("x-dead-letter-exchange"),
            AMQPValue::LongString(LongString::from("")),
        );
        delay_arguments.insert(
            ShortString::from("x-dead-letter-routing-key"),
            AMQPValue::LongString(LongString::from(config.queue.as_str())),
        );
        consume
            .queue_declare(&self.shared.delay_queue, durable, delay_arguments)
            .await
            .map_err(amqp("declare the delay queue"))?;
        let generation = self.shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let (sender, receiver) = mpsc::unbounded_channel();
        let buffered = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicBool::new(true));
        Ok(Link {
            generation,
            connection,
            publish,
            consume,
            deliveries: tokio::sync::Mutex::new(receiver),
            buffered,
            alive,
            consumer: tokio::sync::Mutex::new(Consumer::Idle(sender)),
        })
    }

    /// Starts `link`'s consumer unless it runs already. Called by `receive` only: a transport
    /// used only as a sink (a route's, a forwarding service's) never consumes, so it holds no
    /// delivery away from the real consumers (up to `prefetch` of them, unacked until its
    /// connection closed, when the consumer started at connect).
    async fn consume_on(&self, link: &Link) -> Result<(), RabbitMqError> {
        let mut consumer = link.consumer.lock().await;
        let Consumer::Idle(sender) = &*consumer else {
            return Ok(());
        };
        let sender = sender.clone();
        let config = &self.shared.config;
        let mut deliveries = link
            .consume
            .basic_consume(
                &config.queue,
                "",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp("start consuming"))?;
        let arrived = self.shared.arrived.clone();
        let forwarder = tokio::spawn({
            let buffered = link.buffered.clone();
            let alive = link.alive.clone();
            let queue = config.queue.clone();
            async move {
                // The broker sends at most `prefetch` unacked deliveries: this buffer stays bounded.
                loop {
                    match deliveries.next().await {
                        Some(Ok(delivery)) => {
                            buffered.fetch_add(1, Ordering::AcqRel);
                            if sender.send(delivery).is_err() {
                                break;
                            }
                            arrived.notify_waiters();
                        }
                        Some(Err(error)) => {
                            tracing::warn!(%queue, %error, "the RabbitMQ consumer failed; the next call reconnects");
                            break;
                        }
                        None => {
                            tracing::warn!(%queue, "the RabbitMQ consumer was cancelled; the next call reconnects");
                            break;
                        }
                    }
                }
                alive.store(false, Ordering::Release);
                arrived.notify_waiters();
            }
        });
        *consumer = Consumer::Running(forwarder);
        Ok(())
    }

    /// Publishes one body and waits for the broker's confirm.
    async fn publish_confirmed(
        &self,
        link: &Link,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Confirmation {
        let timeout = self.shared.config.confirm_timeout;
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirm = match link
            .publish
            .basic_publish(exchange, routing_key, options, body, properties)
            .await
        {
            Ok(confirm) => confirm,
            Err(error) => {
                link.alive.store(false, Ordering::Release);
                return Confirmation::Failed {
                    reason: format!("RabbitMQ refused the publish: {error}"),
                };
            }
        };
        match tokio::time::timeout(timeout, confirm).await {
            Ok(Ok(AmqpConfirmation::Ack(None))) => Confirmation::Confirmed,
            Ok(Ok(AmqpConfirmation::Ack(Some(returned)))) => Confirmation::Failed {
                reason: format!(
                    "no queue took the message (returned: {} {})",
                    returned.reply_code, returned.reply_text
                ),
            },
            Ok(Ok(AmqpConfirmation::Nack(_))) => Confirmation::Failed {
                reason: "RabbitMQ nacked the message (it could not store it)".into(),
            },
            Ok(Ok(AmqpConfirmation::NotRequested)) => Confirmation::Failed {
                reason: "the channel is not in confirm mode".into(),
            },
            Ok(Err(error)) => {
                link.alive.store(false, Ordering::Release);
                Confirmation::Failed {
                    reason: format!("the connection failed before the confirm: {error}"),
                }
            }
            Err(_) => Confirmation::Failed {
                reason: format!("no confirm from RabbitMQ within {timeout:?}"),
            },
        }
    }

    /// The stored message a delivery holds; one that is not a wire envelope is handed over so
    /// that Herald dead-letters it as malformed (its id is not a UUID, and says why).
    fn read_delivery(delivery: &Delivery) -> StoredMessage {
        match wire::decode(&delivery.data) {
            Ok(message) => message,
            Err(error) => {
                let property_id = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.as_str().to_owned())
                    .unwrap_or_default();
                tracing::warn!(delivery = delivery.delivery_tag, %error, "a RabbitMQ delivery is not a Herald wire envelope; it goes to the dead letters as malformed");
                StoredMessage {
                    message_id: format!("malformed wire envelope: {error}"),
                    name: String::new(),
                    key: None,
                    payload: String::from_utf8_lossy(&delivery.data).into_owned(),
                    headers: malformed_headers(&property_id, delivery.routing_key.as_str()),
                    occurred_at: chrono::Utc::now(),
                    attempt: 1,
                    progress: herald_core::Progress::new(),
                    only_handlers: None,
                }
            }
        }
    }

    /// Settles one held delivery.
    async fn settle_one(&self, held: Held, settlement: Settlement) -> Result<(), SourceError> {
        match settlement {
            Settlement::Done { .. } | Settlement::FailedForGood { .. } => finish(
                &held,
                "settle",
                held.acker.ack(BasicAckOptions::default()).await,
            ),
            Settlement::Retry {
                progress,
                delay,
                replacement_id,
                ..
            } => {
                if !held.acker.usable() {
                    // Its channel closed: the broker delivers the original again.
                    return Ok(());
                }
                let mut message = held.message.clone();
                message.progress = progress;
                message.attempt = message.attempt.saturating_add(1);
                if let Some(id) = replacement_id {
                    message.message_id = id.to_string();
                }
                let link = self
                    .link()
                    .await
                    .map_err(|e| SourceError::backend("settle", e))?;
                let properties = properties(&message.message_id, message.attempt)
                    .with_expiration(ShortString::from(millis(delay).to_string()));
                let confirmation = self
                    .publish_confirmed(
                        &link,
                        "",
                        &self.shared.delay_queue,
                        &wire::encode_stored(&message),
                        properties,
                    )
                    .await;
                match confirmation {
                    Confirmation::Confirmed => finish(
                        &held,
                        "settle",
                        held.acker.ack(BasicAckOptions::default()).await,
                    ),
                    other => {
                        // Never lost: the original goes back to the queue, as it was.
                        let requeue = BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        };
                        let _ = held.acker.nack(requeue).await;
                        Err(SourceError::backend(
                            "settle",
                            format!("the retry's copy was not confirmed ({other:?}); the message was requeued as it was"),
                        ))
                    }
                }
            }
            // Release, and any settlement a newer Herald adds: back to the queue at once.
            _ => {
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                finish(&held, "settle", held.acker.nack(requeue).await)
            }
        }
    }
}

/// An ack or nack's outcome: one on a closed channel is not applied (the broker delivers the
/// message again), which is logged, not an error.
fn finish(
    held: &Held,
    operation: &'static str,
    outcome: lapin::Result<bool>,
) -> Result<(), SourceError> {
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => {
            tracing::warn!(id = %held.message.message_id, "the delivery's channel closed before its settlement; RabbitMQ delivers it again");
            Ok(())
        }
        Err(error) => Err(SourceError::backend(operation, error)),
    }
}

/// The extra headers of a malformed delivery: the id its producer gave and its routing key.
fn malformed_headers(message_id: &str, routing_key: &str) -> String {
    serde_json::json!({ "extra": { "amqp-message-id": message_id, "amqp-routing-key": routing_key } })
        .to_string()
}

#[async_trait]
impl MessageSink for RabbitMq {
    async fn publish(&self, batch: Vec<OutgoingMessage>) -> Result<Vec<Confirmation>, SinkError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let link = self.link().await.map_err(SinkError::backend)?;
        let (exchange, routing_key) = match &self.shared.config.publish_to {
            Some((exchange, key)) => (exchange.as_str(), key.as_str()),
            None => ("", self.shared.config.queue.as_str()),
        };
        let pending = batch.iter().map(|message| {
            let id = message.envelope.id.to_string();
            let body = wire::encode(message);
            let link = &link;
            async move {
                self.publish_confirmed(link, exchange, routing_key, &body, properties(&id, 1))
                    .await
            }
        });
        Ok(futures_util::future::join_all(pending).await)
    }

    fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES
    }

    fn destination(&self) -> String {
        match &self.shared.config.publish_to {
            Some((exchange, key)) => format!("rabbitmq:{exchange}/{key}"),
            None => format!("rabbitmq:{}", self.queue()),
        }
    }
}

/// The consumer's lag for metrics and consoles: one reading, subscription `rabbitmq:<queue>`,
/// with its queue and delay queue: ready, buffered or held ([`unfinished`](RabbitMq::unfinished)).
#[async_trait]
impl herald_core::ports::lag::ConsumerLag for RabbitMq {
    async fn lag(&self) -> Result<Vec<herald_core::ports::lag::LagReading>, SourceError> {
        let unfinished = self
            .unfinished()
            .await
            .map_err(|error| SourceError::backend("lag", error))?;
        Ok(vec![herald_core::ports::lag::LagReading::new(
            format!("rabbitmq:{}", self.queue()),
            unfinished,
        )])
    }
}

#[async_trait]
impl MessageSource for RabbitMq {
    async fn receive(
        &self,
        owner: &str,
        limit: usize,
        _lease: Duration,
    ) -> Result<Vec<Received>, SourceError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        if !self.shared.config.consume {
            return Err(SourceError::backend(
                "receive",
                format!(
                    "the RabbitMQ transport of queue `{}` was built `publish_only`; build the consumer's without it",
                    self.shared.config.queue
                ),
            ));
        }
        let link = self
            .link()
            .await
            .map_err(|e| SourceError::backend("receive", e))?;
        self.consume_on(&link)
            .await
            .map_err(|e| SourceError::backend("receive", e))?;
        let mut deliveries = Vec::new();
        {
            let mut buffer = link.deliveries.lock().await;
            match buffer.try_recv() {
                Ok(delivery) => deliveries.push(delivery),
                Err(mpsc::error::TryRecvError::Empty) => {
                    if let Ok(Some(delivery)) =
                        tokio::time::timeout(RECEIVE_WAIT, buffer.recv()).await
                    {
                        deliveries.push(delivery);
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {}
            }
            while deliveries.len() < limit {
                match buffer.try_recv() {
                    Ok(delivery) => deliveries.push(delivery),
                    Err(_) => break,
                }
            }
        }
        link.buffered.fetch_sub(deliveries.len(), Ordering::AcqRel);
        let mut held = self.shared.held.lock();
        Ok(deliveries
            .into_iter()
            .map(|delivery| {
                let message = Self::read_delivery(&delivery);
                let receipt = self.shared.next_receipt.fetch_add(1, Ordering::Relaxed);
                held.insert(
                    receipt,
                    Held {
                        owner: owner.to_owned(),
                        generation: link.generation,
                        acker: delivery.acker,
                        message: message.clone(),
                    },
                );
                Received {
                    receipt: Receipt(receipt),
                    message,
                }
            })
            .collect())
    }

    async fn keep(
        &self,
        owner: &str,
        receipts: &[Receipt],
        _lease: Duration,
    ) -> Result<Vec<Receipt>, SourceError> {
        let live = {
            let slot = self.shared.link.lock().await;
            slot.as_ref()
                .filter(|link| link.is_alive())
                .map(|link| link.generation)
        };
        let mut held = self.shared.held.lock();
        Ok(receipts
            .iter()
            .filter(|receipt| {
                let Some(h) = held.get(&receipt.0) else {
                    return false;
                };
                if h.owner != owner {
                    return false;
                }
                if Some(h.generation) == live && h.acker.usable() {
                    true
                } else {
                    // Its channel closed: the broker took it back.
                    held.remove(&receipt.0);
                    false
                }
            })
            .copied()
            .collect())
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
                .filter_map(|(receipt, settlement)| {
                    let taken = match held.get(&receipt.0) {
                        Some(h) if h.owner == owner => held.remove(&receipt.0),
                        _ => None,
                    };
                    if taken.is_none() {
                        tracing::warn!(%receipt, %owner, "settlement for a delivery this consumer no longer holds; ignored");
                    }
                    taken.map(|h| (h, settlement))
                })
                .collect()
        };
        // The batch's acks go out together instead of one after the other: each is its own frame
        // on the channel either way, and a retry's confirmed copy does not hold up the others.
        let outcomes = futures_util::future::join_all(
            mine.into_iter()
                .map(|(held, settlement)| self.settle_one(held, settlement)),
        )
        .await;
        outcomes
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), Err)
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

    #[test]
    fn the_transport_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RabbitMq>();
        assert_send_sync::<RabbitMqBuilder>();
        assert_send_sync::<RabbitMqError>();
    }

    #[tokio::test]
    async fn an_invalid_url_does_not_show_the_password() {
        let error = RabbitMq::builder("amqp://guest:s3cret@[bad", "q")
            .connect()
            .await
            .map(|_| ());
        let Err(error) = error else {
            panic!("a bad URL was accepted")
        };
        assert!(matches!(error, RabbitMqError::InvalidUrl), "{error}");
        assert!(!error.to_string().contains("s3cret"), "{error}");
        let builder = RabbitMq::builder("amqp://guest:s3cret@host", "q");
        assert!(!format!("{builder:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn an_unbounded_prefetch_is_refused() {
        let error = RabbitMq::builder("amqp://127.0.0.1", "q")
            .prefetch(0)
            .connect()
            .await
            .map(|_| ());
        assert!(matches!(error, Err(RabbitMqError::Config { .. })));
    }

    #[test]
    fn malformed_headers_are_json_with_escapes() {
        let text = malformed_headers("a\"b\\c", "q");
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value["extra"]["amqp-message-id"], "a\"b\\c");
    }
}
