//! The stored form of a message, as any source hands it to the engine (an outbox row, a broker
//! delivery, a CDC record), with its per-handler progress as a typed value.
//!
//! The SQL stores keep progress as a JSON array of handler names in `handlers_done`, where a name
//! marked with a leading `!` failed for good. That encoding is read and written here and nowhere
//! else ([`Progress::from_stored`], [`Progress::to_stored`]).

use crate::model::envelope::{Envelope, Headers, MessageId, PublishOptions};
use crate::model::message::Message;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

/// How one handler has finished a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandlerProgress {
    /// The handler succeeded (or had already handled this message id).
    Succeeded,
    /// The handler failed for good: its `on_failure` route took the message (dead letter, log or
    /// ignore), or the message was dropped or interrupted into the dead letters.
    FailedForGood,
}

/// Which handlers have finished a stored message, and how. A handler not listed has not finished:
/// the next delivery runs it. Kept in the order the handlers finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    entries: Vec<(String, HandlerProgress)>,
}

/// Mark of a handler that failed for good in the stored `handlers_done` encoding.
// Only the SQL backends read and write the stored encoding.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(dead_code)
)]
const FAILED_MARK: char = '!';

impl Progress {
    /// No handler has finished.
    pub fn new() -> Self {
        Progress::default()
    }

    /// How `handler` has finished, if it has.
    pub fn get(&self, handler: &str) -> Option<HandlerProgress> {
        self.entries
            .iter()
            .find(|(name, _)| name == handler)
            .map(|(_, progress)| *progress)
    }

    /// Whether `handler` has finished (succeeded, or failed for good).
    pub fn is_done(&self, handler: &str) -> bool {
        self.get(handler).is_some()
    }

    /// Records how `handler` finished, replacing what was recorded for it before.
    pub fn record(&mut self, handler: impl Into<String>, progress: HandlerProgress) {
        let handler = handler.into();
        match self.entries.iter_mut().find(|(name, _)| *name == handler) {
            Some(entry) => entry.1 = progress,
            None => self.entries.push((handler, progress)),
        }
    }

    /// Forgets that `handler` finished, so the next delivery runs it again (re-drive).
    pub fn forget(&mut self, handler: &str) {
        self.entries.retain(|(name, _)| name != handler);
    }

    /// Whether some handler failed for good.
    pub fn any_failed(&self) -> bool {
        self.entries
            .iter()
            .any(|(_, progress)| *progress == HandlerProgress::FailedForGood)
    }

    /// The finished handlers, in the order they finished.
    pub fn iter(&self) -> impl Iterator<Item = (&str, HandlerProgress)> {
        self.entries
            .iter()
            .map(|(name, progress)| (name.as_str(), *progress))
    }

    /// How many handlers have finished.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no handler has finished.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reads the SQL stores' encoding: handler names, `!`-marked when failed for good.
    #[cfg_attr(
        not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
        allow(dead_code)
    )]
    pub(crate) fn from_stored(done: &[String]) -> Self {
        let mut progress = Progress::new();
        for entry in done {
            match entry.strip_prefix(FAILED_MARK) {
                Some(handler) => progress.record(handler, HandlerProgress::FailedForGood),
                None => progress.record(entry.as_str(), HandlerProgress::Succeeded),
            }
        }
        progress
    }

    /// Writes the SQL stores' encoding (see [`from_stored`](Self::from_stored)).
    #[cfg_attr(
        not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
        allow(dead_code)
    )]
    pub(crate) fn to_stored(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(handler, progress)| match progress {
                HandlerProgress::Succeeded => handler.clone(),
                HandlerProgress::FailedForGood => format!("{FAILED_MARK}{handler}"),
            })
            .collect()
    }
}

/// A message as a source holds it, ready for [`Herald::ingest`](crate::Herald::ingest).
///
/// The fields are kept as stored, so that a message that cannot be read (an id that is not a
/// UUID, headers or a payload that do not decode) still reaches the engine, which dead-letters it
/// with reason `malformed` instead of losing it. Build one from a typed envelope with
/// [`StoredMessage::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// The message id as stored (a UUID; anything else makes the message malformed).
    pub message_id: String,
    /// The message's wire name.
    pub name: String,
    /// Its ordering key.
    pub key: Option<String>,
    /// The payload as JSON text.
    pub payload: String,
    /// The envelope fields besides id, name, time and key (idempotency key, correlation and
    /// causation ids, extra headers), as JSON text: see [`StoredMessage::headers_json`].
    pub headers: String,
    /// When it was published.
    pub occurred_at: DateTime<Utc>,
    /// The attempt this delivery is (1 = first).
    pub attempt: u32,
    /// The handlers that have already finished it (they are not run again).
    pub progress: Progress,
    /// Only these handlers are to run (a re-drive to one handler); `None`: every handler.
    pub only_handlers: Option<Vec<String>>,
}

