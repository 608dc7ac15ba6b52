//! The source: reads a logical replication slot through SQL, delivers each committed change to
//! Herald's handlers in commit order, stores its position, and only then confirms the slot.

use crate::assemble::{Assembler, Step};
use crate::change::{change_id, Change, CHANGE, LSN_HEADER, SEQ_HEADER, SLOT_HEADER, TABLE_HEADER};
use crate::error::CdcError;
use crate::lag::{self, application_name, SlotLag};
use crate::lsn::Lsn;
use crate::pgoutput;
use crate::position::{self, SOURCE_CONSUMER};
use futures_util::TryStreamExt;
use herald_core::{
    Envelope, HandlerProgress, Herald, Message, OnFailure, Settlement, StoredMessage, ROUTE_PREFIX,
};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, PgPool, Row};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reads the peek. `pgoutput` protocol 1 (text values, whole transactions, no streaming) over the
/// publication; at most `$3` rows, ending at a transaction's end, and only WAL before `$2`.
const PEEK: &str = "SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::pg_lsn, $3, \
     'proto_version', '1', 'publication_names', quote_ident($4))";

/// Confirms the slot up to `$2` (never backwards: PostgreSQL refuses that).
const ADVANCE: &str =
    "SELECT pg_replication_slot_advance($1, $2::pg_lsn) FROM pg_replication_slots \
     WHERE slot_name = $1 AND confirmed_flush_lsn < $2::pg_lsn";

/// The first wait before connecting again.
const FIRST_RECONNECT_WAIT: Duration = Duration::from_millis(100);

/// Delivers the committed changes of a PostgreSQL publication to Herald's handlers of
/// [`Change`], in commit order, from a logical replication slot. Build it with
/// [`CdcSource::builder`], then [`run_until`](Self::run_until) a shutdown signal (or
/// [`catch_up`](Self::catch_up) once).
///
/// Each change goes through [`Herald::ingest`] (the pools, retries, dead letters and ledger of any
/// handler or route) and is finished (every handler succeeded or failed for good) before the next
/// one starts. Then the source stores its position (`herald_cdc_position`), and after a read's
/// last transaction it confirms the slot (`pg_replication_slot_advance`). A crash anywhere repeats
/// at most the change in flight; handlers that store their position with their effects
/// ([`CdcPosition`](crate::CdcPosition)) recognise it.
#[derive(Debug, Clone)]
pub struct CdcSource {
    inner: Arc<Inner>,
}

struct Inner {
    herald: Herald,
    pool: PgPool,
    connect: PgConnectOptions,
    slot: String,
    publication: String,
    batch_size: u32,
    idle_wait: Duration,
    max_reconnect_wait: Duration,
    lag_every: Duration,
    stats: Counters,
}

impl std::fmt::Debug for Inner {
    // The connect options hold the password: left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdcSource")
            .field("slot", &self.slot)
            .field("publication", &self.publication)
            .field("batch_size", &self.batch_size)
            .field("idle_wait", &self.idle_wait)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Counters {
    changes: AtomicU64,
    replayed: AtomicU64,
    transactions: AtomicU64,
    failed: AtomicU64,
    reconnects: AtomicU64,
}

/// What a source has done since it was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SourceStats {
    /// Changes delivered (every handler finished them).
    pub changes: u64,
    /// Changes read again after a restart and skipped (at or before the stored position).
    pub replayed: u64,
    /// Transactions read to their commit.
    pub transactions: u64,
    /// Changes a handler failed for good (dead-lettered, logged or ignored as it says).
    pub failed: u64,
    /// Sessions lost and opened again.
    pub reconnects: u64,
}

/// What one read of the slot (or a [`catch_up`](CdcSource::catch_up)) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PollReport {
    /// Messages read from the slot (begin, relation, change, commit, ...).
    pub messages: u64,
    /// Changes delivered.
    pub changes: u64,
    /// Changes skipped as already processed.
    pub replayed: u64,
    /// Transactions read to their commit.
    pub transactions: u64,
    /// The read stopped at its batch size: more may be waiting.
    pub truncated: bool,
    /// Where the slot was confirmed to, when it moved.
    pub confirmed: Option<Lsn>,
}

