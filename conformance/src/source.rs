//! The source suite: what every [`MessageSource`](herald::ports::MessageSource) must do when a
//! real [`Herald`] and relay drive it. Each case takes a fresh harness; run them all with
//! [`source_suite!`](crate::source_suite).
//!
//! Every case ends with the same accounting: the relay stops with no lease lost, the source holds
//! nothing unfinished, and Herald's ledger balances.

use herald::outbox::{Relay, RelayBuilder, RelayStats};
use herald::{
    async_handler, DeadLetter, DeadLetterReason, Event, FailureKind, HandlerError, Herald,
    HeraldBuilder, Message, MessageId, MessageKind, Meta, Overload, PoolConfig, PublishOptions,
    State,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Any error a harness passes on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A source under test, as the suite sees it: where messages go in, and the relay that takes
/// them out. One harness is made per case, over a fresh, empty source.
pub trait SourceHarness: Send + Sync + 'static {
    /// Adds what the source needs to the Herald the relay delivers into (its durable dead-letter
    /// store, state); the suite adds its handlers and pools.
    fn configure(&self, builder: HeraldBuilder) -> HeraldBuilder;

    /// A relay over the source, delivering into `herald` (each call: a relay with its own owner).
    fn relay(&self, herald: &Herald) -> RelayBuilder;

    /// Publishes a message into the source as an application would, and returns its id once the
    /// source has it (committed, confirmed).
    fn publish<M: Message>(
        &self,
        message: M,
        options: PublishOptions,
    ) -> impl Future<Output = Result<MessageId, BoxError>> + Send;

    /// How many published messages the source still holds unfinished (pending, leased or waiting
    /// for a retry).
    fn unfinished(&self) -> impl Future<Output = Result<u64, BoxError>> + Send;
}

/// What the suite's handlers saw.
#[derive(Debug, Clone, Default)]
struct Probe {
    seen: Arc<Mutex<Seen>>,
}

