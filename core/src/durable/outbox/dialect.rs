//! What one SQL database brings to Herald's SQL store: its SQL text, its value encoders and the
//! few algorithms that really differ between databases (claim, renew, finish, the event feed's
//! positions, wake-up, per-key publish locks). Everything else (publish, dead-letter CRUD and
//! re-drive, the migration loop, status and event mapping) is written once in
//! [`SqlOutbox`](super::SqlOutbox) and [`SqlDeadLetters`](crate::dead_letter::SqlDeadLetters),
//! generic over [`Dialect`], in the spirit of watermill-sql's `SchemaAdapter` and sqlx's `Migrate`.
//!
//! A dialect is the sqlx database type itself (`sqlx::Sqlite`, `sqlx::Postgres`, `sqlx::MySql`),
//! so the transaction a caller passes to `publish` is typed by the same parameter as the store.
//!
//! # Adding a dialect
//! Inside herald-core: a folder of migrations with the same version numbers and meaning
//! (`core/migrations/<dialect>/`), a file `outbox/<dialect>.rs` with `impl SqlDialect` (the SQL
//! text in one [`Statements`] value, the encoders, the relay's algorithms), a line in
//! `outbox/schema.rs`, and the type aliases. The trait is sealed for now: its methods use the
//! relay's crate-private row types (`ClaimedRow`, `Outcome` in `outbox/row.rs`).

