//! The relay (the seeds' forwarder): leases due messages from a [`MessageSource`] in batches,
//! delivers them through [`Herald::ingest`], settles the batch, and has the source delete finished
//! messages after the retention period. The SQL outboxes are sources (`source.rs`); so is any
//! transport that implements the trait.

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
use super::row::Backend;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
use super::source::BackendSource;
use crate::engine::runtime::Herald;
use crate::ports::{MessageSource, Receipt, Received, Settlement, SourceError};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Configures a [`Relay`]; made by `SqliteOutbox::relay` / `PgOutbox::relay`, or for any
/// [`MessageSource`] by [`Relay::builder`].
#[must_use = "a relay builder does nothing until `start()`"]
pub struct RelayBuilder {
    source: Arc<dyn MessageSource>,
    herald: Herald,
    owner: String,
    batch_size: usize,
    lease: Duration,
    poll_interval: Duration,
    retention: Option<Duration>,
    retention_every: Duration,
    retention_batch: usize,
}

impl fmt::Debug for RelayBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayBuilder")
            .field("source", &self.source)
            .field("owner", &self.owner)
            .field("batch_size", &self.batch_size)
            .field("lease", &self.lease)
            .field("poll_interval", &self.poll_interval)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl RelayBuilder {
    #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
    pub(crate) fn new(backend: Arc<dyn Backend>, herald: &Herald) -> Self {
        Self::for_source(Arc::new(BackendSource::new(backend)), herald)
    }

    /// A relay that delivers `source`'s messages through `herald`'s handlers (the same as
    /// [`Relay::builder`]).
    pub fn for_source(source: Arc<dyn MessageSource>, herald: &Herald) -> Self {
        RelayBuilder {
            source,
            herald: herald.clone(),
            owner: format!("relay-{}-{}", std::process::id(), uuid::Uuid::now_v7()),
            batch_size: 100,
            lease: super::DEFAULT_LEASE,
            poll_interval: Duration::from_millis(100),
            retention: None,
            retention_every: Duration::from_secs(60),
            retention_batch: 1_000,
        }
    }

    /// The source this relay will drive.
    pub fn source(&self) -> &Arc<dyn MessageSource> {
        &self.source
    }

    /// Messages (rows) leased and delivered together (default 100). Each one's handlers run
    /// concurrently.
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// How long a lease lasts (default 30 s). While a row's handlers run, the relay renews its
    /// lease every third of this, so a handler may take longer than the lease. A relay that dies
    /// holding rows (kill -9) stops renewing and loses them to another relay once the lease
    /// expires: the lease is how long such rows wait before they are delivered again. A relay
    /// stalled for longer than the lease (no renewal got through) loses its rows too; it then
    /// drops their outcomes (see [`RelayStats::lost`]).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long an idle relay waits before it looks again (default 100 ms). On PostgreSQL a
    /// `NOTIFY` from a committed publish wakes it sooner.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The name written into `lease_owner` (default: `relay-<pid>-<uuid>`). Must be unique per relay.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// Keeps finished rows for `period` (they are the event store), then deletes them in batches.
    /// Default: kept forever.
    pub fn retention(mut self, period: Duration) -> Self {
        self.retention = Some(period);
        self
    }

    /// How often the retention sweep runs (default every 60 s) and how many rows one `DELETE`
    /// removes (default 1,000).
    pub fn retention_sweep(mut self, every: Duration, batch: usize) -> Self {
        self.retention_every = every;
        self.retention_batch = batch.max(1);
        self
    }

    /// Starts the relay on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(self) -> Relay {
        let stop = CancellationToken::new();
        let stats = Arc::new(RelayCounters::default());
        let owner = self.owner.clone();
        let task = tokio::spawn(run(self, stop.clone(), stats.clone()));
        Relay {
            owner,
            stop,
            stats,
            task,
        }
    }
}

