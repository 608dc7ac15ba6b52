//! Kafka: Herald outbound (a route: `herald.publish` → the transport's idempotent producer → the
//! delivery report) and inbound (the transport's consumer-group source → a relay → a handler)
//! beside the raw rdkafka producer and consumer with the same settings, in the same run. Prints
//! each ratio (target: Herald ≥ 0.8× raw).
//!
//! `cargo bench --bench kafka --features kafka` (20,000 messages; `HERALD_BENCH_N` to change).
//! The brokers are `HERALD_BENCH_KAFKA_BROKERS` (tansu in CI: `127.0.0.1:9092`), or librdkafka's
//! in-process `MockCluster` when it is not set.
//!
//! Same settings: `acks=all`, `enable.idempotence=true`, `murmur2_random`, librdkafka's default
//! batching (`linger.ms` 5); the raw producer sends the same bytes (the wire envelope and the
//! `herald-id`/`herald-name` headers). The raw consumer is in a group with
//! `enable.auto.offset.store=false`, parses each value as JSON and stores its offset.
//!
//! Each direction also prints the transport alone (`MessageSink::publish` in batches of 500;
//! `receive` + `settle` in batches of 500, no handlers), which separates the transport's cost
//! from Herald's per-message dispatch (pool job, ledger, outcome) on the route and relay paths.

use herald::ports::OutgoingMessage;
use herald::transport::kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use herald::transport::kafka::rdkafka::message::{Header, Message, OwnedHeaders};
use herald::transport::kafka::rdkafka::mocking::MockCluster;
use herald::transport::kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use herald::transport::kafka::rdkafka::ClientConfig;
use herald::transport::kafka::Kafka;
use herald::{async_handler, Event, Herald, PoolConfig, PublishOptions, State};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "bench.kafka.item")]
struct Item {
    n: u64,
    text: String,
}

#[derive(Clone, Default)]
struct Done(Arc<AtomicU64>);

#[async_handler]
async fn count(_item: Item, State(done): State<Done>) {
    done.0.fetch_add(1, Ordering::Relaxed);
}

fn item(n: u64) -> Item {
    Item {
        n,
        text: "a 64-byte-ish payload that stands for a small business event".to_owned(),
    }
}

fn producer_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "30000");
    config
}

