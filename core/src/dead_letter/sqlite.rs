//! Dead letters in SQLite (table `herald_dead_letters`, created by the outbox migrations).

use super::{DeadLetter, DeadLetterError, DeadLetterId, DeadLetterStore};
use crate::outbox::row::{self, OUTBOX_HANDLER};
use crate::outbox::sqlite::{insert, parse_time, text_time};
use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

const COLUMNS: &str =
    "id, handler, reason, failure_kind, attempts, envelope, payload, first_error, \
                       last_error, first_failed_at, last_failed_at, dead_lettered_at";

/// Durable dead letters in the SQLite database of the outbox: they survive restarts.
///
/// The same message and handler are stored once (a second failure updates the entry).
#[derive(Debug, Clone)]
pub struct SqliteDeadLetters {
    pool: SqlitePool,
}

fn db(error: impl std::fmt::Display) -> DeadLetterError {
    DeadLetterError(error.to_string())
}

impl SqliteDeadLetters {
    /// A store on `pool`. The schema comes from the outbox migrations
    /// ([`SqliteOutbox::new`](crate::outbox::SqliteOutbox::new) or `migrate`).
    pub fn new(pool: SqlitePool) -> Self {
        SqliteDeadLetters { pool }
    }

    /// Re-drive through the outbox: removes the dead letter and makes its message due again in
    /// `herald_outbox` for its handler only (the other handlers, which succeeded, do not run again).
    /// The running relay delivers it. Returns the outbox row id, or `None` if there is no such dead
    /// letter. This is what `herald dead-letters redrive` does: it needs no handler code, only the
    /// database.
    ///
    /// # Errors
    /// A database error (nothing changes).
    pub async fn redrive_to_outbox(
        &self,
        id: DeadLetterId,
    ) -> Result<Option<i64>, DeadLetterError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let taken = sqlx::query(&format!(
            "DELETE FROM herald_dead_letters WHERE id = ?1 RETURNING {COLUMNS}"
        ))
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(taken) = taken else {
            return Ok(None);
        };
        let entry = decode(&taken)?;
        let existing = sqlx::query(
            "SELECT id, handlers_done, only_handlers FROM herald_outbox WHERE message_id = ?1",
        )
        .bind(entry.envelope.id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let outbox_id = match existing {
            Some(existing) => {
                let outbox_id: i64 = existing.try_get("id").map_err(db)?;
                let mut done = row::parse_handlers(
                    existing
                        .try_get::<Option<String>, _>("handlers_done")
                        .map_err(db)?
                        .as_deref(),
                )
                .map_err(db)?;
                row::forget(&mut done, &entry.handler);
                let only = existing
                    .try_get::<Option<String>, _>("only_handlers")
                    .map_err(db)?;
                let only = match only {
                    Some(text) => {
                        let mut only = row::parse_handlers(Some(&text)).map_err(db)?;
                        if !only.contains(&entry.handler) {
                            only.push(entry.handler.clone());
                        }
                        row::handlers_json(&only)
                    }
                    None => None,
                };
                sqlx::query(
                    "UPDATE herald_outbox SET status = 'pending', fail_count = 0, next_attempt_at = 0,
                        processed_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
                        handlers_done = ?1, only_handlers = ?2
                     WHERE id = ?3",
                )
                .bind(row::handlers_json(&done))
                .bind(only)
                .bind(outbox_id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                outbox_id
            }
            None => {
                let only = (entry.handler != OUTBOX_HANDLER).then(|| vec![entry.handler.clone()]);
                let payload = match &entry.payload {
                    serde_json::Value::String(raw) => raw.clone(),
                    other => other.to_string(),
                };
                insert(&mut tx, &entry.envelope, &payload, only.as_deref())
                    .await
                    .map_err(db)?;
                sqlx::query_scalar("SELECT last_insert_rowid()")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db)?
            }
        };
        tx.commit().await.map_err(db)?;
        Ok(Some(outbox_id))
    }
}

/// The one entry a statement with `id` as its only parameter returns (`get` selects it, `take` deletes it).
async fn entry_by_id(
    pool: &SqlitePool,
    sql: &str,
    id: DeadLetterId,
) -> Result<Option<DeadLetter>, DeadLetterError> {
    let row = sqlx::query(sql)
        .bind(id.0)
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    row.as_ref().map(decode).transpose()
}

