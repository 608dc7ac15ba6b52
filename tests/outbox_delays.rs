//! Delayed delivery through the outbox (`outbox.publish_with(.., PublishOptions::new()
//! .deliver_after(..))`), on real SQLite files, the machine's real PostgreSQL
//! (`HERALD_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`) and MySQL/MariaDB
//! (`HERALD_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306/test`); the servers' tests fail,
//! never skip, when a server is down. One kit runs on each backend:
//!
//! - a delayed row (by delay or by moment) is not handled before its time, then handled once, on
//!   its first attempt;
//! - the ordering rule: a delayed row holds back the later rows of its key (they are claimed in id
//!   order), not the rows of other keys;
//! - a route forwards a delayed row when the relay releases it;
//! - `status()` counts a row waiting for its time as `delayed` and leaves it out of the lag.

use async_trait::async_trait;
use herald::ports::{Capabilities, Confirmation, MessageSink, OutgoingMessage, SinkError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the handlers saw: label, attempt, when.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, u32, Instant)>>>);

impl Seen {
    fn push(&self, label: String, attempt: u32) {
        self.0
            .lock()
            .expect("lock")
            .push((label, attempt, Instant::now()));
    }
    fn all(&self) -> Vec<(String, u32, Instant)> {
        self.0.lock().expect("lock").clone()
    }
    fn labels(&self) -> Vec<String> {
        self.all().into_iter().map(|(label, _, _)| label).collect()
    }
    fn get(&self, label: &str) -> Option<(u32, Instant)> {
        self.all()
            .into_iter()
            .find(|(l, _, _)| l == label)
            .map(|(_, attempt, at)| (attempt, at))
    }
    fn position(&self, label: &str) -> usize {
        self.labels()
            .iter()
            .position(|l| l == label)
            .unwrap_or_else(|| panic!("`{label}` not handled: {:?}", self.labels()))
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A sink that confirms everything and records the payloads and when.
#[derive(Debug, Default)]
struct Recording {
    published: Mutex<Vec<(String, Instant)>>,
}

impl Recording {
    fn published(&self) -> Vec<(String, Instant)> {
        self.published.lock().expect("lock").clone()
    }
}

#[async_trait]
impl MessageSink for Recording {
    async fn publish(&self, batch: Vec<OutgoingMessage>) -> Result<Vec<Confirmation>, SinkError> {
        let mut published = self.published.lock().expect("lock");
        Ok(batch
            .into_iter()
            .map(|message| {
                published.push((message.payload, Instant::now()));
                Confirmation::Confirmed
            })
            .collect())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
    }

    fn destination(&self) -> String {
        "recording".to_owned()
    }
}

/// The tests, expanded once per backend. The backend module provides `Pool`, `Outbox` and
/// `setup(name) -> (Pool, Outbox, keep)`.
macro_rules! delay_tests {
    (reminder: $reminder:tt, entry: $entry:tt, trial: $trial:tt, audit: $audit:tt $(,)?) => {
        use super::{eventually, Recording, Seen};
        use herald::{async_handler, Event, Herald, Meta, PublishOptions, State};
        use serde::{Deserialize, Serialize};
        use std::sync::Arc;
        use std::time::{Duration, Instant};

        fn build(module: &str, seen: &Seen) -> Herald {
            Herald::builder()
                .handlers_under(module)
                .state(seen.clone())
                .build()
                .expect("valid registry")
        }

        fn relay(outbox: &Outbox, herald: &Herald) -> herald::outbox::Relay {
            outbox
                .relay(herald)
                .poll_interval(Duration::from_millis(20))
                .start()
        }

        async fn count(pool: &Pool, sql: &str) -> i64 {
            herald::sqlx::query_scalar(sql)
                .fetch_one(pool)
                .await
                .expect(sql)
        }

        mod timing {
            use super::*;

            #[derive(Event, Clone, Debug, Serialize, Deserialize)]
            #[event(name = $reminder)]
            pub(crate) struct Reminder {
                pub(crate) label: String,
            }

            #[async_handler]
            async fn remind(event: Reminder, meta: Meta, State(seen): State<Seen>) {
                seen.push(event.label, meta.attempt());
            }

            fn reminder(label: &str) -> Reminder {
                Reminder {
                    label: label.into(),
                }
            }

            #[tokio::test]
            async fn a_delayed_row_is_handled_no_sooner_than_its_time_on_its_first_attempt() {
                let (pool, outbox, _keep) = setup("delay_timing").await;
                let seen = Seen::default();
                let herald = build(module_path!(), &seen);
                let relay = relay(&outbox, &herald);

                let published = Instant::now();
                let mut tx = pool.begin().await.expect("begin");
                outbox
                    .publish_with(
                        &mut *tx,
                        reminder("after"),
                        PublishOptions::new().deliver_after(Duration::from_millis(700)),
                    )
                    .await
                    .expect("publish");
                outbox
                    .publish_with(
                        &mut *tx,
                        reminder("at"),
                        PublishOptions::new().deliver_at(
                            herald::chrono::Utc::now() + herald::chrono::Duration::milliseconds(500),
                        ),
                    )
                    .await
                    .expect("publish");
                outbox
                    .publish(&mut *tx, reminder("now"))
                    .await
                    .expect("publish");
                tx.commit().await.expect("commit");

                eventually("every reminder handled", || seen.all().len() == 3).await;
                assert_eq!(seen.labels(), ["now", "at", "after"]);
                for (label, delay) in [("at", 500), ("after", 700)] {
                    let (attempt, at) = seen.get(label).expect("handled");
                    assert_eq!(attempt, 1, "{label}: the wait cost no attempt");
                    assert!(
                        at >= published + Duration::from_millis(delay),
                        "{label} was handled {:?} after the publish, before its time",
                        at - published
                    );
                }
                relay.stop().await;
                assert_eq!(
                    count(
                        &pool,
                        "SELECT COUNT(*) FROM herald_outbox WHERE status = 'processed' AND fail_count = 0"
                    )
                    .await,
                    3
                );
                assert!(herald.ledger().is_balanced(), "{}", herald.ledger());
            }
        }

        mod status {
            use super::*;

            #[derive(Event, Clone, Debug, Serialize, Deserialize)]
            #[event(name = $audit)]
            pub(crate) struct AuditDue {
                pub(crate) label: String,
            }

            #[async_handler]
            async fn audit(event: AuditDue, meta: Meta, State(seen): State<Seen>) {
                seen.push(event.label, meta.attempt());
            }

            /// `outbox status` (and the lag metric) does not take a row waiting for its time for
            /// a row delivery lags behind on.
            #[tokio::test]
            async fn a_row_waiting_for_its_time_is_counted_delayed_and_left_out_of_the_lag() {
                let (pool, outbox, _keep) = setup("delay_status").await;
                let mut conn = pool.acquire().await.expect("connection");
                outbox
                    .publish_with(
                        &mut conn,
                        AuditDue {
                            label: "tomorrow".into(),
                        },
                        PublishOptions::new().deliver_after(Duration::from_secs(86_400)),
                    )
                    .await
                    .expect("publish");
                let status = outbox.status().await.expect("status");
                assert_eq!((status.pending, status.delayed), (1, 1), "{status:?}");
                assert_eq!(status.oldest_pending_at, None, "{status:?}");
                assert_eq!(status.lag, None, "{status:?}");

                outbox
                    .publish(&mut conn, AuditDue { label: "now".into() })
                    .await
                    .expect("publish");
                let status = outbox.status().await.expect("status");
                assert_eq!((status.pending, status.delayed), (2, 1), "{status:?}");
                assert!(status.oldest_pending_at.is_some(), "{status:?}");
            }
        }

        mod ordering {
            use super::*;

            #[derive(Event, Clone, Debug, Serialize, Deserialize)]
            #[event(name = $entry, key = account)]
            pub(crate) struct Entry {
                pub(crate) account: String,
                pub(crate) label: String,
            }

            #[async_handler]
            async fn post(event: Entry, meta: Meta, State(seen): State<Seen>) {
                seen.push(event.label, meta.attempt());
            }

            fn entry(account: &str, label: &str) -> Entry {
                Entry {
                    account: account.into(),
                    label: label.into(),
                }
            }

            /// The rule (docs/DELAYS_AND_BREAKERS.md): the relay claims a key's rows in id
            /// order, so a delayed row keeps its place and later rows of its key wait for it.
            #[tokio::test]
            async fn a_delayed_row_holds_back_later_rows_of_its_key_and_no_other() {
                let (pool, outbox, _keep) = setup("delay_ordering").await;
                let seen = Seen::default();
                let herald = build(module_path!(), &seen);
                let relay = relay(&outbox, &herald);

                let published = Instant::now();
                let mut conn = pool.acquire().await.expect("connection");
                outbox
                    .publish_with(
                        &mut conn,
                        entry("A", "a1"),
                        PublishOptions::new().deliver_after(Duration::from_millis(600)),
                    )
                    .await
                    .expect("publish");
                outbox
                    .publish(&mut conn, entry("A", "a2"))
                    .await
                    .expect("publish");
                outbox
                    .publish(&mut conn, entry("B", "b1"))
                    .await
                    .expect("publish");
                drop(conn);

                eventually("every entry handled", || seen.all().len() == 3).await;
                assert!(seen.position("b1") < seen.position("a1"), "{:?}", seen.labels());
                assert!(seen.position("a1") < seen.position("a2"), "{:?}", seen.labels());
                let (_, a2_at) = seen.get("a2").expect("handled");
                assert!(a2_at >= published + Duration::from_millis(600));
                relay.stop().await;
            }
        }

        mod route {
            use super::*;

            #[derive(Event, Clone, Debug, Serialize, Deserialize)]
            #[event(name = $trial)]
            pub(crate) struct TrialEnds {
                pub(crate) user: u32,
            }

            #[tokio::test]
            async fn a_route_forwards_a_delayed_row_when_the_relay_releases_it() {
                let (pool, outbox, _keep) = setup("delay_route").await;
                let sink = Arc::new(Recording::default());
                let herald = Herald::builder()
                    .handlers_under(module_path!())
                    .route::<TrialEnds>()
                    .to(sink.clone())
                    .build()
                    .expect("valid registry");
                let relay = relay(&outbox, &herald);

                let published = Instant::now();
                outbox
                    .publish_with(
                        &mut *pool.acquire().await.expect("connection"),
                        TrialEnds { user: 7 },
                        PublishOptions::new().deliver_after(Duration::from_millis(500)),
                    )
                    .await
                    .expect("publish");
                eventually("the row forwarded", || !sink.published().is_empty()).await;
                let published_at = sink.published();
                assert_eq!(published_at.len(), 1);
                assert_eq!(published_at[0].0, r#"{"user":7}"#);
                assert!(published_at[0].1 >= published + Duration::from_millis(500));
                relay.stop().await;
                assert_eq!(
                    count(&pool, "SELECT COUNT(*) FROM herald_outbox WHERE status = 'processed'")
                        .await,
                    1
                );
            }
        }
    };
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use herald::outbox::{self, SqliteOutbox};

    type Pool = herald::sqlx::SqlitePool;
    type Outbox = SqliteOutbox;

    async fn setup(name: &str) -> (Pool, Outbox, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = outbox::sqlite::connect(dir.path().join(format!("{name}.db")))
            .await
            .expect("open sqlite file");
        let outbox = SqliteOutbox::new(pool.clone()).await.expect("migrate");
        (pool, outbox, dir)
    }

    delay_tests!(
        reminder: "outbox_delays.sqlite.reminder",
        entry: "outbox_delays.sqlite.entry",
        trial: "outbox_delays.sqlite.trial_ends",
        audit: "outbox_delays.sqlite.audit_due",
    );
}

#[cfg(feature = "postgres")]
mod postgres {
    use herald::outbox::PgOutbox;
    use herald::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use std::str::FromStr;

    type Pool = herald::sqlx::PgPool;
    type Outbox = PgOutbox;

    /// A pool whose connections work in a fresh schema `name`.
    async fn setup(name: &str) -> (Pool, Outbox, ()) {
        let url = std::env::var("HERALD_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let options = PgConnectOptions::from_str(&url).expect("valid HERALD_TEST_DATABASE_URL");
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required for these tests: {e}"));
        herald::sqlx::raw_sql(&format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name};"
        ))
        .execute(&admin)
        .await
        .expect("create schema");
        admin.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options.options([("search_path", name)]))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required for these tests: {e}"));
        let outbox = PgOutbox::new(pool.clone()).await.expect("migrate");
        (pool, outbox, ())
    }

    delay_tests!(
        reminder: "outbox_delays.postgres.reminder",
        entry: "outbox_delays.postgres.entry",
        trial: "outbox_delays.postgres.trial_ends",
        audit: "outbox_delays.postgres.audit_due",
    );
}

#[cfg(feature = "mysql")]
mod mysql {
    use herald::outbox::MySqlOutbox;
    use herald::sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
    use std::str::FromStr;