#[derive(Debug, Default)]
struct Seen {
    /// Successful runs per message id and handler.
    handled: HashMap<(MessageId, &'static str), u32>,
    /// Every attempt: message id, attempt number, when.
    attempts: Vec<(MessageId, u32, Instant)>,
    /// Successful runs per key, in the order they ran.
    by_key: BTreeMap<String, Vec<u32>>,
    /// Envelopes and payloads as the handlers got them.
    described: Vec<(Described, herald::Envelope)>,
}

impl Probe {
    fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        f(&mut self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn handled(&self, meta: &Meta) {
        self.with(|seen| {
            *seen.handled.entry((meta.id(), meta.handler())).or_default() += 1;
        });
    }

    fn attempt(&self, meta: &Meta) {
        self.with(|seen| {
            seen.attempts
                .push((meta.id(), meta.attempt(), Instant::now()))
        });
    }

    fn runs(&self, id: MessageId, handler: &str) -> u32 {
        self.with(|seen| {
            seen.handled
                .iter()
                .filter(|((i, h), _)| *i == id && *h == handler)
                .map(|(_, n)| *n)
                .sum()
        })
    }
}

/// A pool that holds one job running and one queued, and rejects the rest.
const TIGHT_POOL: &str = "conformance_tight";

fn herald(harness: &impl SourceHarness, probe: &Probe) -> Herald {
    harness
        .configure(
            Herald::builder()
                .handlers_under(module_path!())
                .state(probe.clone())
                .pool(
                    TIGHT_POOL,
                    PoolConfig::new()
                        .concurrency(1)
                        .queue(1)
                        .overload(Overload::Reject),
                ),
        )
        .build()
        .unwrap_or_else(|error| panic!("the conformance Herald does not build: {error}"))
}

fn fast(relay: RelayBuilder) -> RelayBuilder {
    relay.poll_interval(Duration::from_millis(20))
}

async fn publish<H: SourceHarness, M: Message>(harness: &H, message: M) -> MessageId {
    publish_with(harness, message, PublishOptions::new()).await
}

async fn publish_with<H: SourceHarness, M: Message>(
    harness: &H,
    message: M,
    options: PublishOptions,
) -> MessageId {
    harness
        .publish(message, options)
        .await
        .unwrap_or_else(|error| panic!("publish into the source failed: {error}"))
}

async fn unfinished(harness: &impl SourceHarness) -> u64 {
    harness
        .unfinished()
        .await
        .unwrap_or_else(|error| panic!("the source cannot say what it holds: {error}"))
}

/// Waits until `done` holds, failing the case after 30 s with `what`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the source holds nothing unfinished.
async fn drained(harness: &impl SourceHarness) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = unfinished(harness).await;
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: the source still holds {left} unfinished message(s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops the relays and checks the accounting every case ends with: nothing lost, nothing left,
/// the ledger balanced. Returns the relays' stats added up.
async fn finish(harness: &impl SourceHarness, herald: &Herald, relays: Vec<Relay>) -> RelayStats {
    drained(harness).await;
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
    assert_eq!(total.lost, 0, "no lease lost: {total:?}");
    assert_eq!(unfinished(harness).await, 0, "nothing left in the source");
    let ledger = herald.ledger();
    assert!(ledger.is_balanced(), "the ledger balances: {ledger}");
    assert_eq!(ledger.total.lost, 0, "no job lost: {ledger}");
    total
}

async fn dead_letters(herald: &Herald) -> Vec<DeadLetter> {
    herald
        .dead_letters()
        .list(1_000)
        .await
        .unwrap_or_else(|error| panic!("the dead letters cannot be listed: {error}"))
}

// --- every message once -------------------------------------------------------------------------

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "conformance.counted")]
struct Counted {
    n: u32,
}

#[async_handler]
async fn count_counted(_event: Counted, meta: Meta, State(probe): State<Probe>) {
    probe.handled(&meta);
}

/// Every message published is handled exactly once (counted per message id), and each is
/// settled as processed.
pub async fn every_message_is_delivered_once<H: SourceHarness>(harness: H) {
    const MESSAGES: u32 = 60;
    let probe = Probe::default();
    let herald = herald(&harness, &probe);
    let mut ids = Vec::new();
    for n in 0..MESSAGES / 2 {
        ids.push(publish(&harness, Counted { n }).await);
    }
    let relay = fast(harness.relay(&herald)).batch_size(7).start();
    for n in MESSAGES / 2..MESSAGES {
        ids.push(publish(&harness, Counted { n }).await);
    }
    let handler = "herald_conformance::source::count_counted";
    eventually("every message handled", || {
        ids.iter().all(|id| probe.runs(*id, handler) >= 1)
    })
    .await;
    let stats = finish(&harness, &herald, vec![relay]).await;
    for id in &ids {
        assert_eq!(probe.runs(*id, handler), 1, "message {id} handled once");
    }
    assert_eq!(stats.processed, u64::from(MESSAGES));
    assert_eq!(
        probe.with(|seen| seen.handled.len()),
        ids.len(),
        "nothing else handled"
    );
}

// --- payload and headers ------------------------------------------------------------------------

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "conformance.described", key = account)]
struct Described {
    account: String,
    text: String,
    amounts: Vec<i64>,
    note: Option<String>,
}

#[async_handler]
async fn describe(event: Described, meta: Meta, State(probe): State<Probe>) {
    probe.with(|seen| seen.described.push((event, meta.envelope().clone())));
}

