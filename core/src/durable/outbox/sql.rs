//! The SQL outbox, written once for every [`Dialect`]: publish, the migration loop, status, the
//! event feed's mapping, retention, and the relay's [`Backend`] (whose dialect-specific
//! algorithms the dialect brings). [`SqliteOutbox`](super::SqliteOutbox),
//! [`PgOutbox`](super::PgOutbox) and [`MySqlOutbox`](super::MySqlOutbox) are this type.

use super::dialect::{sealed::SqlDialect, Bind, Dialect};
use super::local_wake::{LocalPublishes, LocalWaiter};
use super::row::{self, Backend, ClaimedRow, Outcome, Waiter};
use super::schema::{self, MIGRATIONS};
use super::sla::{self as sla_store, Declared};
use super::{
    NewRow, OutboxConnection, OutboxError, OutboxPublishError, OutboxStatus, RelayBuilder,
    StoredEvent, StuckKey, DEFAULT_MAX_PAYLOAD_BYTES,
};
use crate::durable::dead_letters::SqlDeadLetters;
use crate::engine::runtime::Herald;
use crate::model::envelope::{MessageId, PublishOptions};
use crate::model::message::Message;
use async_trait::async_trait;
use chrono::Utc;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// The transactional outbox on the SQL database `D` (`sqlx::Sqlite`, `sqlx::Postgres`,
/// `sqlx::MySql`). Cheap to clone. Usually named by its alias: [`SqliteOutbox`](super::SqliteOutbox),
/// [`PgOutbox`](super::PgOutbox), [`MySqlOutbox`](super::MySqlOutbox).
pub struct SqlOutbox<D: sqlx::Database> {
    backend: Arc<SqlBackend<D>>,
    max_payload_bytes: usize,
}

impl<D: sqlx::Database> Clone for SqlOutbox<D> {
    fn clone(&self) -> Self {
        SqlOutbox {
            backend: self.backend.clone(),
            max_payload_bytes: self.max_payload_bytes,
        }
    }
}

impl<D: Dialect> fmt::Debug for SqlOutbox<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlOutbox")
            .field("database", &<D as sqlx::Database>::NAME)
            .field("pool", &self.backend.pool)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .finish()
    }
}

/// The relay's side of a SQL outbox: the [`Backend`] the relay claims from and writes back to,
/// and the SLAs a runtime declared to the outbox (shared by its clones).
pub(crate) struct SqlBackend<D: sqlx::Database> {
    pub(crate) pool: sqlx::Pool<D>,
    /// This process's publishes, which wake its relays (`local_wake.rs`).
    pub(crate) local: Arc<LocalPublishes>,
    pub(crate) declared: Declared,
}

impl<D: Dialect> fmt::Debug for SqlBackend<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlBackend")
            .field("database", &<D as sqlx::Database>::NAME)
            .finish_non_exhaustive()
    }
}

impl<D: Dialect> SqlOutbox<D> {
    /// Applies Herald's migrations (if needed) and returns the outbox.
    ///
    /// # Errors
    /// A database error, or [`OutboxError::SchemaTooNew`].
    pub async fn new(pool: sqlx::Pool<D>) -> Result<Self, OutboxError> {
        Self::migrate(&pool).await?;
        Ok(Self::from_pool(pool))
    }

    /// Opens an outbox whose schema must already be there (the CLI's way: it never changes a schema).
    ///
    /// # Errors
    /// [`OutboxError::NoSchema`] when Herald's tables are missing, or a database error.
    pub async fn open(pool: sqlx::Pool<D>) -> Result<Self, OutboxError> {
        if Self::schema_version(&pool).await? == 0 {
            return Err(OutboxError::NoSchema);
        }
        Ok(Self::from_pool(pool))
    }

