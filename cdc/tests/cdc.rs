//! Change data capture on the machine's real PostgreSQL (`HERALD_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`, `wal_level = logical`). Each test has its own
//! tables, publication and slot, dropped at its end (also on panic). These tests fail, never
//! skip, when PostgreSQL is missing.
//!
//! Commit order across interleaved transactions; rolled-back work never emitted; old and new
//! values under each replica identity; truncate; routes; retries holding the order; re-driving a
//! dead-lettered change past the handler's position; slot lag and the abandoned-slot warning;
//! errors that name the fix.

mod common;

use common::*;
use herald::sqlx;
use herald::{async_handler, HandlerError, Herald, State};
use herald_cdc::{CdcError, CdcPosition, Change, Operation, ReplicaIdentity};
use serde_json::json;
use std::time::Duration;

fn herald_for(
    module: &str,
    state: impl Clone + Send + Sync + 'static,
    pool: &sqlx::PgPool,
) -> Herald {
    Herald::builder()
        .handlers_under(module)
        .state(state)
        .state(pool.clone())
        .build()
        .expect("herald")
}

mod ordering {
    use super::*;

    #[async_handler]
    async fn record(change: Change, State(seen): State<Seen>) {
        seen.push(change);
    }

    #[tokio::test]
    async fn interleaved_transactions_are_delivered_in_commit_order() {
        let fx = Fixture::new("order", &[("t", "id int PRIMARY KEY, who text NOT NULL")]).await;
        let seen = Seen::default();
        let herald = herald_for(module_path!(), seen.clone(), &fx.pool);
        let source = fx.source(&herald).build().await.expect("source");
        let table = fx.table(0);

        // A starts first and commits last; B starts second and commits first.
        let mut a = fx.pool.begin().await.expect("a");
        let mut b = fx.pool.begin().await.expect("b");
        let insert = format!("INSERT INTO {table} (id, who) VALUES ($1, $2)");
        sqlx::query(&insert)
            .bind(1)
            .bind("a")
            .execute(&mut *a)
            .await
            .expect("a1");
        sqlx::query(&insert)
            .bind(2)
            .bind("b")
            .execute(&mut *b)
            .await
            .expect("b1");
        sqlx::query(&insert)
            .bind(3)
            .bind("a")
            .execute(&mut *a)
            .await
            .expect("a2");
        sqlx::query(&insert)
            .bind(4)
            .bind("b")
            .execute(&mut *b)
            .await
            .expect("b2");
        b.commit().await.expect("commit b");
        sqlx::query(&insert)
            .bind(5)
            .bind("c")
            .execute(&fx.pool)
            .await
            .expect("autocommit c");
        a.commit().await.expect("commit a");

        let report = source.catch_up().await.expect("catch up");
        assert_eq!((report.changes, report.transactions), (5, 3), "{report:?}");
        let changes = seen.all();
        let ids: Vec<_> = seen.values("id");
        assert_eq!(
            ids,
            [json!(2), json!(4), json!(5), json!(1), json!(3)],
            "commit order: B, C, A"
        );
        // Whole transactions, numbered within each, commit LSNs growing.
        assert_eq!(
            changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
            [0, 1, 0, 0, 1]
        );
        assert_eq!(changes[0].xid, changes[1].xid);
        assert_eq!(changes[3].xid, changes[4].xid);
        assert_ne!(changes[0].xid, changes[3].xid);
        assert!(changes[0].commit_lsn < changes[2].commit_lsn);
        assert!(changes[2].commit_lsn < changes[3].commit_lsn);
        assert!(changes
            .windows(2)
            .all(|w| w[0].position() < w[1].position()));
        assert!(changes
            .iter()
            .all(|c| c.op == Operation::Insert && c.table == table && c.schema == "public"));
        assert_eq!(changes[0].slot, fx.slot);

        // Nothing is delivered twice: the slot and the stored position moved past all of it.
        let again = source.catch_up().await.expect("catch up again");
        assert_eq!((again.changes, again.replayed), (0, 0), "{again:?}");
        assert_eq!(seen.all().len(), 5);
        let stored = source.position().await.expect("position");
        assert_eq!(stored, Some(changes[4].position()));
    }

