//! Trace context across hops: the seam an OpenTelemetry integration plugs into, so that one trace
//! shows request → outbox → relay → broker → handler without `herald-core` depending on
//! OpenTelemetry.
//!
//! Herald itself emits [`tracing`] spans named after the OpenTelemetry messaging semantic
//! conventions (`otel.kind`, `messaging.system`, `messaging.operation.type`,
//! `messaging.destination.name`, `messaging.message.id`, see `docs/OBSERVABILITY.md`) and carries
//! the W3C trace context of a message as two of its headers, [`TRACEPARENT_HEADER`] and
//! [`TRACESTATE_HEADER`]: in the outbox row, in the wire envelope's `traceparent` slot, in every
//! broker's copy. What it cannot do alone is read the trace context of the *current* span, or make
//! a remote context the parent of a span: that is what a [`TracePropagator`] does, installed once
//! per process with [`set_propagator`] (`herald_web::otel` has one over `tracing-opentelemetry`).
//!
//! With no propagator installed, a publish costs one atomic load more and nothing is captured
//! (a `traceparent` header the caller set is still carried as it is).

use crate::model::envelope::Headers;
use std::sync::OnceLock;

pub use crate::model::wire::TRACEPARENT_HEADER;

/// The header a W3C `tracestate` is kept under, beside [`TRACEPARENT_HEADER`].
pub const TRACESTATE_HEADER: &str = "tracestate";

/// A W3C trace context, as the two header values of
/// [Trace Context](https://www.w3.org/TR/trace-context/).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TraceContext {
    /// `traceparent`: `00-<trace id>-<parent span id>-<flags>`.
    pub traceparent: String,
    /// `tracestate`: vendor entries, when there are any.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// A context from its `traceparent` (and no `tracestate`).
    pub fn new(traceparent: impl Into<String>) -> Self {
        TraceContext {
            traceparent: traceparent.into(),
            tracestate: None,
        }
    }

    /// With a `tracestate`.
    #[must_use]
    pub fn with_tracestate(mut self, tracestate: impl Into<String>) -> Self {
        self.tracestate = Some(tracestate.into());
        self
    }

    /// The context a message carries in its headers, if it carries one.
    pub fn from_headers(headers: &Headers) -> Option<Self> {
        let traceparent = headers.extra.get(TRACEPARENT_HEADER)?;
        Some(TraceContext {
            traceparent: traceparent.clone(),
            tracestate: headers.extra.get(TRACESTATE_HEADER).cloned(),
        })
    }

    /// Writes the context into `headers` (replacing the one there, and removing a `tracestate`
    /// that no longer belongs to it).
    pub fn write_to(self, headers: &mut Headers) {
        headers
            .extra
            .insert(TRACEPARENT_HEADER.to_owned(), self.traceparent);
        match self.tracestate {
            Some(state) => {
                headers.extra.insert(TRACESTATE_HEADER.to_owned(), state);
            }
            None => {
                headers.extra.remove(TRACESTATE_HEADER);
            }
        }
    }
}

/// Reads and continues trace contexts for Herald; installed once per process with
/// [`set_propagator`]. Both methods run inline on the publishing or handling task: keep them
/// short.
pub trait TracePropagator: Send + Sync + 'static {
    /// The context of the current span (`tracing::Span::current()`), to store with a message being
    /// published; `None` when there is none to propagate (no OpenTelemetry layer, an invalid or
    /// unsampled-and-unpropagated context).
    fn current(&self) -> Option<TraceContext>;

    /// Makes `context` the parent of `span`, a span Herald just created and has not entered yet
    /// (a handler attempt continuing the trace of the message it handles).
    fn set_parent(&self, span: &tracing::Span, context: &TraceContext);
}

/// [`set_propagator`] was called before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a trace propagator is already installed in this process; install it once, at start-up")]
#[non_exhaustive]
pub struct PropagatorAlreadySet;

static PROPAGATOR: OnceLock<Box<dyn TracePropagator>> = OnceLock::new();

/// Installs the process's trace propagator (once, at start-up, like the `tracing` subscriber).
///
/// # Errors
/// [`PropagatorAlreadySet`] when one is installed already (it stays).
pub fn set_propagator(propagator: impl TracePropagator) -> Result<(), PropagatorAlreadySet> {
    PROPAGATOR
        .set(Box::new(propagator))
        .map_err(|_| PropagatorAlreadySet)
}

/// The installed trace propagator, if any.
pub fn propagator() -> Option<&'static dyn TracePropagator> {
    PROPAGATOR.get().map(|boxed| &**boxed)
}

/// Captures the current span's context into `headers` at publish time, unless the caller already
/// set a `traceparent` header (an explicit context wins). Only the SQL outbox calls it.
#[inline]
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) fn capture(headers: &mut Headers) {
    if let Some(propagator) = propagator() {
        capture_with(propagator, headers, false);
    }
}

/// As [`capture`], inside `span` when there is one.
#[inline]
pub(crate) fn capture_in(span: Option<&tracing::Span>, headers: &mut Headers) {
    if let Some(propagator) = propagator() {
        match span {
            Some(span) => span.in_scope(|| capture_with(propagator, headers, false)),
            None => capture_with(propagator, headers, false),
        }
    }
}

/// As [`capture`] from inside the span, replacing a context already there: a hop (a route's
/// publish) that continues a trace hands its own span on as the parent of the next.
#[inline]
pub(crate) fn capture_replacing(headers: &mut Headers) {
    if let Some(propagator) = propagator() {
        capture_with(propagator, headers, true);
    }
}

#[inline(never)]
fn capture_with(propagator: &dyn TracePropagator, headers: &mut Headers, replace: bool) {
    if !replace && headers.extra.contains_key(TRACEPARENT_HEADER) {
        return;
    }
    if let Some(context) = propagator.current() {
        context.write_to(headers);
    }
}

/// Makes the context carried in `headers` the parent of `span`, when a propagator is installed,
/// the span is enabled, and the message carries a context.
#[inline]
pub(crate) fn continue_trace(span: &tracing::Span, headers: &Headers) {
    if span.is_disabled() {
        return;
    }
    if let Some(propagator) = propagator() {
        if let Some(context) = TraceContext::from_headers(headers) {
            propagator.set_parent(span, &context);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_round_trips_through_headers() {
        let mut headers = Headers::default();
        assert_eq!(TraceContext::from_headers(&headers), None);
        let context = TraceContext::new("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .with_tracestate("vendor=1");
        context.clone().write_to(&mut headers);
        assert_eq!(TraceContext::from_headers(&headers), Some(context));
        // A context without a tracestate removes the old one.
        TraceContext::new("00-11111111111111111111111111111111-2222222222222222-01")
            .write_to(&mut headers);
        assert_eq!(headers.extra.get(TRACESTATE_HEADER), None);
    }
}
