//! Routes: a message type forwarded to a [`MessageSink`] (a broker queue, stream or subject),
//! declared on the builder with `.route::<OrderPlaced>().to(sink)`.
//!
//! A route runs as a handler of its message: it has a name in the routing table, a pool, a retry
//! policy, a ledger, dead letters and per-handler progress in the outbox, so everything that
//! holds for a handler holds for a forward. Its attempt publishes the message to the sink and
//! succeeds only on the sink's confirmation (AMQP publisher confirm, JetStream PubAck, `XADD`
//! reply); a refusal, a timeout or a broken connection is a failed attempt, retried after the
//! route's backoff, and the last one goes to the dead letters. Nothing is dropped silently.
//!
//! Two paths reach a route:
//! - **the outbox**: a relay's `Herald::ingest` runs one attempt per delivery of the row, and the
//!   row stays stored (retried with backoff) until the sink confirmed it;
//! - **in-process `publish`**: the route is one more job of the `Delivery`, fire and confirm.
//!
//! Messages with a key go through the route one at a time per key (`ordered`), so one key never
//! has two publishes in flight and the broker receives them in publish order.

use crate::contract::handler::{AnyReply, HandlerDescriptor};
use crate::contract::invocation::Invocation;
use crate::engine::builder::HeraldBuilder;
use crate::model::envelope::Envelope;
use crate::model::error::HandlerError;
use crate::model::message::{Event, MessageKind, Payload};
use crate::model::options::{Backoff, CircuitBreaker, HandlerOptions, OnFailure, RetryPolicy};
use crate::model::stored_message::OutgoingMessage;
use crate::ports::trace;
use crate::ports::transport::{Capabilities, Confirmation, MessageSink};
use futures_util::future::BoxFuture;
use std::fmt;
use std::marker::PhantomData;
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

/// The prefix of every route's handler name: `route:<message>-><destination>`.
pub const ROUTE_PREFIX: &str = "route:";

/// The retry policy of a route unless it sets its own: 10 attempts, exponential backoff from
/// 200 ms doubling up to 30 s, with jitter (a broker restart takes seconds; many rows retrying
/// together should not reconnect together). About two minutes in all before the dead letters.
pub const ROUTE_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 10,
    backoff: Backoff::Exponential {
        initial: Duration::from_millis(200),
        factor: 2.0,
        max: Duration::from_secs(30),
    },
    jitter: true,
};

/// How long a route waits for the sink's confirmation before the attempt counts as failed,
/// unless it sets its own.
pub const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// One route as `build()` receives it from [`RouteBuilder::to`].
pub(crate) struct RouteSpec {
    pub(crate) message: &'static str,
    pub(crate) message_type: &'static str,
    pub(crate) name: Option<String>,
    pub(crate) pool: Option<String>,
    pub(crate) options: HandlerOptions,
    pub(crate) requires: Capabilities,
    pub(crate) sink: Arc<dyn MessageSink>,
    pub(crate) encode: fn(&Payload) -> Result<String, serde_json::Error>,
    pub(crate) location: &'static Location<'static>,
}

