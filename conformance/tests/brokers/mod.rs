//! The broker transports (memory, Redis, RabbitMQ, NATS, Kafka) as the kit drives them, shared by the
//! test binaries: `BrokerHarness<B>` for the source suite, `BrokerPubSub<B>` for the pub/sub
//! suite and the restart case. Each binary uses a part of it.
#![allow(dead_code)]

use herald::outbox::{Relay, RelayBuilder};
use herald::ports::{MessageSink, MessageSource, OutgoingMessage};
use herald::{Herald, HeraldBuilder, Message, MessageId, PublishOptions};
use herald_conformance::pubsub::PubSubHarness;
use herald_conformance::source::{BoxError, SourceHarness};
use herald_transport_memory::MemoryBroker;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A broker transport as the kit drives it: its own sink and source, how much it still holds, and
/// what to clean up after a case.
pub(crate) trait Broker: MessageSink + MessageSource + Clone {
    /// What the broker says in an error when it did not confirm a publish.
    const NAME: &'static str;

    /// Messages the broker still holds unfinished (ready, held, or waiting for a retry).
    fn unfinished(&self) -> impl std::future::Future<Output = Result<u64, BoxError>> + Send;

    /// Whether [`clean_up`](Self::clean_up) does anything: the pub/sub harness then keeps a
    /// clone of every object it opened until the case ends (others are dropped when the case
    /// drops them, as a push consumer must be, so that it stops holding deliveries).
    const CLEANS_UP: bool = false;

    /// Called when the case's harness is dropped (for a broker that keeps what a case made).
    fn clean_up(&self) {}
}

/// Any broker transport: published through its sink, relayed from its source.
pub(crate) struct BrokerHarness<B: Broker>(pub(crate) B);

impl<B: Broker> Drop for BrokerHarness<B> {
    fn drop(&mut self) {
        self.0.clean_up();
    }
}

impl<B: Broker> SourceHarness for BrokerHarness<B> {
    fn configure(&self, builder: HeraldBuilder) -> HeraldBuilder {
        builder
    }

    fn relay(&self, herald: &Herald) -> RelayBuilder {
        Relay::builder(Arc::new(self.0.clone()), herald)
    }

    async fn publish<M: Message>(
        &self,
        message: M,
        options: PublishOptions,
    ) -> Result<MessageId, BoxError> {
        let outgoing = OutgoingMessage::new(&message, options)?;
        let id = outgoing.envelope.id;
        let confirmations = self.0.publish(vec![outgoing]).await?;
        match confirmations.first() {
            Some(confirmation) if confirmation.is_confirmed() => Ok(id),
            other => Err(format!("{} did not confirm: {other:?}", B::NAME).into()),
        }
    }

    async fn unfinished(&self) -> Result<u64, BoxError> {
        self.0.unfinished().await
    }
}

impl Broker for MemoryBroker {
    const NAME: &'static str = "the in-memory broker";

    async fn unfinished(&self) -> Result<u64, BoxError> {
        Ok(self.pending() as u64)
    }
}

pub(crate) async fn make_memory_source(_case: &'static str) -> BrokerHarness<MemoryBroker> {
    BrokerHarness(MemoryBroker::new())
}

// --- Redis Streams -------------------------------------------------------------------------------

/// Redis Streams at `HERALD_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`), one stream per case.
#[cfg(feature = "redis")]
pub(crate) mod redis_streams {
    use super::*;
    use herald_transport_redis::RedisStreams;

    impl Broker for RedisStreams {
        const NAME: &'static str = "Redis";

        async fn unfinished(&self) -> Result<u64, BoxError> {
            Ok(RedisStreams::unfinished(self).await?)
        }
    }

    pub(crate) async fn make_source(case: &'static str) -> BrokerHarness<RedisStreams> {
        let url = std::env::var("HERALD_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let stream = format!("herald-test:conformance:{case}:{}", MessageId::new());
        let streams = RedisStreams::connect(&url, stream, "conformance")
            .await
            .unwrap_or_else(|e| panic!("Redis is required for these tests: {e}"));
        BrokerHarness(streams)
    }
}

// --- RabbitMQ ------------------------------------------------------------------------------------

/// RabbitMQ at `HERALD_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`), one
/// queue per case, which the broker deletes a minute after the case stops using it.
#[cfg(feature = "rabbitmq")]
pub(crate) mod rabbit_queues {
    use super::*;
    use herald_transport_rabbitmq::RabbitMq;

