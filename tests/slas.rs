//! Deadline SLAs in memory (`Herald::builder().sla(Sla::named(..)..)` with no SLA store): an A
//! opens an expectation, a B of the same key fulfils it (on time or late), and the sweeper emits
//! an `SlaBreached` for one still open at its due time. Also the declaration's start-up checks,
//! the routing table, and the per-handler `start_within` deadline. The durable store (the SQL
//! outboxes) is tested in `tests/outbox_slas.rs`.

use herald::observe::{AttemptObserver, LedgerChange, LedgerEvent, SlaChange, SlaEvent};
use herald::sla::ExpectationState;
use herald::{
    async_handler, Event, HandlerError, Herald, PoolConfig, PublishOptions, Sla, SlaBreached, State,
};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The deadline of the tests' SLAs.
const T: Duration = Duration::from_millis(300);
/// The sweeper's interval in the tests.
const SWEEP: Duration = Duration::from_millis(20);

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The `SlaBreached` events a handler received.
#[derive(Clone, Default)]
struct Breaches(Arc<Mutex<Vec<SlaBreached>>>);

impl Breaches {
    fn all(&self) -> Vec<SlaBreached> {
        self.0.lock().expect("lock").clone()
    }
}

/// Every SLA movement an observer saw.
#[derive(Default)]
struct Moves(Mutex<Vec<(String, String, SlaChange)>>);

impl AttemptObserver for Moves {
    fn on_sla(&self, event: &SlaEvent<'_>) {
        self.0.lock().expect("lock").push((
            event.sla.to_owned(),
            event.key.to_owned(),
            event.change,
        ));
    }
}

impl Moves {
    fn all(&self) -> Vec<(String, String, SlaChange)> {
        self.0.lock().expect("lock").clone()
    }
}

