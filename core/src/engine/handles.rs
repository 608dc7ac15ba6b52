//! Handles returned by `publish` and `send`: await one for the outcome, or drop it to fire and forget;
//! and the collector that fills them as handlers end.

use crate::contract::handler::AnyReply;
use crate::engine::publish::Dispatch;
use crate::model::envelope::MessageId;
use crate::model::error::{CommandError, Disposition, HandlerError, HandlerFailure};
use crate::model::outcome::EventOutcome;
use crate::model::outcome::HandlerReport;
use crate::model::outcome::HandlerStatus;
use parking_lot::Mutex;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::sync::oneshot;

/// Handle to a published event. Await it for the [`EventOutcome`]; drop it to fire and forget.
#[derive(Debug)]
#[must_use = "await the delivery for the outcome, or drop it explicitly to fire and forget"]
pub struct Delivery {
    message_id: MessageId,
    /// The outcome is collected in the dispatch itself (its [`OutcomeCollector`]): no channel is
    /// allocated per publish (docs/BENCHMARKS.md). The dispatch, and so the message and the
    /// `Herald` handle it carries, lives as long as this handle.
    dispatch: Arc<Dispatch>,
}

impl Delivery {
    pub(crate) fn new(dispatch: Arc<Dispatch>) -> Self {
        Delivery {
            message_id: dispatch.envelope.id,
            dispatch,
        }
    }

    /// The event's id.
    pub fn message_id(&self) -> MessageId {
        self.message_id
    }

    fn state(&self) -> &Mutex<EventState> {
        match &self.dispatch.outcomes {
            OutcomeCollector::Event { state, .. } => state,
            OutcomeCollector::Command { .. } => {
                unreachable!("a Delivery is only made for an event's collector")
            }
        }
    }
}

impl Future for Delivery {
    type Output = EventOutcome;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<EventOutcome> {
        let mut state = self.state().lock();
        if state.ended {
            return Poll::Ready(EventOutcome {
                message_id: self.message_id,
                reports: std::mem::take(&mut state.reports),
                complete: !state.lost,
            });
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        // Fire and forget: the reports still to come are not kept.
        let mut state = self.state().lock();
        state.dropped = true;
        state.waker = None;
        state.reports = Vec::new();
    }
}

/// Handle to a sent command. Await it for the reply; drop it to fire and forget.
#[derive(Debug)]
#[must_use = "await the reply, or drop it explicitly to fire and forget"]
pub struct CommandReply<R> {
    message_id: MessageId,
    rx: oneshot::Receiver<Result<AnyReply, CommandError>>,
    reply: PhantomData<fn() -> R>,
}

impl<R> CommandReply<R> {
    pub(crate) fn new(
        message_id: MessageId,
        rx: oneshot::Receiver<Result<AnyReply, CommandError>>,
    ) -> Self {
        CommandReply {
            message_id,
            rx,
            reply: PhantomData,
        }
    }

    /// The command's id.
    pub fn message_id(&self) -> MessageId {
        self.message_id
    }
}

impl<R: 'static> Future for CommandReply<R> {
    type Output = Result<R, CommandError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let message_id = self.message_id;
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|received| match received {
                Ok(Ok(reply)) => reply.downcast::<R>().map(|reply| *reply).map_err(|_| {
                    CommandError::Failed(HandlerFailure {
                        handler: "<reply>",
                        message_id,
                        attempts: 0,
                        error: HandlerError::malformed(format!(
                            "the handler's reply is not a `{}`: two commands share one wire name",
                            std::any::type_name::<R>()
                        )),
                        disposition: Disposition::Logged,
                    })
                }),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(CommandError::Interrupted(message_id)),
            })
    }
}

/// Where handler results go: the waiting handle, if the caller kept one.
#[derive(Debug)]
pub(crate) enum OutcomeCollector {
    Event {
        /// Handlers that have not reported yet.
        remaining: AtomicUsize,
        state: Mutex<EventState>,
    },
    Command {
        tx: Mutex<Option<oneshot::Sender<Result<AnyReply, CommandError>>>>,
    },
}

