//! Regression tests for the in-memory dispatcher's edge paths (issue 8, items 1–9): publish futures
//! cancelled at every await, `CallerRuns` combined with `ordered` and `dedupe`, re-sends of a running
//! id, events with no handler, hand-backs at shutdown, the kind of each dead letter, and evictions.
//! Every test ends with the ledger balanced and nothing in flight: each job ended in one recorded state.

use herald::{
    async_handler, DeadLetter, DeadLetterReason, DeadLetterStore, Event, FailureKind, HandlerError,
    HandlerStatus, Herald, InMemoryDeadLetters, Overload, PoolConfig, PublishError, PublishOptions,
    State,
};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Handlers wait here until the test lets them through, so pools fill deterministically.
#[derive(Clone)]
struct Gate(Arc<Semaphore>);

impl Gate {
    fn closed() -> Self {
        Gate(Arc::new(Semaphore::new(0)))
    }
    fn open(&self) {
        self.0.add_permits(1_000);
    }
    async fn pass(&self) {
        self.0.acquire().await.expect("gate never closes").forget();
    }
}

/// What handlers did, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, entry: impl Into<String>) {
        self.0.lock().expect("lock").push(entry.into());
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }
    fn count(&self, prefix: &str) -> usize {
        self.all().iter().filter(|e| e.starts_with(prefix)).count()
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

fn depth(herald: &Herald, pool: &str) -> usize {
    herald
        .pool_stats()
        .into_iter()
        .find(|p| p.name == pool)
        .map(|p| p.depth)
        .expect("pool exists")
}

async fn dead_letters(herald: &Herald) -> Vec<DeadLetter> {
    // Dead letters of cancelled and dropped jobs are written in the background: wait for them to
    // settle by shutting down first where a test needs all of them.
    herald.dead_letters().list(1_000).await.expect("list")
}

/// The handlers under `module` on one pool `inline`: one worker, a queue of one, `CallerRuns`.
fn caller_runs_herald(module: &str, gate: &Gate, log: &Log) -> Herald {
    Herald::builder()
        .handlers_under(module)
        .pool(
            "inline",
            PoolConfig::new()
                .concurrency(1)
                .queue(1)
                .overload(Overload::CallerRuns),
        )
        .state(gate.clone())
        .state(log.clone())
        .build()
        .expect("valid registry")
}

/// Fills the pool `inline`: `fill` runs (held by the gate) and a second one waits in the queue.
async fn fill_inline<F: Event>(herald: &Herald, filler: impl Fn(u32) -> F) {
    drop(herald.publish(filler(0)).await.expect("runs"));
    wait_until("the filler runs", || herald.ledger().total.in_flight == 1).await;
    drop(herald.publish(filler(1)).await.expect("queued"));
    assert_eq!(depth(herald, "inline"), 1);
}

/// Shuts down, then checks that every job ended in exactly one recorded state.
async fn shutdown_balanced(herald: &Herald) -> herald::ShutdownReport {
    let report = herald.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained, "{report:?}");
    assert_eq!(report.still_running_on_callers, 0, "{}", report.ledger);
    assert_eq!(report.ledger.total.in_flight, 0, "{}", report.ledger);
    assert_eq!(report.ledger.total.queued, 0, "{}", report.ledger);
    assert_eq!(report.ledger.total.lost, 0, "{}", report.ledger);
    assert!(report.ledger.is_balanced(), "{}", report.ledger);
    report
}