/// Builds a [`CdcSource`]. See [`CdcSource::builder`].
#[derive(Debug)]
#[must_use]
pub struct CdcSourceBuilder {
    herald: Herald,
    pool: PgPool,
    slot: Option<String>,
    publication: Option<String>,
    tables: Vec<String>,
    create_slot: bool,
    batch_size: u32,
    idle_wait: Duration,
    max_reconnect_wait: Duration,
    lag_every: Duration,
}

/// One connection holding the slot's lock, with the relations announced on it.
struct Session {
    conn: PgConnection,
    assembler: Assembler,
    position: Option<(Lsn, u32)>,
}

impl CdcSource {
    /// A source delivering to `herald`, reading through connections like `pool`'s (the pool
    /// itself stores positions). Name the slot and the publication, then [`build`]:
    ///
    /// ```no_run
    /// # async fn run(herald: herald_core::Herald, pool: sqlx::PgPool) -> Result<(), herald_cdc::CdcError> {
    /// let source = herald_cdc::CdcSource::builder(&herald, pool)
    ///     .slot("orders_cdc")
    ///     .publication("orders_pub")
    ///     .tables(["public.orders"]) // create the publication (or add the table) if needed
    ///     .build()
    ///     .await?;
    /// source.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// [`build`]: CdcSourceBuilder::build
    pub fn builder(herald: &Herald, pool: PgPool) -> CdcSourceBuilder {
        CdcSourceBuilder {
            herald: herald.clone(),
            pool,
            slot: None,
            publication: None,
            tables: Vec::new(),
            create_slot: true,
            batch_size: 1000,
            idle_wait: Duration::from_millis(500),
            max_reconnect_wait: Duration::from_secs(10),
            lag_every: Duration::from_secs(15),
        }
    }

    /// The slot's name.
    pub fn slot(&self) -> &str {
        &self.inner.slot
    }

    /// The publication's name.
    pub fn publication(&self) -> &str {
        &self.inner.publication
    }

    /// What the source has done so far.
    pub fn stats(&self) -> SourceStats {
        let s = &self.inner.stats;
        SourceStats {
            changes: s.changes.load(Ordering::Relaxed),
            replayed: s.replayed.load(Ordering::Relaxed),
            transactions: s.transactions.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
        }
    }

    /// The source's stored position: the last change every handler finished.
    ///
    /// # Errors
    /// A database error.
    pub async fn position(&self) -> Result<Option<(Lsn, u32)>, CdcError> {
        Ok(position::load(&self.inner.pool, &self.inner.slot, SOURCE_CONSUMER).await?)
    }

    /// The slot's lag now.
    ///
    /// # Errors
    /// [`CdcError::NoSlot`] when the slot was dropped; a database error.
    pub async fn lag(&self) -> Result<SlotLag, CdcError> {
        lag::slot_lag(&self.inner.pool, &self.inner.slot).await
    }

    /// Runs the source until `stop` resolves: reads the slot, delivers, confirms, and waits
    /// `idle_wait` when nothing is left. A lost connection (a terminated backend, a restarting
    /// server, a network failure) is logged and counted; the source connects again, with a
    /// growing wait, and resumes from its stored position. Another session holding the slot makes
    /// this one wait (a standby that takes over when the other goes away).
    ///
    /// `stop` may cut a change short: its handlers may have run, and it is delivered again at the
    /// next start (handlers with [`CdcPosition`](crate::CdcPosition) recognise it).
    ///
    /// # Errors
    /// A problem a person must fix (the slot or publication was dropped, the slot lost its WAL, a
    /// message cannot be decoded): the message says what to do.
    pub async fn run_until(&self, stop: impl Future<Output = ()>) -> Result<(), CdcError> {
        tokio::select! {
            biased;
            () = stop => Ok(()),
            result = self.run() => match result {
                Ok(never) => match never {},
                Err(error) => Err(error),
            },
        }
    }