    impl Broker for RabbitMq {
        const NAME: &'static str = "RabbitMQ";

        async fn unfinished(&self) -> Result<u64, BoxError> {
            Ok(RabbitMq::unfinished(self).await?)
        }
    }

    pub(crate) async fn make_source(case: &'static str) -> BrokerHarness<RabbitMq> {
        let url = std::env::var("HERALD_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
        let queue = format!("herald-test.conformance.{case}.{}", MessageId::new());
        let rabbit = RabbitMq::builder(url, queue)
            .expires_after(std::time::Duration::from_secs(60))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ is required for these tests: {e}"));
        BrokerHarness(rabbit)
    }
}

// --- NATS JetStream ------------------------------------------------------------------------------

/// NATS JetStream at `HERALD_TEST_NATS_URL` (default `nats://127.0.0.1:4222`), one stream per case
/// (deleted when the harness is dropped).
#[cfg(feature = "nats")]
pub(crate) mod nats_jetstream {
    use super::*;
    use herald_transport_nats::NatsJetStream;

    impl Broker for NatsJetStream {
        const NAME: &'static str = "JetStream";
        const CLEANS_UP: bool = true;

        async fn unfinished(&self) -> Result<u64, BoxError> {
            NatsJetStream::unfinished(self).await
        }

        /// Deletes the case's stream (in the background: the runtime may be ending).
        fn clean_up(&self) {
            let nats = self.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { nats.delete_stream().await });
            }
        }
    }

    pub(crate) async fn make_source(case: &'static str) -> BrokerHarness<NatsJetStream> {
        let url = std::env::var("HERALD_TEST_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
        let stream = format!("herald-test-conformance-{case}-{}", MessageId::new());
        let nats = NatsJetStream::builder(url, stream, "conformance")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("NATS with JetStream is required for these tests: {e}"));
        BrokerHarness(nats)
    }
}

// --- Kafka ---------------------------------------------------------------------------------------

/// Kafka at `HERALD_TEST_KAFKA_BROKERS` (default `127.0.0.1:9092`: tansu in CI), one topic of
/// three partitions and one group per case (the topic is deleted when the harness is dropped);
/// and librdkafka's in-process `MockCluster`, one cluster per case.
#[cfg(feature = "kafka")]
pub(crate) mod kafka_topics {
    use super::*;
    use herald_transport_kafka::rdkafka::mocking::MockCluster;
    use herald_transport_kafka::{Kafka, KafkaBuilder};
    use std::time::Duration;

    impl Broker for Kafka {
        // No clean-up and no clone kept by the pub/sub harness: dropping the last clone leaves
        // the group (a clone kept alive would stay in the group, take partitions and buffer
        // their messages for nobody). The case's topic is kept: against tansu 0.6, a metadata
        // answer after a topic was deleted crashed librdkafka 2.12 in another client of the same
        // process (SIGSEGV in its metadata cache).
        const NAME: &'static str = "Kafka";

        async fn unfinished(&self) -> Result<u64, BoxError> {
            Ok(Kafka::unfinished(self).await?)
        }
    }

    fn topic(case: &str) -> String {
        format!("herald-test.conformance.{case}.{}", MessageId::new())
    }

