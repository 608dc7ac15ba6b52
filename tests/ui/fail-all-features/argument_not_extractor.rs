use herald::{async_handler, Event};
use serde::{Deserialize, Serialize};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: u64,
}

struct Mailer;

#[async_handler]
async fn send_receipt(_event: OrderPlaced, _mailer: Mailer) {}

fn main() {}
