//! What the relay reads from and writes back to a backend, and how one row is delivered.

use super::OutboxError;
use crate::dead_letter::{DeadLetter, DeadLetterId, DeadLetterReason, FailureKind};
use crate::delivery::HandlerStatus;
use crate::envelope::{Envelope, Headers, MessageId};
use crate::runtime::Herald;
use crate::stored::StoredError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// What is kept in the `headers` column: the envelope fields besides id, name, time and key.
/// Every field is optional, so that rows written by hand or by other tools (`'{}'`) are valid.
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

/// A row a relay holds a lease on.
#[derive(Debug, Clone)]
pub(crate) struct ClaimedRow {
    pub(crate) id: i64,
    pub(crate) message_id: String,
    pub(crate) message_type: String,
    pub(crate) key: Option<String>,
    pub(crate) payload: String,
    pub(crate) headers: String,
    pub(crate) occurred_at: DateTime<Utc>,
    pub(crate) fail_count: i32,
    pub(crate) handlers_done: Vec<String>,
    pub(crate) only_handlers: Option<Vec<String>>,
}

/// How one delivery of a row ended, to be written back.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Every handler finished: `failed` when one of them failed for good.
    Done {
        id: i64,
        failed: bool,
        handlers_done: Vec<String>,
        error: Option<String>,
        /// A new message id for a row whose own cannot be read: written into the row, so that the
        /// row, its dead letters and their re-drive agree.
        new_message_id: Option<MessageId>,
    },
    /// Some handler failed before its last attempt: try again after `delay`.
    Retry {
        id: i64,
        handlers_done: Vec<String>,
        delay: Duration,
        error: String,
        /// As for `Done`.
        new_message_id: Option<MessageId>,
    },
    /// Nothing ran (a pool rejected, shutdown): give the row back without counting an attempt.
    Release { id: i64 },
}

/// A backend's relay side.
#[async_trait]
pub(crate) trait Backend: Send + Sync + fmt::Debug + 'static {
    /// Leases up to `limit` due rows: never two of one key, never a key with an earlier pending row,
    /// never a key that has a row leased by anyone (in flight).
    async fn claim(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedRow>, OutboxError>;
    /// Extends the leases `owner` holds on `ids` to `lease` from now, in one statement. Returns
    /// the ids it renewed; an id missing from the answer is no longer leased by `owner` (its lease
    /// expired and another relay took the row, or the row was changed by hand): the lease is lost.
    async fn renew(
        &self,
        owner: &str,
        ids: &[i64],
        lease: Duration,
    ) -> Result<Vec<i64>, OutboxError>;
    /// Writes the outcomes back in one transaction (rows whose lease was lost are left alone).
    async fn finish(&self, owner: &str, outcomes: Vec<Outcome>) -> Result<(), OutboxError>;
    /// Whether a batch's write-back may run beside the next claim (true where writers run
    /// concurrently; SQLite's single writer would only make them wait for each other's lock).
    fn overlaps_write_back(&self) -> bool {
        true
    }
    /// Something that waits for new rows.
    async fn waiter(&self) -> Box<dyn Waiter>;
    /// Deletes finished rows older than `older_than`, `batch` rows per statement.
    async fn delete_finished(&self, older_than: Duration, batch: usize)
        -> Result<u64, OutboxError>;
}

/// Waits for new rows (`LISTEN` on PostgreSQL, a timer on SQLite).
#[async_trait]
pub(crate) trait Waiter: Send {
    async fn wait(&mut self, timeout: Duration);
}

/// Waits by sleeping.
#[derive(Debug)]
pub(crate) struct Sleeper;

#[async_trait]
impl Waiter for Sleeper {
    async fn wait(&mut self, timeout: Duration) {
        tokio::time::sleep(timeout).await;
    }
}