    pub(crate) fn brokers() -> String {
        std::env::var("HERALD_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
    }

    pub(crate) fn builder(brokers: String, topic: String, group: &str) -> KafkaBuilder {
        // A short session: a consumer joining a group waits for the coordinator's rebalance
        // delay, which on MockCluster is the session timeout minus a second even when the
        // previous member left cleanly (librdkafka's rdkafka_mock_cgrp.c); at the default 45 s
        // the case's patience would run out before the new member gets its partitions.
        Kafka::builder(brokers, topic, group)
            .request_timeout(Duration::from_secs(10))
            .set("heartbeat.interval.ms", "200")
            .set("session.timeout.ms", "6000")
    }

    /// The builder for a real broker. One record per produced batch: tansu 0.6 (the broker in
    /// CI) answers a fetch that starts inside a record batch with none of that batch's records
    /// (a consumer resuming at a committed offset inside a batch never sees the batch's rest),
    /// so a batch of several records could hide some of them from a consumer that resumes in its
    /// middle. Kafka returns the whole batch and librdkafka skips the records before the fetch
    /// offset; MockCluster does the same, and the MockCluster suites keep librdkafka's batching.
    pub(crate) fn real_builder(brokers: String, topic: String, group: &str) -> KafkaBuilder {
        builder(brokers, topic, group).set("batch.num.messages", "1")
    }

    pub(crate) async fn make_source(case: &'static str) -> BrokerHarness<Kafka> {
        // A group per case: groups live on the broker, and one shared by cases running at once
        // would rebalance between them.
        let topic = topic(case);
        let kafka = real_builder(brokers(), topic.clone(), &topic)
            .create_topic(3, 1)
            .connect()
            .await
            .unwrap_or_else(|e| {
                panic!("a Kafka broker (tansu in CI) is required for these tests: {e}")
            });
        BrokerHarness(kafka)
    }

    /// What the mock cluster's thread is asked to do.
    enum MockRequest {
        /// Create a topic of three partitions unless it exists.
        CreateTopic(String),
        /// Take the broker down, wait, bring it up again (connections drop; the log, the
        /// groups and their offsets stay).
        Restart(Duration),
    }

    /// A `MockCluster` on a thread of its own (it is neither `Send` nor `Sync`), which creates
    /// topics and restarts its broker on request: the mock takes no CreateTopics request from a
    /// client.
    #[derive(Clone)]
    pub(crate) struct MockBroker {
        pub(crate) bootstrap: String,
        requests:
            std::sync::mpsc::Sender<(MockRequest, std::sync::mpsc::Sender<Result<(), String>>)>,
    }

    impl MockBroker {
        pub(crate) fn start() -> Self {
            let (requests, incoming) = std::sync::mpsc::channel::<(
                MockRequest,
                std::sync::mpsc::Sender<Result<(), String>>,
            )>();
            let (ready, bootstrap) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let cluster = MockCluster::new(1).expect("librdkafka's mock cluster starts");
                let _ = ready.send(cluster.bootstrap_servers());
                let mut created = std::collections::HashSet::new();
                while let Ok((request, reply)) = incoming.recv() {
                    let result = match request {
                        MockRequest::CreateTopic(topic) if created.contains(&topic) => Ok(()),
                        MockRequest::CreateTopic(topic) => cluster
                            .create_topic(&topic, 3, 1)
                            .map(|()| {
                                created.insert(topic.clone());
                            })
                            .map_err(|e| format!("the mock cluster cannot create {topic}: {e}")),
                        MockRequest::Restart(down_for) => {
                            cluster.broker_down(1).and_then(|()| {
                                std::thread::sleep(down_for);
                                cluster.broker_up(1)
                            })
                        }
                        .map_err(|e| format!("the mock broker could not restart: {e}")),
                    };
                    let _ = reply.send(result);
                }
                // Clients of the case may still hold connections to it: it stays up until the
                // test process ends.
                std::mem::forget(cluster);
            });
            let bootstrap = bootstrap.recv().expect("the mock cluster's address");
            MockBroker {
                bootstrap,
                requests,
            }
        }

        fn ask(&self, request: MockRequest) -> Result<(), BoxError> {
            let (reply, answer) = std::sync::mpsc::channel();
            self.requests
                .send((request, reply))
                .map_err(|_| "the mock cluster's thread is gone")?;
            Ok(answer
                .recv()
                .map_err(|_| "the mock cluster's thread is gone")??)
        }

        /// Creates `topic` (three partitions) unless it exists.
        pub(crate) fn create_topic(&self, topic: &str) -> Result<(), BoxError> {
            self.ask(MockRequest::CreateTopic(topic.to_owned()))
        }

        /// Takes the broker down for `down_for`, then up again (blocking).
        #[allow(dead_code)] // used by the restarts binary only
        pub(crate) fn restart(&self, down_for: Duration) -> Result<(), BoxError> {
            self.ask(MockRequest::Restart(down_for))
        }
    }

    pub(crate) async fn make_mock_source(case: &'static str) -> BrokerHarness<Kafka> {
        // One small in-process cluster per case, on the thread that also serves the pub/sub
        // suite's mock clusters; it lives until the test process ends.
        let mock = MockBroker::start();
        let topic = topic(case);
        mock.create_topic(&topic)
            .unwrap_or_else(|e| panic!("the mock cluster creates the topic: {e}"));
        let brokers = mock.bootstrap.clone();
        let kafka = builder(brokers, topic, "conformance")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("the mock cluster did not answer: {e}"));
        BrokerHarness(kafka)
    }
}

