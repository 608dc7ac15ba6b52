//! Deadline SLAs as data: "after message A, expect message B (or handler H to complete) within T,
//! correlated by a key". The declaration ([`Sla`], built with [`Sla::named`]), the event a missed
//! deadline becomes ([`SlaBreached`]), and the records a store keeps ([`SlaExpectation`],
//! [`SlaStatus`]).
//!
//! ```
//! use herald_core::{Message, MessageKind, Sla};
//! use std::time::Duration;
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct OrderPlaced { order_id: u64 }
//! # impl Message for OrderPlaced { const NAME: &'static str = "order.placed";
//! #   const KIND: MessageKind = MessageKind::Event; type Reply = (); }
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct OrderShipped { order_id: u64 }
//! # impl Message for OrderShipped { const NAME: &'static str = "order.shipped";
//! #   const KIND: MessageKind = MessageKind::Event; type Reply = (); }
//! let sla = Sla::named("order-shipped")
//!     .after::<OrderPlaced>()
//!     .expect::<OrderShipped>()
//!     .within(Duration::from_secs(3600))
//!     .correlate(|placed| placed.order_id.to_string(), |shipped| shipped.order_id.to_string());
//! assert_eq!(sla.name(), "order-shipped");
//! ```

use crate::model::envelope::MessageId;
use crate::model::message::{Event, Message, MessageDescriptor, MessageKind, Payload};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

/// The longest SLA name a store keeps (the SQL column's bound).
pub const MAX_SLA_NAME: usize = 255;

/// A correlation function with its message type erased: `None` when the value is not of the
/// declared type.
type KeyFn = Arc<dyn Fn(&dyn Any) -> Option<String> + Send + Sync>;

/// A deadline contract: after message A, expect message B (or a handler's completion) within a
/// time, both correlated by a key. Build it with [`Sla::named`] and register it with
/// [`HeraldBuilder::sla`](crate::HeraldBuilder::sla). Cheap to clone.
///
/// Each A opens an *expectation* (the SLA's name, A's key, A's message id, due at A's time plus
/// the deadline). The first B with the same key fulfils every open expectation of the key: on time
/// when B happened by the due time, `fulfilled_late` otherwise. An expectation still open at its
/// due time is *breached*: Herald emits an [`SlaBreached`] event, which handlers can act on. See
/// `docs/SLAS.md`.
#[derive(Clone)]
pub struct Sla {
    pub(crate) name: String,
    pub(crate) after: &'static str,
    pub(crate) after_type: &'static str,
    after_key: KeyFn,
    pub(crate) expected: Expected,
    expected_key: KeyFn,
    pub(crate) within: Option<Duration>,
    pub(crate) location: &'static Location<'static>,
}

impl fmt::Debug for Sla {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sla")
            .field("name", &self.name)
            .field("after", &self.after)
            .field("expected", &self.expected)
            .field("within", &self.within)
            .field("location", &format_args!("{}", self.location))
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Sla {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: after {} expect {}",
            self.name, self.after, self.expected
        )?;
        if let Some(within) = self.within {
            write!(f, " within {within:?}")?;
        }
        write!(f, " ({}:{})", self.location.file(), self.location.line())
    }
}

/// What fulfils an SLA's expectation. (The variants are not named after `Message` and
/// `Handler`: a public item named `Message` would make rustc print the trait's full path in
/// every error that names it.)
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expected {
    /// A message arriving: published, stored in an outbox, or received.
    Arrival {
        /// Its wire name.
        message: &'static str,
        /// Its Rust type.
        rust_type: &'static str,
    },
    /// A handler completing (succeeding on) a message.
    Completion {
        /// The handler's name.
        handler: String,
        /// The wire name of the message it handles.
        message: &'static str,
        /// That message's Rust type.
        rust_type: &'static str,
    },
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Arrival { message, .. } => f.write_str(message),
            Expected::Completion {
                handler, message, ..
            } => write!(f, "handler {handler} to complete {message}"),
        }
    }
}

impl Sla {
    /// Starts declaring an SLA. The name identifies its expectations in the store and in the
    /// [`SlaBreached`] events: keep it stable once expectations are stored.
    #[track_caller]
    pub fn named(name: impl Into<String>) -> SlaBuilder {
        SlaBuilder {
            name: name.into(),
            location: Location::caller(),
        }
    }

