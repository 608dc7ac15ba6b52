//! The durable inbox (the seeds' consumer-side dedupe, §6): a handler records the message id in its
//! own database transaction, together with its effects. A redelivered message (a relay retry, a
//! lease taken over after a crash) is skipped exactly when those effects were committed.
//!
//! ```no_run
//! # #[cfg(feature = "sqlite")] mod example {
//! use herald_core::{HandlerError, inbox::SqliteInbox};
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct OrderPlaced { id: i64 }
//! // #[async_handler]
//! async fn grant_points(order: OrderPlaced, inbox: SqliteInbox) -> Result<(), HandlerError> {
//!     // Err(duplicate) when this handler already committed this message: the job then ends as
//!     // `Deduplicated`, without retry or dead letter.
//!     let mut tx = inbox.begin().await?;
//!     sqlx::query("UPDATE points SET total = total + 10 WHERE order_id = ?1")
//!         .bind(order.id)
//!         .execute(&mut *tx)
//!         .await?;
//!     tx.commit().await?; // effects and inbox row together, or neither
//!     Ok(())
//! }
//! # }
//! ```
//!
//! The inbox needs the pool registered as state (`Herald::builder().state(pool)`) and the table
//! `herald_inbox` from the outbox migrations. On PostgreSQL and MySQL a second relay delivering
//! the same message at once waits on the first one's row lock, then sees its commit (duplicate)
//! or its rollback (goes ahead).

use crate::contract::extract::{FromInvocation, Requirement};
use crate::contract::invocation::Invocation;
use crate::model::error::{HandlerError, HandlerErrorKind};
use std::any::TypeId;
use std::fmt;

/// Handler argument that opens a transaction recording this handler's receipt of this message.
/// See the [module docs](self).
pub struct Inbox<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
    handler: &'static str,
    message_id: String,
}

/// The inbox on SQLite.
#[cfg(feature = "sqlite")]
pub type SqliteInbox = Inbox<sqlx::Sqlite>;

/// The inbox on PostgreSQL.
#[cfg(feature = "postgres")]
pub type PgInbox = Inbox<sqlx::Postgres>;

/// The inbox on MySQL or MariaDB.
#[cfg(feature = "mysql")]
pub type MySqlInbox = Inbox<sqlx::MySql>;

impl<DB: sqlx::Database> fmt::Debug for Inbox<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("handler", &self.handler)
            .field("message_id", &self.message_id)
            .finish_non_exhaustive()
    }
}

impl<DB: sqlx::Database> Inbox<DB> {
    /// The handler this inbox records for.
    pub fn handler(&self) -> &'static str {
        self.handler
    }

    /// The id recorded: the caller's idempotency key, or else the message id.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// The pool.
    pub fn pool(&self) -> &sqlx::Pool<DB> {
        &self.pool
    }

    fn duplicate(&self) -> HandlerError {
        HandlerError::duplicate(format!(
            "handler `{}` already committed message `{}` (durable inbox)",
            self.handler, self.message_id
        ))
    }
}

impl<DB: crate::durable::outbox::Dialect> Inbox<DB> {
    /// Begins the handler's transaction and records the message in it.
    ///
    /// # Errors
    /// [`HandlerError::duplicate`] when the message's effects were already committed; a database
    /// error (retried like any failure) otherwise.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, DB>, HandlerError> {
        use crate::durable::outbox::dialect::Bind;
        let mut tx = self.pool.begin().await?;
        let record = sqlx::query(DB::statements().inbox_insert)
            .text(self.handler.to_owned())
            .text(self.message_id.clone())
            .time(chrono::Utc::now());
        // SQLite and PostgreSQL skip a duplicate (0 rows); MySQL refuses it (a unique violation,
        // which rolls back only that statement).
        match DB::execute(&mut tx, record).await {
            Ok(0) => Err(self.duplicate()),
            Ok(_) => Ok(tx),
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                Err(self.duplicate())
            }
            Err(error) => Err(error.into()),
        }
    }
}

impl<DB: sqlx::Database> FromInvocation for Inbox<DB> {
    fn requirement() -> Option<Requirement> {
        Some(Requirement {
            type_id: TypeId::of::<sqlx::Pool<DB>>(),
            type_name: std::any::type_name::<sqlx::Pool<DB>>(),
        })
    }

    fn from_invocation(invocation: &Invocation) -> Result<Self, HandlerError> {
        let pool = invocation
            .state::<sqlx::Pool<DB>>()
            .ok_or_else(|| {
                HandlerError::with_kind(
                    HandlerErrorKind::Extraction,
                    format!(
                        "the durable inbox needs the pool as state: add `.state(pool)` (a `{}`) to the builder",
                        std::any::type_name::<sqlx::Pool<DB>>()
                    ),
                )
            })?;
        Ok(Inbox {
            pool,
            handler: invocation.handler(),
            message_id: invocation.envelope().dedupe_id(),
        })
    }
}
