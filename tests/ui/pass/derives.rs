//! The derives on structs and enums, with and without attributes; `main` reads back the registration.
use herald::__private::{inventory, MessageDescriptor};
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

    let descriptor = inventory::iter::<MessageDescriptor>
        .into_iter()
        .find(|descriptor| descriptor.name == "order.canceled")
        .expect("registered message");
    assert_eq!(descriptor.kind, MessageKind::Event);
    assert_eq!(descriptor.rust_type, "OrderCanceled");
    assert_eq!(
        descriptor.line, 8,
        "the line of `struct OrderCanceled`, not of the derive"
    );
    let payload = (descriptor.decode)(br#"{"order_id": 3, "reason": "late"}"#).expect("decodes");
    assert_eq!(payload.key().as_deref(), Some("3"));
    let names: Vec<&str> = inventory::iter::<MessageDescriptor>
        .into_iter()
        .map(|d| d.name)
        .collect();
    for name in ["CatalogChanged", "points.grant"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
}
