//! The publish path: find the handlers, take room in their pools (or apply the overload policy),
//! then queue one job per handler.

use crate::dead_letter::DeadLetterReason;
use crate::delivery::{CommandReply, Delivery, HandlerStatus, Sink};
use crate::envelope::{Envelope, PublishOptions};
use crate::error::PublishError;
use crate::message::{Command, Event, Message, Payload};
use crate::pool::{Overload, Room};
use crate::runtime::{HandlerRuntime, Herald};
use crate::worker;
use futures_util::FutureExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One published message, shared by every handler job it fans out to.
#[derive(Debug)]
pub(crate) struct Dispatch {
    pub(crate) envelope: Envelope,
    pub(crate) payload: Payload,
    pub(crate) herald: Herald,
    pub(crate) sink: Sink,
}

/// One message for one handler.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) handler: Arc<HandlerRuntime>,
    pub(crate) dispatch: Arc<Dispatch>,
    pub(crate) attempts: Attempts,
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

/// Why room was refused: the handler whose pool was full.
pub(crate) struct Refused<'a>(&'a HandlerRuntime);

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

    /// [`publish`](Self::publish) with an idempotency key and headers.
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub async fn publish_with<E: Event>(
        &self,
        event: E,
        options: PublishOptions,
    ) -> Result<Delivery, PublishError<E>> {
        let handlers = self.route(E::NAME);
        let (sink, rx) = Sink::event(handlers.len());
        let (dispatch, inline) = self
            .accept(event, options, handlers, sink, Patience::Wait)
            .await?;
        if !inline.is_empty() {
            // Only `CallerRuns` fills it; skipping the call keeps its future out of the common path.
            worker::run_inline(inline).await;
        }
        Ok(Delivery::new(dispatch.envelope.id, rx))
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
        let (sink, rx) = Sink::event(handlers.len());
        let (dispatch, _) = self
            .accept(event, options, handlers, sink, Patience::Never)
            .now_or_never()
            .expect("accepting without patience never waits")?;
        Ok(Delivery::new(dispatch.envelope.id, rx))
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
        let (sink, rx) = Sink::command();
        let (dispatch, inline) = self
            .accept(command, options, &handlers[..1], sink, Patience::Wait)
            .await?;
        if !inline.is_empty() {
            // Only `CallerRuns` fills it; skipping the call keeps its future out of the common path.
            worker::run_inline(inline).await;
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
        let (sink, rx) = Sink::command();
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
        Ok(CommandReply::new(dispatch.envelope.id, rx))
    }

    /// Takes room for `message` in each handler's pool, then queues its jobs. Returns the jobs the
    /// caller must run itself (`CallerRuns`).
    async fn accept<M: Message>(
        &self,
        message: M,
        options: PublishOptions,
        handlers: &[Arc<HandlerRuntime>],
        sink: Sink,
        patience: Patience,
    ) -> Result<(Arc<Dispatch>, Vec<Job>), PublishError<M>> {
        if !self.inner.accepting.load(Ordering::Acquire) {
            return Err(PublishError::ShuttingDown { message });
        }
        let slots = match self.reserve(handlers, patience).await {
            Ok(slots) => slots,
            Err(_) if !self.inner.accepting.load(Ordering::Acquire) => {
                return Err(PublishError::ShuttingDown { message })
            }
            Err(Refused(handler)) => {
                return Err(PublishError::Rejected {
                    message,
                    pool: handler.pool.name.clone(),
                    handler: handler.desc.name.to_owned(),
                    capacity: handler.pool.config.queue,
                })
            }
        };
        let mut envelope = Envelope::new(M::NAME);
        envelope.key = message.key();
        envelope.idempotency_key = options.idempotency_key;
        envelope.headers = options.headers;
        let dispatch = Arc::new(Dispatch {
            envelope,
            payload: Payload::new(message),
            herald: self.clone(),
            sink,
        });
        let inline = self.admit(&dispatch, handlers, &slots, Attempts::Policy);
        Ok((dispatch, inline))
    }

    /// Takes one slot per handler, applying each pool's overload policy when it is full. On refusal,
    /// gives back the slots already taken so that a refused message leaves no trace but the count.
    pub(crate) async fn reserve<'h>(
        &self,
        handlers: &'h [Arc<HandlerRuntime>],
        patience: Patience,
    ) -> Result<Slots, Refused<'h>> {
        let mut slots = Slots::Empty;
        for handler in handlers {
            let pool = &handler.pool;
            let slot = match pool.try_reserve() {
                Room::Reserved => Some(Slot::Queued),
                Room::Full => match (pool.config.overload, patience) {
                    (Overload::Wait { max_wait }, Patience::Wait) => {
                        pool.reserve(max_wait).await.then_some(Slot::Queued)
                    }
                    (Overload::CallerRuns, Patience::Wait) => Some(Slot::CallerRuns),
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
                Some(slot) => slots.push(slot),
                None => {
                    for (taken, slot) in handlers.iter().zip(slots.iter()) {
                        if *slot == Slot::Queued {
                            taken.pool.release();
                        }
                    }
                    handler.counters.rejected();
                    tracing::warn!(
                        handler = handler.desc.name,
                        pool = %pool.name,
                        queue = pool.config.queue,
                        policy = %pool.config.overload,
                        "pool full: message rejected and returned to the caller"
                    );
                    return Err(Refused(handler));
                }
            }
        }
        Ok(slots)
    }

    /// Queues one job per granted slot; returns the `CallerRuns` jobs.
    pub(crate) fn admit(
        &self,
        dispatch: &Arc<Dispatch>,
        handlers: &[Arc<HandlerRuntime>],
        slots: &[Slot],
        attempts: Attempts,
    ) -> Vec<Job> {
        let mut inline = Vec::new();
        for (handler, slot) in handlers.iter().zip(slots) {
            let job = Job {
                handler: handler.clone(),
                dispatch: dispatch.clone(),
                attempts,
            };
            match slot {
                Slot::Queued => {
                    handler.counters.accepted_queued();
                    self.enqueue(job);
                }
                Slot::CallerRuns => {
                    handler.counters.accepted_running();
                    tracing::debug!(handler = handler.desc.name, pool = %handler.pool.name, "pool full: running on the caller's task");
                    inline.push(job);
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
                Some(job) => job,
                None => return,
            },
            _ => job,
        };
        job.handler.pool.clone().enqueue(job);
    }

    /// `DropOldest` took this job out of the queue: it is dropped, and the next job with its key moves up.
    fn evicted(&self, job: Job) {
        job.handler.counters.left_queue(true);
        if let (Some(lanes), Some(key)) = (&job.handler.lanes, &job.dispatch.envelope.key) {
            if let Some(next) = lanes.next(key) {
                next.handler.pool.clone().enqueue(next);
            }
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
        job.dispatch.sink.report(
            job.dispatch.envelope.id,
            job.handler.desc.name,
            HandlerStatus::Dropped,
            None,
        );
        self.inner.store_dead_letter_later(entry);
    }
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
