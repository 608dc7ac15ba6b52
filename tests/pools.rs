//! Bounded pools and their overload policies: nothing waits outside a bound, and every rejection or
//! drop is explicit, counted and recoverable.

use herald::{
    async_handler, DeadLetterReason, Event, HandlerStatus, Herald, Overload, PoolConfig,
    PublishError, State,
};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Handlers wait here until the test lets them through, so pools fill deterministically.
#[derive(Clone)]
struct Gate(Arc<Semaphore>);

impl Gate {
    fn closed() -> Self {
        Gate(Arc::new(Semaphore::new(0)))
    }
    fn open(&self, handlers: usize) {
        self.0.add_permits(handlers);
    }
    async fn pass(&self) {
        self.0.acquire().await.expect("gate never closes").forget();
    }
}

#[derive(Clone, Default)]
struct Started(Arc<AtomicU32>);

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "pools.push")]
pub(crate) struct Push {
    pub(crate) n: u32,
}

#[async_handler(pool = "partner")]
async fn push(event: Push, State(gate): State<Gate>, State(started): State<Started>) {
    started.0.fetch_add(1, Ordering::SeqCst);
    // Messages 0..=2 fill the pool and wait for the test; later ones go straight through.
    if event.n < 3 {
        gate.pass().await;
    }
}

/// One worker, a queue of two: the third message finds the pool full.
fn herald(overload: Overload, gate: &Gate, started: &Started) -> Herald {
    Herald::builder()
        .handlers_under(module_path!())
        .pool(
            "partner",
            PoolConfig::new().concurrency(1).queue(2).overload(overload),
        )
        .state(gate.clone())
        .state(started.clone())
        .build()
        .expect("valid registry")
}

/// Fills the pool: one message running, two queued.
async fn fill(herald: &Herald, started: &Started) -> Vec<herald::Delivery> {
    let mut deliveries = vec![herald.publish(Push { n: 0 }).await.expect("accepted")];
    let running = started.clone();
    wait_until("the first message runs", || {
        running.0.load(Ordering::SeqCst) == 1
    })
    .await;
    for n in 1..=2 {
        deliveries.push(herald.publish(Push { n }).await.expect("accepted"));
    }
    assert_eq!(
        herald
            .pool_stats()
            .iter()
            .find(|p| p.name == "partner")
            .map(|p| p.depth),
        Some(2)
    );
    deliveries
}

#[tokio::test]
async fn wait_applies_backpressure_until_there_is_room() {
    let (gate, started) = (Gate::closed(), Started::default());
    let herald = herald(Overload::WAIT, &gate, &started);
    let _filled = fill(&herald, &started).await;
    let blocked = tokio::spawn({
        let herald = herald.clone();
        async move { herald.publish(Push { n: 3 }).await.map(|d| d.message_id()) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !blocked.is_finished(),
        "publish must wait while the queue is full"
    );
    gate.open(4);
    blocked
        .await
        .expect("task")
        .expect("accepted once there is room");
    let report = herald.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained);
    assert_eq!(report.ledger.total.succeeded, 4);
    assert!(report.ledger.is_balanced(), "{}", report.ledger);
    let stats = herald.pool_stats();
    assert!(stats.iter().all(|p| p.max_depth <= p.queue), "{stats:?}");
}

#[tokio::test]
async fn wait_with_a_max_wait_rejects_after_it_and_returns_the_message() {
    let (gate, started) = (Gate::closed(), Started::default());
    let herald = herald(
        Overload::wait_at_most(Duration::from_millis(30)),
        &gate,
        &started,
    );
    let _filled = fill(&herald, &started).await;
    let error = herald
        .publish(Push { n: 3 })
        .await
        .expect_err("full after max wait");
    assert!(matches!(error, PublishError::Rejected { .. }), "{error:?}");
    assert_eq!(error.into_message(), Push { n: 3 });
    assert_eq!(herald.ledger().total.rejected, 1);
    gate.open(3);
}

#[tokio::test]
async fn reject_returns_the_message_with_a_clear_error() {
    let (gate, started) = (Gate::closed(), Started::default());
    let herald = herald(Overload::Reject, &gate, &started);
    let _filled = fill(&herald, &started).await;
    let error = herald.publish(Push { n: 3 }).await.expect_err("full");
    let text = error.to_string();
    assert!(
        text.contains("pool `partner` is full") && text.contains("returned to you"),
        "{text}"
    );
    assert_eq!(error.message(), &Push { n: 3 });
    let ledger = herald.ledger();
    assert_eq!((ledger.total.rejected, ledger.total.accepted), (1, 3));
    gate.open(3);
    let report = herald.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.ledger.total.succeeded, 3);
    assert!(report.ledger.is_balanced());
}

