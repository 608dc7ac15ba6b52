//! The real nats-server is stopped (`pkill -f nats-server`) and started again under load: the
//! consumer goes on and nothing is lost. In its own test binary, so that no other test of this
//! crate runs while the server is down (cargo runs test binaries one after the other).

use herald::outbox::Relay;
use herald::ports::{MessageSink, OutgoingMessage};
use herald::{async_handler, Event, Herald, MessageId, Meta, PublishOptions, State};
use herald_transport_nats::NatsJetStream;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The machine's start command for the server (the one `.ci/run` uses).
const START: &str = "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log";

fn url() -> String {
    std::env::var("HERALD_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

#[derive(Debug, Clone, Default)]
struct Seen(Arc<Mutex<HashMap<MessageId, u32>>>);

impl Seen {
    fn count(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "nats_restart.parcel")]
struct Parcel {
    n: u32,
}

#[async_handler]
async fn receive_parcel(_parcel: Parcel, meta: Meta, State(seen): State<Seen>) {
    *seen
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(meta.id())
        .or_default() += 1;
}

fn port_open() -> bool {
    std::net::TcpStream::connect(("127.0.0.1", 4222)).is_ok()
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes until JetStream confirms (the client reconnects in the background).
async fn publish(nats: &NatsJetStream, n: u32) -> MessageId {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let message =
            OutgoingMessage::new(&Parcel { n }, PublishOptions::new()).expect("serialize");
        let id = message.envelope.id;
        if let Ok(confirmations) = nats.publish(vec![message]).await {
            if confirmations[0].is_confirmed() {
                return id;
            }
        }
        assert!(Instant::now() < deadline, "publishing never resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_survives_a_server_restart_and_nothing_is_lost() {
    const MESSAGES: u32 = 40;
    let stream = format!("herald-test-restart-{}", uuid::Uuid::new_v4().simple());
    let nats = NatsJetStream::builder(url(), stream, "relay")
        .ack_wait(Duration::from_secs(2))
        .publish_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("NATS with JetStream is required for these tests: {e}"));
    let seen = Seen::default();
    let herald = Herald::builder()
        .handlers_under(module_path!())
        .state(seen.clone())
        .build()
        .expect("herald builds");
    let relay = Relay::builder(Arc::new(nats.clone()), &herald)
        .poll_interval(Duration::from_millis(20))
        .lease(Duration::from_secs(2))
        .start();
    let mut ids = Vec::new();
    for n in 0..MESSAGES / 2 {
        ids.push(publish(&nats, n).await);
    }
    let stopped = Command::new("pkill")
        .args(["-f", "nats-server"])
        .status()
        .expect("run pkill");
    assert!(stopped.success(), "nats-server was running and was stopped");
    until("the server stopped", || !port_open()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Command::new("sh")
        .args(["-c", START])
        .status()
        .expect("run the start command");
    assert!(started.success(), "nats-server started again");
    until("the server is back", port_open).await;
    for n in MESSAGES / 2..MESSAGES {
        ids.push(publish(&nats, n).await);
    }
    until("every message handled", || {
        seen.count() == MESSAGES as usize
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while nats.unfinished().await.map_or(true, |n| n > 0) {
        assert!(Instant::now() < deadline, "the consumer never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = relay.stop().await;
    assert_eq!(stats.lost, 0, "{stats:?}");
    let handled = seen.0.lock().expect("lock").clone();
    for id in &ids {
        assert!(handled.contains_key(id), "message {id} was lost");
    }
    nats.delete_stream().await.expect("delete the stream");
}
