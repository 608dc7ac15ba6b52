//! Herald over real brokers beside the raw client doing the same work, per transport and
//! direction: RabbitMQ (lapin), NATS JetStream (async-nats), Redis Streams (redis-rs).
//!
//! `cargo bench --bench transports --features sqlite,rabbitmq,nats,redis`
//! (5,000 events per measure, 3 rounds; `HERALD_BENCH_N`, `HERALD_BENCH_ROUNDS`,
//! `HERALD_BENCH_QUICK=1` for 1,000 events and 1 round, `HERALD_BENCH_ONLY=rabbitmq|nats|redis`).
//! Brokers: `HERALD_TEST_RABBITMQ_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`),
//! `HERALD_TEST_NATS_URL` (`nats://127.0.0.1:4222`, JetStream on), `HERALD_TEST_REDIS_URL`
//! (`redis://127.0.0.1:6379`). Every measure uses its own queue, stream or key and deletes it.
//!
//! - **Outbound** (Herald → broker, confirmed): N events committed in the SQLite outbox (not
//!   timed), then a relay (batch [`OUTBOX_BATCH`]) forwards them through `.route::<E>().to(sink)`
//!   on a pool of [`WINDOW`]; timed until the route has N confirmed publishes. Also the
//!   in-process path (`herald.publish` through the same route). Raw: the client publishes the same
//!   N wire envelopes, as durably (persistent + publisher confirms; JetStream PubAck with
//!   `Nats-Msg-Id`; `XADD` reply), keeping [`WINDOW`] publishes in flight, as the route's pool does.
//! - **Inbound** (broker → no-op handler, acked): N wire envelopes pre-filled (not timed), then a
//!   relay over the transport's source with batch [`BATCH`]; timed from connecting until every
//!   message is handled and its settlement written (acked). Raw: the client consumes the same N
//!   with manual acks: lapin `basic_consume` with the same prefetch ([`PREFETCH`]), each ack
//!   awaited in turn (lapin's own example); a JetStream pull consumer fetching [`BATCH`] and
//!   double-acking them together (the ack Herald waits for); `XREADGROUP COUNT` [`BATCH`] + one
//!   `XACK` per batch.
//!
//! Herald and the raw client run alternately in each round; the table shows medians and the ratio
//! of the medians. The machine is shared: compare ratios, not absolute rates.

use futures_util::stream::{FuturesUnordered, StreamExt};
use herald::outbox::{self, Relay, SqliteOutbox};
use herald::ports::{
    Capabilities, MessageSource, OutgoingMessage, Receipt, Received, Settlement, SourceError,
};
use herald::{async_handler, Event, Herald, PoolConfig, PublishOptions, State};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Publishes in flight (outbound): the route pool's concurrency and the raw client's window.
const WINDOW: usize = 100;
/// Outbox rows leased per relay batch (outbound): more than [`WINDOW`], so that the SQLite lease
/// and write-back statements are shared by more rows, while the route's pool still bounds the
/// publishes awaiting a confirm to [`WINDOW`].
const OUTBOX_BATCH: usize = 500;
/// Messages per receive (inbound): the relay's batch, the JetStream fetch, `XREADGROUP COUNT`.
const BATCH: usize = 100;
/// RabbitMQ prefetch (inbound), for Herald's consumer and the raw one: two batches, so the broker
/// keeps sending while a batch is handled.
const PREFETCH: u16 = 200;
/// Padding in each payload, so a message is about the size of a small business event.
const NOTE: &str = "a small business event: an order placed, a parcel shipped, an invoice sent";

/// Forwarded to the broker (outbound).
#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "bench.transports.outbound")]
struct Outbound {
    n: u64,
    note: String,
}

/// Consumed from the broker (inbound).
#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "bench.transports.inbound")]
struct Inbound {
    n: u64,
    note: String,
}

mod inbound {
    use super::*;

    #[derive(Clone, Default)]
    pub(crate) struct Handled(pub(crate) Arc<AtomicU64>);