    #[tokio::test]
    async fn a_rolled_back_transaction_is_never_emitted() {
        let fx = Fixture::new("rollback", &[("t", "id int PRIMARY KEY")]).await;
        let seen = Seen::default();
        let herald = herald_for(module_path!(), seen.clone(), &fx.pool);
        let source = fx.source(&herald).build().await.expect("source");
        let table = fx.table(0);

        let mut rolled_back = fx.pool.begin().await.expect("begin");
        sqlx::query(&format!("INSERT INTO {table} VALUES (100), (101)"))
            .execute(&mut *rolled_back)
            .await
            .expect("insert");
        // Committed work interleaved with the doomed transaction, and a rolled-back savepoint
        // inside a committed one.
        let mut kept = fx.pool.begin().await.expect("begin");
        sqlx::query(&format!("INSERT INTO {table} VALUES (1)"))
            .execute(&mut *kept)
            .await
            .expect("1");
        sqlx::query("SAVEPOINT s")
            .execute(&mut *kept)
            .await
            .expect("savepoint");
        sqlx::query(&format!("INSERT INTO {table} VALUES (102)"))
            .execute(&mut *kept)
            .await
            .expect("102");
        sqlx::query("ROLLBACK TO SAVEPOINT s")
            .execute(&mut *kept)
            .await
            .expect("rollback to");
        sqlx::query(&format!("INSERT INTO {table} VALUES (2)"))
            .execute(&mut *kept)
            .await
            .expect("2");
        kept.commit().await.expect("commit");
        rolled_back.rollback().await.expect("rollback");
        fx.exec(&format!("INSERT INTO {table} VALUES (3)")).await;

        source.catch_up().await.expect("catch up");
        assert_eq!(seen.values("id"), [json!(1), json!(2), json!(3)]);
        // The aborted transaction does not come later either.
        fx.exec(&format!("INSERT INTO {table} VALUES (4)")).await;
        source.catch_up().await.expect("catch up");
        assert_eq!(seen.values("id"), [json!(1), json!(2), json!(3), json!(4)]);
    }
}

mod values {
    use super::*;

    #[async_handler]
    async fn record(change: Change, State(seen): State<Seen>) {
        seen.push(change);
    }

