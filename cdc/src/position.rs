//! Positions: how far a slot's changes were processed, stored in PostgreSQL.
//!
//! Two kinds of rows in `herald_cdc_position (slot_name, consumer, commit_lsn, seq)`:
//!
//! - the **source's** (consumer [`SOURCE_CONSUMER`]): the last change whose handlers all finished
//!   (succeeded or dead-lettered). Written after each change, before the slot is advanced; after a
//!   crash the source skips the changes at or before it.
//! - each **handler's** ([`CdcPosition`]): written in the handler's own transaction, with its
//!   effects. A change at or before it was already applied: the handler reports a duplicate and
//!   the effect is not repeated.
//!
//! `herald_cdc_skipped` lists the changes a handler dead-lettered while its position moved past
//! them, so that re-driving such a dead letter runs the handler instead of reporting a duplicate.

use crate::change::Change;
use crate::lsn::Lsn;
use herald_core::{FromInvocation, HandlerError, Invocation, Message, Requirement};
use sqlx::PgPool;
use std::any::TypeId;

/// The consumer name of a source's own position row.
pub const SOURCE_CONSUMER: &str = "herald.cdc.source";

/// The position tables, created if missing (idempotent; safe from several processes at once).
const SCHEMA: &str = r#"
SET LOCAL client_min_messages = warning;
SELECT pg_advisory_xact_lock(hashtext('herald_cdc_schema'));
CREATE TABLE IF NOT EXISTS herald_cdc_position (
    slot_name  text        NOT NULL,
    consumer   text        NOT NULL,
    commit_lsn pg_lsn      NOT NULL,
    seq        bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, consumer)
);
CREATE TABLE IF NOT EXISTS herald_cdc_skipped (
    slot_name  text        NOT NULL,
    consumer   text        NOT NULL,
    commit_lsn pg_lsn      NOT NULL,
    seq        bigint      NOT NULL,
    skipped_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, consumer, commit_lsn, seq)
);
"#;

/// Moves a position forward, never back. Zero rows: it was already at or past this change.
const ADVANCE: &str = r#"
INSERT INTO herald_cdc_position AS p (slot_name, consumer, commit_lsn, seq, updated_at)
VALUES ($1, $2, $3::pg_lsn, $4, now())
ON CONFLICT (slot_name, consumer) DO UPDATE
   SET commit_lsn = EXCLUDED.commit_lsn, seq = EXCLUDED.seq, updated_at = EXCLUDED.updated_at
 WHERE (p.commit_lsn, p.seq) < (EXCLUDED.commit_lsn, EXCLUDED.seq)
"#;

/// Creates the position tables if they are missing. [`CdcSourceBuilder::build`] does it; call it
/// yourself where [`CdcPosition`] handlers run against another database than the source's.
///
/// [`CdcSourceBuilder::build`]: crate::CdcSourceBuilder::build
///
/// # Errors
/// A database error.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
    tx.commit().await
}

/// A stored position: the change `seq` of the transaction committed at `commit_lsn`.
pub(crate) async fn load(
    pool: &PgPool,
    slot: &str,
    consumer: &str,
) -> Result<Option<(Lsn, u32)>, sqlx::Error> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT commit_lsn::text, seq FROM herald_cdc_position WHERE slot_name = $1 AND consumer = $2",
    )
    .bind(slot)
    .bind(consumer)
    .fetch_optional(pool)
    .await?;
    row.map(|(lsn, seq)| {
        let lsn = lsn
            .parse::<Lsn>()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok((lsn, u32::try_from(seq).unwrap_or(u32::MAX)))
    })
    .transpose()
}

/// Stores the source's position (forward only).
pub(crate) async fn store_source(
    pool: &PgPool,
    slot: &str,
    position: (Lsn, u32),
) -> Result<(), sqlx::Error> {
    sqlx::query(ADVANCE)
        .bind(slot)
        .bind(SOURCE_CONSUMER)
        .bind(position.0.to_string())
        .bind(i64::from(position.1))
        .execute(pool)
        .await?;
    Ok(())
}

/// Notes that `handlers` dead-lettered the change at `position`, so a re-drive runs them.
pub(crate) async fn store_skipped(
    pool: &PgPool,
    slot: &str,
    handlers: &[String],
    position: (Lsn, u32),
) -> Result<(), sqlx::Error> {
    if handlers.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO herald_cdc_skipped (slot_name, consumer, commit_lsn, seq)
         SELECT $1, h, $3::pg_lsn, $4 FROM unnest($2::text[]) AS h
         ON CONFLICT DO NOTHING",
    )
    .bind(slot)
    .bind(handlers)
    .bind(position.0.to_string())
    .bind(i64::from(position.1))
    .execute(pool)
    .await?;
    Ok(())
}

