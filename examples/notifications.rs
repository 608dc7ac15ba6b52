//! 100,000 push notifications to a partner that answers 429 above 200 requests per second.
//!
//! The seeds' incident (`001_…`): a 4-thread pool with a queue of 100 overflowed, the scheduler re-sent,
//! 180 people got 100+ duplicates and the partner (200 TPS cap) fell over. Here the sender is capped at
//! 180/s (`rate`), the pool is bounded with backpressure (`Wait`), and re-sends carry the same
//! idempotency key (`dedupe`): zero 429s, zero duplicates, nothing lost.
//!
//! `cargo run --release --example notifications` runs at the real limits (about 9 minutes).
//! `cargo run --release --example notifications -- --fast` raises both limits 100x (partner 20,000/s,
//! sender 18,000/s) so that it finishes in seconds. `--count N` changes the number of notifications.

use herald::{
    async_handler, Event, HandlerError, Herald, Overload, PoolConfig, PublishOptions, Rate, State,
};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "push.requested")]
struct PushRequested {
    notification_id: u64,
    user_id: u64,
    text: String,
}

/// An in-process fake of the partner's push API: 429 above `limit` requests in any one-second window.
#[derive(Clone)]
struct Partner {
    limit: usize,
    state: Arc<Mutex<PartnerState>>,
}

#[derive(Default)]
struct PartnerState {
    window: VecDeque<Instant>,
    delivered: HashMap<u64, u32>,
    too_many_requests: u64,
}

impl Partner {
    fn new(limit: usize) -> Self {
        Partner {
            limit,
            state: Arc::default(),
        }
    }

    async fn send(&self, notification_id: u64) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(2)).await; // network round trip
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        while state
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            state.window.pop_front();
        }
        if state.window.len() >= self.limit {
            state.too_many_requests += 1;
            return Err(HandlerError::msg("429 Too Many Requests"));
        }
        state.window.push_back(now);
        *state.delivered.entry(notification_id).or_default() += 1;
        Ok(())
    }
}

#[async_handler(pool = "push", rate = "180/s", dedupe, retry(max_attempts = 5, backoff = exponential(200ms, 2.0, 5s), jitter))]
async fn send_push(
    event: PushRequested,
    State(partner): State<Partner>,
) -> Result<(), HandlerError> {
    partner.send(event.notification_id).await
}

struct Args {
    count: u64,
    speedup: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        count: 100_000,
        speedup: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--fast" => args.speedup = 100,
            "--count" => {
                let value = it.next().ok_or("--count needs a number")?;
                args.count = value.parse().map_err(|e| format!("--count {value}: {e}"))?;
            }
            other => {
                return Err(format!(
                    "unknown argument `{other}`; use --fast and/or --count N"
                ))
            }
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let partner_limit = 200 * args.speedup as usize;
    let send_rate = Rate {
        count: 180 * args.speedup,
        per: Duration::from_secs(1),
    };
    let partner = Partner::new(partner_limit);
    let herald = Herald::builder()
        .handlers_under(module_path!())
        .pool(
            "push",
            PoolConfig::new()
                .concurrency(64)
                .queue(1_000)
                .overload(Overload::WAIT),
        )
        .rate(concat!(module_path!(), "::send_push"), send_rate)
        .state(partner.clone())
        .build()?;
    println!(
        "Sending {} notifications: partner limit {partner_limit}/s, sender capped at {}/s, pool 64 workers + queue 1,000 (Wait)",
        args.count, send_rate.count
    );

    let started = Instant::now();
    let progress = tokio::spawn({
        let herald = herald.clone();
        let total = args.count;
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let ledger = herald.ledger().total;
                let depth: usize = herald.pool_stats().iter().map(|p| p.depth).sum();
                let elapsed = started.elapsed().as_secs_f64();
                println!(
                    "  {:>6.1}s  sent {:>7}/{total}  ({:>6.0}/s)  queued {depth:>5}  failed attempts {}",
                    elapsed,
                    ledger.succeeded,
                    ledger.succeeded as f64 / elapsed,
                    ledger.failed_attempts
                );
            }
        }
    });

    for id in 0..args.count {
        let event = PushRequested {
            notification_id: id,
            user_id: id % 180,
            text: "Your order has shipped".into(),
        };
        // The scheduler's re-send of the same notification carries the same key, so it cannot duplicate.
        let options = PublishOptions::new().idempotency_key(format!("push-{id}"));
        drop(herald.publish_with(event, options).await?);
    }
    // The incident's re-send storm: 1,000 notifications sent a second time.
    for id in 0..args.count.min(1_000) {
        let event = PushRequested {
            notification_id: id,
            user_id: id % 180,
            text: "Your order has shipped".into(),
        };
        drop(
            herald
                .publish_with(
                    event,
                    PublishOptions::new().idempotency_key(format!("push-{id}")),
                )
                .await?,
        );
    }
    let report = herald.shutdown(Duration::from_secs(3_600)).await;
    progress.abort();

    let state = partner
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let duplicates = state.delivered.values().filter(|&&n| n > 1).count();
    let elapsed = started.elapsed();
    let total = report.ledger.total;
    println!("\nSummary after {elapsed:.1?}");
    println!(
        "  delivered to the partner : {} distinct notifications",
        state.delivered.len()
    );
    println!("  429 answers              : {}", state.too_many_requests);
    println!("  duplicates at the partner: {duplicates}");
    println!("  re-sends skipped (dedupe): {}", total.deduplicated);
    println!("  dead letters             : {}", total.dead_lettered);
    println!(
        "  average rate             : {:.0}/s",
        state.delivered.len() as f64 / elapsed.as_secs_f64()
    );
    println!("  ledger                   : {total}");
    let ok = state.too_many_requests == 0
        && duplicates == 0
        && state.delivered.len() as u64 == args.count
        && report.ledger.is_balanced();
    if !ok {
        return Err("a 429, a duplicate or a lost notification: see the summary".into());
    }
    Ok(())
}
