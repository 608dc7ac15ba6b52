//! The producer side: every message of a batch is enqueued at once (librdkafka batches and
//! pipelines them), then each counts as confirmed only on its own delivery report.

use crate::{Kafka, ID_HEADER, NAME_HEADER};
use async_trait::async_trait;
use futures_util::future::join_all;
use herald_core::ports::{Capabilities, Confirmation, MessageSink, OutgoingMessage, SinkError};
use herald_core::wire;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use std::time::{Duration, Instant};

/// How long to wait for room in librdkafka's queue before a message counts as failed.
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(5);

impl Kafka {
    /// Enqueues one message; waits (briefly, without blocking the runtime) while librdkafka's
    /// queue is full.
    async fn enqueue(&self, message: &OutgoingMessage) -> Result<DeliveryFuture, String> {
        let id = message.envelope.id.to_string();
        let payload = wire::encode(message);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: ID_HEADER,
                value: Some(id.as_str()),
            })
            .insert(Header {
                key: NAME_HEADER,
                value: Some(message.envelope.name.as_ref()),
            });
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.shared.topic)
            .payload(payload.as_slice())
            .headers(headers);
        if let Some(key) = message.envelope.key.as_deref() {
            record = record.key(key);
        }
        let deadline = Instant::now() + QUEUE_FULL_WAIT;
        loop {
            match self.shared.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Err(format!("not enqueued for Kafka: {error}")),
            }
        }
    }
}

#[async_trait]
impl MessageSink for Kafka {
    async fn publish(&self, batch: Vec<OutgoingMessage>) -> Result<Vec<Confirmation>, SinkError> {
        let mut enqueued = Vec::with_capacity(batch.len());
        for message in &batch {
            enqueued.push(self.enqueue(message).await);
        }
        let reports = join_all(enqueued.into_iter().map(|enqueued| async move {
            match enqueued {
                Err(reason) => Confirmation::Failed { reason },
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => Confirmation::Confirmed,
                    Ok(Err((error, _))) => Confirmation::Failed {
                        reason: format!("Kafka did not deliver: {error}"),
                    },
                    Err(_) => Confirmation::Failed {
                        reason: "the Kafka producer dropped the message before its delivery report"
                            .to_owned(),
                    },
                },
            }
        }))
        .await;
        Ok(reports)
    }

    fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES
    }

    fn destination(&self) -> String {
        format!("kafka:{}", self.topic())
    }
}