/// Where one pub/sub case's Kafka topics live: the real broker (`HERALD_TEST_KAFKA_BROKERS`), or
/// an in-process `MockCluster` of the case's own.
#[cfg(feature = "kafka")]
pub(crate) enum KafkaCluster {
    /// A real broker at these addresses.
    Real(String),
    Mock(kafka_topics::MockBroker),
}

#[cfg(feature = "kafka")]
impl Default for KafkaCluster {
    fn default() -> Self {
        KafkaCluster::Real(kafka_topics::brokers())
    }
}

/// Kafka: a topic of three partitions per case topic (created by the first open), a group is a
/// consumer group of it.
#[cfg(feature = "kafka")]
impl PubSubBroker for herald_transport_kafka::Kafka {
    type Topics = KafkaCluster;
    const GROUPS: Result<(), &'static str> = Ok(());

    async fn open(cluster: &KafkaCluster, topic: &str, group: &str) -> Result<Self, BoxError> {
        // Groups live on the broker: named after the case's topic, so cases never share one.
        let group = format!("{topic}.{group}");
        let builder = match cluster {
            KafkaCluster::Real(brokers) => {
                kafka_topics::real_builder(brokers.clone(), topic.to_owned(), &group)
                    .create_topic(3, 1)
            }
            KafkaCluster::Mock(mock) => {
                mock.create_topic(topic)?;
                kafka_topics::builder(mock.bootstrap.clone(), topic.to_owned(), &group)
            }
        };
        builder.connect().await.map_err(|e| {
            format!("a Kafka broker (tansu in CI) is required for these tests: {e}").into()
        })
    }
}

/// The pub/sub suite on librdkafka's in-process `MockCluster`, one cluster per case.
#[cfg(feature = "kafka")]
pub(crate) async fn make_mock_kafka_pubsub(
    case: &'static str,
) -> BrokerPubSub<herald_transport_kafka::Kafka> {
    BrokerPubSub::with_topics(
        case,
        KafkaCluster::Mock(kafka_topics::MockBroker::start()),
        None,
    )
}

// --- the pub/sub harness: one for every broker ---------------------------------------------------

/// A broker transport that opens one object per topic and consumer group.
pub(crate) trait PubSubBroker: Broker {
    /// What one case's harness keeps between opens (the in-memory broker's topics).
    type Topics: Default + Send + Sync + 'static;

    /// `Ok` when consumer groups on one topic each get every message, or why not.
    const GROUPS: Result<(), &'static str>;

    /// An object publishing to `topic` (a name unique to the case) and consuming it as `group`.
    fn open(
        topics: &Self::Topics,
        topic: &str,
        group: &str,
    ) -> impl std::future::Future<Output = Result<Self, BoxError>> + Send;
}

/// Any broker transport for the pub/sub suite: topics named after the case and a fresh id.
pub(crate) struct BrokerPubSub<B: PubSubBroker> {
    prefix: String,
    topics: B::Topics,
    opened: Mutex<Vec<B>>,
    /// Whatever must live as long as the case (the restart binary's lock).
    _held: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl<B: PubSubBroker> BrokerPubSub<B> {
    /// A harness for `case` whose opens share `topics`.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) fn with_topics(
        case: &str,
        topics: B::Topics,
        held: Option<Box<dyn std::any::Any + Send + Sync>>,
    ) -> Self {
        let mut harness = Self::new(case, held);
        harness.topics = topics;
        harness
    }

    /// What the case's opens share.
    #[allow(dead_code)] // used by the restarts binary only
    pub(crate) fn topics(&self) -> &B::Topics {
        &self.topics
    }

    /// A harness for `case`, keeping `held` until it is dropped.
    pub(crate) fn new(case: &str, held: Option<Box<dyn std::any::Any + Send + Sync>>) -> Self {
        BrokerPubSub {
            prefix: format!(
                "herald-test-pubsub-{case}-{}",
                MessageId::new().to_string().replace('-', "")
            ),
            topics: B::Topics::default(),
            opened: Mutex::new(Vec::new()),
            _held: held,
        }
    }
}