    #[tokio::test]
    async fn updates_and_deletes_carry_old_values_as_the_replica_identity_provides() {
        let fx = Fixture::new(
            "values",
            &[
                ("full", "id int PRIMARY KEY, name text, qty int, meta jsonb, price numeric, flag bool, note text, ratio float8"),
                ("dflt", "id int PRIMARY KEY, n int, body text"),
            ],
        )
        .await;
        let (full, dflt) = (fx.table(0).to_owned(), fx.table(1).to_owned());
        fx.exec(&format!("ALTER TABLE {full} REPLICA IDENTITY FULL"))
            .await;
        let seen = Seen::default();
        let herald = herald_for(module_path!(), seen.clone(), &fx.pool);
        let source = fx.source(&herald).build().await.expect("source");

        fx.exec(&format!(
            "INSERT INTO {full} VALUES (1, 'a', 2, '{{\"x\": [1, 2]}}', 12345678901234567890.01, true, NULL, 0.5)"
        ))
        .await;
        fx.exec(&format!(
            "UPDATE {full} SET qty = 3, name = 'b' WHERE id = 1"
        ))
        .await;
        fx.exec(&format!("DELETE FROM {full} WHERE id = 1")).await;
        // A body too large to stay inline (TOASTed, incompressible): an update that leaves it
        // alone does not send it.
        fx.exec(&format!(
            "INSERT INTO {dflt} SELECT 1, 0, string_agg(md5(random()::text), '') FROM generate_series(1, 500)"
        ))
        .await;
        fx.exec(&format!("UPDATE {dflt} SET n = 1 WHERE id = 1"))
            .await;
        fx.exec(&format!("UPDATE {dflt} SET id = 2 WHERE id = 1"))
            .await;
        fx.exec(&format!("DELETE FROM {dflt} WHERE id = 2")).await;
        fx.exec(&format!("TRUNCATE {full}")).await;

        source.catch_up().await.expect("catch up");
        let c = seen.all();
        assert_eq!(c.len(), 8, "{c:#?}");

        // REPLICA IDENTITY FULL: every old column, typed values.
        assert_eq!(
            (c[0].op, c[0].replica_identity),
            (Operation::Insert, ReplicaIdentity::Full)
        );
        let inserted = c[0].new.as_ref().expect("new row");
        assert_eq!(inserted["id"], json!(1));
        assert_eq!(inserted["name"], json!("a"));
        assert_eq!(inserted["meta"], json!({"x": [1, 2]}));
        assert_eq!(inserted["price"], json!("12345678901234567890.01"));
        assert_eq!(inserted["flag"], json!(true));
        assert_eq!(inserted["note"], json!(null));
        assert_eq!(inserted["ratio"], json!(0.5));
        assert!(c[0].old.is_none());
        assert_eq!(c[1].op, Operation::Update);
        assert_eq!(c[1].old_value("qty"), Some(&json!(2)));
        assert_eq!(c[1].old_value("name"), Some(&json!("a")));
        assert_eq!(c[1].old.as_ref().map(|o| o.len()), Some(8));
        assert_eq!(c[1].new_value("qty"), Some(&json!(3)));
        assert_eq!(c[1].new_value("name"), Some(&json!("b")));
        assert_eq!(c[2].op, Operation::Delete);
        assert!(c[2].new.is_none());
        assert_eq!(c[2].old_value("name"), Some(&json!("b")));
        assert_eq!(c[2].old_value("meta"), Some(&json!({"x": [1, 2]})));

        // REPLICA IDENTITY DEFAULT: the primary key only, and only when it is needed.
        assert_eq!(c[3].replica_identity, ReplicaIdentity::Default);
        assert_eq!(c[3].key_columns, ["id"]);
        assert!(c[3]
            .new_value("body")
            .and_then(|b| b.as_str())
            .is_some_and(|b| b.len() == 16_000));
        assert_eq!(c[4].op, Operation::Update);
        assert!(c[4].old.is_none(), "the key did not change: no old row");
        assert_eq!(c[4].unchanged_toast, ["body"]);
        assert!(c[4].new_value("body").is_none());
        assert_eq!(c[4].new_value("n"), Some(&json!(1)));
        assert_eq!(
            c[5].old.as_ref().map(|o| o.len()),
            Some(1),
            "the key changed: the old key"
        );
        assert_eq!(c[5].old_value("id"), Some(&json!(1)));
        assert_eq!(c[5].new_value("id"), Some(&json!(2)));
        assert_eq!(c[6].op, Operation::Delete);
        assert_eq!(c[6].old.as_ref().map(|o| o.len()), Some(1));
        assert_eq!(c[6].key().get("id"), Some(&json!(2)));

        assert_eq!(
            (c[7].op, c[7].table.as_str()),
            (Operation::Truncate, full.as_str())
        );
        assert!(c[7].new.is_none() && c[7].old.is_none());
    }
}

mod routes {
    use super::*;
    use async_trait::async_trait;
    use herald::ports::{Capabilities, Confirmation, MessageSink, OutgoingMessage, SinkError};
    use std::sync::{Arc, Mutex};

    /// A sink that confirms everything and keeps it.
    #[derive(Debug, Default)]
    struct Recording {
        published: Mutex<Vec<OutgoingMessage>>,
    }

    #[async_trait]
    impl MessageSink for Recording {
        async fn publish(
            &self,
            batch: Vec<OutgoingMessage>,
        ) -> Result<Vec<Confirmation>, SinkError> {
            let confirmations = batch.iter().map(|_| Confirmation::Confirmed).collect();
            self.published.lock().expect("lock").extend(batch);
            Ok(confirmations)
        }

        fn capabilities(&self) -> Capabilities {
            Capabilities::none()
        }

        fn destination(&self) -> String {
            "recording".to_owned()
        }
    }

