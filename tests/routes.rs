//! Routes (`.route::<E>().to(sink)`): a message type forwarded to a transport, in process and from
//! the SQLite outbox, counted done only on the sink's confirmation, retried with backoff, dead-
//! lettered after the last attempt, in publish order per key, and checked at build.
//!
//! The sink is the real in-memory broker; `Faulty` wraps it to refuse, hang or record the order
//! of confirmations, the faults a broker connection shows.
#![cfg(all(feature = "memory", feature = "sqlite"))]

use async_trait::async_trait;
use herald::outbox::{self, SqliteOutbox};
use herald::ports::{Capabilities, Confirmation, MessageSink, OutgoingMessage, SinkError};
use herald::transport::memory::MemoryBroker;
use herald::{
    async_handler, Backoff, DeadLetterReason, Event, HandlerStatus, Herald, Meta, RetryPolicy,
    State,
};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The in-memory broker behind a connection that can fail: it refuses the next `refuse`
/// publishes, hangs the next `hang` ones (never answers), and records every confirmed message.
#[derive(Debug, Default)]
struct Faulty {
    broker: MemoryBroker,
    refuse: AtomicU32,
    hang: AtomicU32,
    attempts: AtomicU32,
    confirmed: Mutex<Vec<OutgoingMessage>>,
}

impl Faulty {
    fn new() -> Arc<Self> {
        Arc::new(Faulty::default())
    }
    fn refusing(times: u32) -> Arc<Self> {
        let faulty = Faulty::new();
        faulty.refuse.store(times, Ordering::SeqCst);
        faulty
    }
    fn confirmed(&self) -> Vec<OutgoingMessage> {
        self.confirmed.lock().expect("lock").clone()
    }
    fn take_one(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[async_trait]
impl MessageSink for Faulty {
    async fn publish(&self, batch: Vec<OutgoingMessage>) -> Result<Vec<Confirmation>, SinkError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if Faulty::take_one(&self.hang) {
            std::future::pending::<()>().await;
        }
        if Faulty::take_one(&self.refuse) {
            return Err(SinkError::backend(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset by the broker",
            )));
        }
        let confirmations = self.broker.publish(batch.clone()).await?;
        let mut confirmed = self.confirmed.lock().expect("lock");
        for (message, confirmation) in batch.into_iter().zip(&confirmations) {
            if confirmation.is_confirmed() {
                confirmed.push(message);
            }
        }
        Ok(confirmations)
    }

    fn capabilities(&self) -> Capabilities {
        self.broker.capabilities()
    }

    fn destination(&self) -> String {
        "faulty-memory".to_owned()
    }
}

fn quick_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        backoff: Backoff::Fixed(Duration::from_millis(20)),
        jitter: false,
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn push(&self, what: impl Into<String>) {
        self.0.lock().expect("lock").push(what.into());
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }
}

