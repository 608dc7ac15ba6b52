//! The PostgreSQL dialect: several relays, in one or many processes, share one table.
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
//!
//! Text columns refuse U+0000: error texts are written with it escaped, and a dead letter whose
//! JSON holds it keeps that JSON in a text column beside its `jsonb` one.

use super::dialect::{claimed_row, impl_dialect, Query, Statements};
use super::row::{self, ClaimedRow, Outcome, Sleeper, Waiter};
use super::{NewRow, OutboxError, BULK_COLUMNS};
use crate::model::envelope::{DeliverAt, Envelope, MessageId};
use crate::model::sla::SlaBreached;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

/// The transactional outbox on PostgreSQL. Cheap to clone.
pub type PgOutbox = super::SqlOutbox<Postgres>;

/// Takes the advisory lock that serialises Herald's migrations across processes (its key is
/// `0x4845_5241_4c44`, "HERALD").
const MIGRATION_BEGIN: &str = "BEGIN; SELECT pg_advisory_xact_lock(79462569954372)";

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
    super::sql::connect_pool(pool, options).await
}

static STATEMENTS: Statements = Statements {
    write_begin: "BEGIN",
    schema_table_exists: "SELECT 1 AS present WHERE to_regclass('herald_schema') IS NOT NULL",
    create_schema_table: "CREATE TABLE IF NOT EXISTS herald_schema (
        version BIGINT PRIMARY KEY, description TEXT NOT NULL,
        applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    before_migrate: "",
    migration_begin: MIGRATION_BEGIN,
    migration_commit: "COMMIT",
    migration_rollback: "ROLLBACK",
    schema_version: "SELECT COALESCE(MAX(version), 0) AS version FROM herald_schema",
    record_version:
        "INSERT INTO herald_schema (version, description, applied_at) VALUES ($1, $2, $3)",
    status: "SELECT
            COUNT(*) FILTER (WHERE status = 'pending') AS pending,
            COUNT(*) FILTER (WHERE status = 'pending' AND lease_expires_at > now()) AS in_flight,
            COUNT(*) FILTER (WHERE status = 'pending' AND fail_count > 0) AS retrying,
            COUNT(*) FILTER (WHERE status = 'pending' AND fail_count = 0 AND next_attempt_at > now())
                AS delayed,
            COUNT(*) FILTER (WHERE status = 'failed') AS failed,
            COUNT(*) FILTER (WHERE status = 'processed') AS processed,
            (SELECT MIN(CASE WHEN fail_count = 0 THEN GREATEST(occurred_at, next_attempt_at)
                             ELSE occurred_at END)
             FROM herald_outbox
             WHERE status = 'pending' AND (fail_count > 0 OR next_attempt_at <= now())) AS oldest,
            (SELECT COUNT(*) FROM herald_dead_letters) AS dead_letters,
            now() AS now
         FROM herald_outbox",
    events_after: "SELECT position, id, message_id::text AS message_id, message_type, key, payload,
                          headers::text AS headers, occurred_at, status
                   FROM herald_outbox WHERE position > $1 ORDER BY position LIMIT $2",
    delete_finished: "DELETE FROM herald_outbox WHERE id IN (
                        SELECT id FROM herald_outbox
                        WHERE status <> 'pending'
                          AND processed_at < now() - make_interval(secs => $1)
                        LIMIT $2)",
    outbox_by_message_id:
        "SELECT id, handlers_done::text AS handlers_done, only_handlers::text AS only_handlers
         FROM herald_outbox WHERE message_id = $1 FOR UPDATE",
    redrive_update:
        "UPDATE herald_outbox SET status = 'pending', fail_count = 0, next_attempt_at = now(),
            processed_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
            handlers_done = $1::jsonb, only_handlers = $2::jsonb
         WHERE id = $3",
    // Unused: `finish` writes a whole batch in one statement (below).
    finish_rename: "",
    finish_processed: "",
    finish_failed: "",
    finish_retry: "",
    finish_release: "",
    dead_letter_columns: "id, handler, reason, failure_kind, attempts::bigint AS attempts, \
                          COALESCE(envelope_text, envelope::text) AS envelope, \
                          COALESCE(payload_text, payload::text) AS payload, \
                          first_error, last_error, first_failed_at, last_failed_at, dead_lettered_at",
    dead_letter_put: "INSERT INTO herald_dead_letters (message_id, message_type, handler, reason,
            attempts, envelope, payload, first_error, last_error, first_failed_at, last_failed_at,
            dead_lettered_at, failure_kind, envelope_text, payload_text)
         VALUES ($1, $2, $3, $4, $5::integer, $6::jsonb, $7::jsonb, $8, $9, $10, $11, $12,
                 $13, $14, $15)
         ON CONFLICT (message_id, handler) DO UPDATE SET
            reason = excluded.reason, failure_kind = excluded.failure_kind,
            attempts = excluded.attempts,
            last_error = excluded.last_error, last_failed_at = excluded.last_failed_at,
            dead_lettered_at = excluded.dead_lettered_at
         RETURNING id",
    dead_letter_by_id: "WHERE id = $1",
    dead_letter_by_id_for_update: "WHERE id = $1 FOR UPDATE",
    dead_letter_page: "ORDER BY id LIMIT $1",
    dead_letter_delete: "DELETE FROM herald_dead_letters WHERE id = $1",
    dead_letter_delete_all: "DELETE FROM herald_dead_letters",
    dead_letter_count: "SELECT COUNT(*) AS count FROM herald_dead_letters",
    inbox_insert: "INSERT INTO herald_inbox (handler, message_id, processed_at) VALUES ($1, $2, $3)
                   ON CONFLICT (handler, message_id) DO NOTHING",
    sla_open: "INSERT INTO herald_sla_expectations (sla, correlation_key, a_message_id, opened_at,
                                                 due_at)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (sla, a_message_id) DO NOTHING",
    // The row locks make a B wait for a sweep that is breaching its expectation, then see it
    // breached (late); a sweep skips the rows a B's open transaction holds.
    sla_of_key: "SELECT id, a_message_id::text AS a_message_id, state, due_at
                 FROM herald_sla_expectations
                 WHERE sla = $1 AND correlation_key = $2 AND state IN ('pending', 'breached')
                 ORDER BY id FOR UPDATE",
    sla_fulfil: "UPDATE herald_sla_expectations SET state = $1, fulfilled_at = $2, fulfilled_by = $3
                 WHERE id = $4 AND state IN ('pending', 'breached')",
    sla_reopen: "UPDATE herald_sla_expectations SET state = 'pending', breached_at = NULL
                 WHERE sla = $1 AND a_message_id = $2 AND state = 'breached'",
    sla_status: super::dialect::SLA_STATUS,
    sla_get: "SELECT sla, correlation_key, a_message_id::text AS a_message_id, opened_at, due_at,
                     state, fulfilled_at, fulfilled_by::text AS fulfilled_by, breached_at
              FROM herald_sla_expectations WHERE sla = $1 AND a_message_id = $2",
    stuck_keys: "SELECT id, ordering_key, message_type, fail_count, last_error, failed_at, waiting FROM (
        SELECT o.id, o.key AS ordering_key, o.message_type, o.fail_count::bigint AS fail_count,
               o.last_error, o.failed_at,
               (SELECT COUNT(*) FROM herald_outbox w
                WHERE w.key = o.key AND w.status = 'pending' AND w.id > o.id) AS waiting
        FROM herald_outbox o
        WHERE o.status = 'pending' AND o.key IS NOT NULL AND o.fail_count > 0
          AND NOT EXISTS (SELECT 1 FROM herald_outbox p
                          WHERE p.key = o.key AND p.status = 'pending' AND p.id < o.id)
     ) held WHERE waiting > 0 ORDER BY id LIMIT $1",
};

