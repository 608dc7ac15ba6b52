//! Outbox end to end: commit → handler done, SQLite and PostgreSQL, batch sizes 1 and 100, one and
//! two relays, beside a plain `SKIP LOCKED` polling loop (no Herald) as the baseline.
//!
//! `cargo bench --bench outbox --all-features` (100,000 events; batch-1 rows use 10,000).
//! `HERALD_BENCH_N=10000` for a quick run. PostgreSQL: `HERALD_TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`), schema `herald_bench`.

use herald::outbox::{self, SqliteOutbox};
use herald::sqlx::{self, Row};
use herald::{async_handler, Event, Herald, State};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "bench.outbox.item")]
struct Item {
    n: u64,
}

#[derive(Clone, Default)]
struct Done(Arc<AtomicU64>);

#[async_handler]
async fn count(_item: Item, State(done): State<Done>) {
    done.0.fetch_add(1, Ordering::Relaxed);
}

const TX_SIZE: u64 = 100;

fn herald(done: &Done) -> Herald {
    Herald::builder()
        .handlers_under(module_path!())
        .state(done.clone())
        .build()
        .expect("registry")
}

async fn wait_for(done: &Done, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while done.0.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "benchmark stalled");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn sqlite_herald(n: u64, batch: usize, relays: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = outbox::sqlite::connect(dir.path().join("bench.db"))
        .await
        .expect("open");
    let outbox = SqliteOutbox::new(pool.clone()).await.expect("migrate");
    let done = Done::default();
    let herald = herald(&done);
    let started = Instant::now();
    let running: Vec<_> = (0..relays)
        .map(|_| {
            outbox
                .relay(&herald)
                .batch_size(batch)
                .poll_interval(Duration::from_millis(1))
                .start()
        })
        .collect();
    for chunk in 0..n / TX_SIZE {
        let mut tx = pool.begin().await.expect("begin");
        for i in 0..TX_SIZE {
            outbox
                .publish(
                    &mut tx,
                    Item {
                        n: chunk * TX_SIZE + i,
                    },
                )
                .await
                .expect("publish");
        }
        tx.commit().await.expect("commit");
    }
    wait_for(&done, n).await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    for relay in running {
        relay.stop().await;
    }
    rate
}

