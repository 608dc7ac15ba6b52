//! The one way into the engine for a message that comes from outside it: an outbox row, a broker
//! delivery, a CDC record. [`Herald::ingest`] decodes it, runs one attempt of the handlers that have
//! not finished it, and says how the source should settle it.

use crate::engine::handles::{Delivery, OutcomeCollector};
use crate::engine::publish::{Attempts, Dispatch, Patience};
use crate::engine::runtime::{HandlerRuntime, Herald};
use crate::model::dead_letter::{DeadLetter, DeadLetterId, DeadLetterReason, FailureKind};
use crate::model::envelope::Envelope;
use crate::model::message::Payload;
use crate::model::options::HandlerOptions;
use crate::model::outcome::HandlerStatus;
use crate::model::stored_message::OUTBOX_HANDLER;
use crate::model::stored_message::{HandlerProgress, Settlement, StoredMessage};
use crate::ports::dead_letters::DeadLetterError;
use chrono::Utc;
use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long a message whose dead letter could not be stored waits before it is tried again (the
/// store was already tried a few times; a missing table or lost rights take a person to fix).
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(5);

/// The retry delay when a handler's options cannot be read (renamed between attempts).
const FALLBACK_RETRY: Duration = Duration::from_secs(1);

impl Herald {
    /// Delivers a stored message: attempt [`attempt`](StoredMessage::attempt) of each handler that
    /// has not finished it (and that [`only_handlers`](StoredMessage::only_handlers) allows),
    /// through the same pools, retries, dead letters and ledger as `publish`. Returns how the
    /// source should settle it:
    /// - every handler done: [`Settlement::Done`], or [`Settlement::FailedForGood`] when one took
    ///   its `on_failure` route (now or in an earlier attempt);
    /// - a handler failed before its last attempt: [`Settlement::Retry`] after the longest backoff
    ///   of the failed handlers, with the progress of the others;
    /// - a pool rejected, or the runtime is shutting down: [`Settlement::Release`] (nothing ran);
    /// - the message cannot be read (id, headers, payload, unknown type): each handler's dead
    ///   letter (or one for [`OUTBOX_HANDLER`] when no handler is known) with reason `malformed`,
    ///   then `FailedForGood`; if the dead-letter store refuses, `Retry` so the message is kept.
    pub async fn ingest(&self, message: &StoredMessage) -> Settlement {
        let targets: Vec<&'static str> = self
            .handler_names(&message.name)
            .into_iter()
            .filter(|h| !message.progress.is_done(h) && message.is_for(h))
            .collect();
        let decoded = message.envelope().and_then(|envelope| {
            self.decode(&message.name, message.payload.as_bytes())
                .map(|payload| (envelope, payload))
                .map_err(|e| e.to_string())
        });
        let (envelope, payload) = match decoded {
            Ok(decoded) => decoded,
            Err(reason) => return self.ingest_malformed(message, &targets, reason).await,
        };
        if let Some(slas) = self.slas_concern(&message.name) {
            // Every delivery records it: the store's writes are idempotent, and an A stored in an
            // outbox that knows the SLA has opened its expectation already (then this is a no-op).
            slas.record_message(&self.inner.background, &envelope, &payload)
                .await;
        }
        if targets.is_empty() {
            return finished(message.progress.clone(), None);
        }
        let attempt = message.attempt.max(1);
        let delivery = match self
            .deliver_attempt(envelope, payload, &targets, attempt)
            .await
        {
            Ok(delivery) => delivery,
            Err(StoredError::Rejected | StoredError::ShuttingDown) => return Settlement::Release,
            Err(error) => {
                return self
                    .ingest_malformed(message, &targets, error.to_string())
                    .await
            }
        };
        let outcome = delivery.await;
        if !outcome.complete {
            return Settlement::Release;
        }
        let mut progress = message.progress.clone();
        let mut retry: Option<(Duration, String)> = None;
        let mut last_error = None;
        for report in outcome.reports {
            match report.status {
                HandlerStatus::Succeeded { .. } | HandlerStatus::Deduplicated => {
                    progress.record(report.handler, HandlerProgress::Succeeded);
                }
                HandlerStatus::Failed(failure) => {
                    last_error = Some(format!("{}: {}", report.handler, failure.error));
                    progress.record(report.handler, HandlerProgress::FailedForGood);
                }
                HandlerStatus::Dropped | HandlerStatus::Interrupted => {
                    // The engine has put it in the dead letters (overflow or shutdown): re-drive
                    // from there.
                    last_error = Some(format!(
                        "{}: dropped or interrupted (see dead letters)",
                        report.handler
                    ));
                    progress.record(report.handler, HandlerProgress::FailedForGood);
                }
                HandlerStatus::Deferred { attempt, error } => {
                    let delay = self
                        .handler_options(report.handler)
                        .and_then(|options| {
                            crate::model::retry::delays(&options.retry)
                                .nth(attempt.saturating_sub(1) as usize)
                        })
                        .unwrap_or(FALLBACK_RETRY);
                    let error = format!("{}: {error}", report.handler);
                    retry = Some(match retry {
                        Some((longest, first)) => (longest.max(delay), first),
                        None => (delay, error),
                    });
                }
            }
        }
        match retry {
            Some((delay, error)) => Settlement::Retry {
                progress,
                delay,
                error,
                replacement_id: None,
            },
            None => finished(progress, last_error),
        }
    }

    /// A message that cannot be read: dead-lettered (one entry per handler, or one for
    /// [`OUTBOX_HANDLER`] when no handler of it is known) with the reason. If the dead-letter store
    /// refuses an entry, the message is kept for another try (the handlers whose entry was stored
    /// are recorded as failed for good): it is never settled as failed without its dead letter.
    async fn ingest_malformed(
        &self,
        message: &StoredMessage,
        targets: &[&'static str],
        reason: String,
    ) -> Settlement {
        tracing::error!(message_id = %message.message_id, message_type = %message.name, %reason, "stored message cannot be delivered; dead-lettering it");
        let (envelope, replacement_id) = message.lenient_envelope();
        let reason = match replacement_id {
            Some(new) => format!("{reason}; the message's id is now {new}"),
            None => reason,
        };
        let payload = message.payload_json();
        let now = Utc::now();
        let handlers: Vec<String> = if targets.is_empty() {
            vec![OUTBOX_HANDLER.to_owned()]
        } else {
            targets.iter().map(|h| (*h).to_owned()).collect()
        };
        let mut progress = message.progress.clone();
        let mut refused = None;
        for handler in handlers {
            let stored = self
                .dead_letter(DeadLetter {
                    id: DeadLetterId(0),
                    envelope: envelope.clone(),
                    payload: payload.clone(),
                    handler: handler.clone(),
                    reason: DeadLetterReason::Malformed,
                    failure: Some(FailureKind::Malformed),
                    attempts: 1,
                    first_error: Some(reason.clone()),
                    last_error: Some(reason.clone()),
                    first_failed_at: Some(now),
                    last_failed_at: Some(now),
                    dead_lettered_at: now,
                })
                .await;
            match stored {
                Ok(_) => progress.record(handler, HandlerProgress::FailedForGood),
                Err(error) => {
                    refused = Some(format!(
                        "{handler}: {reason}; its dead letter could not be stored ({error}): kept pending"
                    ));
                }
            }
        }
        match refused {
            Some(error) => Settlement::Retry {
                progress,
                delay: DEAD_LETTER_RETRY,
                error,
                replacement_id,
            },
            None => Settlement::FailedForGood {
                progress,
                error: Some(reason),
                replacement_id,
            },
        }
    }
}

/// Every handler finished: done, or failed for good when one of them failed (now or earlier).
fn finished(progress: crate::model::stored_message::Progress, error: Option<String>) -> Settlement {
    if progress.any_failed() {
        Settlement::FailedForGood {
            progress,
            error,
            replacement_id: None,
        }
    } else {
        Settlement::Done { progress }
    }
}

// --- Stored messages delivered through the pools: decode, single attempts, re-drive. ---

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
        let sink = OutcomeCollector::event(handlers.len());
        let dispatch = Arc::new(Dispatch {
            envelope,
            payload,
            herald: self.clone(),
            outcomes: sink,
            due: None,
        });
        if handlers.is_empty() {
            dispatch.outcomes.complete_empty();
        }
        let inline = self.admit(&dispatch, handlers, reservation, attempts);
        inline.run().await;
        Ok(Delivery::new(dispatch))
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
