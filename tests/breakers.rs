//! Circuit breakers (`#[async_handler(circuit_breaker(failures = N, open_for = ".."))]`): after N
//! failed attempts in a row the handler is not called for `open_for`; its jobs wait without
//! spending attempts; then one probe runs, whose success closes the breaker and whose failure
//! opens it again. With `ordered`, order per key holds; at shutdown the jobs it holds are
//! dead-lettered and the ledger balances.

use herald::observe::{AttemptObserver, BreakerChange, LedgerChange, LedgerEvent};
use herald::{
    async_handler, BreakerState, CircuitBreaker, DeadLetterReason, Delivery, Event, HandlerError,
    HandlerStatus, Herald, Meta, PoolConfig, State,
};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The partner behind the handlers: up or down, and every call it received (label, attempt).
#[derive(Clone, Default)]
struct Partner {
    up: Arc<AtomicBool>,
    calls: Arc<Mutex<Vec<(String, u32)>>>,
    /// Labels that succeeded, in order.
    done: Arc<Mutex<Vec<String>>>,
}

impl Partner {
    fn call(&self, label: &str, attempt: u32) -> Result<(), HandlerError> {
        self.calls
            .lock()
            .expect("lock")
            .push((label.to_owned(), attempt));
        if self.up.load(Ordering::SeqCst) {
            self.done.lock().expect("lock").push(label.to_owned());
            Ok(())
        } else {
            Err(HandlerError::msg("partner unavailable (503)"))
        }
    }
    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
    fn calls(&self) -> Vec<(String, u32)> {
        self.calls.lock().expect("lock").clone()
    }
    fn done(&self) -> Vec<String> {
        self.done.lock().expect("lock").clone()
    }
}

/// Every breaker movement an observer saw, in order.
#[derive(Default)]
struct Changes(Mutex<Vec<BreakerChange>>);

impl AttemptObserver for Changes {
    fn on_ledger(&self, event: &LedgerEvent) {
        if let LedgerChange::Breaker(change) = event.change {
            self.0.lock().expect("lock").push(change);
        }
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn attempts(status: &HandlerStatus) -> u32 {
    match status {
        HandlerStatus::Succeeded { attempts } => *attempts,
        HandlerStatus::Failed(failure) => failure.attempts,
        other => panic!("not ended by an attempt: {other:?}"),
    }
}

mod opening {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "breakers.charge_requested")]
    pub(crate) struct ChargeRequested {
        pub(crate) label: String,
    }