mod orders {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "slas.order_placed")]
    pub(crate) struct OrderPlaced {
        pub(crate) order_id: u64,
    }

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "slas.order_shipped")]
    pub(crate) struct OrderShipped {
        pub(crate) order_id: u64,
    }

    #[async_handler]
    async fn escalate(breach: SlaBreached, State(breaches): State<Breaches>) {
        breaches.0.lock().expect("lock").push(breach);
    }

    fn shipped_sla() -> Sla {
        Sla::named("order-shipped")
            .after::<OrderPlaced>()
            .expect::<OrderShipped>()
            .within(T)
            .correlate(
                |placed| placed.order_id.to_string(),
                |shipped| shipped.order_id.to_string(),
            )
    }

    fn build(breaches: &Breaches, moves: &Arc<Moves>) -> Herald {
        Herald::builder()
            .handlers_under(module_path!())
            .state(breaches.clone())
            .observe(moves.clone())
            .sla(shipped_sla())
            .sla_sweep_interval(SWEEP)
            .build()
            .expect("valid registry")
    }

    #[tokio::test]
    async fn an_expectation_nothing_fulfils_is_breached_after_its_deadline_once() {
        let (breaches, moves) = (Breaches::default(), Arc::new(Moves::default()));
        let herald = build(&breaches, &moves);
        let published = Instant::now();
        let delivery = herald
            .publish(OrderPlaced { order_id: 7 })
            .await
            .expect("publish");
        let a_message_id = delivery.message_id();
        let open = herald
            .sla_expectation("order-shipped", a_message_id)
            .await
            .expect("store")
            .expect("opened by the publish, before it returned");
        assert_eq!(open.state, ExpectationState::Pending);
        assert_eq!(open.key, "7");
        assert_eq!(
            (open.due_at - open.opened_at).to_std().expect("positive"),
            T
        );

        eventually("the breach handled", || !breaches.all().is_empty()).await;
        assert!(
            published.elapsed() >= T,
            "breached {:?} after the publish, before its deadline",
            published.elapsed()
        );
        let breach = &breaches.all()[0];
        assert_eq!(breach.sla, "order-shipped");
        assert_eq!(breach.key, "7");
        assert_eq!(breach.a_message_id, a_message_id);
        assert_eq!(breach.due_at, open.due_at);
        assert!(breach.breached_at >= breach.due_at);

        // Many sweeps later, still one.
        tokio::time::sleep(SWEEP * 10).await;
        assert_eq!(breaches.all().len(), 1);
        let ledger = herald.ledger();
        let counts = ledger.slas["order-shipped"];
        assert_eq!((counts.opened, counts.breached), (1, 1), "{ledger}");
        assert_eq!(
            moves.all(),
            [
                ("order-shipped".into(), "7".into(), SlaChange::Opened),
                ("order-shipped".into(), "7".into(), SlaChange::Breached),
            ]
        );
        let status = herald.sla_status().await.expect("status");
        assert_eq!((status[0].pending, status[0].breached), (0, 1));
        assert!(ledger.is_balanced(), "{ledger}");
    }

    #[tokio::test]
    async fn a_b_before_the_deadline_fulfils_it_and_nothing_is_emitted() {
        let (breaches, moves) = (Breaches::default(), Arc::new(Moves::default()));
        let herald = build(&breaches, &moves);
        let placed = herald
            .publish(OrderPlaced { order_id: 1 })
            .await
            .expect("publish");
        tokio::time::sleep(T / 3).await;
        let shipped = herald
            .publish(OrderShipped { order_id: 1 })
            .await
            .expect("publish");

        tokio::time::sleep(T * 2).await;
        assert!(breaches.all().is_empty(), "{:?}", breaches.all());
        let record = herald
            .sla_expectation("order-shipped", placed.message_id())
            .await
            .expect("store")
            .expect("kept");
        assert_eq!(record.state, ExpectationState::Fulfilled);
        assert_eq!(record.fulfilled_by, Some(shipped.message_id()));
        assert!(record.breached_at.is_none());
        let counts = herald.ledger().slas["order-shipped"];
        assert_eq!((counts.fulfilled, counts.breached), (1, 0));
    }

    #[tokio::test]
    async fn a_b_after_the_breach_is_recorded_as_fulfilled_late() {
        let (breaches, moves) = (Breaches::default(), Arc::new(Moves::default()));
        let herald = build(&breaches, &moves);
        let placed = herald
            .publish(OrderPlaced { order_id: 3 })
            .await
            .expect("publish");
        eventually("the breach handled", || breaches.all().len() == 1).await;
        drop(
            herald
                .publish(OrderShipped { order_id: 3 })
                .await
                .expect("publish"),
        );
        let record = herald
            .sla_expectation("order-shipped", placed.message_id())
            .await
            .expect("store")
            .expect("kept");
        assert_eq!(record.state, ExpectationState::FulfilledLate);
        assert!(record.breached_at.is_some() && record.fulfilled_at.is_some());
        let counts = herald.ledger().slas["order-shipped"];
        assert_eq!((counts.breached, counts.fulfilled_late), (1, 1));
        assert_eq!(
            moves.all().last().map(|m| m.2),
            Some(SlaChange::FulfilledLate)
        );
        let status = herald.sla_status().await.expect("status");
        assert_eq!(
            (
                status[0].breached,
                status[0].fulfilled_late,
                status[0].pending
            ),
            (0, 1, 0),
            "nothing is discarded: the late B moved the breached expectation"
        );
    }

    #[tokio::test]
    async fn a_b_fulfils_only_the_expectations_of_its_key() {
        let (breaches, moves) = (Breaches::default(), Arc::new(Moves::default()));
        let herald = build(&breaches, &moves);
        for order_id in [10, 11, 12] {
            drop(
                herald
                    .publish(OrderPlaced { order_id })
                    .await
                    .expect("publish"),
            );
        }
        // Two As of one key: one B fulfils both.
        drop(
            herald
                .publish(OrderPlaced { order_id: 11 })
                .await
                .expect("publish"),
        );
        drop(
            herald
                .publish(OrderShipped { order_id: 11 })
                .await
                .expect("publish"),
        );
        drop(
            herald
                .publish(OrderShipped { order_id: 99 })
                .await
                .expect("publish"),
        );
        eventually("two breaches", || breaches.all().len() == 2).await;
        tokio::time::sleep(SWEEP * 5).await;
        let mut keys: Vec<String> = breaches.all().into_iter().map(|b| b.key).collect();
        keys.sort();
        assert_eq!(keys, ["10", "12"]);
        let status = herald.sla_status().await.expect("status");
        assert_eq!((status[0].fulfilled, status[0].breached), (2, 2));
    }

    #[tokio::test]
    async fn try_publish_records_the_expectation_too() {
        let (breaches, moves) = (Breaches::default(), Arc::new(Moves::default()));
        let herald = build(&breaches, &moves);
        let placed = herald
            .try_publish(OrderPlaced { order_id: 5 })
            .expect("room");
        eventually("the breach handled", || breaches.all().len() == 1).await;
        assert_eq!(breaches.all()[0].a_message_id, placed.message_id());
    }

    #[tokio::test]
    async fn the_routing_table_lists_the_sla() {
        let herald = build(&Breaches::default(), &Arc::new(Moves::default()));
        let table = herald.routes().to_string();
        assert!(
            table.contains("SLAs\n  order-shipped: after slas.order_placed expect slas.order_shipped within 300ms (tests/slas.rs:"),
            "{table}"
        );
        assert!(table.contains("herald.sla_breached (event)"), "{table}");
        assert_eq!(herald.slas().len(), 1);
        assert_eq!(herald.routes().slas()[0].name(), "order-shipped");
    }

    #[tokio::test]
    async fn shutdown_stops_the_sweeper_and_leaves_the_expectations_open() {
        let (breaches, moves) = (Breaches::default(), Arc::new(Moves::default()));
        let herald = build(&breaches, &moves);
        drop(
            herald
                .publish(OrderPlaced { order_id: 8 })
                .await
                .expect("publish"),
        );
        let report = herald.shutdown(Duration::from_secs(1)).await;
        assert!(report.drained);
        tokio::time::sleep(T + SWEEP * 5).await;
        assert!(breaches.all().is_empty());
        // A sweep after shutdown cannot publish the event in memory: the expectation is opened
        // again, not lost.
        assert_eq!(herald.sweep_slas().await.expect("store"), 0);
        let status = herald.sla_status().await.expect("status");
        assert_eq!((status[0].pending, status[0].breached), (1, 0));
    }
}

