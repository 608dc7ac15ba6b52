//! Dispatcher benchmarks (issue 4): throughput, I/O-bound fan-out, overload, memory and latency, each
//! printed beside its baseline from the same run.
//!
//! ```text
//! cargo bench --bench dispatch                       # full run, about four minutes
//! HERALD_BENCH_QUICK=1 cargo bench --bench dispatch  # scaled down, about half a minute
//! ```
//!
//! Every measurement runs in a fresh child process (this binary re-executes itself with
//! `--child <workload>`), so peak RSS (`VmHWM`) and allocator state never mix between workloads. Each
//! child uses a multi-thread tokio runtime with 2 workers, and the producer runs as a task on that
//! runtime (not on the `block_on` thread), so Herald and the baselines get the same two threads.
//! See `docs/BENCHMARKS.md` for the figures and where the time goes.

use herald::{async_handler, Event, Herald, Overload, PoolConfig, PublishError, State};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// W1's pool: 64 handlers at once, a queue of 1,024, `Wait`.
const CONCURRENCY: usize = 64;
const QUEUE: usize = 1024;
/// W2: handlers that wait 20 ms, 1,000 at once.
const W2_CONCURRENCY: usize = 1000;
const W2_WAIT: Duration = Duration::from_millis(20);
/// W3: a pool of 8 handlers that each take 2 ms (at most 4,000/s), fed 16 messages per millisecond
/// tick (8,000/s): twice as fast as the pool.
const W3_CONCURRENCY: usize = 8;
const W3_QUEUE: usize = 256;
const W3_WORK: Duration = Duration::from_millis(2);
const W3_PER_TICK: usize = 8;
const W3_POLICIES: [&str; 5] = [
    "wait",
    "reject",
    "caller_runs",
    "drop_newest",
    "drop_oldest",
];
/// Memory: queued events of 64 bytes.
const MEM_EVENTS: usize = 100_000;

// ---------------------------------------------------------------------------------------------
// Messages and handlers, one module per workload so that `handlers_under` picks exactly one set.

mod w1_noop {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "bench.w1.noop")]
    pub(crate) struct Noop {
        pub(crate) n: u64,
    }

    #[async_handler(pool = "bench")]
    async fn w1_noop(event: Noop) {
        black_box(event);
    }
}

mod w1b_fanout {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "bench.w1b.fanout")]
    pub(crate) struct Fanout {
        pub(crate) n: u64,
    }

    #[async_handler(pool = "bench")]
    async fn fanout_a(event: Fanout) {
        black_box(event);
    }
    #[async_handler(pool = "bench")]
    async fn fanout_b(event: Fanout) {
        black_box(event);
    }
    #[async_handler(pool = "bench")]
    async fn fanout_c(event: Fanout) {
        black_box(event);
    }
    #[async_handler(pool = "bench")]
    async fn fanout_d(event: Fanout) {
        black_box(event);
    }
}

mod w1b_features {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "bench.w1b.features")]
    pub(crate) struct Guarded {
        pub(crate) n: u64,
    }

    #[async_handler(pool = "bench", retry(max_attempts = 3), dedupe, timeout = "5s")]
    async fn guarded(event: Guarded) {
        black_box(event);
    }
}

mod w1b_both {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "bench.w1b.both")]
    pub(crate) struct GuardedFanout {
        pub(crate) n: u64,
    }

    #[async_handler(pool = "bench", retry(max_attempts = 3), dedupe, timeout = "5s")]
    async fn both_a(event: GuardedFanout) {
        black_box(event);
    }
    #[async_handler(pool = "bench", retry(max_attempts = 3), dedupe, timeout = "5s")]
    async fn both_b(event: GuardedFanout) {
        black_box(event);
    }
    #[async_handler(pool = "bench", retry(max_attempts = 3), dedupe, timeout = "5s")]
    async fn both_c(event: GuardedFanout) {
        black_box(event);
    }
    #[async_handler(pool = "bench", retry(max_attempts = 3), dedupe, timeout = "5s")]
    async fn both_d(event: GuardedFanout) {
        black_box(event);
    }
}

