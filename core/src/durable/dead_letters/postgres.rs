//! Dead letters in PostgreSQL (table `herald_dead_letters`, created by the outbox migrations).
//! The store is [`SqlDeadLetters`](super::SqlDeadLetters); PostgreSQL's SQL text and its
//! U+0000-safe encoders are in `outbox/postgres.rs`.

/// Durable dead letters in the PostgreSQL database of the outbox: they survive restarts.
///
/// The same message and handler are stored once (a second failure updates the entry).
pub type PgDeadLetters = super::SqlDeadLetters<sqlx::Postgres>;
