//! The Kafka transport against a real Kafka-protocol broker at `HERALD_TEST_KAFKA_BROKERS`
//! (default `127.0.0.1:9092`: tansu, started by `.ci/run`), for what librdkafka's MockCluster
//! does not do: offsets by time (`start_at`), and an offset commit taken while the group
//! rebalances (the commit on revoke). Each test uses its own topic and groups; a missing broker
//! fails the tests.

use herald::ports::{MessageSink, MessageSource, OutgoingMessage, Received, Settlement};
use herald::{Event, Progress, PublishOptions};
use herald_transport_kafka::{Kafka, KafkaBuilder, StartAt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn brokers() -> String {
    std::env::var("HERALD_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

fn topic(test: &str) -> String {
    format!("herald-test.{test}.{}", herald::MessageId::new())
}

/// Groups live on the broker (which outlives the test run): named after the test's topic.
fn builder(topic: &str, group: &str) -> KafkaBuilder {
    Kafka::builder(brokers(), topic, format!("{topic}.{group}"))
        .create_topic(2, 1)
        .request_timeout(Duration::from_secs(10))
        .set("heartbeat.interval.ms", "200")
}

async fn connect(builder: KafkaBuilder) -> Kafka {
    builder
        .connect()
        .await
        .unwrap_or_else(|e| panic!("a Kafka broker (tansu in CI) is required for these tests: {e}"))
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "kafka_broker_test.numbered")]
struct Numbered {
    n: u32,
}

async fn publish(kafka: &Kafka, n: u32) {
    let outgoing = OutgoingMessage::new(&Numbered { n }, PublishOptions::new()).expect("json");
    let confirmations = kafka.publish(vec![outgoing]).await.expect("published");
    assert!(confirmations[0].is_confirmed(), "{confirmations:?}");
}

async fn receive(kafka: &Kafka, owner: &str, count: usize) -> Vec<Received> {
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.len() < count {
        assert!(
            Instant::now() < deadline,
            "timed out: received {} of {count}",
            received.len()
        );
        let batch = kafka
            .receive(owner, count - received.len(), Duration::from_secs(60))
            .await
            .expect("receive");
        if batch.is_empty() {
            kafka.wait(Duration::from_millis(50)).await;
        }
        received.extend(batch);
    }
    received
}

fn numbers(received: &[Received]) -> Vec<u32> {
    let mut numbers: Vec<u32> = received
        .iter()
        .map(|r| {
            let value: serde_json::Value = serde_json::from_str(&r.message.payload).expect("json");
            u32::try_from(value["n"].as_u64().expect("n")).expect("small")
        })
        .collect();
    numbers.sort_unstable();
    numbers
}

// One partition: tansu 0.6 answers a lookup by time on a partition that holds no record at or
// after the time with offset 0 instead of Kafka's "none" (-1, which the transport turns into the
// partition's end), so such a partition would be re-read from its beginning (tansu-storage 0.6
// `dynostore.rs`, `list_offsets`: with no candidate it answers `offset: Some(0)`). With two
// partitions and keyless records, one partition held none of the three later records in about one
// run in four, and the test received `[2, 3, 4]` or `[0, 1, 2]`. Kafka itself follows the
// protocol here, so the transport does not second-guess an answer of 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_at_a_time_re_reads_what_came_after_it() {
    let topic = topic("start-at-time");
    let producer = connect(builder(&topic, "unused").create_topic(1, 1)).await;
    for n in 0..3 {
        publish(&producer, n).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let since = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 3..6 {
        publish(&producer, n).await;
    }
    let kafka = connect(
        builder(&topic, "replay")
            .create_topic(1, 1)
            .start_at(StartAt::Time(since)),
    )
    .await;
    let received = receive(&kafka, "relay", 3).await;
    assert_eq!(numbers(&received), vec![3, 4, 5]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let more = kafka
        .receive("relay", 10, Duration::from_secs(60))
        .await
        .expect("receive");
    assert!(more.is_empty(), "nothing from before the time: {more:?}");
    kafka.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_commits_what_the_first_consumer_finished() {
    let topic = topic("revoke");
    let first = connect(builder(&topic, "shared").commit_interval(Duration::from_secs(600))).await;
    for n in 0..8 {
        publish(&first, n).await;
    }
    let received = receive(&first, "relay-1", 8).await;
    let done = Settlement::Done {
        progress: Progress::new(),
    };
    first
        .settle(
            "relay-1",
            received.iter().map(|r| (r.receipt, done.clone())).collect(),
        )
        .await
        .expect("settled");
    let finished: BTreeMap<i32, Option<i64>> = first
        .lag()
        .await
        .expect("lag")
        .iter()
        .map(|p| (p.partition, p.finished_up_to))
        .collect();
    // No auto-commit for ten minutes: only the commit made when the partitions are revoked can
    // put the offsets on the broker.
    let second = connect(builder(&topic, "shared")).await;
    let _ = second
        .receive("relay-2", 1, Duration::from_secs(60))
        .await
        .expect("joins");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let committed: BTreeMap<i32, Option<i64>> = match second.lag().await {
            Ok(lags) => lags.iter().map(|p| (p.partition, p.committed)).collect(),
            Err(_) => BTreeMap::new(),
        };
        if committed == finished {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not committed on revoke: {committed:?}, expected {finished:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing finished comes again to either consumer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for kafka in [&first, &second] {
        let again = kafka
            .receive("relay-3", 10, Duration::from_secs(60))
            .await
            .expect("receive");
        assert!(again.is_empty(), "finished messages came again: {again:?}");
    }
    first.close().await;
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_closes_hands_its_unfinished_messages_to_the_next() {
    let topic = topic("handover");
    let first = connect(builder(&topic, "g").create_topic(1, 1)).await;
    for n in 0..40 {
        publish(&first, n).await;
    }
    let received = receive(&first, "relay-1", 40).await;
    let done = Settlement::Done {
        progress: Progress::new(),
    };
    first
        .settle(
            "relay-1",
            received[..15]
                .iter()
                .map(|r| (r.receipt, done.clone()))
                .collect(),
        )
        .await
        .expect("settled");
    // Several auto-commit intervals pass: only the done watermark may be committed.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    first.close().await;
    let committed: Vec<Option<i64>> = first
        .lag()
        .await
        .expect("lag")
        .iter()
        .map(|p| p.committed)
        .collect();
    assert_eq!(committed, vec![Some(15)]);
    let next = connect(builder(&topic, "g").create_topic(1, 1)).await;
    let again = receive(&next, "relay-2", 25).await;
    assert_eq!(numbers(&again), (15..40).collect::<Vec<_>>());
    next.close().await;
}
