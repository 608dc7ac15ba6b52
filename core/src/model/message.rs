//! What travels through Herald: events (something happened) and commands (a request with one owner).

use serde::{de::DeserializeOwned, Serialize};
use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// Whether a message is an event (any number of handlers) or a command (exactly one handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Something happened; every handler of it reacts.
    Event,
    /// Something is asked for; exactly one handler owns it and returns a reply.
    Command,
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageKind::Event => "event",
            MessageKind::Command => "command",
        })
    }
}

/// A message Herald can route. Implemented by `#[derive(Event)]` and `#[derive(Command)]`;
/// writing it by hand is possible but the derives also register the message for start-up checks.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Herald message",
    label = "the first handler argument must be an event or a command",
    note = "add `#[derive(herald::Event)]` (something happened) or `#[derive(herald::Command)]` (a request with one owner) to `{Self}`"
)]
pub trait Message: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable wire name, e.g. `order.canceled`. It must not change once messages are stored.
    const NAME: &'static str;
    /// Event or command.
    const KIND: MessageKind;
    /// What a handler returns: `()` for events, the declared reply for commands.
    type Reply: Send + 'static;
    /// Whether the message declares an ordering key (`ordered` handlers need one).
    const HAS_KEY: bool = false;

    /// The ordering key (`#[event(key = field)]`): messages with the same key can be handled in order.
    fn key(&self) -> Option<String> {
        None
    }
}

/// Marker for messages that say something happened. Any number of handlers may react.
pub trait Event: Message<Reply = ()> {}

/// Marker for messages that ask for something. Exactly one handler owns a command.
pub trait Command: Message {}

/// Link-time record of a message type, submitted by the derives so that `build()` can check that every
/// command has exactly one handler, and so that stored payloads can be decoded again.
#[derive(Debug)]
pub struct MessageDescriptor {
    /// Wire name.
    pub name: &'static str,
    /// Event or command.
    pub kind: MessageKind,
    /// The Rust type as written at the derive.
    pub rust_type: &'static str,
    /// `module_path!()` of the derive.
    pub module: &'static str,
    /// Source file of the derive.
    pub file: &'static str,
    /// Source line of the derive.
    pub line: u32,
    /// Decodes a stored JSON payload into the typed message.
    pub decode: fn(&[u8]) -> Result<Payload, serde_json::Error>,
}

inventory::collect!(MessageDescriptor);

/// A type-erased message shared by every handler it fans out to (one allocation per publish).
#[derive(Clone)]
pub struct Payload(Arc<dyn ErasedMessage>);

trait ErasedMessage: Send + Sync + 'static {
    fn as_any(&self) -> &dyn Any;
    fn to_json(&self) -> serde_json::Value;
    fn key(&self) -> Option<String>;
}

impl<M: Message> ErasedMessage for M {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(
            |e| serde_json::json!({ "herald_error": format!("payload could not be serialized: {e}") }),
        )
    }
    fn key(&self) -> Option<String> {
        Message::key(self)
    }
}

impl Payload {
    /// Wraps a typed message.
    pub fn new<M: Message>(message: M) -> Self {
        Payload(Arc::new(message))
    }

    /// Decodes JSON bytes into `M`; used by the derives' decode functions.
    ///
    /// # Errors
    /// The serde error when the bytes are not a valid `M`.
    pub fn decode<M: Message>(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice::<M>(bytes).map(Payload::new)
    }

    /// Borrows the typed message, if it is an `M`.
    pub fn downcast_ref<M: Message>(&self) -> Option<&M> {
        self.0.as_any().downcast_ref::<M>()
    }

    /// The payload as JSON (for dead letters, logs and the outbox).
    pub fn to_json(&self) -> serde_json::Value {
        self.0.to_json()
    }

    /// The message's ordering key.
    pub fn key(&self) -> Option<String> {
        self.0.key()
    }

    /// The typed message, for code that knows its type only at run time (an SLA's correlation).
    pub(crate) fn as_any(&self) -> &dyn Any {
        self.0.as_any()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({})", self.to_json())
    }
}
