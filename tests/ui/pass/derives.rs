//! The derives on structs and enums, with and without attributes.
use herald::{Command, Event, Message, MessageKind};
use serde::{Deserialize, Serialize};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.canceled", key = order_id)]
struct OrderCanceled {
    order_id: u64,
    reason: String,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
enum CatalogChanged {
    Added(u64),
    Removed(u64),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Granted(u32);

#[derive(Command, Clone, Debug, Serialize, Deserialize)]
#[command(name = "points.grant")]
#[command(reply = Granted, key = user)]
struct GrantPoints {
    user: String,
}

const _: () = assert!(<OrderCanceled as Message>::HAS_KEY);
const _: () = assert!(!<CatalogChanged as Message>::HAS_KEY);

fn main() {
    assert_eq!(<OrderCanceled as Message>::NAME, "order.canceled");
    assert_eq!(<CatalogChanged as Message>::NAME, "CatalogChanged");
    assert_eq!(<GrantPoints as Message>::KIND, MessageKind::Command);
    let canceled = OrderCanceled {
        order_id: 7,
        reason: String::new(),
    };
    assert_eq!(canceled.key().as_deref(), Some("7"));
    let _ = (
        CatalogChanged::Added(1),
        CatalogChanged::Removed(1),
        canceled.reason,
    );
    let _reply: <GrantPoints as Message>::Reply = Granted(1);
}
