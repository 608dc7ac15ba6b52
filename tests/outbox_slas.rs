//! Deadline SLAs kept in the outbox's database (`Herald::builder().sla(..).sla_store(outbox
//! .clone())`), on real SQLite files, the machine's real PostgreSQL (`HERALD_TEST_DATABASE_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`) and MySQL/MariaDB (`HERALD_TEST_MYSQL_URL`,
//! default `mysql://root@127.0.0.1:3306/test`); the servers' tests fail, never skip, when a
//! server is down. One kit runs on each backend:
//!
//! - an A written with the outbox opens its expectation in the publishing transaction: a rollback
//!   opens none, and a publish cancelled mid-way (a dropped `tokio::time::timeout`) never leaves
//!   an expectation without its A or an A without its expectation;
//! - a B written before the deadline fulfils it in its transaction, and nothing is emitted;
//! - a sweep marks a due expectation breached and writes its `SlaBreached` into the outbox in one
//!   transaction: sweeps given up at random points never leave one without the other, the event
//!   survives a crash of the process (a new runtime's relay delivers it), and a late B is then
//!   recorded as `fulfilled_late`;
//! - two competing sweepers (two runtimes on two pools) emit exactly one `SlaBreached` per
//!   expectation;
//! - an expected handler completing through the relay fulfils, one failing lets it breach;
//! - an A stored by an outbox that does not know the SLA is opened when the relay delivers it.

use herald::sla::ExpectationState;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The deadline of the tests' SLAs.
const T: Duration = Duration::from_millis(300);

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `SlaBreached` events a handler received.
#[derive(Clone, Default)]
struct Breaches(Arc<Mutex<Vec<herald::SlaBreached>>>);

impl Breaches {
    fn all(&self) -> Vec<herald::SlaBreached> {
        self.0.lock().expect("lock").clone()
    }
}

