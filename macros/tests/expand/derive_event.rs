use herald::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.canceled", key = order_id)]
pub struct OrderCanceled {
    pub order_id: u64,
    pub reason: String,
}

// No attribute: the wire name is the type's name.
#[derive(Clone, Serialize, Deserialize, Event)]
enum CatalogChanged {
    Added(u64),
    Removed(u64),
}
