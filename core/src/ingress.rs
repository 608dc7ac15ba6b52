//! The one way into the engine for a message that comes from outside it: an outbox row, a broker
//! delivery, a CDC record. [`Herald::ingest`] decodes it, runs one attempt of the handlers that have
//! not finished it, and says how the source should settle it.

use crate::dead_letter::{DeadLetter, DeadLetterId, DeadLetterReason, FailureKind};
use crate::delivery::HandlerStatus;
use crate::outbox::OUTBOX_HANDLER;
use crate::runtime::Herald;
use crate::stored::StoredError;
use crate::stored_message::{HandlerProgress, Settlement, StoredMessage};
use chrono::Utc;
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
                            crate::retry::delays(&options.retry)
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
fn finished(progress: crate::stored_message::Progress, error: Option<String>) -> Settlement {
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