    #[async_handler]
    async fn handle(_event: Inbound, State(handled): State<Handled>) {
        handled.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The wire envelope of message `n`, as Herald's sinks write it.
fn envelope<M: Event>(message: &M) -> (String, Vec<u8>) {
    let outgoing = OutgoingMessage::new(message, PublishOptions::new()).expect("json");
    (
        outgoing.envelope.id.to_string(),
        herald::wire::encode(&outgoing),
    )
}

fn outbound(n: u64) -> Outbound {
    Outbound {
        n,
        note: NOTE.to_owned(),
    }
}

fn inbound_event(n: u64) -> Inbound {
    Inbound {
        n,
        note: NOTE.to_owned(),
    }
}

fn unique(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "herald-bench-{}-{stamp}-{}-{what}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `make(i)` for `i` in `0..n`, keeping `window` of them in flight.
async fn windowed<F, Fut>(n: u64, window: usize, mut make: F)
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut running = FuturesUnordered::new();
    for i in 0..n {
        if running.len() >= window {
            running.next().await;
        }
        running.push(make(i));
    }
    while running.next().await.is_some() {}
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !done() {
        assert!(Instant::now() < deadline, "benchmark stalled: {what}");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn rate(n: u64, started: Instant) -> f64 {
    n as f64 / started.elapsed().as_secs_f64()
}

/// A source that counts the messages whose settlement was written: "handled and acked".
#[derive(Debug)]
struct Counted {
    inner: Arc<dyn MessageSource>,
    settled: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl MessageSource for Counted {
    async fn receive(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Received>, SourceError> {
        self.inner.receive(owner, limit, lease).await
    }
    async fn keep(
        &self,
        owner: &str,
        receipts: &[Receipt],
        lease: Duration,
    ) -> Result<Vec<Receipt>, SourceError> {
        self.inner.keep(owner, receipts, lease).await
    }
    async fn settle(
        &self,
        owner: &str,
        settled: Vec<(Receipt, Settlement)>,
    ) -> Result<(), SourceError> {
        let done = settled
            .iter()
            .filter(|(_, s)| matches!(s, Settlement::Done { .. }))
            .count() as u64;
        self.inner.settle(owner, settled).await?;
        self.settled.fetch_add(done, Ordering::Relaxed);
        Ok(())
    }
    async fn wait(&self, timeout: Duration) {
        self.inner.wait(timeout).await;
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn overlaps_settle(&self) -> bool {
        self.inner.overlaps_settle()
    }
}

/// Herald's side of the outbound measure: the route to `sink`, from the outbox or in process.
async fn herald_outbound(
    n: u64,
    sink: Arc<dyn herald::ports::MessageSink>,
    from_outbox: bool,
) -> f64 {
    let herald = Herald::builder()
        .handlers_under(concat!(module_path!(), "::no_handlers"))
        .pool("forward", PoolConfig::new().concurrency(WINDOW))
        .route::<Outbound>()
        .pool("forward")
        .to(sink)
        .build()
        .expect("registry");
    let confirmed = || herald.ledger().total.succeeded >= n;
    if !from_outbox {
        let started = Instant::now();
        for i in 0..n {
            drop(herald.publish(outbound(i)).await.expect("publish"));
        }
        until("in-process route", confirmed).await;
        let rate = rate(n, started);
        herald.shutdown(Duration::from_secs(5)).await;
        return rate;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = outbox::sqlite::connect(dir.path().join("bench.db"))
        .await
        .expect("open");
    let outbox = SqliteOutbox::new(pool.clone()).await.expect("migrate");
    for chunk in 0..n.div_ceil(500) {
        let mut tx = pool.begin().await.expect("begin");
        let events = (chunk * 500..((chunk + 1) * 500).min(n)).map(outbound);
        outbox.publish_all(&mut tx, events).await.expect("publish");
        tx.commit().await.expect("commit");
    }
    let started = Instant::now();
    let relay = outbox
        .relay(&herald)
        .batch_size(OUTBOX_BATCH)
        .poll_interval(Duration::from_millis(1))
        .start();
    until("outbox route", confirmed).await;
    let rate = rate(n, started);
    relay.stop().await;
    herald.shutdown(Duration::from_secs(5)).await;
    rate
}

/// Herald's side of the inbound measure: a relay over `source` with a no-op handler.
async fn herald_inbound<S, C>(n: u64, connect: C) -> (f64, S)
where
    S: MessageSource + Clone,
    C: Future<Output = S>,
{
    let handled = inbound::Handled::default();
    let herald = Herald::builder()
        .handlers_under(concat!(module_path!(), "::inbound"))
        .state(handled.clone())
        .build()
        .expect("registry");
    let settled = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let source = connect.await;
    let counted = Counted {
        inner: Arc::new(source.clone()),
        settled: settled.clone(),
    };
    let relay = Relay::builder(Arc::new(counted), &herald)
        .batch_size(BATCH)
        .poll_interval(Duration::from_millis(1))
        .start();
    until("inbound relay", || settled.load(Ordering::Relaxed) >= n).await;
    let rate = rate(n, started);
    relay.stop().await;
    assert_eq!(handled.0.load(Ordering::Relaxed), n, "handled once each");
    herald.shutdown(Duration::from_secs(5)).await;
    (rate, source)
}

mod rabbitmq {
    use super::*;
    use herald::transport::rabbitmq::lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions,
    };
    use herald::transport::rabbitmq::lapin::types::{FieldTable, ShortString};
    use herald::transport::rabbitmq::lapin::{
        self, BasicProperties, Channel, Connection, ConnectionProperties,
    };
    use herald::transport::rabbitmq::RabbitMq;

    fn url() -> String {
        std::env::var("HERALD_TEST_RABBITMQ_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
    }

    async fn connection() -> Connection {
        let properties = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        Connection::connect(&url(), properties)
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ at {}: {e}", url()))
    }

    async fn channel(connection: &Connection, queue: &str) -> Channel {
        let channel = connection.create_channel().await.expect("channel");
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(queue, durable, FieldTable::default())
            .await
            .expect("declare");
        channel
    }

    async fn delete(queue: &str) {
        let connection = connection().await;
        let channel = connection.create_channel().await.expect("channel");
        for queue in [format!("{queue}.herald-delay"), queue.to_owned()] {
            let _ = channel.queue_delete(&queue, Default::default()).await;
        }
        let _ = connection.close(200, "bench done").await;
    }

    /// Publishes `n` wire envelopes made by `event`, persistent, confirmed, `WINDOW` in flight.
    pub(crate) async fn raw_publish<M: Event>(queue: &str, n: u64, event: fn(u64) -> M) -> f64 {
        let connection = connection().await;
        let channel = channel(&connection, queue).await;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let started = Instant::now();
        let channel = &channel;
        windowed(n, WINDOW, |i| async move {
            let (id, body) = envelope(&event(i));
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(ShortString::from("application/json"))
                .with_message_id(ShortString::from(id));
            let options = BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            };
            let confirm = channel
                .basic_publish("", queue, options, &body, properties)
                .await
                .expect("publish");
            let confirmation = confirm.await.expect("confirm");
            assert!(
                matches!(
                    confirmation,
                    lapin::publisher_confirm::Confirmation::Ack(None)
                ),
                "{confirmation:?}"
            );
        })
        .await;
        let rate = rate(n, started);
        let _ = connection.close(200, "bench done").await;
        rate
    }

    pub(crate) async fn raw_consume(queue: &str, n: u64) -> f64 {
        let started = Instant::now();
        let connection = connection().await;
        let channel = channel(&connection, queue).await;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .expect("qos");
        let mut consumer = channel
            .basic_consume(
                queue,
                "",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let mut acked = 0;
        while acked < n {
            let delivery = consumer.next().await.expect("open").expect("delivery");
            let message = herald::wire::decode(&delivery.data).expect("wire envelope");
            std::hint::black_box(message);
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .expect("ack");
            acked += 1;
        }
        let rate = rate(n, started);
        let _ = connection.close(200, "bench done").await;
        rate
    }

    async fn sink(queue: &str) -> RabbitMq {
        RabbitMq::builder(url(), queue)
            .prefetch(PREFETCH)
            .connect()
            .await
            .expect("connect")
    }

    pub(crate) async fn round(n: u64, rates: &mut Rates) {
        let queue = unique("out");
        let rabbit = sink(&queue).await;
        let rate = herald_outbound(n, Arc::new(rabbit.clone()), true).await;
        rates.push("outbound, outbox", Side::Herald, rate);
        delete(&queue).await;

        let queue = unique("raw-out");
        let rate = raw_publish(&queue, n, outbound).await;
        rates.push("outbound, outbox", Side::Raw, rate);
        delete(&queue).await;

        let queue = unique("out-publish");
        let rabbit = sink(&queue).await;
        let rate = herald_outbound(n, Arc::new(rabbit.clone()), false).await;
        rates.push("outbound, in process", Side::Herald, rate);
        delete(&queue).await;

        let queue = unique("in");
        raw_publish(&queue, n, inbound_event).await;
        let (rate, _rabbit) = herald_inbound(n, sink(&queue)).await;
        rates.push("inbound", Side::Herald, rate);
        delete(&queue).await;

        let queue = unique("raw-in");
        raw_publish(&queue, n, inbound_event).await;
        let rate = raw_consume(&queue, n).await;
        rates.push("inbound", Side::Raw, rate);
        delete(&queue).await;
    }
}

mod nats {
    use super::*;
    use herald::transport::nats::async_nats::jetstream::{self, consumer::pull, stream};
    use herald::transport::nats::async_nats::{self, HeaderMap};
    use herald::transport::nats::NatsJetStream;

    fn url() -> String {
        std::env::var("HERALD_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
    }

    async fn context() -> jetstream::Context {
        let client = async_nats::connect(url())
            .await
            .unwrap_or_else(|e| panic!("NATS at {}: {e}", url()));
        jetstream::new(client)
    }

    fn subject(stream: &str) -> String {
        format!("{stream}.messages")
    }

    async fn create(context: &jetstream::Context, name: &str) -> stream::Stream {
        context
            .get_or_create_stream(stream::Config {
                name: name.to_owned(),
                subjects: vec![subject(name)],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .expect("stream")
    }

    /// Publishes `n` wire envelopes with `Nats-Msg-Id`, each PubAck awaited, `WINDOW` in flight.
    pub(crate) async fn raw_publish<M: Event>(name: &str, n: u64, event: fn(u64) -> M) -> f64 {
        let context = context().await;
        create(&context, name).await;
        let subject = subject(name);
        let started = Instant::now();
        let (context, subject) = (&context, &subject);
        windowed(n, WINDOW, |i| async move {
            let (id, body) = envelope(&event(i));
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            headers.insert("Herald-Id", id.as_str());
            headers.insert("Herald-Name", M::NAME);
            let ack = context
                .publish_with_headers(subject.clone(), headers, body.into())
                .await
                .expect("publish");
            ack.await.expect("PubAck");
        })
        .await;
        rate(n, started)
    }

    pub(crate) async fn raw_consume(name: &str, n: u64) -> f64 {
        let started = Instant::now();
        let context = context().await;
        let stream = create(&context, name).await;
        let consumer = stream
            .get_or_create_consumer(
                "raw",
                pull::Config {
                    durable_name: Some("raw".to_owned()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending: 1_000,
                    filter_subject: subject(name),
                    ..Default::default()
                },
            )
            .await
            .expect("consumer");
        let mut acked = 0;
        while acked < n {
            let mut batch = consumer
                .batch()
                .max_messages(BATCH)
                .expires(Duration::from_millis(100))
                .messages()
                .await
                .expect("pull");
            let mut pulled = Vec::with_capacity(BATCH);
            while let Some(message) = batch.next().await {
                let message = message.expect("message");
                std::hint::black_box(herald::wire::decode(&message.payload).expect("wire"));
                pulled.push(message);
            }
            let acks = pulled.iter().map(|m| m.double_ack());
            for ack in futures_util::future::join_all(acks).await {
                ack.expect("ack");
            }
            acked += pulled.len() as u64;
        }
        rate(n, started)
    }

    async fn transport(name: &str) -> NatsJetStream {
        NatsJetStream::builder(url(), name, "herald")
            .connect()
            .await
            .expect("connect")
    }

    async fn delete(name: &str) {
        let _ = context().await.delete_stream(name).await;
    }

    pub(crate) async fn round(n: u64, rates: &mut Rates) {
        let name = unique("out");
        let nats = transport(&name).await;
        let rate = herald_outbound(n, Arc::new(nats), true).await;
        rates.push("outbound, outbox", Side::Herald, rate);
        delete(&name).await;

        let name = unique("raw-out");
        let rate = raw_publish(&name, n, outbound).await;
        rates.push("outbound, outbox", Side::Raw, rate);
        delete(&name).await;

        let name = unique("out-publish");
        let nats = transport(&name).await;
        let rate = herald_outbound(n, Arc::new(nats), false).await;
        rates.push("outbound, in process", Side::Herald, rate);
        delete(&name).await;

        let name = unique("in");
        raw_publish(&name, n, inbound_event).await;
        let (rate, _) = herald_inbound(n, transport(&name)).await;
        rates.push("inbound", Side::Herald, rate);
        delete(&name).await;

        let name = unique("raw-in");
        raw_publish(&name, n, inbound_event).await;
        let rate = raw_consume(&name, n).await;
        rates.push("inbound", Side::Raw, rate);
        delete(&name).await;
    }
}

mod redis {
    use super::*;
    use herald::transport::redis::redis::aio::MultiplexedConnection;
    use herald::transport::redis::redis::streams::StreamReadReply;
    use herald::transport::redis::redis::{self, AsyncCommands};
    use herald::transport::redis::RedisStreams;

    fn url() -> String {
        std::env::var("HERALD_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
    }

    async fn connection() -> MultiplexedConnection {
        redis::Client::open(url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("Redis at {}: {e}", url()))
    }

    async fn delete(stream: &str) {
        let mut connection = connection().await;
        let _: redis::RedisResult<u64> = connection
            .del(&[stream.to_owned(), format!("{stream}:delayed")])
            .await;
    }

    /// `XADD`s `n` wire envelopes (the fields Herald's sink writes), each reply awaited,
    /// `WINDOW` in flight on one multiplexed connection.
    pub(crate) async fn raw_publish<M: Event>(stream: &str, n: u64, event: fn(u64) -> M) -> f64 {
        let connection = connection().await;
        let started = Instant::now();
        let connection = &connection;
        windowed(n, WINDOW, |i| async move {
            let (id, body) = envelope(&event(i));
            let _: String = redis::cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("id")
                .arg(id)
                .arg("name")
                .arg(M::NAME)
                .arg("envelope")
                .arg(body)
                .query_async(&mut connection.clone())
                .await
                .expect("XADD");
        })
        .await;
        rate(n, started)
    }

    pub(crate) async fn raw_consume(stream: &str, n: u64) -> f64 {
        let started = Instant::now();
        let mut connection = connection().await;
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg("raw")
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut connection)
            .await
            .expect("group");
        let mut acked = 0;
        while acked < n {
            let read: StreamReadReply = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("raw")
                .arg("consumer")
                .arg("COUNT")
                .arg(BATCH)
                .arg("STREAMS")
                .arg(stream)
                .arg(">")
                .query_async(&mut connection)
                .await
                .expect("XREADGROUP");
            let ids: Vec<String> = read
                .keys
                .into_iter()
                .flat_map(|key| key.ids)
                .map(|entry| {
                    let bytes: Vec<u8> = entry.get("envelope").expect("envelope field");
                    std::hint::black_box(herald::wire::decode(&bytes).expect("wire"));
                    entry.id
                })
                .collect();
            if ids.is_empty() {
                continue;
            }
            let _: u64 = connection.xack(stream, "raw", &ids).await.expect("XACK");
            acked += ids.len() as u64;
        }
        rate(n, started)
    }

    async fn transport(stream: &str) -> RedisStreams {
        RedisStreams::connect(&url(), stream, "herald")
            .await
            .expect("connect")
    }

    pub(crate) async fn round(n: u64, rates: &mut Rates) {
        let stream = unique("out");
        let redis = transport(&stream).await;
        let rate = herald_outbound(n, Arc::new(redis), true).await;
        rates.push("outbound, outbox", Side::Herald, rate);
        delete(&stream).await;

        let stream = unique("raw-out");
        let rate = raw_publish(&stream, n, outbound).await;
        rates.push("outbound, outbox", Side::Raw, rate);
        delete(&stream).await;

        let stream = unique("out-publish");
        let redis = transport(&stream).await;
        let rate = herald_outbound(n, Arc::new(redis), false).await;
        rates.push("outbound, in process", Side::Herald, rate);
        delete(&stream).await;

        let stream = unique("in");
        raw_publish(&stream, n, inbound_event).await;
        let (rate, _) = herald_inbound(n, transport(&stream)).await;
        rates.push("inbound", Side::Herald, rate);
        delete(&stream).await;

        let stream = unique("raw-in");
        raw_publish(&stream, n, inbound_event).await;
        let rate = raw_consume(&stream, n).await;
        rates.push("inbound", Side::Raw, rate);
        delete(&stream).await;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Herald,
    Raw,
}

/// Rates of one transport, per direction and side, over the rounds.
#[derive(Default)]
struct Rates(Vec<(&'static str, Side, f64)>);

impl Rates {
    fn push(&mut self, what: &'static str, side: Side, rate: f64) {
        self.0.push((what, side, rate));
    }

    fn median(&self, what: &str, side: Side) -> Option<f64> {
        let mut rates: Vec<f64> = self
            .0
            .iter()
            .filter(|(w, s, _)| *w == what && *s == side)
            .map(|(_, _, r)| *r)
            .collect();
        rates.sort_by(f64::total_cmp);
        (!rates.is_empty()).then(|| rates[rates.len() / 2])
    }

    fn all(&self, what: &str, side: Side) -> String {
        self.0
            .iter()
            .filter(|(w, s, _)| *w == what && *s == side)
            .map(|(_, _, r)| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn print(&self, transport: &str) {
        // The in-process path is compared with the same raw publish as the outbox path.
        for (what, raw) in [
            ("outbound, outbox", "outbound, outbox"),
            ("outbound, in process", "outbound, outbox"),
            ("inbound", "inbound"),
        ] {
            let (Some(herald), Some(baseline)) =
                (self.median(what, Side::Herald), self.median(raw, Side::Raw))
            else {
                continue;
            };
            println!(
                "| {transport:<8} | {what:<20} | {herald:>9.0} | {baseline:>9.0} | {:>5.2}x | {} / {} |",
                herald / baseline,
                self.all(what, Side::Herald),
                self.all(raw, Side::Raw),
            );
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var_os("HERALD_BENCH_QUICK").is_some();
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
            .max(1)
    };
    let n = number("HERALD_BENCH_N", if quick { 1_000 } else { 5_000 });
    let rounds = number("HERALD_BENCH_ROUNDS", if quick { 1 } else { 3 });
    let only = std::env::var("HERALD_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    println!(
        "transports: {n} events per measure, median of {rounds} round(s); outbound {WINDOW} in flight \
         (outbox relay batch {OUTBOX_BATCH}), inbound batch {BATCH} (RabbitMQ prefetch {PREFETCH})"
    );
    println!("| broker   | direction            |  Herald/s |     raw/s | Herald/raw | per round (Herald / raw) |");
    println!("|----------|----------------------|----------:|----------:|-----:|---|");
    if wanted("rabbitmq") {
        let mut rates = Rates::default();
        for _ in 0..rounds {
            rabbitmq::round(n, &mut rates).await;
        }
        rates.print("rabbitmq");
    }
    if wanted("nats") {
        let mut rates = Rates::default();
        for _ in 0..rounds {
            nats::round(n, &mut rates).await;
        }
        rates.print("nats");
    }
    if wanted("redis") {
        let mut rates = Rates::default();
        for _ in 0..rounds {
            redis::round(n, &mut rates).await;
        }
        rates.print("redis");
    }
}
