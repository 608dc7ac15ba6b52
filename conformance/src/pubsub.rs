//! The pub/sub suite: Watermill's universal pub/sub tests for a transport that is both a
//! [`MessageSink`] and a [`MessageSource`] (a broker), with a real [`Herald`] and relays as the
//! subscribers. Run it with [`pubsub_suite!`](crate::pubsub_suite), and the broker-restart case
//! with [`restart_suite!`](crate::restart_suite) in a test binary of its own.
//!
//! A case that needs a capability the transport does not declare (per-key order, persistence,
//! several consumer groups, a broker to restart) is reported as **not applicable**: it checks that
//! the capability is indeed not declared, prints `not applicable: …` with the reason, and checks
//! no more. Every other case ends with the same accounting: an [`Accounting`] of every id the sink
//! confirmed and every id a handler took effect for (nothing lost, nothing unexpected, each effect
//! once: the handler has the `dedupe` option, and the redeliveries it absorbed are reported), and
//! the source suite's checks (every relay stops with no lease lost, the transport holds nothing
//! unfinished, the ledger balances).

use crate::accounting::{Accounting, Report};
use crate::source::BoxError;
use herald::outbox::{Relay, RelayStats};
use herald::ports::{Capabilities, MessageSink, MessageSource, OutgoingMessage};
use herald::{
    async_handler, Envelope, Event, HandlerError, Herald, HeraldBuilder, MessageId, Meta,
    PublishOptions, State,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A broker transport under test, as the suite sees it: it opens a transport (sink and source)
/// per topic and consumer group. One harness is made per case; topics and groups it opens belong
/// to that case alone (name them after the case and a fresh id).
pub trait PubSubHarness: Send + Sync + 'static {
    /// The transport: publishes to a topic and consumes it as one consumer group.
    type Transport: MessageSink + MessageSource + Clone;

    /// Adds what the transport needs to each subscriber's Herald (a dead-letter store, state);
    /// the suite adds its handlers.
    fn configure(&self, builder: HeraldBuilder) -> HeraldBuilder {
        builder
    }

    /// A new transport object that publishes to `topic` and consumes it as consumer group
    /// `group`. Two objects with the same topic and group compete for its messages; objects with
    /// the same topic and different groups each get every message when
    /// [`consumer_groups`](Self::consumer_groups) is `Ok`. A lease should be at most 2 s (the
    /// suite's relays lease for 2 s).
    fn open(
        &self,
        topic: &str,
        group: &str,
    ) -> impl Future<Output = Result<Self::Transport, BoxError>> + Send;

    /// `Ok` when several consumer groups on one topic each get every message; `Err(why)` when
    /// the transport cannot (the case is then not applicable).
    fn consumer_groups(&self) -> Result<(), &'static str>;

    /// How many messages `transport`'s group still holds unfinished (ready, leased, or waiting
    /// for a retry).
    fn unfinished(
        &self,
        transport: &Self::Transport,
    ) -> impl Future<Output = Result<u64, BoxError>> + Send;
}

/// A [`PubSubHarness`] whose real broker can be restarted under the suite's feet.
pub trait RestartHarness: PubSubHarness {
    /// `Ok` when there is a broker process to restart; `Err(why)` when not (the case is then not
    /// applicable).
    fn restarts(&self) -> Result<(), &'static str>;