/// Item 1: a publish future dropped while it waits for room in its second pool gives back the slot it
/// took in the first.
mod cancelled_wait {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "correctness.two_pools")]
    pub(crate) struct TwoPools {
        pub(crate) n: u32,
    }

    #[async_handler(pool = "fast")]
    async fn on_fast(event: TwoPools, State(log): State<Log>) {
        log.push(format!("fast {}", event.n));
    }

    #[async_handler(pool = "slow")]
    async fn on_slow(event: TwoPools, State(gate): State<Gate>, State(log): State<Log>) {
        gate.pass().await;
        log.push(format!("slow {}", event.n));
    }

    #[tokio::test]
    async fn a_publish_cancelled_while_waiting_for_room_gives_back_every_slot() {
        let (gate, log) = (Gate::closed(), Log::default());
        let herald = Herald::builder()
            .handlers_under(module_path!())
            // `fast` has no worker free while the test runs (its one worker is busy below), so a
            // slot taken there stays visible in its depth.
            .pool("fast", PoolConfig::new().concurrency(1).queue(3))
            .pool(
                "slow",
                PoolConfig::new()
                    .concurrency(1)
                    .queue(1)
                    .overload(Overload::WAIT),
            )
            .state(gate.clone())
            .state(log.clone())
            .build()
            .expect("valid registry");
        // 0 runs on `slow`'s worker (held by the gate), 1 fills `slow`'s queue.
        for n in 0..2 {
            drop(herald.publish(TwoPools { n }).await.expect("accepted"));
        }
        wait_until("`fast` handled both", || log.count("fast") == 2).await;
        assert_eq!(depth(&herald, "slow"), 1);
        for n in 2..5 {
            // Takes a slot in `fast`, then waits for room in `slow` and is cancelled there.
            let cancelled =
                tokio::time::timeout(Duration::from_millis(30), herald.publish(TwoPools { n }))
                    .await;
            assert!(cancelled.is_err(), "publish {n} must still be waiting");
            assert_eq!(
                depth(&herald, "fast"),
                0,
                "the cancelled publish {n} left a slot taken in `fast`"
            );
        }
        gate.open();
        wait_until("both pools are idle", || {
            let ledger = herald.ledger().total;
            ledger.in_flight == 0 && ledger.queued == 0
        })
        .await;
        // Both pools have room again at once.
        let outcome = herald
            .try_publish(TwoPools { n: 10 })
            .expect("room in both pools")
            .await;
        assert!(outcome.is_success(), "{outcome:?}");
        let report = shutdown_balanced(&herald).await;
        // Cancelled publishes were never accepted: nothing of 2..5 ran or was counted.
        assert_eq!(report.ledger.total.accepted, 6, "{}", report.ledger);
        assert_eq!(log.count("fast 2") + log.count("fast 3"), 0);
    }
}

/// Items 2 and 8: the `CallerRuns` jobs of a publisher that gives up are dead-lettered (reason
/// `cancelled`), the one cut off mid-run and the one that never started; the ledger balances.
mod caller_runs_cancelled {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "correctness.filler")]
    pub(crate) struct Filler {
        pub(crate) n: u32,
    }

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "correctness.two_handlers")]
    pub(crate) struct TwoHandlers {
        pub(crate) n: u32,
    }

    #[async_handler(pool = "inline")]
    async fn fill(_event: Filler, State(gate): State<Gate>) {
        gate.pass().await;
    }

    #[async_handler(pool = "inline")]
    async fn first(event: TwoHandlers, State(gate): State<Gate>, State(log): State<Log>) {
        log.push(format!("first {}", event.n));
        gate.pass().await;
    }

    #[async_handler(pool = "inline")]
    async fn second(event: TwoHandlers, State(log): State<Log>) {
        log.push(format!("second {}", event.n));
    }

    #[tokio::test]
    async fn jobs_of_a_publisher_that_gives_up_are_dead_lettered_not_lost() {
        let (gate, log) = (Gate::closed(), Log::default());
        let herald = caller_runs_herald(module_path!(), &gate, &log);
        fill_inline(&herald, |n| Filler { n }).await;
        // Both handlers find the pool full: they run on this task, `first` blocks, and we give up.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            herald.publish(TwoHandlers { n: 7 }),
        )
        .await;
        assert!(gave_up.is_err(), "the publisher was running `first`");
        assert_eq!(log.all(), ["first 7"]);
        gate.open();
        let report = shutdown_balanced(&herald).await;
        let ledger = &report.ledger.handlers;
        assert_eq!(
            ledger["correctness::caller_runs_cancelled::first"].dead_lettered,
            1
        );
        assert_eq!(
            ledger["correctness::caller_runs_cancelled::second"].dead_lettered,
            1
        );
        let mut letters = dead_letters(&herald).await;
        letters.sort_by(|a, b| a.handler.cmp(&b.handler));
        let summary: Vec<_> = letters
            .iter()
            .map(|d| (d.handler.as_str(), d.reason, d.failure))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "correctness::caller_runs_cancelled::first",
                    DeadLetterReason::Cancelled,
                    Some(FailureKind::Cancelled)
                ),
                // Never started: no attempt failed.
                (
                    "correctness::caller_runs_cancelled::second",
                    DeadLetterReason::Cancelled,
                    None
                ),
            ]
        );
        // Re-driving the one that never ran delivers it.
        let second = letters
            .iter()
            .find(|d| d.handler.ends_with("second"))
            .expect("second");
        assert_eq!(second.payload["n"], 7);
    }
}