    /// The SLA's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The wire name of the message that opens an expectation.
    pub fn after(&self) -> &'static str {
        self.after
    }

    /// What fulfils it.
    pub fn expected(&self) -> &Expected {
        &self.expected
    }

    /// The deadline, counted from A's time (`None` until [`SlaExpect::within`] sets it; `build()`
    /// refuses an SLA without one).
    pub fn within(&self) -> Option<Duration> {
        self.within
    }

    /// Where it was declared.
    pub fn location(&self) -> &'static Location<'static> {
        self.location
    }

    /// The key of an A (`None` when `message` is not the SLA's A type).
    pub fn key_of_after(&self, message: &dyn Any) -> Option<String> {
        (self.after_key)(message)
    }

    /// The key of a B, or of the message a fulfilling handler completed (`None` when `message`
    /// is not of that type).
    pub fn key_of_expected(&self, message: &dyn Any) -> Option<String> {
        (self.expected_key)(message)
    }

    /// The wire name of the message whose arrival (or whose handler's completion) fulfils it.
    pub fn expected_message(&self) -> &'static str {
        match &self.expected {
            Expected::Arrival { message, .. } => message,
            Expected::Completion { message, .. } => message,
        }
    }

    /// The handler that fulfils it, when it expects a handler.
    pub fn expected_handler(&self) -> Option<&str> {
        match &self.expected {
            Expected::Completion { handler, .. } => Some(handler),
            Expected::Arrival { .. } => None,
        }
    }

    /// When an expectation opened by an A at `occurred_at` is due (the latest time a B may
    /// happen on time).
    pub fn due_at(&self, occurred_at: DateTime<Utc>) -> DateTime<Utc> {
        let within = self.within.unwrap_or_default();
        chrono::Duration::from_std(within)
            .ok()
            .and_then(|within| occurred_at.checked_add_signed(within))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// What is wrong with the declaration, each as a sentence that says the fix.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let at = format!("{}:{}", self.location.file(), self.location.line());
        if self.name.trim().is_empty() {
            problems.push(format!(
                "an SLA ({at}) has an empty name: give it one, e.g. Sla::named(\"order-shipped\")"
            ));
        }
        if self.name.len() > MAX_SLA_NAME {
            problems.push(format!(
                "the name of SLA `{}` ({at}) is {} bytes long: keep it within {MAX_SLA_NAME}",
                self.name,
                self.name.len()
            ));
        }
        match self.within {
            None => problems.push(format!(
                "SLA `{}` ({at}) has no deadline: add `.within(Duration::from_secs(..))` before `.correlate(..)`",
                self.name
            )),
            Some(within) if within.is_zero() => problems.push(format!(
                "SLA `{}` ({at}) has a deadline of zero, so every expectation would be breached as it opens: use a deadline above zero",
                self.name
            )),
            Some(_) => {}
        }
        if let Expected::Arrival { message: name, .. } = self.expected {
            if name == self.after {
                problems.push(format!(
                    "SLA `{}` ({at}) expects `{name}` after `{name}`: each would fulfil its own expectation; expect another message, or a handler with `.expect_handler::<{}>(\"handler name\")`",
                    self.name, self.after_type
                ));
            }
        }
        problems
    }
}

/// [`Sla::named`]: next, the message that opens an expectation.
#[derive(Debug)]
#[must_use = "an SLA does nothing until it is finished with `.correlate(..)` and registered with `HeraldBuilder::sla`"]
pub struct SlaBuilder {
    name: String,
    location: &'static Location<'static>,
}

impl SlaBuilder {
    /// Every `A` opens an expectation.
    pub fn after<A: Message>(self) -> SlaAfter<A> {
        SlaAfter {
            name: self.name,
            location: self.location,
            _after: PhantomData,
        }
    }
}

/// [`SlaBuilder::after`]: next, what fulfils the expectation.
#[must_use = "an SLA does nothing until it is finished with `.correlate(..)` and registered with `HeraldBuilder::sla`"]
pub struct SlaAfter<A> {
    name: String,
    location: &'static Location<'static>,
    _after: PhantomData<fn() -> A>,
}

impl<A> fmt::Debug for SlaAfter<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlaAfter")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<A: Message> SlaAfter<A> {
    /// A message `B` fulfils it: published, stored in an outbox, or received by a relay.
    pub fn expect<B: Message>(self) -> SlaExpect<A, B> {
        SlaExpect {
            name: self.name,
            location: self.location,
            expected: Expected::Arrival {
                message: B::NAME,
                rust_type: std::any::type_name::<B>(),
            },
            within: None,
            _types: PhantomData,
        }
    }

    /// The handler named `handler`, which handles message `M`, fulfils it when it succeeds on an
    /// `M` (a route's name works too: its confirmed forward). `build()` checks that the handler
    /// exists and handles `M`.
    pub fn expect_handler<M: Message>(self, handler: impl Into<String>) -> SlaExpect<A, M> {
        SlaExpect {
            name: self.name,
            location: self.location,
            expected: Expected::Completion {
                handler: handler.into(),
                message: M::NAME,
                rust_type: std::any::type_name::<M>(),
            },
            within: None,
            _types: PhantomData,
        }
    }
}

