//! The transactional outbox on real SQLite files: commit and rollback, restart with pending rows,
//! retries with per-handler progress, durable dead letters and re-drive, a malformed row, the
//! durable inbox, per-key order with two relays, retention and `events_after`.
#![cfg(feature = "sqlite")]

use herald::outbox::{self, SqliteOutbox};
use herald::sqlx::{self, SqlitePool};
use herald::{
    async_handler, DeadLetterReason, DeadLetterStore, Event, HandlerError, Herald, Meta, State,
};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn push(&self, what: impl Into<String>) {
        self.0.lock().expect("lock").push(what.into());
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }
    fn count(&self, what: &str) -> usize {
        self.all().iter().filter(|s| *s == what).count()
    }
}

async fn open(dir: &tempfile::TempDir) -> (SqlitePool, SqliteOutbox) {
    let pool = outbox::sqlite::connect(dir.path().join("app.db"))
        .await
        .expect("open sqlite file");
    let outbox = SqliteOutbox::new(pool.clone()).await.expect("migrate");
    (pool, outbox)
}

fn build(module: &str, pool: &SqlitePool, seen: &Seen) -> Herald {
    Herald::builder()
        .handlers_under(module)
        .state(seen.clone())
        .state(pool.clone())
        .dead_letters(herald::SqliteDeadLetters::new(pool.clone()))
        .build()
        .expect("valid registry")
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scalar(pool: &SqlitePool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("query")
}

mod commit {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_sqlite.order_placed")]
    pub(crate) struct OrderPlaced {
        pub(crate) order: String,
    }

    #[async_handler]
    async fn record(event: OrderPlaced, State(seen): State<Seen>) {
        seen.push(event.order);
    }

    #[tokio::test]
    async fn a_committed_event_is_delivered_and_a_rolled_back_one_never_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, outbox) = open(&dir).await;
        let seen = Seen::default();
        let herald = build(module_path!(), &pool, &seen);
        sqlx::query("CREATE TABLE orders (id TEXT PRIMARY KEY)")
            .execute(&pool)
            .await
            .expect("create");
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(10))
            .start();

        let mut tx = pool.begin().await.expect("begin");
        sqlx::query("INSERT INTO orders (id) VALUES ('rolled-back')")
            .execute(&mut *tx)
            .await
            .expect("insert");
        outbox
            .publish(
                &mut *tx,
                OrderPlaced {
                    order: "rolled-back".into(),
                },
            )
            .await
            .expect("publish");
        tx.rollback().await.expect("rollback");

        let mut tx = pool.begin().await.expect("begin");
        sqlx::query("INSERT INTO orders (id) VALUES ('committed')")
            .execute(&mut *tx)
            .await
            .expect("insert");
        outbox
            .publish(
                &mut tx,
                OrderPlaced {
                    order: "committed".into(),
                },
            )
            .await
            .expect("publish");
        tx.commit().await.expect("commit");

        eventually("the committed event is handled", async || {
            seen.count("committed") == 1
        })
        .await;
        eventually("the row is processed", async || {
            scalar(
                &pool,
                "SELECT COUNT(*) FROM herald_outbox WHERE status = 'processed'",
            )
            .await
                == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(seen.all(), vec!["committed".to_owned()]);
        assert_eq!(scalar(&pool, "SELECT COUNT(*) FROM herald_outbox").await, 1);
        let stats = relay.stop().await;
        assert_eq!(stats.processed, 1);
        let status = outbox.status().await.expect("status");
        assert_eq!((status.pending, status.processed), (0, 1));
    }

    #[tokio::test]
    async fn publish_all_delivers_every_committed_message_and_none_rolled_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, outbox) = open(&dir).await;
        let seen = Seen::default();
        let herald = build(module_path!(), &pool, &seen);
        let relay = outbox
            .relay(&herald)
            .batch_size(500)
            .poll_interval(Duration::from_millis(10))
            .start();
        let order = |prefix: &'static str| {
            move |n: usize| OrderPlaced {
                order: format!("{prefix}-{n}"),
            }
        };

        let mut tx = pool.begin().await.expect("begin");
        outbox
            .publish_all(&mut *tx, (0..3).map(order("rolled-back")))
            .await
            .expect("publish_all");
        tx.rollback().await.expect("rollback");
        // More rows than one statement can bind (32,766 / 6 = 5,461): two INSERTs.
        let count = 6_000;
        let mut tx = pool.begin().await.expect("begin");
        let ids = outbox
            .publish_all(&mut tx, (0..count).map(order("committed")))
            .await
            .expect("publish_all");
        assert!(outbox
            .publish_all(&mut tx, std::iter::empty::<OrderPlaced>())
            .await
            .expect("nothing to publish")
            .is_empty());
        tx.commit().await.expect("commit");

        eventually("every committed message handled", async || {
            seen.all().len() >= count
        })
        .await;
        let stats = relay.stop().await;
        assert_eq!(stats.processed, count as u64);
        let mut all = seen.all();
        all.sort();
        let mut expected: Vec<String> = (0..count).map(|n| format!("committed-{n}")).collect();
        expected.sort();
        assert_eq!(
            all, expected,
            "each committed message once, none rolled back"
        );
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT message_id FROM herald_outbox ORDER BY id")
                .fetch_all(&pool)
                .await
                .expect("ids");
        let returned: Vec<String> = ids.iter().map(ToString::to_string).collect();
        assert_eq!(stored, returned, "ids in the order the rows were written");
    }

    #[tokio::test]
    async fn pending_rows_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (pool, outbox) = open(&dir).await;
            let mut tx = pool.begin().await.expect("begin");
            for i in 0..50 {
                outbox
                    .publish(
                        &mut *tx,
                        OrderPlaced {
                            order: format!("r{i}"),
                        },
                    )
                    .await
                    .expect("publish");
            }
            tx.commit().await.expect("commit");
            assert_eq!(outbox.status().await.expect("status").pending, 50);
            pool.close().await;
        }
        let (pool, outbox) = open(&dir).await;
        let seen = Seen::default();
        let herald = build(module_path!(), &pool, &seen);
        let relay = outbox.relay(&herald).batch_size(7).start();
        eventually("every row delivered after the restart", async || {
            outbox.status().await.expect("status").processed == 50
        })
        .await;
        relay.stop().await;
        let mut got = seen.all();
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 50);
    }
}