mod handlers {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "slas.payment_requested")]
    pub(crate) struct PaymentRequested {
        pub(crate) payment: String,
        pub(crate) fail: bool,
    }

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "slas.charge")]
    pub(crate) struct Charge {
        pub(crate) payment: String,
        pub(crate) fail: bool,
    }

    /// Requests a charge (the expected handler then runs on it).
    #[async_handler]
    async fn request(event: PaymentRequested, bus: herald::Bus) -> Result<(), HandlerError> {
        drop(
            bus.publish(Charge {
                payment: event.payment,
                fail: event.fail,
            })
            .await?,
        );
        Ok(())
    }

    #[async_handler(name = "slas.charge_card", retry(max_attempts = 1))]
    async fn charge_card(event: Charge) -> Result<(), HandlerError> {
        if event.fail {
            Err(HandlerError::permanent(HandlerError::msg("card declined")))
        } else {
            Ok(())
        }
    }

    #[async_handler]
    async fn escalate(breach: SlaBreached, State(breaches): State<Breaches>) {
        breaches.0.lock().expect("lock").push(breach);
    }

    /// The SLA expects a handler to complete, not a message.
    #[tokio::test]
    async fn the_expected_handler_succeeding_fulfils_and_failing_does_not() {
        let breaches = Breaches::default();
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .state(breaches.clone())
            .sla(
                Sla::named("charged")
                    .after::<PaymentRequested>()
                    .expect_handler::<Charge>("slas.charge_card")
                    .within(T)
                    .correlate(|a| a.payment.clone(), |b| b.payment.clone()),
            )
            .sla_sweep_interval(SWEEP)
            .build()
            .expect("valid registry");
        let ok = herald
            .publish(PaymentRequested {
                payment: "p-ok".into(),
                fail: false,
            })
            .await
            .expect("publish");
        let failed = herald
            .publish(PaymentRequested {
                payment: "p-failed".into(),
                fail: true,
            })
            .await
            .expect("publish");
        eventually("one breach", || breaches.all().len() == 1).await;
        tokio::time::sleep(SWEEP * 5).await;
        assert_eq!(breaches.all().len(), 1);
        assert_eq!(breaches.all()[0].key, "p-failed");
        assert_eq!(breaches.all()[0].a_message_id, failed.message_id());
        let record = herald
            .sla_expectation("charged", ok.message_id())
            .await
            .expect("store")
            .expect("kept");
        assert_eq!(record.state, ExpectationState::Fulfilled);
        assert!(record.fulfilled_by.is_some());
        assert!(herald.routes().to_string().contains(
            "charged: after slas.payment_requested expect handler slas.charge_card to complete slas.charge within 300ms"
        ));
    }
}

mod without_slas {
    use super::*;
    use herald::{Envelope, Settlement, StoredMessage};

    /// A relay of a runtime without SLAs may claim a breach row another process's sweeper wrote
    /// into a shared outbox: it decodes it (no handler: done), never dead-letters it as malformed.
    #[tokio::test]
    async fn a_runtime_without_slas_still_reads_a_stored_breach() {
        let herald = Herald::builder()
            .handlers_under("slas::nothing_here")
            .build()
            .expect("valid registry");
        let breach = SlaBreached {
            sla: "order-shipped".into(),
            key: "7".into(),
            a_message_id: herald::MessageId::new(),
            due_at: herald::chrono::Utc::now(),
            breached_at: herald::chrono::Utc::now(),
        };
        let stored = StoredMessage::new(
            &Envelope::new("herald.sla_breached"),
            serde_json::to_string(&breach).expect("json"),
        );
        assert!(
            matches!(herald.ingest(&stored).await, Settlement::Done { .. }),
            "decoded and done"
        );
        assert_eq!(herald.dead_letters().count().await.expect("count"), 0);
        assert!(!herald.routes().to_string().contains("sla_breached"));
    }
}

