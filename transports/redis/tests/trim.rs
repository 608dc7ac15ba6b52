//! Trimming against the real server: entries every group finished are deleted; an entry pending
//! in a group, not yet read by a group, or waiting in the delayed set never is.

use herald::outbox::Relay;
use herald::ports::{MessageSource, Received, Settlement};
use herald::{MessageId, PublishOptions};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

mod support;
use support::*;

const LEASE: Duration = Duration::from_secs(30);

fn done(received: &Received) -> (herald::ports::Receipt, Settlement) {
    (
        received.receipt,
        Settlement::Done {
            progress: herald::Progress::new(),
        },
    )
}

/// Publishes `count` parcels; returns their stream entry ids, oldest first.
async fn publish_entries(
    streams: &herald_transport_redis::RedisStreams,
    count: u32,
) -> Vec<String> {
    for n in 0..count {
        publish(streams, n, PublishOptions::new()).await;
    }
    let ids = entry_ids(streams.stream()).await;
    assert_eq!(ids.len(), count as usize);
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_the_relay_finished_are_trimmed() {
    let streams = connect(builder("trim-finished").trim_every(Duration::ZERO)).await;
    let seen = Seen::default();
    let herald = herald(&seen);
    let relay = Relay::builder(Arc::new(streams.clone()), &herald)
        .poll_interval(Duration::from_millis(20))
        .start();
    for n in 0..10 {
        publish(&streams, n, PublishOptions::new()).await;
    }
    eventually("every message handled", async || seen.count() == 10).await;
    drained(&streams).await;
    eventually("the stream trimmed to nothing", async || {
        entry_ids(streams.stream()).await.is_empty()
    })
    .await;
    let stats = relay.stop().await;
    assert_eq!(stats.processed, 10, "{stats:?}");
    remove(&streams).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_or_released_entry_survives_trimming() {
    let streams = connect(builder("trim-leased").no_trimming()).await;
    let ids = publish_entries(&streams, 4).await;
    let taken = streams.receive("a", 10, LEASE).await.expect("receive");
    assert_eq!(taken.len(), 4);
    // 0 done, 1 released, 2 done, 3 still leased.
    streams
        .settle(
            "a",
            vec![
                done(&taken[0]),
                (taken[1].receipt, Settlement::Release),
                done(&taken[2]),
            ],
        )
        .await
        .expect("settle");
    assert_eq!(streams.trim().await.expect("trim"), 1);
    assert_eq!(entry_ids(streams.stream()).await, ids[1..]);
    // Nothing more goes while 1 is pending, even though 2 is finished.
    assert_eq!(streams.trim().await.expect("trim"), 0);

    let again = streams.receive("b", 10, LEASE).await.expect("receive");
    assert_eq!(again.len(), 1, "the released entry is delivered again");
    assert_eq!(again[0].message, taken[1].message);
    streams
        .settle("b", vec![done(&again[0])])
        .await
        .expect("settle");
    assert_eq!(streams.trim().await.expect("trim"), 2);
    assert_eq!(entry_ids(streams.stream()).await, ids[3..]);

    streams
        .settle("a", vec![done(&taken[3])])
        .await
        .expect("settle");
    assert_eq!(streams.trim().await.expect("trim"), 1);
    assert!(entry_ids(streams.stream()).await.is_empty());
    assert_eq!(streams.unfinished().await.expect("unfinished"), 0);
    remove(&streams).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_another_group_has_not_finished_survives_trimming() {
    let streams = connect(builder("trim-groups").no_trimming()).await;
    let mut conn = raw().await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(streams.stream())
        .arg("audit")
        .arg("0")
        .query_async(&mut conn)
        .await
        .expect("create the second group");
    let ids = publish_entries(&streams, 3).await;
    let taken = streams.receive("a", 10, LEASE).await.expect("receive");
    streams
        .settle("a", taken.iter().map(done).collect())
        .await
        .expect("settle");
    assert_eq!(
        streams.trim().await.expect("trim"),
        0,
        "the audit group has read nothing"
    );

    // The audit group reads the first entry but has not acked it yet.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("audit")
        .arg("auditor")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(streams.stream())
        .arg(">")
        .query_async(&mut conn)
        .await
        .expect("xreadgroup");
    assert_eq!(streams.trim().await.expect("trim"), 0, "pending in audit");
    let _: u64 = redis::cmd("XACK")
        .arg(streams.stream())
        .arg("audit")
        .arg(&ids[0])
        .query_async(&mut conn)
        .await
        .expect("xack");
    assert_eq!(streams.trim().await.expect("trim"), 1);
    assert_eq!(
        entry_ids(streams.stream()).await,
        ids[1..],
        "the entries audit has not read are kept"
    );
    remove(&streams).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_waiting_in_the_delayed_set_survives_trimming() {
    let streams = connect(builder("trim-delayed").no_trimming()).await;
    publish_entries(&streams, 1).await;
    let taken = streams.receive("a", 10, LEASE).await.expect("receive");
    let retry = Settlement::Retry {
        progress: herald::Progress::new(),
        delay: Duration::from_millis(200),
        error: "not yet".to_owned(),
        replacement_id: None,
    };
    streams
        .settle("a", vec![(taken[0].receipt, retry)])
        .await
        .expect("settle");
    assert_eq!(
        streams.trim().await.expect("trim"),
        1,
        "the original is acked"
    );
    assert_eq!(streams.unfinished().await.expect("unfinished"), 1);
    let mut retried = Vec::new();
    eventually("the retry is due", async || {
        retried = streams.receive("a", 10, LEASE).await.expect("receive");
        !retried.is_empty()
    })
    .await;
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].message.message_id, taken[0].message.message_id);
    assert_eq!(retried[0].message.attempt, 2);
    streams
        .settle("a", vec![done(&retried[0])])
        .await
        .expect("settle");
    assert_eq!(streams.trim().await.expect("trim"), 1);
    assert_eq!(streams.unfinished().await.expect("unfinished"), 0);
    remove(&streams).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_sweep_keeps_young_finished_entries() {
    let streams = connect(builder("trim-sweep").no_trimming()).await;
    publish_entries(&streams, 2).await;
    let taken = streams.receive("a", 10, LEASE).await.expect("receive");
    streams
        .settle("a", taken.iter().map(done).collect())
        .await
        .expect("settle");
    let kept = streams
        .sweep(Duration::from_secs(3600), 100)
        .await
        .expect("sweep");
    assert_eq!(kept, 0, "younger than the retention period");
    assert_eq!(entry_ids(streams.stream()).await.len(), 2);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let swept = streams
        .sweep(Duration::from_millis(10), 100)
        .await
        .expect("sweep");
    assert_eq!(swept, 2);
    remove(&streams).await;
}

/// Two groups, each with relays in two "processes" (two connections), all trimming after every
/// settlement while messages keep coming: every published message is handled by both groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_while_trimming_under_load() {
    const MESSAGES: u32 = 300;
    let first = connect(builder("trim-load").trim_every(Duration::ZERO)).await;
    let stream = first.stream().to_owned();
    let open = |group: &'static str| {
        let stream = stream.clone();
        async move {
            connect(
                herald_transport_redis::RedisStreams::builder(url(), stream, group)
                    .trim_every(Duration::ZERO),
            )
            .await
        }
    };
    let (second, audit_a, audit_b) = (
        open("group").await,
        open("audit").await,
        open("audit").await,
    );
    let (seen, seen_audit) = (Seen::default(), Seen::default());
    let (herald_main, herald_audit) = (herald(&seen), herald(&seen_audit));
    let relays = [
        (first.clone(), &herald_main),
        (second, &herald_main),
        (audit_a.clone(), &herald_audit),
        (audit_b, &herald_audit),
    ]
    .into_iter()
    .map(|(source, herald)| {
        Relay::builder(Arc::new(source), herald)
            .poll_interval(Duration::from_millis(10))
            .batch_size(7)
            .start()
    })
    .collect::<Vec<_>>();

    let mut published: HashSet<MessageId> = HashSet::new();
    for n in 0..MESSAGES {
        published.insert(publish(&first, n, PublishOptions::new()).await);
        if n % 25 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    eventually("both groups handled every message", async || {
        seen.count() == MESSAGES as usize && seen_audit.count() == MESSAGES as usize
    })
    .await;
    drained(&first).await;
    drained(&audit_a).await;
    for relay in relays {
        let stats = relay.stop().await;
        assert_eq!(stats.lost, 0, "{stats:?}");
    }
    for handled in [&seen, &seen_audit] {
        let ids: HashSet<MessageId> = handled.0.lock().expect("lock").keys().copied().collect();
        assert_eq!(ids, published);
        assert_eq!(
            handled.runs(),
            MESSAGES,
            "each message handled once per group"
        );
    }
    first.trim().await.expect("trim");
    assert!(
        entry_ids(&stream).await.is_empty(),
        "every entry finished by both groups is trimmed"
    );
    remove(&first).await;
}
