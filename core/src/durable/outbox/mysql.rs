//! The MySQL dialect (MySQL 8, MariaDB 10.6 or newer): several relays, in one or many processes,
//! share one table, as on PostgreSQL.
//!
//! - **Claim**: `SELECT … ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED`, then an `UPDATE` of the
//!   lease, in one short `READ COMMITTED` transaction (no gap locks that would stop publishers).
//!   Leases, their renewal (a locked read of the rows still leased, then the update: neither
//!   database has `UPDATE … RETURNING`) and the write-back are as on PostgreSQL; times are
//!   the server's `UTC_TIMESTAMP(6)`.
//! - **Wake-up**: polling (MySQL has no `LISTEN`).
//! - **Per-key order**: a publish with a key first runs `INSERT INTO herald_keys (hash) …
//!   CRC32(key) … ON DUPLICATE KEY UPDATE`, which locks that key's row until the publishing
//!   transaction ends (MySQL's named locks, `GET_LOCK`, are held by the session, not the
//!   transaction). A second transaction publishing the same key waits there, so per key id order
//!   is commit order. Several keys of one call are locked in hash order. As on PostgreSQL, keep
//!   such transactions short and publish a transaction's keys in one order: InnoDB aborts one of
//!   two transactions that deadlock.
//! - **Gap-safe event feed**: every publish takes a shared lock on the one row of
//!   `herald_positions` before its insert, held until its transaction ends. `events_after` takes
//!   that row's exclusive lock (waiting at most a second), which it gets only when no publishing
//!   transaction is open; then every row that exists has committed, and every later row gets a
//!   higher id. It moves the watermark to the highest id, and events are read by id up to the
//!   watermark. A row can therefore never commit below a position already read. (A row inserted
//!   by hand, without that lock, has no such guarantee.)
//! - **Migrations**: a named lock per database keeps two migrating processes apart; the DDL
//!   commits as it goes, so the scripts can run again.

use super::dialect::{claimed_row, impl_dialect, Query, Statements};
use super::row::{self, ClaimedRow, Sleeper, Waiter};
use super::{NewRow, OutboxError, BULK_COLUMNS};
use crate::model::envelope::{DeliverAt, Envelope, MessageId};
use crate::model::sla::SlaBreached;
use chrono::{DateTime, Utc};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{Connection, MySql, MySqlPool, QueryBuilder, Row};
use std::str::FromStr;
use std::time::Duration;

/// The transactional outbox on MySQL 8 or MariaDB 10.6+. Cheap to clone.
pub type MySqlOutbox = super::SqlOutbox<MySql>;

/// Connects a pool of up to 16 connections to `url` (`mysql://USER:PASSWORD@HOST:PORT/DB`;
/// `mariadb://` is taken as well). See [`connect_with`].
///
/// # Errors
/// When the URL is invalid or the server cannot be reached: the server's or the system's own
/// error (connection refused, access denied, unknown database, ...).
pub async fn connect(url: &str) -> Result<MySqlPool, OutboxError> {
    let url = match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_owned(),
    };
    let options = MySqlConnectOptions::from_str(&url)?;
    connect_with(
        MySqlPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10)),
        options,
    )
    .await
}

/// Connects a pool with `pool` options to the server `options` name.
///
/// The first connection is made directly, so that its failure is returned as it is and at once.
/// A server that does not answer at all is reported as [`OutboxError::ConnectTimedOut`] after
/// the pool's acquire timeout.
///
/// # Errors
/// When the server cannot be reached or refuses the connection.
pub async fn connect_with(
    pool: MySqlPoolOptions,
    options: MySqlConnectOptions,
) -> Result<MySqlPool, OutboxError> {
    super::sql::connect_pool(pool, options).await
}

/// MySQL's bind-parameter limit per statement.
const MYSQL_MAX_BINDS: usize = 65_535;

/// MySQL's error number for a lock wait that timed out.
const LOCK_WAIT_TIMEOUT: u16 = 1205;

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

