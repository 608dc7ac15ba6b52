//! Waking against the real server: an idle relay with a long poll interval handles a new entry, or
//! a retry that comes due, long before its poll interval; waiting claims nothing, so several
//! relays on one source still handle each message once.

use herald::outbox::Relay;
use herald::ports::{MessageSource, Settlement};
use herald::PublishOptions;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;
use support::*;

/// Far longer than any bound below: a message handled within the bound was woken for, not polled.
const POLL: Duration = Duration::from_secs(5);
/// A loose bound for "promptly" (typically a few ms), well below `POLL` so that a slow shared
/// machine does not make it flaky.
const PROMPTLY: Duration = Duration::from_millis(1_000);
const LEASE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_relay_wakes_for_a_new_entry() {
    let streams = streams("wake-new").await;
    let seen = Seen::default();
    let herald = herald(&seen);
    let relay = Relay::builder(Arc::new(streams.clone()), &herald)
        .poll_interval(POLL)
        .start();
    let mut slowest = Duration::ZERO;
    for n in 0..3 {
        // Idle: the relay has found nothing and waits.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let published = Instant::now();
        publish(&streams, n, PublishOptions::new()).await;
        eventually("handled", async || seen.count() == n as usize + 1).await;
        slowest = slowest.max(published.elapsed());
    }
    eprintln!("slowest wake-up to handled: {slowest:?}");
    assert!(slowest < PROMPTLY, "took {slowest:?} with a {POLL:?} poll");
    let stats = relay.stop().await;
    assert_eq!((stats.processed, stats.errors), (3, 0), "{stats:?}");
    remove(&streams).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_relays_on_one_source_each_handle_a_message_once() {
    const MESSAGES: u32 = 40;
    let streams = streams("wake-several").await;
    // Another process on the same stream and group.
    let other = connect(herald_transport_redis::RedisStreams::builder(
        url(),
        streams.stream(),
        "group",
    ))
    .await;
    let seen = Seen::default();
    let herald = herald(&seen);
    let relays: Vec<Relay> = [streams.clone(), streams.clone(), streams.clone(), other]
        .into_iter()
        .map(|source| {
            Relay::builder(Arc::new(source), &herald)
                .poll_interval(POLL)
                .start()
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    for n in 0..MESSAGES {
        publish(&streams, n, PublishOptions::new()).await;
    }
    eventually("every message handled", async || {
        seen.count() == MESSAGES as usize
    })
    .await;
    let elapsed = started.elapsed();
    eprintln!("{MESSAGES} messages handled by 4 relays in {elapsed:?}");
    assert!(elapsed < POLL / 2, "took {elapsed:?} with a {POLL:?} poll");
    drained(&streams).await;
    let mut processed = 0;
    for relay in relays {
        let stats = relay.stop().await;
        assert_eq!(stats.lost, 0, "{stats:?}");
        processed += stats.processed;
    }
    assert_eq!(processed, u64::from(MESSAGES));
    assert_eq!(seen.runs(), MESSAGES, "each message handled once");
    remove(&streams).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_when_a_retry_comes_due() {
    let streams = streams("wake-due").await;
    publish(&streams, 1, PublishOptions::new()).await;
    let taken = streams.receive("a", 10, LEASE).await.expect("receive");
    let delay = Duration::from_millis(400);
    let retry = Settlement::Retry {
        progress: herald::Progress::new(),
        delay,
        error: "not yet".to_owned(),
        replacement_id: None,
    };
    let settled = Instant::now();
    streams
        .settle("a", vec![(taken[0].receipt, retry)])
        .await
        .expect("settle");
    assert!(streams
        .receive("a", 10, LEASE)
        .await
        .expect("receive")
        .is_empty());
    streams.wait(POLL).await;
    let waited = settled.elapsed();
    eprintln!("a retry due in {delay:?} woke the wait after {waited:?}");
    assert!(
        waited >= delay - Duration::from_millis(50) && waited < delay + PROMPTLY,
        "woke after {waited:?} for a retry due in {delay:?}"
    );
    let due = streams.receive("a", 10, LEASE).await.expect("receive");
    assert_eq!(due.len(), 1, "the retry is delivered");
    assert_eq!(due[0].message.attempt, 2);
    remove(&streams).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_blocks_while_nothing_arrives_and_returns_for_an_unread_entry() {
    let streams = streams("wake-idle").await;
    let timeout = Duration::from_millis(400);
    let started = Instant::now();
    streams.wait(timeout).await;
    let idle = started.elapsed();
    assert!(
        idle >= timeout - Duration::from_millis(20) && idle < timeout + PROMPTLY,
        "an idle wait took {idle:?} of {timeout:?}"
    );

    // An entry that arrived before the wait started (after the last receive) is not missed.
    publish(&streams, 1, PublishOptions::new()).await;
    let started = Instant::now();
    streams.wait(POLL).await;
    assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());

    // Waiting claimed nothing: the entry is still there for `receive`, and still unread.
    assert_eq!(streams.unfinished().await.expect("unfinished"), 1);
    let taken = streams.receive("a", 10, LEASE).await.expect("receive");
    assert_eq!(taken.len(), 1);

    // Once read, it no longer wakes a wait: the next one blocks again.
    let started = Instant::now();
    streams.wait(timeout).await;
    assert!(
        started.elapsed() >= timeout - Duration::from_millis(20),
        "a read entry woke the wait after {:?}",
        started.elapsed()
    );
    remove(&streams).await;
}
