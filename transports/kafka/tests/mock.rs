//! The Kafka transport against librdkafka's in-process `MockCluster` (a Kafka protocol
//! implementation with groups, offsets and failure injection, from librdkafka itself): fast
//! tests of what only the Kafka side decides. The conformance kit runs on it too
//! (`conformance/tests/backends.rs`), and on a real broker (tansu). What MockCluster does not do
//! (offsets by time; a commit while the group rebalances) is tested on the real broker
//! (`tests/broker.rs`).

use herald::outbox::Relay;
use herald::ports::{MessageSink, MessageSource, OutgoingMessage, Receipt, Settlement};
use herald::{
    async_handler, DeadLetterReason, Event, HandlerError, Herald, MessageId, Meta, Progress,
    PublishOptions, State,
};
use herald_transport_kafka::rdkafka::consumer::{Consumer, StreamConsumer};
use herald_transport_kafka::rdkafka::message::{Headers, Message};
use herald_transport_kafka::rdkafka::mocking::MockCluster;
use herald_transport_kafka::rdkafka::producer::FutureRecord;
use herald_transport_kafka::rdkafka::ClientConfig;
use herald_transport_kafka::{Kafka, KafkaBuilder, PartitionLag, StartAt, ID_HEADER};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Cluster =
    MockCluster<'static, herald_transport_kafka::rdkafka::producer::DefaultProducerContext>;

/// A mock cluster of one broker with `topic` made with `partitions` partitions.
fn cluster(topic: &str, partitions: i32) -> Cluster {
    let cluster = MockCluster::new(1).expect("librdkafka's mock cluster starts");
    cluster
        .create_topic(topic, partitions, 1)
        .expect("the mock cluster creates the topic");
    cluster
}

fn builder(cluster: &Cluster, topic: &str, group: &str) -> KafkaBuilder {
    Kafka::builder(cluster.bootstrap_servers(), topic, group)
        .request_timeout(Duration::from_secs(5))
        // Quick group joins and rebalances in tests.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "100")
        // Reconnect quickly to a broker that is back.
        .set("reconnect.backoff.max.ms", "200")
}

async fn connect(builder: KafkaBuilder) -> Kafka {
    builder
        .connect()
        .await
        .expect("the Kafka clients are created")
}

/// What the handlers saw, per key in the order they ran, and each attempt's time.
#[derive(Debug, Clone, Default)]
struct Seen(Arc<Mutex<SeenInner>>);

#[derive(Debug, Default)]
struct SeenInner {
    by_key: BTreeMap<String, Vec<u32>>,
    envelopes: Vec<(Parcel, herald::Envelope)>,
    attempts: Vec<(u32, u32, Instant)>,
}

impl Seen {
    fn with<T>(&self, f: impl FnOnce(&mut SeenInner) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "kafka_test.parcel", key = key)]
struct Parcel {
    key: String,
    seq: u32,
    text: String,
}

#[async_handler]
async fn take_parcel(parcel: Parcel, meta: Meta, State(seen): State<Seen>) {
    // Later messages of other keys overtake; one key's must not.
    tokio::time::sleep(Duration::from_millis(u64::from(parcel.seq % 3))).await;
    seen.with(|s| {
        s.by_key
            .entry(parcel.key.clone())
            .or_default()
            .push(parcel.seq);
        s.envelopes.push((parcel, meta.envelope().clone()));
    });
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "kafka_test.flaky")]
struct Flaky {
    n: u32,
    fail_times: u32,
    permanent: bool,
}

const BACKOFF: Duration = Duration::from_millis(300);

#[async_handler(retry(max_attempts = 3, backoff = fixed(300ms)))]
async fn flaky(event: Flaky, meta: Meta, State(seen): State<Seen>) -> Result<(), HandlerError> {
    seen.with(|s| s.attempts.push((event.n, meta.attempt(), Instant::now())));
    if event.permanent {
        return Err(HandlerError::permanent(HandlerError::msg(
            "no such account",
        )));
    }
    if meta.attempt() <= event.fail_times {
        return Err(HandlerError::msg("this attempt fails on purpose"));
    }
    Ok(())
}

