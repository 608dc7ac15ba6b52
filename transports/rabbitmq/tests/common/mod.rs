//! What the RabbitMQ tests share: the broker's URL, a queue per test, a raw connection, and a
//! handler that records what it saw.
#![allow(dead_code, unreachable_pub)]

use herald::ports::{MessageSink, OutgoingMessage};
use herald::{async_handler, Event, Herald, MessageId, Meta, PublishOptions, State};
use herald_transport_rabbitmq::RabbitMq;
use lapin::{Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn url() -> String {
    std::env::var("HERALD_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

pub async fn rabbit(test: &str) -> RabbitMq {
    let queue = format!("herald-test.{test}.{}", uuid::Uuid::new_v4());
    RabbitMq::builder(url(), queue)
        .prefetch(16)
        // A backstop: a failed test leaves no queue behind for long.
        .expires_after(Duration::from_secs(60))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ is required for these tests: {e}"))
}

pub async fn raw() -> Connection {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    Connection::connect(&url(), properties)
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ is required for these tests: {e}"))
}

/// Per message id: the payload and envelope the handler got, how often it succeeded, and when.
type Runs = HashMap<MessageId, (Parcel, herald::Envelope, u32, Instant)>;

/// The retry delay of `receive_parcel`.
pub const BACKOFF: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, Default)]
pub struct Seen(
    pub Arc<Mutex<Runs>>,
    pub Arc<Mutex<Vec<(MessageId, u32, Instant)>>>,
);

impl Seen {
    pub fn count(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
    pub fn runs(&self) -> u32 {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.values().map(|(_, _, n, _)| *n).sum()
    }
}

/// Fails its first attempt when `fail_first` is set.
#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "rabbitmq_test.parcel")]
pub struct Parcel {
    pub n: u32,
    pub text: String,
    pub fail_first: bool,
}

#[async_handler(retry(max_attempts = 3, backoff = fixed(1500ms)))]
async fn receive_parcel(
    parcel: Parcel,
    meta: Meta,
    State(seen): State<Seen>,
) -> Result<(), herald::HandlerError> {
    seen.1.lock().unwrap_or_else(|e| e.into_inner()).push((
        meta.id(),
        meta.attempt(),
        Instant::now(),
    ));
    if parcel.fail_first && meta.attempt() == 1 {
        return Err(herald::HandlerError::msg("the first attempt fails"));
    }
    let mut seen = seen.0.lock().unwrap_or_else(|e| e.into_inner());
    let entry = seen
        .entry(meta.id())
        .or_insert_with(|| (parcel, meta.envelope().clone(), 0, Instant::now()));
    entry.2 += 1;
    Ok(())
}

pub fn herald(seen: &Seen) -> Herald {
    Herald::builder()
        .handlers_under(module_path!())
        .state(seen.clone())
        .build()
        .expect("herald builds")
}

pub fn parcel(n: u32) -> Parcel {
    Parcel {
        n,
        text: format!("parcel {n}: ü \u{0} ✓"),
        fail_first: false,
    }
}

pub async fn publish(rabbit: &RabbitMq, parcel: Parcel, options: PublishOptions) -> MessageId {
    let message = OutgoingMessage::new(&parcel, options).expect("serialize");
    let id = message.envelope.id;
    let confirmations = rabbit.publish(vec![message]).await.expect("publish");
    assert!(confirmations[0].is_confirmed(), "{confirmations:?}");
    id
}

pub async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn drained(rabbit: &RabbitMq) {
    eventually("the queue drained", async || {
        rabbit.unfinished().await.expect("unfinished") == 0
    })
    .await;
}
