//! Observers registered with `HeraldBuilder::observe` (issue 9): every attempt is seen with its
//! outcome and duration, `on_final` comes once per accepted job whatever ends it (each overload
//! policy, a `CallerRuns` publisher that gives up, shutdown), the ledger rebuilt from `on_ledger`
//! equals `herald.ledger()`, and a panicking observer loses no job.

use herald::observe::{
    AfterFailure, AttemptEnd, AttemptOutcome, AttemptStart, FinalEvent, LedgerChange, LedgerEvent,
};
use herald::{
    async_handler, AttemptObserver, Counts, Disposition, Envelope, Event, HandlerError,
    HandlerErrorKind, HandlerStatus, Herald, MessageId, Meta, Overload, PoolConfig, State,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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

/// One attempt as an observer saw it.
#[derive(Debug, Clone, PartialEq)]
struct Attempt {
    handler: &'static str,
    id: MessageId,
    attempt: u32,
    /// `None` while only `on_attempt_start` was seen.
    outcome: Option<String>,
    duration: Duration,
}

/// One `on_final` as an observer saw it.
#[derive(Debug, Clone, PartialEq)]
struct Final {
    handler: &'static str,
    id: MessageId,
    status: String,
    disposition: Option<Disposition>,
    attempts: u32,
}

/// Records every hook call.
#[derive(Default)]
struct Recorder {
    attempts: Mutex<Vec<Attempt>>,
    finals: Mutex<Vec<Final>>,
    ledger: Mutex<Vec<LedgerEvent>>,
}

fn outcome(outcome: &AttemptOutcome<'_>) -> String {
    match outcome {
        AttemptOutcome::Succeeded => "succeeded".to_owned(),
        AttemptOutcome::Duplicate => "duplicate".to_owned(),
        AttemptOutcome::Interrupted => "interrupted".to_owned(),
        AttemptOutcome::Failed { error, then } => {
            let then = match then {
                AfterFailure::Retry { .. } => "retry",
                AfterFailure::Deferred => "deferred",
                AfterFailure::Final => "final",
                other => panic!("unexpected {other:?}"),
            };
            format!("failed {:?}, {then}", error.kind())
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn status(status: &HandlerStatus) -> String {
    match status {
        HandlerStatus::Succeeded { .. } => "succeeded",
        HandlerStatus::Failed(failure) => match failure.error.kind() {
            HandlerErrorKind::Cancelled => "failed (cancelled)",
            _ => "failed",
        },
        HandlerStatus::Deduplicated => "deduplicated",
        HandlerStatus::Dropped => "dropped",
        HandlerStatus::Interrupted => "interrupted",
        HandlerStatus::Deferred { .. } => "deferred",
        other => panic!("unexpected {other:?}"),
    }
    .to_owned()
}

impl AttemptObserver for Recorder {
    fn on_attempt_start(&self, attempt: &AttemptStart<'_>) {
        self.attempts.lock().expect("lock").push(Attempt {
            handler: attempt.handler,
            id: attempt.envelope.id,
            attempt: attempt.attempt,
            outcome: None,
            duration: Duration::ZERO,
        });
    }

    fn on_attempt_end(&self, end: &AttemptEnd<'_>) {
        let mut attempts = self.attempts.lock().expect("lock");
        let started = attempts
            .iter_mut()
            .rev()
            .find(|a| a.handler == end.handler && a.id == end.envelope.id)
            .expect("on_attempt_start came first");
        assert_eq!(started.attempt, end.attempt);
        assert_eq!(started.outcome, None, "one end per start");
        started.outcome = Some(outcome(&end.outcome));
        started.duration = end.duration;
    }

    fn on_final(&self, job: &FinalEvent<'_>) {
        self.finals.lock().expect("lock").push(Final {
            handler: job.handler,
            id: job.envelope.id,
            status: status(job.status),
            disposition: job.disposition(),
            attempts: job.attempts(),
        });
    }

    fn on_ledger(&self, event: &LedgerEvent) {
        self.ledger.lock().expect("lock").push(*event);
    }
}

impl Recorder {
    fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().expect("lock").clone()
    }

    fn finals(&self) -> Vec<Final> {
        self.finals.lock().expect("lock").clone()
    }

    /// The ledger's totals, rebuilt from `on_ledger` alone.
    fn replayed(&self) -> Counts {
        let mut c = Counts::default();
        let (mut on_caller, mut started, mut ended, mut left) = (0, 0, 0, 0);
        let mut queued_in = 0;
        for event in self.ledger.lock().expect("lock").iter() {
            match event.change {
                LedgerChange::Accepted(admission) => {
                    c.accepted += 1;
                    match admission {
                        herald::observe::Admission::Queued => queued_in += 1,
                        herald::observe::Admission::OnCaller => on_caller += 1,
                        herald::observe::Admission::Dropped => c.dropped += 1,
                        other => panic!("unexpected {other:?}"),
                    }
                }
                LedgerChange::Rejected => c.rejected += 1,
                LedgerChange::Started => started += 1,
                LedgerChange::Ended(ending) => {
                    ended += 1;
                    match ending {
                        herald::observe::Ending::Succeeded => c.succeeded += 1,
                        herald::observe::Ending::DeadLettered => c.dead_lettered += 1,
                        herald::observe::Ending::Ignored => c.ignored += 1,
                        herald::observe::Ending::Deduplicated => c.deduplicated += 1,
                        herald::observe::Ending::Deferred => c.deferred += 1,
                        other => panic!("unexpected {other:?}"),
                    }
                }
                LedgerChange::Evicted => {
                    left += 1;
                    c.dropped += 1;
                }
                LedgerChange::Unqueued => {
                    left += 1;
                    c.dead_lettered += 1;
                }
                LedgerChange::Lost => c.lost += 1,
                LedgerChange::FailedAttempt => c.failed_attempts += 1,
                LedgerChange::Retried => c.retried += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        c.in_flight = on_caller + started - ended;
        c.queued = queued_in - started - left;
        c
    }

    /// Every accepted job has exactly one `on_final`, every attempt started has ended, and the
    /// ledger rebuilt from `on_ledger` is the ledger.
    fn assert_complete(&self, herald: &Herald) {
        let ledger = herald.ledger();
        assert!(ledger.is_balanced(), "{ledger}");
        assert_eq!(self.replayed(), ledger.total, "{ledger}");
        let finals = self.finals();
        assert_eq!(finals.len() as u64, ledger.total.accepted, "{finals:#?}");
        let mut per_job: BTreeMap<(&str, MessageId), usize> = BTreeMap::new();
        for f in &finals {
            *per_job.entry((f.handler, f.id)).or_default() += 1;
        }
        assert!(per_job.values().all(|n| *n == 1), "{finals:#?}");
        let attempts = self.attempts();
        assert!(
            attempts.iter().all(|a| a.outcome.is_some()),
            "{attempts:#?}"
        );
        assert_eq!(
            attempts.len() as u64,
            ledger.total.succeeded
                + ledger.total.failed_attempts
                + self
                    .attempts()
                    .iter()
                    .filter(|a| matches!(a.outcome.as_deref(), Some("duplicate" | "interrupted")))
                    .count() as u64,
            "{attempts:#?}"
        );
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

/// Each outcome of an attempt, with its duration, and the final status of each job.
mod attempts {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "observers.work")]
    pub(crate) struct Work {
        pub(crate) kind: String,
    }

    #[async_handler(retry(max_attempts = 3, backoff = fixed(1ms)), timeout = "30ms")]
    async fn work(event: Work, meta: Meta) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        match event.kind.as_str() {
            "flaky" if meta.attempt() < 3 => Err(HandlerError::msg("not yet")),
            "permanent" => Err(HandlerError::permanent(HandlerError::msg("bad input"))),
            "duplicate" => Err(HandlerError::duplicate("seen it")),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            }
            "panic" => panic!("boom"),
            _ => Ok(()),
        }
    }

    #[async_handler(dedupe, retry(max_attempts = 1), on_failure = log)]
    async fn once(event: Work) -> Result<(), HandlerError> {
        match event.kind.as_str() {
            "permanent" => Err(HandlerError::msg("logged")),
            _ => Ok(()),
        }
    }

    #[tokio::test]
    async fn every_attempt_is_seen_with_its_outcome_and_duration() {
        let recorder = Arc::new(Recorder::default());
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .observe(recorder.clone())
            .build()
            .expect("valid registry");
        let mut ids = BTreeMap::new();
        for kind in ["ok", "flaky", "permanent", "duplicate", "slow", "panic"] {
            let delivery = herald
                .publish(Work {
                    kind: kind.to_owned(),
                })
                .await
                .expect("accepted");
            ids.insert(delivery.message_id(), kind);
            let outcome = delivery.await;
            assert!(outcome.complete);
        }
        // The same id again: `once` has completed it (dedupe), `work` runs it again.
        let again = herald
            .publish_with(
                Work {
                    kind: "ok".to_owned(),
                },
                herald::PublishOptions::new().idempotency_key("k"),
            )
            .await
            .expect("accepted");
        ids.insert(again.message_id(), "first of k");
        assert!(again.await.is_success());
        let repeat = herald
            .publish_with(
                Work {
                    kind: "ok".to_owned(),
                },
                herald::PublishOptions::new().idempotency_key("k"),
            )
            .await
            .expect("accepted");
        ids.insert(repeat.message_id(), "repeat");
        assert!(repeat.await.is_success());

        let kind_of = |id: &MessageId| ids[id];
        let work = "observers::attempts::work";
        let seen: Vec<_> = recorder
            .attempts()
            .into_iter()
            .filter(|a| a.handler == work)
            .map(|a| {
                // Every attempt sleeps 20 ms first; the timed-out one lasts its 30 ms timeout.
                assert!(a.duration >= Duration::from_millis(20), "{a:?}");
                if kind_of(&a.id) == "slow" {
                    assert!(a.duration >= Duration::from_millis(30), "{a:?}");
                }
                (kind_of(&a.id), a.attempt, a.outcome.expect("ended"))
            })
            .collect();
        let failed = |kind: &str, then: &str| format!("failed {kind}, {then}");
        assert_eq!(
            seen,
            [
                ("ok", 1, "succeeded".to_owned()),
                ("flaky", 1, failed("Failed", "retry")),
                ("flaky", 2, failed("Failed", "retry")),
                ("flaky", 3, "succeeded".to_owned()),
                ("permanent", 1, failed("Failed", "final")),
                ("duplicate", 1, "duplicate".to_owned()),
                ("slow", 1, failed("TimedOut", "retry")),
                ("slow", 2, failed("TimedOut", "retry")),
                ("slow", 3, failed("TimedOut", "final")),
                ("panic", 1, failed("Panicked", "retry")),
                ("panic", 2, failed("Panicked", "retry")),
                ("panic", 3, failed("Panicked", "final")),
                ("first of k", 1, "succeeded".to_owned()),
                ("repeat", 1, "succeeded".to_owned()),
            ]
        );

        let finals: Vec<_> = recorder
            .finals()
            .into_iter()
            .map(|f| {
                (
                    f.handler.rsplit("::").next().expect("name"),
                    kind_of(&f.id),
                    f.status,
                    f.disposition,
                    f.attempts,
                )
            })
            .collect();
        let dead = Some(Disposition::DeadLettered);
        let logged = Some(Disposition::Logged);
        for expected in [
            ("work", "ok", "succeeded", None, 1),
            ("work", "flaky", "succeeded", None, 3),
            ("work", "permanent", "failed", dead, 1),
            ("work", "duplicate", "deduplicated", None, 0),
            ("work", "slow", "failed", dead, 3),
            ("work", "panic", "failed", dead, 3),
            ("once", "permanent", "failed", logged, 1),
            ("once", "first of k", "succeeded", None, 1),
            // The dedupe window answered: no attempt ran.
            ("once", "repeat", "deduplicated", None, 0),
            ("work", "repeat", "succeeded", None, 1),
        ] {
            let (handler, kind, status, disposition, attempts) = expected;
            assert!(
                finals.contains(&(handler, kind, status.to_owned(), disposition, attempts)),
                "{expected:?} not in {finals:#?}"
            );
        }
        assert!(!recorder
            .attempts()
            .iter()
            .any(|a| a.handler.ends_with("once") && kind_of(&a.id) == "repeat"));
        recorder.assert_complete(&herald);
        assert_eq!(herald.ledger().total.retried, 6);
    }

    /// A relay's single attempt that fails before the last one is deferred to the relay.
    #[tokio::test]
    async fn a_single_stored_attempt_that_fails_is_seen_as_deferred() {
        let recorder = Arc::new(Recorder::default());
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .observe(recorder.clone())
            .build()
            .expect("valid registry");
        let payload = herald
            .decode("observers.work", br#"{"kind":"flaky"}"#)
            .expect("decodes");
        let envelope = Envelope::new("observers.work");
        let outcome = herald
            .deliver_attempt(envelope, payload, &["observers::attempts::work"], 1)
            .await
            .expect("delivered")
            .await;
        assert!(matches!(
            outcome.reports[0].status,
            HandlerStatus::Deferred { attempt: 1, .. }
        ));
        let attempts = recorder.attempts();
        assert_eq!(attempts.len(), 1);
        assert_eq!(
            attempts[0].outcome.as_deref(),
            Some("failed Failed, deferred")
        );
        let finals = recorder.finals();
        assert_eq!(
            (finals.len(), finals[0].status.as_str(), finals[0].attempts),
            (1, "deferred", 1)
        );
        recorder.assert_complete(&herald);
    }
}

/// `on_final` once per job under every overload policy, for a `CallerRuns` publisher that gives up,
/// and at shutdown.
mod policies {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "observers.reject")]
    pub(crate) struct ToReject {
        pub(crate) n: u32,
    }

    #[async_handler(pool = "reject")]
    async fn on_reject(_event: ToReject, State(gate): State<Gate>) {
        gate.pass().await;
    }

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "observers.newest")]
    pub(crate) struct ToNewest {
        pub(crate) n: u32,
    }

    #[async_handler(pool = "newest")]
    async fn on_newest(_event: ToNewest, State(gate): State<Gate>) {
        gate.pass().await;
    }

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "observers.oldest")]
    pub(crate) struct ToOldest {
        pub(crate) n: u32,
    }

    #[async_handler(pool = "oldest")]
    async fn on_oldest(_event: ToOldest, State(gate): State<Gate>) {
        gate.pass().await;
    }

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "observers.inline")]
    pub(crate) struct ToInline {
        pub(crate) n: u32,
    }

    #[async_handler(pool = "inline")]
    async fn on_inline(_event: ToInline, State(gate): State<Gate>) {
        gate.pass().await;
    }

    fn pool(overload: Overload) -> PoolConfig {
        PoolConfig::new().concurrency(1).queue(1).overload(overload)
    }

    fn herald(recorder: &Arc<Recorder>, gate: &Gate) -> Herald {
        Herald::builder()
            .handlers_under(module_path!())
            .pool("reject", pool(Overload::Reject))
            .pool("newest", pool(Overload::DropNewest))
            .pool("oldest", pool(Overload::DropOldest))
            .pool("inline", pool(Overload::CallerRuns))
            .state(gate.clone())
            .observe(recorder.clone())
            .build()
            .expect("valid registry")
    }

    /// Publishes three messages while the gate is closed: the first runs, the second waits in the
    /// queue, and the third meets the full pool (the `CallerRuns` one runs on this task, which
    /// gives up after 50 ms).
    async fn three<E: Event>(herald: &Herald, handler: &str, event: impl Fn(u32) -> E) {
        let running = |herald: &Herald| herald.ledger().handlers[handler].in_flight;
        drop(herald.try_publish(event(0)).expect("runs"));
        wait_until("the first job runs", || running(herald) == 1).await;
        drop(herald.try_publish(event(1)).expect("queued"));
        if handler.ends_with("on_inline") {
            let gave_up =
                tokio::time::timeout(Duration::from_millis(50), herald.publish(event(2))).await;
            assert!(gave_up.is_err(), "the publisher was running the handler");
        } else {
            let third = herald.publish(event(2)).await;
            assert_eq!(third.is_err(), handler.ends_with("on_reject"));
        }
    }

    #[tokio::test]
    async fn every_accepted_job_gets_one_final_whatever_ends_it() {
        let (recorder, gate) = (Arc::new(Recorder::default()), Gate::closed());
        let herald = herald(&recorder, &gate);
        let name = |handler: &str| format!("observers::policies::{handler}");
        three(&herald, &name("on_reject"), |n| ToReject { n }).await;
        three(&herald, &name("on_newest"), |n| ToNewest { n }).await;
        three(&herald, &name("on_oldest"), |n| ToOldest { n }).await;
        three(&herald, &name("on_inline"), |n| ToInline { n }).await;
        let ledger = herald.ledger();
        let of = |handler: &str| ledger.handlers[name(handler).as_str()];
        assert_eq!(of("on_reject").rejected, 1, "{ledger}");
        assert_eq!(of("on_newest").dropped, 1, "{ledger}");
        assert_eq!(of("on_oldest").dropped, 1, "{ledger}");
        let finals_by = |status: &str| {
            recorder
                .finals()
                .iter()
                .filter(|f| f.status == status)
                .count()
        };
        // DropNewest dropped the third message, DropOldest the second.
        assert_eq!(finals_by("dropped"), 2, "{:#?}", recorder.finals());
        // The inline publisher that gave up: its job was cut off mid-attempt and dead-lettered.
        wait_until("the cancelled job is dead-lettered", || {
            finals_by("failed (cancelled)") == 1
        })
        .await;
        let cancelled = recorder
            .finals()
            .into_iter()
            .find(|f| f.status == "failed (cancelled)")
            .expect("cancelled");
        assert_eq!(cancelled.handler, "observers::policies::on_inline");
        assert_eq!(cancelled.disposition, Some(Disposition::DeadLettered));
        assert!(recorder
            .attempts()
            .iter()
            .any(|a| a.handler == "observers::policies::on_inline"
                && a.id == cancelled.id
                && a.outcome.as_deref() == Some("interrupted")));

        // Shutdown with the gate still closed: the running jobs are cut off, the queued ones never
        // run; all of them are interrupted.
        let report = herald.shutdown(Duration::from_millis(50)).await;
        assert!(!report.drained);
        // One job running and one queued in each pool.
        assert_eq!(report.dead_lettered_running, 4, "{report:?}");
        assert_eq!(report.dead_lettered_queued, 4, "{report:?}");
        assert_eq!(
            finals_by("interrupted") as u64,
            report.dead_lettered_running + report.dead_lettered_queued
        );
        assert_eq!(
            recorder
                .attempts()
                .iter()
                .filter(|a| a.outcome.as_deref() == Some("interrupted"))
                .count() as u64,
            // The cancelled inline attempt, and each running job cut off at the deadline.
            1 + report.dead_lettered_running
        );
        gate.open();
        recorder.assert_complete(&herald);
    }
}