mod w2_io {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "bench.w2.call")]
    pub(crate) struct PartnerCall {
        pub(crate) n: u64,
    }

    #[async_handler(pool = "partner")]
    async fn w2_call(event: PartnerCall) {
        black_box(event);
        tokio::time::sleep(W2_WAIT).await;
    }
}

mod w3_overload {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "bench.w3.work")]
    pub(crate) struct Work {
        pub(crate) n: u64,
    }

    #[async_handler(pool = "slow")]
    async fn w3_work(event: Work) {
        black_box(event);
        tokio::time::sleep(W3_WORK).await;
    }
}

mod mem_queue {
    use super::*;

    /// 64 bytes of payload.
    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "bench.mem.blob")]
    pub(crate) struct Blob {
        pub(crate) n: u64,
        pub(crate) data: [u64; 7],
    }

    /// Keeps the pool's only worker busy so that every later event stays queued.
    #[derive(Clone)]
    pub(crate) struct Gate(pub(crate) Arc<Semaphore>);

    #[async_handler(pool = "gated")]
    async fn mem_hold(event: Blob, State(gate): State<Gate>) {
        black_box(event);
        if let Ok(permit) = gate.0.acquire().await {
            permit.forget();
        }
    }
}

mod latency {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "bench.latency.stamp")]
    pub(crate) struct Stamp {
        pub(crate) seq: u64,
        pub(crate) sent_ns: u64,
    }

    #[async_handler(pool = "bench")]
    async fn lat_stamp(event: Stamp) {
        record_latency(event.seq, event.sent_ns);
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn quick() -> bool {
    std::env::var("HERALD_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `work` as a task on the runtime's two workers (not on the `block_on` thread).
fn on_workers<F>(rt: &tokio::runtime::Runtime, work: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt.block_on(async { tokio::spawn(work).await.expect("bench task") })
}

/// A field of `/proc/self/status` in kB (`VmRSS`, `VmHWM`).
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn emit(key: &str, value: impl std::fmt::Display) {
    println!("RESULT {key}={value}");
}

fn herald_with(module: &str, pool: &str, config: PoolConfig) -> Herald {
    Herald::builder()
        .handlers_under(format!("dispatch::{module}"))
        .pool(pool, config)
        .build()
        .expect("valid bench registry")
}

fn w1_pool() -> PoolConfig {
    PoolConfig::new()
        .concurrency(CONCURRENCY)
        .queue(QUEUE)
        .overload(Overload::WAIT)
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

static LATENCIES: OnceLock<Vec<AtomicU64>> = OnceLock::new();

fn record_latency(seq: u64, sent_ns: u64) {
    let latency = now_ns().saturating_sub(sent_ns);
    if let Some(slot) = LATENCIES.get().and_then(|all| all.get(seq as usize)) {
        slot.store(latency, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// W1 / W1b: throughput of no-op handlers.

/// Publishes `events` (fire and forget), then waits until every handler job has finished.
async fn herald_throughput<E: Event>(
    herald: Herald,
    events: u64,
    handlers: u64,
    make: fn(u64) -> E,
) -> f64 {
    let started = Instant::now();
    for n in 0..events {
        match herald.publish(make(n)).await {
            Ok(delivery) => drop(delivery),
            Err(PublishError::Rejected { .. }) => panic!("`Wait` never rejects"),
            Err(_) => panic!("publish failed"),
        }
    }
    let report = herald.shutdown(Duration::from_secs(600)).await;
    let secs = started.elapsed().as_secs_f64();
    assert!(report.drained, "W1 drained");
    assert!(report.ledger.is_balanced(), "ledger balanced");
    assert_eq!(report.ledger.total.succeeded, events * handlers);
    secs
}

/// Baseline (a): 64 tasks pulling from a bounded async-channel of 1,024.
async fn channel_throughput(events: u64) -> f64 {
    let (tx, rx) = async_channel::bounded::<w1_noop::Noop>(QUEUE);
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let rx = rx.clone();
            tokio::spawn(async move {
                while let Ok(event) = rx.recv().await {
                    black_box(event);
                }
            })
        })
        .collect();
    drop(rx);
    let started = Instant::now();
    for n in 0..events {
        tx.send(w1_noop::Noop { n }).await.expect("receivers alive");
    }
    drop(tx);
    for worker in workers {
        worker.await.expect("worker");
    }
    started.elapsed().as_secs_f64()
}

/// Baseline (b): one task per event, at most 64 at once.
async fn semaphore_throughput(events: u64) -> f64 {
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    let started = Instant::now();
    for n in 0..events {
        let permit = limit.clone().acquire_owned().await.expect("open");
        tokio::spawn(async move {
            black_box(w1_noop::Noop { n });
            drop(permit);
        });
    }
    let _all = limit.acquire_many(CONCURRENCY as u32).await.expect("open");
    started.elapsed().as_secs_f64()
}

fn child_w1(variant: &str, events: u64) {
    let rt = runtime();
    let jobs_per_event = match variant {
        "w1b_fanout" | "w1b_both" => 4,
        _ => 1,
    };
    let secs = match variant {
        "w1_herald" => {
            let herald = rt.block_on(async { herald_with("w1_noop", "bench", w1_pool()) });
            on_workers(
                &rt,
                herald_throughput(herald, events, 1, |n| w1_noop::Noop { n }),
            )
        }
        "w1b_fanout" => {
            let herald = rt.block_on(async { herald_with("w1b_fanout", "bench", w1_pool()) });
            on_workers(
                &rt,
                herald_throughput(herald, events, 4, |n| w1b_fanout::Fanout { n }),
            )
        }
        "w1b_features" => {
            let herald = rt.block_on(async { herald_with("w1b_features", "bench", w1_pool()) });
            on_workers(
                &rt,
                herald_throughput(herald, events, 1, |n| w1b_features::Guarded { n }),
            )
        }
        "w1b_both" => {
            let herald = rt.block_on(async { herald_with("w1b_both", "bench", w1_pool()) });
            on_workers(
                &rt,
                herald_throughput(herald, events, 4, |n| w1b_both::GuardedFanout { n }),
            )
        }
        "w1_channel" => on_workers(&rt, channel_throughput(events)),
        "w1_semaphore" => on_workers(&rt, semaphore_throughput(events)),
        other => panic!("unknown W1 variant {other}"),
    };
    emit("events_per_s", events as f64 / secs);
    emit("jobs_per_s", (events * jobs_per_event) as f64 / secs);
    emit("secs", secs);
}

// ---------------------------------------------------------------------------------------------
// W2: I/O-bound handlers.

fn child_w2(variant: &str, events: u64) {
    let rt = runtime();
    let rss_start = status_kb("VmRSS");
    let secs = match variant {
        "w2_herald" => {
            let herald = rt.block_on(async {
                herald_with(
                    "w2_io",
                    "partner",
                    PoolConfig::new()
                        .concurrency(W2_CONCURRENCY)
                        .queue(QUEUE)
                        .overload(Overload::WAIT),
                )
            });
            on_workers(
                &rt,
                herald_throughput(herald, events, 1, |n| w2_io::PartnerCall { n }),
            )
        }
        "w2_tokio" => on_workers(&rt, async move {
            let limit = Arc::new(Semaphore::new(W2_CONCURRENCY));
            let started = Instant::now();
            for n in 0..events {
                let permit = limit.clone().acquire_owned().await.expect("open");
                tokio::spawn(async move {
                    black_box(w2_io::PartnerCall { n });
                    tokio::time::sleep(W2_WAIT).await;
                    drop(permit);
                });
            }
            let _all = limit
                .acquire_many(W2_CONCURRENCY as u32)
                .await
                .expect("open");
            started.elapsed().as_secs_f64()
        }),
        other => panic!("unknown W2 variant {other}"),
    };
    emit("secs", secs);
    emit("rss_start_kb", rss_start);
    emit("hwm_kb", status_kb("VmHWM"));
}

// ---------------------------------------------------------------------------------------------
// W3: overload, one policy per child.

fn child_w3(policy: &str, secs: u64) {
    let overload = match policy {
        "wait" => Overload::WAIT,
        "reject" => Overload::Reject,
        "caller_runs" => Overload::CallerRuns,
        "drop_newest" => Overload::DropNewest,
        "drop_oldest" => Overload::DropOldest,
        other => panic!("unknown policy {other}"),
    };
    let rt = runtime();
    let herald = rt.block_on(async {
        herald_with(
            "w3_overload",
            "slow",
            PoolConfig::new()
                .concurrency(W3_CONCURRENCY)
                .queue(W3_QUEUE)
                .overload(overload),
        )
    });
    let results = on_workers(&rt, async move {
        let rss_start = status_kb("VmRSS");
        let rss_max = Arc::new(AtomicU64::new(rss_start));
        let sampler = {
            let rss_max = rss_max.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    rss_max.fetch_max(status_kb("VmRSS"), Ordering::Relaxed);
                }
            })
        };
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let window = Duration::from_secs(secs);
        let started = Instant::now();
        let (mut offered, mut rejected) = (0_u64, 0_u64);
        while started.elapsed() < window {
            tick.tick().await;
            for _ in 0..W3_PER_TICK {
                match herald.publish(w3_overload::Work { n: offered }).await {
                    Ok(delivery) => drop(delivery),
                    Err(PublishError::Rejected { .. }) => rejected += 1,
                    Err(_) => panic!("publish failed"),
                }
                offered += 1;
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let rss_end = status_kb("VmRSS");
        sampler.abort();
        let ledger = herald.ledger().total;
        let stats = herald
            .pool_stats()
            .into_iter()
            .find(|p| p.name == "slow")
            .expect("pool `slow`");
        let report = herald.shutdown(Duration::from_secs(30)).await;
        assert!(report.ledger.is_balanced(), "W3 ledger balanced");
        assert!(stats.max_depth <= stats.queue, "depth within the bound");
        vec![
            ("secs", elapsed),
            ("offered_per_s", offered as f64 / elapsed),
            ("accepted_per_s", ledger.accepted as f64 / elapsed),
            ("completed_per_s", ledger.succeeded as f64 / elapsed),
            ("rejected", rejected as f64),
            ("dropped", ledger.dropped as f64),
            ("max_depth", stats.max_depth as f64),
            ("queue", stats.queue as f64),
            ("rss_start_kb", rss_start as f64),
            ("rss_end_kb", rss_end as f64),
            (
                "rss_max_kb",
                rss_max.load(Ordering::Relaxed).max(rss_end) as f64,
            ),
        ]
    });
    for (key, value) in results {
        emit(key, value);
    }
}

// ---------------------------------------------------------------------------------------------
// Memory: bytes per queued event.

fn child_memory(events: usize) {
    let rt = runtime();
    let rss_before_build = status_kb("VmRSS");
    let gate = mem_queue::Gate(Arc::new(Semaphore::new(0)));
    let herald = rt.block_on(async {
        Herald::builder()
            .handlers_under("dispatch::mem_queue")
            .pool(
                "gated",
                PoolConfig::new()
                    .concurrency(1)
                    .queue(events)
                    .overload(Overload::Reject),
            )
            .state(gate.clone())
            .build()
            .expect("valid bench registry")
    });
    let blob = |n: u64| mem_queue::Blob { n, data: [n; 7] };
    let (rss_built, rss_filled, depth) = on_workers(&rt, async move {
        // The first event occupies the only worker; wait until it runs so the queue starts empty.
        drop(herald.publish(blob(0)).await.expect("accepted"));
        while herald.ledger().total.in_flight == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let rss_built = status_kb("VmRSS");
        for n in 1..=events as u64 {
            drop(herald.try_publish(blob(n)).expect("room for every event"));
        }
        let rss_filled = status_kb("VmRSS");
        let depth = herald
            .pool_stats()
            .into_iter()
            .find(|p| p.name == "gated")
            .map_or(0, |p| p.depth);
        // Leak the runtime handle on purpose: the process exits right after printing.
        std::mem::forget(herald);
        (rss_built, rss_filled, depth)
    });
    assert_eq!(depth, events, "every event queued");
    emit("events", events);
    emit("payload_bytes", std::mem::size_of::<mem_queue::Blob>());
    emit("rss_before_build_kb", rss_before_build);
    emit("rss_built_kb", rss_built);
    emit("rss_filled_kb", rss_filled);
    std::process::exit(0);
}

// ---------------------------------------------------------------------------------------------
// Latency: publish → handler start at a fixed rate.

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

fn child_latency(variant: &str, rate: f64, secs: f64) {
    let events = ((rate * secs) as u64).max(1000);
    LATENCIES
        .set((0..events).map(|_| AtomicU64::new(u64::MAX)).collect())
        .expect("set once");
    let _ = epoch();
    let rt = runtime();
    let herald = (variant == "lat_herald")
        .then(|| rt.block_on(async { herald_with("latency", "bench", w1_pool()) }));
    let elapsed = on_workers(&rt, async move {
        let interval_ns = 1e9 / rate;
        let (tx, workers) = if herald.is_none() {
            let (tx, rx) = async_channel::bounded::<latency::Stamp>(QUEUE);
            let workers: Vec<_> = (0..CONCURRENCY)
                .map(|_| {
                    let rx = rx.clone();
                    tokio::spawn(async move {
                        while let Ok(event) = rx.recv().await {
                            record_latency(event.seq, event.sent_ns);
                        }
                    })
                })
                .collect();
            (Some(tx), workers)
        } else {
            (None, Vec::new())
        };
        let start = now_ns();
        for seq in 0..events {
            let due = start + (seq as f64 * interval_ns) as u64;
            while now_ns() < due {
                tokio::task::yield_now().await;
            }
            let stamp = latency::Stamp {
                seq,
                sent_ns: now_ns(),
            };
            match (&herald, &tx) {
                (Some(herald), _) => drop(herald.publish(stamp).await.expect("accepted")),
                (None, Some(tx)) => tx.send(stamp).await.expect("receivers alive"),
                (None, None) => unreachable!(),
            }
        }
        let elapsed = (now_ns() - start) as f64 / 1e9;
        if let Some(herald) = herald {
            herald.shutdown(Duration::from_secs(60)).await;
        }
        drop(tx);
        for worker in workers {
            worker.await.expect("worker");
        }
        elapsed
    });
    // Skip the first tenth (warm-up).
    let mut latencies: Vec<u64> = LATENCIES
        .get()
        .expect("set")
        .iter()
        .skip(events as usize / 10)
        .map(|l| l.load(Ordering::Relaxed))
        .collect();
    assert!(latencies.iter().all(|&l| l != u64::MAX), "every event ran");
    latencies.sort_unstable();
    emit("achieved_per_s", events as f64 / elapsed);
    emit("p50_us", percentile(&latencies, 0.50));
    emit("p99_us", percentile(&latencies, 0.99));
    emit("p999_us", percentile(&latencies, 0.999));
    emit("max_us", percentile(&latencies, 1.0));
}

// ---------------------------------------------------------------------------------------------
// The parent: runs every child, prints the tables.

type Figures = BTreeMap<String, f64>;

fn run_child(args: &[String]) -> Figures {
    let exe = std::env::current_exe().expect("own path");
    let output = std::process::Command::new(exe)
        .arg("--child")
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("child runs");
    assert!(
        output.status.success(),
        "child {args:?} failed: {}",
        output.status
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("RESULT "))
        .filter_map(|kv| {
            let (key, value) = kv.split_once('=')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpus} CPUs, {cpu}")
}

fn mib(kb: f64) -> String {
    format!("{:.1} MiB", kb / 1024.0)
}

fn parent() {
    let quick = quick();
    let (w1_events, w2_events, w3_secs, lat_secs, reps) = if quick {
        (100_000_u64, 10_000_u64, 2_u64, 0.5_f64, 1_usize)
    } else {
        (1_000_000, 100_000, 10, 2.0, 3)
    };
    println!(
        "# Herald dispatch benchmarks ({} run) on {}; tokio multi-thread, 2 workers",
        if quick { "quick" } else { "full" },
        machine()
    );

    // W1 and W1b: interleaved repetitions, medians.
    let variants = [
        "w1_herald",
        "w1_channel",
        "w1_semaphore",
        "w1b_fanout",
        "w1b_features",
        "w1b_both",
    ];
    let mut runs: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut pair_ratios = Vec::new();
    for rep in 0..reps {
        let mut this_rep = BTreeMap::new();
        for i in 0..variants.len() {
            let variant = variants[(i + rep) % variants.len()];
            eprintln!("W1 rep {}/{reps}: {variant}", rep + 1);
            let figures = run_child(&[variant.to_owned(), w1_events.to_string()]);
            let rate = figures["events_per_s"];
            runs.entry(variant).or_default().push(rate);
            this_rep.insert(variant, rate);
        }
        pair_ratios.push(this_rep["w1_herald"] / this_rep["w1_channel"]);
    }
    let w1 = |v: &str| median(runs[v].clone());
    let herald_rate = w1("w1_herald");
    let channel_rate = w1("w1_channel");
    println!();
    println!("## W1: {w1_events} no-op events, concurrency {CONCURRENCY}, queue {QUEUE}, Wait (median of {reps})");
    println!();
    println!("| variant | events/s | vs baseline (a) |");
    println!("|---|---:|---:|");
    for (variant, label) in [
        ("w1_herald", "Herald, 1 handler"),
        (
            "w1_channel",
            "baseline (a): 64 tasks on async-channel(1024)",
        ),
        (
            "w1_semaphore",
            "baseline (b): Semaphore::acquire_owned + spawn",
        ),
    ] {
        let rate = w1(variant);
        println!("| {label} | {rate:.0} | {:.2}x |", rate / channel_rate);
    }
    println!();
    println!(
        "Herald / (a) per repetition: {}",
        pair_ratios
            .iter()
            .map(|r| format!("{r:.2}x"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!("## W1b: the price of fan-out and of unused features (median of {reps})");
    println!();
    println!("| variant | events/s | handler jobs/s | vs W1 Herald (events/s) |");
    println!("|---|---:|---:|---:|");
    for (variant, label, jobs) in [
        ("w1_herald", "1 handler, no options (W1)", 1.0),
        ("w1b_fanout", "fan-out to 4 handlers", 4.0),
        ("w1b_features", "1 handler, retry + dedupe + timeout", 1.0),
        ("w1b_both", "4 handlers, each retry + dedupe + timeout", 4.0),
    ] {
        let rate = w1(variant);
        println!(
            "| {label} | {rate:.0} | {:.0} | {:.2}x |",
            rate * jobs,
            rate / herald_rate
        );
    }

    // W2.
    eprintln!("W2: herald, tokio");
    let w2h = run_child(&["w2_herald".to_owned(), w2_events.to_string()]);
    let w2t = run_child(&["w2_tokio".to_owned(), w2_events.to_string()]);
    println!();
    println!(
        "## W2: {w2_events} handlers waiting {} ms, concurrency {W2_CONCURRENCY} (ideal wall time {:.2} s)",
        W2_WAIT.as_millis(),
        w2_events as f64 / W2_CONCURRENCY as f64 * W2_WAIT.as_secs_f64()
    );
    println!();
    println!("| variant | wall time | peak RSS (VmHWM) | peak above start |");
    println!("|---|---:|---:|---:|");
    for (figures, label) in [(&w2h, "Herald"), (&w2t, "tokio tasks under a Semaphore")] {
        println!(
            "| {label} | {:.3} s | {} | {} |",
            figures["secs"],
            mib(figures["hwm_kb"]),
            mib(figures["hwm_kb"] - figures["rss_start_kb"])
        );
    }
    println!(
        "| Herald / tokio | {:.2}x | {:.2}x | {:.2}x |",
        w2h["secs"] / w2t["secs"],
        w2h["hwm_kb"] / w2t["hwm_kb"],
        (w2h["hwm_kb"] - w2h["rss_start_kb"]) / (w2t["hwm_kb"] - w2t["rss_start_kb"])
    );

    // W3.
    println!();
    println!(
        "## W3: overload for {w3_secs} s: pool of {W3_CONCURRENCY} x {} ms handlers (at most {} /s), queue {W3_QUEUE}, producer offers {} /s",
        W3_WORK.as_millis(),
        W3_CONCURRENCY as u128 * 1000 / W3_WORK.as_millis(),
        W3_PER_TICK * 1000
    );
    println!();
    println!("| policy | offered/s | accepted/s | completed/s | rejected | dropped | max depth (bound) | RSS start → end (max) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for policy in W3_POLICIES {
        eprintln!("W3: {policy}");
        let f = run_child(&["w3".to_owned(), policy.to_owned(), w3_secs.to_string()]);
        println!(
            "| {policy} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} ({:.0}) | {} → {} ({}) |",
            f["offered_per_s"],
            f["accepted_per_s"],
            f["completed_per_s"],
            f["rejected"],
            f["dropped"],
            f["max_depth"],
            f["queue"],
            mib(f["rss_start_kb"]),
            mib(f["rss_end_kb"]),
            mib(f["rss_max_kb"]),
        );
    }

    // Memory.
    eprintln!("Memory");
    let m = run_child(&["memory".to_owned(), MEM_EVENTS.to_string()]);
    let events = m["events"];
    let payload = m["payload_bytes"];
    let per_event = (m["rss_filled_kb"] - m["rss_built_kb"]) * 1024.0 / events;
    let with_queue = (m["rss_filled_kb"] - m["rss_before_build_kb"]) * 1024.0 / events;
    println!();
    println!("## Memory: {events:.0} queued events with {payload:.0}-byte payloads");
    println!();
    println!("| measure | bytes per queued event | beyond the payload |");
    println!("|---|---:|---:|");
    println!(
        "| RSS growth while queueing | {per_event:.0} | {:.0} |",
        per_event - payload
    );
    println!(
        "| including the pool's preallocated queue | {with_queue:.0} | {:.0} |",
        with_queue - payload
    );

    // Latency at half of W1's capacity.
    let rate = herald_rate / 2.0;
    eprintln!("Latency at {rate:.0}/s");
    let lh = run_child(&[
        "lat_herald".to_owned(),
        rate.to_string(),
        lat_secs.to_string(),
    ]);
    let lc = run_child(&[
        "lat_channel".to_owned(),
        rate.to_string(),
        lat_secs.to_string(),
    ]);
    println!();
    println!("## Latency: publish → handler start at {rate:.0} events/s (half of W1 Herald)");
    println!();
    println!("| variant | achieved/s | p50 | p99 | p99.9 | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (f, label) in [(&lh, "Herald"), (&lc, "baseline (a)")] {
        println!(
            "| {label} | {:.0} | {:.1} µs | {:.1} µs | {:.1} µs | {:.0} µs |",
            f["achieved_per_s"], f["p50_us"], f["p99_us"], f["p999_us"], f["max_us"]
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(child) = args.iter().position(|a| a == "--child") else {
        parent();
        return;
    };
    let rest = &args[child + 1..];
    let arg = |i: usize| rest.get(i).map(String::as_str).unwrap_or_default();
    match arg(0) {
        "w1_herald" | "w1_channel" | "w1_semaphore" | "w1b_fanout" | "w1b_features"
        | "w1b_both" => child_w1(arg(0), arg(1).parse().expect("event count")),
        "w2_herald" | "w2_tokio" => child_w2(arg(0), arg(1).parse().expect("event count")),
        "w3" => child_w3(arg(1), arg(2).parse().expect("seconds")),
        "memory" => child_memory(arg(1).parse().expect("event count")),
        "lat_herald" | "lat_channel" => child_latency(
            arg(0),
            arg(1).parse().expect("rate"),
            arg(2).parse().expect("seconds"),
        ),
        other => panic!("unknown workload {other}"),
    }
}
