//! Handler options as data: retry policy and backoff, timeout, rate, dedupe, ordering, failure
//! route, circuit breaker, the queue-delay deadline (`start_within`).

use std::fmt;
use std::time::Duration;

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
    /// Stop calling a failing partner for a while: see [`CircuitBreaker`].
    pub circuit_breaker: Option<CircuitBreaker>,
    /// The longest a message should wait before the handler starts on it (`start_within =
    /// "30s"`): from the message's time (its publish, or its delivery time when delayed in
    /// memory) to the start of the job's first attempt. A later start is logged at warn level
    /// and counted in the ledger's `start_late`; the job still runs.
    pub start_within: Option<Duration>,
}

impl HandlerOptions {
    /// The defaults: 3 attempts with exponential backoff (100 ms × 2, at most 10 s), no timeout,
    /// dead-letter on failure, no rate limit, no dedupe, unordered, no circuit breaker, no
    /// `start_within`.
    pub const DEFAULT: HandlerOptions = HandlerOptions {
        retry: RetryPolicy::DEFAULT,
        timeout: None,
        on_failure: OnFailure::DeadLetter,
        rate: None,
        dedupe: false,
        ordered: false,
        circuit_breaker: None,
        start_within: None,
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

/// A circuit breaker: `circuit_breaker(failures = 5, open_for = "30s")`.
///
/// After `failures` failed attempts in a row the breaker **opens**: the handler is not called for
/// `open_for`. Its jobs wait meanwhile: they are not failed, and the wait costs no attempt of
/// their retry budget. Then one job's attempt runs as a **probe** (half-open): its success closes
/// the breaker and every waiting job runs; its failure opens it for `open_for` again.
///
/// A failed attempt is one that returned a (retryable) error, panicked or timed out. A permanent
/// error, an extraction failure or a malformed message says nothing about the partner: it neither
/// counts nor resets the count. A success resets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// Failed attempts in a row that open the breaker (at least 1).
    pub failures: u32,
    /// How long it stays open before a probe runs.
    pub open_for: Duration,
}

impl CircuitBreaker {
    /// 5 failures in a row open it for 30 s.
    pub const DEFAULT: CircuitBreaker = CircuitBreaker {
        failures: 5,
        open_for: Duration::from_secs(30),
    };

    /// What is wrong with it, if anything, as a sentence that says the fix.
    pub(crate) fn problem(&self, handler: &str) -> Option<String> {
        if self.failures == 0 {
            return Some(format!(
                "the circuit breaker of `{handler}` opens after 0 failures, so it would never let a call through: use `failures` of at least 1, e.g. CircuitBreaker {{ failures: 5, open_for: Duration::from_secs(30) }}"
            ));
        }
        if self.open_for.is_zero() {
            return Some(format!(
                "the circuit breaker of `{handler}` stays open for 0 s, so it would never hold a call: use an `open_for` above zero, e.g. CircuitBreaker {{ failures: 5, open_for: Duration::from_secs(30) }}"
            ));
        }
        None
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit_breaker(failures={}, open_for={:?})",
            self.failures, self.open_for
        )
    }
}
