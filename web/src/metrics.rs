//! Prometheus metrics for Herald, rendered on `GET /metrics` of an axum [`Router`] that the
//! application mounts in its own server (or that `herald serve` serves).
//!
//! [`HeraldMetrics`] owns a [`PrometheusRecorder`] of its own (no global recorder, no HTTP listener
//! of the exporter's) and gathers three kinds of figures into it:
//!
//! - **the ledger mirror**: the built-in observer of `herald-core`
//!   (`herald_messages_total{handler,outcome}`, `herald_failed_attempts_total`,
//!   `herald_retries_total`, `herald_in_flight`, `herald_queued`) resolves its handles against the
//!   recorder current at `build()`; [`HeraldMetrics::build`] makes it this one, so those counters
//!   are reused, not duplicated;
//! - **attempt series** from an observer registered on the same seam
//!   ([`AttemptObserver`]): attempt durations, dead letters by reason and kind, rejections per
//!   pool and policy, and, for routes, the transport's publish outcomes and confirm latency per
//!   destination;
//! - **gauges sampled at scrape time**: pool depth and in-flight jobs ([`Herald::pool_stats`] and
//!   the ledger), stored dead letters, outbox pending and oldest-pending age
//!   ([`OutboxOps::status`]), consumer lag ([`ConsumerLag`]) and SLA expectations by state
//!   ([`Herald::sla_status`], [`OutboxOps::sla_status`]);
//! - **relay counters** read at scrape time from [`RelayWatch`] handles (`Relay::watch`): batches,
//!   messages by outcome, errors, renewals, lost leases, retention deletions.
//!
//! The engine's own `metrics` series (resolved against this recorder by [`HeraldMetrics::build`])
//! include the deadline ones: `herald_sla_events_total{sla,event}` and
//! `herald_start_late_total{handler}`.
//!
//! Sampling at scrape time keeps the gauges exact at the moment Prometheus reads them, needs no
//! background task to start and stop, and costs the database nothing while nobody scrapes: one
//! status query per outbox per scrape (every 15 s or so), under a timeout, one scrape at a time.
//!
//! Every series and label is listed in `docs/OBSERVABILITY.md`. Labels are bounded: handler, pool,
//! policy, destination, outbox, subscription, partition, outcome, reason and kind, never a message
//! id or key.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use herald_core::Herald;
//! use herald_web::metrics::HeraldMetrics;
//!
//! let metrics = HeraldMetrics::new();
//! let herald = metrics.build(Herald::builder())?;
//! let app = axum::Router::new().merge(metrics.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9464").await?;
//! axum::serve(listener, app).await?;
//! # drop(herald); Ok(()) }
//! ```

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use herald_core::dead_letter::{DeadLetterReason, FailureKind};
use herald_core::feed::OutboxOps;
use herald_core::observe::{
    AttemptEnd, AttemptObserver, AttemptOutcome, FinalEvent, LedgerChange, LedgerEvent,
};
use herald_core::outbox::RelayWatch;
use herald_core::ports::lag::ConsumerLag;
use herald_core::sla::{ExpectationState, SlaStatus};
use herald_core::{
    BuildError, Disposition, HandlerErrorKind, HandlerStatus, Herald, HeraldBuilder, Overload,
};
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusRecorder};
/// The exporter's builder and handle, for [`HeraldMetrics::from_builder`] and
/// [`HeraldMetrics::handle`] without a dependency of your own.
pub use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Bucket bounds of every `_seconds` histogram, in seconds: from half a millisecond (an in-memory
/// handler) to a minute (a slow broker confirm).
pub const DURATION_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// How long one scrape waits for one sampled source (an outbox's status, a broker's lag) before
/// it counts an error and renders the last value.
pub const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The `Content-Type` of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Herald's Prometheus metrics: a recorder, the observer that feeds it, the sources sampled at
/// scrape time, and the `/metrics` router. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct HeraldMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    sources: Mutex<Sources>,
    /// One scrape samples at a time: concurrent scrapes do not multiply the status queries.
    sampling: tokio::sync::Mutex<()>,
    sample_timeout: Duration,
}