/// Whether jsonb would refuse `json`: jsonb cannot hold U+0000, which serde_json writes as
/// `\u0000`. Such JSON goes to the text column beside the jsonb one, which then holds `null`.
/// (Text that merely contains a backslash before `u0000` goes there too, harmlessly: it reads
/// back the same.)
fn refused_by_jsonb(json: &str) -> bool {
    json.contains("\\u0000")
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
fn pg_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\\u0000"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Inserts one outbox row; returns its id (also used by dead-letter re-drive). A row with a key
/// first takes the key's lock (see [`KEY_LOCK_CLASS`]).
async fn insert(
    conn: &mut sqlx::PgConnection,
    envelope: &Envelope,
    payload: &str,
    only_handlers: Option<&[String]>,
    deliver: Option<DeliverAt>,
) -> Result<i64, OutboxError> {
    let (at, after) = match deliver {
        None => (None, None),
        Some(DeliverAt::At(at)) => (Some(at), None),
        Some(DeliverAt::After(delay)) => (None, Some(delay.as_secs_f64())),
    };
    // The key's lock is taken (the one-time filter runs the CTE) before the row gets its id. A
    // delay counts from the write on the server's clock, which the relay's claim compares with.
    Ok(sqlx::query_scalar(
        "WITH key_lock AS MATERIALIZED (
            SELECT pg_advisory_xact_lock($8, hashtext($3)) WHERE $3 IS NOT NULL)
         INSERT INTO herald_outbox (message_id, message_type, key, payload, headers, occurred_at, only_handlers,
                                    next_attempt_at)
         SELECT $1, $2, $3, $4, $5::jsonb, $6, $7::jsonb,
                COALESCE($9::timestamptz, clock_timestamp() + make_interval(secs => $10::float8), now())
         WHERE (SELECT COUNT(*) FROM key_lock) >= 0
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
    .bind(at)
    .bind(after)
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

impl_dialect!(Postgres {
    fn migration(migration: &super::Migration) -> &'static str {
        migration.postgres
    }

    fn statements() -> &'static Statements {
        &STATEMENTS
    }

    fn bind_free_text<'q>(query: Query<'q, Self>, value: Option<String>) -> Query<'q, Self> {
        query.bind(value.map(|text| pg_text(&text).into_owned()))
    }

    fn bind_time<'q>(query: Query<'q, Self>, value: Option<DateTime<Utc>>) -> Query<'q, Self> {
        query.bind(value)
    }

    fn bind_message_id<'q>(query: Query<'q, Self>, value: MessageId) -> Query<'q, Self> {
        query.bind(value.as_uuid())
    }

    fn bind_from_now<'q>(query: Query<'q, Self>, after: Duration) -> Query<'q, Self> {
        query.bind(after.as_secs_f64())
    }

    fn bind_age<'q>(query: Query<'q, Self>, age: Duration) -> Query<'q, Self> {
        query.bind(age.as_secs_f64())
    }

    fn bind_json<'q>(query: Query<'q, Self>, json: String) -> Query<'q, Self> {
        if refused_by_jsonb(&json) {
            query.bind("null")
        } else {
            query.bind(json)
        }
    }

    fn bind_json_fallbacks<'q>(
        query: Query<'q, Self>,
        envelope: &str,
        payload: &str,
    ) -> Query<'q, Self> {
        let fallback = |json: &str| refused_by_jsonb(json).then(|| json.to_owned());
        query.bind(fallback(envelope)).bind(fallback(payload))
    }

    fn get_text(row: &Self::Row, column: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::Row::try_get(row, column)
    }

    fn get_time(row: &Self::Row, column: &str) -> Result<Option<DateTime<Utc>>, OutboxError> {
        Ok(row.try_get(column)?)
    }

    async fn insert_returning_id(
        conn: &mut Self::Connection,
        query: Query<'_, Self>,
    ) -> Result<i64, sqlx::Error> {
        query.fetch_one(conn).await?.try_get("id")
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
        let mut tx = pool.begin_with(CLAIM_TRANSACTION).await?;
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
             RETURNING o.id, o.message_id::text AS message_id, o.message_type, o.key, o.payload,
                       o.headers::text AS headers, o.occurred_at, o.fail_count::bigint AS fail_count,
                       o.handlers_done::text AS handlers_done,
                       o.only_handlers::text AS only_handlers",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(owner)
        .bind(lease.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(claimed_row::<Postgres>).collect()
    }

    async fn renew(
        pool: &sqlx::Pool<Self>,
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
        .fetch_all(pool)
        .await?)
    }

    async fn finish(pool: &sqlx::Pool<Self>, owner: &str, outcomes: Vec<Outcome>) -> Result<(), OutboxError> {
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
        let mut tx = pool.begin_with(RELAY_TRANSACTION).await?;
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

    async fn waiter(pool: &sqlx::Pool<Self>) -> Box<dyn Waiter> {
        let listener = async {
            let mut listener = PgListener::connect_with(pool).await?;
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

    async fn sla_sweep(
        pool: &sqlx::Pool<Self>,
        limit: usize,
    ) -> Result<Vec<SlaBreached>, OutboxError> {
        // Competing sweepers skip each other's rows (and those a B's open transaction holds);
        // the breach and its event commit together.
        let mut tx = pool.begin().await?;
        let rows = sqlx::query(
            "WITH due AS (
                SELECT id FROM herald_sla_expectations
                WHERE state = 'pending' AND due_at <= now()
                ORDER BY due_at, id LIMIT $1
                FOR UPDATE SKIP LOCKED)
             UPDATE herald_sla_expectations e SET state = 'breached', breached_at = now()
             FROM due WHERE e.id = due.id
             RETURNING e.sla, e.correlation_key, e.a_message_id::text AS a_message_id, e.due_at,
                       e.breached_at",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        let breaches = rows
            .iter()
            .map(|row| super::sla::breach::<Postgres>(row, None))
            .collect::<Result<Vec<_>, _>>()?;
        super::sla::write_breaches::<Postgres>(&mut tx, &breaches).await?;
        tx.commit().await?;
        Ok(breaches)
    }

    /// Gives positions to the rows that can no longer be overtaken (see `events_after`).
    async fn prepare_events(pool: &sqlx::Pool<Self>) -> Result<(), OutboxError> {
        let mut tx = pool.begin().await?;
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
});
