//! The NATS JetStream transport against the real server at `HERALD_TEST_NATS_URL` (default
//! `nats://127.0.0.1:4222`): each test uses its own stream (named with a uuid) and deletes it at
//! the end; a missing server fails the tests.

use herald::outbox::Relay;
use herald::ports::{MessageSink, OutgoingMessage};
use herald::{
    async_handler, DeadLetterReason, Event, HandlerError, Herald, MessageId, Meta, PublishOptions,
    State,
};
use herald_transport_nats::{async_nats, NatsJetStream, ID_HEADER, MSG_ID_HEADER};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn url() -> String {
    std::env::var("HERALD_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

async fn nats(test: &str) -> NatsJetStream {
    let stream = format!("herald-test-{test}-{}", uuid::Uuid::new_v4().simple());
    NatsJetStream::builder(url(), stream, "relay")
        .ack_wait(Duration::from_secs(5))
        .fetch_wait(Duration::from_millis(100))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("NATS with JetStream is required for these tests: {e}"))
}

/// Per message id: the payload and envelope the handler got, and each attempt with its time.
type Runs = HashMap<MessageId, (Parcel, herald::Envelope, Vec<(u32, Instant)>)>;

#[derive(Debug, Clone, Default)]
struct Seen(Arc<Mutex<Runs>>);

impl Seen {
    fn count(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
    fn runs(&self) -> usize {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.values().map(|(_, _, runs)| runs.len()).sum()
    }
}

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "nats_test.parcel")]
struct Parcel {
    n: u32,
    text: String,
    /// How many first attempts fail (retried after the handler's backoff).
    fail_times: u32,
}

const BACKOFF: Duration = Duration::from_millis(700);

#[async_handler(retry(max_attempts = 3, backoff = fixed(700ms)))]
async fn receive_parcel(
    parcel: Parcel,
    meta: Meta,
    State(seen): State<Seen>,
) -> Result<(), HandlerError> {
    let fail = meta.attempt() <= parcel.fail_times;
    let mut seen = seen.0.lock().unwrap_or_else(|e| e.into_inner());
    let entry = seen
        .entry(meta.id())
        .or_insert_with(|| (parcel, meta.envelope().clone(), Vec::new()));
    entry.2.push((meta.attempt(), Instant::now()));
    if fail {
        return Err(HandlerError::msg("this attempt fails on purpose"));
    }
    Ok(())
}

fn herald(seen: &Seen) -> Herald {
    Herald::builder()
        .handlers_under(module_path!())
        .state(seen.clone())
        .build()
        .expect("herald builds")
}

fn parcel(n: u32, fail_times: u32, options: PublishOptions) -> OutgoingMessage {
    let parcel = Parcel {
        n,
        text: format!("parcel {n}: ü \u{0} ✓"),
        fail_times,
    };
    OutgoingMessage::new(&parcel, options).expect("serialize")
}

