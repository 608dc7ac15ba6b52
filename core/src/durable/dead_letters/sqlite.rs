//! Dead letters in SQLite (table `herald_dead_letters`, created by the outbox migrations). The
//! store is [`SqlDeadLetters`](super::SqlDeadLetters); SQLite's SQL text is in
//! `outbox/sqlite.rs`.

/// Durable dead letters in the SQLite database of the outbox: they survive restarts.
///
/// The same message and handler are stored once (a second failure updates the entry).
pub type SqliteDeadLetters = super::SqlDeadLetters<sqlx::Sqlite>;