    #[async_handler(
        pool = "partner",
        retry(max_attempts = 2, backoff = fixed(10ms)),
        circuit_breaker(failures = 3, open_for = "300ms")
    )]
    async fn charge(
        event: ChargeRequested,
        meta: Meta,
        State(partner): State<Partner>,
    ) -> Result<(), HandlerError> {
        partner.call(&event.label, meta.attempt())
    }

    const HANDLER: &str = "breakers::opening::charge";

    fn build(partner: &Partner, changes: &Arc<Changes>) -> Herald {
        Herald::builder()
            .handlers_under(module_path!())
            .pool("partner", PoolConfig::new().concurrency(2))
            .state(partner.clone())
            .observe(changes.clone())
            .build()
            .expect("valid registry")
    }

    async fn publish(herald: &Herald, label: &str) -> Delivery {
        herald
            .publish(ChargeRequested {
                label: label.into(),
            })
            .await
            .expect("accepted")
    }

    #[tokio::test]
    async fn it_opens_after_n_failures_holds_jobs_without_spending_attempts_and_a_probe_closes_it()
    {
        let partner = Partner::default();
        let changes = Arc::new(Changes::default());
        let herald = build(&partner, &changes);
        assert_eq!(
            herald.circuit_breaker(HANDLER),
            Some(BreakerState::Closed { failures: 0 })
        );

        // r1 fails twice (its two attempts), r2's first attempt is the third failure in a row.
        let r1 = publish(&herald, "r1").await.await;
        assert_eq!(attempts(&r1.reports[0].status), 2, "{r1:?}");
        assert!(!r1.is_success());
        assert_eq!(
            herald.circuit_breaker(HANDLER),
            Some(BreakerState::Closed { failures: 2 })
        );
        let r2 = publish(&herald, "r2").await;
        eventually("the breaker to open", || {
            herald.circuit_breaker(HANDLER) == Some(BreakerState::Open)
        })
        .await;

        // While open, r2's retry waits in place (in flight) and new jobs are held (still
        // queued); the partner is not called.
        let r3 = publish(&herald, "r3").await;
        let r4 = publish(&herald, "r4").await;
        eventually("r3 and r4 held", || herald.ledger().total.breaker_held >= 3).await;
        let counts = herald.ledger().total;
        assert_eq!((counts.queued, counts.in_flight), (2, 1), "{counts}");
        assert!(counts.is_balanced(), "{counts}");
        assert_eq!(
            partner.calls(),
            [("r1".into(), 1), ("r1".into(), 2), ("r2".into(), 1)]
        );

        partner.set_up(true);
        for (label, delivery, spent) in [("r2", r2, 2), ("r3", r3, 1), ("r4", r4, 1)] {
            let outcome = delivery.await;
            assert!(outcome.is_success(), "{label}: {outcome:?}");
            assert_eq!(
                attempts(&outcome.reports[0].status),
                spent,
                "{label}: waiting spent no attempt"
            );
        }
        assert_eq!(
            herald.circuit_breaker(HANDLER),
            Some(BreakerState::Closed { failures: 0 })
        );
        assert_eq!(partner.calls().len(), 6, "{:?}", partner.calls());

        let counts = herald.ledger().total;
        assert_eq!(
            (
                counts.breaker_opened,
                counts.breaker_probes,
                counts.breaker_closed
            ),
            (1, 1, 1),
            "{counts}"
        );
        assert_eq!((counts.succeeded, counts.dead_lettered), (3, 1));
        assert!(counts.is_balanced(), "{counts}");
        let changes = changes.0.lock().expect("lock").clone();
        assert_eq!(changes.first(), Some(&BreakerChange::Opened), "{changes:?}");
        assert_eq!(changes.last(), Some(&BreakerChange::Closed), "{changes:?}");
        let probes = changes.iter().filter(|c| **c == BreakerChange::Probe);
        assert_eq!(probes.count(), 1, "{changes:?}");
        assert_eq!(
            changes
                .iter()
                .filter(|c| **c == BreakerChange::Held)
                .count() as u64,
            counts.breaker_held
        );
    }
}

mod reopening {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "breakers.sms_requested")]
    pub(crate) struct SmsRequested {
        pub(crate) label: String,
    }

    #[async_handler(
        pool = "sms",
        retry(max_attempts = 1),
        circuit_breaker(failures = 1, open_for = "200ms")
    )]
    async fn send_sms(
        event: SmsRequested,
        meta: Meta,
        State(partner): State<Partner>,
    ) -> Result<(), HandlerError> {
        partner.call(&event.label, meta.attempt())
    }

    const HANDLER: &str = "breakers::reopening::send_sms";

    #[tokio::test]
    async fn a_failed_probe_opens_it_again_and_a_later_probe_closes_it() {
        let partner = Partner::default();
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .pool("sms", PoolConfig::new().concurrency(1))
            .state(partner.clone())
            .build()
            .expect("valid registry");
        let publish = |label: &str| {
            herald.publish(SmsRequested {
                label: label.into(),
            })
        };

        let s1 = publish("s1").await.expect("accepted");
        assert!(!s1.await.is_success());
        assert_eq!(herald.circuit_breaker(HANDLER), Some(BreakerState::Open));
        let s2 = publish("s2").await.expect("accepted");
        let s3 = publish("s3").await.expect("accepted");

        // The first probe (s2) fails: open again; s3 still waits, uncalled.
        let s2 = s2.await;
        assert!(!s2.is_success());
        assert_eq!(partner.calls(), [("s1".into(), 1), ("s2".into(), 1)]);
        assert_eq!(herald.ledger().total.breaker_opened, 2);

        partner.set_up(true);
        let s3 = s3.await;
        assert!(s3.is_success(), "{s3:?}");
        assert_eq!(attempts(&s3.reports[0].status), 1);
        let counts = herald.ledger().total;
        assert_eq!(
            (
                counts.breaker_opened,
                counts.breaker_probes,
                counts.breaker_closed
            ),
            (2, 2, 1),
            "{counts}"
        );
        assert_eq!(
            herald.circuit_breaker(HANDLER),
            Some(BreakerState::Closed { failures: 0 })
        );
        let dead = herald.dead_letters().list(10).await.expect("list");
        assert_eq!(dead.len(), 2, "s1 and the failed probe s2");
        assert!(dead.iter().all(|d| d.reason == DeadLetterReason::Failed));
        assert!(counts.is_balanced(), "{counts}");
    }
}

