use herald::{async_handler, Event};
use serde::{Deserialize, Serialize};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: u64,
}

// A zero deadline, and a number without a unit.
#[async_handler(start_within = "0s")]
async fn send_receipt(_event: OrderPlaced) {}

#[async_handler(start_within = 30)]
async fn archive(_event: OrderPlaced) {}

fn main() {}
