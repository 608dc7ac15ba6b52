//! Errors. Every error that concerns a message carries that message back, so the caller never loses it.

use crate::model::envelope::MessageId;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why one attempt of a handler failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandlerErrorKind {
    /// The handler returned `Err`.
    Failed,
    /// The handler panicked; the message is the panic message.
    Panicked,
    /// The attempt ran past the handler's `timeout` and was cancelled.
    TimedOut,
    /// An extractor could not be built (for example, state missing at run time).
    Extraction,
    /// The stored payload could not be decoded into the message type.
    Malformed,
    /// The runtime stopped before the message finished.
    Shutdown,
    /// The message was already handled (a durable inbox found its id): the job counts as deduplicated.
    Duplicate,
    /// The attempt was cancelled before it ended: its publisher dropped the `publish` future while
    /// the handler ran on the publisher's task (`CallerRuns`).
    Cancelled,
}

/// The error of one handler attempt.
///
/// Any `std::error::Error` converts into it with `?`. Mark an error [`permanent`](Self::permanent) when
/// retrying cannot help (bad input): the message then goes straight to its failure disposition.
#[derive(Clone)]
pub struct HandlerError {
    kind: HandlerErrorKind,
    message: String,
    permanent: bool,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl HandlerError {
    /// A failure with a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        HandlerError {
            kind: HandlerErrorKind::Failed,
            message: message.to_string(),
            permanent: false,
            source: None,
        }
    }

    /// A failure that retrying cannot fix: no further attempt is made.
    pub fn permanent(error: impl Into<HandlerError>) -> Self {
        let mut error = error.into();
        error.permanent = true;
        error
    }

    pub(crate) fn with_kind(kind: HandlerErrorKind, message: impl Into<String>) -> Self {
        HandlerError {
            kind,
            message: message.into(),
            permanent: false,
            source: None,
        }
    }

    pub(crate) fn panicked(message: impl Into<String>) -> Self {
        Self::with_kind(HandlerErrorKind::Panicked, message)
    }

    pub(crate) fn timed_out(after: Duration) -> Self {
        Self::with_kind(
            HandlerErrorKind::TimedOut,
            format!("timed out after {after:?}"),
        )
    }

    /// A payload that cannot be decoded: permanent, it goes to the dead letters with its reason.
    pub fn malformed(message: impl Into<String>) -> Self {
        let mut error = Self::with_kind(HandlerErrorKind::Malformed, message);
        error.permanent = true;
        error
    }

    /// Not a failure: the message was already handled (an extractor such as a durable inbox found its
    /// id). The job ends as deduplicated, without retry or dead letter.
    pub fn duplicate(message: impl Into<String>) -> Self {
        let mut error = Self::with_kind(HandlerErrorKind::Duplicate, message);
        error.permanent = true;
        error
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> HandlerErrorKind {
        self.kind
    }

    /// Whether retries are skipped for this error.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The message (for a panic, the panic message).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The original error, when the handler returned one.
    pub fn source(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        HandlerError {
            kind: HandlerErrorKind::Failed,
            message: error.to_string(),
            permanent: false,
            source: Some(Arc::new(error)),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            HandlerErrorKind::Panicked => write!(f, "panicked: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("permanent", &self.permanent)
            .finish()
    }
}

/// A publish or send that Herald did not accept. The message comes back inside the error.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum PublishError<M> {
    /// The pool's queue is full and its overload policy is `Reject` (or `Wait` ran past its max wait,
    /// or `try_publish` would have had to wait).
    #[error("pool `{pool}` is full (queue of {capacity}) for handler `{handler}`: the message was not accepted and is returned to you; retry later with the same idempotency key, or raise the pool's `queue`/`concurrency`")]
    Rejected {
        /// The message, returned untouched.
        message: M,
        /// The full pool.
        pool: String,
        /// The handler whose pool was full.
        handler: String,
        /// The pool's queue bound.
        capacity: usize,
    },
    /// `shutdown` has started: no new work is accepted.
    #[error("Herald is shutting down and accepts no new messages; the message is returned to you (store it, or publish it to a running instance)")]
    ShuttingDown {
        /// The message, returned untouched.
        message: M,
    },
    /// A command was sent but no handler owns it in this process.
    #[error("no handler owns command `{name}`: add an `#[async_handler]` whose first argument is this command (the message is returned to you)")]
    NoHandler {
        /// The message, returned untouched.
        message: M,
        /// The command's wire name.
        name: &'static str,
    },
}

impl<M> PublishError<M> {
    /// Takes the message back out of the error.
    pub fn into_message(self) -> M {
        match self {
            PublishError::Rejected { message, .. }
            | PublishError::ShuttingDown { message }
            | PublishError::NoHandler { message, .. } => message,
        }
    }

    /// Borrows the returned message.
    pub fn message(&self) -> &M {
        match self {
            PublishError::Rejected { message, .. }
            | PublishError::ShuttingDown { message }
            | PublishError::NoHandler { message, .. } => message,
        }
    }
}

impl<M> fmt::Debug for PublishError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Rejected {
                pool,
                handler,
                capacity,
                ..
            } => f
                .debug_struct("Rejected")
                .field("pool", pool)
                .field("handler", handler)
                .field("capacity", capacity)
                .finish_non_exhaustive(),
            PublishError::ShuttingDown { .. } => {
                f.debug_struct("ShuttingDown").finish_non_exhaustive()
            }
            PublishError::NoHandler { name, .. } => f
                .debug_struct("NoHandler")
                .field("name", name)
                .finish_non_exhaustive(),
        }
    }
}

/// How a message ended for one handler, when it did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("handler `{handler}` failed message {message_id} after {attempts} attempt(s): {error} ({disposition})")]
pub struct HandlerFailure {
    /// The handler.
    pub handler: &'static str,
    /// The message.
    pub message_id: MessageId,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: HandlerError,
    /// Where the message went.
    pub disposition: Disposition,
}

/// Where a message went when it did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// Stored in the dead letters (re-drivable).
    DeadLettered,
    /// Logged at error level with its payload (`on_failure = log`).
    Logged,
    /// Counted and skipped (`on_failure = ignore`).
    Ignored,
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Disposition::DeadLettered => "dead-lettered",
            Disposition::Logged => "logged",
            Disposition::Ignored => "ignored",
        })
    }
}

/// Why a command's reply is not available.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The handler failed on its last attempt.
    #[error(transparent)]
    Failed(#[from] HandlerFailure),
    /// The command was a duplicate (same idempotency key) of one already completed, so it did not run
    /// again; the first run's reply went to the first caller.
    #[error("command {0} was a duplicate of one already handled and was skipped (dedupe)")]
    Deduplicated(MessageId),
    /// The queue overflowed (`DropNewest`/`DropOldest`) and the command went to the dead letters.
    #[error("command {0} was dropped on overflow and stored in the dead letters")]
    Dropped(MessageId),
    /// The runtime stopped before the command finished; it is in the dead letters with reason `shutdown`.
    #[error("the runtime stopped before command {0} finished; it is in the dead letters (reason `shutdown`)")]
    Interrupted(MessageId),
}
