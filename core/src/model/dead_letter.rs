//! A dead letter as data: a message that did not succeed for one handler, why, and its history.

use crate::model::envelope::Envelope;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies one dead letter in its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeadLetterId(pub i64);

impl fmt::Display for DeadLetterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a message is in the dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// Its handler failed on every attempt (or with a permanent error).
    Failed,
    /// The pool overflowed under `DropNewest`/`DropOldest`.
    Overflow,
    /// The runtime shut down before it finished.
    Shutdown,
    /// The stored payload could not be decoded.
    Malformed,
    /// Its publisher gave up (dropped the `publish` future) while the job was to run, or ran, on the
    /// publisher's task (`CallerRuns`).
    Cancelled,
}

impl DeadLetterReason {
    /// The reason as stored (`failed`, `overflow`, `shutdown`, `malformed`, `cancelled`).
    pub fn as_str(&self) -> &'static str {
        match self {
            DeadLetterReason::Failed => "failed",
            DeadLetterReason::Overflow => "overflow",
            DeadLetterReason::Shutdown => "shutdown",
            DeadLetterReason::Malformed => "malformed",
            DeadLetterReason::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DeadLetterReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "failed" => Ok(DeadLetterReason::Failed),
            "overflow" => Ok(DeadLetterReason::Overflow),
            "shutdown" => Ok(DeadLetterReason::Shutdown),
            "malformed" => Ok(DeadLetterReason::Malformed),
            "cancelled" => Ok(DeadLetterReason::Cancelled),
            other => Err(format!("unknown dead-letter reason `{other}`")),
        }
    }
}

/// What kind of failure put a message in the dead letters, as data (no parsing of error text).
///
/// `None` on a [`DeadLetter`] means no attempt failed: the message was dropped on overflow, or was
/// still queued when the runtime shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The handler returned an error (retries, if any, were used up).
    Error,
    /// The handler returned an error marked [`permanent`](crate::HandlerError::permanent): no retry.
    PermanentError,
    /// The handler panicked.
    Panic,
    /// The attempt ran past the handler's `timeout`.
    Timeout,
    /// An extractor could not be built (state missing at run time, a failed inbox transaction, ...).
    Extraction,
    /// The stored message could not be decoded (bad payload, headers or id, unknown type).
    Malformed,
    /// The attempt was cancelled: its publisher dropped the `publish` future while the handler ran
    /// on the publisher's task (`CallerRuns`).
    Cancelled,
    /// The attempt was cut off by `shutdown` at its deadline.
    Shutdown,
}

impl FailureKind {
    /// The kind of a handler error.
    pub fn of(error: &crate::model::error::HandlerError) -> Self {
        use crate::model::error::HandlerErrorKind as K;
        match error.kind() {
            K::Panicked => FailureKind::Panic,
            K::TimedOut => FailureKind::Timeout,
            K::Extraction => FailureKind::Extraction,
            K::Malformed => FailureKind::Malformed,
            K::Shutdown => FailureKind::Shutdown,
            K::Cancelled => FailureKind::Cancelled,
            _ if error.is_permanent() => FailureKind::PermanentError,
            _ => FailureKind::Error,
        }
    }

    /// The kind as stored (`error`, `permanent_error`, `panic`, `timeout`, `extraction`,
    /// `malformed`, `cancelled`, `shutdown`).
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureKind::Error => "error",
            FailureKind::PermanentError => "permanent_error",
            FailureKind::Panic => "panic",
            FailureKind::Timeout => "timeout",
            FailureKind::Extraction => "extraction",
            FailureKind::Malformed => "malformed",
            FailureKind::Cancelled => "cancelled",
            FailureKind::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FailureKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            FailureKind::Error,
            FailureKind::PermanentError,
            FailureKind::Panic,
            FailureKind::Timeout,
            FailureKind::Extraction,
            FailureKind::Malformed,
            FailureKind::Cancelled,
            FailureKind::Shutdown,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == s)
        .ok_or_else(|| format!("unknown failure kind `{s}`"))
    }
}

/// A message that did not succeed for one handler, with everything needed to understand and re-drive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Store id (assigned by the store).
    pub id: DeadLetterId,
    /// The original envelope (id, name, time, key, headers).
    pub envelope: Envelope,
    /// The payload as JSON (the raw text when it could not be decoded).
    pub payload: serde_json::Value,
    /// The handler it failed for.
    pub handler: String,
    /// Why it is here.
    pub reason: DeadLetterReason,
    /// What kind of failure the last attempt was; `None` when no attempt failed (overflow, or
    /// still queued at shutdown).
    #[serde(default)]
    pub failure: Option<FailureKind>,
    /// Attempts made.
    pub attempts: u32,
    /// The first error (a panic's message included).
    pub first_error: Option<String>,
    /// The last error.
    pub last_error: Option<String>,
    /// When the first attempt failed.
    pub first_failed_at: Option<DateTime<Utc>>,
    /// When the last attempt failed.
    pub last_failed_at: Option<DateTime<Utc>>,
    /// When it entered the dead letters.
    pub dead_lettered_at: DateTime<Utc>,
}