static STATEMENTS: Statements = Statements {
    write_begin: "START TRANSACTION",
    schema_table_exists: "SELECT 1 AS present FROM information_schema.tables
                          WHERE table_schema = DATABASE() AND table_name = 'herald_schema'",
    create_schema_table: "CREATE TABLE IF NOT EXISTS herald_schema (
        version BIGINT NOT NULL PRIMARY KEY, description TEXT NOT NULL,
        applied_at DATETIME(6) NOT NULL) ENGINE = InnoDB",
    before_migrate: "",
    // Named locks are server-wide: the name carries the database's.
    migration_begin: "DO GET_LOCK(CONCAT('herald_schema.', DATABASE()), 60)",
    migration_commit: "DO RELEASE_LOCK(CONCAT('herald_schema.', DATABASE()))",
    migration_rollback: "DO RELEASE_LOCK(CONCAT('herald_schema.', DATABASE()))",
    schema_version:
        "SELECT CAST(COALESCE(MAX(version), 0) AS SIGNED) AS version FROM herald_schema",
    record_version: "INSERT INTO herald_schema (version, description, applied_at) VALUES (?, ?, ?)",
    status: "SELECT
            CAST(COALESCE(SUM(status = 'pending'), 0) AS SIGNED) AS pending,
            CAST(COALESCE(SUM(status = 'pending' AND lease_expires_at > UTC_TIMESTAMP(6)), 0)
                 AS SIGNED) AS in_flight,
            CAST(COALESCE(SUM(status = 'pending' AND fail_count > 0), 0) AS SIGNED) AS retrying,
            CAST(COALESCE(SUM(status = 'pending' AND fail_count = 0
                              AND next_attempt_at > UTC_TIMESTAMP(6)), 0) AS SIGNED) AS `delayed`,
            CAST(COALESCE(SUM(status = 'failed'), 0) AS SIGNED) AS failed,
            CAST(COALESCE(SUM(status = 'processed'), 0) AS SIGNED) AS processed,
            (SELECT MIN(CASE WHEN fail_count = 0 THEN GREATEST(occurred_at, next_attempt_at)
                             ELSE occurred_at END)
             FROM herald_outbox
             WHERE status = 'pending' AND (fail_count > 0 OR next_attempt_at <= UTC_TIMESTAMP(6)))
                AS oldest,
            (SELECT COUNT(*) FROM herald_dead_letters) AS dead_letters,
            UTC_TIMESTAMP(6) AS now
         FROM herald_outbox",
    events_after: "SELECT id AS position, id, message_id, message_type, `key`, payload, headers,
                          occurred_at, status
                   FROM herald_outbox
                   WHERE id > ? AND id <= (SELECT last_position FROM herald_positions)
                   ORDER BY id LIMIT ?",
    delete_finished: "DELETE FROM herald_outbox
                      WHERE status <> 'pending' AND processed_at < ?
                      ORDER BY id LIMIT ?",
    outbox_by_message_id: "SELECT id, handlers_done, only_handlers FROM herald_outbox
                           WHERE message_id = ? FOR UPDATE",
    redrive_update: "UPDATE herald_outbox SET status = 'pending', fail_count = 0,
            next_attempt_at = '1970-01-01 00:00:01',
            processed_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
            handlers_done = ?, only_handlers = ?
         WHERE id = ?",
    finish_rename: "UPDATE herald_outbox SET message_id = ? WHERE id = ? AND lease_owner = ?",
    finish_processed: "UPDATE herald_outbox SET status = 'processed', processed_at = ?,
                          lease_owner = NULL, lease_expires_at = NULL, handlers_done = NULL
                       WHERE lease_owner = ? AND id IN ({ids})",
    finish_failed: "UPDATE herald_outbox SET status = 'failed', processed_at = ?, failed_at = ?,
                       fail_count = fail_count + 1, last_error = ?, handlers_done = ?,
                       lease_owner = NULL, lease_expires_at = NULL
                    WHERE id = ? AND lease_owner = ?",
    finish_retry: "UPDATE herald_outbox SET fail_count = fail_count + 1, failed_at = ?,
                      last_error = ?, handlers_done = ?,
                      next_attempt_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND,
                      lease_owner = NULL, lease_expires_at = NULL
                   WHERE id = ? AND lease_owner = ?",
    finish_release: "UPDATE herald_outbox SET lease_owner = NULL, lease_expires_at = NULL
                     WHERE id = ? AND lease_owner = ?",
    dead_letter_columns:
        "id, handler, reason, failure_kind, CAST(attempts AS SIGNED) AS attempts, \
                          envelope, payload, first_error, last_error, first_failed_at, \
                          last_failed_at, dead_lettered_at",
    // `id = LAST_INSERT_ID(id)`: the update path reports the existing entry's id.
    dead_letter_put: "INSERT INTO herald_dead_letters (message_id, message_type, handler, reason,
            attempts, envelope, payload, first_error, last_error, first_failed_at, last_failed_at,
            dead_lettered_at, failure_kind)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id),
            reason = VALUES(reason), failure_kind = VALUES(failure_kind),
            attempts = VALUES(attempts),
            last_error = VALUES(last_error), last_failed_at = VALUES(last_failed_at),
            dead_lettered_at = VALUES(dead_lettered_at)",
    dead_letter_by_id: "WHERE id = ?",
    dead_letter_by_id_for_update: "WHERE id = ? FOR UPDATE",
    dead_letter_page: "ORDER BY id LIMIT ?",
    dead_letter_delete: "DELETE FROM herald_dead_letters WHERE id = ?",
    dead_letter_delete_all: "DELETE FROM herald_dead_letters",
    dead_letter_count: "SELECT COUNT(*) AS count FROM herald_dead_letters",
    // A duplicate fails with a unique violation (the inbox takes it as "already done").
    inbox_insert: "INSERT INTO herald_inbox (handler, message_id, processed_at) VALUES (?, ?, ?)",
    // IGNORE: a duplicate (sla, a_message_id) inserts nothing and affects 0 rows (with
    // CLIENT_FOUND_ROWS, `ON DUPLICATE KEY UPDATE` would report 1 for it too). The values are
    // checked before (the SLA name's length at build), so it hides nothing else.
    sla_open: "INSERT IGNORE INTO herald_sla_expectations (sla, correlation_key, a_message_id,
                                                        opened_at, due_at)
               VALUES (?, ?, ?, ?, ?)",
    // The row locks make a B wait for a sweep that is breaching its expectation, then see it
    // breached (late); a sweep skips the rows a B's open transaction holds.
    sla_of_key: "SELECT id, a_message_id, state, due_at FROM herald_sla_expectations
                 WHERE sla = ? AND correlation_key = ? AND state IN ('pending', 'breached')
                 ORDER BY id FOR UPDATE",
    sla_fulfil: "UPDATE herald_sla_expectations SET state = ?, fulfilled_at = ?, fulfilled_by = ?
                 WHERE id = ? AND state IN ('pending', 'breached')",
    sla_reopen: "UPDATE herald_sla_expectations SET state = 'pending', breached_at = NULL
                 WHERE sla = ? AND a_message_id = ? AND state = 'breached'",
    sla_status: super::dialect::SLA_STATUS,
    sla_get: "SELECT sla, correlation_key, a_message_id, opened_at, due_at, state, fulfilled_at,
                     fulfilled_by, breached_at
              FROM herald_sla_expectations WHERE sla = ? AND a_message_id = ?",
    stuck_keys:
        "SELECT id, ordering_key, message_type, fail_count, last_error, failed_at, waiting FROM (
        SELECT o.id, o.`key` AS ordering_key, o.message_type,
               CAST(o.fail_count AS SIGNED) AS fail_count, o.last_error, o.failed_at,
               (SELECT COUNT(*) FROM herald_outbox w
                WHERE w.`key` = o.`key` AND w.status = 'pending' AND w.id > o.id) AS waiting
        FROM herald_outbox o
        WHERE o.status = 'pending' AND o.`key` IS NOT NULL AND o.fail_count > 0
          AND NOT EXISTS (SELECT 1 FROM herald_outbox p
                          WHERE p.`key` = o.`key` AND p.status = 'pending' AND p.id < o.id)
     ) held WHERE waiting > 0 ORDER BY id LIMIT ?",
};

