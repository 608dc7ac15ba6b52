//! Deadline SLAs in the engine ("when A happens, B within T"): the runtime's declared [`Sla`]s,
//! the expectations it opens and fulfils as messages pass, and the sweeper that turns the due
//! ones into [`SlaBreached`](crate::SlaBreached) events. Expectations live in an [`SlaStore`] (the SQL outboxes, or
//! the in-memory default); see `docs/SLAS.md`.
//!
//! Where an expectation is recorded in this process (an outbox's publish records in its own
//! transaction, in `durable/outbox/sla.rs`):
//! - an A or a B published with `publish`/`send` (recorded before the call returns;
//!   `try_publish`/`try_send` record in the background), or delivered through
//!   [`Herald::ingest`] (a relay, a broker consumer): [`Slas::record_message`];
//! - an expected handler succeeding: [`Slas::record_completion`], awaited by the worker before
//!   the job settles, so a relay finishes the row only once the fulfilment is stored.
//!
//! Each record (and each sweep asked for with [`Herald::sweep_slas`]) runs in a task of its own,
//! which the caller awaits: a caller that gives up cuts no store write or transaction short.
//!
//! A store that refuses a write is tried again a few times; then the expectation is logged in
//! full at error level, as a dead letter is.

use crate::engine::observe::{Observers, SlaChange, SlaEvent};
use crate::engine::runtime::{Herald, Inner};
use crate::model::envelope::{Envelope, MessageId};
use crate::model::message::Payload;
use crate::model::sla::{
    ExpectationState, Fulfilment, NewExpectation, Sla, SlaCounts, SlaExpectation, SlaStatus,
};
use crate::ports::sla::{SlaStore, SlaStoreError};
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use metrics::{counter, Counter};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the sweeper looks for due expectations unless
/// [`sla_sweep_interval`](crate::HeraldBuilder::sla_sweep_interval) says otherwise.
pub const DEFAULT_SLA_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Expectations breached per sweep statement; a sweep goes on while batches come back full.
const SWEEP_BATCH: usize = 100;

/// Delays between tries of a store write: about 1.5 s in all before it is logged and given up.
const STORE_RETRIES: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(250),
    Duration::from_millis(1_200),
];

/// The SLAs of one runtime.
pub(crate) struct Slas {
    list: Arc<[Sla]>,
    /// By A's wire name: the SLAs it opens.
    after: FxHashMap<&'static str, Vec<usize>>,
    /// By B's wire name: the SLAs it fulfils (those expecting a message).
    expected: FxHashMap<&'static str, Vec<usize>>,
    store: Arc<dyn SlaStore>,
    counters: Box<[SlaCounters]>,
    observers: Observers,
    sweep_interval: Duration,
    stop: CancellationToken,
    sweeper: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Slas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slas")
            .field("list", &self.list)
            .field("store", &self.store)
            .field("sweep_interval", &self.sweep_interval)
            .finish_non_exhaustive()
    }
}

/// What this process recorded for one SLA, with its `metrics` series when they are on.
#[derive(Default)]
struct SlaCounters {
    opened: AtomicU64,
    fulfilled: AtomicU64,
    fulfilled_late: AtomicU64,
    breached: AtomicU64,
    metrics: Option<[Counter; 4]>,
}

impl SlaCounters {
    fn new(sla: &str, metrics: bool) -> Self {
        let series = |event: &'static str| counter!("herald_sla_events_total", "sla" => sla.to_owned(), "event" => event);
        SlaCounters {
            metrics: metrics.then(|| {
                [
                    series(SlaChange::Opened.as_str()),
                    series(SlaChange::Fulfilled.as_str()),
                    series(SlaChange::FulfilledLate.as_str()),
                    series(SlaChange::Breached.as_str()),
                ]
            }),
            ..SlaCounters::default()
        }
    }

    fn bump(&self, change: SlaChange) {
        let (count, series) = match change {
            SlaChange::Opened => (&self.opened, 0),
            SlaChange::Fulfilled => (&self.fulfilled, 1),
            SlaChange::FulfilledLate => (&self.fulfilled_late, 2),
            SlaChange::Breached => (&self.breached, 3),
        };
        count.fetch_add(1, Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
            metrics[series].increment(1);
        }
    }

