//! The Redis Streams transport against the real server at `HERALD_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`): each test uses its own stream key, and fails when Redis is missing.

use herald::outbox::Relay;
use herald::ports::{MessageSource, Settlement};
use herald::{DeadLetterReason, MessageId, PublishOptions};
use herald_transport_redis::{ENVELOPE_FIELD, ID_FIELD};
use std::sync::Arc;
use std::time::Duration;

mod support;
use support::*;

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
    assert_eq!(letters[0].handler, "streams::support::receive_parcel");
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