mod progress {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_sqlite.user_signed_up")]
    pub(crate) struct SignedUp {
        pub(crate) fail_mail: u32,
    }

    #[async_handler]
    async fn grant_points(_event: SignedUp, State(seen): State<Seen>) {
        seen.push("points");
    }

    #[async_handler(retry(max_attempts = 3, backoff = fixed(20ms)))]
    async fn send_mail(
        event: SignedUp,
        meta: Meta,
        State(seen): State<Seen>,
    ) -> Result<(), HandlerError> {
        seen.push(format!("mail#{}", meta.attempt()));
        if meta.attempt() <= event.fail_mail && seen.count("smtp-fixed") == 0 {
            return Err(HandlerError::msg("smtp timeout"));
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_retry_runs_only_the_handlers_that_have_not_succeeded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, outbox) = open(&dir).await;
        let seen = Seen::default();
        let herald = build(module_path!(), &pool, &seen);
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(5))
            .start();
        outbox
            .publish(
                &mut *pool.acquire().await.expect("connection"),
                SignedUp { fail_mail: 2 },
            )
            .await
            .expect("publish");
        eventually("processed after two failures", async || {
            outbox.status().await.expect("status").processed == 1
        })
        .await;
        relay.stop().await;
        assert_eq!(seen.count("points"), 1, "{:?}", seen.all());
        assert_eq!(seen.count("mail#1"), 1);
        assert_eq!(seen.count("mail#2"), 1);
        assert_eq!(seen.count("mail#3"), 1);
        assert_eq!(
            scalar(&pool, "SELECT fail_count FROM herald_outbox").await,
            2,
            "fail_count counts the failed deliveries"
        );
        assert_eq!(
            scalar(&pool, "SELECT failed_at IS NOT NULL FROM herald_outbox").await,
            1
        );
    }

    #[tokio::test]
    async fn the_last_failure_is_dead_lettered_durably_and_redrive_runs_only_that_handler() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, outbox) = open(&dir).await;
        let seen = Seen::default();
        let herald = build(module_path!(), &pool, &seen);
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(5))
            .start();
        outbox
            .publish(
                &mut *pool.acquire().await.expect("connection"),
                SignedUp { fail_mail: 3 },
            )
            .await
            .expect("publish");
        eventually("row finished as failed", async || {
            outbox.status().await.expect("status").failed == 1
        })
        .await;
        relay.stop().await;
        pool.close().await;

        // A new process: the dead letter is still there.
        let (pool, outbox) = open(&dir).await;
        let store = outbox.dead_letters();
        let letters = store.list(10).await.expect("list");
        assert_eq!(letters.len(), 1);
        let letter = &letters[0];
        assert!(letter.handler.ends_with("send_mail"), "{letter:?}");
        assert_eq!(letter.reason, DeadLetterReason::Failed);
        assert_eq!(letter.failure, Some(herald::FailureKind::Error));
        assert_eq!(letter.attempts, 3);
        assert_eq!(letter.last_error.as_deref(), Some("smtp timeout"));
        assert_eq!(letter.payload, serde_json::json!({ "fail_mail": 3 }));

        // Re-drive through the outbox (what the CLI does); this time the mail goes out on attempt 1.
        let seen = Seen::default();
        seen.push("smtp-fixed");
        let herald = build(module_path!(), &pool, &seen);
        store
            .redrive_to_outbox(letter.id)
            .await
            .expect("redrive")
            .expect("found");
        assert_eq!(store.count().await.expect("count"), 0);
        let relay = outbox.relay(&herald).start();
        eventually("re-driven row processed", async || {
            outbox.status().await.expect("status").processed == 1
        })
        .await;
        relay.stop().await;
        assert_eq!(
            seen.all(),
            vec!["smtp-fixed".to_owned(), "mail#1".to_owned()],
            "points did not run again"
        );
    }
}

