//! `shutdown(deadline)`: intake stops, work drains, and whatever is left is dead-lettered, never dropped.

use herald::{
    async_handler, DeadLetterReason, Event, HandlerStatus, Herald, PoolConfig, PublishError, State,
};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "shutdown.export")]
pub(crate) struct Export {
    pub(crate) millis: u64,
}

#[derive(Clone, Default)]
struct Done(Arc<AtomicU32>);

#[async_handler(pool = "exports")]
async fn export(event: Export, State(done): State<Done>) {
    tokio::time::sleep(Duration::from_millis(event.millis)).await;
    done.0.fetch_add(1, Ordering::SeqCst);
}

fn herald(done: &Done) -> Herald {
    Herald::builder()
        .handlers_under(module_path!())
        .pool("exports", PoolConfig::new().concurrency(2).queue(10))
        .state(done.clone())
        .build()
        .expect("valid registry")
}

#[tokio::test]
async fn shutdown_drains_queued_and_running_work_within_the_deadline() {
    let done = Done::default();
    let herald = herald(&done);
    for _ in 0..6 {
        drop(
            herald
                .publish(Export { millis: 10 })
                .await
                .expect("accepted"),
        );
    }
    let report = herald.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained);
    assert_eq!(done.0.load(Ordering::SeqCst), 6);
    assert_eq!(
        (report.dead_lettered_queued, report.dead_lettered_running),
        (0, 0)
    );
    assert_eq!(report.ledger.total.succeeded, 6);
    assert!(report.ledger.is_balanced(), "{}", report.ledger);
}

#[tokio::test]
async fn publish_after_shutdown_returns_the_message() {
    let herald = herald(&Done::default());
    herald.shutdown(Duration::from_millis(100)).await;
    let error = herald
        .publish(Export { millis: 1 })
        .await
        .expect_err("shutting down");
    assert!(
        matches!(error, PublishError::ShuttingDown { .. }),
        "{error:?}"
    );
    assert_eq!(error.into_message(), Export { millis: 1 });
}

#[tokio::test]
async fn at_the_deadline_running_and_queued_work_is_dead_lettered_with_reason_shutdown() {
    let done = Done::default();
    let herald = herald(&done);
    let mut deliveries = Vec::new();
    for _ in 0..5 {
        deliveries.push(
            herald
                .publish(Export { millis: 60_000 })
                .await
                .expect("accepted"),
        );
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = herald.shutdown(Duration::from_millis(50)).await;
    assert!(!report.drained);
    assert_eq!(
        (report.dead_lettered_running, report.dead_lettered_queued),
        (2, 3)
    );
    for delivery in deliveries {
        let outcome = delivery.await;
        assert!(
            matches!(outcome.reports[0].status, HandlerStatus::Interrupted),
            "{outcome:?}"
        );
    }
    let dead = herald.dead_letters().list(10).await.expect("list");
    assert_eq!(dead.len(), 5);
    assert!(dead.iter().all(|d| d.reason == DeadLetterReason::Shutdown));
    assert_eq!(done.0.load(Ordering::SeqCst), 0);
    let ledger = report.ledger;
    assert_eq!((ledger.total.accepted, ledger.total.dead_lettered), (5, 5));
    assert!(ledger.is_balanced(), "{ledger}");
}

#[tokio::test]
async fn a_publisher_waiting_for_room_gets_its_message_back_at_shutdown() {
    let herald = herald(&Done::default());
    for _ in 0..12 {
        drop(
            herald
                .publish(Export { millis: 60_000 })
                .await
                .expect("accepted"),
        );
    }
    let waiting = tokio::spawn({
        let herald = herald.clone();
        async move {
            herald
                .publish(Export { millis: 7 })
                .await
                .map(|d| d.message_id())
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !waiting.is_finished(),
        "the pool is full: the publisher waits"
    );
    let report = herald.shutdown(Duration::from_millis(20)).await;
    let error = waiting.await.expect("task").expect_err("shutting down");
    assert!(
        matches!(error, PublishError::ShuttingDown { .. }),
        "{error:?}"
    );
    assert_eq!(error.into_message(), Export { millis: 7 });
    assert_eq!(
        report.dead_lettered_running + report.dead_lettered_queued,
        12
    );
    assert!(report.ledger.is_balanced(), "{}", report.ledger);
}
