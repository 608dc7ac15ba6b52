//! Apache Kafka for [Herald](https://docs.rs/herald): a
//! [`MessageSink`](herald_core::ports::MessageSink) that produces each message's wire envelope
//! (`docs/WIRE.md`) to a topic with an idempotent producer and counts it as confirmed on its
//! delivery report, and a [`MessageSource`](herald_core::ports::MessageSource) that reads the
//! topic in a consumer group and commits only what Herald finished.
//!
//! How the transport maps Herald onto Kafka:
//! - **Outbound**: the Herald key is the Kafka key (librdkafka's `murmur2_random` partitioner,
//!   the Java client's, so one key stays on one partition, in order, whoever produces it);
//!   `acks=all` and `enable.idempotence=true`; the message id travels in the header
//!   [`ID_HEADER`] and the wire name in [`NAME_HEADER`]; a message counts as confirmed only on
//!   its delivery report, and a failed report is a [`Confirmation::Failed`](herald_core::ports::Confirmation)
//!   with librdkafka's reason (the route retries it with its backoff).
//! - **Inbound**: a background task polls the consumer group and fills a bounded buffer
//!   ([`KafkaBuilder::max_buffered`]; the partitions are paused while it is full). Kafka has no
//!   per-message ack, so leases live in this process: a relay's `receive` leases messages from
//!   the buffer, `keep` extends the leases, and `settle` finishes them.
//! - **Offsets**: `enable.auto.commit=true` with `enable.auto.offset.store=false`: an offset is
//!   stored for the next commit only when every message before it in its partition is finished
//!   (the contiguous done watermark), so concurrent handlers never commit past an unfinished
//!   message. When a rebalance revokes partitions, their stored offsets are committed at once and
//!   their unfinished messages forgotten (the new owner reads them again: at least once).
//! - **Order and retries**: one key is one lane. The earliest unfinished message of a key holds
//!   the lane; a retry *holds the lane* until its backoff passed and it is handed out again as
//!   attempt + 1 with the handlers that finished (the message stays unfinished, so it also holds
//!   back its partition's committed offset). Other keys go on meanwhile. The last failure goes
//!   to Herald's dead letters and then counts as finished. No retry topic: a copy on another
//!   topic would let the key's later messages overtake it.
//! - **Malformed** records (not a wire envelope) are handed to Herald as malformed messages:
//!   Herald dead-letters them with reason `malformed`, then they count as finished.
//! - **Re-reading**: [`KafkaBuilder::start_at`] places the group at an offset or a time the first
//!   time this consumer is given each partition; [`Kafka::lag`] reports the lag per partition.
//!
//! ```no_run
//! # async fn run(herald: herald_core::Herald) -> Result<(), Box<dyn std::error::Error>> {
//! use herald_core::outbox::Relay;
//! use herald_transport_kafka::Kafka;
//! use std::sync::Arc;
//!
//! let kafka = Kafka::builder("127.0.0.1:9092", "orders", "billing").connect().await?;
//! let relay = Relay::builder(Arc::new(kafka.clone()), &herald).start();
//! for partition in kafka.lag().await? {
//!     println!("partition {}: {} behind", partition.partition, partition.lag);
//! }
//! # relay.stop().await; Ok(()) }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

/// The Kafka client this transport is built on (for [`Kafka::producer`] and its types).
pub use rdkafka;

mod lanes;
mod offsets;
mod sink;
mod source;

use chrono::{DateTime, Utc};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;
use source::{Rebalancer, SourceState};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The header holding the Herald message id (also inside the envelope).
pub const ID_HEADER: &str = "herald-id";
/// The header holding the message's wire name, for tools.
pub const NAME_HEADER: &str = "herald-name";

/// Could not set up the Kafka clients or the topic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaTransportError {
    /// librdkafka refused the configuration (an unknown or invalid property).
    #[error("the Kafka client could not be configured: {source}; check the properties given to `KafkaBuilder::set`")]
    Config {
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The brokers did not answer or refused a request.
    #[error("Kafka could not {operation}: {source}; check the bootstrap servers and that the brokers are up")]
    Broker {
        /// What was being done.
        operation: &'static str,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// A blocking librdkafka call could not run.
    #[error("a blocking Kafka call did not finish: {0}")]
    Blocking(String),
}

/// Where the consumer starts reading a partition the first time it is assigned to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartAt {
    /// The group's committed offset, or the earliest offset when there is none (the default).
    Committed,
    /// The earliest offset still in the partition.
    Beginning,
    /// Only messages produced from now on.
    End,
    /// This offset in every partition (the earliest one still kept if it is older).
    Offset(i64),
    /// The first message produced at or after this time, in every partition.
    Time(DateTime<Utc>),
}

