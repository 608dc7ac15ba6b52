//! Herald over HTTP, as one [axum](https://docs.rs/axum) router that an application mounts in its
//! own server or lets Herald serve (`herald serve`):
//!
//! - [`metrics`]: a Prometheus exporter on the observer seam (`GET /metrics`);
//! - [`console`]: server-rendered pages to see pools, the ledger, outbox lag and dead letters, and
//!   to re-drive or purge them;
//! - [`feed`]: the HTTP event feed (`GET /events?after=&limit=&wait=`), whose consumers keep their
//!   own position (or store it here);
//! - [`access`]: what guards them: loopback by default, access tokens, CSRF tokens on every
//!   mutation, read-only mode.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod access;
pub mod console;
pub mod feed;
pub mod metrics;
#[cfg(feature = "otel")]
pub mod otel;