#[tokio::test]
async fn try_publish_never_waits() {
    let (gate, started) = (Gate::closed(), Started::default());
    let herald = herald(Overload::WAIT, &gate, &started);
    let _filled = fill(&herald, &started).await;
    let error = herald
        .try_publish(Push { n: 3 })
        .expect_err("would have to wait");
    assert!(matches!(error, PublishError::Rejected { .. }));
    gate.open(3);
}

#[tokio::test]
async fn caller_runs_runs_the_handler_on_the_publishers_task() {
    let (gate, started) = (Gate::closed(), Started::default());
    let herald = herald(Overload::CallerRuns, &gate, &started);
    let _filled = fill(&herald, &started).await;
    let publish = herald.publish(Push { n: 3 });
    let delivery = tokio::time::timeout(Duration::from_secs(5), publish)
        .await
        .expect("ran inline")
        .expect("accepted");
    assert_eq!(
        started.0.load(Ordering::SeqCst),
        2,
        "the worker is still blocked on message 0; the caller ran message 3"
    );
    let outcome = delivery.await;
    assert!(outcome.is_success());
    gate.open(3);
    let report = herald.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.ledger.total.succeeded, 4);
    assert!(report.ledger.is_balanced());
}

#[tokio::test]
async fn drop_newest_dead_letters_the_new_message_with_reason_overflow() {
    let (gate, started) = (Gate::closed(), Started::default());
    let herald = herald(Overload::DropNewest, &gate, &started);
    let _filled = fill(&herald, &started).await;
    let outcome = herald
        .publish(Push { n: 3 })
        .await
        .expect("accepted, then dropped")
        .await;
    assert!(matches!(outcome.reports[0].status, HandlerStatus::Dropped));
    gate.open(3);
    let report = herald.shutdown(Duration::from_secs(5)).await;
    let dead = herald.dead_letters().list(10).await.expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, DeadLetterReason::Overflow);
    assert_eq!(dead[0].payload, serde_json::json!({ "n": 3 }));
    assert_eq!(
        (report.ledger.total.dropped, report.ledger.total.succeeded),
        (1, 3)
    );
    assert!(report.ledger.is_balanced(), "{}", report.ledger);
}

#[tokio::test]
async fn drop_oldest_dead_letters_the_oldest_queued_message() {
    let (gate, started) = (Gate::closed(), Started::default());
    let herald = herald(Overload::DropOldest, &gate, &started);
    let filled = fill(&herald, &started).await;
    let newest = herald.publish(Push { n: 3 }).await.expect("accepted");
    gate.open(3);
    let mut outcomes = Vec::new();
    for delivery in filled {
        outcomes.push(delivery.await);
    }
    assert!(
        matches!(outcomes[1].reports[0].status, HandlerStatus::Dropped),
        "message 1 was the oldest queued"
    );
    assert!(newest.await.is_success());
    herald.shutdown(Duration::from_secs(5)).await; // waits for dead-letter writes started on the publish path
    let dead = herald.dead_letters().list(10).await.expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].reason, dead[0].payload.clone()),
        (DeadLetterReason::Overflow, serde_json::json!({ "n": 1 }))
    );
    let ledger = herald.ledger();
    assert_eq!(
        (
            ledger.total.accepted,
            ledger.total.dropped,
            ledger.total.succeeded
        ),
        (4, 1, 3)
    );
    assert!(ledger.is_balanced(), "{ledger}");
}

#[tokio::test]
async fn a_caller_runs_job_whose_publisher_gives_up_is_dead_lettered_not_lost() {
    let (gate, started) = (Gate::closed(), Started::default());
    let herald = herald(Overload::CallerRuns, &gate, &started);
    let _filled = fill(&herald, &started).await;
    // Runs on this task and waits at the gate; the publisher gives up after 30 ms.
    let gave_up =
        tokio::time::timeout(Duration::from_millis(30), herald.publish(Push { n: 2 })).await;
    assert!(gave_up.is_err());
    gate.open(3);
    let report = herald.shutdown(Duration::from_secs(5)).await;
    let dead = herald.dead_letters().list(10).await.expect("list");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("dropped its `publish` future")),
        "{dead:?}"
    );
    assert_eq!(
        (
            report.ledger.total.succeeded,
            report.ledger.total.dead_lettered
        ),
        (3, 1)
    );
    assert!(report.ledger.is_balanced(), "{}", report.ledger);
}
