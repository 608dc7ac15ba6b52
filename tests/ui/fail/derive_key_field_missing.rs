use herald::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.canceled", key = order)]
struct OrderCanceled {
    order_id: u64,
    reason: String,
}

fn main() {}