fn rate(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

/// The raw producer: every record enqueued, then every delivery report awaited.
async fn raw_outbound(brokers: &str, topic: &str, n: u64) -> Duration {
    let producer: FutureProducer = producer_config(brokers).create().expect("a producer");
    let messages: Vec<OutgoingMessage> = (0..n)
        .map(|i| OutgoingMessage::new(&item(i), PublishOptions::new()).expect("json"))
        .collect();
    let start = Instant::now();
    let mut reports = Vec::with_capacity(messages.len());
    for message in &messages {
        let id = message.envelope.id.to_string();
        let payload = herald::wire::encode(message);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "herald-id",
                value: Some(id.as_str()),
            })
            .insert(Header {
                key: "herald-name",
                value: Some(message.envelope.name.as_ref()),
            });
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic)
            .payload(payload.as_slice())
            .headers(headers);
        loop {
            match producer.send_result(record) {
                Ok(report) => {
                    reports.push(report);
                    break;
                }
                Err((_, back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    for report in reports {
        report.await.expect("a report").expect("delivered");
    }
    start.elapsed()
}

/// Herald: a route to the transport, `publish` per event, every delivery awaited.
async fn herald_outbound(kafka: &Kafka, n: u64) -> Duration {
    let herald = Herald::builder()
        .handlers_under("nothing")
        .pool(
            "kafka_out",
            PoolConfig::new()
                .concurrency(1_024)
                .queue(usize::try_from(n).unwrap_or(usize::MAX)),
        )
        .route::<Item>()
        .pool("kafka_out")
        .to(Arc::new(kafka.clone()))
        .build()
        .expect("the bench Herald builds");
    let start = Instant::now();
    let mut deliveries = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for i in 0..n {
        deliveries.push(herald.publish(item(i)).await.expect("published"));
    }
    for delivery in deliveries {
        let status = delivery.await;
        assert!(status.is_success(), "{status:?}");
    }
    let elapsed = start.elapsed();
    herald.shutdown(Duration::from_secs(30)).await;
    elapsed
}

/// The transport alone: `MessageSink::publish` in batches of 500, no Herald.
async fn sink_outbound(kafka: &Kafka, n: u64) -> Duration {
    use herald::ports::MessageSink;
    let messages: Vec<OutgoingMessage> = (0..n)
        .map(|i| OutgoingMessage::new(&item(i), PublishOptions::new()).expect("json"))
        .collect();
    let start = Instant::now();
    let mut batches = Vec::new();
    for chunk in messages.chunks(500) {
        let (kafka, chunk) = (kafka.clone(), chunk.to_vec());
        batches.push(tokio::spawn(async move { kafka.publish(chunk).await }));
    }
    for batch in batches {
        let confirmations = batch.await.expect("the batch ran").expect("published");
        assert!(confirmations.iter().all(|c| c.is_confirmed()));
    }
    start.elapsed()
}

/// The transport alone: `receive` and `settle` (done) in batches of 500, no Herald.
async fn source_inbound(brokers: &str, topic: &str, n: u64) -> Duration {
    use herald::ports::{MessageSource, Settlement};
    let kafka = Kafka::builder(brokers, topic, format!("{topic}.source"))
        .max_buffered(5_000)
        .connect()
        .await
        .expect("the source connects");
    let mut start = None;
    let mut read = 0;
    while read < n {
        let batch = kafka
            .receive("bench", 500, Duration::from_secs(30))
            .await
            .expect("received");
        if batch.is_empty() {
            kafka.wait(Duration::from_millis(5)).await;
            continue;
        }
        start.get_or_insert_with(Instant::now);
        read += batch.len() as u64;
        let settled = batch
            .into_iter()
            .map(|r| {
                let done = Settlement::Done {
                    progress: r.message.progress.clone(),
                };
                (r.receipt, done)
            })
            .collect();
        kafka.settle("bench", settled).await.expect("settled");
    }
    let elapsed = start.map_or(Duration::ZERO, |s| s.elapsed());
    kafka.close().await;
    elapsed
}

fn consumer_config(brokers: &str, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    config
}

/// The raw consumer: poll, parse, store the offset, until `n` records.
fn raw_inbound(brokers: &str, topic: &str, n: u64) -> Duration {
    let consumer: BaseConsumer = consumer_config(brokers, &format!("{topic}.raw"))
        .create()
        .expect("a consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut start = None;
    let mut read = 0;
    while read < n {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(record)) => {
                start.get_or_insert_with(Instant::now);
                let value: serde_json::Value =
                    serde_json::from_slice(record.payload().unwrap_or_default()).expect("json");
                assert!(value.is_object());
                consumer.store_offset_from_message(&record).expect("stored");
                read += 1;
            }
            Some(Err(error)) => panic!("the raw consumer failed: {error}"),
            None => {}
        }
    }
    start.map_or(Duration::ZERO, |s| s.elapsed())
}

/// Herald: the transport's source, a relay, a handler that counts.
async fn herald_inbound(brokers: &str, topic: &str, n: u64) -> Duration {
    let kafka = Kafka::builder(brokers, topic, format!("{topic}.herald"))
        .max_buffered(5_000)
        .connect()
        .await
        .expect("the source connects");
    let done = Done::default();
    let herald = Herald::builder()
        .handlers_under(module_path!())
        .state(done.clone())
        .build()
        .expect("the bench Herald builds");
    let relay = herald::outbox::Relay::builder(Arc::new(kafka.clone()), &herald)
        .batch_size(500)
        .poll_interval(Duration::from_millis(5))
        .start();
    // Timed from the first message handled, as the raw consumer is (the group join is not).
    while done.0.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let start = Instant::now();
    while done.0.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let elapsed = start.elapsed();
    relay.stop().await;
    kafka.close().await;
    elapsed
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::var("HERALD_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let run = herald::MessageId::new().to_string();
    let raw_topic = format!("bench-raw-{run}");
    let herald_topic = format!("bench-herald-{run}");
    let (brokers, _cluster) = match std::env::var("HERALD_BENCH_KAFKA_BROKERS") {
        Ok(brokers) => (brokers, None),
        Err(_) => {
            let cluster = MockCluster::new(1).expect("a mock cluster");
            for topic in [&raw_topic, &herald_topic] {
                cluster.create_topic(topic, 3, 1).expect("a topic");
            }
            (cluster.bootstrap_servers(), Some(cluster))
        }
    };
    let where_ = if _cluster.is_some() {
        "MockCluster"
    } else {
        brokers.as_str()
    };
    println!("Kafka bench: {n} messages, brokers {where_}");
    let mut sink = Kafka::builder(&brokers, &herald_topic, "bench-unused");
    if _cluster.is_none() {
        // A real broker: both topics with three partitions (MockCluster made them above).
        for topic in [&raw_topic, &herald_topic] {
            Kafka::builder(&brokers, topic.as_str(), "bench-unused")
                .create_topic(3, 1)
                .connect()
                .await
                .expect("the topic is created");
        }
        sink = sink.request_timeout(Duration::from_secs(10));
    }
    let kafka = sink.connect().await.expect("the sink connects");

    // Warm up both producers (metadata, producer id) before timing.
    let _ = raw_outbound(&brokers, &raw_topic, 10).await;
    let _ = herald_outbound(&kafka, 10).await;

    let raw_out = raw_outbound(&brokers, &raw_topic, n).await;
    let herald_out = herald_outbound(&kafka, n).await;
    let sink_out = sink_outbound(&kafka, n).await;
    let (raw_rate, herald_rate) = (rate(n, raw_out), rate(n, herald_out));
    let sink_rate = rate(n, sink_out);
    println!(
        "outbound  raw rdkafka {raw_rate:>9.0}/s   Herald route {herald_rate:>9.0}/s   ratio {:.2}x   (transport sink alone {sink_rate:>9.0}/s, {:.2}x)",
        herald_rate / raw_rate,
        sink_rate / raw_rate
    );

    let raw_brokers = brokers.clone();
    let raw_in_topic = raw_topic.clone();
    let total = n + 10;
    let raw_in =
        tokio::task::spawn_blocking(move || raw_inbound(&raw_brokers, &raw_in_topic, total))
            .await
            .expect("the raw consumer ran");
    let herald_in = herald_inbound(&brokers, &raw_topic, total).await;
    let source_in = source_inbound(&brokers, &raw_topic, total).await;
    let (raw_rate, herald_rate) = (rate(total, raw_in), rate(total, herald_in));
    let source_rate = rate(total, source_in);
    println!(
        "inbound   raw rdkafka {raw_rate:>9.0}/s   Herald relay {herald_rate:>9.0}/s   ratio {:.2}x   (transport source alone {source_rate:>9.0}/s, {:.2}x)",
        herald_rate / raw_rate,
        source_rate / raw_rate
    );
}
