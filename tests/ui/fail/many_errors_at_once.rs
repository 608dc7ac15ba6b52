// One expansion reports every mistake, and nothing cascades from them.
use herald::{async_handler, Event};
use serde::{Deserialize, Serialize};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(key = id)]
struct OrderPlaced {
    order_id: u64,
}

#[async_handler(timout = "5s", rate = "fast", on_failure = retry)]
fn send_receipt(event: OrderPlaced) {
    let _ = event.order_id;
}

fn main() {
    // Still callable: the function is kept as written.
    send_receipt(OrderPlaced { order_id: 1 });
}
