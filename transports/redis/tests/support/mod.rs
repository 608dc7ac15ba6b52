//! What the Redis transport's test binaries share: the server's address, a fresh stream per test, a
//! raw connection, and a Herald whose handler records every run of a `Parcel`.
// Each test binary uses part of it.
#![allow(dead_code)]

use herald::ports::{MessageSink, OutgoingMessage};
use herald::{async_handler, Event, Herald, MessageId, Meta, PublishOptions, State};
use herald_transport_redis::{RedisStreams, RedisStreamsBuilder};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) fn url() -> String {
    std::env::var("HERALD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub(crate) async fn streams(test: &str) -> RedisStreams {
    connect(builder(test)).await
}

/// A fresh stream's builder, read by group `group`.
pub(crate) fn builder(test: &str) -> RedisStreamsBuilder {
    let key = format!("herald-test:{test}:{}", uuid::Uuid::new_v4());
    RedisStreams::builder(url(), key, "group")
}

pub(crate) async fn connect(builder: RedisStreamsBuilder) -> RedisStreams {
    builder
        .connect()
        .await
        .unwrap_or_else(|e| panic!("Redis is required for these tests: {e}"))
}

/// The ids of the entries in the stream, oldest first.
pub(crate) async fn entry_ids(stream: &str) -> Vec<String> {
    let range: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut raw().await)
        .await
        .expect("xrange");
    range.ids.into_iter().map(|entry| entry.id).collect()
}

/// Deletes a test's keys (the stream and its delayed set).
pub(crate) async fn remove(streams: &RedisStreams) {
    let _: () = redis::cmd("DEL")
        .arg(streams.stream())
        .arg(streams.delayed_key())
        .query_async(&mut raw().await)
        .await
        .expect("del");
}

pub(crate) async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(url())
        .expect("a valid HERALD_TEST_REDIS_URL")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis is required for these tests: {e}"))
}

/// Per message id: the payload and envelope the handler got, and how often it ran.
pub(crate) type Runs = HashMap<MessageId, (Parcel, herald::Envelope, u32)>;

#[derive(Debug, Clone, Default)]
pub(crate) struct Seen(pub(crate) Arc<Mutex<Runs>>);

impl Seen {
    pub(crate) fn count(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
    pub(crate) fn runs(&self) -> u32 {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.values().map(|(_, _, n)| *n).sum()
    }
}

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "redis_test.parcel")]
pub(crate) struct Parcel {
    pub(crate) n: u32,
    pub(crate) text: String,
}

#[async_handler]
pub(crate) async fn receive_parcel(parcel: Parcel, meta: Meta, State(seen): State<Seen>) {
    let mut seen = seen.0.lock().unwrap_or_else(|e| e.into_inner());
    let entry = seen
        .entry(meta.id())
        .or_insert_with(|| (parcel, meta.envelope().clone(), 0));
    entry.2 += 1;
}

pub(crate) fn herald(seen: &Seen) -> Herald {
    Herald::builder()
        .handlers_under(module_path!())
        .state(seen.clone())
        .build()
        .expect("herald builds")
}

pub(crate) async fn publish(streams: &RedisStreams, n: u32, options: PublishOptions) -> MessageId {
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

pub(crate) async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn drained(streams: &RedisStreams) {
    eventually("the stream drained", async || {
        streams.unfinished().await.expect("unfinished") == 0
    })
    .await;
}