use super::row::{ClaimedRow, Outcome, Waiter};
use super::{NewRow, OutboxError};
use crate::model::envelope::{DeliverAt, Envelope, MessageId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// A SQL database Herald's outbox, relay, dead letters and inbox run on: implemented for
/// `sqlx::Sqlite` (feature `sqlite`), `sqlx::Postgres` (feature `postgres`) and `sqlx::MySql`
/// (feature `mysql`, MySQL 8 and MariaDB 10.6 or newer). Sealed: a new dialect is added inside
/// herald-core (see `core/src/durable/outbox/dialect.rs`).
pub trait Dialect: sealed::SqlDialect {}

impl<D: sealed::SqlDialect> Dialect for D {}

/// A statement on dialect `D`, with its bound values.
pub(crate) type Query<'q, D> = sqlx::query::Query<'q, D, <D as sqlx::Database>::Arguments<'q>>;

/// The SQL text of one dialect, statement by statement. Each statement binds its values in the
/// order its comment gives, each value once (MySQL's `?` placeholders are positional).
#[derive(Debug)]
pub(crate) struct Statements {
    /// Begins a transaction that reads, then writes (dead-letter take and re-drive). SQLite takes
    /// the write lock at once, so that two such transactions wait for each other instead of one
    /// failing when it upgrades its read.
    pub(crate) write_begin: &'static str,
    /// A row when `herald_schema` exists.
    pub(crate) schema_table_exists: &'static str,
    /// Creates `herald_schema` if missing.
    pub(crate) create_schema_table: &'static str,
    /// Run once on the migrating connection before anything else (may be empty).
    pub(crate) before_migrate: &'static str,
    /// Starts one version's migration: locks out other migrators.
    pub(crate) migration_begin: &'static str,
    /// Ends one version's migration that succeeded.
    pub(crate) migration_commit: &'static str,
    /// Ends one version's migration that failed.
    pub(crate) migration_rollback: &'static str,
    /// `MAX(version)`, one column.
    pub(crate) schema_version: &'static str,
    /// Binds version, description, applied_at.
    pub(crate) record_version: &'static str,
    /// Columns pending, in_flight, retrying, delayed, failed, processed, dead_letters
    /// (integers), oldest (the earliest moment a pending row that is due became due: its
    /// publish, or its delivery time for a delayed one), now (times). No binds.
    pub(crate) status: &'static str,
    /// Binds offset, limit. Columns position, id, message_id, message_type, key, payload,
    /// headers, occurred_at, status.
    pub(crate) events_after: &'static str,
    /// Binds age (`bind_age`), batch.
    pub(crate) delete_finished: &'static str,
    /// Binds message id. Columns id, handlers_done, only_handlers (text); locks the row.
    pub(crate) outbox_by_message_id: &'static str,
    /// Binds handlers_done, only_handlers (JSON text), id: makes the row due again.
    pub(crate) redrive_update: &'static str,
    /// Binds message id, id, owner.
    pub(crate) finish_rename: &'static str,
    /// Binds processed_at, owner; `{ids}` is replaced by the ids (integers). Without `{ids}`, a
    /// third bind holds the ids as a JSON array (one statement text for every batch, prepared
    /// once per connection).
    pub(crate) finish_processed: &'static str,
    /// Binds processed_at, failed_at, error, handlers_done, id, owner.
    pub(crate) finish_failed: &'static str,
    /// Binds failed_at, error, handlers_done, next attempt (`bind_from_now`), id, owner.
    pub(crate) finish_retry: &'static str,
    /// Binds id, owner.
    pub(crate) finish_release: &'static str,
    /// The dead-letter columns `decode` reads (id, handler, reason, failure_kind, attempts,
    /// envelope, payload, first_error, last_error, first_failed_at, last_failed_at,
    /// dead_lettered_at), for `SELECT {columns} FROM herald_dead_letters …`.
    pub(crate) dead_letter_columns: &'static str,
    /// Binds message_id, message_type, handler, reason, attempts, envelope, payload, first_error,
    /// last_error, first_failed_at, last_failed_at, dead_lettered_at, failure_kind, then the
    /// dialect's `bind_json_fallbacks`. Upserts on (message_id, handler).
    pub(crate) dead_letter_put: &'static str,
    /// `WHERE id = ?` (binds id) for a `SELECT`.
    pub(crate) dead_letter_by_id: &'static str,
    /// `WHERE id = ?` (binds id) for a `SELECT` that locks the row until the transaction ends.
    pub(crate) dead_letter_by_id_for_update: &'static str,
    /// `ORDER BY id LIMIT ?` (binds limit).
    pub(crate) dead_letter_page: &'static str,
    /// Binds id.
    pub(crate) dead_letter_delete: &'static str,
    /// No binds.
    pub(crate) dead_letter_delete_all: &'static str,
    /// No binds; one integer column.
    pub(crate) dead_letter_count: &'static str,
    /// Binds handler, message id, processed_at. A duplicate inserts nothing or fails with a
    /// unique violation.
    pub(crate) inbox_insert: &'static str,
    /// Binds sla, key (free text), a_message_id, opened_at, due_at. Inserts nothing when the
    /// SLA has an expectation for that A already (affects 0 rows then).
    pub(crate) sla_open: &'static str,
    /// Binds sla, key (free text). Columns id, a_message_id (text), state, due_at of the
    /// expectations that take a fulfilment (`pending`, `breached`), in id order; locks them
    /// until the transaction ends (PostgreSQL, MySQL).
    pub(crate) sla_of_key: &'static str,
    /// Binds state, fulfilled_at, fulfilled_by, id. Moves only a row that still takes a
    /// fulfilment.
    pub(crate) sla_fulfil: &'static str,
    /// Binds sla, a_message_id: a breached expectation open again.
    pub(crate) sla_reopen: &'static str,
    /// No binds. Columns sla, pending, fulfilled, fulfilled_late, breached (integers), next_due
    /// (time), one row per SLA, by name.
    pub(crate) sla_status: &'static str,
    /// Binds sla, a_message_id. Columns sla, correlation_key, a_message_id, opened_at, due_at,
    /// state, fulfilled_at, fulfilled_by, breached_at (ids as text).
    pub(crate) sla_get: &'static str,
    /// Binds limit. Columns id, ordering_key, message_type, fail_count, waiting (integers),
    /// last_error (text), failed_at (time): each key whose oldest pending row failed at least
    /// once and has later pending rows behind it, by that row's id.
    pub(crate) stuck_keys: &'static str,
}

/// Counts by SLA and state (the same text on every dialect: `COUNT` of a `CASE` is an integer
/// everywhere).
pub(crate) const SLA_STATUS: &str = "SELECT sla,
        COUNT(CASE WHEN state = 'pending' THEN 1 END) AS pending,
        COUNT(CASE WHEN state = 'fulfilled' THEN 1 END) AS fulfilled,
        COUNT(CASE WHEN state = 'fulfilled_late' THEN 1 END) AS fulfilled_late,
        COUNT(CASE WHEN state = 'breached' THEN 1 END) AS breached,
        MIN(CASE WHEN state = 'pending' THEN due_at END) AS next_due
     FROM herald_sla_expectations GROUP BY sla ORDER BY sla";

pub(crate) mod sealed {
    use super::*;

    /// The dialect's part of the SQL store. Sealed (unnameable outside herald-core); it names the
    /// relay's crate-private row types, hence the `allow`.
    #[allow(private_interfaces, unreachable_pub)]
    #[async_trait]
    pub trait SqlDialect: sqlx::Database + Sized + std::fmt::Debug {
        /// The migration script of `version` (from `core/migrations/<dialect>/`).
        fn migration(migration: &super::super::Migration) -> &'static str;
        /// The SQL text.
        fn statements() -> &'static Statements;

        // Value encoders and decoders: each binds exactly one value (except
        // `bind_json_fallbacks`), in the form the dialect's columns take.
        fn bind_int<'q>(query: Query<'q, Self>, value: i64) -> Query<'q, Self>;
        fn bind_text<'q>(query: Query<'q, Self>, value: Option<String>) -> Query<'q, Self>;
        /// Text written by handlers or payloads (error messages): PostgreSQL's `text` refuses
        /// U+0000.
        fn bind_free_text<'q>(query: Query<'q, Self>, value: Option<String>) -> Query<'q, Self> {
            Self::bind_text(query, value)
        }
        fn bind_time<'q>(query: Query<'q, Self>, value: Option<DateTime<Utc>>) -> Query<'q, Self>;
        fn bind_message_id<'q>(query: Query<'q, Self>, value: MessageId) -> Query<'q, Self>;
        /// A moment `after` from now (next attempt, lease expiry), as the SQL text expects it.
        fn bind_from_now<'q>(query: Query<'q, Self>, after: Duration) -> Query<'q, Self>;
        /// A moment `age` ago, as the SQL text expects it.
        fn bind_age<'q>(query: Query<'q, Self>, age: Duration) -> Query<'q, Self>;
        /// A dead letter's envelope or payload JSON for its column.
        fn bind_json<'q>(query: Query<'q, Self>, json: String) -> Query<'q, Self> {
            Self::bind_text(query, Some(json))
        }
        /// Extra binds after `dead_letter_put`'s own (PostgreSQL: the JSON its `jsonb` refuses).
        fn bind_json_fallbacks<'q>(
            query: Query<'q, Self>,
            _envelope: &str,
            _payload: &str,
        ) -> Query<'q, Self> {
            query
        }
        fn get_int(row: &Self::Row, column: &str) -> Result<i64, sqlx::Error>;
        fn get_text(row: &Self::Row, column: &str) -> Result<Option<String>, sqlx::Error>;
        fn get_time(row: &Self::Row, column: &str) -> Result<Option<DateTime<Utc>>, OutboxError>;

        // Running statements.
        async fn execute(
            conn: &mut Self::Connection,
            query: Query<'_, Self>,
        ) -> Result<u64, sqlx::Error>;
        async fn execute_script(
            conn: &mut Self::Connection,
            script: &'static str,
        ) -> Result<(), sqlx::Error>;
        async fn fetch_all(
            conn: &mut Self::Connection,
            query: Query<'_, Self>,
        ) -> Result<Vec<Self::Row>, sqlx::Error>;
        async fn fetch_optional(
            conn: &mut Self::Connection,
            query: Query<'_, Self>,
        ) -> Result<Option<Self::Row>, sqlx::Error>;
        /// Runs an `INSERT` of one row and returns the row's id.
        async fn insert_returning_id(
            conn: &mut Self::Connection,
            query: Query<'_, Self>,
        ) -> Result<i64, sqlx::Error>;

        // Publishing: where per-key commit order is made.
        /// Inserts one outbox row and returns its id (publish and re-drive). A row with
        /// `deliver` is due then (`next_attempt_at`): the relay leaves it until that moment; a
        /// delay is counted on the clock the dialect's claim compares with.
        async fn insert(
            conn: &mut Self::Connection,
            envelope: &Envelope,
            payload: &str,
            only_handlers: Option<&[String]>,
            deliver: Option<DeliverAt>,
        ) -> Result<i64, OutboxError>;
        /// Inserts a batch of rows with multi-row `INSERT`s.
        async fn insert_all(
            conn: &mut Self::Connection,
            rows: &[NewRow],
        ) -> Result<(), OutboxError>;

        // The relay's algorithms.
        async fn claim(
            pool: &sqlx::Pool<Self>,
            owner: &str,
            limit: usize,
            lease: Duration,
        ) -> Result<Vec<ClaimedRow>, OutboxError>;
        async fn renew(
            pool: &sqlx::Pool<Self>,
            owner: &str,
            ids: &[i64],
            lease: Duration,
        ) -> Result<Vec<i64>, OutboxError>;
        /// Writes outcomes back (the default: one statement per outcome, in one transaction).
        async fn finish(
            pool: &sqlx::Pool<Self>,
            owner: &str,
            outcomes: Vec<Outcome>,
        ) -> Result<(), OutboxError> {
            super::super::sql::finish_row_by_row(pool, owner, &outcomes).await
        }
        /// Writes a batch's outcomes, then leases the next batch (the relay's step between
        /// batches where `overlaps_write_back` is false). The default: `finish`, then `claim`.
        async fn finish_and_claim(
            pool: &sqlx::Pool<Self>,
            owner: &str,
            outcomes: Vec<Outcome>,
            limit: usize,
            lease: Duration,
        ) -> (
            Result<(), OutboxError>,
            Result<Vec<ClaimedRow>, OutboxError>,
        ) {
            let finished = if outcomes.is_empty() {
                Ok(())
            } else {
                Self::finish(pool, owner, outcomes).await
            };
            (finished, Self::claim(pool, owner, limit, lease).await)
        }
        fn overlaps_write_back() -> bool {
            true
        }
        async fn waiter(pool: &sqlx::Pool<Self>) -> Box<dyn Waiter>;
        /// In one transaction: marks up to `limit` open expectations whose due time has passed
        /// as breached (skipping rows another transaction holds), and writes their
        /// `SlaBreached` events into the outbox (`super::sla::write_breaches`). Returns the
        /// events.
        async fn sla_sweep(
            pool: &sqlx::Pool<Self>,
            limit: usize,
        ) -> Result<Vec<crate::model::sla::SlaBreached>, OutboxError>;
        /// Makes positions final for `events_after` (see each dialect's gap-safety note).
        async fn prepare_events(pool: &sqlx::Pool<Self>) -> Result<(), OutboxError>;
    }
}