mod checks {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "slas.checks.a")]
    pub(crate) struct A {
        pub(crate) id: u32,
    }

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "slas.checks.b")]
    pub(crate) struct B {
        pub(crate) id: u32,
    }

    #[async_handler(name = "slas.checks.on_b")]
    async fn on_b(_event: B) {}

    fn problems(builder: herald::HeraldBuilder) -> Vec<String> {
        builder
            .handlers_under(module_path!())
            .build()
            .expect_err("refused")
            .problems
            .into_iter()
            .map(|p| p.message)
            .collect()
    }

    #[tokio::test]
    async fn build_refuses_a_bad_sla_and_names_the_fix() {
        let problems = problems(
            Herald::builder()
                .sla(
                    Sla::named("no-deadline")
                        .after::<A>()
                        .expect::<B>()
                        .correlate(|a| a.id.to_string(), |b| b.id.to_string()),
                )
                .sla(
                    Sla::named("twice")
                        .after::<A>()
                        .expect::<B>()
                        .within(T)
                        .correlate(|a| a.id.to_string(), |b| b.id.to_string()),
                )
                .sla(
                    Sla::named("twice")
                        .after::<A>()
                        .expect::<B>()
                        .within(T)
                        .correlate(|a| a.id.to_string(), |b| b.id.to_string()),
                )
                .sla(
                    Sla::named("unknown-handler")
                        .after::<A>()
                        .expect_handler::<B>("slas.checks.nobody")
                        .within(T)
                        .correlate(|a| a.id.to_string(), |b| b.id.to_string()),
                )
                .sla(
                    Sla::named("wrong-message")
                        .after::<B>()
                        .expect_handler::<A>("slas.checks.on_b")
                        .within(T)
                        .correlate(|a| a.id.to_string(), |b| b.id.to_string()),
                )
                .sla_sweep_interval(Duration::ZERO),
        );
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].contains("SLA `no-deadline`") && problems[0].contains("add `.within("));
        assert!(
            problems[1].contains("expects handler `slas.checks.nobody`, which is not registered")
        );
        assert!(problems[2].contains("but it handles `slas.checks.b`"));
        assert!(problems[2].contains(".expect_handler::<"));
        assert!(problems[3].contains("SLA name `twice` is registered 2 times"));
        assert!(problems[4].contains("sla_sweep_interval"));
    }
}

mod start_late {
    use super::*;
    use tokio::sync::Semaphore;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "slas.export")]
    pub(crate) struct Export {
        pub(crate) hold: u64,
    }

    /// The gate the first job waits at, so the second one waits in the queue.
    #[derive(Clone)]
    struct Gate(Arc<Semaphore>);

    #[async_handler(pool = "exports", start_within = "100ms")]
    async fn export(event: Export, State(gate): State<Gate>) {
        if event.hold > 0 {
            let _permit = gate.0.acquire().await.expect("open gate");
        }
    }

    #[derive(Default)]
    struct Late(Mutex<u32>);

    impl AttemptObserver for Late {
        fn on_ledger(&self, event: &LedgerEvent) {
            if event.change == LedgerChange::StartLate {
                *self.0.lock().expect("lock") += 1;
            }
        }
    }

    #[tokio::test]
    async fn a_job_that_waited_longer_than_start_within_is_counted_and_still_runs() {
        let gate = Gate(Arc::new(Semaphore::new(0)));
        let late = Arc::new(Late::default());
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .pool("exports", PoolConfig::new().concurrency(1))
            .state(gate.clone())
            .observe(late.clone())
            .build()
            .expect("valid registry");
        assert!(herald.routes().to_string().contains("start_within=100ms"));
        let first = herald.publish(Export { hold: 1 }).await.expect("publish");
        let second = herald.publish(Export { hold: 0 }).await.expect("publish");
        // The first holds the only worker past the second's deadline.
        tokio::time::sleep(Duration::from_millis(250)).await;
        gate.0.add_permits(1);
        first.await;
        second.await;
        let counts = herald
            .ledger()
            .handlers
            .values()
            .next()
            .copied()
            .expect("one");
        assert_eq!(counts.start_late, 1, "only the queued one: {counts}");
        assert_eq!(counts.succeeded, 2, "a late start still runs");
        assert_eq!(*late.0.lock().expect("lock"), 1);

        // A message delayed on purpose counts from its delivery time.
        let delayed = herald
            .publish_with(
                Export { hold: 0 },
                PublishOptions::new().deliver_after(Duration::from_millis(300)),
            )
            .await
            .expect("publish");
        delayed.await;
        let counts = herald
            .ledger()
            .handlers
            .values()
            .next()
            .copied()
            .expect("one");
        assert_eq!(counts.start_late, 1, "{counts}");
    }
}