#[derive(Default)]
struct Sources {
    heralds: Vec<Herald>,
    outboxes: Vec<(String, Arc<dyn OutboxOps>)>,
    consumers: Vec<Arc<dyn ConsumerLag>>,
    relays: Vec<(String, RelayWatch)>,
}

impl fmt::Debug for HeraldMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources = self.inner.sources.lock();
        f.debug_struct("HeraldMetrics")
            .field("heralds", &sources.heralds.len())
            .field(
                "outboxes",
                &sources
                    .outboxes
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .field("consumers", &sources.consumers)
            .field("sample_timeout", &self.inner.sample_timeout)
            .finish()
    }
}

impl Default for HeraldMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HeraldMetrics {
    /// A recorder whose `_seconds` series are histograms with [`DURATION_BUCKETS`].
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), DURATION_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        Self::from_builder(builder)
    }

    /// A recorder configured by the caller (buckets, global labels, idle timeout). Only its
    /// recorder is built: no HTTP listener or push gateway is started. Without buckets, the
    /// exporter renders histograms as summaries.
    pub fn from_builder(builder: PrometheusBuilder) -> Self {
        let recorder = builder.build_recorder();
        let metrics = HeraldMetrics {
            inner: Arc::new(Inner {
                handle: recorder.handle(),
                recorder,
                sources: Mutex::new(Sources::default()),
                sampling: tokio::sync::Mutex::new(()),
                sample_timeout: SAMPLE_TIMEOUT,
            }),
        };
        metrics.in_scope(describe);
        metrics
    }

    /// Runs `f` with this recorder as the `metrics` facade's recorder of the current thread: the
    /// `metrics` handles created inside (`counter!`, a store's own counters) record here.
    pub fn in_scope<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.inner.recorder, f)
    }

    /// Builds `builder` with this recorder: the built-in ledger mirror resolves its handles here,
    /// the attempt observer is registered, and the runtime's pools, ledger and dead-letter store
    /// are sampled at every scrape (so this keeps a handle to the runtime).
    ///
    /// # Errors
    /// The [`BuildError`] of [`HeraldBuilder::build`].
    pub fn build(&self, builder: HeraldBuilder) -> Result<Herald, BuildError> {
        let observer = Arc::new(SeriesObserver {
            metrics: Arc::downgrade(&self.inner),
            handlers: OnceLock::new(),
        });
        let herald = self.in_scope(|| builder.observe(observer.clone()).build())?;
        let handlers = self.in_scope(|| handler_series(&herald));
        // Only this call sets it: the observer was made above.
        let _ = observer.handlers.set(handlers);
        self.watch_herald(&herald);
        Ok(herald)
    }

    /// Samples this runtime's pools, ledger and dead-letter store at every scrape too (done by
    /// [`build`](Self::build) for the runtime it builds).
    pub fn watch_herald(&self, herald: &Herald) -> &Self {
        self.inner.sources.lock().heralds.push(herald.clone());
        self
    }

    /// Samples an outbox's status at every scrape, as `outbox="<name>"`.
    pub fn watch_outbox(&self, name: impl Into<String>, outbox: Arc<dyn OutboxOps>) -> &Self {
        self.inner
            .sources
            .lock()
            .outboxes
            .push((name.into(), outbox));
        self
    }

    /// Samples a consumer's lag at every scrape (a transport that implements [`ConsumerLag`]).
    pub fn watch_consumer(&self, consumer: Arc<dyn ConsumerLag>) -> &Self {
        self.inner.sources.lock().consumers.push(consumer);
        self
    }

    /// Reads a relay's counters at every scrape (`relay.watch()`), labelled `relay = name`: the
    /// batches it leased, its messages by outcome, its errors, renewals, lost leases and the
    /// finished rows its retention deleted. Name each relay of a process differently; a stopped
    /// relay keeps its last values.
    pub fn watch_relay(&self, name: impl Into<String>, relay: RelayWatch) -> &Self {
        self.inner.sources.lock().relays.push((name.into(), relay));
        self
    }

    /// The exporter's handle, to render without sampling (the gauges keep their last values).
    pub fn handle(&self) -> PrometheusHandle {
        self.inner.handle.clone()
    }

    /// Samples every watched source, then renders every series in the Prometheus text format.
    pub async fn render(&self) -> String {
        self.sample().await;
        self.inner.handle.render()
    }

    /// A router with `GET /metrics`; merge it into the application's router.
    pub fn router(&self) -> Router {
        router(self.clone())
    }

    async fn sample(&self) {
        let _one_at_a_time = self.inner.sampling.lock().await;
        let (heralds, outboxes, consumers, relays) = {
            let sources = self.inner.sources.lock();
            (
                sources.heralds.clone(),
                sources.outboxes.clone(),
                sources.consumers.clone(),
                sources.relays.clone(),
            )
        };
        for herald in &heralds {
            self.sample_herald(herald).await;
        }
        for (name, outbox) in &outboxes {
            self.sample_outbox(name, outbox.as_ref()).await;
        }
        for consumer in &consumers {
            self.sample_consumer(consumer.as_ref()).await;
        }
        for (name, relay) in &relays {
            self.sample_relay(name, relay);
        }
    }

    /// A relay's counters, read from memory (no query).
    fn sample_relay(&self, name: &str, relay: &RelayWatch) {
        let stats = relay.stats();
        self.in_scope(|| {
            let relay = name.to_owned();
            counter!("herald_relay_batches_total", "relay" => relay.clone()).absolute(stats.batches);
            for (outcome, count) in [
                ("processed", stats.processed),
                ("failed", stats.failed),
                ("retried", stats.retried),
                ("released", stats.released),
            ] {
                counter!("herald_relay_messages_total", "relay" => relay.clone(), "outcome" => outcome)
                    .absolute(count);
            }
            counter!("herald_relay_errors_total", "relay" => relay.clone()).absolute(stats.errors);
            counter!("herald_relay_renewed_total", "relay" => relay.clone()).absolute(stats.renewed);
            counter!("herald_relay_lost_total", "relay" => relay.clone()).absolute(stats.lost);
            counter!("herald_relay_deleted_total", "relay" => relay).absolute(stats.deleted);
        });
    }

    async fn sample_herald(&self, herald: &Herald) {
        let ledger = herald.ledger();
        let table = herald.routes();
        let mut in_flight: HashMap<&str, u64> = HashMap::new();
        for (handler, pool) in table.handler_pools() {
            let running = ledger
                .handlers
                .get(handler)
                .map_or(0, |counts| counts.in_flight);
            *in_flight.entry(pool).or_default() += running;
        }
        self.in_scope(|| {
            for pool in herald.pool_stats() {
                let running = in_flight.get(pool.name.as_str()).copied().unwrap_or(0);
                let name = pool.name;
                gauge!("herald_pool_queue_depth", "pool" => name.clone()).set(pool.depth as f64);
                gauge!("herald_pool_queue_max_depth", "pool" => name.clone())
                    .set(pool.max_depth as f64);
                gauge!("herald_pool_queue_capacity", "pool" => name.clone()).set(pool.queue as f64);
                gauge!("herald_pool_concurrency", "pool" => name.clone())
                    .set(pool.concurrency as f64);
                gauge!("herald_pool_in_flight", "pool" => name).set(running as f64);
            }
        });
        match tokio::time::timeout(self.inner.sample_timeout, herald.dead_letters().count()).await {
            Ok(Ok(stored)) => {
                self.in_scope(|| gauge!("herald_dead_letters_stored").set(stored as f64))
            }
            Ok(Err(error)) => self.sample_failed("dead_letters", &error),
            Err(_) => self.sample_failed("dead_letters", &"timed out"),
        }
        if !herald.slas().is_empty() {
            match tokio::time::timeout(self.inner.sample_timeout, herald.sla_status()).await {
                Ok(Ok(status)) => self.set_sla_gauges(&status),
                Ok(Err(error)) => self.sample_failed("slas", &error),
                Err(_) => self.sample_failed("slas", &"timed out"),
            }
        }
    }

    /// `herald_sla_expectations{sla,state}` from a store's counts (a runtime's SLA store, or an
    /// outbox's table: the same store read twice sets the same values).
    fn set_sla_gauges(&self, status: &[SlaStatus]) {
        self.in_scope(|| {
            for sla in status {
                for state in ExpectationState::ALL {
                    gauge!("herald_sla_expectations", "sla" => sla.sla.clone(), "state" => state.as_str())
                        .set(sla.count(state) as f64);
                }
            }
        });
    }

    async fn sample_outbox(&self, name: &str, outbox: &dyn OutboxOps) {
        match tokio::time::timeout(self.inner.sample_timeout, outbox.status()).await {
            Ok(Ok(status)) => self.in_scope(|| {
                let outbox = name.to_owned();
                gauge!("herald_outbox_pending", "outbox" => outbox.clone())
                    .set(status.pending as f64);
                gauge!("herald_outbox_in_flight", "outbox" => outbox.clone())
                    .set(status.in_flight as f64);
                gauge!("herald_outbox_retrying", "outbox" => outbox.clone())
                    .set(status.retrying as f64);
                gauge!("herald_outbox_failed", "outbox" => outbox.clone())
                    .set(status.failed as f64);
                gauge!("herald_outbox_dead_letters", "outbox" => outbox.clone())
                    .set(status.dead_letters as f64);
                gauge!("herald_outbox_oldest_pending_age_seconds", "outbox" => outbox)
                    .set(status.lag.unwrap_or_default().as_secs_f64());
            }),
            Ok(Err(error)) => self.sample_failed("outbox", &error),
            Err(_) => self.sample_failed("outbox", &"timed out"),
        }
        match tokio::time::timeout(self.inner.sample_timeout, outbox.sla_status()).await {
            Ok(Ok(status)) => self.set_sla_gauges(&status),
            Ok(Err(error)) => self.sample_failed("slas", &error),
            Err(_) => self.sample_failed("slas", &"timed out"),
        }
    }

    async fn sample_consumer(&self, consumer: &dyn ConsumerLag) {
        match tokio::time::timeout(self.inner.sample_timeout, consumer.lag()).await {
            Ok(Ok(readings)) => self.in_scope(|| {
                for reading in readings {
                    gauge!(
                        "herald_consumer_lag_messages",
                        "subscription" => reading.subscription,
                        "partition" => reading.partition.unwrap_or_default()
                    )
                    .set(reading.messages as f64);
                }
            }),
            Ok(Err(error)) => self.sample_failed("consumer_lag", &error),
            Err(_) => self.sample_failed("consumer_lag", &"timed out"),
        }
    }

    fn sample_failed(&self, source: &'static str, error: &dyn fmt::Display) {
        tracing::warn!(source, %error, "could not sample a metrics source; its gauges keep their last values");
        self.in_scope(|| {
            counter!("herald_metrics_sample_errors_total", "source" => source).increment(1)
        });
    }
}