mod in_process {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "routes.order_placed", key = account)]
    pub(crate) struct OrderPlaced {
        pub(crate) account: String,
        pub(crate) order: u32,
    }

    /// The publishing service's own handler of the event, beside the route.
    mod local {
        use super::*;

        #[async_handler]
        async fn count_locally(event: OrderPlaced, State(seen): State<Seen>) {
            seen.push(format!("local {}", event.order));
        }
    }

    /// The consuming service, on the other side of the broker.
    mod consumer {
        use super::*;

        #[async_handler]
        async fn notify(event: OrderPlaced, meta: Meta, State(seen): State<Seen>) {
            let tenant = meta.envelope().headers.extra.get("tenant").cloned();
            seen.push(format!(
                "remote {} {} {} {:?}",
                event.order,
                meta.envelope().id,
                meta.envelope().key.clone().unwrap_or_default(),
                tenant
            ));
        }
    }

    fn producer(sink: Arc<dyn MessageSink>, retry: RetryPolicy, seen: &Seen) -> Herald {
        Herald::builder()
            .handlers_under(format!("{}::local", module_path!()))
            .state(seen.clone())
            .route::<OrderPlaced>()
            .retry(retry)
            .timeout(Duration::from_millis(200))
            .to(sink)
            .build()
            .expect("valid registry")
    }

    #[tokio::test]
    async fn a_routed_event_reaches_the_other_service_with_its_envelope() {
        let broker = MemoryBroker::new();
        let seen = Seen::default();
        let herald = producer(Arc::new(broker.clone()), quick_retry(3), &seen);
        let route = "route:routes.order_placed->memory";
        assert!(
            herald.routes().to_string().contains(route),
            "the routing table lists the route:\n{}",
            herald.routes()
        );

        let options = herald::PublishOptions::new().header("tenant", "acme");
        let delivery = herald
            .publish_with(
                OrderPlaced {
                    account: "acct-7".into(),
                    order: 1,
                },
                options,
            )
            .await
            .expect("admitted");
        let id = delivery.message_id();
        let outcome = delivery.await;
        assert!(outcome.is_success(), "{outcome:?}");
        let handlers: Vec<_> = outcome.reports.iter().map(|r| r.handler).collect();
        assert!(handlers.contains(&route), "{handlers:?}");
        assert_eq!(broker.stats().published, 1);

        let remote_seen = Seen::default();
        let consumer = Herald::builder()
            .handlers_under(format!("{}::consumer", module_path!()))
            .state(remote_seen.clone())
            .build()
            .expect("valid registry");
        let relay = herald::outbox::Relay::builder(Arc::new(broker.clone()), &consumer)
            .poll_interval(Duration::from_millis(5))
            .start();
        eventually("the consumer handles it", async || {
            !remote_seen.all().is_empty()
        })
        .await;
        relay.stop().await;
        assert_eq!(
            remote_seen.all(),
            vec![format!("remote 1 {id} acct-7 Some(\"acme\")")],
            "same id, key and headers on the other side"
        );
        assert_eq!(seen.all(), vec!["local 1".to_owned()]);
        assert_eq!(broker.pending(), 0);
        let ledger = herald.ledger();
        assert!(ledger.is_balanced(), "{ledger}");
        assert_eq!(ledger.handlers[route].succeeded, 1);
    }

    #[tokio::test]
    async fn a_publish_the_broker_refuses_is_retried_after_the_backoff() {
        let sink = Faulty::refusing(2);
        let seen = Seen::default();
        let herald = producer(sink.clone(), quick_retry(5), &seen);
        let started = Instant::now();
        let outcome = herald
            .publish(OrderPlaced {
                account: "a".into(),
                order: 1,
            })
            .await
            .expect("admitted")
            .await;
        assert!(outcome.is_success(), "{outcome:?}");
        let route = outcome
            .reports
            .iter()
            .find(|r| r.handler.starts_with(herald::ROUTE_PREFIX))
            .expect("the route reports");
        assert!(
            matches!(route.status, HandlerStatus::Succeeded { attempts: 3 }),
            "{:?}",
            route.status
        );
        assert!(
            started.elapsed() >= Duration::from_millis(40),
            "two backoffs of 20 ms were waited"
        );
        assert_eq!(sink.attempts.load(Ordering::SeqCst), 3);
        assert_eq!(sink.confirmed().len(), 1, "published once, not three times");
        let counts = herald.ledger().handlers[route.handler];
        assert_eq!((counts.failed_attempts, counts.retried), (2, 2));
    }

    #[tokio::test]
    async fn a_publish_never_confirmed_ends_in_the_dead_letters() {
        let sink = Faulty::refusing(u32::MAX);
        let seen = Seen::default();
        let herald = producer(sink.clone(), quick_retry(3), &seen);
        let outcome = herald
            .publish(OrderPlaced {
                account: "a".into(),
                order: 9,
            })
            .await
            .expect("admitted")
            .await;
        assert!(!outcome.is_success());
        let dead = herald.dead_letters().list(10).await.expect("list");
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].handler, "route:routes.order_placed->faulty-memory");
        assert_eq!(dead[0].reason, DeadLetterReason::Failed);
        assert_eq!(dead[0].attempts, 3);
        assert!(
            dead[0]
                .last_error
                .as_deref()
                .unwrap_or_default()
                .contains("connection reset by the broker"),
            "{dead:?}"
        );
        assert_eq!(dead[0].payload["order"], 9);
        let ledger = herald.ledger();
        assert!(ledger.is_balanced(), "{ledger}");
        assert_eq!(ledger.total.dead_lettered, 1);
        assert_eq!(
            seen.all(),
            vec!["local 9".to_owned()],
            "the local handler ran"
        );
    }

    #[tokio::test]
    async fn a_dead_lettered_forward_is_redriven_to_the_broker_once_it_is_back() {
        let sink = Faulty::refusing(3);
        let seen = Seen::default();
        let herald = producer(sink.clone(), quick_retry(3), &seen);
        let outcome = herald
            .publish(OrderPlaced {
                account: "a".into(),
                order: 11,
            })
            .await
            .expect("admitted")
            .await;
        assert!(
            !outcome.is_success(),
            "three refusals exhaust three attempts"
        );
        assert!(sink.confirmed().is_empty());
        let dead = herald.dead_letters().list(10).await.expect("list");
        assert_eq!(dead.len(), 1, "{dead:?}");

        // The broker is back (the refusals are used up): re-drive the dead letter.
        let redriven = herald.redrive(dead[0].id).await.expect("re-driven").await;
        assert!(redriven.is_success(), "{redriven:?}");
        let confirmed = sink.confirmed();
        assert_eq!(confirmed.len(), 1);
        assert_eq!(
            confirmed[0].envelope.id, outcome.message_id,
            "the same message id"
        );
        assert_eq!(herald.dead_letters().count().await.expect("count"), 0);
        assert_eq!(
            seen.all(),
            vec!["local 11".to_owned()],
            "the local handler ran once"
        );
    }

    #[tokio::test]
    async fn a_broker_that_never_answers_times_out_and_the_publish_is_retried() {
        let sink = Faulty::new();
        sink.hang.store(1, Ordering::SeqCst);
        let seen = Seen::default();
        let herald = producer(sink.clone(), quick_retry(3), &seen);
        let outcome = herald
            .publish(OrderPlaced {
                account: "a".into(),
                order: 1,
            })
            .await
            .expect("admitted")
            .await;
        assert!(outcome.is_success(), "{outcome:?}");
        assert_eq!(sink.attempts.load(Ordering::SeqCst), 2);
        assert_eq!(sink.confirmed().len(), 1);
    }

    #[tokio::test]
    async fn one_key_reaches_the_broker_in_publish_order_even_when_a_publish_is_retried() {
        let sink = Faulty::refusing(1);
        let seen = Seen::default();
        let herald = producer(sink.clone(), quick_retry(5), &seen);
        let mut deliveries = Vec::new();
        for order in 1..=20 {
            let account = if order % 2 == 0 { "even" } else { "odd" };
            deliveries.push(
                herald
                    .publish(OrderPlaced {
                        account: account.into(),
                        order,
                    })
                    .await
                    .expect("admitted"),
            );
        }
        for delivery in deliveries {
            assert!(delivery.await.is_success());
        }
        let confirmed = sink.confirmed();
        assert_eq!(confirmed.len(), 20);
        for account in ["even", "odd"] {
            let orders: Vec<u64> = confirmed
                .iter()
                .filter(|m| m.envelope.key.as_deref() == Some(account))
                .map(|m| {
                    serde_json::from_str::<serde_json::Value>(&m.payload).expect("json")["order"]
                        .as_u64()
                        .expect("order")
                })
                .collect();
            let mut sorted = orders.clone();
            sorted.sort_unstable();
            assert_eq!(orders, sorted, "key {account} kept its order");
        }
    }

    #[tokio::test]
    async fn a_routed_publish_compiles_and_runs_inside_tokio_spawn() {
        let broker = MemoryBroker::new();
        let seen = Seen::default();
        let herald = producer(Arc::new(broker.clone()), quick_retry(3), &seen);
        let task = tokio::spawn({
            let herald = herald.clone();
            async move {
                herald
                    .publish(OrderPlaced {
                        account: "a".into(),
                        order: 3,
                    })
                    .await
                    .expect("admitted")
                    .await
            }
        });
        assert!(task.await.expect("joined").is_success());
        assert_eq!(broker.stats().published, 1);
    }

    #[tokio::test]
    async fn shutdown_with_a_publish_awaiting_its_confirm_dead_letters_it_instead_of_losing_it() {
        let sink = Faulty::new();
        sink.hang.store(u32::MAX, Ordering::SeqCst);
        let seen = Seen::default();
        let herald = Herald::builder()
            .handlers_under(format!("{}::local", module_path!()))
            .state(seen.clone())
            .route::<OrderPlaced>()
            .to(sink.clone())
            .build()
            .expect("valid registry");
        // A caller that gives up at once: the delivery handle is dropped, the route goes on.
        let publish = herald.publish(OrderPlaced {
            account: "a".into(),
            order: 4,
        });
        let delivery = tokio::time::timeout(Duration::from_secs(5), publish)
            .await
            .expect("admission does not wait for the broker")
            .expect("admitted");
        drop(delivery);
        eventually("the route is awaiting the broker", async || {
            sink.attempts.load(Ordering::SeqCst) == 1
        })
        .await;
        herald.shutdown(Duration::from_millis(100)).await;
        let dead = herald.dead_letters().list(10).await.expect("list");
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].reason, DeadLetterReason::Shutdown);
        let ledger = herald.ledger();
        assert!(ledger.is_balanced(), "{ledger}");
        assert_eq!(ledger.total.lost, 0);
    }
}