    #[tokio::test]
    async fn changes_are_forwarded_by_a_route_with_stable_ids() {
        let fx = Fixture::new("route", &[("t", "id int PRIMARY KEY")]).await;
        let sink = Arc::new(Recording::default());
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .route::<Change>()
            .to(sink.clone())
            .build()
            .expect("herald");
        let source = fx.source(&herald).build().await.expect("source");
        fx.exec(&format!("INSERT INTO {} VALUES (1), (2), (3)", fx.table(0)))
            .await;
        source.catch_up().await.expect("catch up");

        let published = sink.published.lock().expect("lock").clone();
        assert_eq!(published.len(), 3);
        for (i, message) in published.iter().enumerate() {
            let change: Change = serde_json::from_str(&message.payload).expect("a change");
            assert_eq!(change.new_value("id"), Some(&json!(i + 1)));
            assert_eq!(message.envelope.name, "herald.cdc.change");
            assert_eq!(
                message.envelope.id,
                herald_cdc::change_id(&fx.slot, change.commit_lsn, change.seq)
            );
            assert_eq!(
                message.envelope.key.as_deref(),
                Some(format!("public.{}", fx.table(0)).as_str())
            );
            assert_eq!(
                message.envelope.headers.extra.get(herald_cdc::SLOT_HEADER),
                Some(&fx.slot)
            );
            assert_eq!(message.envelope.occurred_at, change.commit_time);
        }
    }
}

mod redrive {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<AtomicBool>,
        seen: Seen,
        effects_table: String,
    }

    /// Applies each change once, with its position; refuses id 2 until the gate opens.
    #[async_handler(retry(max_attempts = 1))]
    async fn apply(
        change: Change,
        position: CdcPosition,
        State(gate): State<Gate>,
    ) -> Result<(), HandlerError> {
        gate.seen.push(change.clone());
        let id = change
            .new_value("id")
            .and_then(|v| v.as_i64())
            .unwrap_or_default();
        let mut tx = position.begin().await?;
        if id == 2 && !gate.open.load(Ordering::SeqCst) {
            return Err(HandlerError::msg("id 2 is not welcome yet"));
        }
        sqlx::query(&format!(
            "INSERT INTO {} (id) VALUES ($1)",
            gate.effects_table
        ))
        .bind(id as i32)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn effects(fx: &Fixture) -> Vec<i32> {
        sqlx::query_scalar(&format!("SELECT id FROM {} ORDER BY id", fx.table(1)))
            .fetch_all(&fx.pool)
            .await
            .expect("effects")
    }

    #[tokio::test]
    async fn a_dead_lettered_change_is_redriven_past_the_handler_position_and_duplicates_are_not_applied(
    ) {
        let fx = Fixture::new(
            "redrive",
            &[("src", "id int PRIMARY KEY"), ("fx", "id int NOT NULL")],
        )
        .await;
        let gate = Gate {
            effects_table: fx.table(1).to_owned(),
            ..Gate::default()
        };
        let herald = herald_for(module_path!(), gate.clone(), &fx.pool);
        // Only the source table is published; the effects table is not.
        let source = herald_cdc::CdcSource::builder(&herald, fx.pool.clone())
            .slot(&fx.slot)
            .publication(&fx.publication)
            .tables([fx.table(0)])
            .build()
            .await
            .expect("source");
        fx.exec(&format!("INSERT INTO {} VALUES (1), (2), (3)", fx.table(0)))
            .await;
        source.catch_up().await.expect("catch up");
        assert_eq!(effects(&fx).await, [1, 3]);
        assert_eq!(source.stats().failed, 1);

        // Re-driving the dead letter runs the handler (not "duplicate"), once.
        let dead = herald.dead_letters().list(10).await.expect("dead letters");
        assert_eq!(dead.len(), 1, "{dead:?}");
        gate.open.store(true, Ordering::SeqCst);
        let outcome = herald.redrive(dead[0].id).await.expect("redrive").await;
        assert!(outcome.is_success(), "{outcome:?}");
        assert_eq!(effects(&fx).await, [1, 2, 3]);

        // Every change delivered again (as after a crash before the source stored its position):
        // the handler's position recognises them; no effect twice.
        let mut seen = gate.seen.all();
        assert_eq!(seen.len(), 4, "id 2 twice: dead-lettered, then re-driven");
        seen.sort_by_key(|c| c.position());
        seen.dedup_by_key(|c| c.position());
        for change in &seen {
            let message = herald::StoredMessage::new(
                &{
                    let mut envelope = herald::Envelope::new(herald_cdc::CHANGE);
                    envelope.id =
                        herald_cdc::change_id(&change.slot, change.commit_lsn, change.seq);
                    envelope
                },
                serde_json::to_string(change).expect("json"),
            );
            let settlement = herald.ingest(&message).await;
            assert!(
                matches!(settlement, herald::Settlement::Done { .. }),
                "{settlement:?}"
            );
        }
        assert_eq!(effects(&fx).await, [1, 2, 3]);
        let ledger = herald.ledger();
        assert_eq!(ledger.total.deduplicated, 3, "{ledger}");
        assert!(ledger.is_balanced(), "{ledger}");
    }
}