impl fmt::Debug for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteSpec")
            .field("message", &self.message)
            .field("destination", &self.sink.destination())
            .field("name", &self.name)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl RouteSpec {
    /// The handler name of the route: the one given, or `route:<message>-><destination>`.
    pub(crate) fn handler_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            format!(
                "{ROUTE_PREFIX}{}->{}",
                self.message,
                self.sink.destination()
            )
        })
    }

    /// The capabilities the route asked for that its sink does not declare, by name.
    pub(crate) fn missing_capabilities(&self) -> Vec<&'static str> {
        let has = self.sink.capabilities();
        let wants = self.requires;
        [
            (
                wants.per_message_ack && !has.per_message_ack,
                "per_message_ack",
            ),
            (wants.native_delay && !has.native_delay, "native_delay"),
            (
                wants.ordered_by_key && !has.ordered_by_key,
                "ordered_by_key",
            ),
            (wants.persistent && !has.persistent, "persistent"),
        ]
        .into_iter()
        .filter_map(|(missing, name)| missing.then_some(name))
        .collect()
    }

    /// The route as a handler descriptor, with its sink to call. The descriptor is leaked: the
    /// engine keeps `&'static HandlerDescriptor`s (the macros' are statics), and a route is
    /// declared once per `build()`, so this costs a few hundred bytes per runtime built.
    pub(crate) fn into_handler(self) -> (&'static HandlerDescriptor, Forward) {
        let name: &'static str = Box::leak(self.handler_name().into_boxed_str());
        let pool: Option<&'static str> = self.pool.map(|pool| &*Box::leak(pool.into_boxed_str()));
        let descriptor = Box::leak(Box::new(HandlerDescriptor {
            name,
            message: self.message,
            message_type: self.message_type,
            kind: MessageKind::Event,
            pool,
            options: self.options,
            module: ROUTE_MODULE,
            file: self.location.file(),
            line: self.location.line(),
            requirements: Vec::new,
            call: called_as_a_handler,
        }));
        (
            descriptor,
            Forward {
                destination: self.sink.destination().into(),
                sink: self.sink,
                encode: self.encode,
            },
        )
    }
}

/// The module a route's descriptor names: routes are declared on the builder, not in a module.
const ROUTE_MODULE: &str = "herald::route";

/// The `call` of a route's descriptor. The worker calls [`Forward::publish`] for a route instead;
/// this only answers a caller that takes the descriptor and calls it by hand.
fn called_as_a_handler(_: Invocation) -> BoxFuture<'static, Result<AnyReply, HandlerError>> {
    Box::pin(async {
        Err(HandlerError::permanent(HandlerError::msg(
            "a route's descriptor cannot be called as a handler: its runtime publishes to the sink",
        )))
    })
}

/// What a route's attempt does: encode the payload and publish it to the sink.
pub(crate) struct Forward {
    sink: Arc<dyn MessageSink>,
    /// The sink's destination, named once for every error message.
    destination: Arc<str>,
    encode: fn(&Payload) -> Result<String, serde_json::Error>,
}

impl fmt::Debug for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forward")
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

impl Forward {
    /// Where the route publishes to.
    pub(crate) fn destination(&self) -> String {
        self.sink.destination()
    }

    /// One attempt: the message is published and confirmed, or the attempt failed (retryable,
    /// except a payload that does not serialize, which no retry can fix).
    pub(crate) fn publish(
        &self,
        envelope: &Envelope,
        payload: &Payload,
    ) -> BoxFuture<'static, Result<AnyReply, HandlerError>> {
        let message = (self.encode)(payload).map(|payload| {
            let mut envelope = envelope.clone();
            // Called inside the attempt's `send` span: it becomes the parent of the consumer's.
            trace::capture_replacing(&mut envelope.headers);
            OutgoingMessage { envelope, payload }
        });
        let sink = self.sink.clone();
        let destination = self.destination.clone();
        Box::pin(async move {
            let message = message.map_err(|error| {
                HandlerError::permanent(HandlerError::msg(format!(
                    "the payload does not serialize to JSON: {error}"
                )))
            })?;
            let confirmations = sink.publish(vec![message]).await.map_err(|error| {
                HandlerError::msg(format!("publishing to {destination} failed: {error}"))
            })?;
            match confirmations.into_iter().next() {
                Some(Confirmation::Confirmed) => Ok(Box::new(()) as AnyReply),
                Some(Confirmation::Failed { reason }) => Err(HandlerError::msg(format!(
                    "{destination} refused the message: {reason}"
                ))),
                None => Err(HandlerError::msg(format!(
                    "{destination} answered for no message of a batch of one; counted as not confirmed"
                ))),
            }
        })
    }
}

fn encode_payload<E: Event>(payload: &Payload) -> Result<String, serde_json::Error> {
    match payload.downcast_ref::<E>() {
        Some(message) => serde_json::to_string(message),
        None => serde_json::to_string(&payload.to_json()),
    }
}

