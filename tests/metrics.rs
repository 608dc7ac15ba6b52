//! The ledger is exposed through the `metrics` facade as well as through `herald.ledger()`.

use herald::{async_handler, Event, HandlerError, Herald, InMemoryDeadLetters};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde::{Deserialize, Serialize};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "metrics.ping")]
struct Ping {
    fail: bool,
}

#[async_handler(retry(max_attempts = 1))]
async fn pong(event: Ping) -> Result<(), HandlerError> {
    if event.fail {
        return Err(HandlerError::msg("no pong"));
    }
    Ok(())
}

#[tokio::test]
async fn ledger_counters_are_mirrored_to_the_metrics_recorder() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // Handles are resolved at build time, so the recorder only needs to be current while building.
    let herald = metrics::with_local_recorder(&recorder, || {
        Herald::builder()
            .handlers_under(module_path!())
            // Room for one dead letter: the second failure evicts the first.
            .dead_letters(InMemoryDeadLetters::new(1))
            .build()
    })
    .expect("valid registry");
    for fail in [false, false, true, true] {
        drop(herald.publish(Ping { fail }).await.expect("accepted").await);
    }
    let ledger = herald.ledger().total;
    // A snapshot drains the debugging recorder's counters: take it once.
    let snapshot = snapshotter.snapshot().into_vec();
    let value_of = |outcome: &str| {
        snapshot
            .iter()
            .find_map(|(key, _, _, value)| {
                let key = key.key();
                let matches = key.name() == "herald_messages_total"
                    && key
                        .labels()
                        .any(|l| l.key() == "outcome" && l.value() == outcome);
                match (matches, value) {
                    (true, DebugValue::Counter(n)) => Some(*n),
                    _ => None,
                }
            })
            .unwrap_or(0)
    };
    assert_eq!(value_of("accepted"), ledger.accepted);
    assert_eq!(value_of("succeeded"), 2);
    assert_eq!(value_of("dead_lettered"), 2);
    assert_eq!(value_of("lost"), 0);
    let evicted = snapshot.iter().find_map(|(key, _, _, value)| {
        match (
            key.key().name() == "herald_dead_letters_evicted_total",
            value,
        ) {
            (true, DebugValue::Counter(n)) => Some(*n),
            _ => None,
        }
    });
    assert_eq!(evicted, Some(1), "evictions are visible as a metric");
    assert_eq!(herald.ledger().dead_letters_evicted, 1);
}

#[tokio::test]
async fn the_metrics_switch_turns_the_mirror_off_and_the_ledger_still_counts() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let herald = metrics::with_local_recorder(&recorder, || {
        Herald::builder()
            .handlers_under(module_path!())
            .metrics(false)
            .build()
    })
    .expect("valid registry");
    for fail in [false, true] {
        drop(herald.publish(Ping { fail }).await.expect("accepted").await);
    }
    let ledger = herald.ledger().total;
    assert_eq!((ledger.accepted, ledger.succeeded), (2, 1));
    assert_eq!(ledger.dead_lettered, 1);
    let herald_metrics: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, _)| key.key().name().to_owned())
        .filter(|name| name.starts_with("herald_") && name != "herald_dead_letters_evicted_total")
        .collect();
    assert!(herald_metrics.is_empty(), "{herald_metrics:?}");
}
