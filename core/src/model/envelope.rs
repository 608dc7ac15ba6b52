//! The envelope every message travels in: identity, time, correlation and the caller's re-send id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A unique, time-ordered message id (UUID v7): ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A fresh id, later than every id made before it in this process (layout: see `id.rs`).
    pub fn new() -> Self {
        MessageId(crate::model::id::stamp().0)
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for MessageId {
    fn from(value: Uuid) -> Self {
        MessageId(value)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for MessageId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(MessageId)
    }
}

/// Correlation and causation ids plus free-form headers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headers {
    /// The conversation this message belongs to. `None` on a root message: its own id is the correlation id.
    pub correlation_id: Option<MessageId>,
    /// The message whose handler published this one.
    pub causation_id: Option<MessageId>,
    /// Anything else the caller wants to carry (tenant, trace parent, ...).
    pub extra: BTreeMap<String, String>,
}

/// Metadata of one published message. Shared (behind an `Arc`) by every handler it fans out to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique, time-ordered id, made by Herald at publish.
    pub id: MessageId,
    /// The message's wire name.
    pub name: Cow<'static, str>,
    /// When the message was published.
    pub occurred_at: DateTime<Utc>,
    /// The ordering key, if the message declares one.
    pub key: Option<String>,
    /// The caller's own id for this message, so that a re-send of the same thing is recognisable.
    pub idempotency_key: Option<String>,
    /// Correlation, causation and free-form headers.
    pub headers: Headers,
}

impl Envelope {
    /// A new envelope for a message named `name`, stamped now.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        // One clock read for both: the id's timestamp and `occurred_at` agree.
        let (id, occurred_at) = crate::model::id::stamp();
        Envelope {
            id: MessageId(id),
            name: name.into(),
            occurred_at,
            key: None,
            idempotency_key: None,
            headers: Headers::default(),
        }
    }

    /// The correlation id: the header if set, otherwise this message's own id.
    pub fn correlation_id(&self) -> MessageId {
        self.headers.correlation_id.unwrap_or(self.id)
    }

    /// The id used to recognise a duplicate: the caller's idempotency key, or else the message id.
    pub fn dedupe_id(&self) -> String {
        match &self.idempotency_key {
            Some(key) => key.clone(),
            None => self.id.to_string(),
        }
    }
}

/// Options for one publish or send: the caller's re-send id, headers, and when to deliver it.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct PublishOptions {
    pub(crate) idempotency_key: Option<String>,
    pub(crate) headers: Headers,
    pub(crate) deliver: Option<DeliverAt>,
}

/// When a delayed message is due: at a moment, or after a delay counted from its publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverAt {
    /// At this moment (a moment already past is due at once).
    At(DateTime<Utc>),
    /// This long after the publish.
    After(std::time::Duration),
}

impl DeliverAt {
    /// How long from `now` until the message is due (zero when it already is).
    pub fn delay_from(&self, now: DateTime<Utc>) -> std::time::Duration {
        match self {
            DeliverAt::At(at) => (*at - now).to_std().unwrap_or_default(),
            DeliverAt::After(delay) => *delay,
        }
    }
}

impl PublishOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// The caller's own id for this message. A re-send with the same id is skipped by `dedupe` handlers.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Joins an existing conversation.
    pub fn correlation_id(mut self, id: MessageId) -> Self {
        self.headers.correlation_id = Some(id);
        self
    }

    /// Names the message that caused this one.
    pub fn causation_id(mut self, id: MessageId) -> Self {
        self.headers.causation_id = Some(id);
        self
    }

    /// Adds a free-form header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.extra.insert(name.into(), value.into());
        self
    }

    /// Delivers the message at `at`, not before (a moment already past delivers at once).
    ///
    /// - [`Herald::publish_with`](crate::Herald::publish_with) (and `send_with`,
    ///   `try_publish_with`): the message is accepted now (its pool's overload policy applies
    ///   now, and it holds a slot of its pool's queue while it waits), counted `queued` in the
    ///   ledger, and queued at its time. Held in memory only: a shutdown before its time
    ///   dead-letters it with reason `shutdown`.
    /// - An outbox's `publish_with`: the row is written due at `at`; the relay leaves it until
    ///   then (on PostgreSQL and MySQL `at` is compared with the database server's clock).
    ///
    /// Per key, a delayed message keeps its place: an `ordered` handler (a keyed route too) runs
    /// later messages of its key only after it, in memory as in the outbox. See
    /// `docs/DELAYS_AND_BREAKERS.md`. The last of `deliver_at` and
    /// [`deliver_after`](Self::deliver_after) wins.
    pub fn deliver_at(mut self, at: DateTime<Utc>) -> Self {
        self.deliver = Some(DeliverAt::At(at));
        self
    }

    /// Delivers the message `delay` after the publish, not before; as
    /// [`deliver_at`](Self::deliver_at) in every other way. On PostgreSQL and MySQL the outbox
    /// counts the delay on the database server's clock, from the write.
    pub fn deliver_after(mut self, delay: std::time::Duration) -> Self {
        self.deliver = Some(DeliverAt::After(delay));
        self
    }

    /// When the message is due, if it is delayed.
    pub fn delivery(&self) -> Option<DeliverAt> {
        self.deliver
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_delivery_time_is_a_delay_from_now_and_never_negative() {
        let now = Utc::now();
        let delay = Duration::from_millis(1_500);
        assert_eq!(DeliverAt::After(delay).delay_from(now), delay);
        assert_eq!(
            DeliverAt::At(now + chrono::Duration::seconds(2)).delay_from(now),
            Duration::from_secs(2)
        );
        assert_eq!(
            DeliverAt::At(now - chrono::Duration::seconds(2)).delay_from(now),
            Duration::ZERO
        );
        let options = PublishOptions::new().deliver_after(delay).deliver_at(now);
        assert_eq!(
            options.delivery(),
            Some(DeliverAt::At(now)),
            "the last wins"
        );
    }
}
