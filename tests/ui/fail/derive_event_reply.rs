use herald::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(reply = u64)]
struct OrderPlaced {
    order_id: u64,
}

fn main() {}
