//! How a message ended for each of its handlers: plain data, as handles and observers report it.

use crate::model::envelope::MessageId;
use crate::model::error::{HandlerError, HandlerFailure};

/// How one handler ended for one message.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum HandlerStatus {
    /// The handler succeeded on attempt `attempts`.
    Succeeded {
        /// Attempts made (1 = first try).
        attempts: u32,
    },
    /// Every attempt failed; the failure says where the message went.
    Failed(HandlerFailure),
    /// Skipped: the handler had already completed this id (`dedupe`, or a durable inbox that found
    /// it committed). A re-send that arrives while the first run is still going waits for that run:
    /// it is a duplicate only if the first run succeeds, and runs itself if the first one fails.
    Deduplicated,
    /// Dropped on overflow (`DropNewest`/`DropOldest`); it is in the dead letters with reason `overflow`.
    Dropped,
    /// The runtime shut down first; it is in the dead letters with reason `shutdown`.
    Interrupted,
    /// A single attempt (relay delivery) failed before the last attempt: the relay keeps the message
    /// stored and schedules the next attempt.
    Deferred {
        /// The attempt that failed.
        attempt: u32,
        /// Its error.
        error: HandlerError,
    },
}

/// One handler's part of an event's outcome.
#[derive(Debug, Clone)]
pub struct HandlerReport {
    /// The handler.
    pub handler: &'static str,
    /// How it ended.
    pub status: HandlerStatus,
}

/// The outcome of a published event: one report per handler.
#[derive(Debug, Clone)]
pub struct EventOutcome {
    /// The event's id.
    pub message_id: MessageId,
    /// One report per handler, in the order they finished (empty for an event with no handler).
    pub reports: Vec<HandlerReport>,
    /// False when the runtime went away before every handler reported. True for an event with no
    /// handler: nothing to do is complete.
    pub complete: bool,
}

impl EventOutcome {
    /// Every handler succeeded (or had already handled this id).
    pub fn is_success(&self) -> bool {
        self.complete
            && self.reports.iter().all(|r| {
                matches!(
                    r.status,
                    HandlerStatus::Succeeded { .. } | HandlerStatus::Deduplicated
                )
            })
    }

    /// The failures, if any.
    pub fn failures(&self) -> impl Iterator<Item = &HandlerFailure> {
        self.reports.iter().filter_map(|r| match &r.status {
            HandlerStatus::Failed(failure) => Some(failure),
            _ => None,
        })
    }
}