mod ordered {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "breakers.ledger_entry", key = account)]
    pub(crate) struct LedgerEntry {
        pub(crate) account: String,
        pub(crate) label: String,
    }

    #[async_handler(
        pool = "bank",
        ordered,
        retry(max_attempts = 5, backoff = fixed(10ms)),
        circuit_breaker(failures = 2, open_for = "200ms")
    )]
    async fn post_entry(
        event: LedgerEntry,
        meta: Meta,
        State(partner): State<Partner>,
    ) -> Result<(), HandlerError> {
        partner.call(&event.label, meta.attempt())
    }

    const HANDLER: &str = "breakers::ordered::post_entry";

    #[tokio::test]
    async fn order_per_key_holds_while_the_breaker_opens_and_closes() {
        let partner = Partner::default();
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .pool("bank", PoolConfig::new().concurrency(2))
            .state(partner.clone())
            .build()
            .expect("valid registry");
        let mut deliveries = Vec::new();
        for (account, label) in [("A", "a1"), ("A", "a2"), ("B", "b1"), ("A", "a3")] {
            let delivery = herald
                .publish(LedgerEntry {
                    account: account.into(),
                    label: label.into(),
                })
                .await
                .expect("accepted");
            deliveries.push((label, delivery));
        }
        eventually("the breaker to open", || {
            herald.circuit_breaker(HANDLER) == Some(BreakerState::Open)
        })
        .await;
        partner.set_up(true);
        let calls = partner.calls();
        for (label, delivery) in deliveries {
            let outcome = delivery.await;
            assert!(outcome.is_success(), "{label}: {outcome:?}");
            // Every attempt counted is a call the partner received: waiting cost none.
            let called = partner.calls().iter().filter(|(l, _)| l == label).count() as u32;
            assert_eq!(attempts(&outcome.reports[0].status), called, "{label}");
        }
        assert!(calls.len() >= 2, "two failures opened it: {calls:?}");

        let done = partner.done();
        let position = |label: &str| done.iter().position(|l| l == label).expect(label);
        assert!(
            position("a1") < position("a2") && position("a2") < position("a3"),
            "{done:?}"
        );
        let counts = herald.ledger().total;
        assert_eq!((counts.breaker_opened, counts.breaker_closed), (1, 1));
        assert!(counts.is_balanced(), "{counts}");
    }
}

mod shutdown {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "breakers.export_requested")]
    pub(crate) struct ExportRequested {
        pub(crate) label: String,
    }

    #[async_handler(
        pool = "exports",
        retry(max_attempts = 3, backoff = fixed(10ms)),
        circuit_breaker(failures = 1, open_for = "1h")
    )]
    async fn export(
        event: ExportRequested,
        meta: Meta,
        State(partner): State<Partner>,
    ) -> Result<(), HandlerError> {
        partner.call(&event.label, meta.attempt())
    }

    #[tokio::test]
    async fn shutdown_while_open_dead_letters_every_held_and_waiting_job_and_the_ledger_balances() {
        let partner = Partner::default();
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .pool("exports", PoolConfig::new().concurrency(2))
            .state(partner.clone())
            .build()
            .expect("valid registry");
        let publish = |label: &str| {
            herald.publish(ExportRequested {
                label: label.into(),
            })
        };
        // e1's first attempt opens the breaker; its second waits in place (in flight).
        let e1 = publish("e1").await.expect("accepted");
        eventually("the breaker to open", || {
            herald.ledger().total.breaker_opened == 1
        })
        .await;
        let e2 = publish("e2").await.expect("accepted");
        let e3 = publish("e3").await.expect("accepted");
        eventually("every job held", || herald.ledger().total.breaker_held == 3).await;

        let report = herald.shutdown(Duration::from_millis(100)).await;
        assert!(!report.drained);
        assert_eq!(
            (report.dead_lettered_running, report.dead_lettered_queued),
            (1, 2)
        );
        for delivery in [e1, e2, e3] {
            let outcome = delivery.await;
            assert!(
                matches!(outcome.reports[0].status, HandlerStatus::Interrupted),
                "{outcome:?}"
            );
        }
        assert_eq!(partner.calls(), [("e1".into(), 1)]);
        let dead = herald.dead_letters().list(10).await.expect("list");
        assert_eq!(dead.len(), 3);
        assert!(dead.iter().all(|d| d.reason == DeadLetterReason::Shutdown));
        let ledger = report.ledger;
        assert_eq!((ledger.total.accepted, ledger.total.dead_lettered), (3, 3));
        assert!(ledger.is_balanced(), "{ledger}");
    }
}