/// A running relay. [`stop`](Self::stop) it to finish the batch in hand and end; dropping it leaves
/// it running in the background until the runtime ends.
#[derive(Debug)]
pub struct Relay {
    owner: String,
    stop: CancellationToken,
    stats: Arc<RelayCounters>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Configures a relay over any [`MessageSource`] (a transport's queue, an outbox); the SQL
    /// outboxes' `relay(&herald)` is this over their own source.
    ///
    /// ```no_run
    /// # async fn run(herald: herald_core::Herald, source: std::sync::Arc<dyn herald_core::ports::MessageSource>) {
    /// use herald_core::outbox::Relay;
    /// let relay = Relay::builder(source, &herald).batch_size(50).start();
    /// // ...
    /// let stats = relay.stop().await;
    /// # }
    /// ```
    pub fn builder(source: Arc<dyn MessageSource>, herald: &Herald) -> RelayBuilder {
        RelayBuilder::for_source(source, herald)
    }

    /// Its lease owner name.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// What it has done so far.
    pub fn stats(&self) -> RelayStats {
        self.stats.snapshot()
    }

    /// A handle that reads this relay's [`RelayStats`] from elsewhere (a metrics exporter, a
    /// health check) while the relay runs and after it stopped; cheap to clone.
    pub fn watch(&self) -> RelayWatch {
        RelayWatch {
            owner: self.owner.as_str().into(),
            stats: self.stats.clone(),
        }
    }

    /// Finishes the batch in hand, writes its outcome, and stops.
    pub async fn stop(self) -> RelayStats {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(%error, owner = %self.owner, "relay task ended abnormally");
        }
        self.stats.snapshot()
    }
}

/// Reads one relay's counters without owning the relay: made by [`Relay::watch`].
#[derive(Debug, Clone)]
pub struct RelayWatch {
    owner: Arc<str>,
    stats: Arc<RelayCounters>,
}

impl RelayWatch {
    /// The relay's lease owner name.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// What the relay has done so far (the same as [`Relay::stats`]).
    pub fn stats(&self) -> RelayStats {
        self.stats.snapshot()
    }
}

/// RelayCounters of one relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// Batches leased (non-empty).
    pub batches: u64,
    /// Rows finished with every handler succeeded.
    pub processed: u64,
    /// Rows finished with a handler failed for good (dead-lettered, logged or ignored).
    pub failed: u64,
    /// Rows rescheduled for another attempt.
    pub retried: u64,
    /// Rows given back without an attempt (pool rejected, shutting down).
    pub released: u64,
    /// Finished rows deleted by retention.
    pub deleted: u64,
    /// Database errors (the relay retries after its poll interval).
    pub errors: u64,
    /// Leases renewed while handlers ran (one per row per heartbeat, every third of the lease).
    pub renewed: u64,
    /// Rows whose lease this relay lost while their handlers ran (another relay took them over, or
    /// the row was changed by hand): their outcome was not written back and they were not tried
    /// again by this relay.
    pub lost: u64,
}

#[derive(Debug, Default)]
struct RelayCounters {
    batches: AtomicU64,
    processed: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    released: AtomicU64,
    deleted: AtomicU64,
    errors: AtomicU64,
    renewed: AtomicU64,
    lost: AtomicU64,
}

impl RelayCounters {
    fn snapshot(&self) -> RelayStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RelayStats {
            batches: get(&self.batches),
            processed: get(&self.processed),
            failed: get(&self.failed),
            retried: get(&self.retried),
            released: get(&self.released),
            deleted: get(&self.deleted),
            errors: get(&self.errors),
            renewed: get(&self.renewed),
            lost: get(&self.lost),
        }
    }
}