    /// Stops the broker and starts it again, returning once it accepts connections. The harness
    /// makes sure the broker is running again even when this fails or panics.
    fn restart_broker(&self) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// The lease of the suite's relays.
const LEASE: Duration = Duration::from_secs(2);
/// The backoff of `take_parcel`.
const BACKOFF: Duration = Duration::from_millis(100);
/// How long a case waits for something before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

// --- the message and its handler -----------------------------------------------------------------

/// What the suite publishes: `fail_attempts` first attempts fail (retryable), `permanent` fails
/// for good, `hold_ms` keeps the handler busy.
#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "conformance.pubsub.parcel", key = key)]
struct Parcel {
    key: String,
    seq: u32,
    topic: String,
    text: String,
    fail_attempts: u32,
    permanent: bool,
    hold_ms: u64,
}

impl Parcel {
    fn new(topic: &str, key: &str, seq: u32) -> Self {
        Parcel {
            key: key.to_owned(),
            seq,
            topic: topic.to_owned(),
            text: format!("parcel {seq} of {key}: ü \u{0} ✓"),
            fail_attempts: 0,
            permanent: false,
            hold_ms: 0,
        }
    }
}

/// What one subscriber's handler saw.
#[derive(Debug, Clone, Default)]
struct Probe {
    books: Accounting,
    seen: Arc<Mutex<Seen>>,
    /// When set, `fail_attempts` is ignored: this subscriber's handler never fails a retryable
    /// attempt (so that two groups can differ).
    calm: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct Seen {
    /// Every attempt: id, attempt number, when.
    attempts: Vec<(MessageId, u32, Instant)>,
    /// Effects per key, in the order they happened.
    by_key: BTreeMap<String, Vec<u32>>,
    /// Handlers running now per key, and the most ever at once.
    running: HashMap<String, u32>,
    most_at_once: u32,
    /// Payloads and envelopes as the handler got them.
    got: Vec<(Parcel, Envelope)>,
}

impl Probe {
    fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        f(&mut self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

const HANDLER: &str = "herald_conformance::pubsub::take_parcel";

#[async_handler(dedupe, retry(max_attempts = 3, backoff = fixed(100ms)))]
async fn take_parcel(
    parcel: Parcel,
    meta: Meta,
    State(probe): State<Probe>,
) -> Result<(), HandlerError> {
    probe.with(|seen| {
        seen.attempts
            .push((meta.id(), meta.attempt(), Instant::now()));
        let running = seen.running.entry(parcel.key.clone()).or_default();
        *running += 1;
        seen.most_at_once = seen.most_at_once.max(*running);
    });
    if parcel.hold_ms > 0 {
        tokio::time::sleep(Duration::from_millis(parcel.hold_ms)).await;
    }
    let outcome = if parcel.permanent {
        Err(HandlerError::permanent(HandlerError::msg(
            "refused for good",
        )))
    } else if meta.attempt() <= parcel.fail_attempts && !probe.calm.load(Ordering::Acquire) {
        Err(HandlerError::msg(format!(
            "attempt {} fails",
            meta.attempt()
        )))
    } else {
        probe.books.delivered(meta.id());
        probe.with(|seen| {
            seen.by_key
                .entry(parcel.key.clone())
                .or_default()
                .push(parcel.seq);
            seen.got.push((parcel.clone(), meta.envelope().clone()));
        });
        Ok(())
    };
    probe.with(|seen| {
        if let Some(running) = seen.running.get_mut(&parcel.key) {
            *running -= 1;
        }
    });
    outcome
}

// --- the pieces every case uses ------------------------------------------------------------------

/// Says, where `cargo test -- --nocapture` and a failing run show it, that a case does not apply.
fn not_applicable(case: &str, destination: &str, why: &str) {
    println!("not applicable: {case} on {destination}: {why}");
}

async fn open<H: PubSubHarness>(harness: &H, topic: &str, group: &str) -> H::Transport {
    harness
        .open(topic, group)
        .await
        .unwrap_or_else(|error| panic!("the harness cannot open topic {topic}: {error}"))
}

/// One subscriber: its own Herald (so that what it saw is its own), its relays over one
/// transport, and its books.
struct Subscriber<T> {
    herald: Herald,
    probe: Probe,
    transport: T,
    relays: Vec<Relay>,
}

impl<T: MessageSink + MessageSource + Clone> Subscriber<T> {
    fn new<H: PubSubHarness<Transport = T>>(harness: &H, transport: &T) -> Self {
        let probe = Probe::default();
        let herald = harness
            .configure(
                Herald::builder()
                    .handlers_under(module_path!())
                    .state(probe.clone()),
            )
            .build()
            .unwrap_or_else(|error| panic!("the conformance Herald does not build: {error}"));
        Subscriber {
            herald,
            probe,
            transport: transport.clone(),
            relays: Vec::new(),
        }
    }

    /// Starts `count` more relays over `transport` (a transport object of this subscriber's
    /// topic and group).
    fn start(mut self, count: usize, transport: &T) -> Self {
        for _ in 0..count {
            self.relays.push(
                Relay::builder(Arc::new(transport.clone()), &self.herald)
                    .poll_interval(Duration::from_millis(20))
                    .batch_size(10)
                    .lease(LEASE)
                    .start(),
            );
        }
        self
    }

    fn books(&self) -> &Accounting {
        &self.probe.books
    }

    /// Marks the messages in the dead letters in the books.
    async fn read_dead_letters(&self) -> usize {
        let letters = self
            .herald
            .dead_letters()
            .list(10_000)
            .await
            .unwrap_or_else(|error| panic!("the dead letters cannot be listed: {error}"));
        for letter in &letters {
            self.books().dead_lettered(letter.envelope.id);
        }
        letters.len()
    }

    /// Waits until every id confirmed in `published` was delivered or dead-lettered here.
    async fn complete(&self, published: &Accounting) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            for id in published.confirmed_ids() {
                self.books().confirmed(id);
            }
            self.read_dead_letters().await;
            if self.books().is_complete() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for every confirmed message: {}",
                self.books().report(0)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every relay and closes the books: everything confirmed in `published` arrived
    /// (delivered or dead-lettered) here, once, and nothing else; the transport holds nothing
    /// unfinished; no lease was lost unless `leases_may_be_lost` (a broker restart takes them);
    /// the ledger balances.
    async fn finish<H: PubSubHarness<Transport = T>>(
        mut self,
        harness: &H,
        published: &Accounting,
        leases_may_be_lost: bool,
    ) -> (Report, RelayStats) {
        for id in published.confirmed_ids() {
            self.books().confirmed(id);
        }
        // An id tried but never confirmed may still arrive: it is indeterminate, not unexpected.
        for id in published.attempted_ids() {
            self.books().attempted(id);
        }
        self.complete(published).await;
        drained(harness, &self.transport).await;
        let stats = stop(std::mem::take(&mut self.relays)).await;
        if !leases_may_be_lost {
            assert_eq!(stats.lost, 0, "no lease lost: {stats:?}");
        }
        assert_eq!(
            unfinished(harness, &self.transport).await,
            0,
            "nothing left in the transport"
        );
        self.read_dead_letters().await;
        let ledger = self.herald.ledger();
        assert!(ledger.is_balanced(), "the ledger balances: {ledger}");
        assert_eq!(ledger.total.lost, 0, "no job lost: {ledger}");
        let deduplicated = ledger
            .handlers
            .get(HANDLER)
            .map_or(0, |counts| counts.deduplicated);
        let report = self.books().report(deduplicated);
        println!(
            "accounting on {}: {report}; relays: {stats:?}",
            self.transport.destination()
        );
        report.assert_exactly_once();
        (report, stats)
    }
}

async fn stop(relays: Vec<Relay>) -> RelayStats {
    let mut total = RelayStats::default();
    for relay in relays {
        let stats = relay.stop().await;
        total.batches += stats.batches;
        total.processed += stats.processed;
        total.failed += stats.failed;
        total.retried += stats.retried;
        total.released += stats.released;
        total.renewed += stats.renewed;
        total.lost += stats.lost;
        total.errors += stats.errors;
    }
    total
}

async fn unfinished<H: PubSubHarness>(harness: &H, transport: &H::Transport) -> u64 {
    harness
        .unfinished(transport)
        .await
        .unwrap_or_else(|error| panic!("the transport cannot say what it holds: {error}"))
}

async fn drained<H: PubSubHarness>(harness: &H, transport: &H::Transport) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = unfinished(harness, transport).await;
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: the transport still holds {left} unfinished message(s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Publishes `parcels` in one batch through `sink`, each with `options`, recording them in
/// `books`; every one must be confirmed.
async fn publish_with(
    sink: &impl MessageSink,
    books: &Accounting,
    parcels: impl IntoIterator<Item = Parcel>,
    options: &PublishOptions,
) -> Vec<MessageId> {
    let batch: Vec<OutgoingMessage> = parcels
        .into_iter()
        .map(|parcel| {
            OutgoingMessage::new(&parcel, options.clone())
                .unwrap_or_else(|error| panic!("a parcel does not serialize: {error}"))
        })
        .collect();
    let ids: Vec<MessageId> = batch.iter().map(|m| m.envelope.id).collect();
    for id in &ids {
        books.attempted(*id);
    }
    let confirmations = sink
        .publish(batch)
        .await
        .unwrap_or_else(|error| panic!("publish to {} failed: {error}", sink.destination()));
    assert_eq!(
        confirmations.len(),
        ids.len(),
        "one confirmation per message"
    );
    for (id, confirmation) in ids.iter().zip(&confirmations) {
        assert!(
            confirmation.is_confirmed(),
            "{} did not confirm {id}: {confirmation:?}",
            sink.destination()
        );
        books.confirmed(*id);
    }
    ids
}

async fn publish(
    sink: &impl MessageSink,
    books: &Accounting,
    parcels: impl IntoIterator<Item = Parcel>,
) -> Vec<MessageId> {
    publish_with(sink, books, parcels, &PublishOptions::new()).await
}

fn parcels(topic: &str, key: &str, range: std::ops::Range<u32>) -> Vec<Parcel> {
    range.map(|seq| Parcel::new(topic, key, seq)).collect()
}

fn capabilities<T: MessageSource>(transport: &T) -> Capabilities {
    MessageSource::capabilities(transport)
}

// --- the cases -----------------------------------------------------------------------------------

/// Published with headers, the message reaches the subscriber with payload and envelope intact
/// (id, name, key, idempotency key, correlation and causation ids, extra headers), U+0000 and
/// non-ASCII text included.
pub async fn publish_subscribe_keeps_payload_and_headers<H: PubSubHarness>(harness: H) {
    let transport = open(&harness, "intact", "g").await;
    let books = Accounting::new();
    let sub = Subscriber::new(&harness, &transport).start(1, &transport);
    let correlation = MessageId::new();
    let causation = MessageId::new();
    // One idempotency key per message: the handler's `dedupe` treats a repeated key as a repeat.
    let options = |seq: u32| {
        PublishOptions::new()
            .idempotency_key(format!("idem-ü-{seq}"))
            .correlation_id(correlation)
            .causation_id(causation)
            .header("tenant", "acme ✓")
            .header("traceparent", "00-0af7651916cd43dd-b7ad6b7169203331-01")
    };
    let sent = parcels("intact", "acct-ü", 0..5);
    let mut ids = Vec::new();
    for parcel in &sent {
        let options = options(parcel.seq);
        ids.extend(publish_with(&transport, &books, [parcel.clone()], &options).await);
    }
    let probe = sub.probe.clone();
    let (report, _) = sub.finish(&harness, &books, false).await;
    assert_eq!(report.delivered, 5);
    let mut got = probe.with(|seen| seen.got.clone());
    got.sort_by_key(|(parcel, _)| parcel.seq);
    assert_eq!(got.len(), 5);
    for ((parcel, envelope), (sent, id)) in got.iter().zip(sent.iter().zip(&ids)) {
        assert_eq!(parcel, sent, "payload intact");
        assert_eq!(envelope.id, *id);
        assert_eq!(envelope.name, "conformance.pubsub.parcel");
        assert_eq!(envelope.key.as_deref(), Some("acct-ü"));
        let idempotency_key = format!("idem-ü-{}", sent.seq);
        assert_eq!(
            envelope.idempotency_key.as_deref(),
            Some(idempotency_key.as_str())
        );
        assert_eq!(envelope.headers.correlation_id, Some(correlation));
        assert_eq!(envelope.headers.causation_id, Some(causation));
        assert_eq!(envelope.headers.extra["tenant"], "acme ✓");
        assert_eq!(
            envelope.headers.extra["traceparent"],
            "00-0af7651916cd43dd-b7ad6b7169203331-01"
        );
    }
}

/// Three relays on one source, over three transport objects of one topic and group (competing
/// consumers), share 90 messages: each takes effect once and every relay stops clean.
pub async fn concurrent_subscribers_share_one_source<H: PubSubHarness>(harness: H) {
    let first = open(&harness, "shared", "g").await;
    let second = open(&harness, "shared", "g").await;
    let third = open(&harness, "shared", "g").await;
    let books = Accounting::new();
    let sub = Subscriber::new(&harness, &first)
        .start(1, &first)
        .start(1, &second)
        .start(1, &third);
    for key in ["a", "b", "c"] {
        publish(&first, &books, parcels("shared", key, 0..30)).await;
    }
    let (report, stats) = sub.finish(&harness, &books, false).await;
    assert_eq!(report.delivered, 90);
    assert_eq!(stats.processed, 90 + report.duplicates_removed);
}

/// Four topics at once, each with its own sink and subscriber: each subscriber gets exactly its
/// topic's messages.
pub async fn many_topics_at_once<H: PubSubHarness>(harness: H) {
    let topics = ["t0", "t1", "t2", "t3"];
    let mut running = Vec::new();
    for topic in topics {
        let transport = open(&harness, topic, "g").await;
        let sub = Subscriber::new(&harness, &transport).start(1, &transport);
        running.push((topic, transport, sub, Accounting::new()));
    }
    for round in 0..3 {
        for (topic, transport, _, books) in &running {
            let range = round * 10..round * 10 + 10;
            publish(transport, books, parcels(topic, "k", range)).await;
        }
    }
    for (topic, _, sub, books) in running {
        let probe = sub.probe.clone();
        let (report, _) = sub.finish(&harness, &books, false).await;
        assert_eq!(report.delivered, 30, "topic {topic}");
        let strays = probe.with(|seen| seen.got.iter().filter(|(p, _)| p.topic != topic).count());
        assert_eq!(
            strays, 0,
            "topic {topic}'s subscriber got another topic's message"
        );
    }
}

/// A handler that fails (a nack) gets the message again after its backoff, as the next attempt,
/// and the message ends delivered once.
pub async fn a_nacked_message_is_delivered_again_after_the_backoff<H: PubSubHarness>(harness: H) {
    let transport = open(&harness, "nack", "g").await;
    let books = Accounting::new();
    let sub = Subscriber::new(&harness, &transport).start(1, &transport);
    let mut flaky = Parcel::new("nack", "k", 0);
    flaky.fail_attempts = 2;
    let ids = publish(&transport, &books, [flaky]).await;
    let probe = sub.probe.clone();
    let (report, stats) = sub.finish(&harness, &books, false).await;
    assert_eq!((report.delivered, stats.retried), (1, 2), "{stats:?}");
    let attempts = probe.with(|seen| seen.attempts.clone());
    let numbers: Vec<(MessageId, u32)> = attempts.iter().map(|(id, n, _)| (*id, *n)).collect();
    assert_eq!(numbers, vec![(ids[0], 1), (ids[0], 2), (ids[0], 3)]);
    for pair in attempts.windows(2) {
        let waited = pair[1].2 - pair[0].2;
        assert!(
            waited >= BACKOFF,
            "redelivered after {waited:?}, before the backoff"
        );
    }
}

/// With `ordered_by_key`, the next message of a key is not handed out before the one before it
/// is settled, even with two relays and a handler that takes a while: never two of one key at
/// once. Not applicable where the transport does not declare `ordered_by_key`.
pub async fn no_next_message_of_a_key_before_the_ack<H: PubSubHarness>(harness: H) {
    let transport = open(&harness, "one-at-a-time", "g").await;
    let declared = capabilities(&transport);
    if !declared.ordered_by_key {
        assert!(!declared.ordered_by_key);
        return not_applicable(
            "no_next_message_of_a_key_before_the_ack",
            &transport.destination(),
            "the transport does not declare ordered_by_key (it may hand out two messages of one key at once)",
        );
    }
    let books = Accounting::new();
    let sub = Subscriber::new(&harness, &transport).start(2, &transport);
    let held = parcels("one-at-a-time", "k", 0..8)
        .into_iter()
        .map(|mut p| {
            p.hold_ms = 30;
            p
        });
    publish(&transport, &books, held).await;
    let probe = sub.probe.clone();
    sub.finish(&harness, &books, false).await;
    assert_eq!(
        probe.with(|seen| seen.most_at_once),
        1,
        "one message of the key at a time"
    );
}

/// A subscriber closed in the middle of a stream (its relay stopped, its transport object
/// dropped) hands back what it held; a new one started afterwards on a new transport object
/// delivers the rest: everything arrives.
pub async fn a_new_subscriber_continues_after_one_closes<H: PubSubHarness>(harness: H) {
    let transport = open(&harness, "handover", "g").await;
    let books = Accounting::new();
    let mut sub = Subscriber::new(&harness, &transport).start(1, &transport);
    publish(&transport, &books, parcels("handover", "k", 0..40)).await;
    let probe = sub.probe.clone();
    eventually("a first part delivered", || {
        probe.books.delivered_count() >= 5
    })
    .await;
    let first = stop(std::mem::take(&mut sub.relays)).await;
    assert_eq!(first.lost, 0, "{first:?}");
    // The closed subscriber's transport object goes too (a push consumer holds deliveries).
    let later = open(&harness, "handover", "g").await;
    sub.transport = later.clone();
    drop(transport);
    let sub = sub.start(1, &later);
    publish(&later, &books, parcels("handover", "k", 40..60)).await;
    let (report, _) = sub.finish(&harness, &books, false).await;
    assert_eq!(report.delivered, 60);
}

/// Three relays stopped at once while a publisher goes on: a fourth relay started afterwards
/// delivers everything that was confirmed.
pub async fn closing_subscribers_at_once_while_publishing<H: PubSubHarness>(harness: H) {
    let transport = open(&harness, "close-all", "g").await;
    let books = Accounting::new();
    let mut sub = Subscriber::new(&harness, &transport).start(3, &transport);
    let publisher = tokio::spawn({
        let transport = transport.clone();
        let books = books.clone();
        async move {
            for round in 0..10 {
                let range = round * 6..round * 6 + 6;
                publish(&transport, &books, parcels("close-all", "k", range)).await;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }
    });
    let probe = sub.probe.clone();
    eventually("a first part delivered", || {
        probe.books.delivered_count() >= 6
    })
    .await;
    let closing: Vec<_> = std::mem::take(&mut sub.relays)
        .into_iter()
        .map(|relay| tokio::spawn(relay.stop()))
        .collect();
    for closed in closing {
        let stats = closed
            .await
            .unwrap_or_else(|e| panic!("a relay's stop panicked: {e}"));
        assert_eq!(stats.lost, 0, "{stats:?}");
    }
    publisher
        .await
        .unwrap_or_else(|e| panic!("the publisher panicked: {e}"));
    let sub = sub.start(1, &transport);
    let (report, _) = sub.finish(&harness, &books, false).await;
    assert_eq!(report.delivered, 60);
}

/// Handler errors interleaved with successes (some retried, some permanent) stop nothing: every
/// message ends delivered or dead-lettered, the permanent ones in the dead letters.
pub async fn handler_errors_do_not_stop_the_rest<H: PubSubHarness>(harness: H) {
    let transport = open(&harness, "errors", "g").await;
    let books = Accounting::new();
    let sub = Subscriber::new(&harness, &transport).start(1, &transport);
    let mixed = parcels("errors", "k", 0..30).into_iter().map(|mut p| {
        match p.seq % 5 {
            1 => p.fail_attempts = 1,
            3 => p.permanent = true,
            _ => {}
        }
        p
    });
    publish(&transport, &books, mixed).await;
    let probe = sub.probe.clone();
    let (report, stats) = sub.finish(&harness, &books, false).await;
    assert_eq!(
        (report.delivered, report.dead_lettered),
        (24, 6),
        "{report}"
    );
    assert_eq!((stats.failed, stats.retried), (6, 6), "{stats:?}");
    let mut delivered = probe.with(|seen| seen.by_key["k"].clone());
    delivered.sort_unstable();
    let expected: Vec<u32> = (0..30).filter(|n| n % 5 != 3).collect();
    assert_eq!(delivered, expected);
}

/// With `ordered_by_key`, messages of one key take effect in publish order, even when one waits
/// for a retry, across two relays and three keys. Not applicable where the transport does not
/// declare `ordered_by_key`.
pub async fn messages_of_one_key_arrive_in_order<H: PubSubHarness>(harness: H) {
    let transport = open(&harness, "order", "g").await;
    let declared = capabilities(&transport);
    if !declared.ordered_by_key {
        assert!(!declared.ordered_by_key);
        return not_applicable(
            "messages_of_one_key_arrive_in_order",
            &transport.destination(),
            "the transport does not declare ordered_by_key (a retry goes to the back of the stream)",
        );
    }
    let books = Accounting::new();
    let sub = Subscriber::new(&harness, &transport).start(2, &transport);
    for seq in 0..8 {
        let per_key = ["a", "b", "c"].map(|key| {
            let mut parcel = Parcel::new("order", key, seq);
            parcel.fail_attempts = u32::from(seq == 2);
            parcel
        });
        publish(&transport, &books, per_key).await;
    }
    let probe = sub.probe.clone();
    sub.finish(&harness, &books, false).await;
    for (key, seqs) in probe.with(|seen| seen.by_key.clone()) {
        assert_eq!(
            seqs,
            (0..8).collect::<Vec<_>>(),
            "key {key} in publish order"
        );
    }
}

/// A publisher dropped right after its last confirmation has flushed: everything it confirmed
/// reaches a subscriber running on another transport object.
pub async fn a_closed_publisher_has_flushed_what_was_confirmed<H: PubSubHarness>(harness: H) {
    let consumer = open(&harness, "flush", "g").await;
    let books = Accounting::new();
    let sub = Subscriber::new(&harness, &consumer).start(1, &consumer);
    for round in 0..3 {
        let publisher = open(&harness, "flush", "g").await;
        publish(
            &publisher,
            &books,
            parcels("flush", "k", round * 20..round * 20 + 20),
        )
        .await;
        drop(publisher);
    }
    let (report, _) = sub.finish(&harness, &books, false).await;
    assert_eq!(report.delivered, 60);
}

/// Polls `future` at most `polls` times, then drops it: `None` when it was cut off. Dropping
/// after the n-th poll cancels the future at its n-th await, whatever that await is.
async fn cut_after<F: Future>(future: F, polls: u32) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut left = polls;
    std::future::poll_fn(move |cx| match future.as_mut().poll(cx) {
        std::task::Poll::Ready(output) => std::task::Poll::Ready(Some(output)),
        std::task::Poll::Pending => {
            left = left.saturating_sub(1);
            if left == 0 {
                std::task::Poll::Ready(None)
            } else {
                std::task::Poll::Pending
            }
        }
    })
    .await
}

/// A publish whose future is dropped at any of its awaits (a timeout, a `select!`, a relay
/// stopping) loses nothing and wedges nothing. Each message is published under a cut that drops
/// the publish after 1 to 8 polls, then, unless it was confirmed, published again until it is,
/// as the outbox relay does with a row it could not mark published. Every message arrives once
/// (a cut-off copy that reached the broker arrives too; the handler's `dedupe` absorbs it), and
/// the sink confirms a plain batch afterwards.
pub async fn a_cancelled_publish_loses_nothing<H: PubSubHarness>(harness: H) {
    let transport = open(&harness, "cancelled", "g").await;
    let books = Accounting::new();
    let sub = Subscriber::new(&harness, &transport).start(1, &transport);
    let mut cut_off = 0_u32;
    for seq in 0..48_u32 {
        let parcel = Parcel::new("cancelled", &format!("k{}", seq % 4), seq);
        let message = OutgoingMessage::new(&parcel, PublishOptions::new())
            .unwrap_or_else(|error| panic!("a parcel does not serialize: {error}"));
        let id = message.envelope.id;
        books.attempted(id);
        let first = cut_after(transport.publish(vec![message.clone()]), seq % 8 + 1).await;
        let confirmed =
            matches!(&first, Some(Ok(c)) if c.first().is_some_and(|c| c.is_confirmed()));
        if !confirmed {
            cut_off += 1;
            let deadline = Instant::now() + PATIENCE;
            loop {
                let again = transport.publish(vec![message.clone()]).await;
                if matches!(&again, Ok(c) if c.first().is_some_and(|c| c.is_confirmed())) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} never confirmed {id} after a cancelled publish: {again:?}",
                    transport.destination()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        books.confirmed(id);
    }
    publish(&transport, &books, parcels("cancelled", "after", 0..10)).await;
    println!(
        "{}: {cut_off} of 48 publishes cut off before their confirmation",
        transport.destination()
    );
    let (report, _) = sub.finish(&harness, &books, false).await;
    assert_eq!(report.delivered, 58);
}

/// Messages on topic A never reach a subscriber of topic B, and A's subscriber gets them all.
pub async fn a_topic_never_reaches_another_topics_subscriber<H: PubSubHarness>(harness: H) {
    let a = open(&harness, "isolated-a", "g").await;
    let b = open(&harness, "isolated-b", "g").await;
    let books = Accounting::new();
    let nothing = Accounting::new();
    let sub_a = Subscriber::new(&harness, &a).start(1, &a);
    let sub_b = Subscriber::new(&harness, &b).start(1, &b);
    publish(&a, &books, parcels("isolated-a", "k", 0..20)).await;
    let (report, _) = sub_a.finish(&harness, &books, false).await;
    assert_eq!(report.delivered, 20);
    // A's messages had every chance to leak while A's subscriber took them all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let probe_b = sub_b.probe.clone();
    let (report_b, stats_b) = sub_b.finish(&harness, &nothing, false).await;
    assert_eq!(report_b.delivered, 0, "topic B's subscriber got {report_b}");
    assert_eq!(stats_b.processed + stats_b.failed, 0, "{stats_b:?}");
    assert!(probe_b.with(|seen| seen.attempts.is_empty()));
}

/// Where the transport is `persistent`, a subscriber opened after the messages were published
/// (and the publisher dropped) receives them. Not applicable where it is not.
pub async fn a_new_subscriber_receives_old_messages<H: PubSubHarness>(harness: H) {
    let publisher = open(&harness, "old", "g").await;
    let declared = capabilities(&publisher);
    if !declared.persistent {
        assert!(!declared.persistent);
        return not_applicable(
            "a_new_subscriber_receives_old_messages",
            &publisher.destination(),
            "the transport does not declare persistent (messages are not promised to outlive their publisher's process or the broker)",
        );
    }
    let books = Accounting::new();
    publish(&publisher, &books, parcels("old", "k", 0..20)).await;
    drop(publisher);
    let consumer = open(&harness, "old", "g").await;
    let sub = Subscriber::new(&harness, &consumer).start(1, &consumer);
    let (report, _) = sub.finish(&harness, &books, false).await;
    assert_eq!(report.delivered, 20);
}

/// Two consumer groups on one topic each get every message, and one group's retry never reaches
/// the other: the first group's handler fails a message once, the second's does not, and the
/// second group gets that message once (no redelivery for its `dedupe` to absorb). Not
/// applicable where the transport cannot have several groups.
pub async fn each_consumer_group_gets_every_message<H: PubSubHarness>(harness: H) {
    let first = open(&harness, "groups", "first").await;
    if let Err(why) = harness.consumer_groups() {
        return not_applicable(
            "each_consumer_group_gets_every_message",
            &first.destination(),
            why,
        );
    }
    let second = open(&harness, "groups", "second").await;
    let books = Accounting::new();
    let sub_first = Subscriber::new(&harness, &first).start(1, &first);
    let sub_second = Subscriber::new(&harness, &second);
    sub_second.probe.calm.store(true, Ordering::Release);
    let sub_second = sub_second.start(1, &second);
    let mut sent = parcels("groups", "k", 0..30);
    sent[4].fail_attempts = 1;
    publish(&first, &books, sent).await;
    for (group, sub, retries) in [("first", sub_first, 1), ("second", sub_second, 0)] {
        let (report, stats) = sub.finish(&harness, &books, false).await;
        assert_eq!(report.delivered, 30, "group {group}");
        assert_eq!(stats.retried, retries, "group {group}: {stats:?}");
        assert_eq!(
            (report.duplicates_removed, stats.processed),
            (0, 30),
            "group {group} got a message twice (the other group's retry?): {report}; {stats:?}"
        );
    }
}

/// A publisher that retries every unconfirmed publish (same id) until confirmed, while the real
/// broker is restarted twice: the consumer resumes by itself and every confirmed message takes
/// effect once (redeliveries are absorbed by `dedupe` and reported). Leases held at a restart may
/// be lost (the broker takes them back), messages may not. Not applicable where there is no
/// broker process to restart.
pub async fn the_consumer_resumes_after_two_broker_restarts<H: RestartHarness>(harness: H) {
    const MESSAGES: u32 = 150;
    let transport = open(&harness, "restarts", "g").await;
    if let Err(why) = harness.restarts() {
        return not_applicable(
            "the_consumer_resumes_after_two_broker_restarts",
            &transport.destination(),
            why,
        );
    }
    let books = Accounting::new();
    let sub = Subscriber::new(&harness, &transport).start(1, &transport);
    let publisher = tokio::spawn({
        let transport = transport.clone();
        let books = books.clone();
        async move {
            let mut unconfirmed = 0_u32;
            for seq in 0..MESSAGES {
                let message =
                    OutgoingMessage::new(&Parcel::new("restarts", "k", seq), PublishOptions::new())
                        .unwrap_or_else(|error| panic!("a parcel does not serialize: {error}"));
                let id = message.envelope.id;
                books.attempted(id);
                let deadline = Instant::now() + PATIENCE;
                loop {
                    let answer = tokio::time::timeout(
                        Duration::from_secs(5),
                        transport.publish(vec![message.clone()]),
                    )
                    .await;
                    if let Ok(Ok(confirmations)) = answer {
                        if confirmations.first().is_some_and(|c| c.is_confirmed()) {
                            books.confirmed(id);
                            break;
                        }
                    }
                    unconfirmed += 1;
                    assert!(Instant::now() < deadline, "publishing never resumed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            unconfirmed
        }
    });
    for (restart, after) in [(1, MESSAGES / 4), (2, MESSAGES / 2)] {
        let confirmed_before = books.clone();
        eventually("the stream under way", || {
            confirmed_before.confirmed_count() >= after as usize
        })
        .await;
        let probe = sub.probe.clone();
        let delivered = probe.books.delivered_count();
        harness
            .restart_broker()
            .await
            .unwrap_or_else(|error| panic!("restart {restart} of the broker failed: {error}"));
        eventually("the consumer resumed after the restart", || {
            probe.books.delivered_count() > delivered
        })
        .await;
    }
    let unconfirmed = publisher
        .await
        .unwrap_or_else(|e| panic!("the publisher panicked: {e}"));
    let (report, stats) = sub.finish(&harness, &books, true).await;
    println!(
        "after two restarts: {unconfirmed} publishes not confirmed and tried again, {} leases lost",
        stats.lost
    );
    assert_eq!(report.delivered, MESSAGES as usize);
}
