use herald::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(nmae = "order.canceled", key = order_id)]
struct OrderCanceled {
    order_id: u64,
}

fn main() {}
