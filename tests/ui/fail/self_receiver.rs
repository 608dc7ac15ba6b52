use herald::{async_handler, Event};
use serde::{Deserialize, Serialize};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: u64,
}

struct Mailer;

impl Mailer {
    #[async_handler]
    async fn send_receipt(&self, _event: OrderPlaced) {}
}

fn main() {}
