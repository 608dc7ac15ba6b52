//! `start_within = "30s"`: the queue-delay deadline of a handler. A job's first attempt that
//! starts later than the deadline after the message's time is logged at warn level and counted
//! (`Counts::start_late`, `LedgerChange::StartLate`, `herald_start_late_total`); the job runs all
//! the same. It measures the wait a message spends before its handler starts (queue, parked
//! behind its key, held by a circuit breaker, rate limit), not the handler's own time (that is
//! `timeout`).

use crate::engine::publish::Dispatch;
use crate::engine::runtime::HandlerRuntime;
use chrono::Utc;
use std::time::Duration;

/// How long the message waited before this attempt: since its delivery time for a message
/// delayed in memory, otherwise since its time (its publish, or its write into an outbox).
pub(crate) fn waited(dispatch: &Dispatch) -> Duration {
    match dispatch.due {
        Some(due) => tokio::time::Instant::now().saturating_duration_since(due),
        None => (Utc::now() - dispatch.envelope.occurred_at)
            .to_std()
            .unwrap_or_default(),
    }
}

/// Checks the first attempt of a job about to start against the handler's `start_within`.
#[inline]
pub(crate) fn check(handler: &HandlerRuntime, dispatch: &Dispatch, attempt: u32) {
    if attempt != 1 {
        // A later attempt waited for its backoff on purpose.
        return;
    }
    if let Some(limit) = handler.desc.options.start_within {
        late(handler, dispatch, limit);
    }
}

fn late(handler: &HandlerRuntime, dispatch: &Dispatch, limit: Duration) {
    let waited = waited(dispatch);
    if waited <= limit {
        return;
    }
    handler.counters.start_late();
    tracing::warn!(
        handler = handler.desc.name,
        message_id = %dispatch.envelope.id,
        message_type = %dispatch.envelope.name,
        waited = ?waited,
        start_within = ?limit,
        "handler started late: the message waited longer than its `start_within` before its first attempt"
    );
}