/// Item 3: a cancelled `CallerRuns` attempt of a `dedupe` handler releases its id, so a re-send runs.
mod caller_runs_dedupe {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "correctness.filler_dedupe")]
    pub(crate) struct Filler {
        pub(crate) n: u32,
    }

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "correctness.coupon")]
    pub(crate) struct Coupon {
        pub(crate) block: bool,
    }

    #[async_handler(pool = "inline")]
    async fn fill(_event: Filler, State(gate): State<Gate>) {
        gate.pass().await;
    }

    #[async_handler(pool = "inline", dedupe)]
    async fn grant(event: Coupon, State(gate): State<Gate>, State(log): State<Log>) {
        log.push(format!("grant block={}", event.block));
        if event.block {
            gate.pass().await;
        }
    }

    #[tokio::test]
    async fn a_cancelled_inline_attempt_releases_its_dedupe_id() {
        let (gate, log) = (Gate::closed(), Log::default());
        let herald = caller_runs_herald(module_path!(), &gate, &log);
        fill_inline(&herald, |n| Filler { n }).await;
        let key = || PublishOptions::new().idempotency_key("coupon-42");
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            herald.publish_with(Coupon { block: true }, key()),
        )
        .await;
        assert!(gave_up.is_err(), "the publisher was running `grant`");
        gate.open();
        wait_until("the pool drains", || depth(&herald, "inline") == 0).await;
        let resent = herald
            .publish_with(Coupon { block: false }, key())
            .await
            .expect("accepted")
            .await;
        assert!(
            matches!(
                resent.reports[0].status,
                HandlerStatus::Succeeded { .. }
            ),
            "the re-send must run, not be reported a duplicate of a message that never completed: {resent:?}"
        );
        assert_eq!(log.count("grant block=false"), 1);
        shutdown_balanced(&herald).await;
    }
}

