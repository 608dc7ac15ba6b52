//! Runtime of [Herald](https://docs.rs/herald): registry, dispatcher, pools, retries, dead letters,
//! the transactional outbox and its relays.
//!
//! Users depend on the `herald` facade crate, which re-exports this crate and the macros.
//!
//! The crate is built in layers that import downward only (checked by `core/tests/layers.rs`; see
//! `docs/ARCHITECTURE.md`): `model` (plain data) → `contract` (what handlers and macros see) and
//! `ports` (the traits backends implement) → `engine` (the runtime) → `durable` (outbox, relay, SQL
//! stores, inbox). This file, the facade of the crate, re-exports the public items of every layer.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod contract;
mod durable;
mod engine;
mod model;
pub mod ports;

/// The envelope on the wire (`docs/WIRE.md`): encode and decode the JSON every transport carries.
pub mod wire {
    pub use crate::model::wire::*;
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub use durable::inbox;
pub use durable::outbox;
pub use engine::observe;
pub use ports::feed;

/// Dead letters: the record, the store trait, the in-memory default and the durable SQL stores.
pub mod dead_letter {
    #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
    pub use crate::durable::dead_letters::*;
    pub use crate::engine::memory_dead_letters::InMemoryDeadLetters;
    pub use crate::model::dead_letter::{DeadLetter, DeadLetterId, DeadLetterReason, FailureKind};
    pub use crate::ports::dead_letters::{DeadLetterError, DeadLetterStore};
}

/// Deadline SLAs ("when A happens, B within T"): the declaration, the breach event, the stored
/// records, the store port and its in-memory default (see `docs/SLAS.md`).
pub mod sla {
    pub use crate::engine::memory_slas::{InMemorySlaStore, DEFAULT_KEEP_FINISHED};
    pub use crate::engine::sla::DEFAULT_SLA_SWEEP_INTERVAL;
    pub use crate::model::sla::{
        ExpectationState, Expected, Fulfilment, NewExpectation, Sla, SlaAfter, SlaBreached,
        SlaBuilder, SlaCounts, SlaExpect, SlaExpectation, SlaStatus, MAX_SLA_NAME,
    };
    pub use crate::ports::sla::{SlaStore, SlaStoreError};
}

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use contract::extract::{FromInvocation, Meta, Requirement, State};
pub use contract::handler::{AnyReply, HandlerDescriptor, HandlerFn};
pub use contract::invocation::{Invocation, InvocationContext};
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
pub use engine::builder::{BuildError, BuildProblem, HeraldBuilder, DEFAULT_POOL};
pub use engine::bus::Bus;
pub use engine::handles::{CommandReply, Delivery};
pub use engine::ingress::StoredError;
pub use engine::observe::{AttemptObserver, BreakerState};
pub use engine::pool::{Overload, PoolConfig, PoolStats};
pub use engine::registry::RoutingTable;
pub use engine::route::{RouteBuilder, ROUTE_PREFIX, ROUTE_RETRY, ROUTE_TIMEOUT};
pub use engine::runtime::Herald;
pub use engine::shutdown::ShutdownReport;
pub use model::envelope::{DeliverAt, Envelope, Headers, MessageId, PublishOptions};
pub use model::error::{
    CommandError, Disposition, HandlerError, HandlerErrorKind, HandlerFailure, PublishError,
};
pub use model::ledger::{Counts, LedgerSnapshot};
pub use model::message::{Command, Event, Message, MessageDescriptor, MessageKind, Payload};
pub use model::options::{Backoff, CircuitBreaker, HandlerOptions, OnFailure, Rate, RetryPolicy};
pub use model::outcome::{EventOutcome, HandlerReport, HandlerStatus};
pub use model::stored_message::{
    HandlerProgress, OutgoingMessage, Progress, Settlement, StoredMessage,
};
pub use sla::{InMemorySlaStore, Sla, SlaBreached, SlaCounts, SlaStatus, SlaStore, SlaStoreError};

/// The `chrono` Herald's times are in (envelope times, [`PublishOptions::deliver_at`]).
pub use chrono;

/// The `sqlx` Herald is built with: use it for the transactions you pass to the outbox.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub use sqlx;