    fn snapshot(&self) -> SlaCounts {
        SlaCounts {
            opened: self.opened.load(Ordering::Relaxed),
            fulfilled: self.fulfilled.load(Ordering::Relaxed),
            fulfilled_late: self.fulfilled_late.load(Ordering::Relaxed),
            breached: self.breached.load(Ordering::Relaxed),
        }
    }
}

impl Slas {
    /// The runtime's SLAs (already checked by `build()`), kept in `store`.
    pub(crate) fn new(
        list: Vec<Sla>,
        store: Arc<dyn SlaStore>,
        observers: Observers,
        metrics: bool,
        sweep_interval: Duration,
    ) -> Self {
        let mut after: FxHashMap<&'static str, Vec<usize>> = FxHashMap::default();
        let mut expected: FxHashMap<&'static str, Vec<usize>> = FxHashMap::default();
        for (index, sla) in list.iter().enumerate() {
            after.entry(sla.after()).or_default().push(index);
            if sla.expected_handler().is_none() {
                expected
                    .entry(sla.expected_message())
                    .or_default()
                    .push(index);
            }
        }
        let counters = list
            .iter()
            .map(|sla| SlaCounters::new(sla.name(), metrics))
            .collect();
        let list: Arc<[Sla]> = list.into();
        store.declare(list.clone());
        Slas {
            list,
            after,
            expected,
            store,
            counters,
            observers,
            sweep_interval,
            stop: CancellationToken::new(),
            sweeper: Mutex::new(None),
        }
    }

    /// The indices of the SLAs that `handler` fulfils when it succeeds.
    pub(crate) fn fulfilled_by(&self, handler: &str) -> Box<[usize]> {
        self.list
            .iter()
            .enumerate()
            .filter(|(_, sla)| sla.expected_handler() == Some(handler))
            .map(|(index, _)| index)
            .collect()
    }

    /// Whether a message named `name` opens or fulfils an expectation.
    #[inline]
    pub(crate) fn concerns(&self, name: &str) -> bool {
        self.after.contains_key(name) || self.expected.contains_key(name)
    }

    pub(crate) fn list(&self) -> &[Sla] {
        &self.list
    }

    pub(crate) fn store(&self) -> &Arc<dyn SlaStore> {
        &self.store
    }

