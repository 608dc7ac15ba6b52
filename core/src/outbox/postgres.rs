//! The PostgreSQL outbox: several relays, in one or many processes, share one table.
//!
//! A relay leases a batch with one statement (`SELECT … FOR UPDATE SKIP LOCKED` inside an
//! `UPDATE … SET lease_owner, lease_expires_at`), so two relays never take the same row; the row
//! lock lasts only for that statement and the lease protects the row while its handlers run. A
//! relay killed mid-batch leaves its leases to expire, and another relay takes the rows over.
//! An `AFTER INSERT` trigger sends `NOTIFY herald_outbox` at commit, which wakes idle relays.
//! While a row's handlers run, its relay renews the lease every third of it.
//!
//! Per-key order: `publish`, `publish_with` and `publish_all` take a transaction-scoped advisory
//! lock per key before the row gets its id, so a second transaction publishing the same key waits
//! at its `publish` until the first one ends, and per key id order is commit order. Keep such
//! transactions short, and publish a transaction's keys in one order (or with one `publish_all`,
//! which sorts them): opposite orders can deadlock, and PostgreSQL then aborts one transaction.
//! See `docs/OUTBOX.md`.

use super::row::{self, Backend, ClaimedRow, Outcome, Sleeper, Waiter};
use super::schema::{self, MIGRATIONS};
use super::{
    NewRow, OutboxConnection, OutboxError, OutboxPublishError, OutboxStatus, RelayBuilder,
    StoredEvent, BULK_COLUMNS, DEFAULT_MAX_PAYLOAD_BYTES,
};
use crate::dead_letter::PgDeadLetters;
use crate::envelope::{Envelope, MessageId, PublishOptions};
use crate::message::Message;
use crate::runtime::Herald;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Key of the advisory lock that serialises Herald's migrations across processes.
const MIGRATION_LOCK: i64 = 0x4845_5241_4c44; // "HERALD"

/// PostgreSQL's bind-parameter limit per statement (the protocol counts them in 16 bits).
const PG_MAX_BINDS: usize = 65_535;

/// How the relay opens its own transactions (lease, write-back): one round trip, and the commit
/// does not wait for the WAL flush. A server crash can lose the last few hundred milliseconds of
/// relay bookkeeping, never an event: a lost lease is taken again, a lost outcome makes the row
/// pending again and it is delivered again (at least once, like a relay killed before its
/// write-back). The producers' transactions are untouched.
const RELAY_TRANSACTION: &str = "BEGIN; SET LOCAL synchronous_commit = off";

/// The lease transaction also rules out sorting: without fresh statistics (a new table, or a
/// burst after a quiet period) the planner may expect a handful of due rows and fetch and sort
/// every pending row for each claim (measured: 30–40 ms per claim with 100,000 pending, against
/// 2 ms for the ordered scan of `herald_outbox_pending`). The ordered index scan is always right
/// here: it stops after `limit` claimable rows.
const CLAIM_TRANSACTION: &str =
    "BEGIN; SET LOCAL synchronous_commit = off; SET LOCAL enable_sort = off";

/// The channel the insert trigger notifies.
pub const CHANNEL: &str = "herald_outbox";

/// Connects a pool of up to 16 connections to `url` (see [`connect_with`]).
///
/// # Errors
/// When the URL is invalid or the server cannot be reached: the server's or the system's own
/// error (connection refused, password authentication failed, ...).
pub async fn connect(url: &str) -> Result<PgPool, OutboxError> {
    let options = PgConnectOptions::from_str(url)?;
    connect_with(
        PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10)),
        options,
    )
    .await
}