/// A router with `GET /metrics` rendering `metrics` (sampled first); merge it into the
/// application's router.
pub fn router(metrics: HeraldMetrics) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics)
}

async fn scrape(State(metrics): State<HeraldMetrics>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        metrics.render().await,
    )
}

/// HELP lines for every series Herald writes (the ledger mirror's as well).
fn describe() {
    describe_counter!(
        "herald_relay_batches_total",
        "Non-empty batches a relay leased"
    );
    describe_counter!(
        "herald_relay_messages_total",
        "Messages a relay settled, by outcome: processed, failed (for good), retried, released (given back without an attempt)"
    );
    describe_counter!(
        "herald_relay_errors_total",
        "A relay's failed database or broker calls (it retries after its poll interval)"
    );
    describe_counter!(
        "herald_relay_renewed_total",
        "Leases a relay renewed while handlers ran"
    );
    describe_counter!(
        "herald_relay_lost_total",
        "Messages whose lease a relay lost while their handlers ran (their outcome was not written)"
    );
    describe_counter!(
        "herald_relay_deleted_total",
        "Finished rows a relay's retention sweep deleted"
    );
    describe_counter!("herald_messages_total", "Handler jobs by outcome: accepted, succeeded, dead_lettered, rejected, dropped, deduplicated, ignored, deferred, lost");
    describe_counter!(
        "herald_failed_attempts_total",
        "Attempts that failed (returned an error, panicked or timed out)"
    );
    describe_counter!(
        "herald_retries_total",
        "Retries scheduled after a failed attempt"
    );
    describe_gauge!("herald_in_flight", "Jobs of a handler running now");
    describe_gauge!(
        "herald_queued",
        "Jobs of a handler waiting in its pool's queue"
    );
    describe_counter!(
        "herald_dead_letters_evicted_total",
        "Dead letters evicted from a bounded in-memory store"
    );
    describe_histogram!(
        "herald_attempt_duration_seconds",
        Unit::Seconds,
        "Duration of one handler attempt, by outcome"
    );
    describe_counter!(
        "herald_dead_letters_total",
        "Jobs dead-lettered, by handler, reason and failure kind"
    );
    describe_counter!("herald_pool_rejections_total", "Messages handed back to their publisher because a pool was full or Herald was shutting down, per handler routed to");
    describe_counter!(
        "herald_transport_publish_total",
        "Publishes of routes to their transport, by destination and outcome (confirmed, failed)"
    );
    describe_histogram!(
        "herald_transport_confirm_duration_seconds",
        Unit::Seconds,
        "From a route's publish to the transport's confirmation"
    );
    describe_gauge!(
        "herald_pool_queue_depth",
        "Jobs waiting in the pool's queue now (parked behind a key included)"
    );
    describe_gauge!(
        "herald_pool_queue_max_depth",
        "Largest queue depth since start"
    );
    describe_gauge!("herald_pool_queue_capacity", "The pool's queue bound");
    describe_gauge!("herald_pool_concurrency", "Handlers the pool runs at once");
    describe_gauge!(
        "herald_pool_in_flight",
        "Jobs of the pool's handlers running now"
    );
    describe_gauge!(
        "herald_dead_letters_stored",
        "Dead letters in the runtime's dead-letter store"
    );
    describe_gauge!(
        "herald_outbox_pending",
        "Outbox rows waiting for delivery, due now or later"
    );
    describe_gauge!(
        "herald_outbox_in_flight",
        "Pending outbox rows a relay holds a lease on"
    );
    describe_gauge!(
        "herald_outbox_retrying",
        "Pending outbox rows that failed at least once"
    );
    describe_gauge!(
        "herald_outbox_failed",
        "Finished outbox rows where a handler failed for good"
    );
    describe_gauge!(
        "herald_outbox_dead_letters",
        "Dead letters stored in the outbox's database"
    );
    describe_gauge!("herald_outbox_oldest_pending_age_seconds", Unit::Seconds, "Age of the oldest pending outbox row: how far delivery lags behind publishing (0 when none)");
    describe_gauge!(
        "herald_consumer_lag_messages",
        "Messages published to a subscription (partition) and not finished by its consumer"
    );
    describe_counter!(
        "herald_metrics_sample_errors_total",
        "Scrapes that could not sample a source (outbox, consumer_lag, dead_letters, slas)"
    );
    describe_counter!(
        "herald_sla_events_total",
        "SLA expectations this process moved, by SLA and event: opened, fulfilled, fulfilled_late, breached"
    );
    describe_gauge!(
        "herald_sla_expectations",
        "SLA expectations in the store, by SLA and state: pending, fulfilled, fulfilled_late, breached"
    );
    describe_counter!(
        "herald_start_late_total",
        "Jobs whose first attempt started later than the handler's start_within after the message's time"
    );
}