/// An observer that panics in every hook loses no job, and the observers after it still run.
mod panicking {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "observers.ping")]
    pub(crate) struct Ping {
        pub(crate) fail: bool,
    }

    #[async_handler(retry(max_attempts = 2, backoff = fixed(1ms)))]
    async fn pong(event: Ping) -> Result<(), HandlerError> {
        if event.fail {
            return Err(HandlerError::msg("no pong"));
        }
        Ok(())
    }

    /// Notes each call, then panics.
    struct Panics(Arc<Mutex<Vec<&'static str>>>);

    impl AttemptObserver for Panics {
        fn on_attempt_start(&self, _: &AttemptStart<'_>) {
            self.0.lock().expect("lock").push("panics: start");
            panic!("observer bug in on_attempt_start");
        }
        fn on_attempt_end(&self, _: &AttemptEnd<'_>) {
            self.0.lock().expect("lock").push("panics: end");
            panic!("observer bug in on_attempt_end");
        }
        fn on_final(&self, _: &FinalEvent<'_>) {
            self.0.lock().expect("lock").push("panics: final");
            panic!("observer bug in on_final");
        }
        fn on_ledger(&self, _: &LedgerEvent) {
            panic!("observer bug in on_ledger");
        }
    }

    /// Notes each call.
    struct Notes(Arc<Mutex<Vec<&'static str>>>);

    impl AttemptObserver for Notes {
        fn on_attempt_start(&self, _: &AttemptStart<'_>) {
            self.0.lock().expect("lock").push("notes: start");
        }
        fn on_attempt_end(&self, _: &AttemptEnd<'_>) {
            self.0.lock().expect("lock").push("notes: end");
        }
        fn on_final(&self, _: &FinalEvent<'_>) {
            self.0.lock().expect("lock").push("notes: final");
        }
    }

    #[tokio::test]
    async fn a_panicking_observer_loses_no_job() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorder = Arc::new(Recorder::default());
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .observe(Panics(calls.clone()))
            .observe(Notes(calls.clone()))
            .observe(recorder.clone())
            .build()
            .expect("valid registry");
        let ok = herald
            .publish(Ping { fail: false })
            .await
            .expect("accepted");
        assert!(ok.await.is_success());
        let failed = herald.publish(Ping { fail: true }).await.expect("accepted");
        let outcome = failed.await;
        assert_eq!(outcome.failures().count(), 1);
        assert_eq!(herald.dead_letters().list(10).await.expect("list").len(), 1);
        // In registration order, the second observer called after the first one panicked.
        let calls = calls.lock().expect("lock").clone();
        let one_attempt = ["panics: start", "notes: start", "panics: end", "notes: end"];
        let expected: Vec<&str> = [
            &one_attempt[..],
            &["panics: final", "notes: final"],
            &one_attempt,
            &one_attempt,
            &["panics: final", "notes: final"],
        ]
        .concat();
        assert_eq!(calls, expected);
        recorder.assert_complete(&herald);
        let report = herald.shutdown(Duration::from_secs(5)).await;
        assert!(report.drained && report.ledger.is_balanced(), "{report:?}");
    }
}

#[test]
fn observer_events_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<AttemptStart<'static>>();
    assert_send_sync::<AttemptEnd<'static>>();
    assert_send_sync::<AttemptOutcome<'static>>();
    assert_send_sync::<FinalEvent<'static>>();
    assert_send_sync::<LedgerEvent>();
    assert_send_sync::<Arc<dyn AttemptObserver>>();
}

/// `StoredError` keeps the error it came from as its source.
#[tokio::test]
async fn a_stored_error_keeps_its_source() {
    let herald = Herald::builder()
        .handlers_under("observers::attempts")
        .build()
        .expect("valid registry");
    let error = herald
        .decode("observers.work", br#"{"kind": 7}"#)
        .expect_err("`kind` is a string");
    assert!(
        matches!(&error, herald::StoredError::Malformed { message, .. } if message == "observers.work"),
        "{error:?}"
    );
    let source = std::error::Error::source(&error).expect("a source");
    assert!(source.downcast_ref::<serde_json::Error>().is_some());
    assert!(error.to_string().contains("invalid type"), "{error}");
}