async fn publish(nats: &NatsJetStream, message: OutgoingMessage) -> MessageId {
    let id = message.envelope.id;
    let confirmations = nats.publish(vec![message]).await.expect("publish");
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

async fn drained(nats: &NatsJetStream) {
    eventually("the consumer drained", async || {
        nats.unfinished().await.expect("unfinished") == 0
    })
    .await;
}

async fn stored(nats: &NatsJetStream) -> u64 {
    let mut stream = nats
        .context()
        .get_stream(nats.stream())
        .await
        .expect("stream");
    stream.info().await.expect("stream info").state.messages
}

fn relay(nats: &NatsJetStream, herald: &Herald) -> herald::outbox::Relay {
    Relay::builder(Arc::new(nats.clone()), herald)
        .poll_interval(Duration::from_millis(20))
        .lease(Duration::from_secs(5))
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_and_headers_arrive_intact() {
    let nats = nats("intact").await;
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
    let id = publish(&nats, parcel(7, 0, options)).await;
    let relay = relay(&nats, &herald);
    eventually("handled", async || seen.count() == 1).await;
    drained(&nats).await;
    let stats = relay.stop().await;
    assert_eq!(stats.processed, 1);
    let (parcel, envelope, runs) = seen.0.lock().expect("lock")[&id].clone();
    assert_eq!(
        (runs.len(), seen.runs()),
        (1, 1),
        "handled once, nothing else"
    );
    assert_eq!(parcel.text, "parcel 7: ü \u{0} ✓");
    assert_eq!(envelope.id, id);
    assert_eq!(envelope.idempotency_key.as_deref(), Some("idem-1"));
    assert_eq!(envelope.headers.correlation_id, Some(correlation));
    assert_eq!(envelope.headers.extra["tenant"], "acme ✓");
    assert_eq!(
        envelope.headers.extra["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    nats.delete_stream().await.expect("delete the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_published_twice_is_stored_once() {
    let nats = nats("dedupe").await;
    let message = parcel(1, 0, PublishOptions::new());
    let id = message.envelope.id;
    let confirmations = nats
        .publish(vec![message.clone(), message.clone()])
        .await
        .expect("publish");
    assert!(
        confirmations.iter().all(|c| c.is_confirmed()),
        "{confirmations:?}"
    );
    publish(&nats, message).await;
    assert_eq!(
        stored(&nats).await,
        1,
        "Nats-Msg-Id de-duplicated the copies"
    );
    let other = publish(&nats, parcel(2, 0, PublishOptions::new())).await;
    assert_eq!(stored(&nats).await, 2, "another id is another message");
    let seen = Seen::default();
    let herald = herald(&seen);
    let relay = relay(&nats, &herald);
    eventually("both handled", async || seen.count() == 2).await;
    drained(&nats).await;
    relay.stop().await;
    assert_eq!(seen.runs(), 2, "each handled once");
    assert!(seen.0.lock().expect("lock").contains_key(&id));
    assert!(seen.0.lock().expect("lock").contains_key(&other));
    nats.delete_stream().await.expect("delete the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_is_dead_lettered_and_acked() {
    let nats = nats("malformed").await;
    let seen = Seen::default();
    let herald = herald(&seen);
    let mut raw = async_nats::HeaderMap::new();
    raw.insert(MSG_ID_HEADER, "not-an-id");
    raw.insert(ID_HEADER, "not-an-id");
    raw.insert("Herald-Name", "nats_test.parcel");
    let ack = nats
        .context()
        .publish_with_headers(
            nats.subject().to_owned(),
            raw,
            b"{\"herald\":1,\0 truncated".to_vec().into(),
        )
        .await
        .expect("publish raw");
    ack.await.expect("PubAck");
    let good = publish(&nats, parcel(1, 0, PublishOptions::new())).await;
    let relay = relay(&nats, &herald);
    eventually("both settled", async || seen.count() == 1).await;
    drained(&nats).await;
    let stats = relay.stop().await;
    assert_eq!((stats.processed, stats.failed), (1, 1), "{stats:?}");
    assert!(seen.0.lock().expect("lock").contains_key(&good));
    let letters = herald.dead_letters().list(10).await.expect("list");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].reason, DeadLetterReason::Malformed);
    assert_eq!(letters[0].handler, "jetstream::receive_parcel");
    assert_eq!(
        letters[0].envelope.headers.extra["herald-id-header"],
        "not-an-id"
    );
    assert_eq!(nats.unfinished().await.expect("unfinished"), 0, "acked");
    nats.delete_stream().await.expect("delete the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_redelivered_after_its_delay_not_before() {
    let nats = nats("retry").await;
    let seen = Seen::default();
    let herald = herald(&seen);
    let id = publish(&nats, parcel(1, 2, PublishOptions::new())).await;
    let relay = relay(&nats, &herald);
    eventually("the third attempt ran", async || seen.runs() == 3).await;
    drained(&nats).await;
    let stats = relay.stop().await;
    assert_eq!(stats.processed, 1, "{stats:?}");
    let runs = seen.0.lock().expect("lock")[&id].2.clone();
    let attempts: Vec<u32> = runs.iter().map(|(n, _)| *n).collect();
    assert_eq!(attempts, vec![1, 2, 3], "the attempt counts up");
    for pair in runs.windows(2) {
        let waited = pair[1].1 - pair[0].1;
        assert!(
            waited >= BACKOFF,
            "redelivered after {waited:?}, before the {BACKOFF:?} delay"
        );
    }
    nats.delete_stream().await.expect("delete the stream");
}