mod retries {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Flaky {
        failures_left: Arc<AtomicU32>,
        seen: Seen,
    }

    /// Fails its first two attempts at id 1.
    #[async_handler(retry(max_attempts = 3, backoff = fixed(20ms)))]
    async fn flaky(change: Change, State(flaky): State<Flaky>) -> Result<(), HandlerError> {
        flaky.seen.push(change.clone());
        let first = change.new_value("id") == Some(&json!(1));
        if first && flaky.failures_left.fetch_sub(1, Ordering::SeqCst) > 0 {
            return Err(HandlerError::msg("not yet"));
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_retried_change_holds_back_the_next_one() {
        let fx = Fixture::new("retry", &[("t", "id int PRIMARY KEY")]).await;
        let flaky = Flaky::default();
        flaky.failures_left.store(2, Ordering::SeqCst);
        let herald = herald_for(module_path!(), flaky.clone(), &fx.pool);
        let source = fx.source(&herald).build().await.expect("source");
        fx.exec(&format!("INSERT INTO {} VALUES (1)", fx.table(0)))
            .await;
        fx.exec(&format!("INSERT INTO {} VALUES (2)", fx.table(0)))
            .await;
        let report = source.catch_up().await.expect("catch up");
        assert_eq!(report.changes, 2);
        assert_eq!(
            flaky.seen.values("id"),
            [json!(1), json!(1), json!(1), json!(2)],
            "id 2 waits until id 1 succeeded on its third attempt"
        );
        let ledger = herald.ledger();
        assert_eq!(
            (ledger.total.succeeded, ledger.total.failed_attempts),
            (2, 2),
            "{ledger}"
        );
        assert!(ledger.is_balanced(), "{ledger}");
    }
}

mod lag {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[async_handler]
    async fn record(change: Change, State(seen): State<Seen>) {
        seen.push(change);
    }

    #[tokio::test]
    async fn slot_lag_is_measured_and_an_abandoned_slot_is_named() {
        let fx = Fixture::new("lag", &[("t", "id int PRIMARY KEY, pad text")]).await;
        let seen = Seen::default();
        let herald = herald_for(module_path!(), seen.clone(), &fx.pool);
        let source = fx.source(&herald).build().await.expect("source");
        fx.exec(&format!(
            "INSERT INTO {} SELECT i, repeat('x', 200) FROM generate_series(1, 500) i",
            fx.table(0)
        ))
        .await;

        // Nothing reads the slot: it is behind by at least the rows written, and abandoned.
        let before = source.lag().await.expect("lag");
        assert_eq!(before.slot, fx.slot);
        assert_eq!(before.plugin.as_deref(), Some("pgoutput"));
        assert!(
            before.lag_bytes.expect("lag bytes") >= 100_000,
            "{before:?}"
        );
        assert!(before.retained_bytes >= before.lag_bytes, "{before:?}");
        assert!(before.abandoned() && !before.active, "{before:?}");
        let warning = before.warning().expect("an abandoned slot is reported");
        assert!(
            warning.contains(&format!("SELECT pg_drop_replication_slot('{}')", fx.slot)),
            "{warning}"
        );
        let all = herald_cdc::lag::slots(&fx.pool).await.expect("slots");
        assert!(all.iter().any(|s| s.slot == fx.slot));

        // The gauges carry the reading.
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            herald_cdc::lag::record_metrics(std::slice::from_ref(&before))
        });
        let gauges: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| {
                key.key()
                    .labels()
                    .any(|l| l.key() == "slot" && l.value() == fx.slot)
            })
            .map(|(key, _, _, value)| (key.key().name().to_owned(), value))
            .collect();
        assert!(
            gauges.contains(&(
                "herald_cdc_slot_lag_bytes".to_owned(),
                DebugValue::Gauge((before.lag_bytes.expect("lag") as f64).into())
            )),
            "{gauges:?}"
        );
        assert!(
            gauges.contains(&(
                "herald_cdc_slot_abandoned".to_owned(),
                DebugValue::Gauge(1.0.into())
            )),
            "{gauges:?}"
        );

