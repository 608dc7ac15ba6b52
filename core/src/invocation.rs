//! One call of one handler: the message, its envelope, the attempt and the runtime.

use crate::dispatch::Dispatch;
use crate::envelope::Envelope;
use crate::error::{HandlerError, HandlerErrorKind};
use crate::message::Message;
use crate::runtime::Herald;
use std::sync::Arc;

/// Everything a generated handler call needs. Built by the dispatcher for each attempt.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub(crate) dispatch: Arc<Dispatch>,
    pub(crate) attempt: u32,
    pub(crate) handler: &'static str,
}

impl Invocation {
    /// The typed message (a clone: each handler owns its copy).
    ///
    /// # Errors
    /// When the payload is not an `M`, which means two message types share one wire name.
    pub fn message<M: Message>(&self) -> Result<M, HandlerError> {
        self.dispatch.payload.downcast_ref::<M>().cloned().ok_or_else(|| {
            HandlerError::with_kind(
                HandlerErrorKind::Malformed,
                format!(
                    "message `{}` is not a `{}`: two message types share this wire name; give each a unique `name`",
                    self.dispatch.envelope.name,
                    std::any::type_name::<M>()
                ),
            )
        })
    }

    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.dispatch.envelope
    }

    /// The attempt number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The handler being called.
    pub fn handler(&self) -> &'static str {
        self.handler
    }

    /// The runtime.
    pub fn herald(&self) -> &Herald {
        &self.dispatch.herald
    }
}