    /// This process's counts, by SLA name.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, SlaCounts> {
        self.list
            .iter()
            .zip(self.counters.iter())
            .map(|(sla, counters)| (sla.name().to_owned(), counters.snapshot()))
            .collect()
    }

    fn moved(&self, index: usize, key: &str, a_message_id: MessageId, change: SlaChange) {
        let sla = self.list[index].name();
        self.counters[index].bump(change);
        tracing::debug!(sla, key, a_message_id = %a_message_id, change = change.as_str(), "SLA expectation moved");
        self.observers.sla(&SlaEvent {
            sla,
            key,
            a_message_id,
            change,
        });
    }

    /// Records a message that passed through this runtime: each A opens its SLAs'
    /// expectations, each B fulfils the open ones of its key (at B's time).
    ///
    /// The store is written in a task of its own (tracked by `background`, which shutdown
    /// awaits), so a caller that gives up (a publish dropped by its timeout) cuts no write short:
    /// the returned future only waits for it.
    pub(crate) fn record_message(
        self: &Arc<Self>,
        background: &TaskTracker,
        envelope: &Envelope,
        payload: &Payload,
    ) -> BoxFuture<'static, ()> {
        let (slas, envelope, payload) = (self.clone(), envelope.clone(), payload.clone());
        detached(background.spawn(async move {
            let name = envelope.name.as_ref();
            for &index in slas.after.get(name).map_or(&[][..], Vec::as_slice) {
                let sla = &slas.list[index];
                let Some(key) = sla.key_of_after(payload.as_any()) else {
                    continue;
                };
                let new = NewExpectation::new(sla, key, envelope.id, envelope.occurred_at);
                slas.open(index, new).await;
            }
            for &index in slas.expected.get(name).map_or(&[][..], Vec::as_slice) {
                let Some(key) = slas.list[index].key_of_expected(payload.as_any()) else {
                    continue;
                };
                slas.fulfil(index, &key, envelope.id, envelope.occurred_at)
                    .await;
            }
        }))
    }

    /// Records the success of a handler that SLAs `indices` expect: it fulfils the open
    /// expectations of its message's key, now. Written in a task of its own, as
    /// [`record_message`](Self::record_message).
    pub(crate) fn record_completion(
        self: &Arc<Self>,
        background: &TaskTracker,
        indices: &[usize],
        envelope: &Envelope,
        payload: &Payload,
    ) -> BoxFuture<'static, ()> {
        let (slas, indices) = (self.clone(), indices.to_vec());
        let (id, payload) = (envelope.id, payload.clone());
        detached(background.spawn(async move {
            let now = Utc::now();
            for index in indices {
                let Some(key) = slas.list[index].key_of_expected(payload.as_any()) else {
                    continue;
                };
                slas.fulfil(index, &key, id, now).await;
            }
        }))
    }

    async fn open(&self, index: usize, new: NewExpectation) {
        let opened = retrying("open an SLA expectation", || {
            self.store.open(std::slice::from_ref(&new))
        })
        .await;
        match opened {
            Ok(0) => {}
            Ok(_) => self.moved(index, &new.key, new.a_message_id, SlaChange::Opened),
            Err(error) => tracing::error!(
                %error,
                sla = %new.sla,
                key = %new.key,
                a_message_id = %new.a_message_id,
                due_at = %new.due_at,
                "could not open an SLA expectation; it is logged here in full and will not be swept"
            ),
        }
    }

    async fn fulfil(&self, index: usize, key: &str, by: MessageId, at: DateTime<Utc>) {
        let sla = self.list[index].name();
        let moved = retrying("fulfil SLA expectations", || {
            self.store.fulfil(sla, key, by, at)
        })
        .await;
        match moved {
            Ok(moved) => {
                for Fulfilment {
                    a_message_id,
                    state,
                    ..
                } in moved
                {
                    let change = if state == ExpectationState::Fulfilled {
                        SlaChange::Fulfilled
                    } else {
                        tracing::info!(sla, key, a_message_id = %a_message_id, by = %by, "SLA fulfilled late");
                        SlaChange::FulfilledLate
                    };
                    self.moved(index, key, a_message_id, change);
                }
            }
            Err(error) => tracing::error!(
                %error,
                sla,
                key,
                by = %by,
                at = %at,
                "could not record the fulfilment of SLA expectations; it is logged here in full and the expectations may be breached"
            ),
        }
    }

    /// Breaches every due expectation, in batches. With a store that does not deliver the
    /// events (the in-memory one) they are published here; one that cannot be published is
    /// opened again, so the next sweep emits it. Returns how many were breached.
    pub(crate) async fn sweep(&self, herald: &Herald) -> Result<usize, SlaStoreError> {
        let mut total = 0;
        loop {
            let batch = self.store.sweep(SWEEP_BATCH).await?;
            let full = batch.len() >= SWEEP_BATCH;
            for breach in batch {
                if !self.store.delivers_breaches() {
                    if let Err(error) = herald.publish(breach.clone()).await {
                        tracing::warn!(%error, sla = %breach.sla, key = %breach.key, "could not publish an SlaBreached event; the expectation is opened again for the next sweep");
                        if let Err(error) = self.store.reopen(&breach).await {
                            tracing::error!(%error, breach = ?breach, "could not open a breached SLA expectation again; its SlaBreached is logged here in full");
                        }
                        continue;
                    }
                }
                tracing::warn!(
                    sla = %breach.sla,
                    key = %breach.key,
                    a_message_id = %breach.a_message_id,
                    due_at = %breach.due_at,
                    "SLA breached: nothing fulfilled the expectation by its due time"
                );
                if let Some(index) = self.list.iter().position(|sla| sla.name() == breach.sla) {
                    self.moved(index, &breach.key, breach.a_message_id, SlaChange::Breached);
                }
                total += 1;
            }
            if !full {
                return Ok(total);
            }
        }
    }

    /// Starts the sweeper of `inner`'s runtime: every interval, one sweep. It holds the runtime
    /// only while it sweeps, so dropping the last handle stops it.
    pub(crate) fn start(self: &Arc<Self>, inner: &Arc<Inner>) {
        let slas = self.clone();
        let runtime: Weak<Inner> = Arc::downgrade(inner);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = slas.stop.cancelled() => return,
                    () = tokio::time::sleep(slas.sweep_interval) => {}
                }
                let Some(inner) = runtime.upgrade() else {
                    return;
                };
                let herald = Herald { inner };
                if let Err(error) = slas.sweep(&herald).await {
                    tracing::warn!(%error, "SLA sweep failed; the next one tries again");
                }
            }
        });
        *self.sweeper.lock() = Some(task);
    }

    /// Stops the sweeper after its current sweep.
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits (up to `limit`) for the sweeper to end after [`stop`](Self::stop), then aborts it.
    pub(crate) async fn stopped(&self, limit: Duration) {
        let task = self.sweeper.lock().take();
        if let Some(mut task) = task {
            if tokio::time::timeout(limit, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

/// Waits for a task that records SLA movements; dropping the future leaves the task running.
fn detached(task: JoinHandle<()>) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        if let Err(error) = task.await {
            tracing::error!(%error, "recording an SLA movement panicked or was cancelled");
        }
    })
}