    async fn run(&self) -> Result<Infallible, CdcError> {
        let inner = &self.inner;
        let mut wait = FIRST_RECONNECT_WAIT;
        loop {
            let Err(error) = self.run_session(&mut wait).await;
            if !error.is_transient() {
                tracing::error!(slot = %inner.slot, %error, "CDC source stopped");
                return Err(error);
            }
            if let CdcError::SlotBusy { .. } = error {
                tracing::info!(slot = %inner.slot, %error, "waiting for the slot");
            } else {
                inner.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("herald_cdc_reconnects_total", "slot" => inner.slot.clone())
                    .increment(1);
                tracing::warn!(slot = %inner.slot, %error, retry_in = ?wait, "CDC session lost; connecting again, resuming from the stored position");
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(inner.max_reconnect_wait);
        }
    }

    async fn run_session(&self, wait: &mut Duration) -> Result<Infallible, CdcError> {
        let inner = &self.inner;
        let mut session = self.open().await?;
        *wait = FIRST_RECONNECT_WAIT;
        let mut sampled: Option<Instant> = None;
        loop {
            let report = self.poll(&mut session).await?;
            if sampled.is_none_or(|at| at.elapsed() >= inner.lag_every) {
                sampled = Some(Instant::now());
                match self.lag().await {
                    Ok(reading) => {
                        if reading.wal_status.as_deref() == Some("lost") {
                            return Err(CdcError::SlotLost {
                                slot: inner.slot.clone(),
                            });
                        }
                        lag::record_metrics(&[reading]);
                    }
                    Err(error) if error.is_transient() => return Err(error),
                    Err(error) => {
                        tracing::warn!(slot = %inner.slot, %error, "slot lag could not be read")
                    }
                }
            }
            if !report.truncated {
                tokio::time::sleep(inner.idle_wait).await;
            }
        }
    }

    /// Delivers everything committed so far, then returns (one session: the slot's lock is taken
    /// and released). For jobs that run from time to time, and for tests.
    ///
    /// # Errors
    /// Any error, transient or not (nothing is retried here); the next call resumes from the
    /// stored position.
    pub async fn catch_up(&self) -> Result<PollReport, CdcError> {
        let mut session = self.open().await?;
        let mut total = PollReport::default();
        loop {
            let report = self.poll(&mut session).await?;
            total.messages += report.messages;
            total.changes += report.changes;
            total.replayed += report.replayed;
            total.transactions += report.transactions;
            total.confirmed = report.confirmed.or(total.confirmed);
            if !report.truncated {
                break;
            }
        }
        // Closing the session releases the slot's lock.
        let _ = session.conn.close().await;
        Ok(total)
    }

    /// Connects, takes the slot's lock, and reads the stored position.
    async fn open(&self) -> Result<Session, CdcError> {
        let inner = &self.inner;
        let mut conn = PgConnection::connect_with(&inner.connect).await?;
        // A read delivers while PostgreSQL sends its rows: it may take as long as the handlers.
        sqlx::query("SET statement_timeout = 0")
            .execute(&mut conn)
            .await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('herald.cdc'), hashtext($1))")
                .bind(&inner.slot)
                .fetch_one(&mut conn)
                .await?;
        if !locked {
            let reading = lag::slot_lag(&inner.pool, &inner.slot).await.ok();
            let _ = conn.close().await;
            return Err(CdcError::SlotBusy {
                slot: inner.slot.clone(),
                pid: reading.and_then(|r| r.consumer_pid),
            });
        }
        let position = position::load(&inner.pool, &inner.slot, SOURCE_CONSUMER).await?;
        match position {
            Some((lsn, seq)) => {
                tracing::info!(slot = %inner.slot, commit_lsn = %lsn, seq, "CDC session opened; resuming after the stored position")
            }
            None => {
                tracing::info!(slot = %inner.slot, "CDC session opened; no stored position yet")
            }
        }
        Ok(Session {
            conn,
            assembler: Assembler::new(&inner.slot),
            position,
        })
    }

