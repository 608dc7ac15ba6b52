//! A connection closed by the broker (`rabbitmqctl close_all_connections`) is survived. In its own
//! test binary, so that it closes no other test's connections (cargo runs test binaries one after
//! the other).

mod common;

use common::*;
use herald::outbox::Relay;
use herald::ports::{MessageSink, MessageSource, OutgoingMessage};
use herald::PublishOptions;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_is_survived_and_nothing_is_lost() {
    const MESSAGES: u32 = 40;
    let rabbit = rabbit("reconnect").await;
    let seen = Seen::default();
    let herald = herald(&seen);
    for n in 0..MESSAGES / 2 {
        publish(&rabbit, parcel(n), PublishOptions::new()).await;
    }
    // Five deliveries held, unacked, when the connection goes.
    let mut taken = Vec::new();
    while taken.len() < 5 {
        taken.extend(
            rabbit
                .receive("before", 5 - taken.len(), Duration::from_secs(30))
                .await
                .expect("receive"),
        );
    }
    let receipts: Vec<_> = taken.iter().map(|r| r.receipt).collect();
    let closed = Command::new("rabbitmqctl")
        .args(["close_all_connections", "test"])
        .output()
        .unwrap_or_else(|e| panic!("rabbitmqctl is required for this test: {e}"));
    assert!(
        closed.status.success(),
        "rabbitmqctl close_all_connections failed: {}",
        String::from_utf8_lossy(&closed.stderr)
    );
    eventually("the closed connection noticed", async || {
        rabbit
            .keep("before", &receipts, Duration::from_secs(30))
            .await
            .expect("keep")
            .is_empty()
    })
    .await;
    let relay = Relay::builder(Arc::new(rabbit.clone()), &herald)
        .poll_interval(Duration::from_millis(20))
        .start();
    // A publish on the closed connection fails (not confirmed); a relay would publish it again.
    let mut n = MESSAGES / 2;
    let mut failed = 0;
    while n < MESSAGES {
        let message = OutgoingMessage::new(&parcel(n), PublishOptions::new()).expect("serialize");
        match rabbit.publish(vec![message]).await {
            Ok(confirmations) if confirmations[0].is_confirmed() => n += 1,
            _ => {
                failed += 1;
                assert!(failed < 100, "publishing never resumed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    eventually("every message handled", async || {
        seen.count() == MESSAGES as usize
    })
    .await;
    drained(&rabbit).await;
    assert!(rabbit.reconnects() >= 1, "a new connection was opened");
    for received in &taken {
        let id: herald::MessageId = received.message.message_id.parse().expect("an id");
        assert_eq!(
            seen.0.lock().expect("lock")[&id].2,
            1,
            "a held delivery came back once"
        );
    }
    let stats = relay.stop().await;
    // At least once: an ack lost with the closed connection is a redelivery (the inbox removes
    // such duplicates), never a loss.
    let duplicates = seen.runs() - MESSAGES;
    println!(
        "{failed} publishes failed on the closed connection, {duplicates} duplicates, {stats:?}"
    );
    assert!(duplicates <= MESSAGES / 2, "{duplicates} duplicates");
    rabbit.delete_queues().await.expect("delete");
}
