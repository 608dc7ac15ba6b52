//! Runtime of [Herald](https://docs.rs/herald): registry, dispatcher, pools, retries, dead letters.
//!
//! Users depend on the `herald` facade crate, which re-exports this crate and the macros.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod builder;
mod bus;
pub mod dead_letter;
mod dedupe;
mod delivery;
mod dispatch;
mod envelope;
mod error;
mod extract;
pub mod feed;
mod handler;
mod id;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub mod inbox;
mod ingress;
mod invocation;
mod ledger;
mod message;
pub mod observe;
mod ordering;
pub mod outbox;
mod pool;
pub mod ports;
mod registry;
mod retry;
mod runtime;
mod shutdown;
mod stored;
mod stored_message;
mod worker;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use builder::{BuildError, BuildProblem, HeraldBuilder, DEFAULT_POOL};
pub use bus::Bus;
#[cfg(feature = "mysql")]
pub use dead_letter::MySqlDeadLetters;
#[cfg(feature = "postgres")]
pub use dead_letter::PgDeadLetters;
#[cfg(feature = "sqlite")]
pub use dead_letter::SqliteDeadLetters;
pub use dead_letter::{
    DeadLetter, DeadLetterError, DeadLetterId, DeadLetterReason, DeadLetterStore, FailureKind,
    InMemoryDeadLetters,
};
pub use delivery::{CommandReply, Delivery, EventOutcome, HandlerReport, HandlerStatus};
pub use envelope::{Envelope, Headers, MessageId, PublishOptions};
pub use error::{
    CommandError, Disposition, HandlerError, HandlerErrorKind, HandlerFailure, PublishError,
};
pub use extract::{FromInvocation, Meta, Requirement, State};
pub use handler::{
    AnyReply, Backoff, HandlerDescriptor, HandlerFn, HandlerOptions, OnFailure, Rate, RetryPolicy,
};
pub use invocation::{Invocation, InvocationContext};
pub use ledger::{Counts, LedgerSnapshot};
pub use message::{Command, Event, Message, MessageDescriptor, MessageKind, Payload};
pub use observe::AttemptObserver;
pub use pool::{Overload, PoolConfig, PoolStats};
pub use registry::RoutingTable;
pub use runtime::Herald;
pub use shutdown::ShutdownReport;
pub use stored::StoredError;
pub use stored_message::{HandlerProgress, OutgoingMessage, Progress, Settlement, StoredMessage};

/// The `sqlx` Herald is built with: use it for the transactions you pass to the outbox.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub use sqlx;
