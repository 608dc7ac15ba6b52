//! Pool workers start on demand: none at `build()`, one more whenever a queued job finds none idle,
//! never more than `concurrency`; started workers stay parked while idle and serve the next burst;
//! shutdown drains and dead-letters with lazily started workers as it did with workers started up
//! front.

use herald::{async_handler, Event, Herald, Overload, PoolConfig, State};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Handlers wait here until the test lets them through.
#[derive(Clone)]
struct Gate(Arc<Semaphore>);

impl Gate {
    fn closed() -> Self {
        Gate(Arc::new(Semaphore::new(0)))
    }
    fn open(&self) {
        self.0.add_permits(Semaphore::MAX_PERMITS / 2);
    }
    async fn pass(&self) {
        self.0.acquire().await.expect("gate never closes").forget();
    }
}

/// Handlers running now, and the most seen at once.
#[derive(Clone, Default)]
struct Running {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "workers.job")]
pub(crate) struct WorkerJob {
    pub(crate) n: u32,
}

#[async_handler(pool = "lazy")]
async fn gated(_event: WorkerJob, State(gate): State<Gate>, State(running): State<Running>) {
    let now = running.now.fetch_add(1, Ordering::SeqCst) + 1;
    running.peak.fetch_max(now, Ordering::SeqCst);
    gate.pass().await;
    running.now.fetch_sub(1, Ordering::SeqCst);
}

fn herald(concurrency: usize, queue: usize, gate: &Gate, running: &Running) -> Herald {
    Herald::builder()
        .handlers_under(module_path!())
        .pool(
            "lazy",
            PoolConfig::new()
                .concurrency(concurrency)
                .queue(queue)
                .overload(Overload::WAIT),
        )
        .state(gate.clone())
        .state(running.clone())
        .build()
        .expect("valid registry")
}

fn workers(herald: &Herald, pool: &str) -> usize {
    herald
        .pool_stats()
        .iter()
        .find(|p| p.name == pool)
        .map(|p| p.workers)
        .expect("pool exists")
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_start_on_demand_and_never_exceed_concurrency() {
    let (gate, running) = (Gate::closed(), Running::default());
    let herald = herald(4, 100, &gate, &running);
    assert_eq!(workers(&herald, "lazy"), 0, "no worker before any job");
    assert_eq!(workers(&herald, "default"), 0, "an unused pool starts none");

    let mut deliveries = vec![herald.publish(WorkerJob { n: 0 }).await.expect("accepted")];
    wait_until("the first job runs", || {
        running.now.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(workers(&herald, "lazy"), 1, "one job, one worker");

    for n in 1..40 {
        deliveries.push(herald.publish(WorkerJob { n }).await.expect("accepted"));
        assert!(workers(&herald, "lazy") <= 4);
    }
    wait_until("four jobs run at once", || {
        running.now.load(Ordering::SeqCst) == 4
    })
    .await;
    assert_eq!(workers(&herald, "lazy"), 4);

    gate.open();
    for delivery in deliveries {
        assert!(delivery.await.is_success());
    }
    assert_eq!(running.peak.load(Ordering::SeqCst), 4);
    assert_eq!(workers(&herald, "lazy"), 4, "workers stay once started");
    let report = herald.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained);
    assert_eq!(report.ledger.total.succeeded, 40);
    assert!(report.ledger.is_balanced(), "{}", report.ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_after_idleness_is_served_by_the_parked_workers() {
    let (gate, running) = (Gate::closed(), Running::default());
    gate.open();
    let herald = herald(2, 8, &gate, &running);
    let first = herald.publish(WorkerJob { n: 0 }).await.expect("accepted");
    assert!(first.await.is_success());
    // Long enough for every started worker to stop looking and park.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started_before_burst = workers(&herald, "lazy");
    assert!((1..=2).contains(&started_before_burst));

    let mut deliveries = Vec::new();
    for n in 1..=200 {
        deliveries.push(herald.publish(WorkerJob { n }).await.expect("accepted"));
    }
    for delivery in deliveries {
        assert!(delivery.await.is_success());
    }
    assert!(workers(&herald, "lazy") <= 2);
    assert!(running.peak.load(Ordering::SeqCst) <= 2);
    let report = herald.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained);
    assert_eq!(report.ledger.total.succeeded, 201);
    assert!(report.ledger.is_balanced(), "{}", report.ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_dead_letters_running_and_queued_jobs_of_lazily_started_workers() {
    let (gate, running) = (Gate::closed(), Running::default());
    let herald = herald(2, 10, &gate, &running);
    for n in 0..5 {
        drop(herald.publish(WorkerJob { n }).await.expect("accepted"));
    }
    wait_until("two jobs run", || running.now.load(Ordering::SeqCst) == 2).await;
    assert_eq!(workers(&herald, "lazy"), 2);

    let report = herald.shutdown(Duration::from_millis(100)).await;
    assert!(!report.drained);
    assert_eq!(report.dead_lettered_running, 2);
    assert_eq!(report.dead_lettered_queued, 3);
    assert_eq!(report.ledger.total.dead_lettered, 5);
    assert!(report.ledger.is_balanced(), "{}", report.ledger);
    let dead = herald.dead_letters().list(10).await.expect("list");
    assert_eq!(dead.len(), 5);
    assert!(dead
        .iter()
        .all(|entry| entry.reason == herald::DeadLetterReason::Shutdown));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_jobs_queued_before_their_workers_started() {
    let (gate, running) = (Gate::closed(), Running::default());
    let herald = herald(3, 50, &gate, &running);
    for n in 0..30 {
        drop(herald.publish(WorkerJob { n }).await.expect("accepted"));
    }
    let opener = {
        let gate = gate.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            gate.open();
        })
    };
    let report = herald.shutdown(Duration::from_secs(5)).await;
    opener.await.expect("opener");
    assert!(report.drained);
    assert_eq!(report.ledger.total.succeeded, 30);
    assert!(report.ledger.is_balanced(), "{}", report.ledger);
    assert!(running.peak.load(Ordering::SeqCst) <= 3);
}