/// The handler gets the payload and the envelope (id, name, key, idempotency key, correlation and
/// causation ids, extra headers, time) as published, U+0000 and non-ASCII text included.
pub async fn payload_and_headers_arrive_intact<H: SourceHarness>(harness: H) {
    let probe = Probe::default();
    let herald = herald(&harness, &probe);
    let sent = Described {
        account: "acct-ü-1".to_owned(),
        text: "nul:\u{0} ü ✓ 日本 \"quoted\" \\ back".to_owned(),
        amounts: vec![i64::MIN, -1, 0, i64::MAX],
        note: None,
    };
    let correlation = MessageId::new();
    let causation = MessageId::new();
    let options = PublishOptions::new()
        .idempotency_key("idem-ü-1")
        .correlation_id(correlation)
        .causation_id(causation)
        .header("tenant", "acme ✓")
        .header("trace", "00-abc-01");
    let before = chrono::Utc::now();
    let id = publish_with(&harness, sent.clone(), options).await;
    let relay = fast(harness.relay(&herald)).start();
    eventually("the message handled", || {
        probe.with(|seen| !seen.described.is_empty())
    })
    .await;
    finish(&harness, &herald, vec![relay]).await;
    let (got, envelope) = probe.with(|seen| seen.described[0].clone());
    assert_eq!(got, sent, "payload intact");
    assert_eq!(envelope.id, id);
    assert_eq!(envelope.name, "conformance.described");
    assert_eq!(envelope.key.as_deref(), Some("acct-ü-1"));
    assert_eq!(envelope.idempotency_key.as_deref(), Some("idem-ü-1"));
    assert_eq!(envelope.headers.correlation_id, Some(correlation));
    assert_eq!(envelope.headers.causation_id, Some(causation));
    let extra: Vec<(&str, &str)> = envelope
        .headers
        .extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(extra, vec![("tenant", "acme ✓"), ("trace", "00-abc-01")]);
    let skew = (envelope.occurred_at - before).num_seconds().abs();
    assert!(skew < 60, "occurred_at is the publish time");
}

// --- retry --------------------------------------------------------------------------------------

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "conformance.flaky")]
struct Flaky {
    fail_times: u32,
}

/// The backoff of `flaky`.
const FLAKY_BACKOFF: Duration = Duration::from_millis(150);

#[async_handler(retry(max_attempts = 4, backoff = fixed(150ms)))]
async fn flaky(event: Flaky, meta: Meta, State(probe): State<Probe>) -> Result<(), HandlerError> {
    probe.attempt(&meta);
    if meta.attempt() <= event.fail_times {
        return Err(HandlerError::msg(format!(
            "attempt {} fails",
            meta.attempt()
        )));
    }
    probe.handled(&meta);
    Ok(())
}

/// A handler that fails before its last attempt is run again by the source after its backoff,
/// with the attempt counter going up, and the message ends processed.
pub async fn a_retry_waits_for_the_backoff_and_counts_attempts<H: SourceHarness>(harness: H) {
    let probe = Probe::default();
    let herald = herald(&harness, &probe);
    let id = publish(&harness, Flaky { fail_times: 2 }).await;
    let relay = fast(harness.relay(&herald)).start();
    let handler = "herald_conformance::source::flaky";
    eventually("the third attempt succeeded", || {
        probe.runs(id, handler) == 1
    })
    .await;
    let stats = finish(&harness, &herald, vec![relay]).await;
    let attempts = probe.with(|seen| seen.attempts.clone());
    let numbers: Vec<u32> = attempts.iter().map(|(_, n, _)| *n).collect();
    assert_eq!(numbers, vec![1, 2, 3], "attempts counted by the source");
    for pair in attempts.windows(2) {
        let waited = pair[1].2 - pair[0].2;
        assert!(
            waited >= FLAKY_BACKOFF,
            "the next attempt waited {waited:?}, less than the backoff {FLAKY_BACKOFF:?}"
        );
    }
    assert_eq!(stats.retried, 2);
    assert_eq!(stats.processed, 1);
    let counts = herald.ledger().handlers[handler];
    assert_eq!(counts.succeeded, 1);
    assert!(dead_letters(&herald).await.is_empty());
}