impl ClaimedRow {
    fn envelope(&self) -> Result<Envelope, String> {
        let id: MessageId = self
            .message_id
            .parse()
            .map_err(|e| format!("message_id `{}` is not a UUID: {e}", self.message_id))?;
        let headers: StoredHeaders = serde_json::from_str(&self.headers)
            .map_err(|e| format!("headers are not valid: {e}"))?;
        Ok(Envelope {
            id,
            name: Cow::Owned(self.message_type.clone()),
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

    fn payload_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.payload)
            .unwrap_or_else(|_| serde_json::Value::String(self.payload.clone()))
    }

    /// The envelope for the dead letter of a row that cannot be delivered: every field that can
    /// be read is kept (above all the message id, which links the dead letter to its row for
    /// re-drive); only what cannot be read is left out (a header) or replaced (the id: a new
    /// one, returned second, which the relay writes into the row).
    fn lenient_envelope(&self) -> (Envelope, Option<MessageId>) {
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
            name: Cow::Owned(self.message_type.clone()),
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

/// Delivers one row: the handlers not yet done, attempt `fail_count + 1`.
pub(crate) async fn deliver(herald: &Herald, row: ClaimedRow) -> Outcome {
    let id = row.id;
    let targets: Vec<&'static str> = herald
        .handler_names(&row.message_type)
        .into_iter()
        .filter(|h| !is_done(&row.handlers_done, h))
        .filter(|h| {
            row.only_handlers
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| o == h))
        })
        .collect();
    let decoded = row.envelope().and_then(|envelope| {
        herald
            .decode(&row.message_type, row.payload.as_bytes())
            .map(|payload| (envelope, payload))
            .map_err(|e| e.to_string())
    });
    let (envelope, payload) = match decoded {
        Ok(decoded) => decoded,
        Err(reason) => return malformed(herald, row, targets, reason).await,
    };
    if targets.is_empty() {
        return Outcome::Done {
            id,
            failed: false,
            handlers_done: row.handlers_done,
            error: None,
            new_message_id: None,
        };
    }
    let attempt = u32::try_from(row.fail_count.max(0))
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    let delivery = match herald
        .deliver_attempt(envelope, payload, &targets, attempt)
        .await
    {
        Ok(delivery) => delivery,
        Err(StoredError::Rejected | StoredError::ShuttingDown) => return Outcome::Release { id },
        Err(error) => {
            return malformed(herald, row, targets, error.to_string()).await;
        }
    };
    let outcome = delivery.await;
    if !outcome.complete {
        return Outcome::Release { id };
    }
    // A handler that failed for good in an earlier round keeps the row `failed`.
    let mut failed = row.handlers_done.iter().any(|h| h.starts_with(FAILED_MARK));
    let mut handlers_done = row.handlers_done;
    let mut retry: Option<(Duration, String)> = None;
    let mut last_error = None;
    for report in outcome.reports {
        match report.status {
            HandlerStatus::Succeeded { .. } | HandlerStatus::Deduplicated => {
                handlers_done.push(report.handler.to_owned());
            }
            HandlerStatus::Failed(failure) => {
                failed = true;
                last_error = Some(format!("{}: {}", report.handler, failure.error));
                handlers_done.push(format!("{FAILED_MARK}{}", report.handler));
            }
            HandlerStatus::Dropped | HandlerStatus::Interrupted => {
                // Core has put it in the dead letters (overflow or shutdown): re-drive from there.
                failed = true;
                last_error = Some(format!(
                    "{}: dropped or interrupted (see dead letters)",
                    report.handler
                ));
                handlers_done.push(format!("{FAILED_MARK}{}", report.handler));
            }
            HandlerStatus::Deferred { attempt, error } => {
                let delay = herald
                    .handler_options(report.handler)
                    .and_then(|options| {
                        crate::retry::delays(&options.retry).nth(attempt.saturating_sub(1) as usize)
                    })
                    .unwrap_or(Duration::from_secs(1));
                let error = format!("{}: {error}", report.handler);
                retry = Some(match retry {
                    Some((longest, first)) => (longest.max(delay), first),
                    None => (delay, error),
                });
            }
        }
    }
    match retry {
        Some((delay, error)) => Outcome::Retry {
            id,
            handlers_done,
            delay,
            error,
            new_message_id: None,
        },
        None => Outcome::Done {
            id,
            failed,
            handlers_done,
            error: last_error,
            new_message_id: None,
        },
    }
}

/// How long a row whose dead letter could not be stored waits before the relay tries again (the
/// store was already tried a few times; a missing table or lost rights take a person to fix).
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(5);

/// A row that cannot be decoded: dead-lettered (one entry per handler, or one for the outbox when
/// no handler of it is known) with the reason; the relay carries on. If the dead-letter store
/// refuses an entry, the row stays pending (the handlers whose entry was stored are marked done)
/// and is tried again later: the message is never marked `failed` without its dead letter.
async fn malformed(
    herald: &Herald,
    row: ClaimedRow,
    targets: Vec<&'static str>,
    reason: String,
) -> Outcome {
    tracing::error!(outbox_id = row.id, message_id = %row.message_id, message_type = %row.message_type, %reason, "outbox row cannot be delivered; dead-lettering it");
    let (envelope, new_message_id) = row.lenient_envelope();
    let reason = match new_message_id {
        Some(new) => format!("{reason}; the row's message_id is now {new}"),
        None => reason,
    };
    let payload = row.payload_json();
    let now = Utc::now();
    let handlers: Vec<String> = if targets.is_empty() {
        vec![OUTBOX_HANDLER.to_owned()]
    } else {
        targets.iter().map(|h| (*h).to_owned()).collect()
    };
    let mut handlers_done = row.handlers_done;
    let mut refused = None;
    for handler in handlers {
        let stored = herald
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
            Ok(_) => handlers_done.push(format!("{FAILED_MARK}{handler}")),
            Err(error) => {
                refused = Some(format!(
                "{handler}: {reason}; its dead letter could not be stored ({error}): kept pending"
            ))
            }
        }
    }
    match refused {
        Some(error) => Outcome::Retry {
            id: row.id,
            handlers_done,
            delay: DEAD_LETTER_RETRY,
            error,
            new_message_id,
        },
        None => Outcome::Done {
            id: row.id,
            failed: true,
            handlers_done,
            error: Some(reason),
            new_message_id,
        },
    }
}