mod configuration {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "breakers.ping")]
    pub(crate) struct Ping;

    #[async_handler]
    async fn pong(_event: Ping) {}

    const HANDLER: &str = "breakers::configuration::pong";

    #[tokio::test]
    async fn the_builder_sets_a_breaker_by_name_and_checks_it_with_everything_else() {
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .circuit_breaker(
                HANDLER,
                CircuitBreaker {
                    failures: 4,
                    open_for: Duration::from_secs(5),
                },
            )
            .build()
            .expect("valid registry");
        assert_eq!(
            herald.circuit_breaker(HANDLER),
            Some(BreakerState::Closed { failures: 0 })
        );
        let table = herald.routes().to_string();
        assert!(
            table.contains("circuit_breaker(failures=4, open_for=5s)"),
            "{table}"
        );

        let error = Herald::builder()
            .handlers_under(module_path!())
            .circuit_breaker("nobody", CircuitBreaker::DEFAULT)
            .circuit_breaker(
                HANDLER,
                CircuitBreaker {
                    failures: 0,
                    ..CircuitBreaker::DEFAULT
                },
            )
            .build()
            .expect_err("two problems");
        let text = error.to_string();
        assert_eq!(error.problems.len(), 2, "{text}");
        assert!(
            text.contains("`.circuit_breaker(\"nobody\", ..)` names no handler"),
            "{text}"
        );
        assert!(text.contains("opens after 0 failures"), "{text}");
    }
}

#[cfg(feature = "sqlite")]
mod relay {
    use super::*;
    use herald::outbox::{self, SqliteOutbox};

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "breakers.invoice_issued")]
    pub(crate) struct InvoiceIssued {
        pub(crate) label: String,
    }

    #[async_handler(
        retry(max_attempts = 2, backoff = fixed(10s)),
        circuit_breaker(failures = 1, open_for = "300ms")
    )]
    async fn file_invoice(
        event: InvoiceIssued,
        meta: Meta,
        State(partner): State<Partner>,
    ) -> Result<(), HandlerError> {
        partner.call(&event.label, meta.attempt())
    }

    const HANDLER: &str = "breakers::relay::file_invoice";

    /// A relay's delivery is one attempt of a stored row: a row held by the open breaker is
    /// delivered later on the attempt it would have had, its `fail_count` untouched. (i1's retry
    /// is 10 s away, so only i2 reaches the breaker while it is open.)
    #[tokio::test]
    async fn rows_held_by_an_open_breaker_keep_their_attempts_in_the_outbox() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = outbox::sqlite::connect(dir.path().join("app.db"))
            .await
            .expect("open sqlite file");
        let outbox = SqliteOutbox::new(pool.clone()).await.expect("migrate");
        let partner = Partner::default();
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .state(partner.clone())
            .build()
            .expect("valid registry");
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(10))
            .start();
        let publish = |label: &str| {
            let (pool, outbox) = (pool.clone(), outbox.clone());
            let label = label.to_owned();
            async move {
                outbox
                    .publish(
                        &mut *pool.acquire().await.expect("connection"),
                        InvoiceIssued { label },
                    )
                    .await
                    .expect("publish");
            }
        };

        publish("i1").await;
        eventually("the breaker to open", || {
            herald.circuit_breaker(HANDLER) == Some(BreakerState::Open)
        })
        .await;
        publish("i2").await;
        eventually("i2 held", || herald.ledger().total.breaker_held == 1).await;
        assert_eq!(partner.calls(), [("i1".into(), 1)], "not called while open");
        partner.set_up(true);
        eventually("i2 handled", || partner.done() == ["i2"]).await;
        relay.stop().await;

        // i2 was the probe, on its first attempt: the wait cost it nothing.
        assert_eq!(partner.calls(), [("i1".into(), 1), ("i2".into(), 1)]);
        assert_eq!(herald.ledger().total.breaker_closed, 1);
        let fail_count: i64 = herald::sqlx::query_scalar(
            "SELECT fail_count FROM herald_outbox WHERE payload LIKE '%i2%'",
        )
        .fetch_one(&pool)
        .await
        .expect("row");
        assert_eq!(fail_count, 0);
        assert!(herald.ledger().is_balanced(), "{}", herald.ledger());
    }
}

#[test]
fn breaker_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CircuitBreaker>();
    assert_send_sync::<BreakerState>();
    assert_send_sync::<BreakerChange>();
}
