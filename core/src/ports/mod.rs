//! Layer 2: the traits the engine talks to, for backends to implement. A message **source** (claim or
//! receive, keep, settle, wait) and a **sink** (publish a batch, resolve on confirm) in
//! [`transport`], the dead-letter store in [`dead_letters`], and the event feed and ops operations that
//! readers and ops tools use in [`feed`], consumer lag in [`lag`], the trace-context seam in
//! [`trace`], and where SLA expectations live in [`sla`]. It imports only `model`.

pub mod dead_letters;
pub mod feed;
pub mod lag;
pub mod sla;
pub mod trace;
pub mod transport;

pub use transport::*;