/// The keys of `rows`, each once.
fn distinct_keys<'r>(keys: impl Iterator<Item = &'r str>) -> Vec<&'r str> {
    let mut keys: Vec<&str> = keys.collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// What every publish does before its insert, in the publishing transaction: the shared lock on
/// the event feed's watermark, and the lock of each key (in hash order).
async fn lock_for_publish(
    conn: &mut sqlx::MySqlConnection,
    keys: &[&str],
) -> Result<(), OutboxError> {
    sqlx::query(
        "SELECT last_position FROM herald_positions WHERE singleton = 1 LOCK IN SHARE MODE",
    )
    .execute(&mut *conn)
    .await?;
    if keys.is_empty() {
        return Ok(());
    }
    let mut lock = QueryBuilder::<MySql>::new("INSERT INTO herald_keys (hash) SELECT h FROM (");
    let mut hashes = lock.separated(" UNION ");
    for key in keys {
        hashes
            .push("SELECT CRC32(")
            .push_bind_unseparated(*key)
            .push_unseparated(") AS h");
    }
    lock.push(") AS hashes ORDER BY h ON DUPLICATE KEY UPDATE hash = hash");
    lock.build().execute(&mut *conn).await?;
    Ok(())
}

fn is_lock_wait_timeout(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(error) => error
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|error| error.number() == LOCK_WAIT_TIMEOUT),
        _ => false,
    }
}