        // Caught up: the slot is confirmed past everything written before.
        let written: String = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
            .fetch_one(&fx.pool)
            .await
            .expect("lsn");
        let written: herald_cdc::Lsn = written.parse().expect("lsn");
        let report = source.catch_up().await.expect("catch up");
        assert_eq!(report.changes, 500);
        let after = source.lag().await.expect("lag");
        assert!(
            after.confirmed_flush_lsn.expect("confirmed") >= written,
            "{after:?} vs {written}"
        );

        // A running source is its consumer, even between reads: not abandoned.
        let running = source.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            running
                .run_until(async {
                    let _ = stopped.await;
                })
                .await
        });
        eventually("the source's session", Duration::from_secs(10), || async {
            source.lag().await.expect("lag").consumer_pid.is_some()
        })
        .await;
        let during = source.lag().await.expect("lag");
        assert!(during.in_use() && during.warning().is_none(), "{during:?}");
        let _ = stop.send(());
        task.await.expect("task").expect("source");
    }
}

mod errors {
    use super::*;

    #[async_handler]
    async fn record(change: Change, State(seen): State<Seen>) {
        seen.push(change);
    }

    #[tokio::test]
    async fn setup_errors_name_the_fix() {
        let fx = Fixture::new("errors", &[("t", "id int PRIMARY KEY")]).await;
        let herald = herald_for(module_path!(), Seen::default(), &fx.pool);

        let nobody = Herald::builder()
            .handlers_under("nothing_here")
            .build()
            .expect("herald");
        let error = fx.source(&nobody).build().await.expect_err("no handler");
        assert!(matches!(error, CdcError::NoHandler), "{error}");
        assert!(error.to_string().contains("#[async_handler]"), "{error}");

        let error = herald_cdc::CdcSource::builder(&herald, fx.pool.clone())
            .slot("Bad-Name")
            .batch_size(0)
            .tables(["a.b.c"])
            .build()
            .await
            .expect_err("bad settings");
        let CdcError::Config(problems) = &error else {
            panic!("{error}")
        };
        assert_eq!(problems.len(), 4, "{problems:?}");

        let error = herald_cdc::CdcSource::builder(&herald, fx.pool.clone())
            .slot(&fx.slot)
            .publication(&fx.publication)
            .build()
            .await
            .expect_err("no publication");
        assert!(matches!(error, CdcError::NoPublication { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains(&format!("CREATE PUBLICATION {}", fx.publication)),
            "{error}"
        );

        let error = fx
            .source(&herald)
            .tables(["public.no_such_table_here"])
            .build()
            .await
            .expect_err("no table");
        assert!(
            error
                .to_string()
                .contains("no_such_table_here` does not exist"),
            "{error}"
        );

        let error = fx
            .source(&herald)
            .create_slot(false)
            .build()
            .await
            .expect_err("no slot");
        assert!(matches!(error, CdcError::NoSlot { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains("pg_create_logical_replication_slot"),
            "{error}"
        );
        assert!(!error.is_transient());

        // A slot taken by another session: the second source is told, and would wait.
        let source = fx.source(&herald).build().await.expect("source");
        let holder = source.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            holder
                .run_until(async {
                    let _ = stopped.await;
                })
                .await
        });
        eventually(
            "the first source's session",
            Duration::from_secs(10),
            || async { source.lag().await.expect("lag").consumer_pid.is_some() },
        )
        .await;
        let error = source.catch_up().await.expect_err("busy");
        assert!(
            matches!(error, CdcError::SlotBusy { pid: Some(_), .. }),
            "{error}"
        );
        assert!(error.is_transient());
        let _ = stop.send(());
        task.await.expect("task").expect("source");
    }
}
