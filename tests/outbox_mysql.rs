//! The outbox on the machine's real MySQL/MariaDB (`HERALD_TEST_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`). Each test works in a database of its own
//! (`<database>_<case>`, created fresh). These tests fail, never skip, when the server is down.
//!
//! Commit and rollback; two competing relays on 3,000 messages; per-key order with four relays
//! and with two transactions on one key committing in reverse order; a handler slower than the
//! lease; durable dead letters with their failure kind and re-drive; a malformed row; the inbox;
//! `events_after` never skipping a row that commits late; a v1 database upgraded to v3.
#![cfg(feature = "mysql")]

use herald::inbox::MySqlInbox;
use herald::outbox::{self, MySqlOutbox};
use herald::sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use herald::sqlx::{self, MySqlPool};
use herald::{
    async_handler, DeadLetterStore, Event, FailureKind, HandlerError, Herald, Meta, State,
};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn database_url() -> String {
    std::env::var("HERALD_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

/// A pool on the database `<base>_<case>` (created fresh unless `fresh` is false).
async fn pool_in(case: &str, fresh: bool) -> MySqlPool {
    let url = database_url();
    let options = MySqlConnectOptions::from_str(&url).expect("valid HERALD_TEST_MYSQL_URL");
    let base = options.get_database().unwrap_or("test").to_owned();
    let name = format!("{base}_{case}");
    if fresh {
        let admin = MySqlPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .unwrap_or_else(|e| panic!("MySQL/MariaDB at {url} is required for these tests: {e}"));
        sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}`"
        ))
        .execute(&admin)
        .await
        .expect("create database");
        admin.close().await;
    }
    MySqlPoolOptions::new()
        .max_connections(12)
        .connect_with(options.database(&name))
        .await
        .unwrap_or_else(|e| panic!("MySQL/MariaDB at {url} is required for these tests: {e}"))
}

async fn setup(case: &str) -> (MySqlPool, MySqlOutbox) {
    let pool = pool_in(case, true).await;
    let outbox = MySqlOutbox::new(pool.clone()).await.expect("migrate");
    (pool, outbox)
}

#[derive(Clone, Default)]
struct Tracker {
    running: Arc<Mutex<HashSet<String>>>,
    overlaps: Arc<Mutex<Vec<String>>>,
    handled: Arc<Mutex<HashMap<String, u32>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Tracker {
    fn enter(&self, id: &str) {
        if !self.running.lock().expect("lock").insert(id.to_owned()) {
            self.overlaps.lock().expect("lock").push(id.to_owned());
        }
    }
    fn leave(&self, id: &str) {
        self.running.lock().expect("lock").remove(id);
        *self
            .handled
            .lock()
            .expect("lock")
            .entry(id.to_owned())
            .or_default() += 1;
    }
    fn log(&self) -> Vec<String> {
        self.log.lock().expect("lock").clone()
    }
}

fn build(module: &str, pool: &MySqlPool, tracker: &Tracker) -> Herald {
    Herald::builder()
        .handlers_under(module)
        .state(tracker.clone())
        .state(pool.clone())
        .dead_letters(herald::MySqlDeadLetters::new(pool.clone()))
        .build()
        .expect("valid registry")
}

async fn eventually(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn count(pool: &MySqlPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

mod competing {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_my.push_requested")]
    pub(crate) struct PushRequested {
        pub(crate) n: u32,
    }

    #[async_handler]
    async fn push(_event: PushRequested, meta: Meta, State(tracker): State<Tracker>) {
        let id = meta.id().to_string();
        tracker.enter(&id);
        tokio::task::yield_now().await;
        tracker.leave(&id);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_relays_share_3000_messages_each_delivered_once() {
        let (pool, outbox) = setup("two_relays").await;
        let tracker = Tracker::default();
        let herald = build(module_path!(), &pool, &tracker);
        let mut ids = Vec::new();
        for chunk in 0..30 {
            let mut tx = pool.begin().await.expect("begin");
            for i in 0..100 {
                ids.push(
                    outbox
                        .publish(&mut tx, PushRequested { n: chunk * 100 + i })
                        .await
                        .expect("publish"),
                );
            }
            tx.commit().await.expect("commit");
        }
        let relays: Vec<_> = (0..2)
            .map(|_| {
                outbox
                    .relay(&herald)
                    .batch_size(50)
                    .poll_interval(Duration::from_millis(20))
                    .start()
            })
            .collect();
        eventually("3,000 processed", Duration::from_secs(120), async || {
            outbox.status().await.expect("status").processed == 3_000
        })
        .await;
        let mut processed = Vec::new();
        for relay in relays {
            processed.push(relay.stop().await.processed);
        }
        assert_eq!(processed.iter().sum::<u64>(), 3_000, "{processed:?}");
        assert!(
            processed.iter().all(|&n| n > 0),
            "both relays took rows: {processed:?}"
        );
        assert!(tracker.overlaps.lock().expect("lock").is_empty());
        let handled = tracker.handled.lock().expect("lock").clone();
        assert_eq!(handled.len(), 3_000);
        assert!(ids
            .iter()
            .all(|id| handled.get(&id.to_string()) == Some(&1)));
    }

    #[tokio::test]
    async fn a_committed_event_is_delivered_and_a_rolled_back_one_never_is() {
        let (pool, outbox) = setup("commit").await;
        let tracker = Tracker::default();
        let herald = build(module_path!(), &pool, &tracker);
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(20))
            .start();
        let mut tx = pool.begin().await.expect("begin");
        let rolled_back = outbox
            .publish(&mut tx, PushRequested { n: 1 })
            .await
            .expect("publish");
        tx.rollback().await.expect("rollback");
        let mut tx = pool.begin().await.expect("begin");
        let committed = outbox
            .publish(&mut tx, PushRequested { n: 2 })
            .await
            .expect("publish");
        tx.commit().await.expect("commit");
        eventually("delivered", Duration::from_secs(10), async || {
            tracker
                .handled
                .lock()
                .expect("lock")
                .contains_key(&committed.to_string())
        })
        .await;
        relay.stop().await;
        assert!(!tracker
            .handled
            .lock()
            .expect("lock")
            .contains_key(&rolled_back.to_string()));
        assert_eq!(count(&pool, "SELECT COUNT(*) FROM herald_outbox").await, 1);
    }

    #[tokio::test]
    async fn publish_all_writes_in_order_and_a_payload_over_the_limit_writes_nothing() {
        let (pool, outbox) = setup("publish_all").await;
        let outbox = outbox.max_payload_bytes(64);
        let mut tx = pool.begin().await.expect("begin");
        let ids = outbox
            .publish_all(&mut tx, (0..20).map(|n| PushRequested { n }))
            .await
            .expect("publish_all");
        tx.commit().await.expect("commit");
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT CAST(message_id AS CHAR) FROM herald_outbox ORDER BY id")
                .fetch_all(&pool)
                .await
                .expect("ids");
        let returned: Vec<String> = ids.iter().map(ToString::to_string).collect();
        assert_eq!(stored, returned);

        #[derive(Event, Clone, Debug, Serialize, Deserialize)]
        #[event(name = "outbox_my.blob")]
        struct Blob {
            data: String,
        }
        let mut conn = pool.acquire().await.expect("connection");
        let error = outbox
            .publish(
                &mut *conn,
                Blob {
                    data: "x".repeat(100),
                },
            )
            .await
            .expect_err("over the limit");
        assert!(matches!(
            error,
            herald::outbox::OutboxPublishError::TooLarge { limit: 64, .. }
        ));
        assert_eq!(error.into_message().data.len(), 100);
        assert_eq!(count(&pool, "SELECT COUNT(*) FROM herald_outbox").await, 20);
    }
}

mod order {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_my.balance_changed", key = account)]
    pub(crate) struct BalanceChanged {
        pub(crate) account: String,
        pub(crate) seq: u32,
    }

    #[async_handler]
    async fn apply(event: BalanceChanged, State(tracker): State<Tracker>) {
        if event.seq.is_multiple_of(4) {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        tracker
            .log
            .lock()
            .expect("lock")
            .push(format!("{}:{}", event.account, event.seq));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_same_key_stays_in_order_with_four_relays() {
        let (pool, outbox) = setup("order").await;
        let mut tx = pool.begin().await.expect("begin");
        for seq in 0..30 {
            for account in ["a", "b", "c", "d", "e"] {
                outbox
                    .publish(
                        &mut tx,
                        BalanceChanged {
                            account: account.into(),
                            seq,
                        },
                    )
                    .await
                    .expect("publish");
            }
        }
        tx.commit().await.expect("commit");
        let tracker = Tracker::default();
        let herald = build(module_path!(), &pool, &tracker);
        let relays: Vec<_> = (0..4)
            .map(|_| {
                outbox
                    .relay(&herald)
                    .batch_size(3)
                    .poll_interval(Duration::from_millis(10))
                    .start()
            })
            .collect();
        eventually("all processed", Duration::from_secs(60), async || {
            outbox.status().await.expect("status").processed == 150
        })
        .await;
        for relay in relays {
            relay.stop().await;
        }
        let log = tracker.log();
        for account in ["a", "b", "c", "d", "e"] {
            let seqs: Vec<u32> = log
                .iter()
                .filter_map(|s| s.strip_prefix(&format!("{account}:")))
                .map(|n| n.parse().expect("number"))
                .collect();
            assert_eq!(seqs, (0..30).collect::<Vec<_>>(), "account {account}");
        }
    }
}

mod commit_order {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_my.stock_moved", key = sku)]
    pub(crate) struct StockMoved {
        pub(crate) sku: String,
        pub(crate) by: String,
    }

    #[async_handler]
    async fn book(event: StockMoved, State(tracker): State<Tracker>) {
        tracker.enter(&event.sku);
        tracker.log.lock().expect("lock").push(event.by);
        tokio::time::sleep(Duration::from_millis(300)).await;
        tracker.leave(&event.sku);
    }

    /// T1 publishes first, T2 second on the same key; T2 tries to commit before T1, with two
    /// relays running. The key's lock makes T2 wait at its publish until T1 commits, so the
    /// delivery order is the order they really committed in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_key_from_two_transactions_is_delivered_in_commit_order() {
        let (pool, outbox) = setup("commit_order").await;
        let tracker = Tracker::default();
        let herald = build(module_path!(), &pool, &tracker);
        let relays: Vec<_> = (0..2)
            .map(|_| {
                outbox
                    .relay(&herald)
                    .poll_interval(Duration::from_millis(20))
                    .start()
            })
            .collect();
        let committed = Arc::new(Mutex::new(Vec::new()));
        let mut first = pool.begin().await.expect("begin");
        outbox
            .publish(
                &mut *first,
                StockMoved {
                    sku: "sku-1".into(),
                    by: "first".into(),
                },
            )
            .await
            .expect("publish");
        let second = async {
            let mut tx = pool.begin().await.expect("begin");
            outbox
                .publish(
                    &mut *tx,
                    StockMoved {
                        sku: "sku-1".into(),
                        by: "second".into(),
                    },
                )
                .await
                .expect("publish");
            tx.commit().await.expect("commit");
            committed.lock().expect("lock").push("second".to_owned());
        };
        let first = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            first.commit().await.expect("commit");
            committed.lock().expect("lock").push("first".to_owned());
        };
        tokio::join!(second, first);
        let commit_order = committed.lock().expect("lock").clone();
        assert_eq!(commit_order, vec!["first", "second"], "T2 waited for T1");
        eventually("2 processed", Duration::from_secs(20), async || {
            outbox.status().await.expect("status").processed == 2
        })
        .await;
        for relay in relays {
            relay.stop().await;
        }
        assert!(tracker.overlaps.lock().expect("lock").is_empty());
        assert_eq!(tracker.log(), commit_order, "delivered in commit order");
    }
}

mod slow {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_my.report_requested")]
    pub(crate) struct ReportRequested {
        pub(crate) n: u32,
    }

    /// Three times the lease.
    #[async_handler]
    async fn render(_event: ReportRequested, meta: Meta, State(tracker): State<Tracker>) {
        let id = meta.id().to_string();
        tracker.enter(&id);
        tokio::time::sleep(Duration::from_secs(3)).await;
        tracker.leave(&id);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handler_slower_than_the_lease_runs_once_with_two_relays() {
        let (pool, outbox) = setup("lease_slow").await;
        let tracker = Tracker::default();
        let herald = build(module_path!(), &pool, &tracker);
        let mut tx = pool.begin().await.expect("begin");
        let ids = outbox
            .publish_all(&mut tx, (0..4).map(|n| ReportRequested { n }))
            .await
            .expect("publish_all");
        tx.commit().await.expect("commit");
        let relays: Vec<_> = (0..2)
            .map(|_| {
                outbox
                    .relay(&herald)
                    .batch_size(2)
                    .lease(Duration::from_secs(1))
                    .poll_interval(Duration::from_millis(50))
                    .start()
            })
            .collect();
        eventually("4 processed", Duration::from_secs(30), async || {
            outbox.status().await.expect("status").processed == 4
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let mut stats = Vec::new();
        for relay in relays {
            stats.push(relay.stop().await);
        }
        assert!(tracker.overlaps.lock().expect("lock").is_empty());
        let handled = tracker.handled.lock().expect("lock").clone();
        for id in &ids {
            assert_eq!(handled.get(&id.to_string()), Some(&1), "{handled:?}");
        }
        assert!(
            stats.iter().map(|s| s.renewed).sum::<u64>() >= 4,
            "each row's lease was renewed while its handler ran: {stats:?}"
        );
        assert_eq!(stats.iter().map(|s| s.lost).sum::<u64>(), 0, "{stats:?}");
    }
}

mod dead {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_my.refund_requested")]
    pub(crate) struct RefundRequested {
        pub(crate) order: String,
    }

    #[async_handler(retry(max_attempts = 2, backoff = fixed(10ms)))]
    async fn refund(
        _event: RefundRequested,
        State(tracker): State<Tracker>,
    ) -> Result<(), HandlerError> {
        let fixed = tracker.log().contains(&"fixed".into());
        tracker.log.lock().expect("lock").push("refund".into());
        if fixed {
            Ok(())
        } else {
            Err(HandlerError::msg("payment gateway down\0(nul)"))
        }
    }

    #[tokio::test]
    async fn dead_letters_are_durable_with_their_kind_and_redrive_goes_through_the_outbox() {
        let (pool, outbox) = setup("dead").await;
        let tracker = Tracker::default();
        let herald = build(module_path!(), &pool, &tracker);
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(10))
            .start();
        outbox
            .publish(
                &mut *pool.acquire().await.expect("connection"),
                RefundRequested {
                    order: "o-1".into(),
                },
            )
            .await
            .expect("publish");
        eventually("failed for good", Duration::from_secs(10), async || {
            outbox.status().await.expect("status").failed == 1
        })
        .await;
        relay.stop().await;
        let (fail_count, owner): (i32, Option<String>) =
            sqlx::query_as("SELECT fail_count, lease_owner FROM herald_outbox")
                .fetch_one(&pool)
                .await
                .expect("row");
        assert_eq!(fail_count, 2);
        assert_eq!(owner, None);
        assert_eq!(outbox.status().await.expect("status").dead_letters, 1);
        pool.close().await;

        let pool = pool_in("dead", false).await;
        let outbox = MySqlOutbox::open(pool.clone()).await.expect("open");
        let store = outbox.dead_letters();
        let letters = store.list(10).await.expect("list");
        assert_eq!(letters.len(), 1, "{letters:?}");
        assert_eq!(letters[0].attempts, 2);
        assert_eq!(letters[0].failure, Some(FailureKind::Error));
        assert_eq!(
            letters[0].last_error.as_deref(),
            Some("payment gateway down\0(nul)")
        );
        assert_eq!(letters[0].payload, serde_json::json!({ "order": "o-1" }));
        assert!(store.get(letters[0].id).await.expect("get").is_some());

        let tracker = Tracker::default();
        tracker.log.lock().expect("lock").push("fixed".into());
        let herald = build(module_path!(), &pool, &tracker);
        store
            .redrive_to_outbox(letters[0].id)
            .await
            .expect("redrive")
            .expect("found");
        assert!(store
            .redrive_to_outbox(letters[0].id)
            .await
            .expect("redrive")
            .is_none());
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(10))
            .start();
        eventually("re-driven", Duration::from_secs(10), async || {
            outbox.status().await.expect("status").processed == 1
        })
        .await;
        relay.stop().await;
        assert_eq!(store.count().await.expect("count"), 0);
        assert_eq!(count(&pool, "SELECT COUNT(*) FROM herald_outbox").await, 1);
    }

    #[tokio::test]
    async fn every_failure_kind_round_trips_and_a_second_failure_updates_the_entry() {
        use herald::{DeadLetter, DeadLetterId, DeadLetterReason, Envelope};
        let (_pool, outbox) = setup("kinds").await;
        let store = outbox.dead_letters();
        let kinds = [
            Some(FailureKind::Error),
            Some(FailureKind::PermanentError),
            Some(FailureKind::Panic),
            Some(FailureKind::Timeout),
            Some(FailureKind::Extraction),
            Some(FailureKind::Malformed),
            Some(FailureKind::Cancelled),
            Some(FailureKind::Shutdown),
            None,
        ];
        let mut ids = Vec::new();
        for (n, failure) in kinds.into_iter().enumerate() {
            let envelope = Envelope::new("outbox_my.kind");
            let now = envelope.occurred_at;
            ids.push(
                store
                    .put(DeadLetter {
                        id: DeadLetterId(0),
                        envelope,
                        payload: serde_json::json!({ "n": n }),
                        handler: format!("h{n}"),
                        reason: DeadLetterReason::Failed,
                        failure,
                        attempts: 1,
                        first_error: Some("boom".into()),
                        last_error: Some("boom".into()),
                        first_failed_at: Some(now),
                        last_failed_at: Some(now),
                        dead_lettered_at: now,
                    })
                    .await
                    .expect("put"),
            );
        }
        let listed: Vec<_> = store
            .list(20)
            .await
            .expect("list")
            .into_iter()
            .map(|letter| letter.failure)
            .collect();
        assert_eq!(listed, kinds.to_vec());
        let mut again = store.list(1).await.expect("list").remove(0);
        again.failure = Some(FailureKind::Panic);
        again.attempts = 7;
        let id = store.put(again).await.expect("update");
        assert_eq!(id, ids[0], "the same message and handler keep their entry");
        let taken = store.take(id).await.expect("take").expect("there");
        assert_eq!(taken.failure, Some(FailureKind::Panic));
        assert_eq!(taken.attempts, 7);
        assert!(store.take(id).await.expect("take").is_none());
        assert_eq!(store.purge(Some(ids[1])).await.expect("purge"), 1);
        assert_eq!(store.purge(None).await.expect("purge"), 7);
    }
}

mod malformed {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_my.parcel_shipped")]
    pub(crate) struct ParcelShipped {
        pub(crate) parcel: String,
    }

    #[async_handler]
    async fn notify(event: ParcelShipped, State(tracker): State<Tracker>) {
        tracker.log.lock().expect("lock").push(event.parcel);
    }

    #[tokio::test]
    async fn a_malformed_row_keeps_its_id_is_dead_lettered_and_redrive_acts_on_it() {
        let (pool, outbox) = setup("malformed").await;
        let message_id = "0190b2a8-0000-7000-8000-00000000abcd";
        let row = sqlx::query(
            r#"INSERT INTO herald_outbox (message_id, message_type, `key`, payload, headers, occurred_at)
               VALUES (?, 'outbox_my.parcel_shipped', 'p-1', '{"parcel": 7}',
                       '{"correlation_id": 7, "idempotency_key": "idem-1"}', UTC_TIMESTAMP(6))"#,
        )
        .bind(message_id)
        .execute(&pool)
        .await
        .expect("insert a hand-made row")
        .last_insert_id();
        let tracker = Tracker::default();
        let herald = build(module_path!(), &pool, &tracker);
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(10))
            .start();
        eventually("failed", Duration::from_secs(20), async || {
            outbox.status().await.expect("status").failed == 1
        })
        .await;
        relay.stop().await;
        let store = outbox.dead_letters();
        let letters = store.list(10).await.expect("list");
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].envelope.id.to_string(), message_id);
        assert_eq!(letters[0].failure, Some(FailureKind::Malformed));
        assert_eq!(letters[0].envelope.key.as_deref(), Some("p-1"));
        assert_eq!(
            letters[0].envelope.idempotency_key.as_deref(),
            Some("idem-1")
        );

        sqlx::query(r#"UPDATE herald_outbox SET headers = '{}', payload = '{"parcel": "p-1"}'"#)
            .execute(&pool)
            .await
            .expect("repair");
        let redriven = store
            .redrive_to_outbox(letters[0].id)
            .await
            .expect("redrive")
            .expect("found");
        assert_eq!(redriven as u64, row, "re-drive acts on the original row");
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(10))
            .start();
        eventually("processed", Duration::from_secs(20), async || {
            outbox.status().await.expect("status").processed == 1
        })
        .await;
        relay.stop().await;
        assert_eq!(tracker.log(), vec!["p-1".to_owned()]);
        assert_eq!(count(&pool, "SELECT COUNT(*) FROM herald_outbox").await, 1);
    }
}

mod inbox {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_my.points_earned")]
    pub(crate) struct PointsEarned {
        pub(crate) points: i64,
    }

    /// Commits its effects with the inbox row, then fails the first time (as a relay that dies
    /// after the handler's commit): the retry must find the message done and add nothing.
    #[async_handler(retry(max_attempts = 3, backoff = fixed(10ms)))]
    async fn credit(
        event: PointsEarned,
        inbox: MySqlInbox,
        State(tracker): State<Tracker>,
    ) -> Result<(), HandlerError> {
        let mut tx = inbox.begin().await?;
        sqlx::query("INSERT INTO points (total) VALUES (?)")
            .bind(event.points)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracker.log.lock().expect("lock").push("committed".into());
        Err(HandlerError::msg("lost the answer after commit"))
    }

    #[tokio::test]
    async fn a_redelivered_message_whose_effects_committed_is_skipped() {
        let (pool, outbox) = setup("inbox").await;
        sqlx::query("CREATE TABLE points (total BIGINT NOT NULL)")
            .execute(&pool)
            .await
            .expect("app table");
        let tracker = Tracker::default();
        let herald = build(module_path!(), &pool, &tracker);
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(10))
            .start();
        outbox
            .publish(
                &mut *pool.acquire().await.expect("connection"),
                PointsEarned { points: 10 },
            )
            .await
            .expect("publish");
        eventually("finished", Duration::from_secs(20), async || {
            outbox.status().await.expect("status").processed == 1
        })
        .await;
        relay.stop().await;
        assert_eq!(tracker.log(), vec!["committed".to_owned()]);
        assert_eq!(count(&pool, "SELECT COUNT(*) FROM points").await, 1);
        assert_eq!(count(&pool, "SELECT COUNT(*) FROM herald_inbox").await, 1);
        assert_eq!(outbox.status().await.expect("status").dead_letters, 0);
    }
}

mod event_store {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_my.content_published")]
    pub(crate) struct ContentPublished {
        pub(crate) title: String,
    }

    fn titles(events: &[outbox::StoredEvent]) -> Vec<String> {
        events
            .iter()
            .map(|event| event.payload["title"].as_str().expect("title").to_owned())
            .collect()
    }

    /// MySQL has no snapshot xmin: the watermark moves only while no publishing transaction is
    /// open, so a row that takes a lower id and commits after a higher one is never skipped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_after_never_skips_a_row_that_commits_later_with_a_lower_id() {
        let (pool, outbox) = setup("events").await;
        outbox
            .publish(
                &mut *pool.acquire().await.expect("connection"),
                ContentPublished {
                    title: "first".into(),
                },
            )
            .await
            .expect("publish");
        let page = outbox.events_after(0, 100).await.expect("page");
        assert_eq!(titles(&page), vec!["first"]);
        let offset = page[0].position;

        // `slow` takes the lower id and commits last; `fast` commits first with a higher id.
        let mut slow = pool.begin().await.expect("begin");
        outbox
            .publish(
                &mut slow,
                ContentPublished {
                    title: "slow".into(),
                },
            )
            .await
            .expect("publish");
        outbox
            .publish(
                &mut *pool.acquire().await.expect("connection"),
                ContentPublished {
                    title: "fast".into(),
                },
            )
            .await
            .expect("publish");
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM herald_outbox ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("ids");
        assert_eq!(ids.len(), 2, "the other connection sees `first` and `fast`");
        let page = outbox.events_after(offset, 100).await.expect("page");
        assert!(
            page.is_empty(),
            "nothing is handed out past an open publishing transaction: {:?}",
            titles(&page)
        );
        slow.commit().await.expect("commit");
        let page = outbox.events_after(offset, 100).await.expect("page");
        assert_eq!(titles(&page), vec!["slow", "fast"]);
        assert!(page[0].position < page[1].position);
        assert_eq!(page[1].status, "pending");
        let last = page[1].position;
        assert!(outbox
            .events_after(last, 100)
            .await
            .expect("page")
            .is_empty());
    }

    /// Many writers committing concurrently, a reader paging all the while: the reader sees every
    /// event exactly once, in strictly increasing positions.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_paging_beside_concurrent_writers_sees_every_event_once() {
        let (pool, outbox) = setup("events_concurrent").await;
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let pool = pool.clone();
                let outbox = outbox.clone();
                tokio::spawn(async move {
                    for n in 0..25 {
                        let mut tx = pool.begin().await.expect("begin");
                        outbox
                            .publish(
                                &mut tx,
                                ContentPublished {
                                    title: format!("{writer}-{n}"),
                                },
                            )
                            .await
                            .expect("publish");
                        if n % 3 == 0 {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        tx.commit().await.expect("commit");
                    }
                })
            })
            .collect();
        let mut seen = Vec::new();
        let mut offset = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.len() < 100 {
            assert!(Instant::now() < deadline, "read {} of 100", seen.len());
            for event in outbox.events_after(offset, 7).await.expect("page") {
                assert!(event.position > offset);
                offset = event.position;
                seen.push(event.payload["title"].as_str().expect("title").to_owned());
            }
        }
        for writer in writers {
            writer.await.expect("writer");
        }
        let distinct: HashSet<&String> = seen.iter().collect();
        assert_eq!(distinct.len(), 100, "each event once");
        assert!(outbox
            .events_after(offset, 100)
            .await
            .expect("page")
            .is_empty());
    }
}

mod stuck {
    use super::*;
    use herald::feed::OutboxOps;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_my.seat_held", key = flight)]
    pub(crate) struct SeatHeld {
        pub(crate) flight: String,
        pub(crate) seat: u32,
    }

    /// Seat 0 of flight `LH-1` fails (its retry is an hour away); every other seat works.
    #[async_handler(retry(max_attempts = 5, backoff = fixed(1h)))]
    async fn hold(event: SeatHeld, State(tracker): State<Tracker>) -> Result<(), HandlerError> {
        if event.flight == "LH-1" && event.seat == 0 {
            return Err(HandlerError::msg("the seat map is down"));
        }
        let id = format!("{}:{}", event.flight, event.seat);
        tracker.enter(&id);
        tracker.leave(&id);
        Ok(())
    }

    /// A key whose first message fails is listed with the messages waiting behind it; a key
    /// that moved on is not.
    #[tokio::test]
    async fn a_key_held_up_by_a_failing_message_is_listed_with_what_waits_behind_it() {
        let (pool, outbox) = setup("stuck").await;
        let tracker = Tracker::default();
        let herald = build(module_path!(), &pool, &tracker);
        let mut tx = pool.begin().await.expect("begin");
        for (flight, seat) in [
            ("LH-1", 0),
            ("LH-1", 1),
            ("LH-1", 2),
            ("BA-7", 0),
            ("BA-7", 1),
        ] {
            outbox
                .publish(
                    &mut *tx,
                    SeatHeld {
                        flight: flight.into(),
                        seat,
                    },
                )
                .await
                .expect("publish");
        }
        tx.commit().await.expect("commit");
        let first: i64 = sqlx::query_scalar("SELECT MIN(id) FROM herald_outbox")
            .fetch_one(&pool)
            .await
            .expect("first row");
        assert!(outbox.stuck_keys(10).await.expect("stuck").is_empty());
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(10))
            .start();
        eventually(
            "BA-7 handled and LH-1's first seat failed once",
            Duration::from_secs(20),
            async || {
                tracker.handled.lock().expect("lock").len() == 2
                    && outbox.status().await.is_ok_and(|s| s.retrying == 1)
            },
        )
        .await;
        relay.stop().await;
        let stuck = OutboxOps::stuck_keys(&outbox, 10).await.expect("stuck");
        assert_eq!(stuck.len(), 1, "{stuck:?}");
        let held = &stuck[0];
        assert_eq!(held.key, "LH-1");
        assert_eq!(held.head, first, "the row of seat 0");
        assert_eq!(held.message_type, "outbox_my.seat_held");
        assert_eq!(held.failed_attempts, 1);
        assert_eq!(held.waiting, 2, "seats 1 and 2");
        assert!(
            held.last_error
                .as_deref()
                .is_some_and(|e| e.contains("the seat map is down")),
            "{held:?}"
        );
        assert!(held.last_failed_at.is_some());
        let handled = tracker.handled.lock().expect("lock").clone();
        assert!(
            !handled.keys().any(|id| id.starts_with("LH-1")),
            "nothing of LH-1 ran past its first seat: {handled:?}"
        );
        herald.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn a_version_1_database_is_upgraded_to_the_latest_version_with_its_rows_kept() {
    let pool = pool_in("upgrade", true).await;
    sqlx::raw_sql(include_str!("../core/migrations/mysql/0001_outbox.sql"))
        .execute(&pool)
        .await
        .expect("schema v1");
    sqlx::raw_sql(
        "CREATE TABLE herald_schema (version BIGINT NOT NULL PRIMARY KEY, description TEXT NOT NULL,
            applied_at DATETIME(6) NOT NULL);
         INSERT INTO herald_schema VALUES (1, 'outbox, dead letters, inbox', UTC_TIMESTAMP(6));
         INSERT INTO herald_outbox (message_id, message_type, `key`, payload, headers, occurred_at)
         VALUES (UUID(), 'outbox_my.v1', 'k', '{}', '{}', UTC_TIMESTAMP(6));
         INSERT INTO herald_dead_letters (message_id, message_type, handler, reason, attempts,
            envelope, payload, dead_lettered_at)
         VALUES (UUID(), 'outbox_my.v1', 'app::h', 'failed', 1,
            '{\"id\":\"0190b2a8-0000-7000-8000-000000000002\",\"name\":\"outbox_my.v1\",\"occurred_at\":\"2026-01-01T00:00:00Z\",\"key\":null,\"idempotency_key\":null,\"headers\":{\"correlation_id\":null,\"causation_id\":null,\"extra\":{}}}',
            '{}', UTC_TIMESTAMP(6))",
    )
    .execute(&pool)
    .await
    .expect("a v1 database with rows");
    let outbox = MySqlOutbox::new(pool.clone()).await.expect("upgrade");
    assert_eq!(
        MySqlOutbox::schema_version(&pool).await.expect("version"),
        5
    );
    let old = outbox.dead_letters().list(10).await.expect("list");
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].failure, None, "a v1 dead letter has no kind");
    assert_eq!(outbox.status().await.expect("status").pending, 1);
    // Migrating again changes nothing.
    MySqlOutbox::migrate(&pool).await.expect("again");
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM herald_schema").await, 5);
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM herald_sla_expectations").await,
        0,
        "v4: the SLA table"
    );
}

#[tokio::test]
async fn connect_reports_a_refused_connection_at_once_and_takes_mariadb_urls() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let started = Instant::now();
    let error = outbox::mysql::connect(&format!("mysql://root@127.0.0.1:{port}/x"))
        .await
        .expect_err("nothing listens there");
    let took = started.elapsed();
    let message = error.to_string();
    assert!(
        message.to_lowercase().contains("connection refused"),
        "the real cause: {message}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let url = database_url().replacen("mysql://", "mariadb://", 1);
    let pool = outbox::mysql::connect(&url).await.expect("connect");
    let one: i64 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .expect("query");
    assert_eq!(one, 1);
}

#[test]
fn the_mysql_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MySqlOutbox>();
    assert_send_sync::<herald::MySqlDeadLetters>();
    assert_send_sync::<MySqlInbox>();
}
