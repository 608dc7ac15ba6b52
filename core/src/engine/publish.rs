//! The publish path: find the handlers, take room in their pools (or apply the overload policy),
//! then queue one job per handler.

use crate::contract::handler::AnyReply;
use crate::engine::handles::{CommandReply, Delivery, OutcomeCollector};
use crate::engine::lanes::Admitted;
use crate::engine::pool::{Overload, Room};
use crate::engine::runtime::{HandlerRuntime, Herald};
use crate::engine::worker::{self, CallerJobs};
use crate::model::dead_letter::DeadLetterReason;
use crate::model::envelope::{Envelope, PublishOptions};
use crate::model::error::PublishError;
use crate::model::message::{Command, Event, Message, Payload};
use crate::model::outcome::HandlerStatus;
use crate::ports::trace;
use futures_util::FutureExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One published message, shared by every handler job it fans out to.
#[derive(Debug)]
pub(crate) struct Dispatch {
    pub(crate) envelope: Envelope,
    pub(crate) payload: Payload,
    pub(crate) herald: Herald,
    pub(crate) outcomes: OutcomeCollector,
    /// When a delayed message is due (`PublishOptions::deliver_at`); `None`: now.
    pub(crate) due: Option<tokio::time::Instant>,
}

impl crate::contract::invocation::InvocationContext for Dispatch {
    fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    fn payload(&self) -> &Payload {
        &self.payload
    }

    fn state(&self, type_id: std::any::TypeId) -> Option<&(dyn std::any::Any + Send + Sync)> {
        self.herald.inner.states.get(&type_id).map(|value| &**value)
    }

    fn engine(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// One message for one handler.
///
/// Every job must end in a recorded state: [`settle`](Self::settle) reports it to the outcome sink.
/// A job dropped without that (a path that forgot it) is counted as `lost` in the ledger, which then
/// no longer balances and says so, instead of the job vanishing silently.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) handler: Arc<HandlerRuntime>,
    pub(crate) dispatch: Arc<Dispatch>,
    pub(crate) attempts: Attempts,
    settled: bool,
}

impl Job {
    pub(crate) fn new(
        handler: Arc<HandlerRuntime>,
        dispatch: Arc<Dispatch>,
        attempts: Attempts,
    ) -> Self {
        Job {
            handler,
            dispatch,
            attempts,
            settled: false,
        }
    }

    /// When the job's delayed message is due, if that is still to come (`None`: it may run now).
    #[inline]
    pub(crate) fn due(&self) -> Option<tokio::time::Instant> {
        self.dispatch
            .due
            .filter(|due| *due > tokio::time::Instant::now())
    }

    /// Reports how the job ended to whoever awaits the message's outcome. The ledger bucket is the
    /// caller's to count (it differs by path).
    pub(crate) fn settle(mut self, status: HandlerStatus, reply: Option<AnyReply>) {
        self.settled = true;
        self.handler
            .counters
            .settled(&self.dispatch.envelope, &status);
        self.dispatch.outcomes.report(
            self.dispatch.envelope.id,
            self.handler.desc.name,
            status,
            reply,
        );
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if !self.settled {
            self.handler.counters.lost();
            self.dispatch.outcomes.lost();
            tracing::error!(
                handler = self.handler.desc.name,
                message_id = %self.dispatch.envelope.id,
                "a job ended without a recorded outcome: counted as lost, the ledger will not balance (a Herald bug: please report it)"
            );
        }
    }
}

/// How many attempts a job makes here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempts {
    /// All of them, as the handler's `retry` option says (in-memory delivery).
    Policy,
    /// Only attempt number `n`; a failure before the last attempt is handed back to the caller
    /// (a relay that stores the message and schedules the next attempt itself).
    Once(u32),
}

/// Whether the publisher may wait for room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Patience {
    Wait,
    /// May wait, but not run the job itself: a delayed message, which cannot run now, waits for
    /// room under `CallerRuns`.
    WaitNotRun,
    Never,
}

/// What each handler's pool granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Queued,
    CallerRuns,
    Dropped,
}

