//! Durable dead letters in the SQL databases, written once over a dialect.

use crate::ports::dead_letters::DeadLetterError;
#[cfg(feature = "mysql")]
pub use mysql::MySqlDeadLetters;
#[cfg(feature = "postgres")]
pub use postgres::PgDeadLetters;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub use sql::SqlDeadLetters;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteDeadLetters;

#[cfg(feature = "mysql")]
mod mysql;

#[cfg(feature = "postgres")]
mod postgres;

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod sql;

#[cfg(feature = "sqlite")]
mod sqlite;

impl From<crate::durable::outbox::OutboxError> for DeadLetterError {
    fn from(error: crate::durable::outbox::OutboxError) -> Self {
        use crate::durable::outbox::OutboxError;
        match error {
            #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
            OutboxError::Database(error) => DeadLetterError::Database(error),
            OutboxError::Corrupt(what) => DeadLetterError::Corrupt(what),
            other => DeadLetterError::Other(Box::new(other)),
        }
    }
}