/// How far the consumer group is behind in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionLag {
    /// The partition.
    pub partition: i32,
    /// The earliest offset still in the partition.
    pub low_watermark: i64,
    /// One past the last offset produced.
    pub high_watermark: i64,
    /// The group's committed offset on the broker, if there is one.
    pub committed: Option<i64>,
    /// The first offset this process has not finished (its done watermark), for a partition it
    /// reads.
    pub finished_up_to: Option<i64>,
    /// Messages not finished: the high watermark minus the done watermark (or the committed
    /// offset, or the low watermark when there is neither).
    pub lag: i64,
}

/// Settings for [`Kafka`]; made by [`Kafka::builder`].
#[must_use = "a builder does nothing until `connect` is called"]
#[derive(Debug, Clone)]
pub struct KafkaBuilder {
    brokers: String,
    topic: String,
    group: String,
    create_topic: Option<(i32, i32)>,
    start_at: StartAt,
    max_buffered: usize,
    commit_interval: Duration,
    delivery_timeout: Duration,
    request_timeout: Duration,
    properties: Vec<(String, String)>,
}

impl KafkaBuilder {
    /// Creates the topic with `partitions` partitions and `replication` replicas when it is
    /// missing (default: the topic must exist, or the brokers create it).
    pub fn create_topic(mut self, partitions: i32, replication: i32) -> Self {
        self.create_topic = Some((partitions.max(1), replication.max(1)));
        self
    }

    /// Where the consumer starts the first time it is given each partition (default
    /// [`StartAt::Committed`]). [`StartAt::Offset`] and [`StartAt::Time`] re-read what the group
    /// had already finished: Kafka keeps messages after they are consumed.
    pub fn start_at(mut self, start: StartAt) -> Self {
        self.start_at = start;
        self
    }

    /// How many messages the source holds read and unfinished at most (default 1 000): while it
    /// holds that many, the consumer's partitions are paused.
    pub fn max_buffered(mut self, messages: usize) -> Self {
        self.max_buffered = messages.max(1);
        self
    }

    /// How often stored offsets are committed (`auto.commit.interval.ms`, default 1 s). Offsets
    /// are also committed when partitions are revoked and by [`Kafka::commit`].
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// How long librdkafka keeps trying to deliver a produced message before its delivery report
    /// fails (`message.timeout.ms`, default 30 s, the route's default timeout).
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// How long a request to the brokers may take (metadata, watermarks, topic creation, commits;
    /// default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets a librdkafka property on both clients (`security.protocol`, `client.id`,
    /// `linger.ms`...). The settings this transport relies on (`acks`, `enable.idempotence`,
    /// `enable.auto.offset.store`, `group.id`) are applied after these and cannot be changed.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    fn base_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    fn producer_config(&self) -> ClientConfig {
        let mut config = self.base_config();
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", millis(self.delivery_timeout));
        config
    }

    fn consumer_config(&self) -> ClientConfig {
        let mut config = self.base_config();
        config
            .set("group.id", &self.group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", millis(self.commit_interval))
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        config
    }

    /// Creates the producer and the consumer (the consumer joins its group on the first
    /// `receive`, so a value used only as a sink never takes partitions), and the topic if asked.
    ///
    /// # Errors
    /// When librdkafka refuses the configuration, or the topic cannot be created.
    pub async fn connect(self) -> Result<Kafka, KafkaTransportError> {
        let config = |source| KafkaTransportError::Config { source };
        let producer: FutureProducer = self.producer_config().create().map_err(config)?;
        if let Some((partitions, replication)) = self.create_topic {
            self.ensure_topic(partitions, replication).await?;
        }
        let state = Arc::new(SourceState::new(
            self.topic.clone(),
            self.start_at,
            self.max_buffered,
            self.request_timeout,
        ));
        let consumer: BaseConsumer<Rebalancer> = self
            .consumer_config()
            .create_with_context(Rebalancer::new(state.clone()))
            .map_err(config)?;
        // Reads offsets and watermarks for `lag`; never subscribes, so it never joins the group
        // and keeps working after the polling consumer closed.
        let offsets_reader: BaseConsumer = self.consumer_config().create().map_err(config)?;
        let stop = CancellationToken::new();
        let admin_config = self.base_config();
        Ok(Kafka {
            shared: Arc::new(Shared {
                topic: self.topic,
                group: self.group,
                producer,
                consumer: Arc::new(consumer),
                offsets_reader,
                state,
                request_timeout: self.request_timeout,
                admin_config,
                poller: parking_lot::Mutex::new(None),
                stop: stop.clone(),
            }),
            _stop_on_drop: Arc::new(stop.drop_guard()),
        })
    }

    async fn ensure_topic(
        &self,
        partitions: i32,
        replication: i32,
    ) -> Result<(), KafkaTransportError> {
        let broker = |operation| move |source| KafkaTransportError::Broker { operation, source };
        let admin: AdminClient<DefaultClientContext> = self
            .base_config()
            .create()
            .map_err(|source| KafkaTransportError::Config { source })?;
        let topic = NewTopic::new(
            &self.topic,
            partitions,
            TopicReplication::Fixed(replication),
        );
        let options = AdminOptions::new()
            .operation_timeout(Some(self.request_timeout))
            .request_timeout(Some(self.request_timeout));
        let results = admin
            .create_topics([&topic], &options)
            .await
            .map_err(broker("create the topic"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(broker("create the topic")(KafkaError::AdminOp(code)));
                }
            }
        }
        Ok(())
    }
}