// --- failed for good ----------------------------------------------------------------------------

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "conformance.doomed")]
struct Doomed {
    n: u32,
}

#[async_handler(retry(max_attempts = 2, backoff = fixed(10ms)))]
async fn doomed_keeps_failing(_event: Doomed) -> Result<(), HandlerError> {
    Err(HandlerError::msg("the remote keeps refusing"))
}

#[async_handler(retry(max_attempts = 3, backoff = fixed(10ms)))]
async fn doomed_permanently(_event: Doomed) -> Result<(), HandlerError> {
    Err(HandlerError::permanent(HandlerError::msg(
        "no such account",
    )))
}

#[async_handler]
async fn doomed_succeeds(_event: Doomed, meta: Meta, State(probe): State<Probe>) {
    probe.handled(&meta);
}

/// A handler that fails on its last attempt (or permanently) goes to Herald's dead letters with
/// reason `failed`, the right failure kind and attempt count; the other handler of the message
/// succeeds once, and the message is settled as failed.
pub async fn failed_for_good_goes_to_the_dead_letters_with_its_kind<H: SourceHarness>(harness: H) {
    let probe = Probe::default();
    let herald = herald(&harness, &probe);
    let id = publish(&harness, Doomed { n: 1 }).await;
    let relay = fast(harness.relay(&herald)).start();
    let stats = finish(&harness, &herald, vec![relay]).await;
    assert_eq!(stats.failed, 1, "settled as failed: {stats:?}");
    assert_eq!(
        probe.runs(id, "herald_conformance::source::doomed_succeeds"),
        1
    );
    let mut letters = dead_letters(&herald).await;
    letters.sort_by(|a, b| a.handler.cmp(&b.handler));
    let summary: Vec<(&str, DeadLetterReason, Option<FailureKind>, u32)> = letters
        .iter()
        .map(|l| (l.handler.as_str(), l.reason, l.failure, l.attempts))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "herald_conformance::source::doomed_keeps_failing",
                DeadLetterReason::Failed,
                Some(FailureKind::Error),
                2
            ),
            (
                "herald_conformance::source::doomed_permanently",
                DeadLetterReason::Failed,
                Some(FailureKind::PermanentError),
                1
            ),
        ]
    );
    for letter in &letters {
        assert_eq!(letter.envelope.id, id, "the dead letter names the message");
        assert_eq!(letter.payload, serde_json::json!({ "n": 1 }));
    }
}

// --- a rejecting pool ---------------------------------------------------------------------------

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "conformance.squeezed")]
struct Squeezed {
    n: u32,
}

#[async_handler(pool = "conformance_tight")]
async fn squeeze(_event: Squeezed, meta: Meta, State(probe): State<Probe>) {
    tokio::time::sleep(Duration::from_millis(40)).await;
    probe.handled(&meta);
}

/// When the handler's pool rejects (full, `Reject`), the relay gives the message back without
/// counting an attempt, and it is delivered later: every message handled once, none lost.
pub async fn a_rejecting_pool_releases_without_losing_a_message<H: SourceHarness>(harness: H) {
    const MESSAGES: u32 = 8;
    let probe = Probe::default();
    let herald = herald(&harness, &probe);
    let mut ids = Vec::new();
    for n in 0..MESSAGES {
        ids.push(publish(&harness, Squeezed { n }).await);
    }
    let relay = fast(harness.relay(&herald)).batch_size(8).start();
    let handler = "herald_conformance::source::squeeze";
    eventually("every message handled", || {
        ids.iter().all(|id| probe.runs(*id, handler) >= 1)
    })
    .await;
    let stats = finish(&harness, &herald, vec![relay]).await;
    assert!(
        stats.released > 0,
        "a batch of 8 into a pool of 1 + 1 is partly released: {stats:?}"
    );
    assert_eq!(stats.processed, u64::from(MESSAGES));
    for id in &ids {
        assert_eq!(probe.runs(*id, handler), 1, "message {id} handled once");
    }
    let counts = herald.ledger().handlers[handler];
    assert_eq!(counts.succeeded, u64::from(MESSAGES));
    assert!(counts.rejected > 0, "the rejections are in the ledger");
}