/// The slots one publish took, one per handler: kept inline for a single handler, so the common
/// publish does not allocate a list (callgrind: a malloc and a free per event).
#[derive(Debug)]
pub(crate) enum Slots {
    Empty,
    One(Slot),
    Many(Vec<Slot>),
}

impl Slots {
    fn push(&mut self, slot: Slot) {
        *self = match std::mem::replace(self, Slots::Empty) {
            Slots::Empty => Slots::One(slot),
            Slots::One(first) => Slots::Many(vec![first, slot]),
            Slots::Many(mut all) => {
                all.push(slot);
                Slots::Many(all)
            }
        };
    }
}

impl std::ops::Deref for Slots {
    type Target = [Slot];
    fn deref(&self) -> &[Slot] {
        match self {
            Slots::Empty => &[],
            Slots::One(slot) => std::slice::from_ref(slot),
            Slots::Many(all) => all,
        }
    }
}

/// What accepting a message gives: its dispatch and the jobs its caller runs, or the message back.
type AcceptResult<M> = Result<(Arc<Dispatch>, CallerJobs), PublishError<M>>;

/// A message [`accept_now`](Herald::accept_now) hands back, for `accept`: it must wait for room
/// or apply an overload policy.
struct Later<M>(M, PublishOptions, OutcomeCollector);

/// Why room was refused: the handler whose pool was full.
pub(crate) struct Refused<'a>(&'a HandlerRuntime);

/// The slots one publish holds between `reserve` and `admit`. Dropped before `admit` took them (a
/// refusal, or a publish future cancelled while it waits for room in a later pool), it gives the
/// queue slots back, so nothing is half-admitted.
pub(crate) struct Reservation<'h> {
    handlers: &'h [Arc<HandlerRuntime>],
    slots: Slots,
}

impl Reservation<'_> {
    /// Hands the slots over to `admit`, which gives each one to a job.
    fn take(mut self) -> Slots {
        std::mem::replace(&mut self.slots, Slots::Empty)
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        for (handler, slot) in self.handlers.iter().zip(self.slots.iter()) {
            if *slot == Slot::Queued {
                handler.pool.release();
            }
        }
    }
}

impl Herald {
    /// The handlers of message `name`, borrowed from the routing table (no copy per publish).
    fn route(&self, name: &str) -> &[Arc<HandlerRuntime>] {
        self.inner.routes.get(name).map_or(&[], Vec::as_slice)
    }

    /// Publishes an event to every handler of it, waiting for room if a pool's policy is `Wait`.
    ///
    /// Returns a [`Delivery`]: await it for every handler's outcome, or drop it.
    ///
    /// # Errors
    /// [`PublishError::Rejected`] when a pool is full and cannot wait, [`PublishError::ShuttingDown`]
    /// after `shutdown`. The event comes back inside the error.
    pub async fn publish<E: Event>(&self, event: E) -> Result<Delivery, PublishError<E>> {
        self.publish_with(event, PublishOptions::new()).await
    }

    /// [`publish`](Self::publish) with an idempotency key, headers, or a delivery time.
    ///
    /// With [`deliver_at`](PublishOptions::deliver_at) or
    /// [`deliver_after`](PublishOptions::deliver_after), the message is accepted now (the pools'
    /// overload policies apply now; `CallerRuns` waits for room, since the job cannot run now) and
    /// each handler's job waits in memory, holding its slot of its pool's queue, until its time;
    /// the returned [`Delivery`] resolves after that. A shutdown before its time dead-letters it
    /// (reason `shutdown`).
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub async fn publish_with<E: Event>(
        &self,
        event: E,
        options: PublishOptions,
    ) -> Result<Delivery, PublishError<E>> {
        let handlers = self.route(E::NAME);
        let sink = OutcomeCollector::event(handlers.len());
        let (dispatch, inline) = match self.accept_now(event, options, handlers, sink) {
            Ok(accepted) => accepted?,
            Err(Later(event, options, sink)) => {
                self.accept(event, options, handlers, sink, Patience::Wait)
                    .await?
            }
        };
        if let Some(slas) = self.slas_concern(E::NAME) {
            slas.record_message(
                &self.inner.background,
                &dispatch.envelope,
                &dispatch.payload,
            )
            .await;
        }
        if !inline.is_empty() {
            // Only `CallerRuns` fills it; skipping the call keeps its future out of the common path.
            inline.run().await;
        }
        Ok(Delivery::new(dispatch))
    }