mod outbox_rows {
    use super::*;
    use herald::sqlx::SqlitePool;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "routes.invoice_sent", key = customer)]
    pub(crate) struct InvoiceSent {
        pub(crate) customer: String,
        pub(crate) invoice: u32,
    }

    /// A local handler that fails its first attempt of each invoice.
    #[async_handler(retry(max_attempts = 3, backoff = fixed(20ms)))]
    async fn archive(
        event: InvoiceSent,
        meta: Meta,
        State(seen): State<Seen>,
    ) -> Result<(), herald::HandlerError> {
        seen.push(format!(
            "archive {} attempt {}",
            event.invoice,
            meta.attempt()
        ));
        if meta.attempt() == 1 {
            return Err(herald::HandlerError::msg("archive is busy"));
        }
        Ok(())
    }

    async fn open(dir: &tempfile::TempDir) -> (SqlitePool, SqliteOutbox) {
        let pool = outbox::sqlite::connect(dir.path().join("app.db"))
            .await
            .expect("open sqlite file");
        let outbox = SqliteOutbox::new(pool.clone()).await.expect("migrate");
        (pool, outbox)
    }

    /// The service under test: the archiving handler beside a route to `sink`, dead letters in
    /// the same SQLite file as the outbox.
    fn build(pool: &SqlitePool, sink: Arc<Faulty>, retry: RetryPolicy, seen: &Seen) -> Herald {
        Herald::builder()
            .handlers_under(module_path!())
            .state(seen.clone())
            .dead_letters(herald::SqliteDeadLetters::new(pool.clone()))
            .route::<InvoiceSent>()
            .retry(retry)
            .to(sink)
            .build()
            .expect("valid registry")
    }

    /// Commits one `InvoiceSent` in a transaction of its own.
    async fn commit(pool: &SqlitePool, outbox: &SqliteOutbox, customer: &str, invoice: u32) {
        let mut tx = pool.begin().await.expect("begin");
        outbox
            .publish(
                &mut *tx,
                InvoiceSent {
                    customer: customer.into(),
                    invoice,
                },
            )
            .await
            .expect("publish");
        tx.commit().await.expect("commit");
    }

    fn relay(outbox: &SqliteOutbox, herald: &Herald) -> herald::outbox::Relay {
        outbox
            .relay(herald)
            .poll_interval(Duration::from_millis(5))
            .start()
    }

    async fn statuses(pool: &SqlitePool) -> Vec<String> {
        herald::sqlx::query_scalar("SELECT status FROM herald_outbox ORDER BY id")
            .fetch_all(pool)
            .await
            .expect("query")
    }

    #[tokio::test]
    async fn a_row_is_finished_only_once_the_broker_confirmed_it_and_is_published_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, outbox) = open(&dir).await;
        let sink = Faulty::refusing(2);
        let seen = Seen::default();
        let herald = build(&pool, sink.clone(), quick_retry(5), &seen);

        commit(&pool, &outbox, "c1", 1).await;
        assert_eq!(
            sink.attempts.load(Ordering::SeqCst),
            0,
            "nothing before the relay"
        );

        let relay = relay(&outbox, &herald);
        eventually("the broker confirmed it", async || {
            sink.confirmed().len() == 1
        })
        .await;
        eventually("the row is processed", async || {
            statuses(&pool).await == ["processed"]
        })
        .await;
        let stats = relay.stop().await;
        assert_eq!(stats.lost, 0);
        // The route was refused twice and the local handler failed once: the row was delivered
        // three times, the route published once more each time until confirmed, and never again
        // after its confirmation.
        assert_eq!(sink.attempts.load(Ordering::SeqCst), 3);
        assert_eq!(sink.confirmed().len(), 1);
        assert_eq!(
            seen.all(),
            ["archive 1 attempt 1", "archive 1 attempt 2"],
            "the local handler ran until it succeeded, and not after"
        );
        let ledger = herald.ledger();
        assert!(ledger.is_balanced(), "{ledger}");
    }

    #[tokio::test]
    async fn rows_of_one_key_reach_the_broker_in_commit_order_across_refusals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, outbox) = open(&dir).await;
        let sink = Faulty::refusing(3);
        let seen = Seen::default();
        let herald = build(&pool, sink.clone(), quick_retry(10), &seen);
        for invoice in 1..=10 {
            commit(&pool, &outbox, "same", invoice).await;
        }
        let relay = relay(&outbox, &herald);
        eventually("every row is processed", async || {
            statuses(&pool).await.iter().all(|s| s == "processed")
        })
        .await;
        relay.stop().await;
        let invoices: Vec<u64> = sink
            .confirmed()
            .iter()
            .map(|m| {
                serde_json::from_str::<serde_json::Value>(&m.payload).expect("json")["invoice"]
                    .as_u64()
                    .expect("invoice")
            })
            .collect();
        assert_eq!(
            invoices,
            (1..=10).collect::<Vec<_>>(),
            "in order, each once"
        );
    }

    #[tokio::test]
    async fn a_row_never_confirmed_is_dead_lettered_durably_and_the_row_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, outbox) = open(&dir).await;
        let sink = Faulty::refusing(u32::MAX);
        let seen = Seen::default();
        let herald = build(&pool, sink.clone(), quick_retry(3), &seen);
        commit(&pool, &outbox, "c", 5).await;
        let relay = relay(&outbox, &herald);
        eventually("the row failed", async || {
            statuses(&pool).await == ["failed"]
        })
        .await;
        relay.stop().await;
        let dead = herald.dead_letters().list(10).await.expect("list");
        let route: Vec<_> = dead
            .iter()
            .filter(|d| d.handler.starts_with(herald::ROUTE_PREFIX))
            .collect();
        assert_eq!(route.len(), 1, "{dead:?}");
        assert_eq!(route[0].attempts, 3);
        assert_eq!(sink.attempts.load(Ordering::SeqCst), 3);
    }
}