/// The label of an overload policy (a fixed word: `wait(max 5s)` is `wait`).
fn policy(overload: Overload) -> &'static str {
    match overload {
        Overload::Wait { .. } => "wait",
        Overload::Reject => "reject",
        Overload::CallerRuns => "caller_runs",
        Overload::DropNewest => "drop_newest",
        Overload::DropOldest => "drop_oldest",
    }
}

/// The series of one handler, resolved once after `build()` so an event costs no label lookup.
struct HandlerSeries {
    /// By outcome: succeeded, failed, duplicate, interrupted.
    durations: [Histogram; 4],
    rejected: Counter,
    transport: Option<TransportSeries>,
}

struct TransportSeries {
    confirmed: Counter,
    failed: Counter,
    confirm: Histogram,
}

fn handler_series(herald: &Herald) -> HashMap<&'static str, HandlerSeries> {
    let policies: HashMap<String, Overload> = herald
        .pool_stats()
        .into_iter()
        .map(|pool| (pool.name, pool.overload))
        .collect();
    let table = herald.routes();
    table
        .handler_pools()
        .map(|(handler, pool)| {
            let duration = |outcome: &'static str| {
                histogram!("herald_attempt_duration_seconds", "handler" => handler, "outcome" => outcome)
            };
            let policy = policies.get(pool).copied().map_or("wait", policy);
            let transport = table.destination_of(handler).map(|destination| {
                let publish = |outcome: &'static str| {
                    counter!("herald_transport_publish_total", "destination" => destination.to_owned(), "outcome" => outcome)
                };
                TransportSeries {
                    confirmed: publish("confirmed"),
                    failed: publish("failed"),
                    confirm: histogram!("herald_transport_confirm_duration_seconds", "destination" => destination.to_owned()),
                }
            });
            let series = HandlerSeries {
                durations: [
                    duration("succeeded"),
                    duration("failed"),
                    duration("duplicate"),
                    duration("interrupted"),
                ],
                rejected: counter!("herald_pool_rejections_total", "pool" => pool.to_owned(), "policy" => policy),
                transport,
            };
            (handler, series)
        })
        .collect()
}