async fn run(config: RelayBuilder, stop: CancellationToken, stats: Arc<RelayCounters>) {
    let source = config.source.clone();
    let mut last_sweep = Instant::now();
    let mut writing: Option<JoinHandle<Result<(), SourceError>>> = None;
    // Where settlements do not overlap the next receive (SQLite), the last batch's outcomes wait
    // here and are written with the next lease, in one step (`MessageSource::settle_and_receive`).
    let mut unsettled: Option<Vec<(Receipt, Settlement)>> = None;
    tracing::debug!(owner = %config.owner, "relay started");
    while !stop.is_cancelled() {
        if let Some(period) = config.retention {
            if last_sweep.elapsed() >= config.retention_every {
                last_sweep = Instant::now();
                match source.sweep(period, config.retention_batch).await {
                    Ok(deleted) => {
                        stats.deleted.fetch_add(deleted, Ordering::Relaxed);
                    }
                    Err(error) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%error, "outbox retention sweep failed; trying again later");
                    }
                }
            }
        }
        let received = match unsettled.take() {
            Some(outcomes) => {
                let (settled, received) = source
                    .settle_and_receive(&config.owner, outcomes, config.batch_size, config.lease)
                    .await;
                if let Err(error) = settled {
                    write_back_failed(&error.to_string(), &stats, &config.owner);
                }
                received
            }
            None => {
                source
                    .receive(&config.owner, config.batch_size, config.lease)
                    .await
            }
        };
        let received = match received {
            Ok(received) => received,
            Err(error) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, owner = %config.owner, "outbox relay could not lease rows; retrying");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(config.poll_interval) => continue,
                }
            }
        };
        if received.is_empty() {
            tokio::select! {
                () = stop.cancelled() => break,
                () = source.wait(config.poll_interval) => continue,
            }
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        let span = batch_span(&config, received.len());
        let outcomes = deliver_batch(&config, received, &stats)
            .instrument(span)
            .await;
        for (_, settlement) in &outcomes {
            let counter = match settlement {
                Settlement::Done { .. } => &stats.processed,
                Settlement::FailedForGood { .. } => &stats.failed,
                Settlement::Retry { .. } => &stats.retried,
                Settlement::Release => &stats.released,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let released = !outcomes.is_empty()
            && outcomes
                .iter()
                .all(|(_, s)| matches!(s, Settlement::Release));
        if !source.overlaps_settle() && !released {
            // Written with the next lease, which follows at once (a released batch is written now:
            // the relay backs off below, and the rows must not stay leased meanwhile).
            unsettled = Some(outcomes);
            continue;
        }
        // The write-back runs while the next batch is leased and delivered (one at a time, in
        // order), where the source has concurrent writers. That is safe: until it commits, this
        // batch's messages are still pending and leased by this relay, so no receive takes them,
        // nor a later message of one of their keys.
        if let Some(previous) = writing.take() {
            finish_write_back(previous, &stats, &config.owner).await;
        }
        let write_back = tokio::spawn({
            let source = source.clone();
            let owner = config.owner.clone();
            async move { source.settle(&owner, outcomes).await }
        });
        if source.overlaps_settle() {
            writing = Some(write_back);
        } else {
            finish_write_back(write_back, &stats, &config.owner).await;
        }
        if released {
            // Every pool refused: back off instead of spinning.
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(config.poll_interval) => {}
            }
        }
    }
    if let Some(last) = writing.take() {
        finish_write_back(last, &stats, &config.owner).await;
    }
    if let Some(outcomes) = unsettled.take() {
        if let Err(error) = source.settle(&config.owner, outcomes).await {
            write_back_failed(&error.to_string(), &stats, &config.owner);
        }
    }
    tracing::debug!(owner = %config.owner, "relay stopped");
}

/// The span of one relay batch (OpenTelemetry messaging `receive`, kind consumer). Each message's
/// attempts inside it are children of the trace context the message carries, not of this span,
/// so the trace of a message runs from its publisher to its handlers.
fn batch_span(config: &RelayBuilder, count: usize) -> tracing::Span {
    // Without a subscriber that wants it, no span (not even `tracing`'s `log` fallback).
    if !tracing::span_enabled!(tracing::Level::INFO) {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "herald.relay.batch",
        otel.name = "receive",
        otel.kind = "consumer",
        messaging.system = "herald",
        messaging.operation.type = "receive",
        messaging.operation.name = "relay",
        messaging.consumer.group.name = %config.owner,
        messaging.batch.message_count = count,
    )
}