impl<B: PubSubBroker> Drop for BrokerPubSub<B> {
    fn drop(&mut self) {
        let opened = std::mem::take(&mut *self.opened.lock().unwrap_or_else(|e| e.into_inner()));
        for broker in opened {
            broker.clean_up();
        }
    }
}

impl<B: PubSubBroker> PubSubHarness for BrokerPubSub<B> {
    type Transport = B;

    async fn open(&self, topic: &str, group: &str) -> Result<B, BoxError> {
        let topic = format!("{}-{topic}", self.prefix);
        let broker = B::open(&self.topics, &topic, group).await?;
        if B::CLEANS_UP {
            self.opened
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(broker.clone());
        }
        Ok(broker)
    }

    fn consumer_groups(&self) -> Result<(), &'static str> {
        B::GROUPS
    }

    async fn unfinished(&self, transport: &B) -> Result<u64, BoxError> {
        transport.unfinished().await
    }
}

impl PubSubBroker for MemoryBroker {
    type Topics = Mutex<HashMap<String, MemoryBroker>>;
    const GROUPS: Result<(), &'static str> = Err(
        "a MemoryBroker is one queue: every object for a topic shares it, and each message goes to one consumer",
    );

    async fn open(topics: &Self::Topics, topic: &str, _group: &str) -> Result<Self, BoxError> {
        let mut topics = topics.lock().unwrap_or_else(|e| e.into_inner());
        Ok(topics.entry(topic.to_owned()).or_default().clone())
    }
}

pub(crate) async fn make_memory_pubsub(case: &'static str) -> BrokerPubSub<MemoryBroker> {
    BrokerPubSub::new(case, None)
}

#[cfg(feature = "redis")]
impl PubSubBroker for herald_transport_redis::RedisStreams {
    type Topics = ();
    const GROUPS: Result<(), &'static str> = Ok(());

    async fn open(_topics: &(), topic: &str, group: &str) -> Result<Self, BoxError> {
        let url = std::env::var("HERALD_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        herald_transport_redis::RedisStreams::connect(&url, topic, group)
            .await
            .map_err(|e| format!("Redis is required for these tests: {e}").into())
    }
}

/// RabbitMQ: a topic is a fanout exchange (durable, deleted with its last queue), a group is a
/// queue bound to it (`<topic>.<group>`, expiring a minute after its last use).
#[cfg(feature = "rabbitmq")]
impl PubSubBroker for herald_transport_rabbitmq::RabbitMq {
    type Topics = ();
    const GROUPS: Result<(), &'static str> = Ok(());

    async fn open(_topics: &(), topic: &str, group: &str) -> Result<Self, BoxError> {
        use lapin::options::{ExchangeDeclareOptions, QueueBindOptions};
        use lapin::types::FieldTable;
        let url = std::env::var("HERALD_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
        let properties = lapin::ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        let connection = lapin::Connection::connect(&url, properties)
            .await
            .map_err(|e| format!("RabbitMQ is required for these tests: {e}"))?;
        let channel = connection.create_channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            auto_delete: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                topic,
                lapin::ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        let queue = format!("{topic}.{group}");
        let rabbit = herald_transport_rabbitmq::RabbitMq::builder(url, queue.clone())
            .publish_to(topic, "")
            .expires_after(std::time::Duration::from_secs(60))
            .connect()
            .await?;
        channel
            .queue_bind(
                &queue,
                topic,
                "",
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        connection.close(200, "bound").await?;
        Ok(rabbit)
    }
}

/// NATS: a topic is a stream, a group a durable consumer of it (ack_wait 2 s, the suite's lease).
#[cfg(feature = "nats")]
impl PubSubBroker for herald_transport_nats::NatsJetStream {
    type Topics = ();
    const GROUPS: Result<(), &'static str> = Ok(());

    async fn open(_topics: &(), topic: &str, group: &str) -> Result<Self, BoxError> {
        let url = std::env::var("HERALD_TEST_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
        herald_transport_nats::NatsJetStream::builder(url, topic, group)
            .ack_wait(std::time::Duration::from_secs(2))
            .publish_timeout(std::time::Duration::from_secs(2))
            .connect()
            .await
            .map_err(|e| format!("NATS with JetStream is required for these tests: {e}").into())
    }
}

pub(crate) async fn make_pubsub<B: PubSubBroker>(case: &'static str) -> BrokerPubSub<B> {
    BrokerPubSub::new(case, None)
}
