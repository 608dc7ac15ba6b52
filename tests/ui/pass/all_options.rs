//! Every option at once, and each retry part on its own.
use herald::{async_handler, Event};
use serde::{Deserialize, Serialize};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.placed", key = order_id)]
struct OrderPlaced {
    order_id: u64,
}

#[async_handler(
    name = "billing.charge",
    pool = "billing",
    retry(max_attempts = 5, backoff = exponential(100ms, 2.0, 10s), jitter),
    timeout = "1.5s",
    on_failure = dead_letter,
    rate = "180/s",
    dedupe,
    ordered,
)]
async fn charge(_event: OrderPlaced) {}

#[async_handler(retry(max_attempts = 1), on_failure = log, rate = "5/ms")]
async fn notify(_event: OrderPlaced) {}

#[async_handler(retry(backoff = fixed(250ms)), on_failure = ignore, timeout = 2m, rate = "1000/m")]
async fn archive(_event: OrderPlaced) {}

#[async_handler(retry(jitter), timeout = "500us")]
async fn index(_event: OrderPlaced) {}

fn main() {}
