//! The SQLite outbox: one database file in WAL mode, the embedded default.
//!
//! SQLite lets one writer at a time, so the ids of committed rows are in commit order and an
//! event's position is its id. Several relays may share one file (their claims are serialised by
//! the write lock), but one relay per process is the usual setup; use PostgreSQL for more.

use super::row::{self, Backend, ClaimedRow, Outcome, Sleeper, Waiter};
use super::schema::{self, MIGRATIONS, MIGRATIONS_TABLE};
use super::{
    status, NewRow, OutboxConnection, OutboxError, OutboxPublishError, OutboxStatus, RelayBuilder,
    StoredEvent, BULK_COLUMNS, DEFAULT_MAX_PAYLOAD_BYTES,
};
use crate::dead_letter::SqliteDeadLetters;
use crate::envelope::{Envelope, MessageId, PublishOptions};
use crate::message::Message;
use crate::runtime::Herald;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Acquire, QueryBuilder, Row, Sqlite, SqlitePool};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Opens (creating if needed) a SQLite file in WAL mode with a 5 s busy timeout, ready for the
/// outbox and for the application's own tables.
///
/// # Errors
/// When the file cannot be opened or created.
pub async fn connect(path: impl AsRef<Path>) -> Result<SqlitePool, OutboxError> {
    Ok(SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(connect_options(path))
        .await?)
}

/// The connect options [`connect`] uses: create if missing, WAL, `synchronous = NORMAL` (durable
/// across a process crash; WAL's usual setting), busy timeout 5 s.
pub fn connect_options(path: impl AsRef<Path>) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
}

/// Text form of a time a person reads: RFC 3339, UTC, milliseconds (sorts as text).
pub(crate) fn text_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn parse_time(text: &str) -> Result<DateTime<Utc>, OutboxError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| OutboxError::Corrupt(format!("time `{text}`: {e}")))
}

/// SQLite's bind-parameter limit (`SQLITE_MAX_VARIABLE_NUMBER`, 32,766 since 3.32).
const SQLITE_MAX_VARIABLES: usize = 32_766;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The transactional outbox on SQLite. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteOutbox {
    backend: Arc<SqliteBackend>,
    max_payload_bytes: usize,
}

#[derive(Debug)]
struct SqliteBackend {
    pool: SqlitePool,
}

impl SqliteOutbox {
    /// Applies Herald's migrations (if needed) and returns the outbox.
    ///
    /// # Errors
    /// A database error, or [`OutboxError::SchemaTooNew`].
    pub async fn new(pool: SqlitePool) -> Result<Self, OutboxError> {
        Self::migrate(&pool).await?;
        Ok(Self::from_pool(pool))
    }

    /// Opens an outbox whose schema must already be there (the CLI's way: it never changes a schema).
    ///
    /// # Errors
    /// [`OutboxError::NoSchema`] when Herald's tables are missing, or a database error.
    pub async fn open(pool: SqlitePool) -> Result<Self, OutboxError> {
        let version = Self::schema_version(&pool).await?;
        if version == 0 {
            return Err(OutboxError::NoSchema);
        }
        Ok(Self::from_pool(pool))
    }