/// The tests, expanded once per backend. The backend module provides `Pool`, `Outbox`,
/// `PAYLOAD_TEXT` (the payload column as text),
/// `setup(name) -> (Pool, Outbox, keep)` and `second_pool(&keep, name) -> (Pool, Outbox)` (a
/// second pool on the same database, as another process would have).
macro_rules! sla_tests {
    (placed: $placed:tt, shipped: $shipped:tt, payment: $payment:tt, charge: $charge:tt $(,)?) => {
        use super::{eventually, Breaches, ExpectationState, T};
        use herald::{async_handler, Event, HandlerError, Herald, MessageId, Sla, SlaBreached, State};
        use serde::{Deserialize, Serialize};
        use std::time::Duration;

        async fn count(pool: &Pool, sql: &str) -> i64 {
            herald::sqlx::query_scalar(sql)
                .fetch_one(pool)
                .await
                .expect(sql)
        }

        async fn expectations(pool: &Pool, state: &str) -> i64 {
            count(
                pool,
                &format!("SELECT COUNT(*) FROM herald_sla_expectations WHERE state = '{state}'"),
            )
            .await
        }

        async fn breach_rows(pool: &Pool) -> Vec<SlaBreached> {
            let payloads: Vec<String> = herald::sqlx::query_scalar(&format!(
                "SELECT {PAYLOAD_TEXT} FROM herald_outbox WHERE message_type = 'herald.sla_breached' ORDER BY id",
            ))
            .fetch_all(pool)
            .await
            .expect("breach rows");
            payloads
                .iter()
                .map(|payload| serde_json::from_str(payload).expect("an SlaBreached payload"))
                .collect()
        }

        mod orders {
            use super::*;

            #[derive(Event, Clone, Debug, Serialize, Deserialize)]
            #[event(name = $placed)]
            pub(crate) struct OrderPlaced {
                pub(crate) order_id: u64,
            }

            #[derive(Event, Clone, Debug, Serialize, Deserialize)]
            #[event(name = $shipped)]
            pub(crate) struct OrderShipped {
                pub(crate) order_id: u64,
            }

            #[async_handler]
            async fn escalate(breach: SlaBreached, State(breaches): State<Breaches>) {
                breaches.0.lock().expect("lock").push(breach);
            }

            fn sla() -> Sla {
                Sla::named("order-shipped")
                    .after::<OrderPlaced>()
                    .expect::<OrderShipped>()
                    .within(T)
                    .correlate(|a| a.order_id.to_string(), |b| b.order_id.to_string())
            }

            /// A runtime whose SLAs live in `outbox`; its own sweeper waits an hour unless told
            /// otherwise (the tests sweep when they mean to).
            fn build(outbox: &Outbox, breaches: &Breaches, sweep: Duration) -> Herald {
                Herald::builder()
                    .handlers_under(module_path!())
                    .state(breaches.clone())
                    .sla(sla())
                    .sla_store(outbox.clone())
                    .sla_sweep_interval(sweep)
                    .build()
                    .expect("valid registry")
            }

            const NEVER: Duration = Duration::from_secs(3600);

            #[tokio::test]
            async fn an_a_opens_its_expectation_in_its_transaction_and_a_rollback_opens_none() {
                let (pool, outbox, _keep) = setup("sla_open").await;
                let herald = build(&outbox, &Breaches::default(), NEVER);

                let mut tx = pool.begin().await.expect("begin");
                outbox
                    .publish(&mut *tx, OrderPlaced { order_id: 1 })
                    .await
                    .expect("publish");
                tx.rollback().await.expect("rollback");
                assert_eq!(expectations(&pool, "pending").await, 0);

                let mut tx = pool.begin().await.expect("begin");
                let id = outbox
                    .publish(&mut *tx, OrderPlaced { order_id: 2 })
                    .await
                    .expect("publish");
                tx.commit().await.expect("commit");
                let open = herald
                    .sla_expectation("order-shipped", id)
                    .await
                    .expect("store")
                    .expect("opened with the row");
                assert_eq!((open.state, open.key.as_str()), (ExpectationState::Pending, "2"));
                let due = (open.due_at - open.opened_at).to_std().expect("positive");
                assert!(due.abs_diff(T) < Duration::from_millis(2), "{due:?}");
                let status = herald::feed::OutboxOps::sla_status(&outbox).await.expect("status");
                assert_eq!((status[0].sla.as_str(), status[0].pending), ("order-shipped", 1));
            }

            #[tokio::test]
            async fn a_b_before_the_deadline_fulfils_in_its_transaction_and_nothing_is_emitted() {
                let (pool, outbox, _keep) = setup("sla_fulfil").await;
                let herald = build(&outbox, &Breaches::default(), Duration::from_millis(20));
                let mut conn = pool.acquire().await.expect("connection");
                let placed = outbox
                    .publish(&mut conn, OrderPlaced { order_id: 5 })
                    .await
                    .expect("publish");
                drop(conn);

                let mut tx = pool.begin().await.expect("begin");
                outbox
                    .publish(&mut *tx, OrderShipped { order_id: 5 })
                    .await
                    .expect("publish");
                tx.rollback().await.expect("rollback");
                assert_eq!(expectations(&pool, "pending").await, 1, "a rolled-back B fulfils nothing");

                let mut tx = pool.begin().await.expect("begin");
                let shipped = outbox
                    .publish(&mut *tx, OrderShipped { order_id: 5 })
                    .await
                    .expect("publish");
                tx.commit().await.expect("commit");
                let record = herald
                    .sla_expectation("order-shipped", placed)
                    .await
                    .expect("store")
                    .expect("kept");
                assert_eq!(record.state, ExpectationState::Fulfilled);
                assert_eq!(record.fulfilled_by, Some(shipped));

                tokio::time::sleep(T * 2).await;
                assert!(breach_rows(&pool).await.is_empty());
                assert_eq!(expectations(&pool, "fulfilled").await, 1);
            }

            /// The breach and its event commit together: a crash after the sweep loses neither,
            /// and the next runtime's relay delivers the event. A late B is then recorded.
            #[tokio::test]
            async fn a_breach_survives_a_crash_in_the_outbox_and_a_late_b_is_fulfilled_late() {
                let (pool, outbox, _keep) = setup("sla_breach").await;
                let crashed = build(&outbox, &Breaches::default(), NEVER);
                let placed = outbox
                    .publish(&mut *pool.acquire().await.expect("connection"), OrderPlaced { order_id: 7 })
                    .await
                    .expect("publish");
                assert_eq!(crashed.sweep_slas().await.expect("sweep"), 0, "not due yet");
                tokio::time::sleep(T).await;
                assert_eq!(crashed.sweep_slas().await.expect("sweep"), 1);
                assert_eq!(crashed.ledger().slas["order-shipped"].breached, 1);
                assert_eq!(expectations(&pool, "breached").await, 1);
                let stored = breach_rows(&pool).await;
                assert_eq!(stored.len(), 1);
                assert_eq!((stored[0].sla.as_str(), stored[0].key.as_str()), ("order-shipped", "7"));
                assert_eq!(stored[0].a_message_id, placed);
                assert_eq!(
                    count(&pool, "SELECT COUNT(*) FROM herald_outbox WHERE message_type = 'herald.sla_breached' AND status = 'pending'").await,
                    1,
                    "stored for delivery"
                );
                // The process dies before any relay delivered it.
                drop(crashed);

                let breaches = Breaches::default();
                let herald = build(&outbox, &breaches, Duration::from_millis(20));
                let relay = outbox.relay(&herald).poll_interval(Duration::from_millis(20)).start();
                eventually("the stored breach delivered", || breaches.all().len() == 1).await;
                let delivered = breaches.all().remove(0);
                assert_eq!(delivered, stored[0]);
                let record = herald
                    .sla_expectation("order-shipped", placed)
                    .await
                    .expect("store")
                    .expect("kept");
                assert_eq!(record.breached_at, Some(delivered.breached_at));
                assert_eq!(record.due_at, delivered.due_at);

                // The B comes late: recorded, nothing discarded.
                let shipped = outbox
                    .publish(&mut *pool.acquire().await.expect("connection"), OrderShipped { order_id: 7 })
                    .await
                    .expect("publish");
                let record = herald
                    .sla_expectation("order-shipped", placed)
                    .await
                    .expect("store")
                    .expect("kept");
                assert_eq!(record.state, ExpectationState::FulfilledLate);
                assert_eq!(record.fulfilled_by, Some(shipped));
                // The relay delivering the B again changes nothing.
                tokio::time::sleep(Duration::from_millis(200)).await;
                relay.stop().await;
                assert_eq!(breaches.all().len(), 1);
                assert_eq!(expectations(&pool, "fulfilled_late").await, 1);
                assert_eq!(
                    count(&pool, "SELECT COUNT(*) FROM herald_outbox WHERE status = 'pending'").await,
                    0
                );
                let status = herald.sla_status().await.expect("status");
                assert_eq!((status[0].breached, status[0].fulfilled_late), (0, 1));
            }

            /// Sweeps whose callers give up at random points (a dropped `timeout`) never leave
            /// a breached expectation without its event, nor an event without its breach: the
            /// sweep runs to its end, or fails as a whole, in a task of its own; the database
            /// commits the breaches and their events together.
            #[tokio::test]
            async fn a_sweep_cut_off_anywhere_leaves_the_breach_and_its_event_together() {
                let (pool, outbox, _keep) = setup("sla_cut").await;
                let herald = build(&outbox, &Breaches::default(), NEVER);
                let mut conn = pool.acquire().await.expect("connection");
                for order_id in 0..30 {
                    outbox
                        .publish(&mut conn, OrderPlaced { order_id })
                        .await
                        .expect("publish");
                }
                drop(conn);
                tokio::time::sleep(T).await;
                let mut cut = 0u64;
                while expectations(&pool, "pending").await > 0 {
                    let limit = Duration::from_micros(200 + (cut * 397) % 3000);
                    let _ = tokio::time::timeout(limit, herald.sweep_slas()).await;
                    cut += 1;
                    // One statement, one snapshot: a sweep cut off while its COMMIT is on
                    // its way still commits, between two separate reads.
                    let (breached, events): (i64, i64) = herald::sqlx::query_as(
                        "SELECT (SELECT COUNT(*) FROM herald_sla_expectations WHERE state = 'breached'),
                                (SELECT COUNT(*) FROM herald_outbox WHERE message_type = 'herald.sla_breached')",
                    )
                    .fetch_one(&pool)
                    .await
                    .expect("counts");
                    assert_eq!(breached, events, "after cut {cut}");
                    assert!(cut < 10_000, "the sweeps never finished");
                }
                let mut ids: Vec<MessageId> =
                    breach_rows(&pool).await.into_iter().map(|b| b.a_message_id).collect();
                ids.sort();
                ids.dedup();
                assert_eq!(ids.len(), 30);
            }

            /// A publish of A dropped at a random point (its caller's timeout) and rolled back
            /// leaves nothing; one that finished and committed leaves both.
            #[tokio::test]
            async fn a_cancelled_publish_never_leaves_a_half_written_expectation() {
                let (pool, outbox, _keep) = setup("sla_cancel").await;
                let herald = build(&outbox, &Breaches::default(), NEVER);
                let mut committed = Vec::new();
                for round in 0..40u64 {
                    let mut tx = pool.begin().await.expect("begin");
                    let limit = Duration::from_micros(50 + (round * 211) % 2500);
                    let publish = outbox.publish(&mut *tx, OrderPlaced { order_id: round });
                    match tokio::time::timeout(limit, publish).await {
                        Ok(Ok(id)) => {
                            tx.commit().await.expect("commit");
                            committed.push(id);
                        }
                        Ok(Err(error)) => panic!("publish failed: {error}"),
                        // Cut off: the caller drops its transaction.
                        Err(_) => drop(tx),
                    }
                }
                let (rows, open): (i64, i64) = herald::sqlx::query_as(&format!(
                    "SELECT (SELECT COUNT(*) FROM herald_outbox WHERE message_type = '{}'),
                            (SELECT COUNT(*) FROM herald_sla_expectations)",
                    $placed
                ))
                .fetch_one(&pool)
                .await
                .expect("counts");
                assert_eq!(rows, committed.len() as i64);
                assert_eq!(open, rows, "every stored A has its expectation, and only those");
                for id in committed {
                    assert!(herald
                        .sla_expectation("order-shipped", id)
                        .await
                        .expect("store")
                        .is_some());
                }
            }

            /// Two runtimes on two pools, as two processes: every expectation is breached once,
            /// by one of them.
            #[tokio::test]
            async fn competing_sweepers_emit_exactly_one_breach_per_expectation() {
                let (pool, outbox, keep) = setup("sla_compete").await;
                let (_other_pool, other_outbox) = second_pool(&keep, "sla_compete").await;
                let fast = Duration::from_millis(5);
                let first = build(&outbox, &Breaches::default(), fast);
                let second = build(&other_outbox, &Breaches::default(), fast);
                let mut conn = pool.acquire().await.expect("connection");
                for order_id in 0..60 {
                    outbox
                        .publish(&mut conn, OrderPlaced { order_id })
                        .await
                        .expect("publish");
                }
                drop(conn);
                tokio::time::sleep(T).await;
                // Sweep from both sides at once too, beside the sweepers.
                for _ in 0..5 {
                    let (a, b) = tokio::join!(first.sweep_slas(), second.sweep_slas());
                    a.expect("sweep");
                    b.expect("sweep");
                }
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while expectations(&pool, "pending").await > 0 {
                    assert!(std::time::Instant::now() < deadline, "not all breached");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let breaches = breach_rows(&pool).await;
                assert_eq!(breaches.len(), 60);
                let mut ids: Vec<MessageId> = breaches.iter().map(|b| b.a_message_id).collect();
                ids.sort();
                ids.dedup();
                assert_eq!(ids.len(), 60, "one breach per expectation");
                let by_first = first.ledger().slas["order-shipped"].breached;
                let by_second = second.ledger().slas["order-shipped"].breached;
                assert_eq!(by_first + by_second, 60, "{by_first} + {by_second}");
            }

            /// An outbox that no runtime declared the SLA to stores the A without an
            /// expectation; the relay's delivery opens it, due from A's own time.
            #[tokio::test]
            async fn an_a_stored_without_the_sla_is_opened_when_the_relay_delivers_it() {
                let (pool, outbox, keep) = setup("sla_ingest").await;
                let (_other_pool, unaware) = second_pool(&keep, "sla_ingest").await;
                let placed = unaware
                    .publish(&mut *pool.acquire().await.expect("connection"), OrderPlaced { order_id: 9 })
                    .await
                    .expect("publish");
                assert_eq!(expectations(&pool, "pending").await, 0);
                let herald = build(&outbox, &Breaches::default(), NEVER);
                let relay = outbox.relay(&herald).poll_interval(Duration::from_millis(20)).start();
                let start = std::time::Instant::now();
                let mut record = None;
                while record.is_none() {
                    assert!(start.elapsed() < Duration::from_secs(20), "never opened");
                    record = herald.sla_expectation("order-shipped", placed).await.expect("store");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                relay.stop().await;
                let record = record.expect("opened");
                let due = (record.due_at - record.opened_at).to_std().expect("positive");
                assert!(due.abs_diff(T) < Duration::from_millis(2), "{due:?}");
                assert_eq!(herald.ledger().slas["order-shipped"].opened, 1);
            }
        }

        mod handlers {
            use super::*;

            #[derive(Event, Clone, Debug, Serialize, Deserialize)]
            #[event(name = $payment)]
            pub(crate) struct PaymentRequested {
                pub(crate) payment: String,
            }

            #[derive(Event, Clone, Debug, Serialize, Deserialize)]
            #[event(name = $charge)]
            pub(crate) struct Charge {
                pub(crate) payment: String,
                pub(crate) fail: bool,
            }

            #[async_handler(name = "outbox_slas.charge_card", retry(max_attempts = 1))]
            async fn charge_card(event: Charge) -> Result<(), HandlerError> {
                if event.fail {
                    Err(HandlerError::msg("card declined"))
                } else {
                    Ok(())
                }
            }

            #[async_handler]
            async fn escalate(breach: SlaBreached, State(breaches): State<Breaches>) {
                breaches.0.lock().expect("lock").push(breach);
            }

            #[tokio::test]
            async fn the_expected_handler_completing_through_the_relay_fulfils() {
                let (pool, outbox, _keep) = setup("sla_handler").await;
                let breaches = Breaches::default();
                let herald = Herald::builder()
                    .handlers_under(module_path!())
                    .state(breaches.clone())
                    .sla(
                        Sla::named("charged")
                            .after::<PaymentRequested>()
                            .expect_handler::<Charge>("outbox_slas.charge_card")
                            .within(T)
                            .correlate(|a| a.payment.clone(), |b| b.payment.clone()),
                    )
                    .sla_store(outbox.clone())
                    .sla_sweep_interval(Duration::from_millis(20))
                    .build()
                    .expect("valid registry");
                let relay = outbox.relay(&herald).poll_interval(Duration::from_millis(20)).start();
                let mut tx = pool.begin().await.expect("begin");
                let ok = outbox
                    .publish(&mut *tx, PaymentRequested { payment: "p-ok".into() })
                    .await
                    .expect("publish");
                let declined = outbox
                    .publish(&mut *tx, PaymentRequested { payment: "p-declined".into() })
                    .await
                    .expect("publish");
                outbox
                    .publish(&mut *tx, Charge { payment: "p-ok".into(), fail: false })
                    .await
                    .expect("publish");
                outbox
                    .publish(&mut *tx, Charge { payment: "p-declined".into(), fail: true })
                    .await
                    .expect("publish");
                tx.commit().await.expect("commit");

                eventually("the declined payment's breach delivered", || breaches.all().len() == 1).await;
                assert_eq!(breaches.all()[0].a_message_id, declined);
                let record = herald
                    .sla_expectation("charged", ok)
                    .await
                    .expect("store")
                    .expect("kept");
                assert_eq!(record.state, ExpectationState::Fulfilled);
                tokio::time::sleep(Duration::from_millis(200)).await;
                relay.stop().await;
                assert_eq!(breaches.all().len(), 1);
                let counts = herald.ledger().slas["charged"];
                assert_eq!((counts.fulfilled, counts.breached), (1, 1));
            }
        }
    };
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use herald::outbox::{self, SqliteOutbox};

    type Pool = herald::sqlx::SqlitePool;
    type Outbox = SqliteOutbox;
    const PAYLOAD_TEXT: &str = "payload";

    async fn setup(name: &str) -> (Pool, Outbox, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = outbox::sqlite::connect(dir.path().join(format!("{name}.db")))
            .await
            .expect("open sqlite file");
        let outbox = SqliteOutbox::new(pool.clone()).await.expect("migrate");
        (pool, outbox, dir)
    }

    async fn second_pool(dir: &tempfile::TempDir, name: &str) -> (Pool, Outbox) {
        let pool = outbox::sqlite::connect(dir.path().join(format!("{name}.db")))
            .await
            .expect("open sqlite file");
        let outbox = SqliteOutbox::open(pool.clone()).await.expect("schema");
        (pool, outbox)
    }

    sla_tests!(
        placed: "outbox_slas.sqlite.order_placed",
        shipped: "outbox_slas.sqlite.order_shipped",
        payment: "outbox_slas.sqlite.payment_requested",
        charge: "outbox_slas.sqlite.charge",
    );
}

#[cfg(feature = "postgres")]
mod postgres {
    use herald::outbox::PgOutbox;
    use herald::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use std::str::FromStr;

    type Pool = herald::sqlx::PgPool;
    type Outbox = PgOutbox;
    const PAYLOAD_TEXT: &str = "payload";

    fn options() -> (String, PgConnectOptions) {
        let url = std::env::var("HERALD_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let options = PgConnectOptions::from_str(&url).expect("valid HERALD_TEST_DATABASE_URL");
        (url, options)
    }

    /// A pool whose connections work in schema `name`.
    async fn pool_in(name: &str) -> Pool {
        let (url, options) = options();
        PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options.options([("search_path", name)]))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required for these tests: {e}"))
    }

    /// A pool whose connections work in a fresh schema `name`.
    async fn setup(name: &str) -> (Pool, Outbox, ()) {
        let (url, options) = options();
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required for these tests: {e}"));
        herald::sqlx::raw_sql(&format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name};"
        ))
        .execute(&admin)
        .await
        .expect("create schema");
        admin.close().await;
        let pool = pool_in(name).await;
        let outbox = PgOutbox::new(pool.clone()).await.expect("migrate");
        (pool, outbox, ())
    }

    async fn second_pool(_: &(), name: &str) -> (Pool, Outbox) {
        let pool = pool_in(name).await;
        let outbox = PgOutbox::open(pool.clone()).await.expect("schema");
        (pool, outbox)
    }

    sla_tests!(
        placed: "outbox_slas.postgres.order_placed",
        shipped: "outbox_slas.postgres.order_shipped",
        payment: "outbox_slas.postgres.payment_requested",
        charge: "outbox_slas.postgres.charge",
    );
}