    /// One read: every transaction committed before now (at most `batch_size` rows, ending at a
    /// transaction's end), each change delivered, then the slot confirmed.
    async fn poll(&self, session: &mut Session) -> Result<PollReport, CdcError> {
        let inner = &self.inner;
        let Session {
            conn,
            assembler,
            position,
        } = session;
        let upto: String = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
            .fetch_one(&mut *conn)
            .await?;
        let upto: Lsn = upto
            .parse()
            .map_err(|e| CdcError::Database(sqlx::Error::Decode(Box::new(e))))?;
        let mut report = PollReport::default();
        let mut last_end: Option<Lsn> = None;
        {
            let mut rows = sqlx::query(PEEK)
                .bind(&inner.slot)
                .bind(upto.to_string())
                .bind(i32::try_from(inner.batch_size).unwrap_or(i32::MAX))
                .bind(&inner.publication)
                .fetch(&mut *conn);
            while let Some(row) = rows.try_next().await.map_err(peek_error)? {
                report.messages += 1;
                let data: &[u8] = row.try_get(0)?;
                let message = pgoutput::decode(data)?;
                match assembler.push(message).map_err(CdcError::Stream)? {
                    Step::Nothing => {}
                    Step::Changes(changes) => {
                        for change in changes {
                            self.handle(change, position, &mut report).await?;
                        }
                    }
                    Step::Commit { end_lsn } => {
                        last_end = Some(end_lsn);
                        report.transactions += 1;
                        inner.stats.transactions.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("herald_cdc_transactions_total", "slot" => inner.slot.clone())
                            .increment(1);
                    }
                }
            }
        }
        // PostgreSQL stops a limited read only at a transaction's end, so fewer rows than the limit
        // means every transaction that committed before `upto` was read: confirm up to there (the
        // slot then moves past WAL of other tables too). A full read confirms its last
        // transaction only.
        report.truncated = report.messages >= u64::from(inner.batch_size);
        let confirm = if report.truncated {
            last_end
        } else {
            Some(last_end.map_or(upto, |end| end.max(upto)))
        };
        if let Some(lsn) = confirm {
            let moved = sqlx::query(ADVANCE)
                .bind(&inner.slot)
                .bind(lsn.to_string())
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if moved > 0 {
                report.confirmed = Some(lsn);
            }
        }
        Ok(report)
    }

    /// Delivers one change unless it is at or before the stored position, then stores it.
    async fn handle(
        &self,
        change: Change,
        position: &mut Option<(Lsn, u32)>,
        report: &mut PollReport,
    ) -> Result<(), CdcError> {
        let inner = &self.inner;
        let at = change.position();
        if position.is_some_and(|stored| at <= stored) {
            report.replayed += 1;
            inner.stats.replayed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("herald_cdc_replayed_total", "slot" => inner.slot.clone())
                .increment(1);
            return Ok(());
        }
        let op = change.op;
        let failed = self.deliver(&change).await?;
        if !failed.is_empty() {
            inner.stats.failed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("herald_cdc_dead_lettered_total", "slot" => inner.slot.clone())
                .increment(1);
            position::store_skipped(&inner.pool, &inner.slot, &failed, at).await?;
        }
        position::store_source(&inner.pool, &inner.slot, at).await?;
        *position = Some(at);
        report.changes += 1;
        inner.stats.changes.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("herald_cdc_changes_total", "slot" => inner.slot.clone(), "op" => op.as_str())
            .increment(1);
        Ok(())
    }