    fn from_pool(pool: SqlitePool) -> Self {
        SqliteOutbox {
            backend: Arc::new(SqliteBackend { pool }),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }

    /// The schema version applied to this database (0: none).
    ///
    /// # Errors
    /// A database error.
    pub async fn schema_version(pool: &SqlitePool) -> Result<i64, OutboxError> {
        let exists: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1")
                .bind(MIGRATIONS_TABLE)
                .fetch_optional(pool)
                .await?;
        if exists.is_none() {
            return Ok(0);
        }
        let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM herald_schema")
            .fetch_one(pool)
            .await?;
        Ok(version.unwrap_or(0))
    }

    /// Applies the migrations this build ships that the database does not have yet, each in its
    /// own transaction, and switches the file to WAL mode.
    ///
    /// # Errors
    /// A database error, or [`OutboxError::SchemaTooNew`].
    pub async fn migrate(pool: &SqlitePool) -> Result<(), OutboxError> {
        let mut conn = pool.acquire().await?;
        // A no-op on an in-memory database; persistent for a file.
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&mut *conn)
            .await?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS herald_schema (
                version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        // BEGIN IMMEDIATE takes the write lock first, so two processes migrating at once do not
        // both apply a version.
        for migration in MIGRATIONS {
            sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
            let applied: Result<(), OutboxError> = async {
                let found: Option<i64> =
                    sqlx::query_scalar("SELECT MAX(version) FROM herald_schema")
                        .fetch_one(&mut *conn)
                        .await?;
                let found = found.unwrap_or(0);
                if found > schema::latest() {
                    return Err(OutboxError::SchemaTooNew {
                        found,
                        known: schema::latest(),
                    });
                }
                if found >= migration.version {
                    return Ok(());
                }
                sqlx::raw_sql(migration.sqlite).execute(&mut *conn).await?;
                sqlx::query(
                    "INSERT INTO herald_schema (version, description, applied_at) VALUES (?1, ?2, ?3)",
                )
                .bind(migration.version)
                .bind(migration.description)
                .bind(text_time(Utc::now()))
                .execute(&mut *conn)
                .await?;
                Ok(())
            }
            .await;
            match applied {
                Ok(()) => {
                    sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
                }
                Err(error) => {
                    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.backend.pool
    }

    /// Sets the largest serialized JSON payload [`publish`](Self::publish),
    /// [`publish_with`](Self::publish_with) and [`publish_all`](Self::publish_all) accept, in bytes
    /// (default [`DEFAULT_MAX_PAYLOAD_BYTES`], 1 MiB). A larger message is refused with
    /// [`OutboxPublishError::TooLarge`] before anything is written. Applies to this handle and its
    /// clones made afterwards.
    #[must_use]
    pub fn max_payload_bytes(mut self, limit: usize) -> Self {
        self.max_payload_bytes = limit;
        self
    }

    /// The largest serialized JSON payload this outbox accepts, in bytes.
    pub fn payload_limit(&self) -> usize {
        self.max_payload_bytes
    }

    /// Writes `message` into the outbox on `conn`, the transaction of your state change
    /// (`&mut *tx` or `&mut tx`): the message is delivered if and only if it commits. Without a
    /// transaction of your own, pass a pooled connection, `&mut *pool.acquire().await?` (the row
    /// then commits at once). See [`OutboxConnection`].
    ///
    /// The returned future is `Send` with a borrowed transaction: await it in `tokio::spawn`, a
    /// web handler, or a Herald handler on its [inbox](crate::inbox) transaction.
    ///
    /// # Errors
    /// [`OutboxPublishError::TooLarge`] when the JSON payload is over
    /// [`payload_limit`](Self::payload_limit) (nothing written), or
    /// [`OutboxPublishError::Failed`] for a serialization or database error (roll the transaction
    /// back). Either way the message comes back inside the error.
    pub async fn publish<C, M>(
        &self,
        conn: C,
        message: M,
    ) -> Result<MessageId, OutboxPublishError<M>>
    where
        C: OutboxConnection<Sqlite>,
        M: Message,
    {
        self.publish_with(conn, message, PublishOptions::new())
            .await
    }

    /// As [`publish`](Self::publish), with an idempotency key and headers.
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub async fn publish_with<C, M>(
        &self,
        mut conn: C,
        message: M,
        options: PublishOptions,
    ) -> Result<MessageId, OutboxPublishError<M>>
    where
        C: OutboxConnection<Sqlite>,
        M: Message,
    {
        let row = match NewRow::new(&message, options, self.max_payload_bytes) {
            Ok(row) => row,
            Err(refused) => return Err(refused.returning(message)),
        };
        match insert(conn.connection(), &row.envelope, &row.payload, None).await {
            Ok(()) => Ok(row.envelope.id),
            Err(source) => Err(OutboxPublishError::Failed { message, source }),
        }
    }

    /// Writes every message of `messages` into the outbox on `conn` (as for
    /// [`publish`](Self::publish): `&mut *tx`), with multi-row `INSERT`s
    /// (as many rows per statement as SQLite's 32,766 bind parameters allow). Same guarantee as [`publish`](Self::publish):
    /// delivered if and only if the transaction commits. Returns the message ids in order. Much
    /// cheaper than one `publish` per message for large batches.
    ///
    /// # Errors
    /// [`OutboxPublishError::TooLarge`] when any payload is over
    /// [`payload_limit`](Self::payload_limit): no message of the batch is written. Otherwise
    /// [`OutboxPublishError::Failed`] for a serialization error (nothing written) or a database
    /// error (roll the transaction back: some rows may have been written). Either way every
    /// message comes back inside the error, as a `Vec` in order.
    pub async fn publish_all<C, M, I>(
        &self,
        mut conn: C,
        messages: I,
    ) -> Result<Vec<MessageId>, OutboxPublishError<Vec<M>>>
    where
        C: OutboxConnection<Sqlite>,
        M: Message,
        I: IntoIterator<Item = M>,
    {
        let messages: Vec<M> = messages.into_iter().collect();
        let rows = match NewRow::batch(&messages, self.max_payload_bytes) {
            Ok(rows) => rows,
            Err(refused) => return Err(refused.returning(messages)),
        };
        if let Err(source) = insert_all(conn.connection(), &rows).await {
            return Err(OutboxPublishError::Failed {
                message: messages,
                source,
            });
        }
        Ok(rows.into_iter().map(|row| row.envelope.id).collect())
    }

    /// A relay that delivers this outbox's rows through `herald`'s handlers.
    pub fn relay(&self, herald: &Herald) -> RelayBuilder {
        RelayBuilder::new(self.backend.clone(), herald)
    }

    /// The durable dead-letter store in the same database.
    pub fn dead_letters(&self) -> SqliteDeadLetters {
        SqliteDeadLetters::new(self.backend.pool.clone())
    }

    /// Counts by state and the lag (age of the oldest pending row).
    ///
    /// # Errors
    /// A database error.
    pub async fn status(&self) -> Result<OutboxStatus, OutboxError> {
        let now = Utc::now();
        let row = sqlx::query(
            "SELECT
                COALESCE(SUM(status = 'pending'), 0) AS pending,
                COALESCE(SUM(status = 'pending' AND lease_expires_at > ?1), 0) AS in_flight,
                COALESCE(SUM(status = 'pending' AND fail_count > 0), 0) AS retrying,
                COALESCE(SUM(status = 'failed'), 0) AS failed,
                COALESCE(SUM(status = 'processed'), 0) AS processed,
                (SELECT occurred_at FROM herald_outbox WHERE status = 'pending' ORDER BY id LIMIT 1) AS oldest,
                (SELECT COUNT(*) FROM herald_dead_letters) AS dead_letters
             FROM herald_outbox",
        )
        .bind(now.timestamp_millis())
        .fetch_one(&self.backend.pool)
        .await?;
        let count = |name: &str| -> Result<u64, OutboxError> {
            Ok(u64::try_from(row.try_get::<i64, _>(name)?).unwrap_or(0))
        };
        let oldest = row
            .try_get::<Option<String>, _>("oldest")?
            .map(|t| parse_time(&t))
            .transpose()?;
        Ok(OutboxStatus {
            pending: count("pending")?,
            in_flight: count("in_flight")?,
            retrying: count("retrying")?,
            failed: count("failed")?,
            processed: count("processed")?,
            oldest_pending_at: oldest,
            lag: oldest.map(|t| (now - t).to_std().unwrap_or_default()),
            dead_letters: count("dead_letters")?,
        })
    }

    /// Stored events after `offset` (exclusive), oldest first, at most `limit`. Keep the last
    /// returned `position` as your offset. On SQLite writers are serialised, so ids are in commit
    /// order and the position is the id.
    ///
    /// # Errors
    /// A database error.
    pub async fn events_after(
        &self,
        offset: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, OutboxError> {
        let rows = sqlx::query(
            "SELECT id, message_id, message_type, key, payload, headers, occurred_at, status
             FROM herald_outbox WHERE id > ?1 ORDER BY id LIMIT ?2",
        )
        .bind(offset)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.backend.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let id: i64 = row.try_get("id")?;
                let payload: String = row.try_get("payload")?;
                let headers: String = row.try_get("headers")?;
                Ok(StoredEvent {
                    position: id,
                    id,
                    message_id: row.try_get("message_id")?,
                    message_type: row.try_get("message_type")?,
                    key: row.try_get("key")?,
                    payload: serde_json::from_str(&payload)
                        .unwrap_or(serde_json::Value::String(payload)),
                    headers: serde_json::from_str(&headers).unwrap_or_default(),
                    occurred_at: parse_time(&row.try_get::<String, _>("occurred_at")?)?,
                    status: row.try_get("status")?,
                })
            })
            .collect()
    }

    /// Deletes finished rows whose `processed_at` is older than `older_than`, `batch` at a time.
    /// Returns how many were deleted.
    ///
    /// # Errors
    /// A database error (rows deleted before it stay deleted).
    pub async fn delete_finished(
        &self,
        older_than: Duration,
        batch: usize,
    ) -> Result<u64, OutboxError> {
        self.backend.delete_finished(older_than, batch).await
    }
}

/// Inserts `rows` with multi-row `INSERT`s, as many rows per statement as the bind limit allows.
async fn insert_all(conn: &mut sqlx::SqliteConnection, rows: &[NewRow]) -> Result<(), OutboxError> {
    for chunk in rows.chunks(SQLITE_MAX_VARIABLES / BULK_COLUMNS) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO herald_outbox (message_id, message_type, key, payload, headers, occurred_at) ",
        );
        insert.push_values(chunk, |mut values, row| {
            values
                .push_bind(row.envelope.id.to_string())
                .push_bind(row.envelope.name.as_ref())
                .push_bind(row.envelope.key.as_deref())
                .push_bind(row.payload.as_str())
                .push_bind(row.headers.as_str())
                .push_bind(text_time(row.envelope.occurred_at));
        });
        insert.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Inserts one outbox row (also used by dead-letter re-drive).
pub(crate) async fn insert(
    conn: &mut sqlx::SqliteConnection,
    envelope: &Envelope,
    payload: &str,
    only_handlers: Option<&[String]>,
) -> Result<(), OutboxError> {
    sqlx::query(
        "INSERT INTO herald_outbox (message_id, message_type, key, payload, headers, occurred_at, only_handlers)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .bind(envelope.id.to_string())
    .bind(envelope.name.as_ref())
    .bind(envelope.key.as_deref())
    .bind(payload)
    .bind(row::headers_json(envelope)?)
    .bind(text_time(envelope.occurred_at))
    .bind(only_handlers.and_then(row::handlers_json))
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn claim(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedRow>, OutboxError> {
        let now = Utc::now().timestamp_millis();
        let rows = sqlx::query(
            "UPDATE herald_outbox SET lease_owner = ?1, lease_expires_at = ?2
             WHERE id IN (
                SELECT o.id FROM herald_outbox o
                WHERE o.status = 'pending' AND o.next_attempt_at <= ?3
                  AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= ?3)
                  AND (o.key IS NULL OR NOT EXISTS (
                        SELECT 1 FROM herald_outbox p
                        WHERE p.key = o.key AND p.status = 'pending' AND p.id <> o.id
                          AND (p.id < o.id OR p.lease_expires_at > ?3)))
                ORDER BY o.id LIMIT ?4)
             RETURNING id, message_id, message_type, key, payload, headers, occurred_at,
                       fail_count, handlers_done, only_handlers",
        )
        .bind(owner)
        .bind(now.saturating_add(millis(lease)))
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                Ok(ClaimedRow {
                    id: row.try_get("id")?,
                    message_id: row.try_get("message_id")?,
                    message_type: row.try_get("message_type")?,
                    key: row.try_get("key")?,
                    payload: row.try_get("payload")?,
                    headers: row.try_get("headers")?,
                    occurred_at: parse_time(&row.try_get::<String, _>("occurred_at")?)?,
                    fail_count: row.try_get("fail_count")?,
                    handlers_done: row::parse_handlers(
                        row.try_get::<Option<String>, _>("handlers_done")?
                            .as_deref(),
                    )?,
                    only_handlers: row
                        .try_get::<Option<String>, _>("only_handlers")?
                        .map(|text| row::parse_handlers(Some(&text)))
                        .transpose()?,
                })
            })
            .collect::<Result<Vec<_>, OutboxError>>()?;
        claimed.sort_by_key(|row| row.id);
        Ok(claimed)
    }

    async fn renew(
        &self,
        owner: &str,
        ids: &[i64],
        lease: Duration,
    ) -> Result<Vec<i64>, OutboxError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        // Ids are integers from the database: safe to inline, and one statement per batch.
        let sql = format!(
            "UPDATE herald_outbox SET lease_expires_at = ?1
             WHERE lease_owner = ?2 AND status = 'pending' AND id IN ({})
             RETURNING id",
            ids.join(",")
        );
        Ok(sqlx::query_scalar(&sql)
            .bind(Utc::now().timestamp_millis().saturating_add(millis(lease)))
            .bind(owner)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn finish(&self, owner: &str, outcomes: Vec<Outcome>) -> Result<(), OutboxError> {
        let now = Utc::now();
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        for (id, new_message_id) in outcomes.iter().filter_map(row::new_message_id) {
            sqlx::query(
                "UPDATE herald_outbox SET message_id = ?1 WHERE id = ?2 AND lease_owner = ?3",
            )
            .bind(new_message_id.to_string())
            .bind(id)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        }
        let processed: Vec<String> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Done {
                    id, failed: false, ..
                } => Some(id.to_string()),
                _ => None,
            })
            .collect();
        if !processed.is_empty() {
            // Ids are integers from the database: safe to inline, and one statement per batch.
            let sql = format!(
                "UPDATE herald_outbox SET status = 'processed', processed_at = ?1,
                    lease_owner = NULL, lease_expires_at = NULL, handlers_done = NULL
                 WHERE lease_owner = ?2 AND id IN ({})",
                processed.join(",")
            );
            sqlx::query(&sql)
                .bind(text_time(now))
                .bind(owner)
                .execute(&mut *tx)
                .await?;
        }
        for outcome in outcomes {
            match outcome {
                Outcome::Done { failed: false, .. } => {}
                Outcome::Done {
                    id,
                    failed: true,
                    handlers_done,
                    error,
                    ..
                } => {
                    sqlx::query(
                        "UPDATE herald_outbox SET status = 'failed', processed_at = ?1, failed_at = ?1,
                            fail_count = fail_count + 1, last_error = ?2, handlers_done = ?3,
                            lease_owner = NULL, lease_expires_at = NULL
                         WHERE id = ?4 AND lease_owner = ?5",
                    )
                    .bind(text_time(now))
                    .bind(error)
                    .bind(row::handlers_json(&handlers_done))
                    .bind(id)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
                }
                Outcome::Retry {
                    id,
                    handlers_done,
                    delay,
                    error,
                    ..
                } => {
                    sqlx::query(
                        "UPDATE herald_outbox SET fail_count = fail_count + 1, failed_at = ?1,
                            last_error = ?2, handlers_done = ?3, next_attempt_at = ?4,
                            lease_owner = NULL, lease_expires_at = NULL
                         WHERE id = ?5 AND lease_owner = ?6",
                    )
                    .bind(text_time(now))
                    .bind(error)
                    .bind(row::handlers_json(&handlers_done))
                    .bind(now.timestamp_millis().saturating_add(millis(delay)))
                    .bind(id)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
                }
                Outcome::Release { id } => {
                    sqlx::query(
                        "UPDATE herald_outbox SET lease_owner = NULL, lease_expires_at = NULL
                         WHERE id = ?1 AND lease_owner = ?2",
                    )
                    .bind(id)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    fn overlaps_write_back(&self) -> bool {
        // One writer at a time: a write-back beside the next claim waits for its lock (measured:
        // batch 1 fell from 2.4k to 1.4k events/s, batch 100 unchanged).
        false
    }

    async fn waiter(&self) -> Box<dyn Waiter> {
        Box::new(Sleeper)
    }

    async fn delete_finished(
        &self,
        older_than: Duration,
        batch: usize,
    ) -> Result<u64, OutboxError> {
        let cutoff = chrono::Duration::from_std(older_than)
            .ok()
            .and_then(|age| Utc::now().checked_sub_signed(age))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut deleted = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM herald_outbox WHERE id IN (
                    SELECT id FROM herald_outbox
                    WHERE status <> ?1 AND processed_at < ?2 LIMIT ?3)",
            )
            .bind(status::PENDING)
            .bind(text_time(cutoff))
            .bind(i64::try_from(batch).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?
            .rows_affected();
            deleted += done;
            if done < batch as u64 {
                return Ok(deleted);
            }
        }
    }
}