mod malformed {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_sqlite.sms_requested")]
    pub(crate) struct SmsRequested {
        pub(crate) phone: String,
    }

    #[async_handler]
    async fn send_sms(event: SmsRequested, State(seen): State<Seen>) {
        seen.push(event.phone);
    }

    #[tokio::test]
    async fn a_malformed_row_is_dead_lettered_with_its_reason_and_the_relay_carries_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, outbox) = open(&dir).await;
        sqlx::query(
            "INSERT INTO herald_outbox (message_id, message_type, payload, occurred_at)
             VALUES ('0190a0f0-0000-7000-8000-000000000001', 'outbox_sqlite.sms_requested',
                     '{\"telephone\": 42}', '2024-01-01T00:00:00.000Z')",
        )
        .execute(&pool)
        .await
        .expect("insert malformed");
        outbox
            .publish(
                &mut *pool.acquire().await.expect("connection"),
                SmsRequested {
                    phone: "010-1234".into(),
                },
            )
            .await
            .expect("publish");
        let seen = Seen::default();
        let herald = build(module_path!(), &pool, &seen);
        let relay = outbox.relay(&herald).start();
        eventually("the good row is delivered", async || {
            seen.count("010-1234") == 1
        })
        .await;
        eventually("the malformed row is finished as failed", async || {
            outbox.status().await.expect("status").failed == 1
        })
        .await;
        relay.stop().await;
        let letters = outbox.dead_letters().list(10).await.expect("list");
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].reason, DeadLetterReason::Malformed);
        assert_eq!(letters[0].failure, Some(herald::FailureKind::Malformed));
        assert!(
            letters[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("phone")),
            "{:?}",
            letters[0]
        );
        assert_eq!(letters[0].payload, serde_json::json!({ "telephone": 42 }));
    }
}

mod bad_headers {
    //! Issue 8 item 11: a row that cannot be read whole keeps in its dead letter every field that
    //! can be read (its message id above all), so re-drive acts on that row.
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_sqlite.call_requested")]
    pub(crate) struct CallRequested {
        pub(crate) phone: String,
    }

    #[async_handler]
    async fn call(event: CallRequested, State(seen): State<Seen>) {
        seen.push(event.phone);
    }

    const BAD_JSON: &str = "0190a0f0-0000-7000-8000-00000000000a";
    const WRONG_TYPES: &str = "0190a0f0-0000-7000-8000-00000000000b";
    const CORRELATION: &str = "0190a0f0-0000-7000-8000-0000000000cc";
    const TIME: &str = "2024-01-02T03:04:05.678Z";

