//! A killed connection (`CLIENT KILL TYPE normal`) is survived. In its own test binary, so that
//! it kills no other test's connections (cargo runs test binaries one after the other).

use herald::outbox::Relay;
use herald::ports::{MessageSink, OutgoingMessage};
use herald::{async_handler, Event, Herald, MessageId, Meta, PublishOptions, State};
use herald_transport_redis::RedisStreams;
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
async fn a_killed_connection_is_survived_and_nothing_is_lost() {
    const MESSAGES: u32 = 40;
    let streams = streams("killed").await;
    let seen = Seen::default();
    let herald = herald(&seen);
    // A short lease: a settlement lost with the connection is redelivered soon.
    let relay = Relay::builder(Arc::new(streams.clone()), &herald)
        .poll_interval(Duration::from_millis(20))
        .lease(Duration::from_secs(1))
        .start();
    for n in 0..MESSAGES / 2 {
        publish(&streams, n, PublishOptions::new()).await;
    }
    let mut killer = raw().await;
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut killer)
        .await
        .expect("client kill");
    assert!(
        killed >= 2,
        "the transport's connections were killed ({killed})"
    );
    // The sink's next publish may fail once on the dead connection; a relay would retry it.
    let mut n = MESSAGES / 2;
    while n < MESSAGES {
        let parcel = Parcel {
            n,
            text: String::new(),
        };
        let message = OutgoingMessage::new(&parcel, PublishOptions::new()).expect("serialize");
        if streams.publish(vec![message]).await.is_ok() {
            n += 1;
        }
    }
    eventually("every message handled", async || {
        seen.count() == MESSAGES as usize
    })
    .await;
    drained(&streams).await;
    let stats = relay.stop().await;
    assert_eq!(stats.lost, 0, "{stats:?}");
    // At least once: an ack lost with the killed connection is a redelivery (the inbox removes
    // such duplicates), never a loss.
    let duplicates = seen.runs() - MESSAGES;
    assert!(duplicates <= MESSAGES / 2, "{duplicates} duplicates");
}