/// Item 4: `ordered` holds on a `CallerRuns` pool: same-key jobs run one at a time, in publish
/// order; a publisher whose job must wait for its key waits for its turn, then runs it itself.
mod caller_runs_ordered {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "correctness.account_changed", key = account)]
    pub(crate) struct AccountChanged {
        pub(crate) account: String,
        pub(crate) n: u32,
    }

    #[async_handler(pool = "inline", ordered)]
    async fn apply(event: AccountChanged, State(gate): State<Gate>, State(log): State<Log>) {
        log.push(format!("start {}", event.n));
        if event.n == 0 {
            gate.pass().await;
        }
        tokio::task::yield_now().await;
        log.push(format!("end {}", event.n));
    }

    fn herald(gate: &Gate, log: &Log) -> Herald {
        caller_runs_herald(module_path!(), gate, log)
    }

    fn event(n: u32) -> AccountChanged {
        AccountChanged {
            account: "acct-1".into(),
            n,
        }
    }

    fn accepted(herald: &Herald) -> u64 {
        herald.ledger().total.accepted
    }

    #[tokio::test]
    async fn same_key_jobs_run_in_publish_order_one_at_a_time() {
        let (gate, log) = (Gate::closed(), Log::default());
        let herald = herald(&gate, &log);
        // 0 runs on the worker (held by the gate); 1 parks behind it holding the queue's one slot.
        drop(herald.publish(event(0)).await.expect("accepted"));
        wait_until("0 runs", || log.count("start 0") == 1).await;
        drop(herald.publish(event(1)).await.expect("accepted"));
        // 2 and 3 find the pool full: CallerRuns, but their key is busy, so their publishers wait.
        let mut publishers = Vec::new();
        for n in 2..4 {
            let herald2 = herald.clone();
            publishers.push(tokio::spawn(async move {
                herald2.publish(event(n)).await.expect("accepted").await
            }));
            wait_until("the publish is admitted", || {
                accepted(&herald) == u64::from(n) + 1
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(log.all(), ["start 0"], "nothing may overtake 0");
        gate.open();
        for publisher in publishers {
            let outcome = publisher.await.expect("publisher");
            assert!(outcome.is_success(), "{outcome:?}");
        }
        wait_until("all four ran", || log.count("end") == 4).await;
        let expected: Vec<String> = (0..4)
            .flat_map(|n| [format!("start {n}"), format!("end {n}")])
            .collect();
        assert_eq!(log.all(), expected, "one at a time, in publish order");
        shutdown_balanced(&herald).await;
    }

    #[tokio::test]
    async fn a_publisher_that_gives_up_while_waiting_for_its_turn_is_dead_lettered_and_the_key_moves_on(
    ) {
        let (gate, log) = (Gate::closed(), Log::default());
        let herald = herald(&gate, &log);
        drop(herald.publish(event(0)).await.expect("accepted"));
        wait_until("0 runs", || log.count("start 0") == 1).await;
        drop(herald.publish(event(1)).await.expect("accepted"));
        let gave_up =
            tokio::time::timeout(Duration::from_millis(30), herald.publish(event(2))).await;
        assert!(gave_up.is_err(), "2 waits for its turn");
        let later = tokio::spawn({
            let herald = herald.clone();
            async move { herald.publish(event(3)).await.expect("accepted").await }
        });
        wait_until("3 is admitted", || accepted(&herald) == 4).await;
        gate.open();
        let outcome = later.await.expect("publisher of 3");
        assert!(outcome.is_success(), "{outcome:?}");
        wait_until("0, 1 and 3 ran", || log.count("end") == 3).await;
        assert_eq!(
            log.all(),
            ["start 0", "end 0", "start 1", "end 1", "start 3", "end 3"]
        );
        let report = shutdown_balanced(&herald).await;
        assert_eq!(report.ledger.total.dead_lettered, 1, "{}", report.ledger);
        let letters = dead_letters(&herald).await;
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].reason, DeadLetterReason::Cancelled);
        assert_eq!(letters[0].payload["n"], 2);
    }
}

