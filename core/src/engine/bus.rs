//! `Bus`: the runtime as seen from inside a handler. Follow-ups keep the correlation id and name the
//! handled message as their cause.

use crate::contract::extract::FromInvocation;
use crate::contract::invocation::Invocation;
use crate::engine::handles::{CommandReply, Delivery};
use crate::engine::publish::Dispatch;
use crate::engine::runtime::Herald;
use crate::model::envelope::{Envelope, MessageId, PublishOptions};
use crate::model::error::{HandlerError, HandlerErrorKind, PublishError};
use crate::model::message::{Command, Event};

/// Publishes follow-up messages from a handler: `async fn h(e: OrderPlaced, bus: Bus)`.
#[derive(Debug, Clone)]
pub struct Bus {
    herald: Herald,
    correlation_id: MessageId,
    causation_id: MessageId,
}

impl Bus {
    pub(crate) fn caused_by(herald: Herald, cause: &Envelope) -> Self {
        Bus {
            herald,
            correlation_id: cause.correlation_id(),
            causation_id: cause.id,
        }
    }

    fn options(&self) -> PublishOptions {
        PublishOptions::new()
            .correlation_id(self.correlation_id)
            .causation_id(self.causation_id)
    }

    /// Publishes a follow-up event (see [`Herald::publish`]).
    ///
    /// # Errors
    /// As [`Herald::publish`].
    pub async fn publish<E: Event>(&self, event: E) -> Result<Delivery, PublishError<E>> {
        self.herald.publish_with(event, self.options()).await
    }

    /// Sends a follow-up command (see [`Herald::send`]).
    ///
    /// # Errors
    /// As [`Herald::send`].
    pub async fn send<C: Command>(
        &self,
        command: C,
    ) -> Result<CommandReply<C::Reply>, PublishError<C>> {
        self.herald.send_with(command, self.options()).await
    }

    /// The runtime itself.
    pub fn herald(&self) -> &Herald {
        &self.herald
    }
}

impl FromInvocation for Bus {
    fn from_invocation(invocation: &Invocation) -> Result<Self, HandlerError> {
        // The engine's part of the context is the message's `Dispatch`, which knows its runtime.
        let dispatch = invocation
            .context()
            .engine()
            .downcast_ref::<Dispatch>()
            .ok_or_else(|| {
                HandlerError::with_kind(
                    HandlerErrorKind::Extraction,
                    "`Bus` is only available to handlers run by a Herald runtime",
                )
            })?;
        Ok(Bus::caused_by(
            dispatch.herald.clone(),
            invocation.envelope(),
        ))
    }
}