    /// Runs a change through `Herald::ingest` until every handler finished it. Returns the
    /// handlers that dead-lettered it (the ones a re-drive may bring back).
    async fn deliver(&self, change: &Change) -> Result<Vec<String>, CdcError> {
        let inner = &self.inner;
        let mut envelope = Envelope::new(CHANGE);
        envelope.id = change_id(&inner.slot, change.commit_lsn, change.seq);
        envelope.occurred_at = change.commit_time;
        envelope.key = Message::key(change);
        let extra = &mut envelope.headers.extra;
        extra.insert(SLOT_HEADER.to_owned(), inner.slot.clone());
        extra.insert(LSN_HEADER.to_owned(), change.commit_lsn.to_string());
        extra.insert(SEQ_HEADER.to_owned(), change.seq.to_string());
        extra.insert(TABLE_HEADER.to_owned(), change.qualified_table());
        let payload = serde_json::to_string(change)
            .map_err(|e| CdcError::Stream(format!("a change could not be encoded: {e}")))?;
        let mut message = StoredMessage::new(&envelope, payload);
        let mut pause = Duration::from_millis(10);
        let mut refused_since: Option<Instant> = None;
        loop {
            match inner.herald.ingest(&message).await {
                Settlement::Done { .. } => return Ok(Vec::new()),
                Settlement::FailedForGood {
                    progress, error, ..
                } => {
                    tracing::warn!(slot = %inner.slot, change = %envelope.id, commit_lsn = %change.commit_lsn, seq = change.seq, error = error.as_deref().unwrap_or(""), "a handler failed this change for good; moving on");
                    return Ok(progress
                        .iter()
                        .filter(|(_, p)| *p == HandlerProgress::FailedForGood)
                        .map(|(handler, _)| handler)
                        .filter(|handler| !handler.starts_with(ROUTE_PREFIX))
                        .filter(|handler| {
                            inner
                                .herald
                                .handler_options(handler)
                                .is_some_and(|options| options.on_failure == OnFailure::DeadLetter)
                        })
                        .map(str::to_owned)
                        .collect());
                }
                Settlement::Retry {
                    progress,
                    delay,
                    error,
                    replacement_id,
                } => {
                    tracing::debug!(slot = %inner.slot, change = %envelope.id, %error, ?delay, "retrying a change");
                    tokio::time::sleep(delay).await;
                    message.attempt += 1;
                    message.progress = progress;
                    if let Some(id) = replacement_id {
                        message.message_id = id.to_string();
                    }
                }
                _ => {
                    // Released: nothing ran (a pool full, or Herald shutting down). Changes keep
                    // their order, so this one is offered again and the slot waits.
                    let since = *refused_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(10) {
                        tracing::warn!(slot = %inner.slot, change = %envelope.id, waiting = ?since.elapsed(), "Herald keeps refusing a change (pools full or shutting down); the slot waits");
                        refused_since = Some(Instant::now());
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// A read error, with the fix when it is a missing publication or slot.
fn peek_error(error: sqlx::Error) -> CdcError {
    if let sqlx::Error::Database(db) = &error {
        let message = db.message();
        if db.code().as_deref() == Some("42704") {
            if let Some(name) = quoted(message).filter(|_| message.starts_with("publication")) {
                return CdcError::NoPublication { publication: name };
            }
            if let Some(name) = quoted(message).filter(|_| message.starts_with("replication slot"))
            {
                return CdcError::NoSlot { slot: name };
            }
        }
    }
    CdcError::Database(error)
}

/// The first `"quoted"` name in a server message.
fn quoted(message: &str) -> Option<String> {
    let start = message.find('"')? + 1;
    let len = message[start..].find('"')?;
    Some(message[start..start + len].to_owned())
}

impl CdcSourceBuilder {
    /// The logical replication slot to read (required): lower-case letters, digits and `_`, at
    /// most 63. One source per slot.
    pub fn slot(mut self, name: impl Into<String>) -> Self {
        self.slot = Some(name.into());
        self
    }

    /// The publication naming the tables whose changes are delivered (required).
    pub fn publication(mut self, name: impl Into<String>) -> Self {
        self.publication = Some(name.into());
        self
    }

    /// Tables (`schema.table`, or `table` in `public`) the publication must publish: `build`
    /// creates the publication with them if it is missing, and adds those it lacks. Without
    /// tables, the publication must exist.
    pub fn tables<I, S>(mut self, tables: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tables.extend(tables.into_iter().map(Into::into));
        self
    }

    /// Whether `build` creates the slot when it is missing (default `true`). A new slot starts
    /// at the current end of the WAL: changes committed before are not delivered.
    pub fn create_slot(mut self, create: bool) -> Self {
        self.create_slot = create;
        self
    }

    /// The most messages read at once (default 1000). PostgreSQL ends a read at a transaction's
    /// end, so a large transaction is read whole; the rows are streamed, not held.
    pub fn batch_size(mut self, messages: u32) -> Self {
        self.batch_size = messages;
        self
    }

    /// How long the source waits when the slot has nothing new (default 500 ms): the longest
    /// delay between a commit and its delivery, when idle.
    pub fn idle_wait(mut self, wait: Duration) -> Self {
        self.idle_wait = wait;
        self
    }

    /// The longest wait between two connection attempts (default 10 s; the first is 100 ms).
    pub fn max_reconnect_wait(mut self, wait: Duration) -> Self {
        self.max_reconnect_wait = wait;
        self
    }

    /// How often a running source samples its slot's lag into the metrics (default 15 s).
    pub fn lag_every(mut self, every: Duration) -> Self {
        self.lag_every = every;
        self
    }

    /// Checks the settings and the server, creates the position tables, the publication (when
    /// [`tables`](Self::tables) are given) and the slot (unless told not to), in this order: a
    /// slot must not be older than its publication.
    ///
    /// # Errors
    /// [`CdcError::Config`] listing every bad setting; [`CdcError::NoHandler`] when no handler or
    /// route takes [`Change`]; [`CdcError::WalLevel`], [`CdcError::ServerTooOld`],
    /// [`CdcError::Encoding`], [`CdcError::NoPublication`], [`CdcError::NoSlot`],
    /// [`CdcError::WrongSlot`], [`CdcError::SlotLost`]; a database error.
    pub async fn build(self) -> Result<CdcSource, CdcError> {
        let mut problems = Vec::new();
        let slot = self.slot.clone().unwrap_or_default();
        let publication = self.publication.clone().unwrap_or_default();
        if self.slot.is_none() {
            problems.push("no slot: name one with `.slot(\"...\")`".to_owned());
        } else if slot.is_empty()
            || slot.len() > 63
            || !slot
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            problems.push(format!(
                "slot name `{slot}` is not valid: PostgreSQL allows lower-case letters, digits and `_`, at most 63"
            ));
        }
        if self.publication.is_none() {
            problems.push("no publication: name one with `.publication(\"...\")`".to_owned());
        } else if publication.is_empty() || publication.len() > 63 {
            problems.push(format!(
                "publication name `{publication}` is not valid: 1 to 63 bytes"
            ));
        }
        if self.batch_size == 0 {
            problems.push("batch_size is 0: at least one message must be read at once".to_owned());
        }
        let tables: Vec<(String, String)> = self
            .tables
            .iter()
            .filter_map(|table| match split_table(table) {
                Some(parts) => Some(parts),
                None => {
                    problems.push(format!(
                        "table `{table}` is not valid: write `schema.table` or `table`"
                    ));
                    None
                }
            })
            .collect();
        if !problems.is_empty() {
            return Err(CdcError::Config(problems));
        }
        if self.herald.handler_names(CHANGE).is_empty() {
            return Err(CdcError::NoHandler);
        }
        let pool = &self.pool;
        check_server(pool).await?;
        position::migrate(pool).await?;
        ensure_publication(pool, &publication, &tables).await?;
        warn_replica_identity(pool, &publication).await?;
        ensure_slot(pool, &slot, self.create_slot).await?;
        let connect = (*pool.connect_options())
            .clone()
            .application_name(&application_name(&slot));
        Ok(CdcSource {
            inner: Arc::new(Inner {
                herald: self.herald,
                pool: self.pool,
                connect,
                slot,
                publication,
                batch_size: self.batch_size,
                idle_wait: self.idle_wait,
                max_reconnect_wait: self.max_reconnect_wait,
                lag_every: self.lag_every,
                stats: Counters::default(),
            }),
        })
    }
}

fn split_table(table: &str) -> Option<(String, String)> {
    let (schema, name) = match table.split_once('.') {
        Some((schema, name)) => (schema, name),
        None => ("public", table),
    };
    (!schema.is_empty() && !name.is_empty() && !name.contains('.'))
        .then(|| (schema.to_owned(), name.to_owned()))
}

/// An identifier quoted for SQL text (DDL takes no parameters).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn check_server(pool: &PgPool) -> Result<(), CdcError> {
    let (wal_level, version_num, version, encoding): (String, i32, String, String) =
        sqlx::query_as(
            "SELECT current_setting('wal_level'), current_setting('server_version_num')::int, \
             current_setting('server_version'), current_setting('server_encoding')",
        )
        .fetch_one(pool)
        .await?;
    if version_num < 130_000 {
        return Err(CdcError::ServerTooOld { found: version });
    }
    if wal_level != "logical" {
        return Err(CdcError::WalLevel { found: wal_level });
    }
    if encoding != "UTF8" {
        return Err(CdcError::Encoding { found: encoding });
    }
    Ok(())
}

async fn ensure_publication(
    pool: &PgPool,
    publication: &str,
    tables: &[(String, String)],
) -> Result<(), CdcError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('herald.cdc.publication'), hashtext($1))")
        .bind(publication)
        .execute(&mut *tx)
        .await?;
    let mut missing = Vec::new();
    for (schema, table) in tables {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2)",
        )
        .bind(schema)
        .bind(table)
        .fetch_one(&mut *tx)
        .await?;
        if !exists {
            missing.push(format!(
                "table `{schema}.{table}` does not exist: create it before the source (names are case-sensitive)"
            ));
        }
    }
    if !missing.is_empty() {
        return Err(CdcError::Config(missing));
    }
    let all_tables: Option<bool> =
        sqlx::query_scalar("SELECT puballtables FROM pg_publication WHERE pubname = $1")
            .bind(publication)
            .fetch_optional(&mut *tx)
            .await?;
    let list = |tables: &[&(String, String)]| {
        tables
            .iter()
            .map(|(schema, table)| format!("{}.{}", ident(schema), ident(table)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match all_tables {
        None if tables.is_empty() => {
            return Err(CdcError::NoPublication {
                publication: publication.to_owned(),
            })
        }
        None => {
            let all: Vec<&(String, String)> = tables.iter().collect();
            let sql = format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                ident(publication),
                list(&all)
            );
            sqlx::query(&sql).execute(&mut *tx).await?;
            tracing::info!(%publication, tables = %list(&all), "publication created");
        }
        Some(true) => {}
        Some(false) => {
            let mut lacking = Vec::new();
            for entry in tables {
                let published: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_publication_tables \
                      WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)",
                )
                .bind(publication)
                .bind(&entry.0)
                .bind(&entry.1)
                .fetch_one(&mut *tx)
                .await?;
                if !published {
                    lacking.push(entry);
                }
            }
            if !lacking.is_empty() {
                let sql = format!(
                    "ALTER PUBLICATION {} ADD TABLE {}",
                    ident(publication),
                    list(&lacking)
                );
                sqlx::query(&sql).execute(&mut *tx).await?;
                tracing::info!(%publication, tables = %list(&lacking), "tables added to the publication");
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// PostgreSQL refuses UPDATE and DELETE on a published table with no replica identity: say so at
/// start-up, before the application finds out.
async fn warn_replica_identity(pool: &PgPool, publication: &str) -> Result<(), CdcError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname)
           FROM pg_publication_tables pt
           JOIN pg_namespace n ON n.nspname = pt.schemaname
           JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
          WHERE pt.pubname = $1
            AND (c.relreplident = 'n'
                 OR (c.relreplident = 'd' AND NOT EXISTS
                       (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))",
    )
    .bind(publication)
    .fetch_all(pool)
    .await?;
    for table in tables {
        tracing::warn!(%publication, %table, "table {table} has no replica identity (no primary key, or REPLICA IDENTITY NOTHING): PostgreSQL refuses its UPDATEs and DELETEs while publication {publication} publishes them. Add a primary key, or ALTER TABLE {table} REPLICA IDENTITY FULL");
    }
    Ok(())
}

async fn ensure_slot(pool: &PgPool, slot: &str, create: bool) -> Result<(), CdcError> {
    type SlotRow = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
    );
    let read = || {
        sqlx::query_as::<_, SlotRow>(
            "SELECT slot_type::text, plugin::text, database::text, wal_status::text, current_database()::text \
               FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(slot)
        .fetch_optional(pool)
    };
    let mut row = read().await?;
    if row.is_none() {
        if !create {
            return Err(CdcError::NoSlot {
                slot: slot.to_owned(),
            });
        }
        // Waits for the transactions running now to end (a consistent starting point).
        match sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
            .bind(slot)
            .execute(pool)
            .await
        {
            Ok(_) => tracing::info!(%slot, "replication slot created"),
            // Another process created it at the same time.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42710") => {}
            Err(error) => return Err(error.into()),
        }
        row = read().await?;
    }
    let Some((slot_type, plugin, database, wal_status, current)) = row else {
        return Err(CdcError::NoSlot {
            slot: slot.to_owned(),
        });
    };
    let wrong = |problem: String| {
        Err(CdcError::WrongSlot {
            slot: slot.to_owned(),
            problem,
        })
    };
    if slot_type != "logical" {
        return wrong(format!("is a {slot_type} slot, not a logical one"));
    }
    if plugin.as_deref() != Some("pgoutput") {
        return wrong(format!(
            "decodes with `{}`, not `pgoutput`",
            plugin.unwrap_or_default()
        ));
    }
    if database.as_deref() != Some(current.as_str()) {
        return wrong(format!(
            "belongs to database `{}`, and the source is connected to `{current}`",
            database.unwrap_or_default()
        ));
    }
    if wal_status.as_deref() == Some("lost") {
        return Err(CdcError::SlotLost {
            slot: slot.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_identifiers() {
        assert_eq!(
            split_table("sales.orders"),
            Some(("sales".into(), "orders".into()))
        );
        assert_eq!(
            split_table("orders"),
            Some(("public".into(), "orders".into()))
        );
        assert_eq!(split_table("a.b.c"), None);
        assert_eq!(split_table(".x"), None);
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn quoted_names_come_out_of_server_messages() {
        assert_eq!(
            quoted("publication \"orders_pub\" does not exist").as_deref(),
            Some("orders_pub")
        );
        assert_eq!(quoted("no quotes"), None);
    }
}
