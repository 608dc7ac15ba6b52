//! What `#[async_handler]` registers: the handler's descriptor, its options and its call function.

use crate::error::HandlerError;
use crate::extract::Requirement;
use crate::invocation::Invocation;
use crate::message::MessageKind;
use futures_util::future::BoxFuture;
use std::any::Any;
use std::fmt;
use std::time::Duration;

/// The erased reply of one handler call: `()` for events, the command's reply otherwise.
pub type AnyReply = Box<dyn Any + Send>;

/// The erased call function the macro generates for a handler.
pub type HandlerFn = fn(Invocation) -> BoxFuture<'static, Result<AnyReply, HandlerError>>;

/// Link-time record of one `#[async_handler]`. Collected with `inventory`; the user never builds one.
#[derive(Debug)]
pub struct HandlerDescriptor {
    /// Unique handler name (default: module path and function name).
    pub name: &'static str,
    /// Wire name of the message it handles.
    pub message: &'static str,
    /// The message's Rust type as written.
    pub message_type: &'static str,
    /// Event or command.
    pub kind: MessageKind,
    /// The pool it runs on; `None` is the default pool.
    pub pool: Option<&'static str>,
    /// Failure handling, rate, dedupe and ordering.
    pub options: HandlerOptions,
    /// `module_path!()` where the handler is written.
    pub module: &'static str,
    /// Source file of the handler.
    pub file: &'static str,
    /// Source line of the handler.
    pub line: u32,
    /// The state types its extractors need (checked at `build()`).
    pub requirements: fn() -> Vec<Requirement>,
    /// Runs the handler once.
    pub call: HandlerFn,
}

inventory::collect!(HandlerDescriptor);

impl HandlerDescriptor {
    /// `file:line` of the handler, for error messages.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// Per-handler options, written as `#[async_handler(...)]` arguments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HandlerOptions {
    /// How many attempts, and the delay between them.
    pub retry: RetryPolicy,
    /// An attempt running longer is cancelled and counts as failed.
    pub timeout: Option<Duration>,
    /// What happens after the last failed attempt.
    pub on_failure: OnFailure,
    /// Maximum rate of attempts (a partner's TPS cap).
    pub rate: Option<Rate>,
    /// Skip a message whose id this handler already completed.
    pub dedupe: bool,
    /// Messages with the same key run one at a time, in publish order.
    pub ordered: bool,
}

impl HandlerOptions {
    /// The defaults: 3 attempts with exponential backoff (100 ms × 2, at most 10 s), no timeout,
    /// dead-letter on failure, no rate limit, no dedupe, unordered.
    pub const DEFAULT: HandlerOptions = HandlerOptions {
        retry: RetryPolicy::DEFAULT,
        timeout: None,
        on_failure: OnFailure::DeadLetter,
        rate: None,
        dedupe: false,
        ordered: false,
    };
}

impl Default for HandlerOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Bounded retries: `retry(max_attempts = 5, backoff = exponential(100ms, 2.0, 10s), jitter)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// Randomise each delay (up to +100 %) so that retries of many messages do not arrive together.
    pub jitter: bool,
}

impl RetryPolicy {
    /// 3 attempts, exponential backoff 100 ms × 2 up to 10 s, no jitter.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        backoff: Backoff::Exponential {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_secs(10),
        },
        jitter: false,
    };
}

/// Delay between attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    /// The same delay every time: `backoff = fixed(1s)`.
    Fixed(Duration),
    /// `initial`, then × `factor` each time, capped at `max`: `backoff = exponential(100ms, 2.0, 10s)`.
    Exponential {
        /// First delay.
        initial: Duration,
        /// Multiplier per attempt.
        factor: f64,
        /// Largest delay.
        max: Duration,
    },
}

impl fmt::Display for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backoff::Fixed(delay) => write!(f, "fixed({delay:?})"),
            Backoff::Exponential {
                initial,
                factor,
                max,
            } => write!(f, "exponential({initial:?}, {factor}, {max:?})"),
        }
    }
}

/// What happens to a message after its last failed attempt (the seeds' three choices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Store it in the dead letters for inspection and re-drive (the default).
    DeadLetter,
    /// Log it at error level with its payload, for processing later by hand.
    Log,
    /// Count it and move on: the work may be skipped.
    Ignore,
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnFailure::DeadLetter => "dead_letter",
            OnFailure::Log => "log",
            OnFailure::Ignore => "ignore",
        })
    }
}

/// A rate limit: `rate = "180/s"` is 180 attempts per second, evenly spaced. The burst is 1% of
/// the count (at least 1), so any one-second window stays within 1% of the rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Attempts allowed per period.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:?}", self.count, self.per)
    }
}

/// Converts what a handler returns into its outcome. `Marker` tells plain values from `Result`s.
#[diagnostic::on_unimplemented(
    message = "this handler returns `{Self}`, but its message expects `{R}`",
    label = "wrong return type for this message",
    note = "an event handler returns `()` or `Result<(), E>`; a command handler returns the command's reply or `Result<Reply, E>`, where `E` is an error type (`std::error::Error`) or `herald::HandlerError`"
)]
pub trait IntoOutcome<R, Marker> {
    /// The reply, or the error the handler returned.
    fn into_outcome(self) -> Result<R, HandlerError>;
}

/// Marker: the handler returns the reply itself.
#[derive(Debug)]
pub enum Plain {}
/// Marker: the handler returns `Result<Reply, E>`.
#[derive(Debug)]
pub enum Fallible {}

impl<R> IntoOutcome<R, Plain> for R {
    fn into_outcome(self) -> Result<R, HandlerError> {
        Ok(self)
    }
}

impl<R, E: Into<HandlerError>> IntoOutcome<R, Fallible> for Result<R, E> {
    fn into_outcome(self) -> Result<R, HandlerError> {
        self.map_err(Into::into)
    }
}