    /// Publishes without ever waiting: a full pool rejects (whatever its policy, `CallerRuns` and
    /// `Wait` included, since both would wait).
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub fn try_publish<E: Event>(&self, event: E) -> Result<Delivery, PublishError<E>> {
        self.try_publish_with(event, PublishOptions::new())
    }

    /// [`try_publish`](Self::try_publish) with an idempotency key and headers.
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub fn try_publish_with<E: Event>(
        &self,
        event: E,
        options: PublishOptions,
    ) -> Result<Delivery, PublishError<E>> {
        let handlers = self.route(E::NAME);
        let sink = OutcomeCollector::event(handlers.len());
        let (dispatch, _) = self
            .accept(event, options, handlers, sink, Patience::Never)
            .now_or_never()
            .expect("accepting without patience never waits")?;
        self.record_sla_later(E::NAME, &dispatch);
        Ok(Delivery::new(dispatch))
    }

    /// Sends a command to its one handler. Await the returned handle for the reply.
    ///
    /// # Errors
    /// As [`publish`](Self::publish), plus [`PublishError::NoHandler`] when no handler owns it.
    pub async fn send<C: Command>(
        &self,
        command: C,
    ) -> Result<CommandReply<C::Reply>, PublishError<C>> {
        self.send_with(command, PublishOptions::new()).await
    }

