//! What both services need to reach their broker (RabbitMQ by default, or Kafka with
//! `--transport kafka` when built with the `kafka` feature) and to stop cleanly: the broker flags,
//! [`Broker`] and `until_stopped` (SIGTERM or Ctrl-C).

use herald::ports::{MessageSink, MessageSource};
#[cfg(feature = "kafka")]
use herald::transport::kafka::Kafka;
use herald::transport::rabbitmq::RabbitMq;
use std::sync::Arc;
use std::time::Duration;

/// Which broker carries the order events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TransportKind {
    /// A durable RabbitMQ queue, manual acks, retries through a delay queue.
    Rabbitmq,
    /// A Kafka topic (keyed by customer, so one customer's orders stay in order), a consumer
    /// group, offsets committed only for finished messages. Needs the `kafka` feature.
    Kafka,
}

/// Where the order events travel. Both services must be given the same transport, queue (or
/// topic) and expiry: the RabbitMQ queue is declared by whichever starts first, and RabbitMQ
/// refuses a second declaration with other arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BrokerArgs {
    /// The broker: `rabbitmq`, or `kafka` (built with `--features kafka`).
    #[arg(long, env = "ORDERS_TRANSPORT", value_enum, default_value = "rabbitmq")]
    pub(crate) transport: TransportKind,
    /// The RabbitMQ broker (`amqp://user:password@host:port/vhost`; vhost `/` is `%2f`).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub(crate) amqp_url: String,
    /// The Kafka brokers (`host:port[,host:port...]`), with `--transport kafka`.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub(crate) kafka_brokers: String,
    /// The Kafka consumer group the notification service reads the topic as.
    #[arg(long, env = "KAFKA_GROUP", default_value = "notifications-service")]
    pub(crate) kafka_group: String,
    /// How long Kafka waits for a consumer that stopped answering (a kill -9) before its
    /// partitions go to another member, in milliseconds (`session.timeout.ms`).
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub(crate) kafka_session_timeout_ms: u64,
    /// A librdkafka property for both Kafka clients, as `key=value` (repeatable), e.g.
    /// `--kafka-set security.protocol=ssl`.
    #[arg(long = "kafka-set", value_name = "KEY=VALUE")]
    pub(crate) kafka_set: Vec<String>,
    /// The durable queue (or Kafka topic) carrying `OrderPlaced` (RabbitMQ's retries use
    /// `<queue>.herald-delay`).
    #[arg(long, env = "ORDERS_QUEUE", default_value = "orders.order_placed")]
    pub(crate) queue: String,
    /// Lets RabbitMQ delete the queues after this many seconds without use (for tests and
    /// demos; off by default; ignored by Kafka).
    #[arg(long, env = "ORDERS_QUEUE_EXPIRES_SECS")]
    pub(crate) queue_expires_secs: Option<u64>,
}

/// What a service does with the broker.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    /// Only publishes (the order service): it never consumes what it feeds.
    Publisher,
    /// Consumes (in Kafka, as the consumer group `--kafka-group`), with at most `prefetch`
    /// deliveries unfinished at once.
    Consumer { prefetch: u16 },
}

/// A connected broker transport, whichever `--transport` chose.
#[derive(Clone)]
pub(crate) enum Broker {
    RabbitMq(RabbitMq),
    #[cfg(feature = "kafka")]
    Kafka(Kafka),
}

impl Broker {
    /// The transport as a route's destination.
    pub(crate) fn sink(&self) -> Arc<dyn MessageSink> {
        match self {
            Broker::RabbitMq(rabbit) => Arc::new(rabbit.clone()),
            #[cfg(feature = "kafka")]
            Broker::Kafka(kafka) => Arc::new(kafka.clone()),
        }
    }