/// One topic as a sink (an idempotent producer) and as a source (a consumer in a group). Cheap
/// to clone (one `Arc`); clones share the clients and the messages they handed out. The
/// consumer's polling thread leaves the group when [`close`](Kafka::close) is called or the
/// last clone is dropped.
#[derive(Clone)]
pub struct Kafka {
    shared: Arc<Shared>,
    _stop_on_drop: Arc<tokio_util::sync::DropGuard>,
}

struct Shared {
    topic: String,
    group: String,
    producer: FutureProducer,
    consumer: Arc<BaseConsumer<Rebalancer>>,
    offsets_reader: BaseConsumer,
    state: Arc<SourceState>,
    request_timeout: Duration,
    /// The brokers and the user's properties, for admin clients.
    admin_config: ClientConfig,
    /// The consumer's polling thread, once it subscribed.
    poller: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    stop: CancellationToken,
}

impl fmt::Debug for Kafka {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kafka")
            .field("topic", &self.shared.topic)
            .field("group", &self.shared.group)
            .field("held", &self.shared.state.held())
            .finish_non_exhaustive()
    }
}

fn millis(duration: Duration) -> String {
    duration.as_millis().max(1).to_string()
}

impl Kafka {
    /// The capabilities declared as sink and as source: per-key order (one key, one partition,
    /// one lane in the consumer), persistent (the brokers keep the log). No per-message ack
    /// (Kafka commits an offset per partition) and no native delay (a retry is held in the
    /// consumer's process).
    pub const CAPABILITIES: herald_core::ports::Capabilities =
        herald_core::ports::Capabilities::none()
            .with_ordered_by_key()
            .with_persistent();

    /// Settings for topic `topic` on the cluster at `brokers` (`host:port[,host:port...]`), read
    /// by the consumer group `group`.
    pub fn builder(
        brokers: impl Into<String>,
        topic: impl Into<String>,
        group: impl Into<String>,
    ) -> KafkaBuilder {
        KafkaBuilder {
            brokers: brokers.into(),
            topic: topic.into(),
            group: group.into(),
            create_topic: None,
            start_at: StartAt::Committed,
            max_buffered: 1_000,
            commit_interval: Duration::from_secs(1),
            delivery_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            properties: Vec::new(),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.shared.group
    }

    /// The producer, for tools and tests (producing raw records).
    pub fn producer(&self) -> &FutureProducer {
        &self.shared.producer
    }

    /// Leaves the consumer group: stops reading, commits what is finished (the partitions are
    /// revoked) and closes the consumer, waiting at most the request timeout for the brokers.
    /// Messages handed out and not finished are read again by the group's next owner. The value
    /// still works as a sink; as a source it returns errors from then on. Call it after the
    /// relay stopped.
    pub async fn close(&self) {
        self.shared.stop.cancel();
        let poller = self.shared.poller.lock().take();
        if let Some(poller) = poller {
            if !matches!(blocking(move || poller.join()).await, Ok(Ok(()))) {
                tracing::error!("the Kafka consumer's thread did not end cleanly");
            }
        }
    }

    /// Commits the offsets stored so far now, instead of at the next commit interval.
    ///
    /// # Errors
    /// When the group coordinator does not accept the commit.
    pub async fn commit(&self) -> Result<(), KafkaTransportError> {
        let consumer = self.shared.consumer.clone();
        blocking(move || {
            match consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
                Err(source) => Err(KafkaTransportError::Broker {
                    operation: "commit the offsets",
                    source,
                }),
            }
        })
        .await?
    }

