//! Deadline SLAs: "when an order is placed, it ships within T" (docs/SLAS.md).
//!
//! The SLA `order-shipped` is declared next to the code and kept in the SQLite outbox's database:
//! each `OrderPlaced` written with the order opens an expectation in the same transaction, each
//! `OrderShipped` fulfils it in its own. Here T is one second:
//!
//! - order 1 ships after 300 ms: fulfilled, nothing emitted;
//! - order 2 never ships: the sweeper marks it breached and writes an `SlaBreached` into the
//!   outbox in the same transaction; the relay delivers it to `escalate`;
//! - order 3 ships after 1.5 s, once breached: recorded as `fulfilled_late`, nothing discarded.
//!
//! `ship` also has `start_within = "200ms"`: the warehouse works one order at a time, so the
//! second of two orders that arrive together starts late and is counted in `start_late`.
//!
//! The ledger at the end counts in-process movements only (the breaches this sweeper made); the
//! store's status counts the expectations the outbox's transactions opened and fulfilled too.
//!
//! Run it with `cargo run --example sla`.

use herald::outbox::{self, SqliteOutbox};
use herald::{async_handler, Event, Herald, PoolConfig, Sla, SlaBreached, State};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.placed")]
struct OrderPlaced {
    order_id: u64,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.shipped")]
struct OrderShipped {
    order_id: u64,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "warehouse.pick")]
struct Pick {
    order_id: u64,
}

/// When the example started, to print times from it.
#[derive(Clone)]
struct Clock(Instant);

impl Clock {
    fn now(&self) -> String {
        format!("{:>5} ms", self.0.elapsed().as_millis())
    }
}

/// The contract: every placed order ships within one second.
fn order_shipped() -> Sla {
    Sla::named("order-shipped")
        .after::<OrderPlaced>()
        .expect::<OrderShipped>()
        .within(Duration::from_secs(1))
        .correlate(
            |placed| placed.order_id.to_string(),
            |shipped| shipped.order_id.to_string(),
        )
}

#[async_handler]
async fn escalate(breach: SlaBreached, State(clock): State<Clock>) {
    println!(
        "[{}] SLA `{}` breached for order {}: due at {}, noticed at {}; paging the warehouse",
        clock.now(),
        breach.sla,
        breach.key,
        breach.due_at.format("%H:%M:%S%.3f"),
        breach.breached_at.format("%H:%M:%S%.3f"),
    );
}

/// One picker: a pick that waits longer than 200 ms to start is logged and counted.
#[async_handler(pool = "warehouse", start_within = "200ms")]
async fn pick(event: Pick, State(clock): State<Clock>) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("[{}] order {} picked", clock.now(), event.order_id);
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Herald's warnings: each breach, and each late start.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("herald_core=warn"))
        .with_target(false)
        .init();
    let dir = tempfile::tempdir()?;
    let pool = outbox::sqlite::connect(dir.path().join("shop.db")).await?;
    let outbox = SqliteOutbox::new(pool.clone()).await?;
    let clock = Clock(Instant::now());

    let herald = Herald::builder()
        .handlers_under(module_path!())
        .state(clock.clone())
        .pool("warehouse", PoolConfig::new().concurrency(1))
        .sla(order_shipped())
        .sla_store(outbox.clone())
        .sla_sweep_interval(Duration::from_millis(100))
        .build()?;
    print!("{}", herald.routes());
    let relay = outbox
        .relay(&herald)
        .poll_interval(Duration::from_millis(50))
        .start();

    // Three orders, each written with its OrderPlaced in one transaction.
    let mut placed = Vec::new();
    for order_id in 1..=3 {
        let mut tx = pool.begin().await?;
        // ... INSERT INTO orders ... on `&mut *tx` ...
        placed.push(outbox.publish(&mut *tx, OrderPlaced { order_id }).await?);
        tx.commit().await?;
    }
    println!("[{}] orders 1, 2 and 3 placed", clock.now());

    let ship = |order_id| {
        let (pool, outbox) = (pool.clone(), outbox.clone());
        async move {
            let mut tx = pool.begin().await?;
            // ... UPDATE orders SET shipped ... on `&mut *tx` ...
            outbox.publish(&mut *tx, OrderShipped { order_id }).await?;
            tx.commit().await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    ship(1).await?;
    println!("[{}] order 1 shipped", clock.now());

    // Two picks arrive together; the second waits for the only picker.
    for order_id in [4, 5] {
        drop(herald.publish(Pick { order_id }).await?);
    }

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    ship(3).await?;
    println!("[{}] order 3 shipped, late", clock.now());
    tokio::time::sleep(Duration::from_millis(300)).await;

    for (order, id) in placed.iter().enumerate() {
        if let Some(expectation) = herald.sla_expectation("order-shipped", *id).await? {
            println!("order {}: {}", order + 1, expectation.state);
        }
    }
    for status in herald.sla_status().await? {
        println!(
            "SLA {}: {} pending, {} fulfilled, {} fulfilled late, {} breached",
            status.sla, status.pending, status.fulfilled, status.fulfilled_late, status.breached
        );
    }
    relay.stop().await;
    let report = herald.shutdown(Duration::from_secs(5)).await;
    let pick_counts = report
        .ledger
        .handlers
        .iter()
        .find(|(name, _)| name.ends_with("::pick"))
        .map(|(_, counts)| *counts)
        .unwrap_or_default();
    println!("picks started late: {}", pick_counts.start_late);
    print!("{}", report.ledger);
    Ok(())
}