    fn from_pool(pool: sqlx::Pool<D>) -> Self {
        SqlOutbox {
            backend: Arc::new(SqlBackend {
                pool,
                local: Arc::default(),
                declared: Declared::default(),
            }),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }

    /// The SLAs declared to this outbox by a runtime (`HeraldBuilder::sla_store`).
    pub(crate) fn declared(&self) -> &Declared {
        &self.backend.declared
    }

    /// The schema version applied to this database (0: none).
    ///
    /// # Errors
    /// A database error.
    pub async fn schema_version(pool: &sqlx::Pool<D>) -> Result<i64, OutboxError> {
        let sql = D::statements();
        let mut conn = pool.acquire().await?;
        if D::fetch_optional(&mut conn, sqlx::query(sql.schema_table_exists))
            .await?
            .is_none()
        {
            return Ok(0);
        }
        version::<D>(&mut conn).await
    }

    /// Applies the migrations this build ships that the database does not have yet, one version
    /// at a time, each under a lock that keeps other migrating processes out (SQLite: `BEGIN
    /// IMMEDIATE`; PostgreSQL: an advisory lock, each version in its own transaction; MySQL: a
    /// named lock, and its DDL commits as it goes, so its scripts can run again after a failure).
    ///
    /// # Errors
    /// A database error, or [`OutboxError::SchemaTooNew`].
    pub async fn migrate(pool: &sqlx::Pool<D>) -> Result<(), OutboxError> {
        let sql = D::statements();
        let mut conn = pool.acquire().await?;
        if !sql.before_migrate.is_empty() {
            D::execute_script(&mut conn, sql.before_migrate).await?;
        }
        for migration in MIGRATIONS {
            D::execute_script(&mut conn, sql.migration_begin).await?;
            let applied: Result<(), OutboxError> = async {
                // Under the lock: two processes creating it at once could both fail otherwise.
                D::execute_script(&mut conn, sql.create_schema_table).await?;
                let found = version::<D>(&mut conn).await?;
                if found > schema::latest() {
                    return Err(OutboxError::SchemaTooNew {
                        found,
                        known: schema::latest(),
                    });
                }
                if found >= migration.version {
                    return Ok(());
                }
                D::execute_script(&mut conn, D::migration(migration)).await?;
                let record = sqlx::query(sql.record_version)
                    .int(migration.version)
                    .text(migration.description.to_owned())
                    .time(Utc::now());
                D::execute(&mut conn, record).await?;
                Ok(())
            }
            .await;
            match applied {
                Ok(()) => D::execute_script(&mut conn, sql.migration_commit).await?,
                Err(error) => {
                    let _ = D::execute_script(&mut conn, sql.migration_rollback).await;
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// The pool.
    pub fn pool(&self) -> &sqlx::Pool<D> {
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
    /// On PostgreSQL and MySQL a message with a key first takes that key's lock, held until the
    /// transaction ends, so that per key the relay's order is commit order (see `docs/OUTBOX.md`).
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
        C: OutboxConnection<D>,
        M: Message,
    {
        self.publish_with(conn, message, PublishOptions::new())
            .await
    }

    /// As [`publish`](Self::publish), with an idempotency key, headers, or a delivery time.
    ///
    /// With [`deliver_at`](PublishOptions::deliver_at) or
    /// [`deliver_after`](PublishOptions::deliver_after) the row is written due at that moment
    /// (its `next_attempt_at`): relays leave it until then, and deliver it (to handlers and routes
    /// alike) within a poll interval after. Per key it keeps its place: later rows of its key wait
    /// for it, as they wait for a row being retried. On PostgreSQL and MySQL the delay is counted
    /// on the database server's clock from the write, and a moment is compared with that clock.
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
        C: OutboxConnection<D>,
        M: Message,
    {
        let span = outbox_span(M::NAME, 1);
        let row = match span.in_scope(|| NewRow::new(&message, options, self.max_payload_bytes)) {
            Ok(row) => row,
            Err(refused) => return Err(refused.returning(message)),
        };
        span.record(
            "messaging.message.id",
            tracing::field::display(row.envelope.id),
        );
        let written = async {
            let connection = conn.connection();
            D::insert(connection, &row.envelope, &row.payload, None, row.deliver).await?;
            // The SLA expectations it opens or fulfils, in the same transaction.
            sla_store::record_in::<D>(self.declared(), connection, &row.envelope, &message).await
        }
        .instrument(span)
        .await;
        match written {
            Ok(()) => {
                self.backend.local.published();
                Ok(row.envelope.id)
            }
            Err(source) => Err(OutboxPublishError::Failed { message, source }),
        }
    }

    /// Writes every message of `messages` into the outbox on `conn` (as for
    /// [`publish`](Self::publish): `&mut *tx`), with multi-row `INSERT`s (as many rows per
    /// statement as the database's bind-parameter limit allows). Same guarantee as
    /// [`publish`](Self::publish): delivered if and only if the transaction commits. Returns the
    /// message ids in order. Much cheaper than one `publish` per message for large batches.
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
        C: OutboxConnection<D>,
        M: Message,
        I: IntoIterator<Item = M>,
    {
        let messages: Vec<M> = messages.into_iter().collect();
        let span = outbox_span(M::NAME, messages.len());
        let rows = match span.in_scope(|| NewRow::batch(&messages, self.max_payload_bytes)) {
            Ok(rows) => rows,
            Err(refused) => return Err(refused.returning(messages)),
        };
        let written = async {
            let connection = conn.connection();
            D::insert_all(connection, &rows).await?;
            // The SLA expectations they open or fulfil, in the same transaction.
            for (row, message) in rows.iter().zip(&messages) {
                sla_store::record_in::<D>(self.declared(), connection, &row.envelope, message)
                    .await?;
            }
            Ok::<(), OutboxError>(())
        }
        .instrument(span)
        .await;
        if let Err(source) = written {
            return Err(OutboxPublishError::Failed {
                message: messages,
                source,
            });
        }
        self.backend.local.published();
        Ok(rows.into_iter().map(|row| row.envelope.id).collect())
    }

    /// A relay that delivers this outbox's rows through `herald`'s handlers. On PostgreSQL and
    /// MySQL start as many as you like, in this process or others.
    pub fn relay(&self, herald: &Herald) -> RelayBuilder {
        RelayBuilder::new(self.backend.clone(), herald)
    }

    /// The durable dead-letter store in the same database.
    pub fn dead_letters(&self) -> SqlDeadLetters<D> {
        SqlDeadLetters::new(self.backend.pool.clone())
    }

    /// Counts by state and the lag (age of the oldest pending row).
    ///
    /// # Errors
    /// A database error.
    pub async fn status(&self) -> Result<OutboxStatus, OutboxError> {
        let mut conn = self.backend.pool.acquire().await?;
        let row = D::fetch_optional(&mut conn, sqlx::query(D::statements().status))
            .await?
            .ok_or_else(|| OutboxError::Corrupt("the status query returned no row".into()))?;
        let count = |name: &str| -> Result<u64, OutboxError> {
            Ok(u64::try_from(D::get_int(&row, name)?).unwrap_or(0))
        };
        let oldest = D::get_time(&row, "oldest")?;
        let now = D::get_time(&row, "now")?.unwrap_or_else(Utc::now);
        Ok(OutboxStatus {
            pending: count("pending")?,
            in_flight: count("in_flight")?,
            retrying: count("retrying")?,
            delayed: count("delayed")?,
            failed: count("failed")?,
            processed: count("processed")?,
            oldest_pending_at: oldest,
            lag: oldest.map(|t| (now - t).to_std().unwrap_or_default()),
            dead_letters: count("dead_letters")?,
        })
    }

    /// Ordering keys held up by a failing message, oldest first, at most `limit` (see
    /// [`OutboxOps::stuck_keys`](crate::ports::feed::OutboxOps::stuck_keys)).
    ///
    /// # Errors
    /// A database error, or a row Herald did not write.
    pub async fn stuck_keys(&self, limit: usize) -> Result<Vec<StuckKey>, OutboxError> {
        let mut conn = self.backend.pool.acquire().await?;
        let query =
            sqlx::query(D::statements().stuck_keys).int(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = D::fetch_all(&mut conn, query).await?;
        rows.iter()
            .map(|row| {
                let count = |name: &str| -> Result<u64, OutboxError> {
                    Ok(u64::try_from(D::get_int(row, name)?).unwrap_or(0))
                };
                let mut stuck = StuckKey::new(
                    D::get_text(row, "ordering_key")?.unwrap_or_default(),
                    D::get_int(row, "id")?,
                    D::get_text(row, "message_type")?.unwrap_or_default(),
                );
                stuck.failed_attempts = count("fail_count")?;
                stuck.waiting = count("waiting")?;
                stuck.last_error = D::get_text(row, "last_error")?;
                stuck.last_failed_at = D::get_time(row, "failed_at")?;
                Ok(stuck)
            })
            .collect()
    }

    /// Stored events after `offset` (exclusive), in position order, at most `limit`. Keep the
    /// last returned `position` as your offset. No event is ever skipped: an event that commits
    /// after a later one was read still gets a position after every position handed out.
    ///
    /// - SQLite: writers are serialised, so ids are in commit order and the position is the id.
    /// - PostgreSQL: ids come from a sequence and are taken before commit, so Herald hands out
    ///   positions (in `(txid, id)` order) only to rows whose inserting transaction is older than
    ///   every transaction still running (`pg_snapshot_xmin(pg_current_snapshot())`). The price:
    ///   a long-running transaction anywhere on the server delays new positions until it ends.
    /// - MySQL/MariaDB: every publish holds a shared lock on the one row of `herald_positions`
    ///   until its transaction ends; `events_after` takes that row's exclusive lock (waiting at
    ///   most a second), so at that moment no publishing transaction is open, and it moves the
    ///   watermark to the highest id: every row at or below it has committed or is gone, and
    ///   every later row gets a higher id. The position is the id, up to the watermark. The
    ///   price: while a publishing transaction stays open, new events wait, and publishers
    ///   queue behind a waiting `events_after` for up to that second.
    ///
    /// # Errors
    /// A database error.
    pub async fn events_after(
        &self,
        offset: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, OutboxError> {
        D::prepare_events(&self.backend.pool).await?;
        let mut conn = self.backend.pool.acquire().await?;
        let query = sqlx::query(D::statements().events_after)
            .int(offset)
            .int(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = D::fetch_all(&mut conn, query).await?;
        rows.iter()
            .map(|row| {
                let text = |column: &str| -> Result<String, OutboxError> {
                    Ok(D::get_text(row, column)?.unwrap_or_default())
                };
                let payload = text("payload")?;
                let headers = text("headers")?;
                Ok(StoredEvent {
                    position: D::get_int(row, "position")?,
                    id: D::get_int(row, "id")?,
                    message_id: text("message_id")?,
                    message_type: text("message_type")?,
                    key: D::get_text(row, "key")?,
                    payload: serde_json::from_str(&payload)
                        .unwrap_or(serde_json::Value::String(payload)),
                    headers: serde_json::from_str(&headers).unwrap_or_default(),
                    occurred_at: D::get_time(row, "occurred_at")?.ok_or_else(|| {
                        OutboxError::Corrupt("outbox column `occurred_at` is NULL".into())
                    })?,
                    status: text("status")?,
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

/// `MAX(version)` of `herald_schema` (0 when empty).
async fn version<D: SqlDialect>(conn: &mut D::Connection) -> Result<i64, OutboxError> {
    let row = D::fetch_optional(conn, sqlx::query(D::statements().schema_version)).await?;
    Ok(match row {
        Some(row) => D::get_int(&row, "version")?,
        None => 0,
    })
}

/// The pauses before a failed write-back is tried again (then once more): about a second in all,
/// well inside a lease (30 s by default), so the rows are still this relay's.
const WRITE_BACK_RETRIES: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(200),
    Duration::from_millis(800),
];

/// Whether a database call that failed with `error` may succeed on another connection: the
/// connection or the server failed, not the statement. I/O, TLS and protocol errors, a pool timeout,
/// SQLite's worker thread gone, and SQLSTATE classes 08 (connection exception), 53 (insufficient
/// resources) and 57 (operator intervention: `pg_terminate_backend`, a server shutting down), and
/// 40001/40P01 (serialization failure, deadlock; MySQL reports its deadlock as 40001 too).
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            ["08", "53", "57"]
                .iter()
                .any(|class| code.starts_with(class))
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}

/// [`is_transient`] for an outbox error: only a database error can be.
fn lost_connection(error: &OutboxError) -> bool {
    matches!(error, OutboxError::Database(error) if is_transient(error))
}

#[async_trait]
impl<D: Dialect> Backend for SqlBackend<D> {
    async fn claim(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedRow>, OutboxError> {
        let mut claimed = D::claim(&self.pool, owner, limit, lease).await?;
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
        D::renew(&self.pool, owner, ids, lease).await
    }

    async fn finish(&self, owner: &str, outcomes: Vec<Outcome>) -> Result<(), OutboxError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        // A write-back that failed with its connection (a failover, an administrator ending the
        // session, a network cut) is tried again at once on another connection instead of leaving
        // the batch to be delivered again after its lease. That is safe: every statement of the
        // write-back is guarded by the lease owner, so a repeat after a commit whose answer was
        // lost changes nothing, and rows another relay took meanwhile are left alone.
        for pause in WRITE_BACK_RETRIES {
            match D::finish(&self.pool, owner, outcomes.clone()).await {
                Err(error) if lost_connection(&error) => {
                    tracing::debug!(%error, %owner, ?pause, "outbox write-back lost its connection; trying again");
                    tokio::time::sleep(pause).await;
                }
                done => return done,
            }
        }
        D::finish(&self.pool, owner, outcomes).await
    }

    async fn finish_and_claim(
        &self,
        owner: &str,
        outcomes: Vec<Outcome>,
        limit: usize,
        lease: Duration,
    ) -> (
        Result<(), OutboxError>,
        Result<Vec<ClaimedRow>, OutboxError>,
    ) {
        let (finished, claimed) =
            D::finish_and_claim(&self.pool, owner, outcomes, limit, lease).await;
        let claimed = claimed.map(|mut rows| {
            rows.sort_by_key(|row| row.id);
            rows
        });
        (finished, claimed)
    }

    fn overlaps_write_back(&self) -> bool {
        D::overlaps_write_back()
    }

    async fn waiter(&self) -> Box<dyn Waiter> {
        // Also on PostgreSQL, whose NOTIFY arrives at the commit anyway: leaving the relay to the
        // NOTIFY alone saves the empty leases the catch window makes before the commit, but was
        // not faster with one event per transaction (issue 14, item 0: `docs/BENCHMARKS.md`).
        Box::new(LocalWaiter::new(
            D::waiter(&self.pool).await,
            self.local.clone(),
        ))
    }

    async fn delete_finished(
        &self,
        older_than: Duration,
        batch: usize,
    ) -> Result<u64, OutboxError> {
        let mut deleted = 0;
        let mut conn = self.pool.acquire().await?;
        loop {
            let query = sqlx::query(D::statements().delete_finished)
                .age(older_than)
                .int(i64::try_from(batch).unwrap_or(i64::MAX));
            let done = D::execute(&mut conn, query).await?;
            deleted += done;
            if done < batch as u64 {
                return Ok(deleted);
            }
        }
    }
}

/// Writes outcomes back with one statement per outcome, in one transaction (SQLite, MySQL).
pub(crate) async fn finish_row_by_row<D: SqlDialect>(
    pool: &sqlx::Pool<D>,
    owner: &str,
    outcomes: &[Outcome],
) -> Result<(), OutboxError> {
    let mut tx = pool.begin().await?;
    write_outcomes::<D>(&mut tx, owner, outcomes).await?;
    tx.commit().await?;
    Ok(())
}

/// The statements of `finish_row_by_row`, on `conn` (a transaction the caller ends).
pub(crate) async fn write_outcomes<D: SqlDialect>(
    conn: &mut D::Connection,
    owner: &str,
    outcomes: &[Outcome],
) -> Result<(), OutboxError> {
    let sql = D::statements();
    let now = Utc::now();
    for (id, new_message_id) in outcomes.iter().filter_map(row::new_message_id) {
        let query = sqlx::query(sql.finish_rename)
            .message_id(new_message_id)
            .int(id)
            .text(owner.to_owned());
        D::execute(conn, query).await?;
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
        let ids = processed.join(",");
        if sql.finish_processed.contains("{ids}") {
            // Ids are integers from the database: safe to inline, and one statement per batch.
            let statement = sql.finish_processed.replace("{ids}", &ids);
            let query = sqlx::query(&statement).time(now).text(owner.to_owned());
            D::execute(conn, query).await?;
        } else {
            // The same text every batch: prepared once per connection, not once per batch under
            // the write lock.
            let query = sqlx::query(sql.finish_processed)
                .time(now)
                .text(owner.to_owned())
                .text(format!("[{ids}]"));
            D::execute(conn, query).await?;
        }
    }
    for outcome in outcomes {
        let query = match outcome {
            Outcome::Done { failed: false, .. } => continue,
            Outcome::Done {
                id,
                failed: true,
                handlers_done,
                error,
                ..
            } => sqlx::query(sql.finish_failed)
                .time(now)
                .time(now)
                .free_text(error.clone())
                .text(row::handlers_json(handlers_done))
                .int(*id)
                .text(owner.to_owned()),
            Outcome::Retry {
                id,
                handlers_done,
                delay,
                error,
                ..
            } => sqlx::query(sql.finish_retry)
                .time(now)
                .free_text(Some(error.clone()))
                .text(row::handlers_json(handlers_done))
                .after_now(*delay)
                .int(*id)
                .text(owner.to_owned()),
            Outcome::Release { id } => sqlx::query(sql.finish_release)
                .int(*id)
                .text(owner.to_owned()),
        };
        D::execute(conn, query).await?;
    }
    Ok(())
}

/// Connects a pool with `pool` options to the server `options` name. The first connection is
/// made directly, so that its failure is returned as it is and at once (a sqlx pool retries a
/// refused connection until its acquire timeout, then reports only "pool timed out"). A server
/// that does not answer at all is reported as [`OutboxError::ConnectTimedOut`] after the pool's
/// acquire timeout.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) async fn connect_pool<D: sqlx::Database>(
    pool: sqlx::pool::PoolOptions<D>,
    options: <D::Connection as sqlx::Connection>::Options,
) -> Result<sqlx::Pool<D>, OutboxError> {
    use sqlx::Connection;
    let limit = pool.get_acquire_timeout();
    let first = tokio::time::timeout(limit, D::Connection::connect_with(&options))
        .await
        .map_err(|_| OutboxError::ConnectTimedOut(limit))??;
    // Best effort: the connection has done its job (proving the server is there).
    let _ = first.close().await;
    Ok(pool.connect_with(options).await?)
}
/// The span of an outbox write (OpenTelemetry messaging `create`, kind producer): the trace
/// context stored with the rows is this span's, so the relay's attempts are its children.
fn outbox_span(name: &'static str, count: usize) -> tracing::Span {
    // Without a subscriber that wants it, no span (not even `tracing`'s `log` fallback).
    if !tracing::span_enabled!(tracing::Level::INFO) {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "herald.outbox.publish",
        otel.name = %format_args!("create {name}"),
        otel.kind = "producer",
        messaging.system = "herald",
        messaging.operation.type = "create",
        messaging.operation.name = "outbox",
        messaging.destination.name = name,
        messaging.batch.message_count = count,
        messaging.message.id = tracing::field::Empty,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failed_connection_makes_a_write_back_try_again() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        assert!(lost_connection(&OutboxError::Database(sqlx::Error::Io(
            io()
        ))));
        assert!(lost_connection(&OutboxError::Database(
            sqlx::Error::PoolTimedOut
        )));
        assert!(lost_connection(&OutboxError::Database(
            sqlx::Error::Protocol("unexpected end of stream".into())
        )));
        // The statement's own failures would fail again.
        assert!(!lost_connection(&OutboxError::Database(
            sqlx::Error::RowNotFound
        )));
        assert!(!lost_connection(&OutboxError::Corrupt("bad row".into())));
        assert!(!lost_connection(&OutboxError::Database(
            sqlx::Error::PoolClosed
        )));
    }
}