    /// [`send`](Self::send) with an idempotency key and headers.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_with<C: Command>(
        &self,
        command: C,
        options: PublishOptions,
    ) -> Result<CommandReply<C::Reply>, PublishError<C>> {
        let handlers = self.route(C::NAME);
        if handlers.is_empty() {
            return Err(PublishError::NoHandler {
                message: command,
                name: C::NAME,
            });
        }
        let (sink, rx) = OutcomeCollector::command();
        let (dispatch, inline) = match self.accept_now(command, options, &handlers[..1], sink) {
            Ok(accepted) => accepted?,
            Err(Later(command, options, sink)) => {
                self.accept(command, options, &handlers[..1], sink, Patience::Wait)
                    .await?
            }
        };
        if let Some(slas) = self.slas_concern(C::NAME) {
            slas.record_message(
                &self.inner.background,
                &dispatch.envelope,
                &dispatch.payload,
            )
            .await;
        }
        if !inline.is_empty() {
            // Only `CallerRuns` fills it; skipping the call keeps its future out of the common path.
            inline.run().await;
        }
        Ok(CommandReply::new(dispatch.envelope.id, rx))
    }

    /// Sends a command without ever waiting (see [`try_publish`](Self::try_publish)).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn try_send<C: Command>(
        &self,
        command: C,
    ) -> Result<CommandReply<C::Reply>, PublishError<C>> {
        let handlers = self.route(C::NAME);
        if handlers.is_empty() {
            return Err(PublishError::NoHandler {
                message: command,
                name: C::NAME,
            });
        }
        let (sink, rx) = OutcomeCollector::command();
        let (dispatch, _) = self
            .accept(
                command,
                PublishOptions::new(),
                &handlers[..1],
                sink,
                Patience::Never,
            )
            .now_or_never()
            .expect("accepting without patience never waits")?;
        self.record_sla_later(C::NAME, &dispatch);
        Ok(CommandReply::new(dispatch.envelope.id, rx))
    }

    /// Records a message an SLA concerns without waiting (`try_publish`, `try_send`): its task
    /// runs on, and shutdown awaits it.
    fn record_sla_later(&self, name: &'static str, dispatch: &Dispatch) {
        if let Some(slas) = self.slas_concern(name) {
            drop(slas.record_message(
                &self.inner.background,
                &dispatch.envelope,
                &dispatch.payload,
            ));
        }
    }

    /// [`accept`](Self::accept) when every handler's pool has room now, the common case: it never
    /// waits, so the publish does not build (and move, ~900 bytes) `accept`'s future. Hands the
    /// message back ([`Later`]) when a pool is full or the message is delayed, for `accept` to
    /// apply the overload policy; no slot is kept then.
    #[inline]
    // The message comes back by value, as `PublishError` carries it: boxing it would allocate on
    // the path that waits for room.
    #[allow(clippy::result_large_err)]
    fn accept_now<M: Message>(
        &self,
        message: M,
        options: PublishOptions,
        handlers: &[Arc<HandlerRuntime>],
        sink: OutcomeCollector,
    ) -> Result<AcceptResult<M>, Later<M>> {
        if options.deliver.is_some() || !self.inner.accepting.load(Ordering::Acquire) {
            return Err(Later(message, options, sink));
        }
        let Some(reservation) = self.reserve_now(handlers) else {
            return Err(Later(message, options, sink));
        };
        Ok(Ok(self.dispatch(
            message,
            options,
            handlers,
            sink,
            None,
            reservation,
        )))
    }

    /// One slot in every handler's pool if each has room now (no overload policy applies), or
    /// none: the slots taken are given back when one pool is full.
    fn reserve_now<'h>(&self, handlers: &'h [Arc<HandlerRuntime>]) -> Option<Reservation<'h>> {
        let mut reservation = Reservation {
            handlers,
            slots: Slots::Empty,
        };
        for handler in handlers {
            match handler.pool.try_reserve() {
                Room::Reserved => reservation.slots.push(Slot::Queued),
                // Dropping the reservation gives back the slots taken so far.
                Room::Full => return None,
            }
        }
        Some(reservation)
    }

    /// Takes room for `message` in each handler's pool, then queues its jobs. Returns the jobs the
    /// caller must run itself (`CallerRuns`).
    async fn accept<M: Message>(
        &self,
        message: M,
        options: PublishOptions,
        handlers: &[Arc<HandlerRuntime>],
        sink: OutcomeCollector,
        patience: Patience,
    ) -> Result<(Arc<Dispatch>, CallerJobs), PublishError<M>> {
        if !self.inner.accepting.load(Ordering::Acquire) {
            self.handed_back(handlers);
            return Err(PublishError::ShuttingDown { message });
        }
        // Counted from the call: a wait for room does not push a delayed message later.
        let due = options.deliver.and_then(|deliver| {
            let delay = deliver.delay_from(chrono::Utc::now());
            (!delay.is_zero()).then(|| due_after(delay))
        });
        let patience = match (patience, due) {
            (Patience::Wait, Some(_)) => Patience::WaitNotRun,
            (patience, _) => patience,
        };
        let reservation = match self.reserve(handlers, patience).await {
            Ok(reservation) => reservation,
            Err(refused) => {
                self.handed_back(handlers);
                if !self.inner.accepting.load(Ordering::Acquire) {
                    return Err(PublishError::ShuttingDown { message });
                }
                let Refused(handler) = refused;
                return Err(PublishError::Rejected {
                    message,
                    pool: handler.pool.name.clone(),
                    handler: handler.desc.name.to_owned(),
                    capacity: handler.pool.config.queue,
                });
            }
        };
        Ok(self.dispatch(message, options, handlers, sink, due, reservation))
    }

    /// The message has its slots: its envelope and dispatch are made and its jobs queued.
    fn dispatch<M: Message>(
        &self,
        message: M,
        options: PublishOptions,
        handlers: &[Arc<HandlerRuntime>],
        sink: OutcomeCollector,
        due: Option<tokio::time::Instant>,
        reservation: Reservation<'_>,
    ) -> (Arc<Dispatch>, CallerJobs) {
        let mut envelope = Envelope::new(M::NAME);
        envelope.key = message.key();
        envelope.idempotency_key = options.idempotency_key;
        envelope.headers = options.headers;
        let span = publish_span(&envelope);
        trace::capture_in(span.as_ref(), &mut envelope.headers);
        let dispatch = Arc::new(Dispatch {
            envelope,
            payload: Payload::new(message),
            herald: self.clone(),
            outcomes: sink,
            due,
        });
        if handlers.is_empty() {
            // Nothing to do is complete.
            dispatch.outcomes.complete_empty();
        }
        let inline = self.admit(&dispatch, handlers, reservation, Attempts::Policy);
        (dispatch, inline)
    }

    /// Takes one slot per handler, applying each pool's overload policy when it is full. On refusal,
    /// gives back the slots already taken so that a refused message leaves no trace but the count.
    ///
    /// Cancel-safe: the slots are held by a [`Reservation`] until `admit` hands them to jobs, so a
    /// publisher dropped while it waits for room in a later pool gives back what it took earlier.
    pub(crate) async fn reserve<'h>(
        &self,
        handlers: &'h [Arc<HandlerRuntime>],
        patience: Patience,
    ) -> Result<Reservation<'h>, Refused<'h>> {
        let mut reservation = Reservation {
            handlers,
            slots: Slots::Empty,
        };
        for handler in handlers {
            let pool = &handler.pool;
            let slot = match pool.try_reserve() {
                Room::Reserved => Some(Slot::Queued),
                Room::Full => match (pool.config.overload, patience) {
                    (Overload::Wait { max_wait }, Patience::Wait | Patience::WaitNotRun) => {
                        pool.reserve(max_wait).await.then_some(Slot::Queued)
                    }
                    (Overload::CallerRuns, Patience::Wait) => Some(Slot::CallerRuns),
                    (Overload::CallerRuns, Patience::WaitNotRun) => {
                        pool.reserve(None).await.then_some(Slot::Queued)
                    }
                    (Overload::DropNewest, _) => Some(Slot::Dropped),
                    (Overload::DropOldest, _) => Some(match pool.evict_oldest() {
                        Some(oldest) => {
                            self.evicted(oldest);
                            Slot::Queued
                        }
                        None => Slot::Dropped,
                    }),
                    (Overload::Reject | Overload::Wait { .. } | Overload::CallerRuns, _) => None,
                },
            };
            match slot {
                Some(slot) => reservation.slots.push(slot),
                None => {
                    tracing::warn!(
                        handler = handler.desc.name,
                        pool = %pool.name,
                        queue = pool.config.queue,
                        policy = %pool.config.overload,
                        "pool full: message rejected and returned to the caller"
                    );
                    // Dropping the reservation gives back the slots taken so far.
                    return Err(Refused(handler));
                }
            }
        }
        Ok(reservation)
    }

    /// A message is handed back to its caller (a pool was full, or Herald is shutting down): one
    /// rule for every hand-back, it counts as `rejected` for every handler it was routed to.
    pub(crate) fn handed_back(&self, handlers: &[Arc<HandlerRuntime>]) {
        for handler in handlers {
            handler.counters.rejected();
        }
    }

    /// Queues one job per granted slot; returns the `CallerRuns` jobs, which the caller must run
    /// (or, if it gives up, dead-letter: [`CallerJobs`] does that when dropped).
    pub(crate) fn admit(
        &self,
        dispatch: &Arc<Dispatch>,
        handlers: &[Arc<HandlerRuntime>],
        reservation: Reservation<'_>,
        attempts: Attempts,
    ) -> CallerJobs {
        let slots = reservation.take();
        let mut inline = CallerJobs::default();
        for (handler, slot) in handlers.iter().zip(slots.iter()) {
            let job = Job::new(handler.clone(), dispatch.clone(), attempts);
            match slot {
                Slot::Queued => {
                    handler.counters.accepted_queued();
                    self.enqueue(job);
                }
                Slot::CallerRuns => {
                    handler.counters.accepted_running();
                    tracing::debug!(handler = handler.desc.name, pool = %handler.pool.name, "pool full: running on the caller's task");
                    inline.push(match (&handler.lanes, &dispatch.envelope.key) {
                        // An ordered job runs on the caller only in its key's turn.
                        (Some(lanes), Some(key)) => match lanes.admit_caller(key, job) {
                            Admitted::Run(job) => worker::CallerJob::Run(job),
                            Admitted::Wait(turn) => worker::CallerJob::Wait(turn),
                            Admitted::Parked => continue,
                        },
                        _ => worker::CallerJob::Run(job),
                    });
                }
                Slot::Dropped => {
                    handler.counters.accepted_dropped();
                    self.drop_on_overflow(job);
                }
            }
        }
        inline
    }

    /// Queues a job that holds a slot, behind earlier jobs with its key when the handler is `ordered`.
    fn enqueue(&self, job: Job) {
        let handler = job.handler.clone();
        let job = match (&handler.lanes, job.dispatch.envelope.key.clone()) {
            (Some(lanes), Some(key)) => match lanes.admit(&key, job) {
                Admitted::Run(job) => job,
                Admitted::Parked | Admitted::Wait(_) => return,
            },
            _ => job,
        };
        queue_when_due(job);
    }

    /// `DropOldest` took this job out of the queue: it is dropped, and the next job with its key moves up.
    fn evicted(&self, job: Job) {
        job.handler.counters.left_queue(true);
        if let Some(key) = &job.dispatch.envelope.key {
            worker::pass_key(&job.handler, key, false);
        }
        self.drop_on_overflow(job);
    }

    fn drop_on_overflow(&self, job: Job) {
        tracing::warn!(
            handler = job.handler.desc.name,
            pool = %job.handler.pool.name,
            message_id = %job.dispatch.envelope.id,
            policy = %job.handler.pool.config.overload,
            "pool full: message dropped to the dead letters (reason `overflow`)"
        );
        let entry = worker::dead_letter_entry(
            &job,
            DeadLetterReason::Overflow,
            &worker::Progress::default(),
            None,
        );
        job.settle(HandlerStatus::Dropped, None);
        self.inner.store_dead_letter_later(entry);
    }
}