#[cfg(feature = "mysql")]
mod mysql {
    use herald::outbox::MySqlOutbox;
    use herald::sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
    use std::str::FromStr;

    type Pool = herald::sqlx::MySqlPool;
    type Outbox = MySqlOutbox;
    /// A `utf8mb4_bin` column reads as bytes.
    const PAYLOAD_TEXT: &str = "CONVERT(payload USING utf8mb4)";

    fn options() -> (String, MySqlConnectOptions) {
        let url = std::env::var("HERALD_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
        let options = MySqlConnectOptions::from_str(&url).expect("valid HERALD_TEST_MYSQL_URL");
        (url, options)
    }

    fn database(options: &MySqlConnectOptions, name: &str) -> String {
        let base = options.get_database().unwrap_or("test").to_owned();
        format!("{base}_{name}")
    }

    async fn pool_on(name: &str) -> Pool {
        let (url, options) = options();
        let database = database(&options, name);
        MySqlPoolOptions::new()
            .max_connections(8)
            .connect_with(options.database(&database))
            .await
            .unwrap_or_else(|e| panic!("MySQL/MariaDB at {url} is required for these tests: {e}"))
    }

    /// A pool on the fresh database `<base>_<name>`.
    async fn setup(name: &str) -> (Pool, Outbox, ()) {
        let (url, options) = options();
        let database = database(&options, name);
        let admin = MySqlPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("MySQL/MariaDB at {url} is required for these tests: {e}"));
        herald::sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS `{database}`; CREATE DATABASE `{database}`"
        ))
        .execute(&admin)
        .await
        .expect("create database");
        admin.close().await;
        let pool = pool_on(name).await;
        let outbox = MySqlOutbox::new(pool.clone()).await.expect("migrate");
        (pool, outbox, ())
    }

    async fn second_pool(_: &(), name: &str) -> (Pool, Outbox) {
        let pool = pool_on(name).await;
        let outbox = MySqlOutbox::open(pool.clone()).await.expect("schema");
        (pool, outbox)
    }

    sla_tests!(
        placed: "outbox_slas.mysql.order_placed",
        shipped: "outbox_slas.mysql.order_shipped",
        payment: "outbox_slas.mysql.payment_requested",
        charge: "outbox_slas.mysql.charge",
    );
}
