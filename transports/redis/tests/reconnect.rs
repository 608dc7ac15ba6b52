//! A killed connection (`CLIENT KILL TYPE normal`) is survived. In its own test binary, so that
//! it kills no other test's connections (cargo runs test binaries one after the other).

use herald::outbox::Relay;
use herald::ports::{MessageSink, OutgoingMessage};
use herald::PublishOptions;
use std::sync::Arc;
use std::time::Duration;

mod support;
use support::*;

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