/// A job that holds its slot (and its key, if `ordered`) goes into its pool's queue now, or waits
/// for its delivery time first.
pub(crate) fn queue_when_due(job: Job) {
    match job.due() {
        None => job.handler.pool.clone().enqueue(job),
        Some(due) => {
            let delays = job.dispatch.herald.inner.delays.clone();
            delays.hold(job, due);
        }
    }
}

/// The moment `delay` from now (a delay too large for the clock waits about thirty years).
fn due_after(delay: std::time::Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(delay)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(30 * 365 * 86_400))
}

/// The `publish` span of one message (kind producer), entered while its trace context is captured,
/// so that every handler's `process` span is its child. It starts once the message has room: a
/// rejected publish makes no span.
///
/// `None` unless a subscriber wants it, checked with `span_enabled!` first, as for the worker's
/// attempt span (see `worker.rs`).
#[inline]
fn publish_span(envelope: &Envelope) -> Option<tracing::Span> {
    if !tracing::span_enabled!(tracing::Level::INFO) {
        return None;
    }
    Some(publish_span_enabled(envelope))
}

#[cold]
#[inline(never)]
fn publish_span_enabled(envelope: &Envelope) -> tracing::Span {
    tracing::info_span!(
        "herald.publish",
        otel.name = %format_args!("publish {}", envelope.name),
        otel.kind = "producer",
        messaging.system = "herald",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = %envelope.name,
        messaging.message.id = %envelope.id,
        messaging.message.conversation_id = %envelope.correlation_id(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_keep_every_push_in_order() {
        let mut slots = Slots::Empty;
        assert!(slots.is_empty());
        slots.push(Slot::Queued);
        assert!(matches!(slots, Slots::One(_)));
        assert_eq!(&*slots, &[Slot::Queued]);
        slots.push(Slot::Dropped);
        slots.push(Slot::CallerRuns);
        assert_eq!(&*slots, &[Slot::Queued, Slot::Dropped, Slot::CallerRuns]);
    }
}
