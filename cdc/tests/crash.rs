//! Crashes and lost connections mid-stream, on the machine's real PostgreSQL
//! (`HERALD_TEST_DATABASE_URL`, `wal_level = logical`; fails, never skips, when it is missing).
//!
//! - kill -9: a source runs in a child process (this test binary again) whose handler commits its
//!   effect and its [`CdcPosition`] in one transaction. The first child kills itself with SIGKILL
//!   right after one change's effect committed (before the source stored its own position: the
//!   window where a change is delivered again); a second child is killed with SIGKILL by the test
//!   at whatever point it has reached; then a source in this process resumes. Every change has
//!   its effect exactly once, none is missing, in commit order.
//! - a dropped connection: the session of a running source is terminated with
//!   `pg_terminate_backend` (PostgreSQL itself is shared and is not restarted); the source
//!   connects again and resumes with no gap and no effect twice.

mod common;

use common::*;
use herald::sqlx;
use herald::{async_handler, HandlerError, Herald, State};
use herald_cdc::{CdcPosition, Change};
use std::process::{Command, Stdio};
use std::time::Duration;

const ROWS: i64 = 300;
const PER_TRANSACTION: i64 = 10;
const CHILD_ENV: &str = "HERALD_CDC_CRASH_CHILD";

/// Where the effects go, and the id after whose effect the process kills itself (a child's).
#[derive(Clone, Debug)]
struct Effects {
    table: String,
    die_after: Option<i64>,
}

/// Slow enough to be interrupted mid-stream; the effect and the position commit together.
#[async_handler]
async fn apply(
    change: Change,
    position: CdcPosition,
    State(effects): State<Effects>,
) -> Result<(), HandlerError> {
    tokio::time::sleep(Duration::from_millis(3)).await;
    let id = change
        .new_value("id")
        .and_then(|v| v.as_i64())
        .ok_or_else(|| HandlerError::permanent(HandlerError::msg("no id")))?;
    let mut tx = position.begin().await?;
    sqlx::query(&format!(
        "INSERT INTO {} (id, lsn, seq) VALUES ($1, $2, $3)",
        effects.table
    ))
    .bind(id)
    .bind(change.commit_lsn.to_string())
    .bind(i64::from(change.seq))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if effects.die_after == Some(id) {
        // kill -9 of this very process: the effect is committed, the source has not stored its
        // position for this change yet.
        let _ = Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        std::future::pending::<()>().await;
    }
    Ok(())
}

fn service(pool: &sqlx::PgPool, effects: &str, die_after: Option<i64>) -> Herald {
    Herald::builder()
        .handlers_under(module_path!())
        .state(pool.clone())
        .state(Effects {
            table: effects.to_owned(),
            die_after,
        })
        .build()
        .expect("herald")
}

fn spawn_child(fx: &Fixture, die_after: Option<i64>) -> std::process::Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(
            CHILD_ENV,
            format!(
                "{},{},{},{},{}",
                fx.slot,
                fx.publication,
                fx.table(0),
                fx.table(1),
                die_after.unwrap_or(0)
            ),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("child")
}

/// Each id's effect (id, its change's LSN, its seq), by id.
async fn effect_rows(fx: &Fixture) -> Vec<(i64, String, i64)> {
    sqlx::query_as(&format!(
        "SELECT id, lsn, seq FROM {} ORDER BY id",
        fx.table(1)
    ))
    .fetch_all(&fx.pool)
    .await
    .expect("effects")
}

async fn insert_rows(fx: &Fixture, from: i64, to: i64) {
    let mut id = from;
    while id <= to {
        let last = (id + PER_TRANSACTION - 1).min(to);
        fx.exec(&format!(
            "INSERT INTO {} SELECT i FROM generate_series({id}, {last}) i",
            fx.table(0)
        ))
        .await;
        id = last + 1;
    }
}

/// (effects, distinct ids with an effect).
async fn counts(fx: &Fixture) -> (i64, i64) {
    sqlx::query_as(&format!(
        "SELECT count(*), count(DISTINCT id) FROM {}",
        fx.table(1)
    ))
    .fetch_one(&fx.pool)
    .await
    .expect("counts")
}

/// The child's part: run the source (and be killed while at it).
#[tokio::test]
async fn crash_child() {
    let Ok(names) = std::env::var(CHILD_ENV) else {
        return; // Only the child process runs this.
    };
    let names: Vec<String> = names.split(',').map(str::to_owned).collect();
    let [slot, publication, source_table, effects, die_after] = &names[..] else {
        panic!("{CHILD_ENV} = slot,publication,table,effects,die_after");
    };
    let die_after = die_after.parse::<i64>().ok().filter(|id| *id > 0);
    let borrowed = Fixture::from_names(slot, publication, std::slice::from_ref(source_table)).await;
    let herald = service(&borrowed.pool, effects, die_after);
    let source = borrowed.source(&herald).build().await.expect("source");
    let result = source.run_until(std::future::pending()).await;
    panic!("the child was meant to be killed, the source ended: {result:?}");
}

