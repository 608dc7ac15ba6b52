//! The order service: an HTTP endpoint that takes orders and hands `OrderPlaced` to RabbitMQ
//! through the transactional outbox.
//!
//! The flow of one order:
//! 1. `POST /orders` (axum 0.8) with `{"customer": "kim", "total_cents": 1299}` opens one SQLite
//!    transaction, inserts the order row and publishes `OrderPlaced` into the outbox table
//!    (`herald_outbox`) on that same transaction, then commits: the event exists if and only if
//!    the order does. The client gets `201 {"order_id": 7, "points": 12}`.
//! 2. The outbox relay claims the committed row and delivers it to its only handler, the route
//!    `.route::<OrderPlaced>().to(broker.sink())`, which publishes the wire envelope (`docs/WIRE.md`) to
//!    the RabbitMQ queue and succeeds only on the broker's publisher confirm.
//! 3. Only then is the row marked processed. A refused or unconfirmed publish (broker down) is
//!    retried with the route's backoff, and after the last attempt the row goes to the dead
//!    letters (`herald dead-letters`), never silently lost.
//!
//! A kill -9 loses nothing: a committed row not yet confirmed is still pending and is forwarded
//! after the restart (once its lease, `--relay-lease-secs`, runs out). A row whose confirm
//! arrived just before the kill is forwarded again with the same message id, and the consumer's
//! durable inbox drops the copy. SIGTERM or Ctrl-C stops cleanly: the server stops accepting,
//! the relay finishes its batch, Herald shuts down.
//!
//! Run it (RabbitMQ on 127.0.0.1:5672, guest/guest) beside `notifications-service`:
//!
//! ```sh
//! cargo run --features rabbitmq --example orders-service -- --port 3000 --database orders.db
//! # or over Kafka (a broker on 127.0.0.1:9092):
//! cargo run --features rabbitmq,kafka --example orders-service -- --transport kafka --database orders.db
//! curl -i -X POST localhost:3000/orders -H 'content-type: application/json' \
//!      -d '{"customer":"kim","total_cents":1299}'
//! ```
//!
//! `--help` lists every flag and its environment variable.

// Shared by both services: each uses its own half (the publisher or the consumer side).
#[allow(dead_code)]
#[path = "broker.rs"]
mod broker;
#[path = "messages.rs"]
mod messages;

use axum::extract::State as WebState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use herald::outbox::{self, OutboxPublishError, SqliteOutbox};
use herald::sqlx::{self, SqlitePool};
use herald::Herald;
use messages::OrderPlaced;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Takes orders over HTTP and forwards `OrderPlaced` to RabbitMQ through the outbox.
#[derive(Debug, Parser)]
#[command(name = "orders-service")]
struct Args {
    /// The HTTP port on 127.0.0.1 (0 picks a free one; the address is printed).
    #[arg(long, env = "ORDERS_PORT", default_value_t = 3000)]
    port: u16,
    /// The service's SQLite database: orders and the outbox (created if missing).
    #[arg(long, env = "ORDERS_DATABASE", default_value = "orders.db")]
    database: PathBuf,
    /// How long a relay's claim on an outbox row lasts: after a kill -9, the rows it had claimed
    /// are forwarded again once this runs out.
    #[arg(long, env = "ORDERS_RELAY_LEASE_SECS", default_value_t = 10)]
    relay_lease_secs: u64,
    #[command(flatten)]
    broker: broker::BrokerArgs,
}

/// The web app's state.
#[derive(Clone)]
struct App {
    pool: SqlitePool,
    outbox: SqliteOutbox,
}

#[derive(Debug, Deserialize)]
struct NewOrder {
    customer: String,
    total_cents: i64,
}

#[derive(Debug, Serialize)]
struct PlacedOrder {
    order_id: i64,
    points: i64,
}

/// Why an order was not placed, as the client sees it.
#[derive(Debug, thiserror::Error)]
enum OrderError {
    #[error("{0}")]
    Invalid(&'static str),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Outbox(#[from] OutboxPublishError<OrderPlaced>),
}

impl IntoResponse for OrderError {
    fn into_response(self) -> Response {
        let status = match self {
            OrderError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            OrderError::Database(_) | OrderError::Outbox(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "an order was not placed");
        }
        (status, self.to_string()).into_response()
    }
}

/// The order row and its event, in one transaction: both commit or neither does.
async fn place_order(
    WebState(app): WebState<App>,
    Json(order): Json<NewOrder>,
) -> Result<(StatusCode, Json<PlacedOrder>), OrderError> {
    if order.customer.trim().is_empty() {
        return Err(OrderError::Invalid("`customer` is empty"));
    }
    if order.total_cents < 0 {
        return Err(OrderError::Invalid("`total_cents` is negative"));
    }
    let points = order.total_cents / 100; // one point per whole unit of currency
    let mut tx = app.pool.begin().await?;
    let order_id: i64 = sqlx::query_scalar(
        "INSERT INTO orders (customer, total_cents, placed_at) VALUES (?1, ?2, datetime('now')) RETURNING id",
    )
    .bind(&order.customer)
    .bind(order.total_cents)
    .fetch_one(&mut *tx)
    .await?;
    let event = OrderPlaced {
        order_id,
        customer: order.customer,
        total_cents: order.total_cents,
        points,
    };
    app.outbox.publish(&mut *tx, event).await?;
    tx.commit().await?; // only now can the relay see the event
    Ok((StatusCode::CREATED, Json(PlacedOrder { order_id, points })))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    broker::init_logging();
    let args = Args::parse();

    let pool = outbox::sqlite::connect(&args.database).await?;
    let outbox = SqliteOutbox::new(pool.clone()).await?; // applies Herald's migrations
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS orders (
             id INTEGER PRIMARY KEY,
             customer TEXT NOT NULL,
             total_cents INTEGER NOT NULL,
             placed_at TEXT NOT NULL
         )",
    )
    .execute(&pool)
    .await?;

    // Publish only: this service never consumes the queue it feeds.
    let broker = args.broker.connect(broker::Role::Publisher).await?;
    let herald = Herald::builder()
        .route::<OrderPlaced>()
        .to(broker.sink())
        .dead_letters(outbox.dead_letters())
        .build()?;
    let relay = outbox
        .relay(&herald)
        .batch_size(100)
        .lease(Duration::from_secs(args.relay_lease_secs.max(1)))
        .poll_interval(Duration::from_millis(20))
        .start();

    let app = Router::new()
        .route("/orders", post(place_order))
        .with_state(App {
            pool: pool.clone(),
            outbox: outbox.clone(),
        });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|error| {
            format!(
                "cannot listen on 127.0.0.1:{}: {error}; pick another `--port` (0 for any free one)",
                args.port
            )
        })?;
    let addr = listener.local_addr()?;
    tracing::info!(routes = %herald.routes(), "routing table");
    // The one line on stdout: scripts and the tests wait for it.
    println!("orders-service listening on http://{addr}");

    let stopped_by = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let signal = broker::until_stopped().await;
            tracing::info!("{signal}: stopping");
        })
        .await;
    let stats = relay.stop().await;
    herald.shutdown(Duration::from_secs(5)).await;
    broker.close().await;
    let status = outbox.status().await?;
    tracing::info!(
        forwarded = stats.processed,
        pending = status.pending,
        failed = status.failed,
        "stopped; pending rows are forwarded after the next start"
    );
    pool.close().await;
    stopped_by?;
    Ok(())
}