/// [`SlaAfter::expect`] or [`SlaAfter::expect_handler`]: next, the deadline
/// ([`within`](Self::within)) and the correlation ([`correlate`](Self::correlate)).
#[must_use = "an SLA does nothing until it is finished with `.correlate(..)` and registered with `HeraldBuilder::sla`"]
pub struct SlaExpect<A, B> {
    name: String,
    location: &'static Location<'static>,
    expected: Expected,
    within: Option<Duration>,
    _types: PhantomData<fn() -> (A, B)>,
}

impl<A, B> fmt::Debug for SlaExpect<A, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlaExpect")
            .field("name", &self.name)
            .field("expected", &self.expected)
            .field("within", &self.within)
            .finish_non_exhaustive()
    }
}

impl<A: Message, B: Message> SlaExpect<A, B> {
    /// The deadline, counted from A's time (its publish).
    pub fn within(mut self, deadline: Duration) -> Self {
        self.within = Some(deadline);
        self
    }

    /// How an A and a B name the thing they are about (an order id): a B fulfils the open
    /// expectations whose A gave the same key. Finishes the SLA.
    pub fn correlate(
        self,
        after: impl Fn(&A) -> String + Send + Sync + 'static,
        expected: impl Fn(&B) -> String + Send + Sync + 'static,
    ) -> Sla {
        Sla {
            name: self.name,
            after: A::NAME,
            after_type: std::any::type_name::<A>(),
            after_key: Arc::new(move |message: &dyn Any| message.downcast_ref::<A>().map(&after)),
            expected: self.expected,
            expected_key: Arc::new(move |message: &dyn Any| {
                message.downcast_ref::<B>().map(&expected)
            }),
            within: self.within,
            location: self.location,
        }
    }

    /// Correlates by the messages' ordering keys (`#[event(key = ..)]`): an A or a B without a
    /// key opens or fulfils nothing. Finishes the SLA.
    pub fn correlate_by_key(self) -> Sla {
        Sla {
            name: self.name,
            after: A::NAME,
            after_type: std::any::type_name::<A>(),
            after_key: Arc::new(|message: &dyn Any| message.downcast_ref::<A>()?.key()),
            expected: self.expected,
            expected_key: Arc::new(|message: &dyn Any| message.downcast_ref::<B>()?.key()),
            within: self.within,
            location: self.location,
        }
    }
}

/// An SLA's expectation missed its deadline: nothing fulfilled it by `due_at`. Emitted once per
/// expectation, by whichever sweeper marks it breached (with a SQL store: written into the outbox
/// in the same transaction, so it is never lost and never emitted twice). Handle it like any
/// event: `#[async_handler] async fn escalate(breach: SlaBreached) { .. }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaBreached {
    /// The SLA's name.
    pub sla: String,
    /// The correlation key of the A that opened the expectation.
    pub key: String,
    /// The message id of that A.
    pub a_message_id: MessageId,
    /// When the expectation was due.
    pub due_at: DateTime<Utc>,
    /// When the sweeper marked it breached.
    pub breached_at: DateTime<Utc>,
}

// Not suggested by rustc when a user's type is not a message ("the trait `Message` is
// implemented for `SlaBreached`" would only distract from the fix the trait's note gives).
#[diagnostic::do_not_recommend]
impl Message for SlaBreached {
    const NAME: &'static str = "herald.sla_breached";
    const KIND: MessageKind = MessageKind::Event;
    type Reply = ();
}

impl Event for SlaBreached {}

inventory::submit!(MessageDescriptor {
    name: SlaBreached::NAME,
    kind: MessageKind::Event,
    rust_type: "SlaBreached",
    module: module_path!(),
    file: file!(),
    line: line!(),
    decode: Payload::decode::<SlaBreached>,
});

/// Where an expectation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExpectationState {
    /// Open: nothing has fulfilled it, and it is not due yet (or the sweeper has not seen it).
    Pending,
    /// A B (or the handler's completion) happened by the due time.
    Fulfilled,
    /// It was fulfilled after its due time, or after it was breached.
    FulfilledLate,
    /// Due with nothing fulfilling it: its [`SlaBreached`] was emitted.
    Breached,
}

