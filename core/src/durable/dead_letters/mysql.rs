//! Dead letters in MySQL or MariaDB (table `herald_dead_letters`, created by the outbox
//! migrations). The store is [`SqlDeadLetters`](super::SqlDeadLetters); the SQL text is in
//! `outbox/mysql.rs`.

/// Durable dead letters in the MySQL or MariaDB database of the outbox: they survive restarts.
///
/// The same message and handler are stored once (a second failure updates the entry).
pub type MySqlDeadLetters = super::SqlDeadLetters<sqlx::MySql>;