/// Item 5: a re-send that arrives while the first attempt runs waits for its outcome: a duplicate only
/// if the first succeeded; it runs itself if the first failed.
mod resend_while_running {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "correctness.sms")]
    pub(crate) struct Sms {
        pub(crate) fail: bool,
    }

    #[async_handler(pool = "sms", dedupe, retry(max_attempts = 1))]
    async fn send_sms(
        event: Sms,
        State(gate): State<Gate>,
        State(log): State<Log>,
    ) -> Result<(), HandlerError> {
        log.push(format!("sms fail={}", event.fail));
        if event.fail {
            gate.pass().await;
            return Err(HandlerError::msg("partner 503"));
        }
        Ok(())
    }

    fn herald(gate: &Gate, log: &Log) -> Herald {
        Herald::builder()
            .handlers_under(module_path!())
            .pool("sms", PoolConfig::new().concurrency(4))
            .state(gate.clone())
            .state(log.clone())
            .build()
            .expect("valid registry")
    }

    #[tokio::test]
    async fn a_resend_of_a_running_id_that_then_fails_runs_instead_of_reporting_a_duplicate() {
        let (gate, log) = (Gate::closed(), Log::default());
        let herald = herald(&gate, &log);
        let key = || PublishOptions::new().idempotency_key("sms-1");
        let first = herald
            .publish_with(Sms { fail: true }, key())
            .await
            .expect("accepted");
        wait_until("the first attempt runs", || log.count("sms") == 1).await;
        let resent = herald
            .publish_with(Sms { fail: false }, key())
            .await
            .expect("accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(log.count("sms"), 1, "the re-send waits for the running one");
        gate.open();
        let first = first.await;
        assert!(!first.is_success());
        let resent = resent.await;
        assert!(
            matches!(resent.reports[0].status, HandlerStatus::Succeeded { .. }),
            "{resent:?}"
        );
        assert_eq!(log.all(), ["sms fail=true", "sms fail=false"]);
        shutdown_balanced(&herald).await;
    }

    #[tokio::test]
    async fn a_resend_of_a_running_id_that_then_succeeds_is_a_duplicate() {
        let (gate, log) = (Gate::closed(), Log::default());
        let herald = herald(&gate, &log);
        let key = || PublishOptions::new().idempotency_key("sms-2");
        let first = herald
            .publish_with(Sms { fail: false }, key())
            .await
            .expect("accepted");
        let resent = herald
            .publish_with(Sms { fail: false }, key())
            .await
            .expect("accepted");
        assert!(first.await.is_success());
        let resent = resent.await;
        assert!(
            matches!(resent.reports[0].status, HandlerStatus::Deduplicated),
            "{resent:?}"
        );
        assert_eq!(log.count("sms"), 1);
        shutdown_balanced(&herald).await;
    }
}

/// Item 6: an event with no handler resolves complete (nothing to do is complete).
mod no_handler {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "correctness.nobody_listens")]
    pub(crate) struct NobodyListens;

    #[tokio::test]
    async fn an_event_with_no_handler_is_complete_and_successful() {
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .build()
            .expect("valid registry");
        let outcome = herald.publish(NobodyListens).await.expect("accepted").await;
        assert!(outcome.complete, "{outcome:?}");
        assert!(outcome.reports.is_empty());
        assert!(outcome.is_success());
        let outcome = herald.try_publish(NobodyListens).expect("accepted").await;
        assert!(outcome.complete);
        shutdown_balanced(&herald).await;
    }
}

