//! Publishing into the outbox, on real SQLite files and the machine's real PostgreSQL
//! (`HERALD_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`, one schema per
//! test; fails, never skips, when the server is down). One kit of tests runs on both backends:
//!
//! - `publish`, `publish_with` and `publish_all` on the caller's transaction compile inside a
//!   `Send` future and behave: in `tokio::spawn`, in an axum 0.8 handler that inserts a row and
//!   publishes in one transaction (served over real HTTP), and in an `#[async_handler]` publishing a
//!   follow-up on its inbox transaction. Committed rows are delivered, rolled-back ones never.
//! - The payload limit: exactly at the limit is accepted, one byte over is refused with the message
//!   handed back and nothing written (for `publish_all`: none of the batch), raising the limit
//!   accepts it; a database error hands the message back too.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn push(&self, what: impl Into<String>) {
        self.0.lock().expect("lock").push(what.into());
    }
    fn all(&self) -> Vec<String> {
        let mut all = self.0.lock().expect("lock").clone();
        all.sort();
        all
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `POST path` with a JSON body over a plain HTTP/1.1 connection; returns the status code.
async fn post_json(addr: SocketAddr, path: &str, body: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the test server");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the response");
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// The tests, expanded once per backend. The backend module provides `Pool`, `Outbox`, `Inbox`,
/// `setup(name)`, `setup_without_schema(name)`, and the SQL texts with its placeholders.
macro_rules! publish_tests {
    (
        spawned: $spawned:tt,
        web: $web:tt,
        order: $order:tt,
        shipment: $shipment:tt,
        blob: $blob:tt $(,)?
    ) => {
        use super::{eventually, post_json, Seen};
        use herald::outbox::{OutboxPublishError, DEFAULT_MAX_PAYLOAD_BYTES};
        use herald::{async_handler, Event, HandlerError, Herald, State};
        use serde::{Deserialize, Serialize};
        use std::time::Duration;

        async fn count(pool: &Pool, sql: &str) -> i64 {
            herald::sqlx::query_scalar(sql)
                .fetch_one(pool)
                .await
                .expect("count query")
        }

        fn build(module: &str, pool: &Pool, outbox: &Outbox, seen: &Seen) -> Herald {
            Herald::builder()
                .handlers_under(module)
                .state(seen.clone())
                .state(pool.clone())
                .state(outbox.clone())
                .build()
                .expect("valid registry")
        }

        mod spawned {
            use super::*;

            #[derive(Event, Clone, Debug, Serialize, Deserialize)]
            #[event(name = $spawned)]
            pub(crate) struct UserSignedUp {
                pub(crate) email: String,
            }

            #[async_handler]
            async fn welcome(event: UserSignedUp, State(seen): State<Seen>) {
                seen.push(event.email);
            }

            #[tokio::test]
            async fn publish_publish_with_and_publish_all_on_a_transaction_in_a_spawned_task() {
                let (pool, outbox, _keep) = setup("pub_spawned").await;
                let seen = Seen::default();
                let herald = build(module_path!(), &pool, &outbox, &seen);
                herald::sqlx::raw_sql(CREATE_USERS)
                    .execute(&pool)
                    .await
                    .expect("create users");
                let relay = outbox
                    .relay(&herald)
                    .poll_interval(Duration::from_millis(10))
                    .start();

                let task = |email: &'static str, commit: bool| {
                    let (pool, outbox) = (pool.clone(), outbox.clone());
                    // `tokio::spawn` requires the future to be `Send`: this is the compile test.
                    tokio::spawn(async move {
                        let mut tx = pool.begin().await.expect("begin");
                        herald::sqlx::query(INSERT_USER)
                            .bind(email)
                            .execute(&mut *tx)
                            .await
                            .expect("insert user");
                        outbox
                            .publish(
                                &mut *tx,
                                UserSignedUp {
                                    email: email.into(),
                                },
                            )
                            .await
                            .expect("publish");
                        outbox
                            .publish_with(
                                &mut tx,
                                UserSignedUp {
                                    email: format!("{email}/with"),
                                },
                                herald::PublishOptions::new().idempotency_key(email),
                            )
                            .await
                            .expect("publish_with");
                        outbox
                            .publish_all(
                                &mut *tx,
                                (0..2).map(|n| UserSignedUp {
                                    email: format!("{email}/all{n}"),
                                }),
                            )
                            .await
                            .expect("publish_all");
                        if commit {
                            tx.commit().await.expect("commit");
                        } else {
                            tx.rollback().await.expect("rollback");
                        }
                    })
                };
                task("rolled-back@example.com", false).await.expect("task");
                task("kim@example.com", true).await.expect("task");

                let expected = vec![
                    "kim@example.com".to_owned(),
                    "kim@example.com/all0".to_owned(),
                    "kim@example.com/all1".to_owned(),
                    "kim@example.com/with".to_owned(),
                ];
                eventually("the committed events are handled", async || {
                    seen.all().len() >= expected.len()
                })
                .await;
                eventually("the rows are processed", async || {
                    count(
                        &pool,
                        "SELECT COUNT(*) FROM herald_outbox WHERE status = 'processed'",
                    )
                    .await
                        == 4
                })
                .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert_eq!(seen.all(), expected);
                assert_eq!(count(&pool, "SELECT COUNT(*) FROM herald_outbox").await, 4);
                assert_eq!(count(&pool, "SELECT COUNT(*) FROM users").await, 1);
                relay.stop().await;
            }
        }

        mod web {
            use super::*;
            use axum::extract::State as WebState;
            use axum::http::StatusCode;
            use axum::routing::post;
            use axum::{Json, Router};

            #[derive(Event, Clone, Debug, Serialize, Deserialize)]
            #[event(name = $web)]
            pub(crate) struct UserSignedUp {
                pub(crate) email: String,
            }

            #[async_handler]
            async fn send_welcome_mail(event: UserSignedUp, State(seen): State<Seen>) {
                seen.push(event.email);
            }

            #[derive(Clone)]
            struct App {
                pool: Pool,
                outbox: Outbox,
            }

            #[derive(Deserialize)]
            struct SignUp {
                email: String,
            }

            /// Inserts the user and publishes its event in one transaction; refuses (and rolls
            /// back both) addresses of `blocked.example`, after the publish.
            async fn sign_up(
                WebState(app): WebState<App>,
                Json(form): Json<SignUp>,
            ) -> Result<StatusCode, (StatusCode, String)> {
                let internal =
                    |e: &dyn std::fmt::Display| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
                let mut tx = app.pool.begin().await.map_err(|e| internal(&e))?;
                herald::sqlx::query(INSERT_USER)
                    .bind(&form.email)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| internal(&e))?;
                app.outbox
                    .publish(
                        &mut *tx,
                        UserSignedUp {
                            email: form.email.clone(),
                        },
                    )
                    .await
                    .map_err(|e| internal(&e))?;
                if form.email.ends_with("@blocked.example") {
                    tx.rollback().await.map_err(|e| internal(&e))?;
                    return Err((StatusCode::UNPROCESSABLE_ENTITY, "blocked".into()));
                }
                tx.commit().await.map_err(|e| internal(&e))?;
                Ok(StatusCode::CREATED)
            }

            #[tokio::test]
            async fn an_axum_handler_inserts_a_row_and_publishes_in_one_transaction() {
                let (pool, outbox, _keep) = setup("pub_web").await;
                let seen = Seen::default();
                let herald = build(module_path!(), &pool, &outbox, &seen);
                herald::sqlx::raw_sql(CREATE_USERS)
                    .execute(&pool)
                    .await
                    .expect("create users");
                let relay = outbox
                    .relay(&herald)
                    .poll_interval(Duration::from_millis(10))
                    .start();
                // `post(sign_up)` only accepts a handler whose future is `Send`: the compile test.
                let app = Router::new()
                    .route("/signup", post(sign_up))
                    .with_state(App {
                        pool: pool.clone(),
                        outbox: outbox.clone(),
                    });
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("address");
                let server = tokio::spawn(async move { axum::serve(listener, app).await });

                let created = post_json(addr, "/signup", r#"{"email":"kim@example.com"}"#).await;
                let refused =
                    post_json(addr, "/signup", r#"{"email":"eve@blocked.example"}"#).await;
                assert_eq!((created, refused), (201, 422));

                eventually("the sign-up event is handled", async || {
                    !seen.all().is_empty()
                })
                .await;
                eventually("its row is processed", async || {
                    count(
                        &pool,
                        "SELECT COUNT(*) FROM herald_outbox WHERE status = 'processed'",
                    )
                    .await
                        == 1
                })
                .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert_eq!(seen.all(), vec!["kim@example.com".to_owned()]);
                assert_eq!(count(&pool, "SELECT COUNT(*) FROM users").await, 1);
                assert_eq!(count(&pool, "SELECT COUNT(*) FROM herald_outbox").await, 1);
                server.abort();
                relay.stop().await;
            }
        }

        mod follow_up {
            use super::*;

            #[derive(Event, Clone, Debug, Serialize, Deserialize)]
            #[event(name = $order)]
            pub(crate) struct OrderPlaced {
                pub(crate) order: String,
                pub(crate) fail: bool,
            }

            #[derive(Event, Clone, Debug, Serialize, Deserialize)]
            #[event(name = $shipment)]
            pub(crate) struct ShipmentRequested {
                pub(crate) order: String,
            }

            /// Records the shipment and publishes its follow-up on the inbox transaction; a failing
            /// order publishes, then fails before the commit (rolled back: no follow-up).
            #[async_handler]
            async fn request_shipment(
                event: OrderPlaced,
                inbox: Inbox,
                State(outbox): State<Outbox>,
            ) -> Result<(), HandlerError> {
                let mut tx = inbox.begin().await?;
                herald::sqlx::query(INSERT_SHIPMENT)
                    .bind(&event.order)
                    .execute(&mut *tx)
                    .await?;
                outbox
                    .publish(
                        &mut *tx,
                        ShipmentRequested {
                            order: event.order.clone(),
                        },
                    )
                    .await?;
                if event.fail {
                    return Err(HandlerError::permanent(HandlerError::msg(
                        "the warehouse is closed",
                    )));
                }
                tx.commit().await?;
                Ok(())
            }

            #[async_handler]
            async fn ship(event: ShipmentRequested, State(seen): State<Seen>) {
                seen.push(event.order);
            }

            #[tokio::test]
            async fn a_handler_publishes_a_follow_up_on_its_inbox_transaction() {
                let (pool, outbox, _keep) = setup("pub_follow_up").await;
                let seen = Seen::default();
                let herald = build(module_path!(), &pool, &outbox, &seen);
                herald::sqlx::raw_sql(CREATE_SHIPMENTS)
                    .execute(&pool)
                    .await
                    .expect("create shipments");
                let relay = outbox
                    .relay(&herald)
                    .poll_interval(Duration::from_millis(10))
                    .start();

                let mut conn = pool.acquire().await.expect("connection");
                for (order, fail) in [("o-1", false), ("o-2", true)] {
                    outbox
                        .publish(
                            &mut conn, // a pooled connection, no transaction: commits at once
                            OrderPlaced {
                                order: order.into(),
                                fail,
                            },
                        )
                        .await
                        .expect("publish");
                }
                drop(conn);

                eventually("the follow-up is handled", async || !seen.all().is_empty()).await;
                eventually("every row is finished", async || {
                    count(
                        &pool,
                        "SELECT COUNT(*) FROM herald_outbox WHERE status <> 'pending'",
                    )
                    .await
                        == 3
                })
                .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert_eq!(seen.all(), vec!["o-1".to_owned()]);
                assert_eq!(count(&pool, "SELECT COUNT(*) FROM shipments").await, 1);
                assert_eq!(count(&pool, "SELECT COUNT(*) FROM herald_outbox").await, 3);
                assert_eq!(
                    count(
                        &pool,
                        "SELECT COUNT(*) FROM herald_outbox WHERE status = 'failed'"
                    )
                    .await,
                    1,
                    "the failing order's row"
                );
                relay.stop().await;
            }
        }

        mod payload_limit {
            use super::*;

            #[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
            #[event(name = $blob)]
            pub(crate) struct Blob {
                pub(crate) data: String,
            }

            /// A blob whose JSON payload (`{"data":"…"}`, 11 bytes around the data) is `size` bytes.
            fn blob(size: usize) -> Blob {
                Blob {
                    data: "x".repeat(size - 11),
                }
            }

            async fn rows(pool: &Pool) -> i64 {
                count(pool, "SELECT COUNT(*) FROM herald_outbox").await
            }

            async fn rows_on(conn: &mut Connection) -> i64 {
                herald::sqlx::query_scalar("SELECT COUNT(*) FROM herald_outbox")
                    .fetch_one(conn)
                    .await
                    .expect("count query")
            }

            #[tokio::test]
            async fn payloads_over_the_limit_are_refused_with_the_message_and_nothing_written() {
                let (pool, outbox, _keep) = setup("pub_limit").await;
                assert_eq!(outbox.payload_limit(), DEFAULT_MAX_PAYLOAD_BYTES);
                assert_eq!(DEFAULT_MAX_PAYLOAD_BYTES, 1024 * 1024);
                let mut tx = pool.begin().await.expect("begin");

                outbox
                    .publish(&mut *tx, blob(DEFAULT_MAX_PAYLOAD_BYTES))
                    .await
                    .expect("a payload exactly at the limit is accepted");

                let over = blob(DEFAULT_MAX_PAYLOAD_BYTES + 1);
                let error = outbox
                    .publish(&mut *tx, over.clone())
                    .await
                    .expect_err("one byte over the limit is refused");
                let text = error.to_string();
                assert!(
                    text.contains(&format!("{} bytes", DEFAULT_MAX_PAYLOAD_BYTES + 1))
                        && text.contains(&format!("limit of {DEFAULT_MAX_PAYLOAD_BYTES} bytes"))
                        && text.contains("max_payload_bytes"),
                    "says the size, the limit and how to raise it: {text}"
                );
                match &error {
                    OutboxPublishError::TooLarge {
                        size, limit, index, ..
                    } => assert_eq!(
                        (*size, *limit, *index),
                        (
                            DEFAULT_MAX_PAYLOAD_BYTES + 1,
                            DEFAULT_MAX_PAYLOAD_BYTES,
                            None
                        )
                    ),
                    other => panic!("expected TooLarge, got {other:?}"),
                }
                assert_eq!(error.into_message(), over, "the message is handed back");

                let eight_mib = blob(8 * 1024 * 1024);
                let error = outbox
                    .publish_with(&mut *tx, eight_mib.clone(), herald::PublishOptions::new())
                    .await
                    .expect_err("8 MiB is refused");
                assert_eq!(error.into_message(), eight_mib);

                let batch = vec![blob(20), over.clone(), blob(30)];
                let error = outbox
                    .publish_all(&mut *tx, batch.clone())
                    .await
                    .expect_err("a batch with one message over the limit is refused");
                assert!(
                    matches!(error, OutboxPublishError::TooLarge { index: Some(1), .. }),
                    "names the position: {error}"
                );
                assert_eq!(
                    error.into_message(),
                    batch,
                    "the whole batch is handed back"
                );
                assert_eq!(rows_on(&mut tx).await, 1, "nothing refused was written");

                let raised = outbox
                    .clone()
                    .max_payload_bytes(2 * DEFAULT_MAX_PAYLOAD_BYTES);
                assert_eq!(raised.payload_limit(), 2 * DEFAULT_MAX_PAYLOAD_BYTES);
                raised
                    .publish(&mut *tx, over.clone())
                    .await
                    .expect("accepted once the limit is raised");
                raised
                    .publish_all(&mut *tx, batch)
                    .await
                    .expect("the batch is accepted once the limit is raised");
                tx.commit().await.expect("commit");
                assert_eq!(rows(&pool).await, 5);

                let tight = outbox.clone().max_payload_bytes(25);
                tight
                    .publish(&mut *pool.acquire().await.expect("connection"), blob(25))
                    .await
                    .expect("exactly at a lowered limit");
                let error = tight
                    .publish(&mut *pool.acquire().await.expect("connection"), blob(26))
                    .await
                    .expect_err("over a lowered limit");
                assert!(error.to_string().contains("limit of 25 bytes"), "{error}");
                assert_eq!(rows(&pool).await, 6);
            }

            #[tokio::test]
            async fn a_database_error_hands_the_messages_back() {
                let (_pool, outbox, _keep) = setup("pub_failed").await;
                let (bare, _keep_bare) = setup_without_schema("pub_failed_bare").await;
                let mut conn = bare.acquire().await.expect("connection");
                let error = outbox
                    .publish(&mut *conn, blob(20))
                    .await
                    .expect_err("no herald_outbox table on this connection");
                assert!(
                    matches!(error, OutboxPublishError::Failed { .. }),
                    "{error:?}"
                );
                assert_eq!(error.into_message(), blob(20));
                let error = outbox
                    .publish_all(&mut *conn, vec![blob(20), blob(21)])
                    .await
                    .expect_err("no herald_outbox table on this connection");
                assert_eq!(error.into_message(), vec![blob(20), blob(21)]);
            }
        }

        #[test]
        fn the_publish_error_is_send_sync_and_an_error() {
            fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
            assert_error::<OutboxPublishError<payload_limit::Blob>>();
            assert_error::<OutboxPublishError<Vec<payload_limit::Blob>>>();
        }
    };
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use herald::outbox::{self, SqliteOutbox};

    type Pool = herald::sqlx::SqlitePool;
    type Connection = herald::sqlx::SqliteConnection;
    type Outbox = SqliteOutbox;
    type Inbox = herald::inbox::SqliteInbox;

    const CREATE_USERS: &str = "CREATE TABLE users (email TEXT PRIMARY KEY)";
    const INSERT_USER: &str = "INSERT INTO users (email) VALUES (?1)";
    const CREATE_SHIPMENTS: &str = "CREATE TABLE shipments (order_id TEXT PRIMARY KEY)";
    const INSERT_SHIPMENT: &str = "INSERT INTO shipments (order_id) VALUES (?1)";

    async fn setup_without_schema(name: &str) -> (Pool, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = outbox::sqlite::connect(dir.path().join(format!("{name}.db")))
            .await
            .expect("open sqlite file");
        (pool, dir)
    }

    async fn setup(name: &str) -> (Pool, Outbox, tempfile::TempDir) {
        let (pool, dir) = setup_without_schema(name).await;
        let outbox = SqliteOutbox::new(pool.clone()).await.expect("migrate");
        (pool, outbox, dir)
    }

    publish_tests!(
        spawned: "outbox_publish.sqlite.spawned.user_signed_up",
        web: "outbox_publish.sqlite.web.user_signed_up",
        order: "outbox_publish.sqlite.follow_up.order_placed",
        shipment: "outbox_publish.sqlite.follow_up.shipment_requested",
        blob: "outbox_publish.sqlite.payload_limit.blob",
    );
}

#[cfg(feature = "postgres")]
mod postgres {
    use herald::outbox::PgOutbox;
    use herald::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use std::str::FromStr;

    type Pool = herald::sqlx::PgPool;
    type Connection = herald::sqlx::PgConnection;
    type Outbox = PgOutbox;
    type Inbox = herald::inbox::PgInbox;

    const CREATE_USERS: &str = "CREATE TABLE users (email TEXT PRIMARY KEY)";
    const INSERT_USER: &str = "INSERT INTO users (email) VALUES ($1)";
    const CREATE_SHIPMENTS: &str = "CREATE TABLE shipments (order_id TEXT PRIMARY KEY)";
    const INSERT_SHIPMENT: &str = "INSERT INTO shipments (order_id) VALUES ($1)";

    /// A pool whose connections work in a fresh schema `name`.
    async fn setup_without_schema(name: &str) -> (Pool, ()) {
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
        (pool, ())
    }

    async fn setup(name: &str) -> (Pool, Outbox, ()) {
        let (pool, ()) = setup_without_schema(name).await;
        let outbox = PgOutbox::new(pool.clone()).await.expect("migrate");
        (pool, outbox, ())
    }

    publish_tests!(
        spawned: "outbox_publish.postgres.spawned.user_signed_up",
        web: "outbox_publish.postgres.web.user_signed_up",
        order: "outbox_publish.postgres.follow_up.order_placed",
        shipment: "outbox_publish.postgres.follow_up.shipment_requested",
        blob: "outbox_publish.postgres.payload_limit.blob",
    );
}