/// Runs a store call, trying it again after [`STORE_RETRIES`] when it fails.
async fn retrying<T, F, Fut>(what: &'static str, mut call: F) -> Result<T, SlaStoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SlaStoreError>>,
{
    let mut delays = STORE_RETRIES.iter();
    loop {
        let error = match call().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        match delays.next() {
            Some(delay) => {
                tracing::warn!(%error, retry_in = ?delay, "could not {what}; trying again");
                tokio::time::sleep(*delay).await;
            }
            None => return Err(error),
        }
    }
}

impl Herald {
    #[inline]
    pub(crate) fn slas_concern(&self, name: &str) -> Option<&Arc<Slas>> {
        self.inner.slas.as_ref().filter(|slas| slas.concerns(name))
    }

    /// The SLAs registered with [`HeraldBuilder::sla`](crate::HeraldBuilder::sla) (also listed by
    /// [`routes`](Self::routes)).
    pub fn slas(&self) -> &[Sla] {
        self.inner.slas.as_deref().map_or(&[], Slas::list)
    }

    /// The store the SLAs' expectations live in (`None` without SLAs).
    pub fn sla_store(&self) -> Option<&Arc<dyn SlaStore>> {
        self.inner.slas.as_deref().map(Slas::store)
    }

    /// The store's counts by SLA and state (every process's expectations when the store is
    /// shared); empty without SLAs.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn sla_status(&self) -> Result<Vec<SlaStatus>, SlaStoreError> {
        match &self.inner.slas {
            Some(slas) => slas.store.status().await,
            None => Ok(Vec::new()),
        }
    }

    /// The expectation SLA `sla` opened for the A `a_message_id`, if any.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn sla_expectation(
        &self,
        sla: &str,
        a_message_id: MessageId,
    ) -> Result<Option<SlaExpectation>, SlaStoreError> {
        match &self.inner.slas {
            Some(slas) => slas.store.expectation(sla, a_message_id).await,
            None => Ok(None),
        }
    }

    /// Sweeps now (the sweeper does it every interval): every expectation due and still open is
    /// breached and its [`SlaBreached`](crate::SlaBreached) emitted. Returns how many were breached here (another
    /// process's sweeper may take some).
    ///
    /// # Errors
    /// When the store cannot be written; the expectations stay open for the next sweep.
    pub async fn sweep_slas(&self) -> Result<usize, SlaStoreError> {
        let Some(slas) = self.inner.slas.clone() else {
            return Ok(0);
        };
        // In a task of its own: a caller that gives up cuts no sweep short (the breaches it
        // marks are emitted, or opened again).
        let herald = self.clone();
        match self
            .inner
            .background
            .spawn(async move { slas.sweep(&herald).await })
            .await
        {
            Ok(swept) => swept,
            Err(error) => Err(SlaStoreError::new("sweeping", error)),
        }
    }
}