/// What is kept in the `headers` field: the envelope fields besides id, name, time and key.
/// Every field is optional, so that messages written by hand or by other tools (`{}`) are valid.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct StoredHeaders {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) correlation_id: Option<MessageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) causation_id: Option<MessageId>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) extra: BTreeMap<String, String>,
}

impl StoredMessage {
    /// A first delivery (attempt 1, no handler finished) of `envelope` with its JSON `payload`.
    pub fn new(envelope: &Envelope, payload: impl Into<String>) -> Self {
        StoredMessage {
            message_id: envelope.id.to_string(),
            name: envelope.name.clone().into_owned(),
            key: envelope.key.clone(),
            payload: payload.into(),
            headers: Self::headers_json(envelope),
            occurred_at: envelope.occurred_at,
            attempt: 1,
            progress: Progress::new(),
            only_handlers: None,
        }
    }

    /// The `headers` text for an envelope.
    pub fn headers_json(envelope: &Envelope) -> String {
        let headers = StoredHeaders {
            idempotency_key: envelope.idempotency_key.clone(),
            correlation_id: envelope.headers.correlation_id,
            causation_id: envelope.headers.causation_id,
            extra: envelope.headers.extra.clone(),
        };
        // A struct of strings, ids and a string map always serializes.
        serde_json::to_string(&headers).unwrap_or_else(|_| String::from("{}"))
    }

    /// The envelope, read strictly.
    ///
    /// # Errors
    /// When the id is not a UUID or the headers are not valid JSON of the expected shape; the
    /// message says which.
    pub fn envelope(&self) -> Result<Envelope, String> {
        let id: MessageId = self
            .message_id
            .parse()
            .map_err(|e| format!("message_id `{}` is not a UUID: {e}", self.message_id))?;
        let headers: StoredHeaders = serde_json::from_str(&self.headers)
            .map_err(|e| format!("headers are not valid: {e}"))?;
        Ok(Envelope {
            id,
            name: Cow::Owned(self.name.clone()),
            occurred_at: self.occurred_at,
            key: self.key.clone(),
            idempotency_key: headers.idempotency_key,
            headers: Headers {
                correlation_id: headers.correlation_id,
                causation_id: headers.causation_id,
                extra: headers.extra,
            },
        })
    }

    /// Whether `handler` is one this delivery is for (see [`only_handlers`](Self::only_handlers)).
    pub fn is_for(&self, handler: &str) -> bool {
        self.only_handlers
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| o == handler))
    }

    /// The payload as JSON (a JSON string of the raw text when it is not JSON).
    pub(crate) fn payload_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.payload)
            .unwrap_or_else(|_| serde_json::Value::String(self.payload.clone()))
    }

    /// The envelope for the dead letter of a message that cannot be delivered: every field that
    /// can be read is kept (above all the message id, which links the dead letter to its stored
    /// message for re-drive); only what cannot be read is left out (a header) or replaced (the id:
    /// a new one, returned second, which the source writes into its copy).
    pub(crate) fn lenient_envelope(&self) -> (Envelope, Option<MessageId>) {
        let (id, new_id) = match self.message_id.parse::<MessageId>() {
            Ok(id) => (id, None),
            Err(_) => {
                let id = MessageId::new();
                (id, Some(id))
            }
        };
        let headers = serde_json::from_str::<serde_json::Value>(&self.headers).unwrap_or_default();
        let field = |name: &str| headers.get(name).cloned().unwrap_or_default();
        let readable_id = |name: &str| serde_json::from_value::<MessageId>(field(name)).ok();
        let extra = match headers.get("extra") {
            Some(serde_json::Value::Object(extra)) => extra
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect(),
            _ => BTreeMap::new(),
        };
        let envelope = Envelope {
            id,
            name: Cow::Owned(self.name.clone()),
            occurred_at: self.occurred_at,
            key: self.key.clone(),
            idempotency_key: field("idempotency_key").as_str().map(str::to_owned),
            headers: Headers {
                correlation_id: readable_id("correlation_id"),
                causation_id: readable_id("causation_id"),
                extra,
            },
        };
        (envelope, new_id)
    }
}