mod build_checks {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "routes.build_checked")]
    pub(crate) struct Checked {
        pub(crate) n: u32,
    }

    #[tokio::test]
    async fn a_route_is_checked_with_everything_else_at_build() {
        let broker: Arc<dyn MessageSink> = Arc::new(MemoryBroker::new());
        let error = Herald::builder()
            .handlers_under(module_path!())
            .route::<Checked>()
            .requires(Capabilities::none().with_persistent())
            .to(broker.clone())
            .route::<Checked>()
            .to(broker.clone())
            .route::<Checked>()
            .to(broker.clone())
            .route::<Checked>()
            .named("checked-elsewhere")
            .pool("nowhere")
            .to(broker.clone())
            .build()
            .expect_err("three problems");
        let text = error.to_string();
        assert!(
            text.contains("requires persistent of its sink `memory`"),
            "{text}"
        );
        assert!(
            text.contains("handler name `route:routes.build_checked->memory` is used by 3"),
            "{text}"
        );
        assert!(
            text.contains("`checked-elsewhere`") && text.contains("pool `nowhere`"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_event_with_only_a_route_is_forwarded_and_balanced() {
        let broker = MemoryBroker::new();
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .route::<Checked>()
            .named("checked-out")
            .to(Arc::new(broker.clone()))
            .build()
            .expect("valid");
        for n in 0..100 {
            drop(herald.publish(Checked { n }).await.expect("admitted")); // fire and forget
        }
        herald.shutdown(Duration::from_secs(5)).await;
        assert_eq!(broker.stats().published, 100);
        let ledger = herald.ledger();
        assert!(ledger.is_balanced(), "{ledger}");
        assert_eq!(ledger.handlers["checked-out"].succeeded, 100);
    }
}
