use herald::{async_handler, Event};
use serde::{Deserialize, Serialize};
use std::rc::Rc;

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: u64,
}

async fn save(_order_id: u64) {}

#[async_handler]
async fn send_receipt(event: OrderPlaced) {
    let counter = Rc::new(event.order_id);
    save(event.order_id).await;
    let _ = counter;
}

fn main() {}
