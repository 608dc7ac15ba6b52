//! Delivering messages that come back from storage: dead letters (re-drive), outbox rows and broker
//! messages. They arrive as an envelope plus JSON, are decoded through the registered message types,
//! and run through the same pools as in-memory messages.

use crate::dead_letter::{DeadLetter, DeadLetterError, DeadLetterId};
use crate::delivery::{Delivery, Sink};
use crate::dispatch::{Attempts, Dispatch, Patience};
use crate::envelope::Envelope;
use crate::handler::HandlerOptions;
use crate::message::Payload;
use crate::runtime::{HandlerRuntime, Herald};
use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Herald {
    /// Decodes a stored JSON payload of the message named `name` into its registered type.
    ///
    /// # Errors
    /// [`StoredError::UnknownMessage`] when no `#[derive(Event)]`/`#[derive(Command)]` type has this
    /// name in this process, [`StoredError::Malformed`] when the JSON is not a valid message.
    pub fn decode(&self, name: &str, json: &[u8]) -> Result<Payload, StoredError> {
        let descriptor = self
            .inner
            .messages
            .get(name)
            .ok_or_else(|| StoredError::UnknownMessage(name.to_owned()))?;
        (descriptor.decode)(json).map_err(|source| StoredError::Malformed {
            message: name.to_owned(),
            source,
        })
    }

    /// The handlers of a message, by name (sorted).
    pub fn handler_names(&self, message: &str) -> Vec<&'static str> {
        self.handlers_of(message)
            .iter()
            .map(|h| h.desc.name)
            .collect()
    }

    /// A handler's options (retry policy, timeout, ...).
    pub fn handler_options(&self, handler: &str) -> Option<HandlerOptions> {
        self.handler(handler).map(|h| h.desc.options)
    }

    fn handler(&self, name: &str) -> Option<&Arc<HandlerRuntime>> {
        self.inner.handlers.iter().find(|h| h.desc.name == name)
    }

    /// Runs attempt number `attempt` of each named handler on a stored message, through their
    /// pools (waiting for room). A failure before the handler's last attempt is reported as
    /// [`HandlerStatus::Deferred`](crate::HandlerStatus::Deferred): the caller keeps the message and
    /// schedules the next attempt. The last attempt (or a permanent error) takes the handler's
    /// `on_failure` route as usual.
    ///
    /// # Errors
    /// [`StoredError::UnknownHandler`], [`StoredError::Rejected`] (a `Reject` pool is full; try
    /// later), [`StoredError::ShuttingDown`].
    pub async fn deliver_attempt(
        &self,
        envelope: Envelope,
        payload: Payload,
        handlers: &[&str],
        attempt: u32,
    ) -> Result<Delivery, StoredError> {
        let handlers = handlers
            .iter()
            .map(|name| {
                self.handler(name)
                    .cloned()
                    .ok_or_else(|| StoredError::UnknownHandler((*name).to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.deliver(envelope, payload, &handlers, Attempts::Once(attempt.max(1)))
            .await
    }

    /// Stores a dead letter in the configured store, trying again a few times if the store fails.
    ///
    /// # Errors
    /// When every try failed; the entry was then logged in full at error level. A caller that still
    /// holds the message (a relay's row) must keep it rather than mark it dead-lettered.
    pub async fn dead_letter(&self, entry: DeadLetter) -> Result<DeadLetterId, DeadLetterError> {
        self.inner.store_dead_letter(entry).await
    }

    /// Takes a dead letter out of the store and dispatches it again to its handler, with a fresh
    /// attempt count and its original envelope. If it cannot be dispatched, it is put back.
    ///
    /// # Errors
    /// See [`StoredError`]; in every case but `NotFound` and `Store` the entry is back in the store.
    pub async fn redrive(&self, id: DeadLetterId) -> Result<Delivery, StoredError> {
        let store = &self.inner.dead_letters;
        let entry = store
            .take(id)
            .await
            .map_err(StoredError::Store)?
            .ok_or(StoredError::NotFound(id))?;
        match self.redrive_entry(&entry).await {
            Ok(delivery) => Ok(delivery),
            Err(error) => {
                // Logged in full if the store refuses it back.
                let _ = self.inner.store_dead_letter(entry).await;
                Err(error)
            }
        }
    }

    async fn redrive_entry(&self, entry: &DeadLetter) -> Result<Delivery, StoredError> {
        let handler = self
            .handler(&entry.handler)
            .cloned()
            .ok_or_else(|| StoredError::UnknownHandler(entry.handler.clone()))?;
        let json = serde_json::to_vec(&entry.payload).map_err(|source| StoredError::Malformed {
            message: entry.envelope.name.to_string(),
            source,
        })?;
        let payload = self.decode(&entry.envelope.name, &json)?;
        self.deliver(
            entry.envelope.clone(),
            payload,
            &[handler],
            Attempts::Policy,
        )
        .await
    }

    async fn deliver(
        &self,
        mut envelope: Envelope,
        payload: Payload,
        handlers: &[Arc<HandlerRuntime>],
        attempts: Attempts,
    ) -> Result<Delivery, StoredError> {
        if !self.inner.accepting.load(Ordering::Acquire) {
            self.handed_back(handlers);
            return Err(StoredError::ShuttingDown);
        }
        if let Some(descriptor) = self.inner.messages.get(envelope.name.as_ref()) {
            envelope.name = Cow::Borrowed(descriptor.name);
        }
        let reservation = match self.reserve(handlers, Patience::Wait).await {
            Ok(reservation) => reservation,
            Err(_) => {
                self.handed_back(handlers);
                return Err(if self.inner.accepting.load(Ordering::Acquire) {
                    StoredError::Rejected
                } else {
                    StoredError::ShuttingDown
                });
            }
        };
        let (sink, rx) = Sink::event(handlers.len());
        let dispatch = Arc::new(Dispatch {
            envelope,
            payload,
            herald: self.clone(),
            sink,
        });
        if handlers.is_empty() {
            dispatch.sink.complete_empty(dispatch.envelope.id);
        }
        let inline = self.admit(&dispatch, handlers, reservation, attempts);
        inline.run().await;
        Ok(Delivery::new(dispatch.envelope.id, rx))
    }
}

/// A stored message could not be delivered (or re-driven).
///
/// The errors of other layers are kept as the [`source`](std::error::Error::source), so a caller
/// can downcast to them (`serde_json::Error`, [`DeadLetterError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoredError {
    /// No dead letter has this id.
    #[error("no dead letter with id {0}")]
    NotFound(DeadLetterId),
    /// The handler is not registered in this process.
    #[error("handler `{0}` is not registered in this process (renamed or removed?); the message was kept")]
    UnknownHandler(String),
    /// The message type is not registered (`#[derive(Event)]`/`#[derive(Command)]`).
    #[error("message `{0}` has no registered type in this process: derive `Event`/`Command` for it; the message was kept")]
    UnknownMessage(String),
    /// The payload does not decode into the message type.
    #[error("the stored payload of message `{message}` does not decode: {source}; fix the payload or the type's serde attributes")]
    Malformed {
        /// The message's name.
        message: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// The handler's pool refused it.
    #[error("the handler's pool is full and rejects; the message was kept, try again later")]
    Rejected,
    /// The runtime is shutting down.
    #[error("Herald is shutting down; the message was kept")]
    ShuttingDown,
    /// The dead-letter store failed while the dead letter was taken out of it.
    #[error("the dead-letter store failed while taking the dead letter out: {0}; try again when the store is back")]
    Store(#[source] DeadLetterError),
}