/// One handler of an event has ended: `record` what it left under the lock, count it off, and
/// when it was the last one, mark the outcome ended and wake the waiting handle (outside the lock).
fn count_down(
    remaining: &AtomicUsize,
    state: &Mutex<EventState>,
    record: impl FnOnce(&mut EventState),
) {
    let waker = {
        let mut state = state.lock();
        record(&mut state);
        if remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        state.ended = true;
        state.waker.take()
    };
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// An event's outcome as it is collected, read by its [`Delivery`].
#[derive(Debug, Default)]
pub(crate) struct EventState {
    /// Allocated at the first report, and only while the handle is kept.
    reports: Vec<HandlerReport>,
    /// The handle's task, waiting for the last report.
    waker: Option<Waker>,
    /// Every handler has reported (or nothing was to do).
    ended: bool,
    /// The handle was dropped (fire and forget): no report is kept.
    dropped: bool,
    /// A job ended without reporting (a Herald bug, counted as `lost`): the outcome is incomplete.
    lost: bool,
}

impl OutcomeCollector {
    pub(crate) fn event(handlers: usize) -> Self {
        OutcomeCollector::Event {
            remaining: AtomicUsize::new(handlers),
            state: Mutex::new(EventState::default()),
        }
    }

    pub(crate) fn command() -> (Self, oneshot::Receiver<Result<AnyReply, CommandError>>) {
        let (tx, rx) = oneshot::channel();
        (
            OutcomeCollector::Command {
                tx: Mutex::new(Some(tx)),
            },
            rx,
        )
    }

    /// Completes the handle of an event that has no handler: nothing to do is complete.
    pub(crate) fn complete_empty(&self) {
        if let OutcomeCollector::Event { state, .. } = self {
            let waker = {
                let mut state = state.lock();
                state.ended = true;
                state.waker.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// A job ended without reporting (dropped unsettled): its handler counts as reported, and the
    /// event's handle completes as incomplete once the others have reported, instead of waiting
    /// forever.
    pub(crate) fn lost(&self) {
        if let OutcomeCollector::Event { remaining, state } = self {
            count_down(remaining, state, |state| state.lost = true);
        }
    }

    /// Records one handler's ending. The event handle completes when the last handler reports.
    pub(crate) fn report(
        &self,
        message_id: MessageId,
        handler: &'static str,
        status: HandlerStatus,
        reply: Option<AnyReply>,
    ) {
        match self {
            OutcomeCollector::Event { remaining, state } => {
                count_down(remaining, state, |state| {
                    // A dropped handle (fire and forget) never comes back: keep no reports for it.
                    if !state.dropped {
                        let more = remaining.load(Ordering::Relaxed);
                        state.reports.reserve_exact(more);
                        state.reports.push(HandlerReport { handler, status });
                    }
                });
            }
            OutcomeCollector::Command { tx } => {
                let result = match status {
                    HandlerStatus::Succeeded { .. } => Ok(reply.unwrap_or_else(|| Box::new(()))),
                    HandlerStatus::Failed(failure) => Err(CommandError::Failed(failure)),
                    HandlerStatus::Deduplicated => Err(CommandError::Deduplicated(message_id)),
                    HandlerStatus::Dropped => Err(CommandError::Dropped(message_id)),
                    HandlerStatus::Interrupted | HandlerStatus::Deferred { .. } => {
                        Err(CommandError::Interrupted(message_id))
                    }
                };
                if let Some(tx) = tx.lock().take() {
                    let _ = tx.send(result);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::runtime::Herald;
    use crate::model::envelope::Envelope;
    use crate::model::message::{Message, Payload};
    use futures_util::FutureExt;

    #[derive(Clone, serde::Serialize, serde::Deserialize)]
    struct Ping;

    impl Message for Ping {
        const NAME: &'static str = "handles.ping";
        const KIND: crate::model::message::MessageKind = crate::model::message::MessageKind::Event;
        type Reply = ();
    }

    fn dispatch(herald: &Herald, handlers: usize) -> Arc<Dispatch> {
        Arc::new(Dispatch {
            envelope: Envelope::new(Ping::NAME),
            payload: Payload::new(Ping),
            herald: herald.clone(),
            outcomes: OutcomeCollector::event(handlers),
            due: None,
        })
    }

    fn herald() -> Herald {
        Herald::builder()
            .handlers_under("no_handler_lives_here")
            .build()
            .expect("an empty registry builds")
    }

    #[tokio::test]
    async fn an_awaited_delivery_completes_with_every_report_at_the_last_one() {
        let herald = herald();
        let dispatch = dispatch(&herald, 2);
        let mut delivery = Delivery::new(dispatch.clone());
        assert!((&mut delivery).now_or_never().is_none());
        let id = dispatch.envelope.id;
        dispatch
            .outcomes
            .report(id, "first", HandlerStatus::Deduplicated, None);
        assert!(
            (&mut delivery).now_or_never().is_none(),
            "one handler still to report"
        );
        dispatch
            .outcomes
            .report(id, "second", HandlerStatus::Dropped, None);
        let outcome = delivery.await;
        assert!(outcome.complete);
        assert_eq!(outcome.message_id, id);
        let handlers: Vec<_> = outcome.reports.iter().map(|r| r.handler).collect();
        assert_eq!(handlers, ["first", "second"]);
    }

    #[tokio::test]
    async fn a_dropped_delivery_keeps_no_report() {
        let herald = herald();
        let dispatch = dispatch(&herald, 2);
        drop(Delivery::new(dispatch.clone()));
        let id = dispatch.envelope.id;
        dispatch
            .outcomes
            .report(id, "first", HandlerStatus::Deduplicated, None);
        let OutcomeCollector::Event { state, .. } = &dispatch.outcomes else {
            unreachable!("an event's collector")
        };
        assert!(state.lock().reports.is_empty());
        assert_eq!(state.lock().reports.capacity(), 0);
    }

    #[tokio::test]
    async fn a_lost_job_completes_the_delivery_as_incomplete_with_the_other_reports() {
        let herald = herald();
        let dispatch = dispatch(&herald, 2);
        let delivery = Delivery::new(dispatch.clone());
        let id = dispatch.envelope.id;
        dispatch.outcomes.lost();
        dispatch
            .outcomes
            .report(id, "second", HandlerStatus::Deduplicated, None);
        let outcome = delivery.await;
        assert!(!outcome.complete);
        assert_eq!(outcome.reports.len(), 1);
    }

    #[tokio::test]
    async fn an_event_without_handlers_is_complete_at_once() {
        let herald = herald();
        let dispatch = dispatch(&herald, 0);
        let delivery = Delivery::new(dispatch.clone());
        dispatch.outcomes.complete_empty();
        let outcome = delivery.now_or_never().expect("complete at once");
        assert!(outcome.complete && outcome.reports.is_empty());
    }
}