/// Connects a pool with `pool` options to the server `options` name.
///
/// The first connection is made directly, so that its failure is returned as it is and at once
/// (a sqlx pool retries a refused connection until its acquire timeout, then reports only
/// "pool timed out"). A server that does not answer at all is reported as
/// [`OutboxError::ConnectTimedOut`] after the pool's acquire timeout.
///
/// # Errors
/// When the server cannot be reached or refuses the connection.
pub async fn connect_with(
    pool: PgPoolOptions,
    options: PgConnectOptions,
) -> Result<PgPool, OutboxError> {
    let limit = pool.get_acquire_timeout();
    let first = tokio::time::timeout(limit, PgConnection::connect_with(&options))
        .await
        .map_err(|_| OutboxError::ConnectTimedOut(limit))??;
    // Best effort: the connection has done its job (proving the server is there).
    let _ = first.close().await;
    Ok(pool.connect_with(options).await?)
}

/// The transactional outbox on PostgreSQL. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgOutbox {
    backend: Arc<PgBackend>,
    max_payload_bytes: usize,
}

#[derive(Debug)]
struct PgBackend {
    pool: PgPool,
}

impl PgOutbox {
    /// Applies Herald's migrations (if needed) and returns the outbox.
    ///
    /// # Errors
    /// A database error, or [`OutboxError::SchemaTooNew`].
    pub async fn new(pool: PgPool) -> Result<Self, OutboxError> {
        Self::migrate(&pool).await?;
        Ok(Self::from_pool(pool))
    }

    /// Opens an outbox whose schema must already be there (the CLI's way).
    ///
    /// # Errors
    /// [`OutboxError::NoSchema`] when Herald's tables are missing, or a database error.
    pub async fn open(pool: PgPool) -> Result<Self, OutboxError> {
        if Self::schema_version(&pool).await? == 0 {
            return Err(OutboxError::NoSchema);
        }
        Ok(Self::from_pool(pool))
    }

