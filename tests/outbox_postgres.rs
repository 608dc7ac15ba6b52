//! The outbox on the machine's real PostgreSQL (`HERALD_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`). Each test works in a schema of its own. These tests
//! fail, never skip, when PostgreSQL is down.
//!
//! Commit and rollback; 2 and 4 competing relays on 10,000 messages; kill -9 of a relay process
//! mid-batch then recovery with the inbox stopping duplicate effects; per-key order with four
//! relays; durable dead letters and re-drive; `events_after` never skipping a row that commits late;
//! relays whose connections PostgreSQL ends again and again under load.
#![cfg(feature = "postgres")]

use herald::inbox::PgInbox;
use herald::outbox::{self, PgOutbox};
use herald::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use herald::sqlx::{self, PgPool};
use herald::{async_handler, DeadLetterStore, Event, HandlerError, Herald, Meta, State};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn database_url() -> String {
    std::env::var("HERALD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A pool whose connections work in `schema` (created fresh unless `keep`).
async fn pool_in(schema: &str, fresh: bool) -> PgPool {
    let url = database_url();
    let options = PgConnectOptions::from_str(&url).expect("valid HERALD_TEST_DATABASE_URL");
    if fresh {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required for these tests: {e}"));
        sqlx::raw_sql(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
        ))
        .execute(&admin)
        .await
        .expect("create schema");
        admin.close().await;
    }
    PgPoolOptions::new()
        .max_connections(12)
        .connect_with(options.options([("search_path", schema)]))
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required for these tests: {e}"))
}

async fn setup(schema: &str) -> (PgPool, PgOutbox) {
    let pool = pool_in(schema, true).await;
    let outbox = PgOutbox::new(pool.clone()).await.expect("migrate");
    (pool, outbox)
}

#[derive(Clone, Default)]
struct Tracker {
    running: Arc<Mutex<HashSet<String>>>,
    overlaps: Arc<Mutex<u64>>,
    handled: Arc<Mutex<HashMap<String, u32>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Tracker {
    fn enter(&self, id: &str) {
        if !self.running.lock().expect("lock").insert(id.to_owned()) {
            *self.overlaps.lock().expect("lock") += 1;
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
}

fn build(module: &str, pool: &PgPool, tracker: &Tracker) -> Herald {
    Herald::builder()
        .handlers_under(module)
        .state(tracker.clone())
        .state(pool.clone())
        .dead_letters(herald::PgDeadLetters::new(pool.clone()))
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

mod competing {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_pg.push_requested")]
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

    async fn run(schema: &str, relays: usize) {
        let (pool, outbox) = setup(schema).await;
        let tracker = Tracker::default();
        let herald = build(module_path!(), &pool, &tracker);
        for chunk in 0..100 {
            let mut tx = pool.begin().await.expect("begin");
            for i in 0..100 {
                outbox
                    .publish(&mut tx, PushRequested { n: chunk * 100 + i })
                    .await
                    .expect("publish");
            }
            tx.commit().await.expect("commit");
        }
        let started: Vec<_> = (0..relays)
            .map(|_| outbox.relay(&herald).batch_size(50).start())
            .collect();
        eventually("10,000 processed", Duration::from_secs(120), async || {
            outbox.status().await.expect("status").processed == 10_000
        })
        .await;
        let mut batches = Vec::new();
        for relay in started {
            batches.push(relay.stop().await.processed);
        }
        assert!(
            batches.iter().filter(|b| **b > 0).count() >= 2,
            "the relays shared the work: {batches:?}"
        );
        assert_eq!(batches.iter().sum::<u64>(), 10_000, "{batches:?}");
        assert_eq!(*tracker.overlaps.lock().expect("lock"), 0);
        let handled = tracker.handled.lock().expect("lock");
        assert_eq!(handled.len(), 10_000);
        assert!(handled.values().all(|n| *n == 1), "each delivered once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_relays_share_10000_messages_without_overlap() {
        run("herald_t_two_relays", 2).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn four_relays_share_10000_messages_without_overlap() {
        run("herald_t_four_relays", 4).await;
    }

    #[tokio::test]
    async fn a_committed_event_is_delivered_and_a_rolled_back_one_never_is() {
        let (pool, outbox) = setup("herald_t_commit").await;
        let tracker = Tracker::default();
        let herald = build(module_path!(), &pool, &tracker);
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_secs(5))
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
        // The poll interval is 5 s: delivery within 2 s shows that NOTIFY woke the relay.
        eventually(
            "NOTIFY wakes the relay",
            Duration::from_secs(2),
            async || {
                tracker
                    .handled
                    .lock()
                    .expect("lock")
                    .contains_key(&committed.to_string())
            },
        )
        .await;
        relay.stop().await;
        assert!(!tracker
            .handled
            .lock()
            .expect("lock")
            .contains_key(&rolled_back.to_string()));
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM herald_outbox")
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(rows, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publish_all_delivers_every_committed_message_and_none_rolled_back() {
        let (pool, outbox) = setup("herald_t_publish_all").await;
        let tracker = Tracker::default();
        let herald = build(module_path!(), &pool, &tracker);
        let relay = outbox.relay(&herald).batch_size(500).start();

        let mut tx = pool.begin().await.expect("begin");
        let rolled_back = outbox
            .publish_all(&mut tx, (0..3).map(|n| PushRequested { n }))
            .await
            .expect("publish_all");
        tx.rollback().await.expect("rollback");
        // More rows than one statement can bind (65,535 / 6 = 10,922): two INSERTs.
        let count = 11_000;
        let mut tx = pool.begin().await.expect("begin");
        let committed = outbox
            .publish_all(&mut tx, (0..count).map(|n| PushRequested { n }))
            .await
            .expect("publish_all");
        assert!(outbox
            .publish_all(&mut tx, std::iter::empty::<PushRequested>())
            .await
            .expect("nothing to publish")
            .is_empty());
        tx.commit().await.expect("commit");

        eventually(
            "every committed message handled",
            Duration::from_secs(60),
            async || tracker.handled.lock().expect("lock").len() == count as usize,
        )
        .await;
        relay.stop().await;
        let handled = tracker.handled.lock().expect("lock").clone();
        assert!(committed
            .iter()
            .all(|id| handled.get(&id.to_string()) == Some(&1)));
        assert!(rolled_back
            .iter()
            .all(|id| !handled.contains_key(&id.to_string())));
        // The ids come back in the order the rows were written.
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT message_id::text FROM herald_outbox ORDER BY id")
                .fetch_all(&pool)
                .await
                .expect("ids");
        let returned: Vec<String> = committed.iter().map(ToString::to_string).collect();
        assert_eq!(stored, returned);
    }
}

mod order {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_pg.balance_changed", key = account)]
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
        let (pool, outbox) = setup("herald_t_order").await;
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
            .map(|_| outbox.relay(&herald).batch_size(3).start())
            .collect();
        eventually("all processed", Duration::from_secs(60), async || {
            outbox.status().await.expect("status").processed == 150
        })
        .await;
        for relay in relays {
            relay.stop().await;
        }
        let log = tracker.log.lock().expect("lock").clone();
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

mod dead {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_pg.refund_requested")]
    pub(crate) struct RefundRequested {
        pub(crate) order: String,
    }

    #[async_handler(retry(max_attempts = 2, backoff = fixed(10ms)))]
    async fn refund(
        _event: RefundRequested,
        State(tracker): State<Tracker>,
    ) -> Result<(), HandlerError> {
        let fixed = tracker.log.lock().expect("lock").contains(&"fixed".into());
        tracker.log.lock().expect("lock").push("refund".into());
        if fixed {
            Ok(())
        } else {
            Err(HandlerError::msg("payment gateway down"))
        }
    }

    #[tokio::test]
    async fn dead_letters_are_durable_and_redrive_goes_through_the_outbox() {
        let (pool, outbox) = setup("herald_t_dead").await;
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
        // The write-back of the retry, then of the last failure: two attempts counted, the
        // handler marked failed for good, the lease gone.
        let (fail_count, done, error, owner): (i32, String, String, Option<String>) =
            sqlx::query_as(
                "SELECT fail_count, handlers_done::text, last_error, lease_owner FROM herald_outbox",
            )
            .fetch_one(&pool)
            .await
            .expect("row");
        assert_eq!(fail_count, 2);
        assert!(done.contains('!'), "{done}");
        assert!(error.contains("payment gateway down"), "{error}");
        assert_eq!(owner, None);
        pool.close().await;

        let pool = pool_in("herald_t_dead", false).await;
        let outbox = PgOutbox::open(pool.clone()).await.expect("open");
        let store = outbox.dead_letters();
        let letters = store.list(10).await.expect("list");
        assert_eq!(letters.len(), 1, "{letters:?}");
        assert_eq!(letters[0].attempts, 2);
        assert_eq!(
            letters[0].last_error.as_deref(),
            Some("payment gateway down")
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
        let relay = outbox.relay(&herald).start();
        eventually("re-driven", Duration::from_secs(10), async || {
            outbox.status().await.expect("status").processed == 1
        })
        .await;
        relay.stop().await;
        assert_eq!(store.count().await.expect("count"), 0);
        assert_eq!(store.purge(None).await.expect("purge"), 0);
    }
}

mod kinds {
    //! Issue 8 item 8: a durable dead letter says what kind of failure it was, as data.
    use super::*;
    use herald::{DeadLetter, DeadLetterId, DeadLetterReason, Envelope, FailureKind};

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_pg.invoice_requested")]
    pub(crate) struct InvoiceRequested {
        pub(crate) n: u32,
    }

    #[async_handler(timeout = "20ms", retry(max_attempts = 1))]
    async fn slow_invoice(_event: InvoiceRequested) {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }

    #[async_handler(retry(max_attempts = 1))]
    async fn panicking_invoice(_event: InvoiceRequested) {
        panic!("invoice template missing");
    }

    #[async_handler(retry(max_attempts = 5, backoff = fixed(10ms)))]
    async fn refused_invoice(_event: InvoiceRequested) -> Result<(), HandlerError> {
        Err(HandlerError::permanent(HandlerError::msg(
            "customer closed",
        )))
    }

    #[async_handler(retry(max_attempts = 2, backoff = fixed(10ms)))]
    async fn failing_invoice(_event: InvoiceRequested) -> Result<(), HandlerError> {
        Err(HandlerError::msg("ledger down"))
    }

    pub(crate) fn entry(handler: &str, failure: Option<FailureKind>) -> DeadLetter {
        let envelope = Envelope::new("outbox_pg.kind");
        let now = envelope.occurred_at;
        DeadLetter {
            id: DeadLetterId(0),
            envelope,
            payload: serde_json::json!({ "n": 1 }),
            handler: handler.to_owned(),
            reason: DeadLetterReason::Failed,
            failure,
            attempts: 1,
            first_error: Some("boom".into()),
            last_error: Some("boom".into()),
            first_failed_at: Some(now),
            last_failed_at: Some(now),
            dead_lettered_at: now,
        }
    }

    pub(crate) const EVERY_KIND: [Option<FailureKind>; 9] = [
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

    #[tokio::test]
    async fn every_failure_kind_round_trips_through_the_postgres_store() {
        let (pool, outbox) = setup("herald_t_kinds_store").await;
        let store = outbox.dead_letters();
        for (n, failure) in EVERY_KIND.into_iter().enumerate() {
            let id = store
                .put(entry(&format!("h{n}"), failure))
                .await
                .expect("put");
            let back = store.get(id).await.expect("get").expect("stored");
            assert_eq!(back.failure, failure, "{back:?}");
            let stored: Option<String> =
                sqlx::query_scalar("SELECT failure_kind FROM herald_dead_letters WHERE id = $1")
                    .bind(id.0)
                    .fetch_one(&pool)
                    .await
                    .expect("column");
            assert_eq!(stored.as_deref(), failure.map(|k| k.as_str()));
        }
        let listed: Vec<_> = store
            .list(20)
            .await
            .expect("list")
            .into_iter()
            .map(|letter| letter.failure)
            .collect();
        assert_eq!(listed, EVERY_KIND.to_vec());
        // A second failure of the same message and handler updates the kind.
        let mut again = store.list(1).await.expect("list").remove(0);
        again.failure = Some(FailureKind::Panic);
        let id = store.put(again).await.expect("update");
        let taken = store.take(id).await.expect("take").expect("there");
        assert_eq!(taken.failure, Some(FailureKind::Panic));
    }

    #[tokio::test]
    async fn a_timeout_a_panic_and_a_permanent_error_through_the_relay_keep_their_kind() {
        let (pool, outbox) = setup("herald_t_kinds_relay").await;
        let herald = build(module_path!(), &pool, &Tracker::default());
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(10))
            .start();
        outbox
            .publish(
                &mut *pool.acquire().await.expect("connection"),
                InvoiceRequested { n: 1 },
            )
            .await
            .expect("publish");
        eventually("failed for good", Duration::from_secs(20), async || {
            outbox.status().await.expect("status").failed == 1
        })
        .await;
        relay.stop().await;
        let mut kinds: Vec<(String, Option<FailureKind>, u32)> = outbox
            .dead_letters()
            .list(10)
            .await
            .expect("list")
            .into_iter()
            .map(|letter| {
                let short = letter.handler.rsplit("::").next().unwrap_or("").to_owned();
                (short, letter.failure, letter.attempts)
            })
            .collect();
        kinds.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            kinds,
            vec![
                ("failing_invoice".into(), Some(FailureKind::Error), 2),
                ("panicking_invoice".into(), Some(FailureKind::Panic), 1),
                (
                    "refused_invoice".into(),
                    Some(FailureKind::PermanentError),
                    1
                ),
                ("slow_invoice".into(), Some(FailureKind::Timeout), 1),
            ]
        );
    }
}

mod nul {
    //! Issue 8 item 12: a dead letter that PostgreSQL would refuse (U+0000 in jsonb or text) is
    //! stored anyway, and a dead letter that cannot be written keeps its row pending.
    use super::*;
    use herald::{DeadLetter, DeadLetterId, DeadLetterReason, Envelope, FailureKind};

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_pg.note_taken")]
    pub(crate) struct NoteTaken {
        pub(crate) text: String,
    }

    #[async_handler(retry(max_attempts = 1))]
    async fn file_note(
        event: NoteTaken,
        State(tracker): State<Tracker>,
    ) -> Result<(), HandlerError> {
        if tracker.log.lock().expect("lock").contains(&"fixed".into()) {
            tracker.log.lock().expect("lock").push(event.text);
            return Ok(());
        }
        // The error text carries the NUL too.
        Err(HandlerError::permanent(HandlerError::msg(format!(
            "cannot file {}",
            event.text
        ))))
    }

    #[tokio::test]
    async fn a_payload_and_an_error_with_a_nul_char_are_dead_lettered_and_redriven() {
        let (pool, outbox) = setup("herald_t_nul_payload").await;
        let tracker = Tracker::default();
        let herald = build(module_path!(), &pool, &tracker);
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(10))
            .start();
        let text = "before\u{0}after".to_owned();
        let id = outbox
            .publish(
                &mut *pool.acquire().await.expect("connection"),
                NoteTaken { text: text.clone() },
            )
            .await
            .expect("publish");
        eventually("failed for good", Duration::from_secs(20), async || {
            outbox.status().await.expect("status").failed == 1
        })
        .await;
        relay.stop().await;
        let (status, last_error): (String, String) =
            sqlx::query_as("SELECT status, last_error FROM herald_outbox")
                .fetch_one(&pool)
                .await
                .expect("row");
        assert_eq!(status, "failed");
        assert!(last_error.contains("before\\u0000after"), "{last_error}");
        let store = outbox.dead_letters();
        let letters = store.list(10).await.expect("list");
        assert_eq!(letters.len(), 1, "the dead letter is stored: {letters:?}");
        let letter = &letters[0];
        assert_eq!(letter.envelope.id, id);
        assert_eq!(letter.payload, serde_json::json!({ "text": text }));
        assert_eq!(letter.failure, Some(FailureKind::PermanentError));
        assert_eq!(
            letter.last_error.as_deref(),
            Some("cannot file before\\u0000after"),
            "the NUL is written as \\u0000"
        );

        tracker.log.lock().expect("lock").push("fixed".into());
        store
            .redrive_to_outbox(letter.id)
            .await
            .expect("redrive")
            .expect("found");
        let relay = outbox.relay(&herald).start();
        eventually("re-driven", Duration::from_secs(20), async || {
            outbox.status().await.expect("status").processed == 1
        })
        .await;
        relay.stop().await;
        assert!(tracker.log.lock().expect("lock").contains(&text));
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM herald_outbox")
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(rows, 1, "the original row was re-driven, no copy");
    }

    #[tokio::test]
    async fn an_entry_with_nul_chars_everywhere_is_stored_and_read_back() {
        let (_pool, outbox) = setup("herald_t_nul_entry").await;
        let store = outbox.dead_letters();
        let mut envelope = Envelope::new("outbox_pg.note_taken");
        envelope.key = Some("k\u{0}1".into());
        envelope
            .headers
            .extra
            .insert("trace".into(), "a\u{0}b".into());
        let now = envelope.occurred_at;
        let entry = DeadLetter {
            id: DeadLetterId(0),
            envelope,
            payload: serde_json::json!({ "text": "x\u{0}y" }),
            handler: "app::file_note".into(),
            reason: DeadLetterReason::Failed,
            failure: Some(FailureKind::Panic),
            attempts: 1,
            first_error: Some("first \u{0} error".into()),
            last_error: Some("last \u{0} error".into()),
            first_failed_at: Some(now),
            last_failed_at: Some(now),
            dead_lettered_at: now,
        };
        let id = store
            .put(entry.clone())
            .await
            .expect("stored despite the NULs");
        let back = store.get(id).await.expect("get").expect("there");
        assert_eq!(back.envelope, entry.envelope);
        assert_eq!(back.payload, entry.payload);
        assert_eq!(back.first_error.as_deref(), Some("first \\u0000 error"));
        assert_eq!(back.last_error.as_deref(), Some("last \\u0000 error"));
        assert_eq!(back.failure, Some(FailureKind::Panic));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_letter_that_cannot_be_written_keeps_its_row_pending_until_it_can() {
        let (pool, outbox) = setup("herald_t_nul_store_down").await;
        let tracker = Tracker::default();
        let herald = build(module_path!(), &pool, &tracker);
        // A handler that fails for good, and a row that cannot be decoded.
        outbox
            .publish(
                &mut *pool.acquire().await.expect("connection"),
                NoteTaken { text: "n".into() },
            )
            .await
            .expect("publish");
        sqlx::query(
            "INSERT INTO herald_outbox (message_id, message_type, payload, occurred_at)
             VALUES (gen_random_uuid(), 'outbox_pg.note_taken', '{\"txt\": 1}', now())",
        )
        .execute(&pool)
        .await
        .expect("insert malformed");
        sqlx::query("ALTER TABLE herald_dead_letters RENAME TO herald_dead_letters_away")
            .execute(&pool)
            .await
            .expect("take the store away");
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(10))
            .start();
        let attempted = async || -> i64 {
            sqlx::query_scalar("SELECT COUNT(*) FROM herald_outbox WHERE fail_count > 0")
                .fetch_one(&pool)
                .await
                .expect("count")
        };
        eventually("both rows attempted", Duration::from_secs(30), async || {
            attempted().await == 2
        })
        .await;
        let statuses: Vec<(String, String)> =
            sqlx::query_as("SELECT status, last_error FROM herald_outbox ORDER BY id")
                .fetch_all(&pool)
                .await
                .expect("rows");
        assert!(
            statuses.iter().all(|(status, _)| status == "pending"),
            "no row is marked failed without its dead letter: {statuses:?}"
        );
        sqlx::query("ALTER TABLE herald_dead_letters_away RENAME TO herald_dead_letters")
            .execute(&pool)
            .await
            .expect("bring the store back");
        eventually(
            "both failed for good",
            Duration::from_secs(30),
            async || outbox.status().await.expect("status").failed == 2,
        )
        .await;
        relay.stop().await;
        let mut kinds: Vec<_> = outbox
            .dead_letters()
            .list(10)
            .await
            .expect("list")
            .into_iter()
            .map(|letter| (letter.reason.as_str(), letter.failure))
            .collect();
        kinds.sort_by_key(|kind| kind.0);
        assert_eq!(
            kinds,
            vec![
                ("failed", Some(FailureKind::PermanentError)),
                ("malformed", Some(FailureKind::Malformed)),
            ]
        );
    }
}

mod bad_headers {
    //! Issue 8 item 11 on PostgreSQL: headers of the wrong types (jsonb rules out invalid JSON).
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_pg.parcel_shipped")]
    pub(crate) struct ParcelShipped {
        pub(crate) parcel: String,
    }

    #[async_handler]
    async fn notify(event: ParcelShipped, State(tracker): State<Tracker>) {
        tracker.log.lock().expect("lock").push(event.parcel);
    }

    #[tokio::test]
    async fn a_row_with_wrongly_typed_headers_keeps_its_id_and_redrive_acts_on_it() {
        let (pool, outbox) = setup("herald_t_bad_headers").await;
        let (row, message_id): (i64, String) = sqlx::query_as(
            r#"INSERT INTO herald_outbox (message_id, message_type, key, payload, headers, occurred_at)
               VALUES (gen_random_uuid(), 'outbox_pg.parcel_shipped', 'p-1', '{"parcel": "p-1"}',
                       '{"correlation_id": 7, "idempotency_key": "idem-1"}', now())
               RETURNING id, message_id::text"#,
        )
        .fetch_one(&pool)
        .await
        .expect("insert a hand-made row");
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
        assert_eq!(letters[0].envelope.key.as_deref(), Some("p-1"));
        assert_eq!(
            letters[0].envelope.idempotency_key.as_deref(),
            Some("idem-1")
        );
        assert_eq!(letters[0].envelope.headers.correlation_id, None);

        sqlx::query("UPDATE herald_outbox SET headers = '{}'")
            .execute(&pool)
            .await
            .expect("repair");
        let redriven = store
            .redrive_to_outbox(letters[0].id)
            .await
            .expect("redrive")
            .expect("found");
        assert_eq!(redriven, row, "re-drive acts on the original row");
        let relay = outbox.relay(&herald).start();
        eventually("processed", Duration::from_secs(20), async || {
            outbox.status().await.expect("status").processed == 1
        })
        .await;
        relay.stop().await;
        assert_eq!(*tracker.log.lock().expect("lock"), vec!["p-1".to_owned()]);
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM herald_outbox")
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(rows, 1, "no copy beside it");
    }
}

mod event_store {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_pg.content_published")]
    pub(crate) struct ContentPublished {
        pub(crate) title: String,
    }

    #[tokio::test]
    async fn events_after_never_skips_a_row_that_commits_later_with_a_lower_id() {
        let (pool, outbox) = setup("herald_t_events").await;
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
        assert_eq!(page.len(), 1);
        let mut offset = page[0].position;

        // A takes the lower id and commits last.
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
        let mut seen: Vec<String> = Vec::new();
        for event in outbox.events_after(offset, 100).await.expect("page") {
            offset = event.position;
            seen.push(event.payload["title"].as_str().expect("title").to_owned());
        }
        assert!(
            seen.is_empty(),
            "nothing is handed out past a running writer: {seen:?}"
        );
        slow.commit().await.expect("commit");
        // A transaction of a test running beside this one (same database) also holds positions
        // back until it ends: page until both rows are out.
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < 2 && Instant::now() < deadline {
            for event in outbox.events_after(offset, 100).await.expect("page") {
                offset = event.position;
                seen.push(event.payload["title"].as_str().expect("title").to_owned());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen, vec!["slow".to_owned(), "fast".to_owned()]);
        assert!(outbox
            .events_after(offset, 100)
            .await
            .expect("page")
            .is_empty());
    }
}

mod crash {
    //! kill -9 of a relay process mid-batch. The test binary runs itself as the relay process
    //! (the ignored test `relay_worker_process`, selected with `HERALD_RELAY_WORKER`).
    use super::*;

    const SCHEMA: &str = "herald_t_crash";
    const MESSAGES: i64 = 300;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_pg.points_earned")]
    pub(crate) struct PointsEarned {
        pub(crate) n: i64,
    }

    #[async_handler(retry(max_attempts = 10, backoff = fixed(10ms)))]
    async fn credit(
        event: PointsEarned,
        inbox: PgInbox,
        State(tracker): State<Tracker>,
    ) -> Result<(), HandlerError> {
        let mut tx = inbox.begin().await?;
        sqlx::query("INSERT INTO effects (n) VALUES ($1)")
            .bind(event.n)
            .execute(&mut *tx)
            .await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        tx.commit().await?;
        tracker.leave(&event.n.to_string());
        Ok(())
    }

    #[tokio::test]
    #[ignore = "the relay process of kill_9_mid_batch; runs only when HERALD_RELAY_WORKER is set"]
    async fn relay_worker_process() {
        if std::env::var("HERALD_RELAY_WORKER").is_err() {
            return;
        }
        let pool = pool_in(SCHEMA, false).await;
        let outbox = PgOutbox::open(pool.clone()).await.expect("open");
        let herald = build(module_path!(), &pool, &Tracker::default());
        let _relay = outbox
            .relay(&herald)
            .owner("doomed-relay")
            .batch_size(50)
            .lease(Duration::from_secs(2))
            .start();
        // Run until killed.
        tokio::time::sleep(Duration::from_secs(600)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kill_9_mid_batch_then_another_relay_takes_over_after_the_lease() {
        let (pool, outbox) = setup(SCHEMA).await;
        sqlx::query("CREATE TABLE effects (n BIGINT NOT NULL)")
            .execute(&pool)
            .await
            .expect("effects table");
        let mut tx = pool.begin().await.expect("begin");
        for n in 0..MESSAGES {
            outbox
                .publish(&mut tx, PointsEarned { n })
                .await
                .expect("publish");
        }
        tx.commit().await.expect("commit");

        let mut worker = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "crash::relay_worker_process",
                "--ignored",
                "--nocapture",
            ])
            .env("HERALD_RELAY_WORKER", "1")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn the relay process");
        let effects = async |pool: &PgPool| -> i64 {
            sqlx::query_scalar("SELECT COUNT(*) FROM effects")
                .fetch_one(pool)
                .await
                .expect("count")
        };
        eventually(
            "the worker is mid-way",
            Duration::from_secs(60),
            async || effects(&pool).await >= 60,
        )
        .await;
        worker.kill().expect("kill -9"); // SIGKILL on Unix
        worker.wait().expect("reap");
        let leased: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM herald_outbox WHERE status = 'pending' AND lease_owner = 'doomed-relay'",
        )
        .fetch_one(&pool)
        .await
        .expect("count");
        assert!(leased > 0, "the killed relay held leases");
        assert!(effects(&pool).await < MESSAGES, "killed mid-way");

        let tracker = Tracker::default();
        let herald = build(module_path!(), &pool, &tracker);
        let relay = outbox.relay(&herald).lease(Duration::from_secs(2)).start();
        eventually(
            "all processed after the lease",
            Duration::from_secs(60),
            async || outbox.status().await.expect("status").processed == MESSAGES as u64,
        )
        .await;
        relay.stop().await;
        let duplicates: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT n FROM effects GROUP BY n HAVING COUNT(*) > 1) d",
        )
        .fetch_one(&pool)
        .await
        .expect("count");
        assert_eq!(duplicates, 0, "the inbox stopped duplicate effects");
        assert_eq!(
            effects(&pool).await,
            MESSAGES,
            "each message handled at least once"
        );
        let ledger = herald.ledger();
        eprintln!("after takeover: {ledger:?}");
    }
}

#[tokio::test]
async fn a_version_1_database_is_upgraded_with_its_rows_kept() {
    let pool = pool_in("herald_t_upgrade", true).await;
    sqlx::raw_sql(include_str!("../core/migrations/postgres/0001_outbox.sql"))
        .execute(&pool)
        .await
        .expect("schema v1");
    sqlx::raw_sql(
        "CREATE TABLE herald_schema (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
         INSERT INTO herald_schema (version, description) VALUES (1, 'outbox, dead letters, inbox');
         INSERT INTO herald_outbox (message_id, message_type, key, payload, occurred_at)
         VALUES (gen_random_uuid(), 'outbox_pg.v1', 'k', '{}', now())",
    )
    .execute(&pool)
    .await
    .expect("a v1 database with a row");
    sqlx::raw_sql(
        "INSERT INTO herald_dead_letters (message_id, message_type, handler, reason, attempts,
            envelope, payload, dead_lettered_at)
         VALUES (gen_random_uuid(), 'outbox_pg.v1', 'app::h', 'failed', 1,
            '{\"id\":\"0190b2a8-0000-7000-8000-000000000002\",\"name\":\"outbox_pg.v1\",\"occurred_at\":\"2026-01-01T00:00:00Z\",\"key\":null,\"idempotency_key\":null,\"headers\":{\"correlation_id\":null,\"causation_id\":null,\"extra\":{}}}',
            '{}', now())",
    )
    .execute(&pool)
    .await
    .expect("a v1 dead letter");
    let outbox = PgOutbox::new(pool.clone()).await.expect("upgrade");
    // v3 (failure kind) at least: a later version may follow.
    assert!(PgOutbox::schema_version(&pool).await.expect("version") >= 3);
    let old = outbox.dead_letters().list(10).await.expect("list");
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].failure, None, "a v1 dead letter has no kind");
    assert_eq!(outbox.status().await.expect("status").pending, 1);
    let index: String = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'herald_outbox_pending_key'
           AND schemaname = current_schema()",
    )
    .fetch_one(&pool)
    .await
    .expect("index");
    assert!(index.contains("key IS NOT NULL"), "{index}");
    let options: Vec<String> = sqlx::query_scalar(
        "SELECT unnest(reloptions) FROM pg_class
         WHERE oid = 'herald_outbox'::regclass",
    )
    .fetch_all(&pool)
    .await
    .expect("reloptions");
    assert_eq!(options, vec!["fillfactor=70".to_owned()]);
}

mod dropped_connections {
    use super::*;

    const SCHEMA: &str = "herald_t_dropped";
    /// The relays' connections carry this name, so the killer ends theirs and nobody else's.
    const APP: &str = "herald_t_dropped_relays";
    const TRANSACTIONS: u32 = 60;
    const PER_TRANSACTION: u32 = 10;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_pg.stamp_collected")]
    pub(crate) struct StampCollected {
        pub(crate) n: u32,
    }

    #[async_handler]
    async fn collect(event: StampCollected, State(tracker): State<Tracker>) {
        tracker.enter(&event.n.to_string());
        tokio::time::sleep(Duration::from_millis(1)).await;
        tracker.leave(&event.n.to_string());
    }

    /// PostgreSQL ends the relays' connections (`pg_terminate_backend`, as a failover or an
    /// administrator would) again and again while events are published and relayed: every
    /// committed event is still handled (at least once: a batch handled but not written back comes
    /// again after its lease), no row is left pending, leased or failed, nothing is dead-lettered,
    /// and the ledger balances.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relays_whose_connections_are_killed_under_load_lose_nothing() {
        // Publishers and the killer use a pool of their own; only the relays' connections die.
        let (publishers, _) = setup(SCHEMA).await;
        let options = PgConnectOptions::from_str(&database_url())
            .expect("valid HERALD_TEST_DATABASE_URL")
            .application_name(APP)
            .options([("search_path", SCHEMA)]);
        let relay_pool = PgPoolOptions::new()
            .max_connections(6)
            .connect_with(options)
            .await
            .expect("the relays' pool");
        let outbox = PgOutbox::open(relay_pool.clone()).await.expect("open");
        let tracker = Tracker::default();
        let herald = build(module_path!(), &relay_pool, &tracker);
        let relays: Vec<_> = (0..2)
            .map(|_| {
                outbox
                    .relay(&herald)
                    .batch_size(20)
                    .lease(Duration::from_secs(2))
                    .poll_interval(Duration::from_millis(50))
                    .start()
            })
            .collect();
        let publishing = tokio::spawn({
            let (publishers, outbox) = (publishers.clone(), outbox.clone());
            async move {
                for t in 0..TRANSACTIONS {
                    let mut tx = publishers.begin().await.expect("begin");
                    for i in 0..PER_TRANSACTION {
                        let n = t * PER_TRANSACTION + i;
                        outbox
                            .publish(&mut tx, StampCollected { n })
                            .await
                            .expect("publish");
                    }
                    tx.commit().await.expect("commit");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        let mut killed = 0_i64;
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let ended: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(APP)
            .fetch_all(&publishers)
            .await
            .expect("terminate the relays' connections");
            killed += ended.iter().filter(|ended| **ended).count() as i64;
        }
        publishing.await.expect("the publisher");
        assert!(killed > 0, "the relays had connections to end");
        let total = u64::from(TRANSACTIONS * PER_TRANSACTION);
        eventually(
            "every event processed after the connections came back",
            Duration::from_secs(60),
            async || outbox.status().await.is_ok_and(|s| s.processed == total),
        )
        .await;
        let mut stats = Vec::new();
        for relay in relays {
            stats.push(relay.stop().await);
        }
        let status = outbox.status().await.expect("status");
        assert_eq!(
            (status.pending, status.in_flight, status.failed),
            (0, 0, 0),
            "{status:?}"
        );
        let handled = tracker.handled.lock().expect("lock").clone();
        let missing: Vec<u64> = (0..total)
            .filter(|n| !handled.contains_key(&n.to_string()))
            .collect();
        assert!(missing.is_empty(), "never handled: {missing:?}");
        let again = handled.values().filter(|times| **times > 1).count();
        assert_eq!(
            herald.dead_letters().count().await.expect("count"),
            0,
            "nothing dead-lettered"
        );
        let report = herald.shutdown(Duration::from_secs(10)).await;
        assert!(report.ledger.is_balanced(), "{}", report.ledger);
        assert_eq!(report.ledger.total.lost, 0, "{}", report.ledger);
        println!(
            "{killed} relay connections ended; {again} of {total} events handled more than once; relays: {stats:?}"
        );
    }
}

mod stuck {
    use super::*;
    use herald::feed::OutboxOps;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_pg.seat_held", key = flight)]
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
        let (pool, outbox) = setup("herald_t_stuck").await;
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
        assert_eq!(held.message_type, "outbox_pg.seat_held");
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

mod failed_write_back {
    use super::*;

    const SCHEMA: &str = "herald_t_write_back_retry";

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_pg.badge_awarded")]
    pub(crate) struct BadgeAwarded {
        pub(crate) n: u32,
    }

    #[async_handler]
    async fn award(event: BadgeAwarded, State(tracker): State<Tracker>) {
        tracker.enter(&event.n.to_string());
        tracker.leave(&event.n.to_string());
    }

    /// The first write-back fails the way a lost connection or a failover does (SQLSTATE 40001,
    /// raised once by a trigger; a sequence counts the tries, since it does not roll back). The
    /// relay tries it again at once: the batch is recorded within seconds and handled once,
    /// instead of being delivered again when its 30 s lease runs out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_back_that_lost_its_connection_is_tried_again_at_once() {
        let (pool, outbox) = setup(SCHEMA).await;
        sqlx::raw_sql(
            "CREATE SEQUENCE write_back_tries;
             CREATE FUNCTION fail_first_write_back() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF nextval('write_back_tries') = 1 THEN
                     RAISE EXCEPTION 'the first write-back fails' USING ERRCODE = '40001';
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER fail_first_write_back BEFORE UPDATE OF status ON herald_outbox
                 FOR EACH ROW WHEN (NEW.status = 'processed') EXECUTE FUNCTION fail_first_write_back();",
        )
        .execute(&pool)
        .await
        .expect("a trigger that fails the first write-back");
        let tracker = Tracker::default();
        let herald = build(module_path!(), &pool, &tracker);
        let mut tx = pool.begin().await.expect("begin");
        for n in 0..5 {
            outbox
                .publish(&mut *tx, BadgeAwarded { n })
                .await
                .expect("publish");
        }
        tx.commit().await.expect("commit");
        let relay = outbox
            .relay(&herald)
            .batch_size(10)
            .lease(Duration::from_secs(30))
            .start();
        eventually(
            "the batch recorded well before its lease runs out",
            Duration::from_secs(10),
            async || outbox.status().await.is_ok_and(|s| s.processed == 5),
        )
        .await;
        let stats = relay.stop().await;
        let tries: i64 = sqlx::query_scalar("SELECT last_value FROM write_back_tries")
            .fetch_one(&pool)
            .await
            .expect("tries");
        assert!(
            tries >= 2,
            "the first write-back failed and another followed: {tries}"
        );
        let handled = tracker.handled.lock().expect("lock").clone();
        assert_eq!(handled.len(), 5, "{handled:?}");
        assert!(handled.values().all(|times| *times == 1), "{handled:?}");
        assert_eq!(
            stats.errors, 0,
            "the retry hid the failure from the relay: {stats:?}"
        );
        let report = herald.shutdown(Duration::from_secs(10)).await;
        assert!(report.ledger.is_balanced(), "{}", report.ledger);
    }
}

#[tokio::test]
async fn connect_reports_a_refused_connection_at_once() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let started = Instant::now();
    let error = outbox::postgres::connect(&format!("postgres://postgres@127.0.0.1:{port}/x"))
        .await
        .expect_err("nothing listens there");
    let took = started.elapsed();
    let message = error.to_string();
    assert!(
        message.to_lowercase().contains("connection refused"),
        "the real cause: {message}"
    );
    // The pool used to retry refused connections for its whole 10 s acquire timeout.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // A server that is there still connects.
    let pool = outbox::postgres::connect(&database_url())
        .await
        .expect("connect");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .expect("query");
    assert_eq!(one, 1);
}

#[test]
fn the_postgres_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PgOutbox>();
    assert_send_sync::<herald::PgDeadLetters>();
    assert_send_sync::<PgInbox>();
    let _ = outbox::postgres::CHANNEL;
}