    #[tokio::test]
    async fn a_row_with_bad_headers_or_id_keeps_what_is_readable_and_redrive_acts_on_that_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, outbox) = open(&dir).await;
        for (message_id, key, phone, headers) in [
            (BAD_JSON, "k-a", "a", "{not json".to_owned()),
            (
                WRONG_TYPES,
                "k-b",
                "b",
                format!(
                    r#"{{"idempotency_key": 5, "correlation_id": "{CORRELATION}",
                        "causation_id": [1], "extra": {{"tenant": "t1", "n": 1}}}}"#
                ),
            ),
            ("not-a-uuid", "k-c", "c", "{}".to_owned()),
        ] {
            sqlx::query(
                "INSERT INTO herald_outbox (message_id, message_type, key, payload, headers, occurred_at)
                 VALUES (?1, 'outbox_sqlite.call_requested', ?2, ?3, ?4, ?5)",
            )
            .bind(message_id)
            .bind(key)
            .bind(format!(r#"{{"phone": "{phone}"}}"#))
            .bind(headers)
            .bind(TIME)
            .execute(&pool)
            .await
            .expect("insert a hand-made row");
        }
        let seen = Seen::default();
        let herald = build(module_path!(), &pool, &seen);
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(5))
            .start();
        eventually("the three rows are failed", async || {
            outbox.status().await.expect("status").failed == 3
        })
        .await;
        relay.stop().await;
        assert!(seen.all().is_empty());

        let store = outbox.dead_letters();
        let letters = store.list(10).await.expect("list");
        assert_eq!(letters.len(), 3, "{letters:?}");
        let by_key = |key: &str| {
            letters
                .iter()
                .find(|l| l.envelope.key.as_deref() == Some(key))
                .unwrap_or_else(|| panic!("a dead letter with key {key}: {letters:?}"))
        };
        let time = chrono_free_time(TIME);
        for key in ["k-a", "k-b", "k-c"] {
            let letter = by_key(key);
            assert_eq!(letter.reason, DeadLetterReason::Malformed);
            assert_eq!(letter.envelope.occurred_at.to_rfc3339(), time, "{letter:?}");
            assert_eq!(letter.envelope.name, "outbox_sqlite.call_requested");
        }
        assert_eq!(by_key("k-a").envelope.id.to_string(), BAD_JSON);
        let wrong = by_key("k-b");
        assert_eq!(wrong.envelope.id.to_string(), WRONG_TYPES);
        assert_eq!(
            wrong
                .envelope
                .headers
                .correlation_id
                .map(|id| id.to_string())
                .as_deref(),
            Some(CORRELATION),
            "a readable header is kept"
        );
        assert_eq!(wrong.envelope.idempotency_key, None);
        assert_eq!(wrong.envelope.headers.causation_id, None);
        assert_eq!(
            wrong
                .envelope
                .headers
                .extra
                .get("tenant")
                .map(String::as_str),
            Some("t1")
        );
        // The unreadable id is replaced, in the dead letter and in the row alike.
        let replaced = by_key("k-c").envelope.id.to_string();
        let row_id: String =
            sqlx::query_scalar("SELECT message_id FROM herald_outbox WHERE key = 'k-c'")
                .fetch_one(&pool)
                .await
                .expect("row");
        assert_eq!(row_id, replaced);

        // The operator repairs the headers, then re-drives: the original rows are delivered.
        sqlx::query("UPDATE herald_outbox SET headers = '{}'")
            .execute(&pool)
            .await
            .expect("repair");
        let rows: Vec<i64> = sqlx::query_scalar("SELECT id FROM herald_outbox ORDER BY key")
            .fetch_all(&pool)
            .await
            .expect("ids");
        let mut redriven = Vec::new();
        for key in ["k-a", "k-b", "k-c"] {
            redriven.push(
                store
                    .redrive_to_outbox(by_key(key).id)
                    .await
                    .expect("redrive")
                    .expect("found"),
            );
        }
        assert_eq!(redriven, rows, "re-drive acts on the original rows");
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(5))
            .start();
        eventually("the three rows are processed", async || {
            outbox.status().await.expect("status").processed == 3
        })
        .await;
        relay.stop().await;
        let mut phones = seen.all();
        phones.sort();
        assert_eq!(phones, vec!["a", "b", "c"]);
        assert_eq!(
            scalar(&pool, "SELECT COUNT(*) FROM herald_outbox").await,
            3,
            "no copies"
        );
        assert_eq!(store.count().await.expect("count"), 0);
    }

    /// `TIME` as `DateTime::to_rfc3339` prints it.
    fn chrono_free_time(time: &str) -> String {
        time.replace('Z', "+00:00")
    }
}

mod inbox {
    use super::*;
    use herald::inbox::SqliteInbox;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_sqlite.login_succeeded")]
    pub(crate) struct LoginSucceeded {
        pub(crate) user: String,
    }

    #[async_handler]
    async fn grant_login_points(
        event: LoginSucceeded,
        inbox: SqliteInbox,
        State(seen): State<Seen>,
    ) -> Result<(), HandlerError> {
        let mut tx = inbox.begin().await?;
        sqlx::query("UPDATE points SET total = total + 10 WHERE user = ?1")
            .bind(&event.user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        seen.push("granted");
        Ok(())
    }

    #[tokio::test]
    async fn a_redelivered_message_is_skipped_when_its_effects_were_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, outbox) = open(&dir).await;
        sqlx::raw_sql(
            "CREATE TABLE points (user TEXT PRIMARY KEY, total INTEGER NOT NULL);
             INSERT INTO points VALUES ('kim', 0);",
        )
        .execute(&pool)
        .await
        .expect("schema");
        let seen = Seen::default();
        let herald = build(module_path!(), &pool, &seen);
        outbox
            .publish(
                &mut *pool.acquire().await.expect("connection"),
                LoginSucceeded { user: "kim".into() },
            )
            .await
            .expect("publish");
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(5))
            .start();
        eventually("delivered once", async || {
            outbox.status().await.expect("status").processed == 1
        })
        .await;
        // Redeliver, as a relay does after a crash before it recorded the outcome.
        sqlx::query("UPDATE herald_outbox SET status = 'pending', processed_at = NULL")
            .execute(&pool)
            .await
            .expect("reset");
        eventually("delivered again", async || {
            outbox.status().await.expect("status").processed == 1
        })
        .await;
        relay.stop().await;
        assert_eq!(seen.count("granted"), 1);
        assert_eq!(
            scalar(&pool, "SELECT total FROM points WHERE user = 'kim'").await,
            10
        );
        assert_eq!(outbox.dead_letters().count().await.expect("count"), 0);
    }
}