fn decode(row: &SqliteRow) -> Result<DeadLetter, DeadLetterError> {
    let get_time = |name: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>, DeadLetterError> {
        row.try_get::<Option<String>, _>(name)
            .map_err(db)?
            .map(|t| parse_time(&t).map_err(db))
            .transpose()
    };
    let envelope: String = row.try_get("envelope").map_err(db)?;
    let payload: String = row.try_get("payload").map_err(db)?;
    let reason: String = row.try_get("reason").map_err(db)?;
    Ok(DeadLetter {
        id: DeadLetterId(row.try_get("id").map_err(db)?),
        envelope: serde_json::from_str(&envelope).map_err(db)?,
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
        handler: row.try_get("handler").map_err(db)?,
        reason: reason.parse().map_err(DeadLetterError)?,
        failure: super::parse_failure(row.try_get("failure_kind").map_err(db)?)?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts").map_err(db)?).unwrap_or(0),
        first_error: row.try_get("first_error").map_err(db)?,
        last_error: row.try_get("last_error").map_err(db)?,
        first_failed_at: get_time("first_failed_at")?,
        last_failed_at: get_time("last_failed_at")?,
        dead_lettered_at: get_time("dead_lettered_at")?
            .ok_or_else(|| DeadLetterError("dead_lettered_at is NULL".into()))?,
    })
}

#[async_trait]
impl DeadLetterStore for SqliteDeadLetters {
    async fn put(&self, entry: DeadLetter) -> Result<DeadLetterId, DeadLetterError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO herald_dead_letters (message_id, message_type, handler, reason, attempts,
                envelope, payload, first_error, last_error, first_failed_at, last_failed_at,
                dead_lettered_at, failure_kind)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (message_id, handler) DO UPDATE SET
                reason = excluded.reason, failure_kind = excluded.failure_kind,
                attempts = excluded.attempts,
                last_error = excluded.last_error, last_failed_at = excluded.last_failed_at,
                dead_lettered_at = excluded.dead_lettered_at
             RETURNING id",
        )
        .bind(entry.envelope.id.to_string())
        .bind(entry.envelope.name.as_ref())
        .bind(&entry.handler)
        .bind(entry.reason.as_str())
        .bind(i64::from(entry.attempts))
        .bind(serde_json::to_string(&entry.envelope).map_err(db)?)
        .bind(entry.payload.to_string())
        .bind(&entry.first_error)
        .bind(&entry.last_error)
        .bind(entry.first_failed_at.map(text_time))
        .bind(entry.last_failed_at.map(text_time))
        .bind(text_time(entry.dead_lettered_at))
        .bind(entry.failure.map(|kind| kind.as_str()))
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(DeadLetterId(id))
    }

    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, DeadLetterError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM herald_dead_letters ORDER BY id LIMIT ?1"
        ))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(decode)
        .collect()
    }

    async fn get(&self, id: DeadLetterId) -> Result<Option<DeadLetter>, DeadLetterError> {
        let sql = format!("SELECT {COLUMNS} FROM herald_dead_letters WHERE id = ?1");
        entry_by_id(&self.pool, &sql, id).await
    }

    async fn take(&self, id: DeadLetterId) -> Result<Option<DeadLetter>, DeadLetterError> {
        let sql = format!("DELETE FROM herald_dead_letters WHERE id = ?1 RETURNING {COLUMNS}");
        entry_by_id(&self.pool, &sql, id).await
    }

    async fn purge(&self, id: Option<DeadLetterId>) -> Result<u64, DeadLetterError> {
        let done = match id {
            Some(id) => {
                sqlx::query("DELETE FROM herald_dead_letters WHERE id = ?1")
                    .bind(id.0)
                    .execute(&self.pool)
                    .await
            }
            None => {
                sqlx::query("DELETE FROM herald_dead_letters")
                    .execute(&self.pool)
                    .await
            }
        };
        Ok(done.map_err(db)?.rows_affected())
    }

    async fn count(&self) -> Result<u64, DeadLetterError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM herald_dead_letters")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