/// Handler argument that stores the handler's position in the slot **in the transaction of its
/// effects**: effects and position commit together, or neither. A change delivered again (after a
/// crash of the source, a lost connection, a retry) is then recognised and its effect is not
/// repeated: exactly once in effect.
///
/// ```no_run
/// use herald_cdc::{Change, CdcPosition};
/// use herald_core::HandlerError;
/// // #[async_handler]
/// async fn copy_orders(change: Change, position: CdcPosition) -> Result<(), HandlerError> {
///     // Err(duplicate) when this handler already committed this change: the job then ends as
///     // `Deduplicated`, without retry or dead letter.
///     let mut tx = position.begin().await?;
///     sqlx::query("INSERT INTO order_copies (id, body) VALUES ($1, $2)")
///         .bind(change.new_value("id").and_then(|v| v.as_i64()))
///         .bind(serde_json::to_string(&change.new).unwrap_or_default())
///         .execute(&mut *tx)
///         .await?;
///     tx.commit().await?; // effects and position together, or neither
///     Ok(())
/// }
/// ```
///
/// It needs the pool as state (`Herald::builder().state(pool)`, a `sqlx::PgPool` on the database
/// holding both the effects and `herald_cdc_position`) and works for handlers of [`Change`]. The
/// position is per handler and slot, one row each; the source delivers changes one at a time, in
/// commit order, so it only moves forward. A change the handler dead-lettered can be re-driven: it
/// runs once more (its skip is consumed in the same transaction).
pub struct CdcPosition {
    pool: PgPool,
    consumer: &'static str,
    slot: String,
    position: (Lsn, u32),
}

impl std::fmt::Debug for CdcPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdcPosition")
            .field("consumer", &self.consumer)
            .field("slot", &self.slot)
            .field("commit_lsn", &self.position.0)
            .field("seq", &self.position.1)
            .finish_non_exhaustive()
    }
}

impl CdcPosition {
    /// The handler whose position this is.
    pub fn consumer(&self) -> &'static str {
        self.consumer
    }

    /// The slot.
    pub fn slot(&self) -> &str {
        &self.slot
    }

    /// The change's position: its commit LSN and its number in the transaction.
    pub fn position(&self) -> (Lsn, u32) {
        self.position
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The handler's stored position in this slot, if it has one.
    ///
    /// # Errors
    /// A database error.
    pub async fn stored(&self) -> Result<Option<(Lsn, u32)>, sqlx::Error> {
        load(&self.pool, &self.slot, self.consumer).await
    }

    /// Begins the handler's transaction and moves its position to this change in it.
    ///
    /// # Errors
    /// [`HandlerError::duplicate`] when the handler already committed this change (its position is
    /// at or past it, and the change is not one it dead-lettered); a database error (retried like
    /// any failure) otherwise.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, HandlerError> {
        let mut tx = self.pool.begin().await?;
        let lsn = self.position.0.to_string();
        let seq = i64::from(self.position.1);
        // Locks the handler's row (also when it does not move it): a second delivery of the same
        // change waits here for the first one's commit or rollback.
        let moved = sqlx::query(ADVANCE)
            .bind(&self.slot)
            .bind(self.consumer)
            .bind(&lsn)
            .bind(seq)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved == 1 {
            return Ok(tx);
        }
        let redriven = sqlx::query(
            "DELETE FROM herald_cdc_skipped
              WHERE slot_name = $1 AND consumer = $2 AND commit_lsn = $3::pg_lsn AND seq = $4",
        )
        .bind(&self.slot)
        .bind(self.consumer)
        .bind(&lsn)
        .bind(seq)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if redriven == 1 {
            return Ok(tx);
        }
        Err(HandlerError::duplicate(format!(
            "handler `{}` already committed change {}/{} of slot `{}` (its CDC position is at or past it)",
            self.consumer, self.position.0, self.position.1, self.slot
        )))
    }
}

impl FromInvocation for CdcPosition {
    fn requirement() -> Option<Requirement> {
        Some(Requirement {
            type_id: TypeId::of::<PgPool>(),
            type_name: std::any::type_name::<PgPool>(),
        })
    }

    fn from_invocation(invocation: &Invocation) -> Result<Self, HandlerError> {
        // `build()` checks the requirement, so this is only reached by a hand-made invocation.
        let pool = invocation.state::<PgPool>().ok_or_else(|| {
            HandlerError::permanent(HandlerError::msg(
                "CdcPosition needs the pool as state: add `.state(pool)` (a `sqlx::PgPool`) to the builder",
            ))
        })?;
        let change = invocation
            .context()
            .payload()
            .downcast_ref::<Change>()
            .ok_or_else(|| {
                HandlerError::permanent(HandlerError::msg(format!(
                    "CdcPosition is for handlers of `{}` (a herald_cdc::Change); this message is `{}`",
                    Change::NAME,
                    invocation.envelope().name
                )))
            })?;
        Ok(CdcPosition {
            pool,
            consumer: invocation.handler(),
            slot: change.slot.clone(),
            position: change.position(),
        })
    }
}
