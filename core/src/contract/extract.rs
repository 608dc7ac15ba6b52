//! Handler arguments after the message, in the axum style: `State<T>` and `Meta` (the engine adds
//! `Bus`, in `bus.rs`).

use crate::contract::invocation::{Invocation, InvocationContext};
use crate::model::envelope::{Envelope, Headers, MessageId};
use crate::model::error::{HandlerError, HandlerErrorKind};
use std::any::TypeId;
use std::ops::Deref;
use std::sync::Arc;

/// A state type an extractor needs; `build()` checks that it was registered with `.state(..)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    /// The state's type id.
    pub type_id: TypeId,
    /// The state's type name, for error messages.
    pub type_name: &'static str,
}

/// Something a handler can take as an argument after the message.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler argument",
    label = "not an extractor",
    note = "after the message, a handler takes `State<T>` (state registered with `Herald::builder().state(..)`), `Meta` (id, attempt, headers) or `Bus` (to publish follow-ups)"
)]
pub trait FromInvocation: Sized {
    /// The registered state this extractor needs, if any.
    fn requirement() -> Option<Requirement> {
        None
    }

    /// Builds the argument for one attempt.
    ///
    /// # Errors
    /// When what it needs is missing; the attempt then fails with that error.
    fn from_invocation(invocation: &Invocation) -> Result<Self, HandlerError>;
}

/// Shared state registered on the builder with `.state(value)`: `State(db): State<Db>`.
///
/// `T` is cloned for each call, so make it cheap to clone (an `Arc` or a pool handle).
#[derive(Debug, Clone, Copy, Default)]
pub struct State<T>(pub T);

impl<T> Deref for State<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Clone + Send + Sync + 'static> FromInvocation for State<T> {
    fn requirement() -> Option<Requirement> {
        Some(Requirement {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
        })
    }

    fn from_invocation(invocation: &Invocation) -> Result<Self, HandlerError> {
        invocation.state::<T>().map(State).ok_or_else(|| {
            HandlerError::with_kind(
                HandlerErrorKind::Extraction,
                format!(
                    "state `{}` is not registered: add `.state(..)` to the builder",
                    std::any::type_name::<T>()
                ),
            )
        })
    }
}

/// The message's metadata for this attempt: id, attempt number, headers, the caller's idempotency key.
#[derive(Debug, Clone)]
pub struct Meta {
    context: Arc<dyn InvocationContext>,
    attempt: u32,
    handler: &'static str,
}

impl Meta {
    /// The message id.
    pub fn id(&self) -> MessageId {
        self.context.envelope().id
    }
    /// The attempt number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// The handler running.
    pub fn handler(&self) -> &'static str {
        self.handler
    }
    /// Correlation, causation and free-form headers.
    pub fn headers(&self) -> &Headers {
        &self.context.envelope().headers
    }
    /// The correlation id (the root message's id when none was set).
    pub fn correlation_id(&self) -> MessageId {
        self.context.envelope().correlation_id()
    }
    /// The whole envelope.
    pub fn envelope(&self) -> &Envelope {
        self.context.envelope()
    }
}

impl FromInvocation for Meta {
    fn from_invocation(invocation: &Invocation) -> Result<Self, HandlerError> {
        Ok(Meta {
            context: invocation.context().clone(),
            attempt: invocation.attempt(),
            handler: invocation.handler(),
        })
    }
}
