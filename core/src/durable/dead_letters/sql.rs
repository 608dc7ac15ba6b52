//! Durable dead letters in the outbox's SQL database, written once for every
//! [`Dialect`](crate::outbox::Dialect): CRUD, decoding and re-drive into the outbox. The dialect
//! brings the SQL text and the value encoders (`outbox/<dialect>.rs`).

use crate::durable::outbox::dialect::sealed::SqlDialect;
use crate::durable::outbox::dialect::{Bind, Dialect};
use crate::durable::outbox::row;
use crate::model::dead_letter::{DeadLetter, DeadLetterId, FailureKind};
use crate::model::stored_message::OUTBOX_HANDLER;
use crate::ports::dead_letters::{DeadLetterError, DeadLetterStore};
use async_trait::async_trait;
use std::fmt;

/// Durable dead letters in the SQL database `D` of the outbox: they survive restarts. Usually
/// named by its alias: [`SqliteDeadLetters`](crate::SqliteDeadLetters),
/// [`PgDeadLetters`](crate::PgDeadLetters), [`MySqlDeadLetters`](crate::MySqlDeadLetters).
///
/// The same message and handler are stored once (a second failure updates the entry).
pub struct SqlDeadLetters<D: sqlx::Database> {
    pool: sqlx::Pool<D>,
}

impl<D: sqlx::Database> Clone for SqlDeadLetters<D> {
    fn clone(&self) -> Self {
        SqlDeadLetters {
            pool: self.pool.clone(),
        }
    }
}

impl<D: Dialect> fmt::Debug for SqlDeadLetters<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlDeadLetters")
            .field("database", &<D as sqlx::Database>::NAME)
            .field("pool", &self.pool)
            .finish()
    }
}

impl<D: Dialect> SqlDeadLetters<D> {
    /// A store on `pool`. The schema comes from the outbox migrations
    /// ([`SqlOutbox::new`](crate::outbox::SqlOutbox::new) or `migrate`).
    pub fn new(pool: sqlx::Pool<D>) -> Self {
        SqlDeadLetters { pool }
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
        let sql = D::statements();
        let mut tx = self.pool.begin_with(D::statements().write_begin).await?;
        let Some(entry) = take_in::<D>(&mut tx, id).await? else {
            return Ok(None);
        };
        let existing = D::fetch_optional(
            &mut tx,
            sqlx::query(sql.outbox_by_message_id).message_id(entry.envelope.id),
        )
        .await?;
        let outbox_id = match existing {
            Some(existing) => {
                let outbox_id = D::get_int(&existing, "id")?;
                let mut done =
                    row::parse_handlers(D::get_text(&existing, "handlers_done")?.as_deref())?;
                row::forget(&mut done, &entry.handler);
                let only = match D::get_text(&existing, "only_handlers")? {
                    Some(text) => {
                        let mut only = row::parse_handlers(Some(&text))?;
                        if !only.contains(&entry.handler) {
                            only.push(entry.handler.clone());
                        }
                        row::handlers_json(&only)
                    }
                    None => None,
                };
                let update = sqlx::query(sql.redrive_update)
                    .text(row::handlers_json(&done))
                    .text(only)
                    .int(outbox_id);
                D::execute(&mut tx, update).await?;
                outbox_id
            }
            None => {
                let only = (entry.handler != OUTBOX_HANDLER).then(|| vec![entry.handler.clone()]);
                let payload = match &entry.payload {
                    serde_json::Value::String(raw) => raw.clone(),
                    other => other.to_string(),
                };
                D::insert(&mut tx, &entry.envelope, &payload, only.as_deref(), None).await?
            }
        };
        tx.commit().await?;
        Ok(Some(outbox_id))
    }
}

/// Removes and returns one entry inside `conn`'s transaction: the row is locked (or, on SQLite,
/// the database is) between the read and the delete, so two takers never both get it.
async fn take_in<D: SqlDialect>(
    conn: &mut D::Connection,
    id: DeadLetterId,
) -> Result<Option<DeadLetter>, DeadLetterError> {
    let sql = D::statements();
    let select = format!(
        "SELECT {} FROM herald_dead_letters {}",
        sql.dead_letter_columns, sql.dead_letter_by_id_for_update
    );
    let Some(found) = D::fetch_optional(conn, sqlx::query(&select).int(id.0)).await? else {
        return Ok(None);
    };
    let entry = decode::<D>(&found)?;
    let deleted = D::execute(conn, sqlx::query(sql.dead_letter_delete).int(id.0)).await?;
    Ok((deleted > 0).then_some(entry))
}