/// Moves the event feed's watermark (see the module docs); gives up after a second of waiting
/// for open publishing transactions (the watermark then stays where it is).
async fn move_watermark(conn: &mut sqlx::MySqlConnection) -> Result<(), OutboxError> {
    sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .execute(&mut *conn)
        .await?;
    let mut tx = conn.begin().await?;
    let locked =
        sqlx::query("SELECT last_position FROM herald_positions WHERE singleton = 1 FOR UPDATE")
            .execute(&mut *tx)
            .await;
    match locked {
        Ok(_) => {}
        Err(error) if is_lock_wait_timeout(&error) => {
            tx.rollback().await?;
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    }
    // READ COMMITTED: this read sees every row committed up to now, after the lock.
    let highest: i64 =
        sqlx::query_scalar("SELECT CAST(COALESCE(MAX(id), 0) AS SIGNED) FROM herald_outbox")
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query("UPDATE herald_positions SET last_position = GREATEST(last_position, ?) WHERE singleton = 1")
        .bind(highest)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Inserts one outbox row after taking the publish locks; returns its id.
async fn insert(
    conn: &mut sqlx::MySqlConnection,
    envelope: &Envelope,
    payload: &str,
    only_handlers: Option<&[String]>,
    deliver: Option<DeliverAt>,
) -> Result<i64, OutboxError> {
    lock_for_publish(conn, &distinct_keys(envelope.key.as_deref().into_iter())).await?;
    let (at, after) = match deliver {
        None => (None, None),
        Some(DeliverAt::At(at)) => (Some(at), None),
        Some(DeliverAt::After(delay)) => (None, Some(micros(delay))),
    };
    // A delay counts from the write on the server's clock, which the relay's claim compares with
    // (`+ INTERVAL NULL` is NULL: no delay falls through to the column's default).
    let id = sqlx::query(
        "INSERT INTO herald_outbox (message_id, message_type, `key`, payload, headers, occurred_at, only_handlers,
                                    next_attempt_at)
         VALUES (?, ?, ?, ?, ?, ?, ?,
                 COALESCE(?, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND, '1970-01-01 00:00:01'))",
    )
    .bind(envelope.id.to_string())
    .bind(envelope.name.as_ref())
    .bind(envelope.key.as_deref())
    .bind(payload)
    .bind(row::headers_json(envelope)?)
    .bind(envelope.occurred_at)
    .bind(only_handlers.and_then(row::handlers_json))
    .bind(at)
    .bind(after)
    .execute(conn)
    .await?
    .last_insert_id();
    Ok(i64::try_from(id).unwrap_or(i64::MAX))
}

/// Inserts `rows` with multi-row `INSERT`s after taking the publish locks of all their keys.
async fn insert_all(conn: &mut sqlx::MySqlConnection, rows: &[NewRow]) -> Result<(), OutboxError> {
    let keys = distinct_keys(rows.iter().filter_map(|row| row.envelope.key.as_deref()));
    lock_for_publish(conn, &keys).await?;
    for chunk in rows.chunks(MYSQL_MAX_BINDS / BULK_COLUMNS) {
        let mut insert = QueryBuilder::<MySql>::new(
            "INSERT INTO herald_outbox (message_id, message_type, `key`, payload, headers, occurred_at) ",
        );
        insert.push_values(chunk, |mut values, row| {
            values
                .push_bind(row.envelope.id.to_string())
                .push_bind(row.envelope.name.as_ref())
                .push_bind(row.envelope.key.as_deref())
                .push_bind(row.payload.as_str())
                .push_bind(row.headers.as_str())
                .push_bind(row.envelope.occurred_at);
        });
        insert.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// The ids inlined in a statement (integers from the database: safe, and one statement per batch).
fn id_list(ids: &[i64]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl_dialect!(MySql {
    fn migration(migration: &super::Migration) -> &'static str {
        migration.mysql
    }

    fn statements() -> &'static Statements {
        &STATEMENTS
    }

    fn bind_time<'q>(query: Query<'q, Self>, value: Option<DateTime<Utc>>) -> Query<'q, Self> {
        query.bind(value)
    }

    fn bind_message_id<'q>(query: Query<'q, Self>, value: MessageId) -> Query<'q, Self> {
        query.bind(value.to_string())
    }

    fn bind_from_now<'q>(query: Query<'q, Self>, after: Duration) -> Query<'q, Self> {
        query.bind(micros(after))
    }

    fn bind_age<'q>(query: Query<'q, Self>, age: Duration) -> Query<'q, Self> {
        let cutoff = chrono::Duration::from_std(age)
            .ok()
            .and_then(|age| Utc::now().checked_sub_signed(age))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        query.bind(cutoff)
    }

    fn get_text(row: &Self::Row, column: &str) -> Result<Option<String>, sqlx::Error> {
        // Columns with a binary collation (utf8mb4_bin) come back flagged binary: read bytes.
        match row.try_get::<Option<String>, _>(column) {
            Ok(text) => Ok(text),
            Err(sqlx::Error::ColumnDecode { .. }) => row
                .try_get::<Option<Vec<u8>>, _>(column)?
                .map(|bytes| {
                    String::from_utf8(bytes).map_err(|error| sqlx::Error::ColumnDecode {
                        index: column.to_owned(),
                        source: Box::new(error),
                    })
                })
                .transpose(),
            Err(error) => Err(error),
        }
    }

    fn get_time(row: &Self::Row, column: &str) -> Result<Option<DateTime<Utc>>, OutboxError> {
        Ok(row.try_get(column)?)
    }

    async fn insert_returning_id(
        conn: &mut Self::Connection,
        query: Query<'_, Self>,
    ) -> Result<i64, sqlx::Error> {
        let id = query.execute(conn).await?.last_insert_id();
        Ok(i64::try_from(id).unwrap_or(i64::MAX))
    }

    async fn insert(
        conn: &mut Self::Connection,
        envelope: &Envelope,
        payload: &str,
        only_handlers: Option<&[String]>,
        deliver: Option<DeliverAt>,
    ) -> Result<i64, OutboxError> {
        insert(conn, envelope, payload, only_handlers, deliver).await
    }

    async fn insert_all(conn: &mut Self::Connection, rows: &[NewRow]) -> Result<(), OutboxError> {
        insert_all(conn, rows).await
    }

    async fn claim(
        pool: &sqlx::Pool<Self>,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedRow>, OutboxError> {
        let mut conn = pool.acquire().await?;
        // No gap locks: publishers insert freely beside a claim.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .execute(&mut *conn)
            .await?;
        let mut tx = conn.begin().await?;
        let rows = sqlx::query(
            "SELECT o.id, o.message_id, o.message_type, o.`key`, o.payload, o.headers,
                    o.occurred_at, CAST(o.fail_count AS SIGNED) AS fail_count,
                    o.handlers_done, o.only_handlers
             FROM herald_outbox o
             WHERE o.status = 'pending' AND o.next_attempt_at <= UTC_TIMESTAMP(6)
               AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= UTC_TIMESTAMP(6))
               AND (o.`key` IS NULL OR NOT EXISTS (
                     SELECT 1 FROM herald_outbox p
                     WHERE p.`key` = o.`key` AND p.status = 'pending' AND p.id <> o.id
                       AND (p.id < o.id OR p.lease_expires_at > UTC_TIMESTAMP(6))))
             ORDER BY o.id LIMIT ?
             FOR UPDATE SKIP LOCKED",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        let claimed = rows
            .iter()
            .map(claimed_row::<MySql>)
            .collect::<Result<Vec<_>, OutboxError>>()?;
        if !claimed.is_empty() {
            let ids: Vec<i64> = claimed.iter().map(|row| row.id).collect();
            sqlx::query(&format!(
                "UPDATE herald_outbox
                 SET lease_owner = ?, lease_expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND
                 WHERE id IN ({})",
                id_list(&ids)
            ))
            .bind(owner)
            .bind(micros(lease))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(claimed)
    }

    async fn renew(
        pool: &sqlx::Pool<Self>,
        owner: &str,
        ids: &[i64],
        lease: Duration,
    ) -> Result<Vec<i64>, OutboxError> {
        let mut conn = pool.acquire().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .execute(&mut *conn)
            .await?;
        let mut tx = conn.begin().await?;
        // Locks the rows still leased by `owner` (a claim of another relay in progress holds
        // them: this waits for it, then finds them leased by the other relay: lost).
        let held: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT id FROM herald_outbox
             WHERE lease_owner = ? AND status = 'pending' AND id IN ({}) FOR UPDATE",
            id_list(ids)
        ))
        .bind(owner)
        .fetch_all(&mut *tx)
        .await?;
        if !held.is_empty() {
            sqlx::query(&format!(
                "UPDATE herald_outbox
                 SET lease_expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND
                 WHERE id IN ({})",
                id_list(&held)
            ))
            .bind(micros(lease))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(held)
    }

    async fn waiter(_pool: &sqlx::Pool<Self>) -> Box<dyn Waiter> {
        Box::new(Sleeper)
    }

    async fn sla_sweep(
        pool: &sqlx::Pool<Self>,
        limit: usize,
    ) -> Result<Vec<SlaBreached>, OutboxError> {
        let mut conn = pool.acquire().await?;
        // No gap locks: publishers open expectations freely beside a sweep.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .execute(&mut *conn)
            .await?;
        let mut tx = conn.begin().await?;
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT UTC_TIMESTAMP(6)")
            .fetch_one(&mut *tx)
            .await?;
        // Competing sweepers skip each other's rows (and those a B's open transaction holds).
        let rows = sqlx::query(
            "SELECT id, sla, correlation_key, a_message_id, due_at FROM herald_sla_expectations
             WHERE state = 'pending' AND due_at <= ?
             ORDER BY due_at, id LIMIT ?
             FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        let breaches = rows
            .iter()
            .map(|row| super::sla::breach::<MySql>(row, Some(now)))
            .collect::<Result<Vec<_>, _>>()?;
        if !rows.is_empty() {
            let ids = rows
                .iter()
                .map(|row| row.try_get::<i64, _>("id"))
                .collect::<Result<Vec<_>, _>>()?;
            sqlx::query(&format!(
                "UPDATE herald_sla_expectations SET state = 'breached', breached_at = ?
                 WHERE id IN ({})",
                id_list(&ids)
            ))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            super::sla::write_breaches::<MySql>(&mut tx, &breaches).await?;
        }
        tx.commit().await?;
        Ok(breaches)
    }

    async fn prepare_events(pool: &sqlx::Pool<Self>) -> Result<(), OutboxError> {
        let mut conn = pool.acquire().await?;
        sqlx::query("SET SESSION innodb_lock_wait_timeout = 1")
            .execute(&mut *conn)
            .await?;
        let moved = move_watermark(&mut conn).await;
        // The pooled connection goes back with the server's setting.
        let restored = sqlx::query("SET SESSION innodb_lock_wait_timeout = DEFAULT")
            .execute(&mut *conn)
            .await;
        if restored.is_err() {
            conn.detach();
        }
        moved
    }
});
