use herald::{async_handler, Event};
use serde::{Deserialize, Serialize};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
struct PaymentRequested {
    order_id: u64,
}

// Both mistakes are reported at once, each at its own span.
#[async_handler(circuit_breaker(failures = 0, cooldown = "30s"))]
async fn charge(_event: PaymentRequested) {}

fn main() {}
