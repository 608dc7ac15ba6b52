//! Handles returned by `publish` and `send`: await one for the outcome, or drop it to fire and forget;
//! and the collector that fills them as handlers end.

use crate::contract::handler::AnyReply;
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
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// Handle to a published event. Await it for the [`EventOutcome`]; drop it to fire and forget.
#[derive(Debug)]
#[must_use = "await the delivery for the outcome, or drop it explicitly to fire and forget"]
pub struct Delivery {
    message_id: MessageId,
    rx: oneshot::Receiver<EventOutcome>,
}

impl Delivery {
    pub(crate) fn new(message_id: MessageId, rx: oneshot::Receiver<EventOutcome>) -> Self {
        Delivery { message_id, rx }
    }

    /// The event's id.
    pub fn message_id(&self) -> MessageId {
        self.message_id
    }
}

impl Future for Delivery {
    type Output = EventOutcome;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<EventOutcome> {
        let message_id = self.message_id;
        Pin::new(&mut self.rx).poll(cx).map(|received| {
            received.unwrap_or(EventOutcome {
                message_id,
                reports: Vec::new(),
                complete: false,
            })
        })
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
        remaining: AtomicUsize,
        reports: Mutex<Vec<HandlerReport>>,
        tx: Mutex<Option<oneshot::Sender<EventOutcome>>>,
    },
    Command {
        tx: Mutex<Option<oneshot::Sender<Result<AnyReply, CommandError>>>>,
    },
}

impl OutcomeCollector {
    pub(crate) fn event(handlers: usize) -> (Self, oneshot::Receiver<EventOutcome>) {
        let (tx, rx) = oneshot::channel();
        let sink = OutcomeCollector::Event {
            remaining: AtomicUsize::new(handlers),
            // Allocated at the first report, and only if someone awaits the outcome.
            reports: Mutex::new(Vec::new()),
            tx: Mutex::new(Some(tx)),
        };
        (sink, rx)
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
    pub(crate) fn complete_empty(&self, message_id: MessageId) {
        if let OutcomeCollector::Event { tx, .. } = self {
            if let Some(tx) = tx.lock().take() {
                let _ = tx.send(EventOutcome {
                    message_id,
                    reports: Vec::new(),
                    complete: true,
                });
            }
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
            OutcomeCollector::Event {
                remaining,
                reports,
                tx,
            } => {
                // A dropped handle (fire and forget) never comes back: keep no reports for it.
                let awaited = tx.lock().as_ref().is_some_and(|tx| !tx.is_closed());
                if awaited {
                    let mut reports = reports.lock();
                    reports.reserve_exact(remaining.load(Ordering::Relaxed));
                    reports.push(HandlerReport { handler, status });
                }
                if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    if let Some(tx) = tx.lock().take().filter(|tx| !tx.is_closed()) {
                        let reports = std::mem::take(&mut *reports.lock());
                        // The caller may still drop the handle before this lands: fire and forget.
                        let _ = tx.send(EventOutcome {
                            message_id,
                            reports,
                            complete: true,
                        });
                    }
                }
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
