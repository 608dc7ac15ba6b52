//! # Herald
//!
//! Asynchronous event and command handling for Rust that never loses a message silently.
//!
//! Annotate an `async fn` with [`async_handler`]; Herald registers it at link time, runs it on a
//! bounded pool, retries it, and routes every failure explicitly (dead letter, log or ignore).
//!
//! ```no_run
//! use herald::{async_handler, Event, Herald, State};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Event, Clone, Debug, Serialize, Deserialize)]
//! #[event(name = "user.signed_up")]
//! struct UserSignedUp { email: String }
//!
//! #[derive(Clone)]
//! struct Mailer;
//!
//! #[async_handler]
//! async fn send_verification(event: UserSignedUp, State(_mailer): State<Mailer>) {
//!     println!("verification e-mail to {}", event.email);
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let herald = Herald::builder().state(Mailer).build()?;
//! let outcome = herald.publish(UserSignedUp { email: "a@example.com".into() }).await?.await;
//! assert!(outcome.is_success());
//! # Ok(()) }
//! ```
//!
//! See `docs/ARCHITECTURE.md` for the path of one message from `publish` to a handler.

pub use herald_core::*;
pub use herald_macros::{async_handler, Command, Event};

/// The transports between processes, one cargo feature each (like sqlx's drivers). A transport is
/// a [`MessageSink`](crate::ports::MessageSink) that routes forward to
/// (`Herald::builder().route::<E>().to(sink)`) and a [`MessageSource`](crate::ports::MessageSource)
/// that a [`Relay`](crate::outbox::Relay) consumes into the handlers.
pub mod transport {
    /// Apache Kafka (feature `kafka`).
    #[cfg(feature = "kafka")]
    pub use herald_transport_kafka as kafka;
    /// The in-memory broker (feature `memory`).
    #[cfg(feature = "memory")]
    pub use herald_transport_memory as memory;
    /// NATS JetStream (feature `nats`).
    #[cfg(feature = "nats")]
    pub use herald_transport_nats as nats;
    /// RabbitMQ (feature `rabbitmq`).
    #[cfg(feature = "rabbitmq")]
    pub use herald_transport_rabbitmq as rabbitmq;
    /// Redis Streams (feature `redis`).
    #[cfg(feature = "redis")]
    pub use herald_transport_redis as redis;
}

/// Herald over HTTP: Prometheus metrics, the web console and the HTTP event feed (feature `web`).
#[cfg(feature = "web")]
pub use herald_web as web;

/// Batch files that prove they are complete: export, verified import, directory and SFTP transfer
/// (feature `batch`).
#[cfg(feature = "batch")]
pub use herald_batch as batch;

/// Change data capture from PostgreSQL: committed row changes, in commit order, as
/// `herald.cdc.change` messages for handlers and routes, with positions stored beside the
/// handlers' effects (feature `cdc`).
#[cfg(feature = "cdc")]
pub use herald_cdc as cdc;

/// Items used by the code that Herald's macros generate. Not public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use herald_core::__private::*;
}
