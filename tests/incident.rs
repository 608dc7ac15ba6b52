//! The seeds' incident (`001_…`): a pool of 4 workers and a queue of 100 overflowed, the scheduler
//! re-sent, and people got 100+ duplicate messages. Here 10,000 messages go into the same pool with
//! `Reject`: every rejection comes back to the caller, the caller re-sends with the same id, and the
//! `dedupe` handler makes no duplicate side effect. The ledger balances under load and at the end.

use herald::{
    async_handler, Event, Herald, Overload, PoolConfig, PublishError, PublishOptions, State,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "incident.push")]
pub(crate) struct PushNotification {
    pub(crate) user: u32,
}

#[derive(Clone, Default)]
struct Sent(Arc<Mutex<HashMap<u32, u32>>>);

#[derive(Clone)]
struct Gate(Arc<Semaphore>);

#[async_handler(pool = "push", dedupe)]
async fn push(event: PushNotification, State(sent): State<Sent>, State(gate): State<Gate>) {
    gate.0.acquire().await.expect("gate").forget();
    tokio::task::yield_now().await;
    *sent.0.lock().expect("lock").entry(event.user).or_default() += 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_into_four_workers_and_a_queue_of_100_lose_nothing_and_duplicate_nothing(
) {
    let sent = Sent::default();
    let gate = Gate(Arc::new(Semaphore::new(0)));
    let herald = Herald::builder()
        .handlers_under(module_path!())
        .pool(
            "push",
            PoolConfig::new()
                .concurrency(4)
                .queue(100)
                .overload(Overload::Reject),
        )
        .state(sent.clone())
        .state(gate.clone())
        .build()
        .expect("valid registry");

    // Phase 1, handlers held: 4 running + 100 queued, everything else is rejected back to the caller.
    let mut rejected = Vec::new();
    for user in 0..10_000 {
        let options = PublishOptions::new().idempotency_key(format!("push-{user}"));
        match herald
            .publish_with(PushNotification { user }, options)
            .await
        {
            Ok(delivery) => drop(delivery),
            Err(PublishError::Rejected { message, .. }) => rejected.push(message),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ledger = herald.ledger();
    assert_eq!(ledger.total.accepted, 104, "{ledger}");
    assert_eq!(
        (ledger.total.in_flight, ledger.total.queued),
        (4, 100),
        "{ledger}"
    );
    assert_eq!(ledger.total.rejected as usize, rejected.len());
    assert_eq!(rejected.len(), 10_000 - 104);
    assert!(ledger.is_balanced(), "balanced under load: {ledger}");

    // The scheduler re-sends everything (accepted ones too, as in the incident) with the same ids.
    gate.0.add_permits(1_000_000);
    let mut resend: Vec<PushNotification> =
        (0..10_000).map(|user| PushNotification { user }).collect();
    while let Some(message) = resend.pop() {
        let options = PublishOptions::new().idempotency_key(format!("push-{}", message.user));
        match herald.publish_with(message, options).await {
            Ok(delivery) => drop(delivery),
            Err(PublishError::Rejected { message, .. }) => {
                resend.insert(0, message);
                tokio::task::yield_now().await;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    let report = herald.shutdown(Duration::from_secs(30)).await;
    assert!(report.drained);
    let sent = sent.0.lock().expect("lock");
    assert_eq!(sent.len(), 10_000, "every user got the notification");
    assert!(sent.values().all(|&n| n == 1), "nobody got a duplicate");
    let total = report.ledger.total;
    assert_eq!(total.succeeded, 10_000);
    assert_eq!(total.deduplicated, total.accepted - 10_000);
    assert!(report.ledger.is_balanced(), "{}", report.ledger);
    let stats = herald.pool_stats();
    assert!(stats.iter().all(|p| p.max_depth <= p.queue), "{stats:?}");
}
