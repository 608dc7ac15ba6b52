//! Outbox end to end: commit → handler done, SQLite and PostgreSQL, batch sizes 1 and 100, one and
//! two relays, beside a plain `SKIP LOCKED` polling loop (no Herald) as the baseline.
//!
//! `cargo bench --bench outbox --all-features` (100,000 events; batch-1 rows use 10,000, and so
//! does the one-event-per-transaction producer, `1-tx`).
//! `HERALD_BENCH_N=10000` for a quick run, `HERALD_BENCH_ONLY=sqlite|postgres` for one backend,
//! `HERALD_BENCH_PRODUCER=1-tx|1-row|bulk` for one producer shape, `HERALD_BENCH_RUNS=3` to repeat
//! each row (medians are printed with every run's figure). `HERALD_BENCH_PREFILL=1` (SQLite
//! only): every row is committed (in `bulk` transactions) before the relay or loop starts and the
//! clock runs from there, so it times the consumer alone, with no producer holding the write lock.
//! The producer (one INSERT per event, `publish_all`, or one event per transaction) is the same
//! for Herald and the baseline. `benches/peers/graphile-worker/` runs the `1-tx` shape on
//! graphile-worker, for comparison (optional, Node.js; see its README).
//! PostgreSQL: `HERALD_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`),
//! schema `herald_bench`.

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

/// One event of the latency measure: `n` indexes the commit and start times.
#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "bench.outbox.ping")]
struct Ping {
    n: usize,
}

/// When each ping's transaction committed (as seen by the producer) and its handler started.
#[derive(Clone)]
struct Times {
    committed: Arc<Vec<std::sync::OnceLock<Instant>>>,
    started: Arc<Vec<std::sync::OnceLock<Instant>>>,
}

impl Times {
    fn new(n: usize) -> Self {
        let slots = || Arc::new((0..n).map(|_| std::sync::OnceLock::new()).collect());
        Times {
            committed: slots(),
            started: slots(),
        }
    }

    /// Commit → handler start of every ping, sorted, in microseconds (a handler that started
    /// before the producer's `commit()` returned counts 0).
    fn latencies(&self) -> Vec<u64> {
        let mut all: Vec<u64> = self
            .committed
            .iter()
            .zip(self.started.iter())
            .map(|(committed, started)| {
                let (Some(c), Some(s)) = (committed.get(), started.get()) else {
                    panic!("a ping was not handled");
                };
                u64::try_from(s.saturating_duration_since(*c).as_micros()).unwrap_or(u64::MAX)
            })
            .collect();
        all.sort_unstable();
        all
    }
}

#[async_handler]
async fn ping_started(ping: Ping, State(times): State<Times>) {
    let _ = times.started[ping.n].set(Instant::now());
}

const TX_SIZE: u64 = 100;

/// How the producer writes its events: the same for Herald and the baseline.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Producer {
    /// 100 events per transaction, one `INSERT` per event (`publish`).
    OneRow,
    /// 100 events per transaction in one multi-row `INSERT` (`publish_all`).
    Bulk,
    /// One event per transaction (`BEGIN; publish; COMMIT`): the everyday shape of an outbox (a
    /// request commits one order and its event). Each commit waits for its own WAL flush on
    /// PostgreSQL.
    PerTransaction,
}

impl Producer {
    fn label(self) -> &'static str {
        match self {
            Producer::OneRow => "1-row",
            Producer::Bulk => "bulk",
            Producer::PerTransaction => "1-tx",
        }
    }

    /// Events per transaction.
    fn tx_size(self) -> u64 {
        match self {
            Producer::OneRow | Producer::Bulk => TX_SIZE,
            Producer::PerTransaction => 1,
        }
    }
}

/// The events of transaction `chunk`.
fn items(producer: Producer, chunk: u64) -> impl Iterator<Item = Item> {
    let size = producer.tx_size();
    (0..size).map(move |i| Item {
        n: chunk * size + i,
    })
}

fn payloads(producer: Producer, chunk: u64) -> Vec<String> {
    items(producer, chunk)
        .map(|item| serde_json::to_string(&item).expect("json"))
        .collect()
}

fn herald(done: &Done) -> Herald {
    Herald::builder()
        .handlers_under(module_path!())
        .state(done.clone())
        .state(Times::new(0))
        .build()
        .expect("registry")
}