/// The observer [`HeraldMetrics::build`] registers: the series that need attempt events.
struct SeriesObserver {
    /// Weak: the runtime holds the observer, and the metrics hold the runtime.
    metrics: std::sync::Weak<Inner>,
    handlers: OnceLock<HashMap<&'static str, HandlerSeries>>,
}

impl SeriesObserver {
    fn series(&self, handler: &str) -> Option<&HandlerSeries> {
        self.handlers.get()?.get(handler)
    }

    /// A dead letter: counted with its labels looked up now (dead letters are rare, and the kinds
    /// few).
    fn dead_lettered(&self, handler: &'static str, reason: DeadLetterReason, kind: &'static str) {
        if let Some(inner) = self.metrics.upgrade() {
            metrics::with_local_recorder(&inner.recorder, || {
                counter!("herald_dead_letters_total", "handler" => handler, "reason" => reason.as_str(), "kind" => kind)
                    .increment(1);
            });
        }
    }
}

impl AttemptObserver for SeriesObserver {
    fn on_attempt_end(&self, attempt: &AttemptEnd<'_>) {
        let Some(series) = self.series(attempt.handler) else {
            return;
        };
        let seconds = attempt.duration.as_secs_f64();
        let index = match attempt.outcome {
            AttemptOutcome::Succeeded => 0,
            AttemptOutcome::Failed { .. } => 1,
            AttemptOutcome::Duplicate => 2,
            _ => 3,
        };
        series.durations[index].record(seconds);
        if let Some(transport) = &series.transport {
            match attempt.outcome {
                AttemptOutcome::Succeeded => {
                    transport.confirmed.increment(1);
                    transport.confirm.record(seconds);
                }
                AttemptOutcome::Failed { .. } | AttemptOutcome::Interrupted => {
                    transport.failed.increment(1);
                }
                _ => {}
            }
        }
    }

    fn on_final(&self, job: &FinalEvent<'_>) {
        match job.status {
            HandlerStatus::Failed(failure) if failure.disposition == Disposition::DeadLettered => {
                let reason = match failure.error.kind() {
                    HandlerErrorKind::Shutdown => DeadLetterReason::Shutdown,
                    HandlerErrorKind::Cancelled => DeadLetterReason::Cancelled,
                    HandlerErrorKind::Malformed => DeadLetterReason::Malformed,
                    _ => DeadLetterReason::Failed,
                };
                self.dead_lettered(
                    job.handler,
                    reason,
                    FailureKind::of(&failure.error).as_str(),
                );
            }
            HandlerStatus::Dropped => {
                self.dead_lettered(job.handler, DeadLetterReason::Overflow, "none");
            }
            HandlerStatus::Interrupted => {
                self.dead_lettered(job.handler, DeadLetterReason::Shutdown, "none");
            }
            _ => {}
        }
    }

    fn on_ledger(&self, event: &LedgerEvent) {
        if event.change == LedgerChange::Rejected {
            if let Some(series) = self.series(event.handler) {
                series.rejected.increment(1);
            }
        }
    }
}
