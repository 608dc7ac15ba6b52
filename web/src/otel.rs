//! OpenTelemetry trace propagation for Herald (feature `otel`): one trace runs from the request
//! that published a message, through the outbox, the relay and a broker, to every handler, even
//! hours later.
//!
//! `herald-core` emits `tracing` spans named after the OpenTelemetry messaging semantic
//! conventions (a `publish` or outbox `create` span of kind producer, a relay's `receive` batch, a
//! route's `send` and a handler's `process` attempt) and stores the W3C `traceparent` and
//! `tracestate` of a message in its headers (`docs/OBSERVABILITY.md`). [`install`] gives it the
//! [`OtelPropagator`], which reads the current span's OpenTelemetry context when a message is
//! published and makes a message's context the parent of its attempt spans. The spans reach your
//! exporter through the `tracing-opentelemetry` layer of your subscriber:
//!
//! ```no_run
//! use opentelemetry::trace::TracerProvider as _;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build(); // + an exporter
//! let subscriber = tracing_subscriber::registry()
//!     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("my-service")));
//! tracing::subscriber::set_global_default(subscriber)?;
//! herald_web::otel::install()?;
//! # Ok(()) }
//! ```
//!
//! The versions are one compatible set: `opentelemetry` 0.33, `opentelemetry_sdk` 0.33,
//! `tracing-opentelemetry` 0.34; use the same ones in the application.

use herald_core::ports::trace::{
    set_propagator, PropagatorAlreadySet, TraceContext, TracePropagator, TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Installs the [`OtelPropagator`] as the process's Herald trace propagator (once, at start-up,
/// beside the `tracing` subscriber).
///
/// # Errors
/// [`PropagatorAlreadySet`] when a propagator was installed before (it stays).
pub fn install() -> Result<(), PropagatorAlreadySet> {
    set_propagator(OtelPropagator::new())
}

/// Reads and continues W3C trace contexts through `tracing-opentelemetry`'s span extension and
/// the W3C [`TraceContextPropagator`].
#[derive(Debug, Default)]
pub struct OtelPropagator {
    propagator: TraceContextPropagator,
}

impl OtelPropagator {
    /// The W3C Trace Context propagator.
    pub fn new() -> Self {
        Self::default()
    }
}

impl TracePropagator for OtelPropagator {
    fn current(&self) -> Option<TraceContext> {
        let context = tracing::Span::current().context();
        if !context.span().span_context().is_valid() {
            return None;
        }
        let mut carrier: HashMap<String, String> = HashMap::with_capacity(2);
        self.propagator.inject_context(&context, &mut carrier);
        let traceparent = carrier.remove(TRACEPARENT_HEADER)?;
        let mut trace = TraceContext::new(traceparent);
        if let Some(state) = carrier.remove(TRACESTATE_HEADER).filter(|s| !s.is_empty()) {
            trace = trace.with_tracestate(state);
        }
        Some(trace)
    }

    fn set_parent(&self, span: &tracing::Span, context: &TraceContext) {
        let mut carrier: HashMap<String, String> = HashMap::with_capacity(2);
        carrier.insert(TRACEPARENT_HEADER.to_owned(), context.traceparent.clone());
        if let Some(state) = &context.tracestate {
            carrier.insert(TRACESTATE_HEADER.to_owned(), state.clone());
        }
        let parent = self.propagator.extract(&carrier);
        if parent.span().span_context().is_valid() {
            // Fails only without the OpenTelemetry layer, or for a span already started: the span
            // then keeps its contextual parent.
            let _ = span.set_parent(parent);
        }
    }
}