/// Latency: one event per transaction at `rate` per second, the relay at its default poll
/// interval (100 ms); prints p50/p90/p99/max of commit → handler start.
async fn latency_run<D, P>(
    backend: &str,
    outbox: &herald::outbox::SqlOutbox<D>,
    begin: P,
    n: usize,
    rate: u64,
) where
    D: herald::outbox::Dialect,
    P: AsyncFn() -> sqlx::Transaction<'static, D>,
    for<'c> &'c mut sqlx::Transaction<'static, D>: herald::outbox::OutboxConnection<D>,
{
    let times = Times::new(n);
    let herald = Herald::builder()
        .handlers_under(module_path!())
        .state(Done::default())
        .state(times.clone())
        .build()
        .expect("registry");
    let relay = outbox.relay(&herald).batch_size(100).start();
    // Let the relay reach its idle wait first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tick = Duration::from_micros(1_000_000 / rate.max(1));
    let mut next = tokio::time::Instant::now();
    for i in 0..n {
        next += tick;
        tokio::time::sleep_until(next).await;
        let mut tx = begin().await;
        outbox
            .publish(&mut tx, Ping { n: i })
            .await
            .expect("publish");
        tx.commit().await.expect("commit");
        let _ = times.committed[i].set(Instant::now());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while times.started.iter().any(|s| s.get().is_none()) {
        assert!(Instant::now() < deadline, "latency run stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    relay.stop().await;
    herald.shutdown(Duration::from_secs(5)).await;
    let all = times.latencies();
    let at = |q: f64| all[((all.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    println!(
        "| {backend:<8} | {n:>6} | {rate:>7} | {:>8.2} | {:>8.2} | {:>8.2} | {:>8.2} |",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

async fn wait_for(done: &Done, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while done.0.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "benchmark stalled");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn sqlite_herald(n: u64, batch: usize, relays: usize, producer: Producer) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = outbox::sqlite::connect(dir.path().join("bench.db"))
        .await
        .expect("open");
    let outbox = SqliteOutbox::new(pool.clone()).await.expect("migrate");
    let done = Done::default();
    let herald = herald(&done);
    let prefill = std::env::var("HERALD_BENCH_PREFILL").is_ok();
    let mut started = Instant::now();
    if prefill {
        for chunk in 0..n / producer.tx_size() {
            let mut tx = pool.begin().await.expect("begin");
            outbox
                .publish_all(&mut tx, items(producer, chunk))
                .await
                .expect("publish_all");
            tx.commit().await.expect("commit");
        }
        started = Instant::now();
    }
    let running: Vec<_> = (0..relays)
        .map(|_| {
            outbox
                .relay(&herald)
                .batch_size(batch)
                .poll_interval(Duration::from_millis(1))
                .start()
        })
        .collect();
    for chunk in 0..if prefill { 0 } else { n / producer.tx_size() } {
        let mut tx = pool.begin().await.expect("begin");
        match producer {
            Producer::OneRow | Producer::PerTransaction => {
                for item in items(producer, chunk) {
                    outbox.publish(&mut tx, item).await.expect("publish");
                }
            }
            Producer::Bulk => {
                outbox
                    .publish_all(&mut tx, items(producer, chunk))
                    .await
                    .expect("publish_all");
            }
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

async fn sqlite_baseline(n: u64, batch: usize, producer: Producer) -> f64 {
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
    // The same partial index as the PostgreSQL baseline: without it each poll walks every done
    // row first, and the loop slows down as the table grows (16k events/s at 100,000 events).
    sqlx::query("CREATE INDEX plain_todo ON plain (id) WHERE done = 0")
        .execute(&pool)
        .await
        .expect("index");
    let done = Arc::new(AtomicU64::new(0));
    let prefill = std::env::var("HERALD_BENCH_PREFILL").is_ok();
    let fill = async |pool: &sqlx::SqlitePool| {
        for chunk in 0..n / producer.tx_size() {
            let mut tx = pool.begin().await.expect("begin");
            let mut insert = sqlx::QueryBuilder::new("INSERT INTO plain (payload) ");
            insert.push_values(payloads(producer, chunk), |mut row, payload| {
                row.push_bind(payload);
            });
            insert.build().execute(&mut *tx).await.expect("insert");
            tx.commit().await.expect("commit");
        }
    };
    if prefill {
        fill(&pool).await;
    }
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
    for chunk in 0..if prefill { 0 } else { n / producer.tx_size() } {
        let mut tx = pool.begin().await.expect("begin");
        match producer {
            Producer::OneRow | Producer::PerTransaction => {
                for payload in payloads(producer, chunk) {
                    sqlx::query("INSERT INTO plain (payload) VALUES (?1)")
                        .bind(payload)
                        .execute(&mut *tx)
                        .await
                        .expect("insert");
                }
            }
            Producer::Bulk => {
                let mut insert = sqlx::QueryBuilder::new("INSERT INTO plain (payload) ");
                insert.push_values(payloads(producer, chunk), |mut row, payload| {
                    row.push_bind(payload);
                });
                insert.build().execute(&mut *tx).await.expect("insert");
            }
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

    pub(crate) async fn herald_run(n: u64, batch: usize, relays: usize, producer: Producer) -> f64 {
        let pool = pool().await;
        let outbox = PgOutbox::new(pool.clone()).await.expect("migrate");
        let done = Done::default();
        let herald = herald(&done);
        let started = Instant::now();
        let running: Vec<_> = (0..relays)
            .map(|_| outbox.relay(&herald).batch_size(batch).start())
            .collect();
        for chunk in 0..n / producer.tx_size() {
            let mut tx = pool.begin().await.expect("begin");
            match producer {
                Producer::OneRow | Producer::PerTransaction => {
                    for item in items(producer, chunk) {
                        outbox.publish(&mut tx, item).await.expect("publish");
                    }
                }
                Producer::Bulk => {
                    outbox
                        .publish_all(&mut tx, items(producer, chunk))
                        .await
                        .expect("publish_all");
                }
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

    pub(crate) async fn baseline(n: u64, batch: usize, producer: Producer) -> f64 {
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
        for chunk in 0..n / producer.tx_size() {
            let mut tx = pool.begin().await.expect("begin");
            match producer {
                Producer::OneRow | Producer::PerTransaction => {
                    for payload in payloads(producer, chunk) {
                        sqlx::query("INSERT INTO plain (payload) VALUES ($1)")
                            .bind(payload)
                            .execute(&mut *tx)
                            .await
                            .expect("insert");
                    }
                }
                Producer::Bulk => {
                    let mut insert = sqlx::QueryBuilder::new("INSERT INTO plain (payload) ");
                    insert.push_values(payloads(producer, chunk), |mut row, payload| {
                        row.push_bind(payload);
                    });
                    insert.build().execute(&mut *tx).await.expect("insert");
                }
            }
            tx.commit().await.expect("commit");
        }
        consumer.await.expect("consumer");
        n as f64 / started.elapsed().as_secs_f64()
    }
}

/// Prints a table row: the median rate of the runs, then every run's rate.
fn row(backend: &str, what: &str, case: &Case, relays: usize, n: u64, rates: &[f64]) {
    let producer = case.producer.label();
    let batch = case.batch;
    let mut sorted = rates.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let runs: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    println!(
        "| {backend:<8} | {what:<22} | {producer:<8} | {batch:>5} | {relays:>6} | {n:>7} | {median:>10.0} | {} |",
        runs.join(", ")
    );
}

/// One row group per backend: Herald with each relay count, then the baseline.
struct Case {
    batch: usize,
    producer: Producer,
    relays: &'static [usize],
}

/// The rows measured per backend. Batch 1 makes two round trips per event and `1-tx` waits for a
/// WAL flush per event on PostgreSQL, so they run on a tenth of the events (at most 10,000).
const CASES: [Case; 4] = [
    Case {
        batch: 1,
        producer: Producer::Bulk,
        relays: &[1, 2],
    },
    Case {
        batch: 100,
        producer: Producer::OneRow,
        relays: &[1],
    },
    Case {
        batch: 100,
        producer: Producer::Bulk,
        relays: &[1, 2],
    },
    Case {
        batch: 100,
        producer: Producer::PerTransaction,
        relays: &[1],
    },
];

impl Case {
    fn events(&self, n: u64) -> u64 {
        if self.batch == 1 || self.producer == Producer::PerTransaction {
            (n / 10).clamp(TX_SIZE, 10_000)
        } else {
            n
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let n: u64 = env("HERALD_BENCH_N")
        .parse()
        .unwrap_or(100_000)
        .max(TX_SIZE);
    // `HERALD_BENCH_ONLY=postgres` (or `sqlite`) runs one backend.
    let only = env("HERALD_BENCH_ONLY");
    // `HERALD_BENCH_PRODUCER=1-tx` (or `1-row`, `bulk`) runs one producer shape and no latency
    // table; `HERALD_BENCH_PRODUCER=latency` runs the latency table alone.
    let producer_only = env("HERALD_BENCH_PRODUCER");
    // `HERALD_BENCH_RUNS=3`: each row group that many times, Herald and baseline alternating.
    let runs: usize = env("HERALD_BENCH_RUNS").parse().unwrap_or(1).max(1);
    let cases: Vec<&Case> = CASES
        .iter()
        .filter(|case| producer_only.is_empty() || case.producer.label() == producer_only)
        .collect();
    println!(
        "outbox end to end: commit -> handler done (1-row = 100 INSERTs per transaction, \
              bulk = one multi-row INSERT of 100 per transaction / publish_all, \
              1-tx = one event per transaction); events/s is the median of {runs} run(s)"
    );
    println!(
        "| backend  | what                   | producer | batch | relays |  events |   events/s | runs |"
    );
    println!(
        "|----------|------------------------|----------|-------|--------|---------|------------|------|"
    );
    if only.is_empty() || only == "sqlite" {
        for case in &cases {
            let n = case.events(n);
            let mut herald_rates = vec![Vec::new(); case.relays.len()];
            let mut baseline_rates = Vec::new();
            for _ in 0..runs {
                for (i, &relays) in case.relays.iter().enumerate() {
                    herald_rates[i].push(sqlite_herald(n, case.batch, relays, case.producer).await);
                }
                baseline_rates.push(sqlite_baseline(n, case.batch, case.producer).await);
            }
            for (rates, &relays) in herald_rates.iter().zip(case.relays) {
                row("sqlite", "herald relay", case, relays, n, rates);
            }
            row("sqlite", "plain polling loop", case, 1, n, &baseline_rates);
        }
    }
    #[cfg(feature = "postgres")]
    if only.is_empty() || only == "postgres" {
        for case in &cases {
            let n = case.events(n);
            let mut herald_rates = vec![Vec::new(); case.relays.len()];
            let mut baseline_rates = Vec::new();
            for _ in 0..runs {
                for (i, &relays) in case.relays.iter().enumerate() {
                    herald_rates[i]
                        .push(pg::herald_run(n, case.batch, relays, case.producer).await);
                }
                baseline_rates.push(pg::baseline(n, case.batch, case.producer).await);
            }
            for (rates, &relays) in herald_rates.iter().zip(case.relays) {
                row("postgres", "herald relay", case, relays, n, rates);
            }
            row(
                "postgres",
                "plain SKIP LOCKED loop",
                case,
                1,
                n,
                &baseline_rates,
            );
        }
    }
    #[cfg(not(feature = "postgres"))]
    println!("(PostgreSQL rows need `--features postgres`)");
    if !producer_only.is_empty() && producer_only != "latency" {
        return;
    }

    // Commit → handler start, one event per transaction at 1,000 events/s (same run, both backends).
    let pings = usize::try_from((n / 20).clamp(500, 5_000)).unwrap_or(5_000);
    println!();
    println!("commit -> handler start latency (one event per transaction, relay at its default 100 ms poll interval), ms");
    println!("| backend  | events |  ev/s   |      p50 |      p90 |      p99 |      max |");
    println!("|----------|--------|---------|----------|----------|----------|----------|");
    if only.is_empty() || only == "sqlite" {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = outbox::sqlite::connect(dir.path().join("latency.db"))
            .await
            .expect("open");
        let sqlite = SqliteOutbox::new(pool.clone()).await.expect("migrate");
        let begin = async || pool.begin().await.expect("begin");
        latency_run("sqlite", &sqlite, begin, pings, 1_000).await;
    }
    #[cfg(feature = "postgres")]
    if only.is_empty() || only == "postgres" {
        let pool = pg::pool().await;
        let postgres = herald::outbox::PgOutbox::new(pool.clone())
            .await
            .expect("migrate");
        let begin = async || pool.begin().await.expect("begin");
        latency_run("postgres", &postgres, begin, pings, 1_000).await;
    }
}