/// What the engine decided about one delivery of a stored message: the source records it.
/// Returned by [`Herald::ingest`](crate::Herald::ingest), passed to
/// [`MessageSource::settle`](crate::ports::MessageSource::settle).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Settlement {
    /// Every handler succeeded: the message is done.
    Done {
        /// Every handler, succeeded.
        progress: Progress,
    },
    /// Every handler finished, and at least one failed for good (it is in the dead letters,
    /// logged or ignored, as its `on_failure` says): the message is done, as failed.
    FailedForGood {
        /// Every handler, succeeded or failed for good.
        progress: Progress,
        /// The last failure of this delivery (none when the failure was in an earlier one).
        error: Option<String>,
        /// A new id for a message whose own cannot be read: the source writes it into its copy,
        /// so that the message, its dead letters and their re-drive agree.
        replacement_id: Option<MessageId>,
    },
    /// A handler failed before its last attempt: deliver the message again (attempt + 1) after
    /// `delay`, to the handlers not in `progress`.
    Retry {
        /// The handlers that have finished.
        progress: Progress,
        /// How long to wait: the longest backoff of the handlers that failed.
        delay: Duration,
        /// The first failure of this delivery.
        error: String,
        /// As for [`FailedForGood`](Self::FailedForGood).
        replacement_id: Option<MessageId>,
    },
    /// Nothing ran (a pool rejected, the runtime is shutting down): give the message back as it
    /// was, without counting an attempt.
    Release,
}

impl Settlement {
    /// The progress it carries (`None` for [`Release`](Self::Release): nothing changed).
    pub fn progress(&self) -> Option<&Progress> {
        match self {
            Settlement::Done { progress }
            | Settlement::FailedForGood { progress, .. }
            | Settlement::Retry { progress, .. } => Some(progress),
            Settlement::Release => None,
        }
    }
}

/// A message to publish to a [`MessageSink`](crate::ports::MessageSink): its envelope and its
/// payload as JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    /// The envelope (id, name, time, key, idempotency key, headers).
    pub envelope: Envelope,
    /// The payload as JSON text.
    pub payload: String,
}

impl OutgoingMessage {
    /// Wraps a typed message in a new envelope (a fresh id, now) with `options`.
    ///
    /// # Errors
    /// When the message does not serialize to JSON.
    pub fn new<M: Message>(
        message: &M,
        options: PublishOptions,
    ) -> Result<Self, serde_json::Error> {
        let payload = serde_json::to_string(message)?;
        let mut envelope = Envelope::new(Cow::Borrowed(M::NAME));
        envelope.key = message.key();
        envelope.idempotency_key = options.idempotency_key;
        envelope.headers = options.headers;
        Ok(OutgoingMessage { envelope, payload })
    }

    /// Its stored form for a first delivery.
    pub fn to_stored(&self) -> StoredMessage {
        StoredMessage::new(&self.envelope, self.payload.clone())
    }
}

/// The handler name on a dead letter for a row that no handler in this process could take.
pub const OUTBOX_HANDLER: &str = "herald.outbox";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_progress_round_trips_marks() {
        let stored = vec!["a".to_owned(), "!b".to_owned(), "c".to_owned()];
        let progress = Progress::from_stored(&stored);
        assert_eq!(progress.get("a"), Some(HandlerProgress::Succeeded));
        assert_eq!(progress.get("b"), Some(HandlerProgress::FailedForGood));
        assert_eq!(progress.get("!b"), None);
        assert!(progress.any_failed());
        assert_eq!(progress.to_stored(), stored);
    }

    #[test]
    fn forget_and_record_replace_a_handler() {
        let mut progress = Progress::from_stored(&["!a".to_owned(), "b".to_owned()]);
        progress.forget("a");
        assert!(!progress.is_done("a"));
        assert!(!progress.any_failed());
        progress.record("b", HandlerProgress::FailedForGood);
        assert_eq!(progress.to_stored(), vec!["!b".to_owned()]);
    }

    #[test]
    fn a_new_stored_message_reads_back_its_envelope() {
        let options = PublishOptions::new()
            .idempotency_key("k-1")
            .header("tenant", "ü\u{0}");
        let mut envelope = Envelope::new("t.e");
        envelope.key = Some("key".into());
        envelope.idempotency_key = options.idempotency_key;
        envelope.headers = options.headers;
        let stored = StoredMessage::new(&envelope, "{}");
        assert_eq!(stored.envelope(), Ok(envelope));
        assert_eq!(stored.attempt, 1);
    }
}