#[tokio::test]
async fn a_kill_9_mid_stream_resumes_with_no_gap_and_no_effect_twice() {
    let fx = Fixture::new(
        "kill",
        &[
            ("src", "id bigint PRIMARY KEY"),
            (
                "fx",
                "id bigint NOT NULL, lsn text NOT NULL, seq bigint NOT NULL",
            ),
        ],
    )
    .await;
    let herald = service(&fx.pool, fx.table(1), None);
    // Publication and slot first, so that the rows below are all in the slot.
    let source = herald_cdc::CdcSource::builder(&herald, fx.pool.clone())
        .slot(&fx.slot)
        .publication(&fx.publication)
        .tables([fx.table(0)])
        .idle_wait(Duration::from_millis(50))
        .build()
        .await
        .expect("source");
    insert_rows(&fx, 1, ROWS).await;

    // 1. The child kills itself right after id 100's effect committed.
    let die_after = 100;
    let status = spawn_child(&fx, Some(die_after))
        .wait()
        .expect("child status");
    assert!(
        !status.success(),
        "the first child killed itself: {status:?}"
    );
    let rows = effect_rows(&fx).await;
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=die_after).collect::<Vec<_>>(),
        "the first child applied ids 1..={die_after}, each once"
    );
    // The source's own position is one change behind the effects: id 100 will be delivered again.
    let stored = source.position().await.expect("position").expect("stored");
    let (_, lsn_99, seq_99) = &rows[rows.len() - 2];
    assert_eq!(
        (stored.0.to_string(), i64::from(stored.1)),
        (lsn_99.clone(), *seq_99)
    );

    // 2. A second child resumes, and is killed by us at whatever point it has reached.
    let mut child = spawn_child(&fx, None);
    eventually(
        "the second child to apply some changes",
        Duration::from_secs(60),
        || async { counts(&fx).await.0 >= die_after + 50 },
    )
    .await;
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("child status");
    assert!(!status.success(), "the second child was killed: {status:?}");
    let (applied, _) = counts(&fx).await;
    assert!(
        applied < ROWS,
        "the kill came mid-stream ({applied} of {ROWS} applied)"
    );

    // 3. More changes while no one reads, then resume here (the child's session may still be
    // closing: the source waits for the slot).
    insert_rows(&fx, ROWS + 1, ROWS + 50).await;
    let running = source.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        running
            .run_until(async {
                let _ = stopped.await;
            })
            .await
    });
    eventually("every change applied", Duration::from_secs(120), || async {
        counts(&fx).await.1 >= ROWS + 50
    })
    .await;
    // Let a duplicate (if any) land before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(());
    task.await.expect("task").expect("source");

    let (effects, distinct) = counts(&fx).await;
    assert_eq!(
        (effects, distinct),
        (ROWS + 50, ROWS + 50),
        "every change exactly once in effect"
    );
    // In commit order: each effect's position grows with its id.
    let parsed: Vec<(herald_cdc::Lsn, i64)> = effect_rows(&fx)
        .await
        .iter()
        .map(|(_, lsn, seq)| (lsn.parse().expect("lsn"), *seq))
        .collect();
    assert!(
        parsed.windows(2).all(|w| w[0] < w[1]),
        "effects follow commit order"
    );
    let stored = source
        .position()
        .await
        .expect("position")
        .expect("a stored position");
    assert_eq!(
        (stored.0, i64::from(stored.1)),
        *parsed.last().expect("last")
    );
}

#[tokio::test]
async fn a_terminated_session_reconnects_and_resumes_with_no_gap() {
    let fx = Fixture::new(
        "term",
        &[
            ("src", "id bigint PRIMARY KEY"),
            (
                "fx",
                "id bigint NOT NULL, lsn text NOT NULL, seq bigint NOT NULL",
            ),
        ],
    )
    .await;
    let herald = service(&fx.pool, fx.table(1), None);
    let source = herald_cdc::CdcSource::builder(&herald, fx.pool.clone())
        .slot(&fx.slot)
        .publication(&fx.publication)
        .tables([fx.table(0)])
        .idle_wait(Duration::from_millis(50))
        .build()
        .await
        .expect("source");
    insert_rows(&fx, 1, ROWS).await;
    let running = source.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        running
            .run_until(async {
                let _ = stopped.await;
            })
            .await
    });

    let terminate = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'herald-cdc:{}'",
        fx.slot
    );
    for (round, threshold) in [(1, ROWS / 4), (2, ROWS / 2)] {
        eventually("changes applied", Duration::from_secs(60), || async {
            counts(&fx).await.0 >= threshold
        })
        .await;
        eventually("the source's session", Duration::from_secs(30), || async {
            source.lag().await.expect("lag").consumer_pid.is_some()
        })
        .await;
        let terminated: i64 = sqlx::query_scalar(&terminate)
            .fetch_one(&fx.pool)
            .await
            .expect("terminate");
        assert_eq!(
            terminated, 1,
            "round {round}: the source's session was terminated"
        );
        eventually(
            "the source to reconnect",
            Duration::from_secs(30),
            || async { source.stats().reconnects >= round },
        )
        .await;
    }
    eventually("every change applied", Duration::from_secs(120), || async {
        counts(&fx).await.1 >= ROWS
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(());
    task.await.expect("task").expect("source");
    assert_eq!(
        counts(&fx).await,
        (ROWS, ROWS),
        "every change exactly once in effect"
    );
    let stats = source.stats();
    assert!(stats.reconnects >= 2, "{stats:?}");
}