async fn sqlite_baseline(n: u64, batch: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = outbox::sqlite::connect(dir.path().join("plain.db"))
        .await
        .expect("open");
    sqlx::query(
        "CREATE TABLE plain (id INTEGER PRIMARY KEY AUTOINCREMENT, payload TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0)",
    )
    .execute(&pool)
    .await
    .expect("table");
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let consumer = {
        let pool = pool.clone();
        let done = done.clone();
        tokio::spawn(async move {
            while done.load(Ordering::Relaxed) < n {
                let rows = sqlx::query(
                    "UPDATE plain SET done = 1 WHERE id IN
                        (SELECT id FROM plain WHERE done = 0 ORDER BY id LIMIT ?1) RETURNING payload",
                )
                .bind(batch as i64)
                .fetch_all(&pool)
                .await
                .expect("poll");
                if rows.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                for row in rows {
                    let item: Item =
                        serde_json::from_str(row.get::<&str, _>("payload")).expect("payload");
                    std::hint::black_box(item);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    for chunk in 0..n / TX_SIZE {
        let mut tx = pool.begin().await.expect("begin");
        for i in 0..TX_SIZE {
            sqlx::query("INSERT INTO plain (payload) VALUES (?1)")
                .bind(
                    serde_json::to_string(&Item {
                        n: chunk * TX_SIZE + i,
                    })
                    .expect("json"),
                )
                .execute(&mut *tx)
                .await
                .expect("insert");
        }
        tx.commit().await.expect("commit");
    }
    consumer.await.expect("consumer");
    n as f64 / started.elapsed().as_secs_f64()
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use herald::outbox::PgOutbox;
    use herald::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use herald::sqlx::PgPool;
    use std::str::FromStr;

    pub(crate) async fn pool() -> PgPool {
        let url = std::env::var("HERALD_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let options = PgConnectOptions::from_str(&url).expect("url");
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e}"));
        sqlx::raw_sql("DROP SCHEMA IF EXISTS herald_bench CASCADE; CREATE SCHEMA herald_bench;")
            .execute(&admin)
            .await
            .expect("schema");
        admin.close().await;
        PgPoolOptions::new()
            .max_connections(16)
            .connect_with(options.options([("search_path", "herald_bench")]))
            .await
            .expect("pool")
    }

    pub(crate) async fn herald_run(n: u64, batch: usize, relays: usize) -> f64 {
        let pool = pool().await;
        let outbox = PgOutbox::new(pool.clone()).await.expect("migrate");
        let done = Done::default();
        let herald = herald(&done);
        let started = Instant::now();
        let running: Vec<_> = (0..relays)
            .map(|_| outbox.relay(&herald).batch_size(batch).start())
            .collect();
        for chunk in 0..n / TX_SIZE {
            let mut tx = pool.begin().await.expect("begin");
            for i in 0..TX_SIZE {
                outbox
                    .publish(
                        &mut tx,
                        Item {
                            n: chunk * TX_SIZE + i,
                        },
                    )
                    .await
                    .expect("publish");
            }
            tx.commit().await.expect("commit");
        }
        wait_for(&done, n).await;
        let rate = n as f64 / started.elapsed().as_secs_f64();
        for relay in running {
            relay.stop().await;
        }
        rate
    }

    pub(crate) async fn baseline(n: u64, batch: usize) -> f64 {
        let pool = pool().await;
        sqlx::query(
            "CREATE TABLE plain (id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL, done BOOLEAN NOT NULL DEFAULT false)",
        )
        .execute(&pool)
        .await
        .expect("table");
        sqlx::query("CREATE INDEX plain_todo ON plain (id) WHERE NOT done")
            .execute(&pool)
            .await
            .expect("index");
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let consumer = {
            let pool = pool.clone();
            let done = done.clone();
            tokio::spawn(async move {
                while done.load(Ordering::Relaxed) < n {
                    let rows = sqlx::query(
                        "UPDATE plain SET done = true WHERE id IN
                            (SELECT id FROM plain WHERE NOT done ORDER BY id LIMIT $1
                             FOR UPDATE SKIP LOCKED) RETURNING payload",
                    )
                    .bind(batch as i64)
                    .fetch_all(&pool)
                    .await
                    .expect("poll");
                    if rows.is_empty() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    for row in rows {
                        let item: Item =
                            serde_json::from_str(row.get::<&str, _>("payload")).expect("payload");
                        std::hint::black_box(item);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        for chunk in 0..n / TX_SIZE {
            let mut tx = pool.begin().await.expect("begin");
            for i in 0..TX_SIZE {
                sqlx::query("INSERT INTO plain (payload) VALUES ($1)")
                    .bind(
                        serde_json::to_string(&Item {
                            n: chunk * TX_SIZE + i,
                        })
                        .expect("json"),
                    )
                    .execute(&mut *tx)
                    .await
                    .expect("insert");
            }
            tx.commit().await.expect("commit");
        }
        consumer.await.expect("consumer");
        n as f64 / started.elapsed().as_secs_f64()
    }
}

fn row(backend: &str, what: &str, batch: usize, relays: &str, n: u64, rate: f64) {
    println!("| {backend:<10} | {what:<22} | {batch:>5} | {relays:>6} | {n:>7} | {rate:>10.0} |");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::var("HERALD_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
        .max(TX_SIZE);
    // Batch size 1 makes two round trips per event: run it on a tenth to keep the suite short.
    let n_small = (n / 10).max(TX_SIZE);
    println!("outbox end to end: commit -> handler done (producer commits {TX_SIZE} events per transaction)");
    println!("| backend    | what                   | batch | relays |  events |   events/s |");
    println!("|------------|------------------------|-------|--------|---------|------------|");
    for (batch, events) in [(1, n_small), (100, n)] {
        for relays in [1, 2] {
            let rate = sqlite_herald(events, batch, relays).await;
            row(
                "sqlite",
                "herald relay",
                batch,
                &relays.to_string(),
                events,
                rate,
            );
        }
        let rate = sqlite_baseline(events, batch).await;
        row("sqlite", "plain polling loop", batch, "1", events, rate);
    }
    #[cfg(feature = "postgres")]
    for (batch, events) in [(1, n_small), (100, n)] {
        for relays in [1, 2] {
            let rate = pg::herald_run(events, batch, relays).await;
            row(
                "postgres",
                "herald relay",
                batch,
                &relays.to_string(),
                events,
                rate,
            );
        }
        let rate = pg::baseline(events, batch).await;
        row(
            "postgres",
            "plain SKIP LOCKED loop",
            batch,
            "1",
            events,
            rate,
        );
    }
    #[cfg(not(feature = "postgres"))]
    println!("(PostgreSQL rows need `--features postgres`)");
}
