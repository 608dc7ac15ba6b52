use herald::{async_handler, Event};
use serde::{Deserialize, Serialize};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: u64,
}

#[async_handler(retry(max_attempts = 0))]
async fn send_receipt(_event: OrderPlaced) {}

fn main() {}