/// `sqlx::query(…)` with the dialect's encoders as methods.
pub(crate) trait Bind<'q, D: sealed::SqlDialect>: Sized {
    fn int(self, value: i64) -> Self;
    fn text(self, value: impl Into<Option<String>>) -> Self;
    fn free_text(self, value: Option<String>) -> Self;
    fn time(self, value: impl Into<Option<DateTime<Utc>>>) -> Self;
    fn message_id(self, value: MessageId) -> Self;
    fn after_now(self, after: Duration) -> Self;
    fn age(self, age: Duration) -> Self;
    fn json(self, json: String) -> Self;
}

impl<'q, D: sealed::SqlDialect> Bind<'q, D> for Query<'q, D> {
    fn int(self, value: i64) -> Self {
        D::bind_int(self, value)
    }
    fn text(self, value: impl Into<Option<String>>) -> Self {
        D::bind_text(self, value.into())
    }
    fn free_text(self, value: Option<String>) -> Self {
        D::bind_free_text(self, value)
    }
    fn time(self, value: impl Into<Option<DateTime<Utc>>>) -> Self {
        D::bind_time(self, value.into())
    }
    fn message_id(self, value: MessageId) -> Self {
        D::bind_message_id(self, value)
    }
    fn after_now(self, after: Duration) -> Self {
        D::bind_from_now(self, after)
    }
    fn age(self, age: Duration) -> Self {
        D::bind_age(self, age)
    }
    fn json(self, json: String) -> Self {
        D::bind_json(self, json)
    }
}