/// Declares where one message type is forwarded; made by [`HeraldBuilder::route`], finished by
/// [`to`](Self::to).
///
/// ```ignore
/// let herald = Herald::builder()
///     .route::<OrderPlaced>().to(rabbit.clone())          // default name, retries, timeout
///     .route::<OrderPlaced>()
///         .named("orders-audit")
///         .retry(RetryPolicy { max_attempts: 5, ..RetryPolicy::DEFAULT })
///         .requires(Capabilities::none().with_persistent())
///         .to(audit_stream.clone())
///     .build()?;
/// ```
#[must_use = "a route does nothing until `.to(sink)` finishes it"]
pub struct RouteBuilder<E> {
    builder: HeraldBuilder,
    name: Option<String>,
    pool: Option<String>,
    options: HandlerOptions,
    requires: Capabilities,
    location: &'static Location<'static>,
    message: PhantomData<fn() -> E>,
}

impl<E> fmt::Debug for RouteBuilder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteBuilder")
            .field("message", &std::any::type_name::<E>())
            .field("name", &self.name)
            .field("pool", &self.pool)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<E: Event> RouteBuilder<E> {
    pub(crate) fn new(builder: HeraldBuilder, location: &'static Location<'static>) -> Self {
        RouteBuilder {
            builder,
            name: None,
            pool: None,
            options: HandlerOptions {
                retry: ROUTE_RETRY,
                timeout: Some(ROUTE_TIMEOUT),
                on_failure: OnFailure::DeadLetter,
                rate: None,
                dedupe: false,
                ordered: E::HAS_KEY,
                circuit_breaker: None,
                start_within: None,
            },
            requires: Capabilities::none(),
            location,
            message: PhantomData,
        }
    }

    /// Names the route in the routing table, the ledger, the dead letters and the outbox's
    /// progress (default `route:<message>-><destination>`). Once messages are stored, keep the
    /// name: a row's progress remembers routes by name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Runs the route's publishes on a named pool (default: the default pool). Its concurrency
    /// bounds the publishes awaiting a confirmation at once.
    pub fn pool(mut self, pool: impl Into<String>) -> Self {
        self.pool = Some(pool.into());
        self
    }

    /// How often and after what delay a publish that was not confirmed is tried again (default
    /// [`ROUTE_RETRY`]); after the last attempt the message goes to the dead letters.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.options.retry = retry;
        self
    }

    /// How long an attempt waits for the sink's confirmation (default [`ROUTE_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// What happens after the last failed attempt (default: the dead letters).
    pub fn on_failure(mut self, on_failure: OnFailure) -> Self {
        self.options.on_failure = on_failure;
        self
    }

    /// Stops publishing to a sink that keeps failing (see [`CircuitBreaker`]): after
    /// `failures` unconfirmed publishes in a row, the route's messages wait `open_for` without
    /// spending attempts, then one publish probes the sink.
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.options.circuit_breaker = Some(breaker);
        self
    }

    /// Capabilities the sink must declare, checked by `build()` (e.g. `persistent` for a route
    /// that must survive a broker restart).
    pub fn requires(mut self, capabilities: Capabilities) -> Self {
        self.requires = capabilities;
        self
    }

    /// Finishes the route: messages of type `E` are forwarded to `sink` (a transport bound to its
    /// destination: a RabbitMQ exchange or queue, a NATS subject, a Redis stream). The same sink
    /// may serve several routes.
    pub fn to(self, sink: Arc<dyn MessageSink>) -> HeraldBuilder {
        let spec = RouteSpec {
            message: E::NAME,
            message_type: std::any::type_name::<E>(),
            name: self.name,
            pool: self.pool,
            options: self.options,
            requires: self.requires,
            sink,
            encode: encode_payload::<E>,
            location: self.location,
        };
        self.builder.with_route(spec)
    }
}

impl HeraldBuilder {
    /// Starts a route: every `E` published (in process or through an outbox relay) is also
    /// forwarded to a sink, confirmed by it, retried with backoff when it is not, and
    /// dead-lettered after the last attempt. Finish it with [`RouteBuilder::to`].
    #[track_caller]
    pub fn route<E: Event>(self) -> RouteBuilder<E> {
        RouteBuilder::new(self, Location::caller())
    }
}