mod order {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_sqlite.account_changed", key = account)]
    pub(crate) struct AccountChanged {
        pub(crate) account: String,
        pub(crate) seq: u32,
    }

    #[async_handler]
    async fn apply(event: AccountChanged, State(seen): State<Seen>) {
        // Uneven work so that a relay that ignored keys would reorder.
        if event.seq.is_multiple_of(3) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        seen.push(format!("{}:{}", event.account, event.seq));
    }

    #[tokio::test]
    async fn events_with_the_same_key_are_delivered_in_order_with_two_relays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, outbox) = open(&dir).await;
        let mut tx = pool.begin().await.expect("begin");
        for seq in 0..40 {
            for account in ["a", "b", "c"] {
                outbox
                    .publish(
                        &mut *tx,
                        AccountChanged {
                            account: account.into(),
                            seq,
                        },
                    )
                    .await
                    .expect("publish");
            }
        }
        tx.commit().await.expect("commit");
        let seen = Seen::default();
        let herald = build(module_path!(), &pool, &seen);
        let relays = [
            outbox.relay(&herald).batch_size(10).start(),
            outbox.relay(&herald).batch_size(10).start(),
        ];
        eventually("all processed", async || {
            outbox.status().await.expect("status").processed == 120
        })
        .await;
        for relay in relays {
            relay.stop().await;
        }
        for account in ["a", "b", "c"] {
            let order: Vec<u32> = seen
                .all()
                .iter()
                .filter_map(|s| s.strip_prefix(&format!("{account}:")))
                .map(|n| n.parse().expect("number"))
                .collect();
            assert_eq!(order, (0..40).collect::<Vec<_>>(), "account {account}");
        }
    }

    /// On SQLite a relay writes a batch's outcomes and leases the next batch in one transaction
    /// (`settle_and_receive`): the lease must see the batch finished, so the next event of a key
    /// comes in that same step, and the outcomes must be written.
    #[tokio::test]
    async fn a_batch_is_settled_with_the_next_lease_in_one_step() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, outbox) = open(&dir).await;
        let mut tx = pool.begin().await.expect("begin");
        for seq in 0..2 {
            let event = AccountChanged {
                account: "a".into(),
                seq,
            };
            outbox.publish(&mut *tx, event).await.expect("publish");
        }
        tx.commit().await.expect("commit");
        let seen = Seen::default();
        let herald = build(module_path!(), &pool, &seen);
        let source = outbox.relay(&herald).source().clone();
        let lease = Duration::from_secs(30);
        let first = source.receive("relay-a", 10, lease).await.expect("receive");
        assert_eq!(
            first.len(),
            1,
            "the second event of the key waits for the first"
        );
        let mut settled = Vec::new();
        for received in first {
            settled.push((received.receipt, herald.ingest(&received.message).await));
        }
        let (settle, next) = source
            .settle_and_receive("relay-a", settled, 10, lease)
            .await;
        settle.expect("settle");
        let next = next.expect("receive");
        assert_eq!(next.len(), 1, "the lease saw the first event finished");
        assert!(next[0].message.payload.contains("\"seq\":1"), "{next:?}");
        let status = outbox.status().await.expect("status");
        assert_eq!((status.processed, status.in_flight), (1, 1));
        let mut settled = Vec::new();
        for received in next {
            settled.push((received.receipt, herald.ingest(&received.message).await));
        }
        source.settle("relay-a", settled).await.expect("settle");
        assert_eq!(outbox.status().await.expect("status").processed, 2);
        assert_eq!(seen.all(), ["a:0", "a:1"]);
        herald.shutdown(Duration::from_secs(5)).await;
    }
}

mod stopping {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_sqlite.report_requested")]
    pub(crate) struct ReportRequested {
        pub(crate) n: u32,
    }

    /// Holds the handler until the test opens it.
    #[derive(Clone)]
    struct Gate(Arc<tokio::sync::Semaphore>);

