//! The transactional outbox on the embedded SQLite default.
//!
//! An order and its `OrderPlaced` event are written in one database transaction: the event is
//! delivered if and only if the order commits. A relay reads the outbox and runs the handler, which
//! grants loyalty points in its own transaction through the durable inbox, so a redelivery never
//! grants twice. Then the stored events are read back in commit order, as an external consumer would.
//!
//! Run it with `cargo run --example outbox`.

use herald::inbox::SqliteInbox;
use herald::outbox::{self, SqliteOutbox};
use herald::sqlx::{self, SqlitePool};
use herald::{async_handler, Event, HandlerError, Herald};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.placed", key = customer)]
struct OrderPlaced {
    order: String,
    customer: String,
    points: i64,
}

#[async_handler(retry(max_attempts = 5, backoff = exponential(100ms, 2.0, 5s)))]
async fn grant_loyalty_points(event: OrderPlaced, inbox: SqliteInbox) -> Result<(), HandlerError> {
    // `begin` records this message in the inbox inside the transaction; if its effects were already
    // committed, it returns a duplicate and the handler is skipped.
    let mut tx = inbox.begin().await?;
    sqlx::query("INSERT INTO points (customer, points) VALUES (?1, ?2) ON CONFLICT (customer) DO UPDATE SET points = points + ?2")
        .bind(&event.customer)
        .bind(event.points)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    println!(
        "  [handler] {} points for {} (order {})",
        event.points, event.customer, event.order
    );
    Ok(())
}

async fn place_order(
    pool: &SqlitePool,
    outbox: &SqliteOutbox,
    order: &str,
    commit: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO orders (id, customer) VALUES (?1, 'kim')")
        .bind(order)
        .execute(&mut *tx)
        .await?;
    outbox
        .publish(
            &mut *tx,
            OrderPlaced {
                order: order.into(),
                customer: "kim".into(),
                points: 10,
            },
        )
        .await?;
    if commit {
        tx.commit().await?;
        println!("order {order}: committed (its event will be delivered)");
    } else {
        tx.rollback().await?;
        println!("order {order}: rolled back (its event never existed)");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("herald-outbox-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pool = outbox::sqlite::connect(dir.join("app.db")).await?;
    let outbox = SqliteOutbox::new(pool.clone()).await?; // applies Herald's migrations
    sqlx::query("CREATE TABLE orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    sqlx::query("CREATE TABLE points (customer TEXT PRIMARY KEY, points INTEGER NOT NULL)")
        .execute(&pool)
        .await?;

    let herald = Herald::builder()
        .handlers_under(module_path!())
        .state(pool.clone())
        .dead_letters(outbox.dead_letters())
        .build()?;
    let relay = outbox
        .relay(&herald)
        .batch_size(100)
        .poll_interval(Duration::from_millis(20))
        .start();

    place_order(&pool, &outbox, "A-1", true).await?;
    place_order(&pool, &outbox, "A-2", false).await?;
    place_order(&pool, &outbox, "A-3", true).await?;

    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox.status().await?.pending > 0 {
        if Instant::now() > deadline {
            return Err("the relay did not deliver in time".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = outbox.status().await?;
    println!(
        "outbox: {} processed, {} pending, {} failed, {} dead letters",
        status.processed, status.pending, status.failed, status.dead_letters
    );

    let points: i64 = sqlx::query_scalar("SELECT points FROM points WHERE customer = 'kim'")
        .fetch_one(&pool)
        .await?;
    println!("kim has {points} points (10 per committed order)");

    println!("stored events in commit order (what `herald events tail --after 0` shows):");
    for event in outbox.events_after(0, 100).await? {
        println!(
            "  #{} {} {} {}",
            event.position, event.message_type, event.payload, event.status
        );
    }

    relay.stop().await;
    herald.shutdown(Duration::from_secs(5)).await;
    std::fs::remove_dir_all(&dir)?;
    if points != 20 {
        return Err(format!("expected 20 points, found {points}").into());
    }
    Ok(())
}