fn decode<D: SqlDialect>(row: &D::Row) -> Result<DeadLetter, DeadLetterError> {
    let text = |column: &str| -> Result<String, DeadLetterError> {
        D::get_text(row, column)?.ok_or_else(|| {
            DeadLetterError::Corrupt(format!("dead-letter column `{column}` is NULL"))
        })
    };
    let time = |column: &str| D::get_time(row, column).map_err(DeadLetterError::from);
    let envelope = text("envelope")?;
    let payload = text("payload")?;
    Ok(DeadLetter {
        id: DeadLetterId(D::get_int(row, "id")?),
        envelope: serde_json::from_str(&envelope).map_err(|e| {
            DeadLetterError::Corrupt(format!("the envelope is not valid ({e}): {envelope}"))
        })?,
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
        handler: text("handler")?,
        reason: text("reason")?.parse().map_err(DeadLetterError::Corrupt)?,
        failure: D::get_text(row, "failure_kind")?
            .map(|kind| kind.parse::<FailureKind>())
            .transpose()
            .map_err(DeadLetterError::Corrupt)?,
        attempts: u32::try_from(D::get_int(row, "attempts")?).unwrap_or(0),
        first_error: D::get_text(row, "first_error")?,
        last_error: D::get_text(row, "last_error")?,
        first_failed_at: time("first_failed_at")?,
        last_failed_at: time("last_failed_at")?,
        dead_lettered_at: time("dead_lettered_at")?
            .ok_or_else(|| DeadLetterError::Corrupt("dead_lettered_at is NULL".into()))?,
    })
}

impl<D: Dialect> SqlDeadLetters<D> {
    /// Every entry the `SELECT` ending in `tail` (binding `value`) returns.
    async fn select(&self, tail: &str, value: i64) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let statement = format!(
            "SELECT {} FROM herald_dead_letters {tail}",
            D::statements().dead_letter_columns
        );
        let mut conn = self.pool.acquire().await?;
        D::fetch_all(&mut conn, sqlx::query(&statement).int(value))
            .await?
            .iter()
            .map(decode::<D>)
            .collect()
    }
}

#[async_trait]
impl<D: Dialect> DeadLetterStore for SqlDeadLetters<D> {
    async fn put(&self, entry: DeadLetter) -> Result<DeadLetterId, DeadLetterError> {
        let envelope = serde_json::to_string(&entry.envelope).map_err(DeadLetterError::other)?;
        let payload = entry.payload.to_string();
        let query = sqlx::query(D::statements().dead_letter_put)
            .message_id(entry.envelope.id)
            .text(entry.envelope.name.clone().into_owned())
            .text(entry.handler.clone())
            .text(entry.reason.as_str().to_owned())
            .int(i64::from(entry.attempts))
            .json(envelope.clone())
            .json(payload.clone())
            .free_text(entry.first_error)
            .free_text(entry.last_error)
            .time(entry.first_failed_at)
            .time(entry.last_failed_at)
            .time(entry.dead_lettered_at)
            .text(entry.failure.map(|kind| kind.as_str().to_owned()));
        let query = D::bind_json_fallbacks(query, &envelope, &payload);
        let mut conn = self.pool.acquire().await?;
        Ok(DeadLetterId(
            D::insert_returning_id(&mut conn, query).await?,
        ))
    }

    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.select(D::statements().dead_letter_page, limit).await
    }

    async fn get(&self, id: DeadLetterId) -> Result<Option<DeadLetter>, DeadLetterError> {
        let found = self.select(D::statements().dead_letter_by_id, id.0).await?;
        Ok(found.into_iter().next())
    }

    async fn take(&self, id: DeadLetterId) -> Result<Option<DeadLetter>, DeadLetterError> {
        let mut tx = self.pool.begin_with(D::statements().write_begin).await?;
        let taken = take_in::<D>(&mut tx, id).await?;
        tx.commit().await?;
        Ok(taken)
    }

    async fn purge(&self, id: Option<DeadLetterId>) -> Result<u64, DeadLetterError> {
        let sql = D::statements();
        let query = match id {
            Some(id) => sqlx::query(sql.dead_letter_delete).int(id.0),
            None => sqlx::query(sql.dead_letter_delete_all),
        };
        let mut conn = self.pool.acquire().await?;
        Ok(D::execute(&mut conn, query).await?)
    }

    async fn count(&self) -> Result<u64, DeadLetterError> {
        let mut conn = self.pool.acquire().await?;
        let row = D::fetch_optional(&mut conn, sqlx::query(D::statements().dead_letter_count))
            .await?
            .ok_or_else(|| DeadLetterError::Corrupt("COUNT returned no row".into()))?;
        Ok(u64::try_from(D::get_int(&row, "count")?).unwrap_or(0))
    }
}
