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

/// Items used by the code that Herald's macros generate. Not public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use herald_core::__private::*;
}