fn herald(seen: &Seen) -> Herald {
    Herald::builder()
        .handlers_under(module_path!())
        .state(seen.clone())
        .build()
        .expect("the test Herald builds")
}

async fn publish<M: herald::Message>(kafka: &Kafka, message: M) -> MessageId {
    let outgoing = OutgoingMessage::new(&message, PublishOptions::new()).expect("serializes");
    let id = outgoing.envelope.id;
    let confirmations = kafka.publish(vec![outgoing]).await.expect("published");
    assert!(confirmations[0].is_confirmed(), "{confirmations:?}");
    id
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the group has finished everything in the topic.
async fn drained(kafka: &Kafka) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = kafka.unfinished().await.expect("the lag is readable");
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: {left} message(s) unfinished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Receives with the source's own API until `count` messages are leased to `owner`.
async fn receive(kafka: &Kafka, owner: &str, count: usize) -> Vec<herald::ports::Received> {
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.len() < count {
        assert!(
            Instant::now() < deadline,
            "timed out: received {} of {count}",
            received.len()
        );
        let batch = kafka
            .receive(owner, count - received.len(), Duration::from_secs(30))
            .await
            .expect("receive");
        if batch.is_empty() {
            kafka.wait(Duration::from_millis(50)).await;
        }
        received.extend(batch);
    }
    received
}

fn done() -> Settlement {
    Settlement::Done {
        progress: Progress::new(),
    }
}

async fn committed(kafka: &Kafka) -> BTreeMap<i32, Option<i64>> {
    kafka
        .lag()
        .await
        .expect("the lag is readable")
        .iter()
        .map(
            |PartitionLag {
                 partition,
                 committed,
                 ..
             }| (*partition, *committed),
        )
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_headers_and_per_key_order_survive_the_round_trip() {
    let topic = "parcels";
    let cluster = cluster(topic, 3);
    let kafka = connect(builder(&cluster, topic, "round-trip")).await;
    let keys = ["k-a", "k-b", "k-c", "k-d"];
    let mut batch = Vec::new();
    for seq in 0..10 {
        for key in keys {
            let parcel = Parcel {
                key: key.to_owned(),
                seq,
                text: "nul:\u{0} ü ✓ \"quoted\"".to_owned(),
            };
            let options = PublishOptions::new().header("tenant", "acme");
            batch.push(OutgoingMessage::new(&parcel, options).expect("serializes"));
        }
    }
    let ids: Vec<MessageId> = batch.iter().map(|m| m.envelope.id).collect();
    let confirmations = kafka.publish(batch).await.expect("published");
    assert!(
        confirmations.iter().all(|c| c.is_confirmed()),
        "{confirmations:?}"
    );

    let seen = Seen::default();
    let herald = herald(&seen);
    let relay = Relay::builder(Arc::new(kafka.clone()), &herald)
        .batch_size(8)
        .poll_interval(Duration::from_millis(20))
        .start();
    eventually("every parcel handled", || {
        seen.with(|s| s.envelopes.len()) == ids.len()
    })
    .await;
    drained(&kafka).await;
    let stats = relay.stop().await;
    assert_eq!(stats.processed, 40, "{stats:?}");
    seen.with(|s| {
        for key in keys {
            assert_eq!(
                s.by_key[key],
                (0..10).collect::<Vec<_>>(),
                "key {key} in order"
            );
        }
        let (parcel, envelope) = &s.envelopes[0];
        assert_eq!(parcel.text, "nul:\u{0} ü ✓ \"quoted\"");
        assert_eq!(envelope.key.as_deref(), Some(parcel.key.as_str()));
        assert_eq!(
            envelope.headers.extra.get("tenant").map(String::as_str),
            Some("acme")
        );
    });

    // On the wire: the Kafka key is the Herald key (one key, one partition, in order) and the
    // id travels as a header.
    let raw: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "raw-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("a raw consumer");
    raw.subscribe(&[topic]).expect("subscribe");
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    let mut ids_seen = Vec::new();
    for _ in 0..ids.len() {
        let record = tokio::time::timeout(Duration::from_secs(20), raw.recv())
            .await
            .expect("a raw record in time")
            .expect("a raw record");
        let key = String::from_utf8(record.key().expect("a key").to_vec()).expect("utf-8");
        let partition = *partition_of
            .entry(key.clone())
            .or_insert(record.partition());
        assert_eq!(
            partition,
            record.partition(),
            "key {key} stays on one partition"
        );
        let headers = record.headers().expect("headers");
        let id = headers
            .iter()
            .find(|h| h.key == ID_HEADER)
            .and_then(|h| h.value)
            .expect("the herald-id header");
        ids_seen.push(String::from_utf8(id.to_vec()).expect("utf-8"));
    }
    let mut expected: Vec<String> = ids.iter().map(ToString::to_string).collect();
    expected.sort();
    ids_seen.sort();
    assert_eq!(ids_seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_contiguous_done_watermark_is_committed() {
    let topic = "watermark";
    let cluster = cluster(topic, 1);
    let kafka =
        connect(builder(&cluster, topic, "watermark").commit_interval(Duration::from_secs(60)))
            .await;
    for n in 0..4 {
        publish(
            &kafka,
            Flaky {
                n,
                fail_times: 0,
                permanent: false,
            },
        )
        .await;
    }
    let received = receive(&kafka, "relay-1", 4).await;
    let receipt = |n: usize| -> Receipt { received[n].receipt };
    // Offsets 1 and 2 finish while 0 still runs (a slow handler): nothing may be committed.
    kafka
        .settle("relay-1", vec![(receipt(1), done()), (receipt(2), done())])
        .await
        .expect("settled");
    kafka.commit().await.expect("committed");
    assert_eq!(
        committed(&kafka).await[&0],
        None,
        "nothing past the unfinished offset 0"
    );
    assert_eq!(kafka.lag().await.expect("lag")[0].lag, 4);
    // 0 finishes: 0..=2 are done, 3 is not: the next offset to read is 3.
    kafka
        .settle("relay-1", vec![(receipt(0), done())])
        .await
        .expect("settled");
    kafka.commit().await.expect("committed");
    assert_eq!(committed(&kafka).await[&0], Some(3));
    assert_eq!(kafka.lag().await.expect("lag")[0].lag, 1);
    kafka
        .settle("relay-1", vec![(receipt(3), done())])
        .await
        .expect("settled");
    kafka.commit().await.expect("committed");
    assert_eq!(committed(&kafka).await[&0], Some(4));
    assert_eq!(kafka.unfinished().await.expect("lag"), 0);
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "kafka_test.timed")]
struct Timed {
    millis: u64,
}

#[async_handler]
async fn timed(event: Timed, State(seen): State<Seen>) {
    tokio::time::sleep(Duration::from_millis(event.millis)).await;
    let millis = u32::try_from(event.millis).unwrap_or(u32::MAX);
    seen.with(|s| s.attempts.push((millis, 1, Instant::now())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_on_an_earlier_offset_holds_back_the_commit() {
    let topic = "slow";
    let cluster = cluster(topic, 1);
    let kafka =
        connect(builder(&cluster, topic, "slow").commit_interval(Duration::from_millis(50))).await;
    publish(&kafka, Timed { millis: 2_000 }).await;
    for _ in 0..5 {
        publish(&kafka, Timed { millis: 0 }).await;
    }
    let seen = Seen::default();
    let herald = herald(&seen);
    // Two relays: the fast messages finish on the second while the first holds offset 0.
    let relays = [
        Relay::builder(Arc::new(kafka.clone()), &herald)
            .batch_size(1)
            .poll_interval(Duration::from_millis(10))
            .start(),
        Relay::builder(Arc::new(kafka.clone()), &herald)
            .batch_size(1)
            .poll_interval(Duration::from_millis(10))
            .start(),
    ];
    eventually("the fast messages handled", || {
        seen.with(|s| s.attempts.iter().filter(|a| a.0 == 0).count()) == 5
    })
    .await;
    // Several commit intervals pass while offset 0 still runs.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        seen.with(|s| s.attempts.iter().all(|a| a.0 == 0)),
        "the slow one still runs"
    );
    let during = kafka.lag().await.expect("lag")[0];
    assert_eq!(during.committed, None, "offset 0 still runs: {during:?}");
    assert_eq!(during.finished_up_to, Some(0), "{during:?}");
    assert_eq!(during.lag, 6);
    drained(&kafka).await;
    kafka.commit().await.expect("committed");
    assert_eq!(committed(&kafka).await[&0], Some(6));
    for relay in relays {
        let stats = relay.stop().await;
        assert_eq!(stats.lost, 0);
    }
}

/// Six messages over two partitions, all leased to `relay-1` and all but the first finished.
/// Returns the held one and the done watermark of each partition.
async fn finish_all_but_one(kafka: &Kafka) -> (Receipt, BTreeMap<i32, Option<i64>>) {
    for n in 0..6 {
        // No key: spread over both partitions.
        publish(
            kafka,
            Flaky {
                n,
                fail_times: 0,
                permanent: false,
            },
        )
        .await;
    }
    let received = receive(kafka, "relay-1", 6).await;
    let (held, finished) = received.split_at(1);
    kafka
        .settle(
            "relay-1",
            finished.iter().map(|r| (r.receipt, done())).collect(),
        )
        .await
        .expect("settled");
    let watermarks = kafka
        .lag()
        .await
        .expect("lag")
        .iter()
        .map(|p| (p.partition, p.finished_up_to))
        .collect();
    (held[0].receipt, watermarks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_the_group_commits_the_revoked_partitions_up_to_their_watermark() {
    let topic = "leave";
    let cluster = cluster(topic, 2);
    let kafka =
        connect(builder(&cluster, topic, "leave").commit_interval(Duration::from_secs(60))).await;
    let (held, watermarks) = finish_all_but_one(&kafka).await;
    let before = committed(&kafka).await;
    assert!(
        before.values().all(Option::is_none),
        "nothing committed yet: {before:?}"
    );
    // Closing revokes the partitions: what is finished is committed before they go.
    kafka.close().await;
    assert_eq!(committed(&kafka).await, watermarks);
    let kept = kafka
        .keep("relay-1", &[held], Duration::from_secs(30))
        .await
        .expect("keep");
    assert!(kept.is_empty(), "the lease on a revoked partition is lost");
    assert!(
        kafka
            .receive("relay-1", 10, Duration::from_secs(30))
            .await
            .is_err(),
        "closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_hands_unfinished_messages_to_the_new_owner() {
    let topic = "rebalance";
    let cluster = cluster(topic, 2);
    let first =
        connect(builder(&cluster, topic, "shared").commit_interval(Duration::from_millis(100)))
            .await;
    let (held, _) = finish_all_but_one(&first).await;
    // The held message and the finished ones after it in its partition: the watermark stops
    // at the held one, so the new owner reads them all again (at least once).
    let again = first.unfinished().await.expect("lag");
    assert!(again >= 1);
    // Let one auto-commit carry the finished offsets (MockCluster refuses commits while the
    // group rebalances, where a real broker takes the commit made on revoke).
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A second consumer joins: the first one's partitions are revoked and re-assigned over both.
    let second = connect(builder(&cluster, topic, "shared")).await;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (got.len() as u64) < again {
        assert!(
            Instant::now() < deadline,
            "not re-delivered after the rebalance: {got:?}"
        );
        for kafka in [&first, &second] {
            got.extend(
                kafka
                    .receive("relay-2", 10, Duration::from_secs(30))
                    .await
                    .expect("receive"),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for kafka in [&first, &second] {
        got.extend(
            kafka
                .receive("relay-2", 10, Duration::from_secs(30))
                .await
                .expect("receive"),
        );
    }
    assert_eq!(
        got.len() as u64,
        again,
        "only what was not committed comes again: {got:?}"
    );
    let kept = first
        .keep("relay-1", &[held], Duration::from_secs(30))
        .await
        .expect("keep");
    assert!(kept.is_empty(), "the lease on a revoked partition is lost");
    first.close().await;
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_for_the_backoff_and_failures_go_to_the_dead_letters() {
    let topic = "failures";
    let cluster = cluster(topic, 1);
    let kafka = connect(builder(&cluster, topic, "failures")).await;
    publish(
        &kafka,
        Flaky {
            n: 1,
            fail_times: 1,
            permanent: false,
        },
    )
    .await;
    let doomed = publish(
        &kafka,
        Flaky {
            n: 2,
            fail_times: 0,
            permanent: true,
        },
    )
    .await;
    let exhausted = publish(
        &kafka,
        Flaky {
            n: 3,
            fail_times: 9,
            permanent: false,
        },
    )
    .await;
    // Not a wire envelope: dead-lettered as malformed.
    kafka
        .producer()
        .send(
            FutureRecord::<str, str>::to(topic).payload("not json at all"),
            Duration::from_secs(5),
        )
        .await
        .expect("a raw record is produced");
    let seen = Seen::default();
    let herald = herald(&seen);
    let relay = Relay::builder(Arc::new(kafka.clone()), &herald)
        .poll_interval(Duration::from_millis(20))
        .start();
    drained(&kafka).await;
    let stats = relay.stop().await;
    assert_eq!((stats.processed, stats.failed), (1, 3), "{stats:?}");
    seen.with(|s| {
        let retried: Vec<&(u32, u32, Instant)> = s.attempts.iter().filter(|a| a.0 == 1).collect();
        assert_eq!(retried.len(), 2, "{:?}", s.attempts);
        assert_eq!((retried[0].1, retried[1].1), (1, 2), "attempt counted up");
        assert!(
            retried[1].2 - retried[0].2 >= BACKOFF,
            "waited for the backoff"
        );
        assert_eq!(s.attempts.iter().filter(|a| a.0 == 3).count(), 3);
    });
    let letters = herald.dead_letters().list(100).await.expect("dead letters");
    let mut summary: Vec<(DeadLetterReason, u32)> =
        letters.iter().map(|l| (l.reason, l.attempts)).collect();
    summary.sort_by_key(|(reason, attempts)| (format!("{reason:?}"), *attempts));
    assert_eq!(
        summary,
        vec![
            (DeadLetterReason::Failed, 1),
            (DeadLetterReason::Failed, 3),
            (DeadLetterReason::Malformed, 1),
        ],
        "{letters:?}"
    );
    assert!(letters.iter().any(|l| l.envelope.id == doomed));
    assert!(letters.iter().any(|l| l.envelope.id == exhausted));
    kafka.commit().await.expect("committed");
    assert_eq!(committed(&kafka).await[&0], Some(4), "all four committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_fails_the_delivery_and_up_again_delivers() {
    let topic = "outage";
    let cluster = cluster(topic, 1);
    let kafka =
        connect(builder(&cluster, topic, "outage").delivery_timeout(Duration::from_secs(4))).await;
    publish(
        &kafka,
        Flaky {
            n: 1,
            fail_times: 0,
            permanent: false,
        },
    )
    .await;
    cluster.broker_down(1).expect("the broker goes down");
    let outgoing = OutgoingMessage::new(
        &Flaky {
            n: 2,
            fail_times: 0,
            permanent: false,
        },
        PublishOptions::new(),
    )
    .expect("serializes");
    let confirmations = kafka
        .publish(vec![outgoing])
        .await
        .expect("publish returns");
    match &confirmations[0] {
        herald::ports::Confirmation::Failed { reason } => {
            assert!(reason.contains("Kafka did not deliver"), "{reason}")
        }
        other => panic!("confirmed while the broker is down: {other:?}"),
    }
    cluster.broker_up(1).expect("the broker comes back");
    publish(
        &kafka,
        Flaky {
            n: 3,
            fail_times: 0,
            permanent: false,
        },
    )
    .await;
    let seen = Seen::default();
    let herald = herald(&seen);
    let relay = Relay::builder(Arc::new(kafka.clone()), &herald)
        .poll_interval(Duration::from_millis(20))
        .start();
    drained(&kafka).await;
    relay.stop().await;
    // Messages without a key run concurrently: their handlers may start in either order.
    let mut handled: Vec<u32> = seen.with(|s| s.attempts.iter().map(|a| a.0).collect());
    handled.sort_unstable();
    assert_eq!(handled, vec![1, 3], "the failed one was never stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_produce_errors_are_retried_by_the_producer() {
    use herald_transport_kafka::rdkafka::types::RDKafkaApiKey;
    use herald_transport_kafka::rdkafka::types::RDKafkaRespErr;
    let topic = "flaky-broker";
    let cluster = cluster(topic, 1);
    let kafka = connect(builder(&cluster, topic, "flaky-broker")).await;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 3],
    );
    publish(
        &kafka,
        Flaky {
            n: 1,
            fail_times: 0,
            permanent: false,
        },
    )
    .await;
    assert_eq!(
        kafka.lag().await.expect("lag")[0].high_watermark,
        1,
        "stored once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_at_re_reads_from_an_offset() {
    let topic = "replay";
    let cluster = cluster(topic, 1);
    let producer = connect(builder(&cluster, topic, "unused")).await;
    for n in 0..10 {
        publish(
            &producer,
            Flaky {
                n,
                fail_times: 0,
                permanent: false,
            },
        )
        .await;
    }
    let kafka = connect(builder(&cluster, topic, "replay").start_at(StartAt::Offset(6))).await;
    let received = receive(&kafka, "relay", 4).await;
    let numbers: Vec<u32> = received
        .iter()
        .map(|r| {
            let value: serde_json::Value = serde_json::from_str(&r.message.payload).expect("json");
            u32::try_from(value["n"].as_u64().expect("n")).expect("small")
        })
        .collect();
    assert_eq!(numbers, vec![6, 7, 8, 9]);
    kafka
        .settle(
            "relay",
            received.iter().map(|r| (r.receipt, done())).collect(),
        )
        .await
        .expect("settled");
    kafka.commit().await.expect("committed");
    assert_eq!(committed(&kafka).await[&0], Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_closes_hands_its_unfinished_messages_to_the_next() {
    let topic = "handover";
    let cluster = cluster(topic, 1);
    let first = connect(builder(&cluster, topic, "handover")).await;
    for n in 0..40 {
        publish(
            &first,
            Flaky {
                n,
                fail_times: 0,
                permanent: false,
            },
        )
        .await;
    }
    let received = receive(&first, "relay-1", 40).await;
    first
        .settle(
            "relay-1",
            received[..15].iter().map(|r| (r.receipt, done())).collect(),
        )
        .await
        .expect("settled");
    // Several auto-commit intervals pass: only the done watermark may be committed.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    first.close().await;
    assert_eq!(committed(&first).await[&0], Some(15));
    let next = connect(builder(&cluster, topic, "handover")).await;
    let again = receive(&next, "relay-2", 25).await;
    let numbers: Vec<u32> = again
        .iter()
        .map(|r| {
            let value: serde_json::Value = serde_json::from_str(&r.message.payload).expect("json");
            u32::try_from(value["n"].as_u64().expect("n")).expect("small")
        })
        .collect();
    assert_eq!(numbers, (15..40).collect::<Vec<_>>());
    next.close().await;
}
