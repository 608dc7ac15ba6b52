//! The Redis Streams transport against the real server at `HERALD_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`): each test uses its own stream key, and fails when Redis is missing.

use herald::outbox::Relay;
use herald::ports::{MessageSink, MessageSource, OutgoingMessage, Settlement};
use herald::{
    async_handler, DeadLetterReason, Event, Herald, MessageId, Meta, PublishOptions, State,
};
use herald_transport_redis::{RedisStreams, ENVELOPE_FIELD, ID_FIELD};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn url() -> String {
    std::env::var("HERALD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn streams(test: &str) -> RedisStreams {
    let key = format!("herald-test:{test}:{}", uuid::Uuid::new_v4());
    RedisStreams::connect(&url(), key, "group")
        .await
        .unwrap_or_else(|e| panic!("Redis is required for these tests: {e}"))
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(url())
        .expect("a valid HERALD_TEST_REDIS_URL")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis is required for these tests: {e}"))
}

/// Per message id: the payload and envelope the handler got, and how often it ran.
type Runs = HashMap<MessageId, (Parcel, herald::Envelope, u32)>;

#[derive(Debug, Clone, Default)]
struct Seen(Arc<Mutex<Runs>>);

impl Seen {
    fn count(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
    fn runs(&self) -> u32 {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.values().map(|(_, _, n)| *n).sum()
    }
}

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "redis_test.parcel")]
struct Parcel {
    n: u32,
    text: String,
}

#[async_handler]
async fn receive_parcel(parcel: Parcel, meta: Meta, State(seen): State<Seen>) {
    let mut seen = seen.0.lock().unwrap_or_else(|e| e.into_inner());
    let entry = seen
        .entry(meta.id())
        .or_insert_with(|| (parcel, meta.envelope().clone(), 0));
    entry.2 += 1;
}

fn herald(seen: &Seen) -> Herald {
    Herald::builder()
        .handlers_under(module_path!())
        .state(seen.clone())
        .build()
        .expect("herald builds")
}

async fn publish(streams: &RedisStreams, n: u32, options: PublishOptions) -> MessageId {
    let parcel = Parcel {
        n,
        text: format!("parcel {n}: ü \u{0} ✓"),
    };
    let message = OutgoingMessage::new(&parcel, options).expect("serialize");
    let id = message.envelope.id;
    let confirmations = streams.publish(vec![message]).await.expect("publish");
    assert!(confirmations[0].is_confirmed(), "{confirmations:?}");
    id
}

async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn drained(streams: &RedisStreams) {
    eventually("the stream drained", async || {
        streams.unfinished().await.expect("unfinished") == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_and_headers_arrive_intact() {
    let streams = streams("intact").await;
    let seen = Seen::default();
    let herald = herald(&seen);
    let correlation = MessageId::new();
    let options = PublishOptions::new()
        .idempotency_key("idem-1")
        .correlation_id(correlation)
        .header("tenant", "acme ✓")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
    let id = publish(&streams, 7, options).await;
    let relay = Relay::builder(Arc::new(streams.clone()), &herald)
        .poll_interval(Duration::from_millis(20))
        .start();
    eventually("handled", async || seen.count() == 1).await;
    drained(&streams).await;
    let stats = relay.stop().await;
    assert_eq!(stats.processed, 1);
    let (parcel, envelope, runs) = seen.0.lock().expect("lock")[&id].clone();
    assert_eq!((runs, seen.runs()), (1, 1), "handled once, nothing else");
    assert_eq!(parcel.text, "parcel 7: ü \u{0} ✓");
    assert_eq!(envelope.id, id);
    assert_eq!(envelope.idempotency_key.as_deref(), Some("idem-1"));
    assert_eq!(envelope.headers.correlation_id, Some(correlation));
    assert_eq!(envelope.headers.extra["tenant"], "acme ✓");
    assert_eq!(
        envelope.headers.extra["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_entry_is_dead_lettered_and_acked() {
    let streams = streams("malformed").await;
    let seen = Seen::default();
    let herald = herald(&seen);
    let mut conn = raw().await;
    let _: String = redis::cmd("XADD")
        .arg(streams.stream())
        .arg("*")
        .arg(ID_FIELD)
        .arg("not-an-id")
        .arg("name")
        .arg("redis_test.parcel")
        .arg(ENVELOPE_FIELD)
        .arg(&b"{\"herald\":1,\0 truncated"[..])
        .query_async(&mut conn)
        .await
        .expect("xadd");
    let good = publish(&streams, 1, PublishOptions::new()).await;
    let relay = Relay::builder(Arc::new(streams.clone()), &herald)
        .poll_interval(Duration::from_millis(20))
        .start();
    drained(&streams).await;
    let stats = relay.stop().await;
    assert_eq!((stats.processed, stats.failed), (1, 1), "{stats:?}");
    assert!(seen.0.lock().expect("lock").contains_key(&good));
    let letters = herald.dead_letters().list(10).await.expect("list");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].reason, DeadLetterReason::Malformed);
    assert_eq!(letters[0].handler, "streams::receive_parcel");
    assert_eq!(
        letters[0].envelope.headers.extra["redis-id-field"],
        "not-an-id"
    );
    let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(streams.stream())
        .arg("group")
        .query_async(&mut conn)
        .await
        .expect("xpending");
    assert_eq!(pending.0, 0, "the malformed entry was acked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_consumers_entries_are_taken_over_after_the_lease() {
    let streams = streams("takeover").await;
    let lease = Duration::from_millis(300);
    for n in 0..3 {
        publish(&streams, n, PublishOptions::new()).await;
    }
    let taken = streams.receive("dead", 10, lease).await.expect("receive");
    assert_eq!(taken.len(), 3);
    let early = streams.receive("alive", 10, lease).await.expect("receive");
    assert!(early.is_empty(), "held under the dead consumer's lease");
    tokio::time::sleep(lease + Duration::from_millis(50)).await;
    let taken_over = streams.receive("alive", 10, lease).await.expect("receive");
    assert_eq!(taken_over.len(), 3, "taken over after the lease");
    let kept = streams
        .keep("dead", &[taken[0].receipt], lease)
        .await
        .expect("keep");
    assert!(kept.is_empty(), "the dead consumer lost its lease");
    let done = |r: &herald::ports::Received| {
        (
            r.receipt,
            Settlement::Done {
                progress: herald::Progress::new(),
            },
        )
    };
    streams
        .settle("dead", taken.iter().map(done).collect())
        .await
        .expect("settle");
    assert_eq!(
        streams.unfinished().await.expect("unfinished"),
        3,
        "stale settlement ignored"
    );
    streams
        .settle("alive", taken_over.iter().map(done).collect())
        .await
        .expect("settle");
    assert_eq!(streams.unfinished().await.expect("unfinished"), 0);
}
