//! One call of one handler: the message, its envelope, the attempt, and what the handler may take
//! from its surroundings (registered state, and what the engine adds, such as the `Bus`).
//!
//! The invocation does not hold the runtime. Like axum, which hands a handler the request's parts and
//! the state it asked for, the engine hands each call an [`InvocationContext`]: extractors take what
//! they need from it (`State<T>` a registered value, `Meta` the envelope), and extractors defined by
//! the engine itself (`Bus`) find their own part through [`InvocationContext::engine`].

use crate::model::envelope::Envelope;
use crate::model::error::{HandlerError, HandlerErrorKind};
use crate::model::message::{Message, Payload};
use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

/// What one message's calls can see, provided by whoever runs the handlers (the engine).
pub trait InvocationContext: Send + Sync + fmt::Debug + 'static {
    /// The message's envelope.
    fn envelope(&self) -> &Envelope;
    /// The message itself, type-erased.
    fn payload(&self) -> &Payload;
    /// A state value registered on the builder, by its type.
    fn state(&self, type_id: TypeId) -> Option<&(dyn Any + Send + Sync)>;
    /// The runner's own part, for extractors the runner defines (the engine's `Bus` downcasts it).
    fn engine(&self) -> &(dyn Any + Send + Sync);
}

/// Everything a generated handler call needs. Built by the dispatcher for each attempt.
#[derive(Debug, Clone)]
pub struct Invocation {
    context: Arc<dyn InvocationContext>,
    attempt: u32,
    handler: &'static str,
}

impl Invocation {
    /// An invocation of `handler`, attempt `attempt`, on the message `context` carries.
    pub fn new(context: Arc<dyn InvocationContext>, attempt: u32, handler: &'static str) -> Self {
        Invocation {
            context,
            attempt,
            handler,
        }
    }

    /// The typed message (a clone: each handler owns its copy).
    ///
    /// # Errors
    /// When the payload is not an `M`, which means two message types share one wire name.
    pub fn message<M: Message>(&self) -> Result<M, HandlerError> {
        self.context
            .payload()
            .downcast_ref::<M>()
            .cloned()
            .ok_or_else(|| {
                HandlerError::with_kind(
                    HandlerErrorKind::Malformed,
                    format!(
                        "message `{}` is not a `{}`: two message types share this wire name; give each a unique `name`",
                        self.context.envelope().name,
                        std::any::type_name::<M>()
                    ),
                )
            })
    }

    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        self.context.envelope()
    }

    /// The attempt number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The handler being called.
    pub fn handler(&self) -> &'static str {
        self.handler
    }

    /// A state value registered on the builder with `.state(..)`, cloned.
    pub fn state<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.context
            .state(TypeId::of::<T>())
            .and_then(|value| value.downcast_ref::<T>())
            .cloned()
    }

    /// The context shared by every call for this message.
    pub fn context(&self) -> &Arc<dyn InvocationContext> {
        &self.context
    }
}