    type Pool = herald::sqlx::MySqlPool;
    type Outbox = MySqlOutbox;

    /// A pool on the fresh database `<base>_<name>`.
    async fn setup(name: &str) -> (Pool, Outbox, ()) {
        let url = std::env::var("HERALD_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
        let options = MySqlConnectOptions::from_str(&url).expect("valid HERALD_TEST_MYSQL_URL");
        let base = options.get_database().unwrap_or("test").to_owned();
        let database = format!("{base}_{name}");
        let admin = MySqlPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .unwrap_or_else(|e| panic!("MySQL/MariaDB at {url} is required for these tests: {e}"));
        herald::sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS `{database}`; CREATE DATABASE `{database}`"
        ))
        .execute(&admin)
        .await
        .expect("create database");
        admin.close().await;
        let pool = MySqlPoolOptions::new()
            .max_connections(8)
            .connect_with(options.database(&database))
            .await
            .unwrap_or_else(|e| panic!("MySQL/MariaDB at {url} is required for these tests: {e}"));
        let outbox = MySqlOutbox::new(pool.clone()).await.expect("migrate");
        (pool, outbox, ())
    }

    delay_tests!(
        reminder: "outbox_delays.mysql.reminder",
        entry: "outbox_delays.mysql.entry",
        trial: "outbox_delays.mysql.trial_ends",
        audit: "outbox_delays.mysql.audit_due",
    );
}