    #[async_handler]
    async fn report(_event: ReportRequested, State(gate): State<Gate>, State(seen): State<Seen>) {
        seen.push("started");
        let _pass = gate.0.acquire().await.expect("gate");
    }

    /// On SQLite a batch's outcomes wait for the next lease (one transaction for both): the last
    /// batch's are written when the relay stops instead.
    #[tokio::test]
    async fn a_stopping_relay_writes_its_last_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, outbox) = open(&dir).await;
        let seen = Seen::default();
        let gate = Gate(Arc::new(tokio::sync::Semaphore::new(0)));
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .state(seen.clone())
            .state(gate.clone())
            .build()
            .expect("valid registry");
        let relay = outbox.relay(&herald).start();
        let mut conn = pool.acquire().await.expect("connection");
        outbox
            .publish(&mut conn, ReportRequested { n: 1 })
            .await
            .expect("publish");
        eventually("the handler started", async || seen.count("started") == 1).await;
        // Stop while the batch is in hand; it finishes once the handler is let go.
        let stopping = tokio::spawn(relay.stop());
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate.0.add_permits(1);
        let stats = stopping.await.expect("stop");
        assert_eq!(stats.processed, 1);
        let status = outbox.status().await.expect("status");
        assert_eq!((status.processed, status.pending), (1, 0));
        herald.shutdown(Duration::from_secs(5)).await;
    }
}

mod stuck {
    use super::*;
    use herald::feed::OutboxOps;
    use herald::HandlerError;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_sqlite.seat_held", key = flight)]
    pub(crate) struct SeatHeld {
        pub(crate) flight: String,
        pub(crate) seat: u32,
    }

    /// Seat 0 of flight `LH-1` fails (its retry is an hour away); every other seat works.
    #[async_handler(retry(max_attempts = 5, backoff = fixed(1h)))]
    async fn hold(event: SeatHeld, State(seen): State<Seen>) -> Result<(), HandlerError> {
        if event.flight == "LH-1" && event.seat == 0 {
            return Err(HandlerError::msg("the seat map is down"));
        }
        seen.push(format!("{}:{}", event.flight, event.seat));
        Ok(())
    }

    /// A key whose first message fails is listed with the messages waiting behind it; a key
    /// that moved on, and a failing message with nothing behind it, are not.
    #[tokio::test]
    async fn a_key_held_up_by_a_failing_message_is_listed_with_what_waits_behind_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, outbox) = open(&dir).await;
        let seen = Seen::default();
        let herald = build(module_path!(), &pool, &seen);
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
        assert!(outbox.stuck_keys(10).await.expect("stuck").is_empty());
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(10))
            .start();
        eventually(
            "BA-7 handled and LH-1's first seat failed once",
            async || {
                seen.count("BA-7:0") + seen.count("BA-7:1") == 2
                    && outbox.status().await.is_ok_and(|s| s.retrying == 1)
            },
        )
        .await;
        relay.stop().await;
        let stuck = OutboxOps::stuck_keys(&outbox, 10).await.expect("stuck");
        assert_eq!(stuck.len(), 1, "{stuck:?}");
        let held = &stuck[0];
        assert_eq!(held.key, "LH-1");
        assert_eq!(held.head, 1, "the row of seat 0");
        assert_eq!(held.message_type, "outbox_sqlite.seat_held");
        assert_eq!(held.failed_attempts, 1);
        assert_eq!(held.waiting, 2, "seats 1 and 2");
        assert!(
            held.last_error
                .as_deref()
                .is_some_and(|e| e.contains("the seat map is down")),
            "{held:?}"
        );
        assert!(held.last_failed_at.is_some());
        assert_eq!(
            seen.count("LH-1"),
            0,
            "nothing of LH-1 ran past its first seat"
        );
        assert_eq!(
            OutboxOps::stuck_keys(&outbox, 0).await.expect("none").len(),
            0
        );
        // With nothing behind it, a failing message holds nobody up.
        sqlx::query("UPDATE herald_outbox SET status = 'processed' WHERE id IN (2, 3)")
            .execute(&pool)
            .await
            .expect("seats 1 and 2 done by hand");
        assert!(outbox.stuck_keys(10).await.expect("stuck").is_empty());
        herald.shutdown(Duration::from_secs(5)).await;
    }
}

