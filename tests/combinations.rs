//! Every overload policy × `ordered` × `dedupe` × retries × cancelled publishers × shutdown with work
//! left: whatever the mix, each accepted job ends in exactly one recorded state (the ledger balances,
//! nothing is lost, every dead letter is in the store), one key never runs twice at once, and a key's
//! messages start in the order they were published.

use herald::{
    async_handler, Event, HandlerError, Herald, Meta, Overload, PoolConfig, PublishOptions, State,
};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "combinations.step", key = key)]
pub(crate) struct Step {
    pub(crate) key: String,
    pub(crate) n: u32,
}

#[derive(Clone, Default)]
struct Seen {
    running: Arc<Mutex<HashSet<String>>>,
    overlaps: Arc<Mutex<u32>>,
    /// Per key, the `n` of every first attempt, in start order.
    starts: Arc<Mutex<HashMap<String, Vec<u32>>>>,
}

/// Marks a key running; the mark goes when the attempt ends, even when its future is dropped (a
/// cancelled `CallerRuns` publisher, a timeout, shutdown).
struct Running<'a>(&'a Seen, String);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.lock().expect("lock").remove(&self.1);
    }
}

#[async_handler(
    pool = "mixed",
    ordered,
    dedupe,
    retry(max_attempts = 3, backoff = fixed(1ms))
)]
async fn step(event: Step, meta: Meta, State(seen): State<Seen>) -> Result<(), HandlerError> {
    if !seen.running.lock().expect("lock").insert(event.key.clone()) {
        *seen.overlaps.lock().expect("lock") += 1;
    }
    let running = Running(&seen, event.key.clone());
    if meta.attempt() == 1 {
        seen.starts
            .lock()
            .expect("lock")
            .entry(event.key.clone())
            .or_default()
            .push(event.n);
    }
    tokio::time::sleep(Duration::from_micros(300)).await;
    drop(running);
    match event.n % 11 {
        // Fails once, then succeeds on the retry.
        3 if meta.attempt() == 1 => Err(HandlerError::msg("flaky partner")),
        // Fails for good.
        7 => Err(HandlerError::permanent(HandlerError::msg("bad input"))),
        _ => Ok(()),
    }
}

async fn run_mix(overload: Overload) {
    let seen = Seen::default();
    let herald = Herald::builder()
        .handlers_under(module_path!())
        .pool(
            "mixed",
            PoolConfig::new().concurrency(2).queue(4).overload(overload),
        )
        .state(seen.clone())
        .build()
        .expect("valid registry");
    // Four publishers, one key each, so each key's publish order is the publisher's order.
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let herald = herald.clone();
            tokio::spawn(async move {
                let key = format!("key-{p}");
                for n in 0..150u32 {
                    let options = PublishOptions::new().idempotency_key(format!("{key}/{}", n / 2));
                    let event = Step {
                        key: key.clone(),
                        n,
                    };
                    // Some publishers give up quickly (a request timeout), at whatever await they are.
                    let patience = Duration::from_micros(u64::from((n * 37 + p * 11) % 900));
                    match tokio::time::timeout(patience, herald.publish_with(event, options)).await
                    {
                        Ok(Ok(delivery)) => drop(delivery),
                        Ok(Err(refused)) => drop(refused.into_message()),
                        Err(_cancelled) => {}
                    }
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    // Shut down with work possibly left: queued, parked and running jobs are dead-lettered.
    let report = herald.shutdown(Duration::from_millis(30)).await;
    let ledger = &report.ledger;
    let context = format!("{overload}: {ledger}");
    assert_eq!(ledger.total.lost, 0, "{context}");
    assert_eq!(ledger.total.in_flight, 0, "{context}");
    assert_eq!(ledger.total.queued, 0, "{context}");
    assert_eq!(report.still_running_on_callers, 0, "{context}");
    assert!(ledger.is_balanced(), "{context}");
    assert!(ledger.total.accepted > 0, "{context}");
    // Every dead-lettered or dropped job is in the store (nothing evicted at this size).
    let stored = herald.dead_letters().count().await.expect("count");
    assert_eq!(
        stored,
        ledger.total.dead_lettered + ledger.total.dropped,
        "{context}"
    );
    assert_eq!(
        *seen.overlaps.lock().expect("lock"),
        0,
        "{context}: a key ran twice at once"
    );
    for (key, starts) in seen.starts.lock().expect("lock").iter() {
        assert!(
            starts.windows(2).all(|w| w[0] <= w[1]),
            "{context}: {key} started out of publish order: {starts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait() {
    run_mix(Overload::WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_with_max_wait() {
    run_mix(Overload::Wait {
        max_wait: Some(Duration::from_micros(200)),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reject() {
    run_mix(Overload::Reject).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caller_runs() {
    run_mix(Overload::CallerRuns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drop_newest() {
    run_mix(Overload::DropNewest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drop_oldest() {
    run_mix(Overload::DropOldest).await;
}
