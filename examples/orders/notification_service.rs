//! The notification service: consumes `OrderPlaced` from RabbitMQ and, for each order, "e-mails"
//! the customer and grants loyalty points, each exactly once in effect.
//!
//! The flow of one delivery:
//! 1. The RabbitMQ transport consumes the durable queue with manual acks (at most `--prefetch`
//!    unacked at once); a relay (`Relay::builder(broker.source(), &herald)`) hands each delivery
//!    to Herald, which runs both handlers below.
//! 2. Each handler opens its transaction with the durable inbox (`inbox.begin()`), which records
//!    "handler H processed message M" in `herald_inbox` inside that transaction; the handler writes
//!    its effect (a row in `emails`, or a row in `point_grants` plus the customer's balance in
//!    `points`) and commits both together.
//! 3. When both handlers are done, the delivery is acked. A handler that fails is retried through
//!    the transport's delay queue (the handler that succeeded is not run again), and after its
//!    last attempt the message goes to the dead letters in this service's database.
//!
//! With `--transport kafka` the same flow runs on a Kafka topic read by the consumer group
//! `--kafka-group` (default `notifications-service`): "acked" means the partition's done
//! watermark passed the message and was committed, and a retry holds the customer's lane in this
//! process (Kafka has no per-message nack). A kill -9 makes the group's next member read again from the last committed offset.
//!
//! A kill -9 between a commit and the ack makes RabbitMQ deliver the message again after the
//! restart: the inbox finds the handler's row, the handler is skipped (`Deduplicated`), and the
//! delivery is acked. A kill before the commit rolls the effect and the inbox row back together,
//! so the redelivery does the work. SIGTERM or Ctrl-C stops cleanly: the relay settles what it
//! holds, Herald shuts down, unacked deliveries go back to the queue.
//!
//! Run it (RabbitMQ on 127.0.0.1:5672, guest/guest) beside `orders-service`:
//!
//! ```sh
//! cargo run --features rabbitmq --example notifications-service -- --database notifications.db
//! # or over Kafka, beside `orders-service --transport kafka`:
//! cargo run --features rabbitmq,kafka --example notifications-service -- --transport kafka --database notifications.db
//! sqlite3 notifications.db 'SELECT * FROM emails; SELECT * FROM points;'
//! ```
//!
//! `--help` lists every flag and its environment variable.

// Shared by both services: each uses its own half (the publisher or the consumer side).
#[allow(dead_code)]
#[path = "broker.rs"]
mod broker;
#[path = "messages.rs"]
mod messages;

use clap::Parser;
use herald::inbox::SqliteInbox;
use herald::outbox::{self, Relay, SqliteOutbox};
use herald::sqlx;
use herald::{async_handler, HandlerError, Herald};
use messages::OrderPlaced;
use std::path::PathBuf;
use std::time::Duration;

/// Consumes `OrderPlaced` from RabbitMQ: one e-mail and one points grant per order.
#[derive(Debug, Parser)]
#[command(name = "notifications-service")]
struct Args {
    /// The service's SQLite database: e-mails, points, the inbox and dead letters (created if
    /// missing).
    #[arg(
        long,
        env = "NOTIFICATIONS_DATABASE",
        default_value = "notifications.db"
    )]
    database: PathBuf,
    /// Deliveries RabbitMQ sends before the first is acked.
    #[arg(long, env = "NOTIFICATIONS_PREFETCH", default_value_t = 64)]
    prefetch: u16,
    #[command(flatten)]
    broker: broker::BrokerArgs,
}

/// "Sends" the order confirmation: a row in `emails`, committed with the inbox record.
#[async_handler(retry(max_attempts = 5, backoff = exponential(200ms, 2.0, 5s)), timeout = "10s")]
async fn email_order_confirmation(
    order: OrderPlaced,
    inbox: SqliteInbox,
) -> Result<(), HandlerError> {
    // Err(duplicate) when this handler already committed this message: skipped, then acked.
    let mut tx = inbox.begin().await?;
    sqlx::query(
        "INSERT INTO emails (order_id, recipient, subject, message_id, sent_at)
         VALUES (?1, ?2, ?3, ?4, datetime('now'))",
    )
    .bind(order.order_id)
    .bind(&order.customer)
    .bind(format!(
        "Order #{} confirmed: {}.{:02} (+{} points)",
        order.order_id,
        order.total_cents / 100,
        order.total_cents % 100,
        order.points
    ))
    .bind(inbox.message_id())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?; // the e-mail row and the inbox row, or neither
    Ok(())
}

/// Grants the order's points: a row in `point_grants` and the customer's balance in `points`,
/// committed with the inbox record.
#[async_handler(retry(max_attempts = 5, backoff = exponential(200ms, 2.0, 5s)), timeout = "10s")]
async fn grant_loyalty_points(order: OrderPlaced, inbox: SqliteInbox) -> Result<(), HandlerError> {
    let mut tx = inbox.begin().await?;
    sqlx::query("INSERT INTO point_grants (order_id, customer, points) VALUES (?1, ?2, ?3)")
        .bind(order.order_id)
        .bind(&order.customer)
        .bind(order.points)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO points (customer, balance) VALUES (?1, ?2)
         ON CONFLICT (customer) DO UPDATE SET balance = balance + excluded.balance",
    )
    .bind(&order.customer)
    .bind(order.points)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The service's own tables. No unique index on `order_id`: exactly once is the inbox's job, and
/// a duplicate would show as a second row instead of being hidden by a constraint.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS emails (
    id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sent_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS point_grants (
    id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL,
    customer TEXT NOT NULL,
    points INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS points (
    customer TEXT PRIMARY KEY,
    balance INTEGER NOT NULL
);
";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    broker::init_logging();
    let args = Args::parse();

    let pool = outbox::sqlite::connect(&args.database).await?;
    // Herald's migrations: the inbox and the dead letters (the outbox table stays unused here).
    let store = SqliteOutbox::new(pool.clone()).await?;
    sqlx::raw_sql(SCHEMA).execute(&pool).await?;

    let herald = Herald::builder()
        .handlers_under(module_path!())
        .state(pool.clone()) // for the inbox
        .dead_letters(store.dead_letters())
        .build()?;
    let broker = args
        .broker
        .connect(broker::Role::Consumer {
            prefetch: args.prefetch,
        })
        .await?;
    let relay = Relay::builder(broker.source(), &herald)
        .batch_size(usize::from(args.prefetch.max(1)))
        .poll_interval(Duration::from_millis(20))
        .start();
    // The one line on stdout: scripts and the tests wait for it.
    println!(
        "notifications-service consuming queue {}",
        args.broker.queue
    );

    let signal = broker::until_stopped().await;
    tracing::info!("{signal}: stopping");
    let stats = relay.stop().await;
    herald.shutdown(Duration::from_secs(5)).await;
    broker.close().await;
    tracing::info!(
        handled = stats.processed,
        failed = stats.failed,
        "stopped; unacked deliveries go back to the queue"
    );
    pool.close().await;
    Ok(())
}