/// Item 7: every hand-back counts once in `rejected`, whether the pool was full or Herald was
/// shutting down, and whether the publisher was waiting or came after.
mod hand_backs {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "correctness.export")]
    pub(crate) struct Export {
        pub(crate) n: u32,
    }

    #[async_handler(pool = "small")]
    async fn export(_event: Export, State(gate): State<Gate>) {
        gate.pass().await;
    }

    #[tokio::test]
    async fn every_hand_back_counts_once_in_rejected() {
        let gate = Gate::closed();
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .pool("small", PoolConfig::new().concurrency(1).queue(1))
            .state(gate.clone())
            .build()
            .expect("valid registry");
        drop(herald.publish(Export { n: 0 }).await.expect("runs"));
        wait_until("0 runs", || herald.ledger().total.in_flight == 1).await;
        drop(herald.publish(Export { n: 1 }).await.expect("queued"));
        // A full pool, without waiting: handed back.
        assert!(matches!(
            herald.try_publish(Export { n: 2 }),
            Err(PublishError::Rejected { .. })
        ));
        assert_eq!(herald.ledger().total.rejected, 1);
        // A publisher waiting for room when shutdown begins: handed back.
        let waiting = tokio::spawn({
            let herald = herald.clone();
            async move { herald.publish(Export { n: 3 }).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let shutdown = tokio::spawn({
            let herald = herald.clone();
            async move { herald.shutdown(Duration::from_millis(100)).await }
        });
        let waited = waiting.await.expect("waiting publisher");
        assert!(matches!(waited, Err(PublishError::ShuttingDown { .. })));
        // A publish after shutdown began: handed back too.
        assert!(matches!(
            herald.publish(Export { n: 4 }).await,
            Err(PublishError::ShuttingDown { .. })
        ));
        assert!(matches!(
            herald.try_publish(Export { n: 5 }),
            Err(PublishError::ShuttingDown { .. })
        ));
        let report = shutdown.await.expect("shutdown");
        gate.open();
        assert_eq!(report.ledger.total.rejected, 4, "{}", report.ledger);
        assert_eq!(herald.ledger().total.rejected, 4);
        assert!(report.ledger.is_balanced(), "{}", report.ledger);
    }
}

/// Item 8: a dead letter records what kind of failure it was, as data.
mod failure_kinds {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "correctness.job")]
    pub(crate) struct Job {
        pub(crate) how: String,
    }

    #[async_handler(retry(max_attempts = 2, backoff = fixed(1ms)), timeout = "20ms")]
    async fn work(event: Job) -> Result<(), HandlerError> {
        match event.how.as_str() {
            "error" => Err(HandlerError::msg("partner 503")),
            "permanent" => Err(HandlerError::permanent(HandlerError::msg("bad number"))),
            "panic" => panic!("index out of bounds"),
            "timeout" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    #[tokio::test]
    async fn each_dead_letter_says_what_kind_of_failure_it_was() {
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .build()
            .expect("valid registry");
        for how in ["error", "permanent", "panic", "timeout"] {
            let outcome = herald
                .publish(Job { how: how.into() })
                .await
                .expect("accepted")
                .await;
            assert!(!outcome.is_success());
        }
        let letters = dead_letters(&herald).await;
        let kinds: Vec<_> = letters
            .iter()
            .map(|d| {
                (
                    d.payload["how"].as_str().unwrap_or_default().to_owned(),
                    d.failure,
                    d.attempts,
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("error".to_owned(), Some(FailureKind::Error), 2),
                ("permanent".to_owned(), Some(FailureKind::PermanentError), 1),
                ("panic".to_owned(), Some(FailureKind::Panic), 2),
                ("timeout".to_owned(), Some(FailureKind::Timeout), 2),
            ]
        );
        assert!(letters.iter().all(|d| d.reason == DeadLetterReason::Failed));
        // The kind survives a JSON round trip (the CLI's and the SQL stores' form).
        let json = serde_json::to_value(&letters[2]).expect("json");
        assert_eq!(json["failure"], "panic");
        shutdown_balanced(&herald).await;
    }
}

/// Item 9: evictions from the bounded in-memory dead letters are visible through the store trait
/// and the ledger.
mod evictions {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "correctness.always_fails")]
    pub(crate) struct AlwaysFails {
        pub(crate) n: u32,
    }

    #[async_handler(retry(max_attempts = 1))]
    async fn fail(_event: AlwaysFails) -> Result<(), HandlerError> {
        Err(HandlerError::msg("no"))
    }

    #[tokio::test]
    async fn evicted_dead_letters_are_counted_by_the_store_and_the_ledger() {
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .dead_letters(InMemoryDeadLetters::new(2))
            .build()
            .expect("valid registry");
        for n in 0..5 {
            let outcome = herald
                .publish(AlwaysFails { n })
                .await
                .expect("accepted")
                .await;
            assert!(!outcome.is_success());
        }
        let store: &Arc<dyn DeadLetterStore> = herald.dead_letters();
        assert_eq!(store.count().await.expect("count"), 2);
        assert_eq!(store.evicted(), 3);
        let report = shutdown_balanced(&herald).await;
        assert_eq!(report.ledger.dead_letters_evicted, 3);
        assert_eq!(report.ledger.total.dead_lettered, 5);
        assert!(report.ledger.to_string().contains("evicted"));
    }
}