impl ExpectationState {
    /// Every state, in this order.
    pub const ALL: [ExpectationState; 4] = [
        ExpectationState::Pending,
        ExpectationState::Fulfilled,
        ExpectationState::FulfilledLate,
        ExpectationState::Breached,
    ];

    /// The stored word: `pending`, `fulfilled`, `fulfilled_late`, `breached`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectationState::Pending => "pending",
            ExpectationState::Fulfilled => "fulfilled",
            ExpectationState::FulfilledLate => "fulfilled_late",
            ExpectationState::Breached => "breached",
        }
    }

    /// Reads a stored word.
    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == word)
    }

    /// Whether a B arriving now fulfils it (open, or breached and still waiting for a late B).
    pub fn accepts_fulfilment(self) -> bool {
        matches!(self, ExpectationState::Pending | ExpectationState::Breached)
    }

    /// The state a B that happened at `at` moves it to: on time only while it is open and `at`
    /// is not after `due_at`.
    pub fn fulfilled_at(self, at: DateTime<Utc>, due_at: DateTime<Utc>) -> Self {
        if self == ExpectationState::Pending && at <= due_at {
            ExpectationState::Fulfilled
        } else {
            ExpectationState::FulfilledLate
        }
    }
}

impl fmt::Display for ExpectationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An expectation to open: written when an A is stored, published or received.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewExpectation {
    /// The SLA's name.
    pub sla: String,
    /// A's correlation key.
    pub key: String,
    /// A's message id (an expectation is opened once per SLA and A).
    pub a_message_id: MessageId,
    /// When A happened.
    pub opened_at: DateTime<Utc>,
    /// A's time plus the deadline.
    pub due_at: DateTime<Utc>,
}

impl NewExpectation {
    /// The expectation `sla` opens for an A with this key, id and time.
    pub fn new(
        sla: &Sla,
        key: String,
        a_message_id: MessageId,
        occurred_at: DateTime<Utc>,
    ) -> Self {
        NewExpectation {
            sla: sla.name.clone(),
            key,
            a_message_id,
            opened_at: occurred_at,
            due_at: sla.due_at(occurred_at),
        }
    }
}

/// One expectation a fulfilment moved, and where to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fulfilment {
    /// The A that opened it.
    pub a_message_id: MessageId,
    /// [`Fulfilled`](ExpectationState::Fulfilled) or
    /// [`FulfilledLate`](ExpectationState::FulfilledLate).
    pub state: ExpectationState,
}

impl Fulfilment {
    /// The expectation of `a_message_id` moved to `state`.
    pub fn new(a_message_id: MessageId, state: ExpectationState) -> Self {
        Fulfilment {
            a_message_id,
            state,
        }
    }
}

/// An expectation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SlaExpectation {
    /// The SLA's name.
    pub sla: String,
    /// A's correlation key.
    pub key: String,
    /// A's message id.
    pub a_message_id: MessageId,
    /// When A happened.
    pub opened_at: DateTime<Utc>,
    /// When it is due.
    pub due_at: DateTime<Utc>,
    /// Where it stands.
    pub state: ExpectationState,
    /// When the B (or the handler's completion) that fulfilled it happened.
    pub fulfilled_at: Option<DateTime<Utc>>,
    /// The message id of that B (or of the message the handler completed).
    pub fulfilled_by: Option<MessageId>,
    /// When it was marked breached (its [`SlaBreached`] was emitted then).
    pub breached_at: Option<DateTime<Utc>>,
}

impl SlaExpectation {
    /// An open expectation.
    pub fn open(new: &NewExpectation) -> Self {
        SlaExpectation {
            sla: new.sla.clone(),
            key: new.key.clone(),
            a_message_id: new.a_message_id,
            opened_at: new.opened_at,
            due_at: new.due_at,
            state: ExpectationState::Pending,
            fulfilled_at: None,
            fulfilled_by: None,
            breached_at: None,
        }
    }
}

/// The expectations a store holds for one SLA, by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SlaStatus {
    /// The SLA's name.
    pub sla: String,
    /// Open expectations.
    pub pending: u64,
    /// Fulfilled on time.
    pub fulfilled: u64,
    /// Fulfilled after their due time (or after their breach).
    pub fulfilled_late: u64,
    /// Breached and still without a B.
    pub breached: u64,
    /// The earliest due time of an open expectation.
    pub next_due: Option<DateTime<Utc>>,
}

impl SlaStatus {
    /// No expectation of `sla` yet.
    pub fn new(sla: impl Into<String>) -> Self {
        SlaStatus {
            sla: sla.into(),
            ..SlaStatus::default()
        }
    }

