use herald::{async_handler, Event};
use serde::{Deserialize, Serialize};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: u64,
}

#[async_handler]
async fn send_receipt<M: Send>(_event: OrderPlaced, _extra: M) {}

fn main() {}