// --- per-key order ------------------------------------------------------------------------------

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "conformance.sequenced", key = key)]
struct Sequenced {
    key: String,
    seq: u32,
    fail_first: bool,
}

#[async_handler(retry(max_attempts = 3, backoff = fixed(30ms)))]
async fn sequence(
    event: Sequenced,
    meta: Meta,
    State(probe): State<Probe>,
) -> Result<(), HandlerError> {
    if event.fail_first && meta.attempt() == 1 {
        return Err(HandlerError::msg("first attempt fails"));
    }
    tokio::task::yield_now().await;
    probe.with(|seen| {
        seen.by_key
            .entry(event.key.clone())
            .or_default()
            .push(event.seq)
    });
    probe.handled(&meta);
    Ok(())
}

/// With `ordered_by_key` declared, messages of one key are handled one at a time in publish
/// order, even when an earlier one waits for a retry, while other keys go on. (A source that does
/// not declare it must still handle each message once.)
pub async fn messages_of_one_key_are_handled_in_order<H: SourceHarness>(harness: H) {
    const PER_KEY: u32 = 6;
    let keys = ["k-a", "k-b", "k-c"];
    let probe = Probe::default();
    let herald = herald(&harness, &probe);
    let relays = vec![
        fast(harness.relay(&herald)).batch_size(4).start(),
        fast(harness.relay(&herald)).batch_size(4).start(),
    ];
    let ordered = relays_source_orders(&harness, &herald);
    for seq in 0..PER_KEY {
        for key in keys {
            let message = Sequenced {
                key: key.to_owned(),
                seq,
                fail_first: seq == 1,
            };
            publish(&harness, message).await;
        }
    }
    let total = PER_KEY as usize * keys.len();
    eventually("every message handled", || {
        probe.with(|seen| seen.by_key.values().map(Vec::len).sum::<usize>() >= total)
    })
    .await;
    finish(&harness, &herald, relays).await;
    let by_key = probe.with(|seen| seen.by_key.clone());
    for key in keys {
        let mut got = by_key.get(key).cloned().unwrap_or_default();
        if !ordered {
            got.sort_unstable();
        }
        assert_eq!(
            got,
            (0..PER_KEY).collect::<Vec<_>>(),
            "key {key}: each message once{}",
            if ordered { ", in publish order" } else { "" }
        );
    }
}

fn relays_source_orders(harness: &impl SourceHarness, herald: &Herald) -> bool {
    harness.relay(herald).source().capabilities().ordered_by_key
}

// --- lease renewal ------------------------------------------------------------------------------

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "conformance.slow")]
struct Slow {
    n: u32,
}

#[async_handler]
async fn slow(_event: Slow, meta: Meta, State(probe): State<Probe>) {
    probe.attempt(&meta);
    tokio::time::sleep(Duration::from_millis(900)).await;
    probe.handled(&meta);
}

/// A handler that runs three times longer than the lease keeps its message (the relay renews the
/// lease), so a second relay never takes it: it runs once, and no lease is lost.
pub async fn a_handler_slower_than_the_lease_runs_once<H: SourceHarness>(harness: H) {
    let probe = Probe::default();
    let herald = herald(&harness, &probe);
    let lease = Duration::from_millis(300);
    let id = publish(&harness, Slow { n: 1 }).await;
    let relays = vec![
        fast(harness.relay(&herald)).lease(lease).start(),
        fast(harness.relay(&herald)).lease(lease).start(),
    ];
    let handler = "herald_conformance::source::slow";
    eventually("the slow handler finished", || probe.runs(id, handler) == 1).await;
    let stats = finish(&harness, &herald, relays).await;
    assert!(stats.renewed > 0, "the lease was renewed: {stats:?}");
    assert_eq!(
        probe.with(|seen| seen.attempts.len()),
        1,
        "started once: no second relay took it"
    );
    assert_eq!(stats.processed, 1);
}