/// The row and its new message id, for an outcome that replaces an unreadable one.
pub(crate) fn new_message_id(outcome: &Outcome) -> Option<(i64, MessageId)> {
    match outcome {
        Outcome::Done {
            id,
            new_message_id: Some(new),
            ..
        }
        | Outcome::Retry {
            id,
            new_message_id: Some(new),
            ..
        } => Some((*id, *new)),
        _ => None,
    }
}

/// Prefix of a `handlers_done` entry whose handler failed for good (dead-lettered, logged, ignored).
pub(crate) const FAILED_MARK: char = '!';

/// Whether `handler` has finished (succeeded, or failed for good) according to `done`.
pub(crate) fn is_done(done: &[String], handler: &str) -> bool {
    done.iter()
        .any(|d| d.strip_prefix(FAILED_MARK).unwrap_or(d) == handler)
}

/// Forgets that `handler` finished, so the relay runs it again (re-drive).
pub(crate) fn forget(done: &mut Vec<String>, handler: &str) {
    done.retain(|d| d.strip_prefix(FAILED_MARK).unwrap_or(d) != handler);
}

/// The handler name on a dead letter for a row that no handler in this process could take.
pub const OUTBOX_HANDLER: &str = "herald.outbox";

/// JSON array text of handler names, or `None` when empty.
pub(crate) fn handlers_json(handlers: &[String]) -> Option<String> {
    if handlers.is_empty() {
        None
    } else {
        serde_json::to_string(handlers).ok()
    }
}

/// Parses a JSON array of handler names (NULL → empty).
pub(crate) fn parse_handlers(text: Option<&str>) -> Result<Vec<String>, OutboxError> {
    match text {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| OutboxError::Corrupt(format!("handler list `{text}`: {e}"))),
    }
}

/// The stored headers JSON for an envelope.
pub(crate) fn headers_json(envelope: &Envelope) -> Result<String, OutboxError> {
    Ok(serde_json::to_string(&StoredHeaders {
        idempotency_key: envelope.idempotency_key.clone(),
        correlation_id: envelope.headers.correlation_id,
        causation_id: envelope.headers.causation_id,
        extra: envelope.headers.extra.clone(),
    })?)
}