    /// The lag of the group in every partition of the topic (for metrics): the high watermark
    /// minus what is finished. For a partition this process reads, "finished" is its done
    /// watermark, which is ahead of the committed offset until the next commit.
    ///
    /// # Errors
    /// When the brokers do not answer.
    pub async fn lag(&self) -> Result<Vec<PartitionLag>, KafkaTransportError> {
        let shared = self.shared.clone();
        let finished = self.shared.state.watermarks();
        blocking(move || {
            let broker =
                |operation| move |source| KafkaTransportError::Broker { operation, source };
            let timeout = shared.request_timeout;
            let consumer = &shared.offsets_reader;
            let metadata = consumer
                .fetch_metadata(Some(&shared.topic), timeout)
                .map_err(broker("read the topic's metadata"))?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == shared.topic)
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            let mut list = TopicPartitionList::new();
            for partition in &partitions {
                list.add_partition(&shared.topic, *partition);
            }
            let committed = consumer
                .committed_offsets(list, timeout)
                .map_err(broker("read the committed offsets"))?;
            let mut lags = Vec::with_capacity(partitions.len());
            for partition in partitions {
                let (low, high) = consumer
                    .fetch_watermarks(&shared.topic, partition, timeout)
                    .map_err(broker("read the watermarks"))?;
                let committed = committed
                    .find_partition(&shared.topic, partition)
                    .and_then(|e| e.offset().to_raw())
                    .filter(|offset| *offset >= 0);
                let finished_up_to = finished.get(&partition).copied();
                let position = finished_up_to.or(committed).unwrap_or(low).max(low);
                lags.push(PartitionLag {
                    partition,
                    low_watermark: low,
                    high_watermark: high,
                    committed,
                    finished_up_to,
                    lag: (high - position).max(0),
                });
            }
            Ok(lags)
        })
        .await?
    }

    /// Messages of the topic the group has not finished (the lags added up).
    ///
    /// # Errors
    /// When the brokers do not answer.
    pub async fn unfinished(&self) -> Result<u64, KafkaTransportError> {
        let lags = self.lag().await?;
        Ok(lags.iter().map(|p| u64::try_from(p.lag).unwrap_or(0)).sum())
    }

    /// Deletes the topic: for tests and tools.
    ///
    /// # Errors
    /// When the brokers refuse.
    pub async fn delete_topic(&self) -> Result<(), KafkaTransportError> {
        let broker = |source| KafkaTransportError::Broker {
            operation: "delete the topic",
            source,
        };
        let admin: AdminClient<DefaultClientContext> = self
            .shared
            .admin_config
            .create()
            .map_err(|source| KafkaTransportError::Config { source })?;
        let options = AdminOptions::new()
            .operation_timeout(Some(self.shared.request_timeout))
            .request_timeout(Some(self.shared.request_timeout));
        admin
            .delete_topics(&[&self.shared.topic], &options)
            .await
            .map_err(broker)?;
        Ok(())
    }
}

/// Runs a blocking librdkafka call (a network round trip) off the async workers.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<T, KafkaTransportError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| KafkaTransportError::Blocking(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transport_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Kafka>();
        assert_send_sync::<KafkaBuilder>();
        assert_send_sync::<KafkaTransportError>();
        assert_send_sync::<PartitionLag>();
        assert_send_sync::<StartAt>();
    }

    #[test]
    fn the_settings_the_transport_relies_on_win_over_user_properties() {
        let builder = Kafka::builder("b:9092", "t", "g")
            .set("acks", "1")
            .set("enable.auto.offset.store", "true");
        let producer = builder.producer_config();
        assert_eq!(producer.get("acks"), Some("all"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        let consumer = builder.consumer_config();
        assert_eq!(consumer.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(consumer.get("group.id"), Some("g"));
    }
}
