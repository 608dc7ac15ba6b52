//! Dead letters in PostgreSQL (table `herald_dead_letters`, created by the outbox migrations).

use super::{DeadLetter, DeadLetterError, DeadLetterId, DeadLetterStore};
use crate::outbox::postgres::{insert, pg_text};
use crate::outbox::row::{self, OUTBOX_HANDLER};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

const COLUMNS: &str = "id, handler, reason, failure_kind, attempts, \
                       COALESCE(envelope_text, envelope::text) AS envelope, \
                       COALESCE(payload_text, payload::text) AS payload, \
                       first_error, last_error, first_failed_at, last_failed_at, dead_lettered_at";

/// Durable dead letters in the PostgreSQL database of the outbox: they survive restarts.
///
/// The same message and handler are stored once (a second failure updates the entry).
#[derive(Debug, Clone)]
pub struct PgDeadLetters {
    pool: PgPool,
}

fn db(error: impl std::fmt::Display) -> DeadLetterError {
    DeadLetterError(error.to_string())
}

impl PgDeadLetters {
    /// A store on `pool`. The schema comes from the outbox migrations
    /// ([`PgOutbox::new`](crate::outbox::PgOutbox::new) or `migrate`).
    pub fn new(pool: PgPool) -> Self {
        PgDeadLetters { pool }
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
            "DELETE FROM herald_dead_letters WHERE id = $1 RETURNING {COLUMNS}"
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
            "SELECT id, handlers_done::text AS handlers_done, only_handlers::text AS only_handlers
             FROM herald_outbox WHERE message_id = $1 FOR UPDATE",
        )
        .bind(entry.envelope.id.as_uuid())
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
                    "UPDATE herald_outbox SET status = 'pending', fail_count = 0, next_attempt_at = now(),
                        processed_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
                        handlers_done = $1::jsonb, only_handlers = $2::jsonb
                     WHERE id = $3",
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
                    .map_err(db)?
            }
        };
        tx.commit().await.map_err(db)?;
        Ok(Some(outbox_id))
    }
}

/// The one entry a statement with `id` as its only parameter returns (`get` selects it, `take` deletes it).
async fn entry_by_id(
    pool: &PgPool,
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

/// JSON for a `jsonb` column, or `null` there and the text beside it when jsonb would refuse it:
/// jsonb cannot hold U+0000, which serde_json writes as `\u0000`. (Text that merely contains a
/// backslash before `u0000` goes to the text column too, harmlessly: it reads back the same.)
fn jsonb_or_text(json: String) -> (String, Option<String>) {
    if json.contains("\\u0000") {
        ("null".to_owned(), Some(json))
    } else {
        (json, None)
    }
}

fn decode(row: &PgRow) -> Result<DeadLetter, DeadLetterError> {
    let get_time = |name: &str| -> Result<Option<DateTime<Utc>>, DeadLetterError> {
        row.try_get::<Option<DateTime<Utc>>, _>(name).map_err(db)
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
        attempts: u32::try_from(row.try_get::<i32, _>("attempts").map_err(db)?).unwrap_or(0),
        first_error: row.try_get("first_error").map_err(db)?,
        last_error: row.try_get("last_error").map_err(db)?,
        first_failed_at: get_time("first_failed_at")?,
        last_failed_at: get_time("last_failed_at")?,
        dead_lettered_at: get_time("dead_lettered_at")?
            .ok_or_else(|| DeadLetterError("dead_lettered_at is NULL".into()))?,
    })
}

#[async_trait]
impl DeadLetterStore for PgDeadLetters {
    async fn put(&self, entry: DeadLetter) -> Result<DeadLetterId, DeadLetterError> {
        let (envelope, envelope_text) =
            jsonb_or_text(serde_json::to_string(&entry.envelope).map_err(db)?);
        let (payload, payload_text) = jsonb_or_text(entry.payload.to_string());
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO herald_dead_letters (message_id, message_type, handler, reason, attempts,
                envelope, payload, first_error, last_error, first_failed_at, last_failed_at,
                dead_lettered_at, failure_kind, envelope_text, payload_text)
             VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (message_id, handler) DO UPDATE SET
                reason = excluded.reason, failure_kind = excluded.failure_kind,
                attempts = excluded.attempts,
                last_error = excluded.last_error, last_failed_at = excluded.last_failed_at,
                dead_lettered_at = excluded.dead_lettered_at
             RETURNING id",
        )
        .bind(entry.envelope.id.as_uuid())
        .bind(entry.envelope.name.as_ref())
        .bind(&entry.handler)
        .bind(entry.reason.as_str())
        .bind(i32::try_from(entry.attempts).unwrap_or(i32::MAX))
        .bind(envelope)
        .bind(payload)
        .bind(entry.first_error.as_deref().map(pg_text))
        .bind(entry.last_error.as_deref().map(pg_text))
        .bind(entry.first_failed_at)
        .bind(entry.last_failed_at)
        .bind(entry.dead_lettered_at)
        .bind(entry.failure.map(|kind| kind.as_str()))
        .bind(envelope_text)
        .bind(payload_text)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(DeadLetterId(id))
    }

    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, DeadLetterError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM herald_dead_letters ORDER BY id LIMIT $1"
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
        let sql = format!("SELECT {COLUMNS} FROM herald_dead_letters WHERE id = $1");
        entry_by_id(&self.pool, &sql, id).await
    }

    async fn take(&self, id: DeadLetterId) -> Result<Option<DeadLetter>, DeadLetterError> {
        let sql = format!("DELETE FROM herald_dead_letters WHERE id = $1 RETURNING {COLUMNS}");
        entry_by_id(&self.pool, &sql, id).await
    }

    async fn purge(&self, id: Option<DeadLetterId>) -> Result<u64, DeadLetterError> {
        let done = match id {
            Some(id) => {
                sqlx::query("DELETE FROM herald_dead_letters WHERE id = $1")
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