/// `impl SqlDialect for $db { … }` with the encoders and statement runners every dialect writes
/// the same way (sqlx's traits are implemented per database, so a generic body would need a dozen
/// higher-ranked bounds). The whole impl is generated so that `async_trait` sees every method.
macro_rules! impl_dialect {
    ($db:ty { $($items:tt)* }) => {
        #[allow(private_interfaces)]
        #[async_trait::async_trait]
        impl $crate::durable::outbox::dialect::sealed::SqlDialect for $db {
        fn bind_int<'q>(
            query: $crate::durable::outbox::dialect::Query<'q, Self>,
            value: i64,
        ) -> $crate::durable::outbox::dialect::Query<'q, Self> {
            query.bind(value)
        }
        fn bind_text<'q>(
            query: $crate::durable::outbox::dialect::Query<'q, Self>,
            value: Option<String>,
        ) -> $crate::durable::outbox::dialect::Query<'q, Self> {
            query.bind(value)
        }
        fn get_int(row: &Self::Row, column: &str) -> Result<i64, sqlx::Error> {
            sqlx::Row::try_get(row, column)
        }
        async fn execute(
            conn: &mut Self::Connection,
            query: $crate::durable::outbox::dialect::Query<'_, Self>,
        ) -> Result<u64, sqlx::Error> {
            Ok(query.execute(conn).await?.rows_affected())
        }
        async fn execute_script(
            conn: &mut Self::Connection,
            script: &'static str,
        ) -> Result<(), sqlx::Error> {
            // `raw_sql(…)`'s future is not `Send` for every connection lifetime; a `&str` without
            // binds runs the same way (simple query: several statements at once).
            sqlx::Executor::execute(conn, script).await.map(|_| ())
        }
        async fn fetch_all(
            conn: &mut Self::Connection,
            query: $crate::durable::outbox::dialect::Query<'_, Self>,
        ) -> Result<Vec<Self::Row>, sqlx::Error> {
            query.fetch_all(conn).await
        }
        async fn fetch_optional(
            conn: &mut Self::Connection,
            query: $crate::durable::outbox::dialect::Query<'_, Self>,
        ) -> Result<Option<Self::Row>, sqlx::Error> {
            query.fetch_optional(conn).await
        }
        $($items)*
        }
    };
}
pub(crate) use impl_dialect;