    /// Adds `count` expectations in `state`.
    pub fn add(&mut self, state: ExpectationState, count: u64) {
        match state {
            ExpectationState::Pending => self.pending += count,
            ExpectationState::Fulfilled => self.fulfilled += count,
            ExpectationState::FulfilledLate => self.fulfilled_late += count,
            ExpectationState::Breached => self.breached += count,
        }
    }

    /// How many are in `state`.
    pub fn count(&self, state: ExpectationState) -> u64 {
        match state {
            ExpectationState::Pending => self.pending,
            ExpectationState::Fulfilled => self.fulfilled,
            ExpectationState::FulfilledLate => self.fulfilled_late,
            ExpectationState::Breached => self.breached,
        }
    }
}

/// What this process recorded for one SLA since it started (the ledger's SLA part; the store's
/// [`SlaStatus`] counts what every process recorded, outbox transactions included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlaCounts {
    /// Expectations opened (by a publish or a received A; an A stored in an outbox opens its
    /// expectation in the publishing transaction, counted by the store only).
    pub opened: u64,
    /// Expectations fulfilled on time.
    pub fulfilled: u64,
    /// Expectations fulfilled late.
    pub fulfilled_late: u64,
    /// Expectations this process's sweeper breached (its `SlaBreached` emitted).
    pub breached: u64,
}

impl fmt::Display for SlaCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "opened {}, fulfilled {}, fulfilled late {}, breached {}",
            self.opened, self.fulfilled, self.fulfilled_late, self.breached
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Serialize, Deserialize)]
    struct Placed {
        order: u32,
    }
    impl Message for Placed {
        const NAME: &'static str = "sla_model.placed";
        const KIND: MessageKind = MessageKind::Event;
        type Reply = ();
    }
    #[derive(Clone, Serialize, Deserialize)]
    struct Shipped {
        order: u32,
    }
    impl Message for Shipped {
        const NAME: &'static str = "sla_model.shipped";
        const KIND: MessageKind = MessageKind::Event;
        type Reply = ();
    }

    fn sla() -> Sla {
        Sla::named("shipped")
            .after::<Placed>()
            .expect::<Shipped>()
            .within(Duration::from_secs(60))
            .correlate(|a| a.order.to_string(), |b| format!("{}", b.order))
    }

    #[test]
    fn keys_come_from_the_declared_types_only() {
        let sla = sla();
        assert_eq!(sla.key_of_after(&Placed { order: 7 }), Some("7".into()));
        assert_eq!(sla.key_of_expected(&Shipped { order: 7 }), Some("7".into()));
        assert_eq!(sla.key_of_after(&Shipped { order: 7 }), None);
        assert_eq!(sla.expected_message(), "sla_model.shipped");
        assert!(sla.problems().is_empty(), "{:?}", sla.problems());
    }

    #[test]
    fn due_is_the_time_of_a_plus_the_deadline_and_lateness_follows() {
        let sla = sla();
        let at = Utc::now();
        let due = sla.due_at(at);
        assert_eq!(due - at, chrono::Duration::seconds(60));
        let pending = ExpectationState::Pending;
        assert_eq!(pending.fulfilled_at(due, due), ExpectationState::Fulfilled);
        assert_eq!(
            pending.fulfilled_at(due + chrono::Duration::milliseconds(1), due),
            ExpectationState::FulfilledLate
        );
        assert_eq!(
            ExpectationState::Breached.fulfilled_at(at, due),
            ExpectationState::FulfilledLate,
            "a breached expectation is late whenever B comes"
        );
        for state in ExpectationState::ALL {
            assert_eq!(ExpectationState::parse(state.as_str()), Some(state));
        }
    }

    #[test]
    fn a_declaration_without_a_deadline_or_on_itself_names_the_fix() {
        let no_deadline = Sla::named("x")
            .after::<Placed>()
            .expect::<Shipped>()
            .correlate(|a| a.order.to_string(), |b| b.order.to_string());
        assert!(no_deadline.problems()[0].contains(".within(Duration::from_secs(..))"));
        let itself = Sla::named("")
            .after::<Placed>()
            .expect::<Placed>()
            .within(Duration::ZERO)
            .correlate(|a| a.order.to_string(), |b| b.order.to_string());
        let problems = itself.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("empty name"));
        assert!(problems[1].contains("deadline of zero"));
        assert!(problems[2].contains("expect_handler"));
    }

    #[test]
    fn public_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Sla>();
        check::<SlaBuilder>();
        check::<SlaAfter<Placed>>();
        check::<SlaExpect<Placed, Shipped>>();
        check::<SlaBreached>();
        check::<SlaExpectation>();
        check::<SlaStatus>();
    }
}
