//! Layer 4: durable delivery on top of the engine's public entry points. The transactional outbox and
//! its relay (over any `MessageSource`), the SQL store written once over a dialect (SQLite,
//! PostgreSQL, MySQL/MariaDB), durable dead letters and the durable inbox.

pub(crate) mod dead_letters;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub mod inbox;
pub mod outbox;
