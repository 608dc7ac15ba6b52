//! Consumer lag: how far a consumer is behind what was published to it, per subscription and
//! partition, for exporters (`herald_web::metrics`) and consoles.
//!
//! A transport implements [`ConsumerLag`] next to its `MessageSource`: a partitioned log (Kafka)
//! reports one [`LagReading`] per partition (end offset − committed offset), a queue or stream
//! (RabbitMQ, NATS JetStream, Redis Streams, the in-memory broker) one reading for its queue with
//! the messages not finished yet.

use crate::ports::transport::SourceError;
use async_trait::async_trait;
use std::fmt;

/// Reports how far a consumer lags, when asked (at a metrics scrape, on a console page).
#[async_trait]
pub trait ConsumerLag: Send + Sync + fmt::Debug + 'static {
    /// One reading per subscription (and partition, where the transport has them).
    ///
    /// # Errors
    /// When the broker cannot be asked now.
    async fn lag(&self) -> Result<Vec<LagReading>, SourceError>;
}

/// How far one subscription (or one of its partitions) lags.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LagReading {
    /// What is consumed: a queue, a stream and its group, a topic and its group
    /// (`orders/herald`). Keep it bounded: one value per subscription, never per message.
    pub subscription: String,
    /// The partition, for partitioned transports (Kafka); `None` otherwise.
    pub partition: Option<String>,
    /// Messages published to the subscription and not finished by the consumer yet.
    pub messages: u64,
}

impl LagReading {
    /// A reading of `messages` behind on `subscription`.
    pub fn new(subscription: impl Into<String>, messages: u64) -> Self {
        LagReading {
            subscription: subscription.into(),
            partition: None,
            messages,
        }
    }

    /// On one partition of the subscription.
    #[must_use]
    pub fn partition(mut self, partition: impl Into<String>) -> Self {
        self.partition = Some(partition.into());
        self
    }
}