mod store {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "outbox_sqlite.item_indexed")]
    pub(crate) struct ItemIndexed {
        pub(crate) n: u32,
    }

    #[async_handler]
    async fn index(_event: ItemIndexed) {}

    #[tokio::test]
    async fn events_after_pages_in_commit_order_and_retention_deletes_finished_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, outbox) = open(&dir).await;
        for n in 0..25 {
            outbox
                .publish(
                    &mut *pool.acquire().await.expect("connection"),
                    ItemIndexed { n },
                )
                .await
                .expect("publish");
        }
        let mut offset = 0;
        let mut got = Vec::new();
        loop {
            let page = outbox.events_after(offset, 10).await.expect("page");
            let Some(last) = page.last() else { break };
            offset = last.position;
            got.extend(page.iter().map(|e| e.payload["n"].as_u64().expect("n")));
        }
        assert_eq!(got, (0..25).collect::<Vec<_>>());

        let seen = Seen::default();
        let herald = build(module_path!(), &pool, &seen);
        let relay = outbox.relay(&herald).start();
        eventually("all processed", async || {
            outbox.status().await.expect("status").processed == 25
        })
        .await;
        relay.stop().await;
        assert_eq!(
            outbox
                .delete_finished(Duration::from_secs(3600), 10)
                .await
                .expect("retention"),
            0,
            "young rows are kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            outbox
                .delete_finished(Duration::from_millis(1), 10)
                .await
                .expect("retention"),
            25
        );
        assert!(outbox.events_after(0, 10).await.expect("page").is_empty());
    }

    #[tokio::test]
    async fn a_version_1_database_is_upgraded_with_its_rows_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = outbox::sqlite::connect(dir.path().join("v1.db"))
            .await
            .expect("open");
        sqlx::raw_sql(include_str!("../core/migrations/sqlite/0001_outbox.sql"))
            .execute(&pool)
            .await
            .expect("schema v1");
        sqlx::raw_sql(
            "CREATE TABLE herald_schema (version INTEGER PRIMARY KEY, description TEXT NOT NULL,
                applied_at TEXT NOT NULL);
             INSERT INTO herald_schema VALUES (1, 'outbox, dead letters, inbox', '2026-01-01T00:00:00.000Z');
             INSERT INTO herald_outbox (message_id, message_type, key, payload, occurred_at)
             VALUES ('0190b2a8-0000-7000-8000-000000000001', 'v1', 'k', '{}', '2026-01-01T00:00:00.000Z')",
        )
        .execute(&pool)
        .await
        .expect("a v1 database with a row");
        sqlx::raw_sql(
            "INSERT INTO herald_dead_letters (message_id, message_type, handler, reason, attempts,
                envelope, payload, dead_lettered_at)
             VALUES ('0190b2a8-0000-7000-8000-000000000002', 'v1', 'app::h', 'failed', 1,
                '{\"id\":\"0190b2a8-0000-7000-8000-000000000002\",\"name\":\"v1\",\"occurred_at\":\"2026-01-01T00:00:00Z\",\"key\":null,\"idempotency_key\":null,\"headers\":{\"correlation_id\":null,\"causation_id\":null,\"extra\":{}}}',
                '{}', '2026-01-01T00:00:00.000Z')",
        )
        .execute(&pool)
        .await
        .expect("a v1 dead letter");
        let outbox = SqliteOutbox::new(pool.clone()).await.expect("upgrade");
        // v3 (failure kind) at least: a later version may follow.
        assert!(SqliteOutbox::schema_version(&pool).await.expect("version") >= 3);
        let old = outbox.dead_letters().list(10).await.expect("list");
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].failure, None, "a v1 dead letter has no kind");
        assert_eq!(outbox.status().await.expect("status").pending, 1);
        let index: String = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE name = 'herald_outbox_pending_key'",
        )
        .fetch_one(&pool)
        .await
        .expect("index");
        assert!(index.contains("key IS NOT NULL"), "{index}");
    }

    #[tokio::test]
    async fn the_version_5_rebuild_keeps_rows_states_and_never_reuses_an_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = outbox::sqlite::connect(dir.path().join("v4.db"))
            .await
            .expect("open");
        for script in [
            include_str!("../core/migrations/sqlite/0001_outbox.sql"),
            include_str!("../core/migrations/sqlite/0002_claim_tuning.sql"),
            include_str!("../core/migrations/sqlite/0003_dead_letter_failure.sql"),
            include_str!("../core/migrations/sqlite/0004_slas.sql"),
        ] {
            sqlx::raw_sql(script).execute(&pool).await.expect("schema");
        }
        // Rows 1..=4 in every state; row 5 (the newest) was processed and deleted by retention,
        // so no row holds the AUTOINCREMENT high-water mark.
        sqlx::raw_sql(
            "CREATE TABLE herald_schema (version INTEGER PRIMARY KEY, description TEXT NOT NULL,
                applied_at TEXT NOT NULL);
             INSERT INTO herald_schema VALUES (1, 'a', 'x'), (2, 'b', 'x'), (3, 'c', 'x'), (4, 'd', 'x');
             INSERT INTO herald_outbox (message_id, message_type, key, payload, occurred_at, status,
                                        fail_count, last_error, next_attempt_at)
             VALUES ('0190b2a8-0000-7000-8000-000000000001', 'v4', 'k', '{}', '2026-01-01T00:00:00.000Z', 'pending', 0, NULL, 0),
                    ('0190b2a8-0000-7000-8000-000000000002', 'v4', NULL, '{\"a\":1}', '2026-01-01T00:00:00.000Z', 'processed', 0, NULL, 0),
                    ('0190b2a8-0000-7000-8000-000000000003', 'v4', 'k', '{}', '2026-01-01T00:00:00.000Z', 'failed', 3, 'boom', 0),
                    ('0190b2a8-0000-7000-8000-000000000004', 'v4', NULL, '{}', '2026-01-01T00:00:00.000Z', 'pending', 1, 'once', 99),
                    ('0190b2a8-0000-7000-8000-000000000005', 'v4', NULL, '{}', '2026-01-01T00:00:00.000Z', 'processed', 0, NULL, 0);
             DELETE FROM herald_outbox WHERE id = 5;
             CREATE VIEW app_pending AS SELECT id FROM herald_outbox WHERE status = 'pending';",
        )
        .execute(&pool)
        .await
        .expect("a v4 database with rows");
        let outbox = SqliteOutbox::new(pool.clone()).await.expect("upgrade");
        assert!(SqliteOutbox::schema_version(&pool).await.expect("version") >= 5);
        let rows: Vec<(i64, String, i64, Option<String>, i64)> = sqlx::query_as(
            "SELECT id, status, fail_count, last_error, next_attempt_at FROM herald_outbox ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .expect("rows");
        assert_eq!(
            rows,
            vec![
                (1, "pending".into(), 0, None, 0),
                (2, "processed".into(), 0, None, 0),
                (3, "failed".into(), 3, Some("boom".into()), 0),
                (4, "pending".into(), 1, Some("once".into()), 99),
            ]
        );
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM app_pending")
            .fetch_one(&pool)
            .await
            .expect("the application's view over the outbox still works");
        assert_eq!(pending, 2);
        let mut tx = pool.begin().await.expect("begin");
        let id = outbox
            .publish(
                &mut *tx,
                super::commit::OrderPlaced {
                    order: "after the upgrade".into(),
                },
            )
            .await
            .expect("publish");
        tx.commit().await.expect("commit");
        let newest: i64 = sqlx::query_scalar("SELECT MAX(id) FROM herald_outbox")
            .fetch_one(&pool)
            .await
            .expect("max");
        assert_eq!(
            newest, 6,
            "id 5 was a feed position once: never reused ({id:?})"
        );
        // The check still refuses a status that is not one of the three.
        let refused = sqlx::query("UPDATE herald_outbox SET status = 'lost' WHERE id = 1")
            .execute(&pool)
            .await;
        assert!(refused.is_err(), "the status check holds after the rebuild");
        for index in [
            "herald_outbox_pending",
            "herald_outbox_pending_key",
            "herald_outbox_finished",
        ] {
            let found: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = ?1",
            )
            .bind(index)
            .fetch_one(&pool)
            .await
            .expect("index");
            assert_eq!(found, 1, "{index} is rebuilt");
        }
    }

    #[tokio::test]
    async fn every_failure_kind_round_trips_through_the_sqlite_store() {
        use herald::{DeadLetter, DeadLetterId, Envelope, FailureKind};
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, outbox) = open(&dir).await;
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
        for (n, failure) in kinds.into_iter().enumerate() {
            let envelope = Envelope::new("outbox_sqlite.kind");
            let now = envelope.occurred_at;
            let id = store
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
                .expect("put");
            let back = store.get(id).await.expect("get").expect("stored");
            assert_eq!(back.failure, failure, "{back:?}");
            let stored: Option<String> =
                sqlx::query_scalar("SELECT failure_kind FROM herald_dead_letters WHERE id = ?1")
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
        assert_eq!(listed, kinds.to_vec());
        let mut again = store.list(1).await.expect("list").remove(0);
        again.failure = Some(FailureKind::Timeout);
        let id = store.put(again).await.expect("update");
        let taken = store.take(id).await.expect("take").expect("there");
        assert_eq!(
            taken.failure,
            Some(FailureKind::Timeout),
            "updated by a second failure"
        );
    }

    #[tokio::test]
    async fn the_outbox_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SqliteOutbox>();
        assert_send_sync::<herald::SqliteDeadLetters>();
        assert_send_sync::<herald::outbox::Relay>();
        assert_send_sync::<herald::outbox::OutboxStatus>();
    }
}