    /// The transport as a relay's source.
    pub(crate) fn source(&self) -> Arc<dyn MessageSource> {
        match self {
            Broker::RabbitMq(rabbit) => Arc::new(rabbit.clone()),
            #[cfg(feature = "kafka")]
            Broker::Kafka(kafka) => Arc::new(kafka.clone()),
        }
    }

    /// Closes the connection cleanly: RabbitMQ returns unacked deliveries, Kafka commits what
    /// is finished and leaves its group. Call it after the relay stopped.
    pub(crate) async fn close(&self) {
        match self {
            Broker::RabbitMq(rabbit) => {
                if let Err(error) = rabbit.close().await {
                    tracing::warn!(%error, "the RabbitMQ connection did not close cleanly");
                }
            }
            #[cfg(feature = "kafka")]
            Broker::Kafka(kafka) => kafka.close().await,
        }
    }
}

impl BrokerArgs {
    /// Connects to the chosen broker for `role`, or says how to fix it.
    pub(crate) async fn connect(&self, role: Role) -> Result<Broker, String> {
        match self.transport {
            TransportKind::Rabbitmq => self.connect_rabbitmq(role).await.map(Broker::RabbitMq),
            #[cfg(feature = "kafka")]
            TransportKind::Kafka => self.connect_kafka(role).await.map(Broker::Kafka),
            #[cfg(not(feature = "kafka"))]
            TransportKind::Kafka => Err(
                "`--transport kafka` needs the `kafka` feature: run with `--features sqlite,rabbitmq,kafka`"
                    .to_owned(),
            ),
        }
    }

    async fn connect_rabbitmq(&self, role: Role) -> Result<RabbitMq, String> {
        let mut builder = RabbitMq::builder(&self.amqp_url, &self.queue);
        if let Some(secs) = self.queue_expires_secs {
            builder = builder.expires_after(Duration::from_secs(secs));
        }
        builder = match role {
            Role::Publisher => builder.publish_only(),
            Role::Consumer { prefetch, .. } => builder.prefetch(prefetch.max(1)),
        };
        builder.connect().await.map_err(|error| {
            format!(
                "cannot use RabbitMQ queue `{}`: {error}. Start the broker (e.g. `docker run -d -p 5672:5672 rabbitmq:3`) or point `--amqp-url`/`AMQP_URL` at yours",
                self.queue
            )
        })
    }

    #[cfg(feature = "kafka")]
    async fn connect_kafka(&self, role: Role) -> Result<Kafka, String> {
        // The order service publishes only: its consumer never subscribes, so it never joins.
        let (group, prefetch) = match role {
            Role::Publisher => ("orders-service", 1),
            Role::Consumer { prefetch } => (self.kafka_group.as_str(), prefetch),
        };
        let mut builder = Kafka::builder(&self.kafka_brokers, &self.queue, group)
            .create_topic(3, 1)
            .max_buffered(usize::from(prefetch.max(1)))
            .set(
                "session.timeout.ms",
                self.kafka_session_timeout_ms.to_string(),
            );
        for property in &self.kafka_set {
            let Some((key, value)) = property.split_once('=') else {
                return Err(format!(
                    "`--kafka-set {property}` is not `key=value` (e.g. `--kafka-set linger.ms=5`)"
                ));
            };
            builder = builder.set(key.trim(), value.trim());
        }
        builder
            .connect()
            .await
            .map_err(|error| {
                format!(
                    "cannot use Kafka topic `{}` at {}: {error}. Start a broker or point `--kafka-brokers`/`KAFKA_BROKERS` at yours",
                    self.queue, self.kafka_brokers
                )
            })
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT): the services then stop taking work, let what runs
/// finish and exit. A kill -9 skips all that; the outbox and the inbox make it survivable.
pub(crate) async fn until_stopped() -> &'static str {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(terminate) => terminate,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the service");
                let _ = tokio::signal::ctrl_c().await;
                return "Ctrl-C";
            }
        };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
    }
}

/// Logs to stderr, `info` unless `RUST_LOG` says otherwise.
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