/// Delivers a leased batch, renewing the leases of the rows still running every third of the
/// lease (one statement for the batch), so a handler slower than the lease keeps its row. A row
/// whose renewal finds it no longer leased by this relay is lost: it is counted and logged, its
/// delivery is no longer awaited (a handler already running cannot be stopped, but its outcome is
/// dropped), and no outcome is returned for it, so nothing about it is written back and this relay
/// makes no further attempt. Returns the outcomes of the rows still held.
async fn deliver_batch(
    config: &RelayBuilder,
    received: Vec<Received>,
    stats: &RelayCounters,
) -> Vec<(Receipt, Settlement)> {
    let mut held: HashMap<Receipt, CancellationToken> = HashMap::with_capacity(received.len());
    let mut deliveries: FuturesUnordered<_> = received
        .into_iter()
        .map(|Received { receipt, message }| {
            let lost = CancellationToken::new();
            held.insert(receipt, lost.clone());
            let herald = &config.herald;
            async move {
                tokio::select! {
                    settlement = herald.ingest(&message) => (receipt, Some(settlement)),
                    () = lost.cancelled() => (receipt, None),
                }
            }
        })
        .collect();
    let mut outcomes = Vec::with_capacity(held.len());
    let every = renew_every(config.lease);
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            finished = deliveries.next() => match finished {
                Some((receipt, Some(settlement))) => {
                    held.remove(&receipt);
                    outcomes.push((receipt, settlement));
                }
                // Lost: counted when the renewal found out.
                Some((_, None)) => {}
                None => break,
            },
            _ = heartbeat.tick() => renew(config, &mut held, stats).await,
        }
    }
    outcomes
}

/// How often the leases of running rows are renewed: a third of the lease, so that one failed
/// renewal still leaves time for another before the lease runs out.
fn renew_every(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(10))
}

/// Renews the leases of the messages in `held`; cancels and forgets the ones that were lost.
async fn renew(
    config: &RelayBuilder,
    held: &mut HashMap<Receipt, CancellationToken>,
    stats: &RelayCounters,
) {
    if held.is_empty() {
        return;
    }
    let ids: Vec<Receipt> = held.keys().copied().collect();
    let renewed = match config.source.keep(&config.owner, &ids, config.lease).await {
        Ok(renewed) => renewed,
        Err(error) => {
            // Tried again at the next heartbeat; the lease lasts three of them.
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, owner = %config.owner, "outbox relay could not renew its leases; trying again");
            return;
        }
    };
    stats
        .renewed
        .fetch_add(renewed.len() as u64, Ordering::Relaxed);
    let renewed: HashSet<Receipt> = renewed.into_iter().collect();
    for id in ids.into_iter().filter(|id| !renewed.contains(id)) {
        if let Some(lost) = held.remove(&id) {
            lost.cancel();
            stats.lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                receipt = %id,
                owner = %config.owner,
                "outbox relay lost its lease on a row while its handlers ran (another relay took it over); \
                 its outcome will not be written and this relay will not try it again"
            );
        }
    }
}

/// Waits for a batch's write-back and counts its failure.
async fn finish_write_back(
    write_back: JoinHandle<Result<(), SourceError>>,
    stats: &RelayCounters,
    owner: &str,
) {
    let error = match write_back.await {
        Ok(Ok(())) => return,
        Ok(Err(error)) => error.to_string(),
        Err(error) => error.to_string(),
    };
    write_back_failed(&error, stats, owner);
}

/// Counts and logs a batch's failed write-back.
fn write_back_failed(error: &str, stats: &RelayCounters, owner: &str) {
    stats.errors.fetch_add(1, Ordering::Relaxed);
    // The leases expire and another attempt delivers these rows again (at least once).
    tracing::warn!(%error, %owner, "outbox relay could not record a batch; its rows are redelivered after the lease");
}