    fn from_pool(pool: PgPool) -> Self {
        PgOutbox {
            backend: Arc::new(PgBackend { pool }),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }

    /// The schema version applied to this database (0: none).
    ///
    /// # Errors
    /// A database error.
    pub async fn schema_version(pool: &PgPool) -> Result<i64, OutboxError> {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('herald_schema') IS NOT NULL")
            .fetch_one(pool)
            .await?;
        if !exists {
            return Ok(0);
        }
        let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM herald_schema")
            .fetch_one(pool)
            .await?;
        Ok(version.unwrap_or(0))
    }

    /// Applies the migrations this build ships that the database does not have yet, in one
    /// transaction under an advisory lock (two processes starting at once apply them once).
    ///
    /// # Errors
    /// A database error, or [`OutboxError::SchemaTooNew`].
    pub async fn migrate(pool: &PgPool) -> Result<(), OutboxError> {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS herald_schema (
                version BIGINT PRIMARY KEY, description TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .execute(&mut *tx)
        .await?;
        let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM herald_schema")
            .fetch_one(&mut *tx)
            .await?;
        let found = found.unwrap_or(0);
        if found > schema::latest() {
            return Err(OutboxError::SchemaTooNew {
                found,
                known: schema::latest(),
            });
        }
        for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
            sqlx::raw_sql(migration.postgres).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO herald_schema (version, description) VALUES ($1, $2)")
                .bind(migration.version)
                .bind(migration.description)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
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
        C: OutboxConnection<Postgres>,
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
        C: OutboxConnection<Postgres>,
        M: Message,
    {
        let row = match NewRow::new(&message, options, self.max_payload_bytes) {
            Ok(row) => row,
            Err(refused) => return Err(refused.returning(message)),
        };
        match insert(conn.connection(), &row.envelope, &row.payload, None).await {
            Ok(_) => Ok(row.envelope.id),
            Err(source) => Err(OutboxPublishError::Failed { message, source }),
        }
    }

    /// Writes every message of `messages` into the outbox on `conn` (as for
    /// [`publish`](Self::publish): `&mut *tx`), with multi-row `INSERT`s
    /// (as many rows per statement as PostgreSQL's 65,535 bind parameters allow; the `NOTIFY`
    /// trigger fires once per statement). Same guarantee as [`publish`](Self::publish):
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
        C: OutboxConnection<Postgres>,
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

    /// A relay that delivers this outbox's rows through `herald`'s handlers. Start as many as you
    /// like, in this process or others.
    pub fn relay(&self, herald: &Herald) -> RelayBuilder {
        RelayBuilder::new(self.backend.clone(), herald)
    }

    /// The durable dead-letter store in the same database.
    pub fn dead_letters(&self) -> PgDeadLetters {
        PgDeadLetters::new(self.backend.pool.clone())
    }

    /// Counts by state and the lag (age of the oldest pending row).
    ///
    /// # Errors
    /// A database error.
    pub async fn status(&self) -> Result<OutboxStatus, OutboxError> {
        let row = sqlx::query(
            "SELECT
                COUNT(*) FILTER (WHERE status = 'pending') AS pending,
                COUNT(*) FILTER (WHERE status = 'pending' AND lease_expires_at > now()) AS in_flight,
                COUNT(*) FILTER (WHERE status = 'pending' AND fail_count > 0) AS retrying,
                COUNT(*) FILTER (WHERE status = 'failed') AS failed,
                COUNT(*) FILTER (WHERE status = 'processed') AS processed,
                (SELECT occurred_at FROM herald_outbox WHERE status = 'pending' ORDER BY id LIMIT 1) AS oldest,
                (SELECT COUNT(*) FROM herald_dead_letters) AS dead_letters,
                now() AS now
             FROM herald_outbox",
        )
        .fetch_one(&self.backend.pool)
        .await?;
        let count = |name: &str| -> Result<u64, OutboxError> {
            Ok(u64::try_from(row.try_get::<i64, _>(name)?).unwrap_or(0))
        };
        let oldest: Option<DateTime<Utc>> = row.try_get("oldest")?;
        let now: DateTime<Utc> = row.try_get("now")?;
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

    /// Stored events after `offset` (exclusive), in position order, at most `limit`. Keep the
    /// last returned `position` as your offset.
    ///
    /// Ids come from a sequence and are taken before commit, so a transaction can commit a lower id
    /// after a higher one was read. Herald therefore hands out positions (in `(txid, id)` order)
    /// only to rows whose inserting transaction is older than every transaction still running
    /// (`pg_snapshot_xmin(pg_current_snapshot())`): such a row is committed or gone for good, and
    /// every row that becomes visible later gets a higher position. A row is never skipped. The
    /// price: a long-running transaction anywhere on the PostgreSQL server (in any database: the
    /// snapshot's xmin is server-wide) delays new positions until it ends.
    ///
    /// # Errors
    /// A database error.
    pub async fn events_after(
        &self,
        offset: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, OutboxError> {
        self.assign_positions().await?;
        let rows = sqlx::query(
            "SELECT position, id, message_id::text AS message_id, message_type, key, payload,
                    headers::text AS headers, occurred_at, status
             FROM herald_outbox WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .bind(offset)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.backend.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let payload: String = row.try_get("payload")?;
                let headers: String = row.try_get("headers")?;
                Ok(StoredEvent {
                    position: row.try_get("position")?,
                    id: row.try_get("id")?,
                    message_id: row.try_get("message_id")?,
                    message_type: row.try_get("message_type")?,
                    key: row.try_get("key")?,
                    payload: serde_json::from_str(&payload)
                        .unwrap_or(serde_json::Value::String(payload)),
                    headers: serde_json::from_str(&headers).unwrap_or_default(),
                    occurred_at: row.try_get("occurred_at")?,
                    status: row.try_get("status")?,
                })
            })
            .collect()
    }

    /// Gives positions to the rows that can no longer be overtaken (see `events_after`).
    async fn assign_positions(&self) -> Result<(), OutboxError> {
        let mut tx = self.backend.pool.begin().await?;
        // One sequencer at a time: the row lock on the counter.
        let last: i64 = sqlx::query_scalar("SELECT last_position FROM herald_positions FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
        let assigned: Option<i64> = sqlx::query_scalar(
            "WITH ready AS (
                SELECT id, row_number() OVER (ORDER BY txid, id) AS n
                FROM herald_outbox
                WHERE position IS NULL AND txid < pg_snapshot_xmin(pg_current_snapshot())
                ORDER BY txid, id LIMIT 10000),
             done AS (
                UPDATE herald_outbox o SET position = $1 + ready.n FROM ready
                WHERE o.id = ready.id RETURNING o.position)
             SELECT MAX(position) FROM done",
        )
        .bind(last)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(assigned) = assigned {
            sqlx::query("UPDATE herald_positions SET last_position = $1")
                .bind(assigned)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes finished rows whose `processed_at` is older than `older_than`, `batch` at a time.
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

/// First key of the advisory locks that serialise the publishers of one key (the second is
/// `hashtext(key)`); the two-key form never collides with one-key (`bigint`) advisory locks such
/// as `MIGRATION_LOCK`. An insert with a key takes `pg_advisory_xact_lock(KEY_LOCK_CLASS,
/// hashtext(key))` before its row gets an id, and holds it until its transaction ends: a second
/// transaction publishing the same key waits, so per key, id order is commit order, and the
/// relay's id order is the order the transactions committed in. Several keys in one statement
/// are locked in `hashtext` order, so two `publish_all` calls never deadlock each other.
const KEY_LOCK_CLASS: i32 = 0x4852_4c44; // "HRLD"

/// The keys of `rows`, each once.
fn distinct_keys(rows: &[NewRow]) -> Vec<&str> {
    let mut keys: Vec<&str> = rows
        .iter()
        .filter_map(|row| row.envelope.key.as_deref())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Starts `query` with `WITH key_lock AS (…)`, which locks `keys` in `hashtext` order when the
/// statement's `WHERE (SELECT COUNT(*) FROM key_lock) >= 0` (a one-time filter, run before any
/// row is formed and gets its id) reads it.
fn push_key_lock(query: &mut QueryBuilder<'_, Postgres>, keys: &[&str]) {
    query
        .push("WITH key_lock AS MATERIALIZED (SELECT pg_advisory_xact_lock(")
        .push_bind(KEY_LOCK_CLASS)
        .push(", h) FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest(")
        .push_bind(
            keys.iter()
                .map(|k| (*k).to_owned())
                .collect::<Vec<String>>(),
        )
        .push("::text[]) AS k) hashes ORDER BY h) ");
}

/// Inserts `rows` with multi-row `INSERT`s, as many rows per statement as the bind limit allows.
async fn insert_all(conn: &mut sqlx::PgConnection, rows: &[NewRow]) -> Result<(), OutboxError> {
    let keys = distinct_keys(rows);
    // Two binds per statement for the key lock.
    for chunk in rows.chunks((PG_MAX_BINDS - 2) / BULK_COLUMNS) {
        let mut insert = QueryBuilder::<Postgres>::new("");
        // Every statement takes the locks of every key of the call, in one order (see
        // `KEY_LOCK_CLASS`): held already (re-entrant) when `conn` is a transaction, and
        // still right when each statement commits on its own.
        push_key_lock(&mut insert, &keys);
        insert.push(
            "INSERT INTO herald_outbox (message_id, message_type, key, payload, headers, occurred_at)
             SELECT * FROM (",
        );
        insert.push_values(chunk, |mut values, row| {
            values
                .push_bind(row.envelope.id.as_uuid())
                .push_bind(row.envelope.name.as_ref())
                .push_bind(row.envelope.key.as_deref())
                .push_bind(row.payload.as_str())
                .push_bind(row.headers.as_str())
                .push_unseparated("::jsonb")
                .push_bind(row.envelope.occurred_at);
        });
        insert.push(") AS v WHERE (SELECT COUNT(*) FROM key_lock) >= 0");
        insert.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Text as PostgreSQL stores it: `text` refuses U+0000, so each one is written as the six
/// characters `\u0000` (error texts can hold anything a handler or a payload put in them).
pub(crate) fn pg_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\\u0000"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Inserts one outbox row; returns its id (also used by dead-letter re-drive). A row with a key
/// first takes the key's lock (see [`KEY_LOCK_CLASS`]).
pub(crate) async fn insert(
    conn: &mut sqlx::PgConnection,
    envelope: &Envelope,
    payload: &str,
    only_handlers: Option<&[String]>,
) -> Result<i64, OutboxError> {
    // The key's lock is taken (the one-time filter runs the CTE) before the row gets its id.
    Ok(sqlx::query_scalar(
        "WITH key_lock AS MATERIALIZED (
            SELECT pg_advisory_xact_lock($8, hashtext($3)) WHERE $3 IS NOT NULL)
         INSERT INTO herald_outbox (message_id, message_type, key, payload, headers, occurred_at, only_handlers)
         SELECT $1, $2, $3, $4, $5::jsonb, $6, $7::jsonb WHERE (SELECT COUNT(*) FROM key_lock) >= 0
         RETURNING id",
    )
    .bind(envelope.id.as_uuid())
    .bind(envelope.name.as_ref())
    .bind(envelope.key.as_deref())
    .bind(payload)
    .bind(row::headers_json(envelope)?)
    .bind(envelope.occurred_at)
    .bind(only_handlers.and_then(row::handlers_json))
    .bind(KEY_LOCK_CLASS)
    .fetch_one(conn)
    .await?)
}

/// Waits on `LISTEN herald_outbox`.
struct Listener(PgListener);

#[async_trait]
impl Waiter for Listener {
    async fn wait(&mut self, timeout: Duration) {
        match tokio::time::timeout(timeout, self.0.recv()).await {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, "outbox LISTEN connection failed; it reconnects");
                tokio::time::sleep(timeout).await;
            }
        }
    }
}

#[async_trait]
impl Backend for PgBackend {
    async fn claim(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedRow>, OutboxError> {
        let mut tx = self.pool.begin_with(CLAIM_TRANSACTION).await?;
        let rows = sqlx::query(
            "WITH picked AS (
                SELECT o.id FROM herald_outbox o
                WHERE o.status = 'pending' AND o.next_attempt_at <= now()
                  AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= now())
                  AND (o.key IS NULL OR NOT EXISTS (
                        SELECT 1 FROM herald_outbox p
                        WHERE p.key = o.key AND p.status = 'pending' AND p.id <> o.id
                          AND (p.id < o.id OR p.lease_expires_at > now())))
                ORDER BY o.id LIMIT $1
                FOR UPDATE SKIP LOCKED)
             UPDATE herald_outbox o
             SET lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3)
             FROM picked WHERE o.id = picked.id
             RETURNING o.id, o.message_id, o.message_type, o.key, o.payload,
                       o.headers::text AS headers, o.occurred_at, o.fail_count,
                       o.handlers_done::text AS handlers_done,
                       o.only_handlers::text AS only_handlers",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(owner)
        .bind(lease.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                Ok(ClaimedRow {
                    id: row.try_get("id")?,
                    message_id: row.try_get::<uuid::Uuid, _>("message_id")?.to_string(),
                    message_type: row.try_get("message_type")?,
                    key: row.try_get("key")?,
                    payload: row.try_get("payload")?,
                    headers: row.try_get("headers")?,
                    occurred_at: row.try_get("occurred_at")?,
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
        // A row another relay is claiming right now is locked by its claim: this waits for that
        // claim to commit, then finds the row leased by the other relay (lost), as it should.
        Ok(sqlx::query_scalar(
            "UPDATE herald_outbox SET lease_expires_at = now() + make_interval(secs => $3)
             WHERE id = ANY($1) AND lease_owner = $2 AND status = 'pending'
             RETURNING id",
        )
        .bind(ids)
        .bind(owner)
        .bind(lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await?)
    }

    async fn finish(&self, owner: &str, outcomes: Vec<Outcome>) -> Result<(), OutboxError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        // Every outcome of the batch in one statement: one array per column, one row per outcome.
        let renamed: Vec<(i64, MessageId)> =
            outcomes.iter().filter_map(row::new_message_id).collect();
        let mut ids = Vec::with_capacity(outcomes.len());
        let mut kinds = Vec::with_capacity(outcomes.len());
        let mut done = Vec::with_capacity(outcomes.len());
        let mut errors = Vec::with_capacity(outcomes.len());
        let mut delays = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            let (id, kind, handlers_done, error, delay) = match outcome {
                Outcome::Done {
                    id, failed: false, ..
                } => (id, "processed", None, None, 0.0),
                Outcome::Done {
                    id,
                    failed: true,
                    handlers_done,
                    error,
                    ..
                } => (id, "failed", row::handlers_json(&handlers_done), error, 0.0),
                Outcome::Retry {
                    id,
                    handlers_done,
                    delay,
                    error,
                    ..
                } => (
                    id,
                    "retry",
                    row::handlers_json(&handlers_done),
                    Some(error),
                    delay.as_secs_f64(),
                ),
                Outcome::Release { id } => (id, "release", None, None, 0.0),
            };
            ids.push(id);
            kinds.push(kind);
            done.push(handlers_done);
            errors.push(error.map(|error| pg_text(&error).into_owned()));
            delays.push(delay);
        }
        let mut tx = self.pool.begin_with(RELAY_TRANSACTION).await?;
        for (id, new_message_id) in renamed {
            sqlx::query(
                "UPDATE herald_outbox SET message_id = $1 WHERE id = $2 AND lease_owner = $3",
            )
            .bind(new_message_id.as_uuid())
            .bind(id)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE herald_outbox o SET
                status = CASE u.kind WHEN 'release' THEN o.status WHEN 'retry' THEN o.status
                                     ELSE u.kind END,
                processed_at = CASE WHEN u.kind IN ('processed', 'failed') THEN now()
                                    ELSE o.processed_at END,
                failed_at = CASE WHEN u.kind IN ('failed', 'retry') THEN now() ELSE o.failed_at END,
                fail_count = o.fail_count + CASE WHEN u.kind IN ('failed', 'retry') THEN 1 ELSE 0 END,
                last_error = CASE WHEN u.kind IN ('failed', 'retry') THEN u.error ELSE o.last_error END,
                handlers_done = CASE u.kind WHEN 'processed' THEN NULL
                                            WHEN 'release' THEN o.handlers_done
                                            ELSE u.handlers_done::jsonb END,
                next_attempt_at = CASE WHEN u.kind = 'retry'
                                       THEN now() + make_interval(secs => u.delay)
                                       ELSE o.next_attempt_at END,
                lease_owner = NULL, lease_expires_at = NULL
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::float8[])
                  AS u(id, kind, handlers_done, error, delay)
             WHERE o.id = u.id AND o.lease_owner = $6",
        )
        .bind(&ids)
        .bind(&kinds)
        .bind(&done)
        .bind(&errors)
        .bind(&delays)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn waiter(&self) -> Box<dyn Waiter> {
        let listener = async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        match listener {
            Ok(listener) => Box::new(Listener(listener)),
            Err(error) => {
                tracing::warn!(%error, "could not LISTEN for outbox inserts; the relay polls instead");
                Box::new(Sleeper)
            }
        }
    }

    async fn delete_finished(
        &self,
        older_than: Duration,
        batch: usize,
    ) -> Result<u64, OutboxError> {
        let mut deleted = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM herald_outbox WHERE id IN (
                    SELECT id FROM herald_outbox
                    WHERE status <> 'pending'
                      AND processed_at < now() - make_interval(secs => $1)
                    LIMIT $2)",
            )
            .bind(older_than.as_secs_f64())
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
