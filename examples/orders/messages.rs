//! The messages the order service and the notification service share: both binaries include this
//! file (`#[path = "messages.rs"] mod messages;`), so the wire name and the JSON shape are written
//! once. A service in another language produces or consumes the same JSON (`docs/WIRE.md`).

use herald::Event;
use serde::{Deserialize, Serialize};

/// An order was placed: published by the order service in the transaction that inserts the order,
/// handled by the notification service (one e-mail, one points grant).
///
/// Keyed by customer: the route forwards one customer's orders in commit order.
#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "orders.order_placed", key = customer)]
pub(crate) struct OrderPlaced {
    /// The order's id in the order service's database.
    pub(crate) order_id: i64,
    /// Who placed it (the ordering key).
    pub(crate) customer: String,
    /// The order's total, in cents.
    pub(crate) total_cents: i64,
    /// Loyalty points the order earns.
    pub(crate) points: i64,
}