// --- malformed ----------------------------------------------------------------------------------

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "conformance.strict")]
struct Strict {
    n: u32,
}

#[async_handler]
async fn strict(_event: Strict, meta: Meta, State(probe): State<Probe>) {
    probe.handled(&meta);
}

/// A message with `Strict`'s wire name whose payload does not decode into it, as another
/// producer (an older version, another language) might write. Not derived, so not registered.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct NotStrict {
    n: String,
}

impl Message for NotStrict {
    const NAME: &'static str = "conformance.strict";
    const KIND: MessageKind = MessageKind::Event;
    type Reply = ();
}

/// A message whose payload does not decode is dead-lettered with reason `malformed` (one entry
/// per handler of its name, keeping its id and raw payload) and settled as failed; the relay
/// carries on with the next message.
pub async fn a_malformed_message_is_dead_lettered_and_the_relay_carries_on<H: SourceHarness>(
    harness: H,
) {
    let probe = Probe::default();
    let herald = herald(&harness, &probe);
    let bad = publish(&harness, NotStrict { n: "seven".into() }).await;
    let good = publish(&harness, Strict { n: 8 }).await;
    let relay = fast(harness.relay(&herald)).start();
    let handler = "herald_conformance::source::strict";
    eventually("the good message handled", || {
        probe.runs(good, handler) == 1
    })
    .await;
    let stats = finish(&harness, &herald, vec![relay]).await;
    assert_eq!(probe.runs(bad, handler), 0, "the bad one never ran");
    assert_eq!((stats.failed, stats.processed), (1, 1), "{stats:?}");
    let letters = dead_letters(&herald).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.envelope.id, bad);
    assert_eq!(letter.handler, handler);
    assert_eq!(letter.reason, DeadLetterReason::Malformed);
    assert_eq!(letter.failure, Some(FailureKind::Malformed));
    assert_eq!(letter.payload, serde_json::json!({ "n": "seven" }));
}

// --- accounting ---------------------------------------------------------------------------------

/// A mix of messages that succeed, retry, fail for good and do not decode: each is settled once
/// (processed + failed = published), the dead letters are exactly the expected ones, and the
/// ledger balances.
pub async fn a_mixed_workload_balances_the_ledger<H: SourceHarness>(harness: H) {
    let probe = Probe::default();
    let herald = herald(&harness, &probe);
    let relay = fast(harness.relay(&herald)).batch_size(5).start();
    let mut published = 0_u64;
    for n in 0..20 {
        publish(&harness, Counted { n }).await;
        published += 1;
    }
    for _ in 0..3 {
        publish(&harness, Flaky { fail_times: 1 }).await;
        published += 1;
    }
    for n in 0..2 {
        publish(&harness, Doomed { n }).await;
        published += 1;
    }
    publish(&harness, NotStrict { n: "x".into() }).await;
    published += 1;
    let stats = finish(&harness, &herald, vec![relay]).await;
    assert_eq!(
        stats.processed + stats.failed,
        published,
        "every message settled once: {stats:?}"
    );
    assert_eq!(stats.failed, 3, "two doomed, one malformed: {stats:?}");
    let letters = dead_letters(&herald).await;
    assert_eq!(letters.len(), 2 * 2 + 1, "{letters:?}");
    let ledger = herald.ledger();
    assert_eq!(
        ledger.handlers["herald_conformance::source::count_counted"].succeeded,
        20
    );
    assert_eq!(
        ledger.handlers["herald_conformance::source::flaky"].succeeded,
        3
    );
    assert_eq!(ledger.total.in_flight + ledger.total.queued, 0);
}