/// Reads a claimed row from a row with the columns id, message_id, message_type, key, payload,
/// headers, occurred_at, fail_count, handlers_done, only_handlers (text and integers).
pub(crate) fn claimed_row<D: sealed::SqlDialect>(row: &D::Row) -> Result<ClaimedRow, OutboxError> {
    let text = |column: &str| -> Result<String, OutboxError> {
        D::get_text(row, column)?
            .ok_or_else(|| OutboxError::Corrupt(format!("outbox column `{column}` is NULL")))
    };
    let only_handlers = D::get_text(row, "only_handlers")?;
    Ok(ClaimedRow {
        id: D::get_int(row, "id")?,
        message_id: text("message_id")?,
        message_type: text("message_type")?,
        key: D::get_text(row, "key")?,
        payload: text("payload")?,
        headers: text("headers")?,
        occurred_at: D::get_time(row, "occurred_at")?
            .ok_or_else(|| OutboxError::Corrupt("outbox column `occurred_at` is NULL".into()))?,
        fail_count: i32::try_from(D::get_int(row, "fail_count")?).unwrap_or(i32::MAX),
        handlers_done: super::row::parse_handlers(D::get_text(row, "handlers_done")?.as_deref())?,
        only_handlers: only_handlers
            .map(|text| super::row::parse_handlers(Some(&text)))
            .transpose()?,
    })
}
