//! The consumer side: a background thread polls the group into [`Lanes`], relays lease from them,
//! and finished messages move their partition's done watermark, which is stored for librdkafka's
//! next auto-commit. The [`Rebalancer`] places new partitions at `start_at` and commits revoked
//! ones before giving them up.

use crate::lanes::{Lanes, Position, Settled};
use crate::offsets::PartitionOffsets;
use crate::{Kafka, StartAt, ID_HEADER, NAME_HEADER};
use async_trait::async_trait;
use herald_core::ports::{
    Capabilities, MessageSource, Receipt, Received, Settlement, SourceError, StoredMessage,
};
use herald_core::wire;
use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What the consumer holds, shared by the polling task, the relays and the rebalance callback.
pub(crate) struct SourceState {
    topic: String,
    start_at: StartAt,
    max_buffered: usize,
    request_timeout: Duration,
    inner: Mutex<Inner>,
    /// Woken when a message arrives or a key is freed.
    changed: Notify,
}

#[derive(Default)]
struct Inner {
    lanes: Lanes,
    offsets: HashMap<i32, PartitionOffsets>,
    /// Partitions `start_at` was applied to (once each, the first time they are assigned).
    placed: HashSet<i32>,
    paused: bool,
}

impl SourceState {
    pub(crate) fn new(
        topic: String,
        start_at: StartAt,
        max_buffered: usize,
        request_timeout: Duration,
    ) -> Self {
        SourceState {
            topic,
            start_at,
            max_buffered,
            request_timeout,
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
        }
    }

    /// How many messages are read and not finished.
    pub(crate) fn held(&self) -> usize {
        self.inner.lock().lanes.len()
    }

    /// The done watermark of each partition this process reads.
    pub(crate) fn watermarks(&self) -> HashMap<i32, i64> {
        self.inner
            .lock()
            .offsets
            .iter()
            .filter_map(|(partition, offsets)| Some((*partition, offsets.watermark()?)))
            .collect()
    }

    /// Records the consumer returned (decoded off the lock), added under one lock with one
    /// wake-up, so relays take them in batches.
    fn arrive(&self, consumer: &BaseConsumer<Rebalancer>, records: Vec<(Position, StoredMessage)>) {
        if records.is_empty() {
            return;
        }
        {
            let mut inner = self.inner.lock();
            for (position, message) in records {
                inner
                    .offsets
                    .entry(position.partition)
                    .or_default()
                    .read(position.offset);
                inner.lanes.push(position, message);
            }
            if inner.lanes.len() >= self.max_buffered {
                // Full: stop fetching (the consumer keeps polling, so it stays in its group).
                match consumer.assignment().and_then(|a| consumer.pause(&a)) {
                    Ok(()) => inner.paused = true,
                    Err(error) => {
                        tracing::warn!(%error, "could not pause the Kafka consumer's partitions")
                    }
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// The position and message of a record of this source's topic.
    fn read(&self, record: &BorrowedMessage<'_>) -> Option<(Position, StoredMessage)> {
        if record.topic() != self.topic {
            return None;
        }
        let position = Position {
            partition: record.partition(),
            offset: record.offset(),
        };
        Some((position, read_record(record)))
    }

    /// Resumes fetching once the buffer has room again.
    fn resume_if_room(&self, inner: &mut Inner, consumer: &BaseConsumer<Rebalancer>) {
        if inner.paused && inner.lanes.len() <= self.max_buffered / 2 {
            match consumer.assignment().and_then(|a| consumer.resume(&a)) {
                Ok(()) => inner.paused = false,
                Err(error) => {
                    tracing::warn!(%error, "could not resume the Kafka consumer's partitions")
                }
            }
        }
    }

    /// Sets the start offset of partitions assigned for the first time, as `start_at` says.
    fn place(&self, consumer: &BaseConsumer<Rebalancer>, assigned: &mut TopicPartitionList) {
        let fresh: Vec<i32> = {
            let mut inner = self.inner.lock();
            assigned
                .elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition())
                .filter(|partition| inner.placed.insert(*partition))
                .collect()
        };
        let offset = match self.start_at {
            StartAt::Committed => return,
            StartAt::Beginning => Offset::Beginning,
            StartAt::End => Offset::End,
            StartAt::Offset(offset) => Offset::Offset(offset),
            StartAt::Time(time) => return self.place_at_time(consumer, assigned, &fresh, time),
        };
        for partition in fresh {
            if let Err(error) = assigned.set_partition_offset(&self.topic, partition, offset) {
                tracing::warn!(%error, partition, "could not place a Kafka partition at its start");
            }
        }
    }

    fn place_at_time(
        &self,
        consumer: &BaseConsumer<Rebalancer>,
        assigned: &mut TopicPartitionList,
        fresh: &[i32],
        time: chrono::DateTime<chrono::Utc>,
    ) {
        let mut query = TopicPartitionList::new();
        for partition in fresh {
            let at = Offset::Offset(time.timestamp_millis());
            if let Err(error) = query.add_partition_offset(&self.topic, *partition, at) {
                tracing::warn!(%error, partition, "could not ask for a Kafka partition's offset by time");
            }
        }
        let found = match consumer.offsets_for_times(query, self.request_timeout) {
            Ok(found) => found,
            Err(error) => {
                tracing::error!(%error, "could not find the Kafka offsets for start_at's time; the partitions start at the committed offsets");
                return;
            }
        };
        tracing::debug!(topic = %self.topic, ?found, "Kafka offsets for start_at's time");
        for element in found.elements_for_topic(&self.topic) {
            // No message at or after the time: start at the end.
            let offset = match element.offset() {
                Offset::Offset(offset) if offset >= 0 => Offset::Offset(offset),
                _ => Offset::End,
            };
            if let Err(error) =
                assigned.set_partition_offset(&self.topic, element.partition(), offset)
            {
                tracing::warn!(%error, partition = element.partition(), "could not place a Kafka partition at start_at's time");
            }
        }
    }

    /// Forgets revoked partitions: their unfinished messages are read again by their next owner
    /// from the committed offset. Returns their stored watermarks, to commit.
    fn revoke(&self, revoked: &TopicPartitionList) -> TopicPartitionList {
        let partitions: Vec<i32> = revoked
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let mut finished = TopicPartitionList::new();
        let mut inner = self.inner.lock();
        inner.lanes.revoke(&partitions);
        for partition in &partitions {
            let stored = inner.offsets.remove(partition).and_then(|o| o.stored());
            if let Some(offset) = stored {
                if let Err(error) =
                    finished.add_partition_offset(&self.topic, *partition, Offset::Offset(offset))
                {
                    tracing::warn!(%error, partition, "could not name a Kafka offset to commit");
                }
            }
            inner.placed.remove(partition);
        }
        drop(inner);
        self.changed.notify_waiters();
        finished
    }
}

/// The consumer's context: applies `start_at` to new partitions, and commits the stored offsets
/// of revoked partitions before they go.
pub(crate) struct Rebalancer {
    state: Arc<SourceState>,
}

impl Rebalancer {
    pub(crate) fn new(state: Arc<SourceState>) -> Self {
        Rebalancer { state }
    }
}

impl ClientContext for Rebalancer {}

impl ConsumerContext for Rebalancer {
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => {
                tracing::debug!(topic = %self.state.topic, ?offsets, "Kafka offsets committed")
            }
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                tracing::warn!(%error, topic = %self.state.topic, "a Kafka offset commit failed; the next one carries the same offsets")
            }
        }
    }

    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.state.place(consumer, partitions);
                tracing::debug!(topic = %self.state.topic, ?partitions, "Kafka partitions assigned");
                if cooperative {
                    consumer.incremental_assign(partitions)
                } else {
                    consumer.assign(partitions)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // What is finished is committed before the partitions go (sent now, ahead of
                // the rejoin; not awaited, so a coordinator that is gone, as when the consumer
                // closes after the cluster, cannot hang the callback); what is not finished is
                // forgotten here and read again by the next owner.
                let finished = self.state.revoke(partitions);
                let committed = if finished.count() == 0 {
                    Ok(())
                } else {
                    consumer.commit(&finished, CommitMode::Async)
                };
                match committed {
                    Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    Err(error) => {
                        tracing::warn!(%error, "could not commit the offsets of revoked Kafka partitions; their finished messages may be delivered again")
                    }
                }
                tracing::debug!(topic = %self.state.topic, ?partitions, "Kafka partitions revoked");
                if cooperative {
                    consumer.incremental_unassign(partitions)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::error!(error = ?other, "Kafka rebalance failed; giving up the assignment");
                let _ = self.state.revoke(partitions);
                consumer.unassign()
            }
        };
        if let Err(error) = result {
            tracing::error!(%error, "Kafka could not apply a rebalance");
        }
    }
}

/// The stored message a record holds; one that is not a wire envelope is handed over so that
/// Herald dead-letters it as malformed (its id is not a UUID, and says why).
fn read_record(record: &BorrowedMessage<'_>) -> StoredMessage {
    let payload = record.payload().unwrap_or_default();
    match wire::decode(payload) {
        Ok(message) => message,
        Err(error) => {
            let header = |name: &str| {
                record
                    .headers()
                    .and_then(|headers| {
                        headers
                            .iter()
                            .find(|h| h.key == name)
                            .and_then(|h| h.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    })
                    .unwrap_or_default()
            };
            tracing::warn!(topic = record.topic(), partition = record.partition(), offset = record.offset(), %error, "a Kafka record is not a Herald wire envelope; it goes to the dead letters as malformed");
            StoredMessage {
                message_id: format!("malformed wire envelope: {error}"),
                name: header(NAME_HEADER),
                key: None,
                payload: String::from_utf8_lossy(payload).into_owned(),
                headers: malformed_headers(record, &header(ID_HEADER)),
                occurred_at: chrono::Utc::now(),
                attempt: 1,
                progress: herald_core::Progress::new(),
                only_handlers: None,
            }
        }
    }
}

/// The extra headers of a malformed record: where it was, and the `herald-id` its producer gave.
fn malformed_headers(record: &BorrowedMessage<'_>, id: &str) -> String {
    let key = record
        .key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default();
    serde_json::json!({ "extra": {
        "kafka-topic": record.topic(),
        "kafka-partition": record.partition().to_string(),
        "kafka-offset": record.offset().to_string(),
        "kafka-key": key,
        "herald-id-header": id,
    } })
    .to_string()
}

/// How many ready records the polling thread adds to the lanes at once.
const POLL_BATCH: usize = 500;

/// Polls the consumer on its own thread until `stop`: records go into the lanes, rebalances
/// run their callback (so the consumer stays in its group however long the handlers take).
/// Then leaves the group (the partitions are revoked: their finished offsets are committed),
/// waiting at most `close_timeout` for the brokers.
pub(crate) fn poll(
    consumer: Arc<BaseConsumer<Rebalancer>>,
    state: Arc<SourceState>,
    stop: CancellationToken,
    close_timeout: Duration,
) {
    let mut arrived = Vec::with_capacity(POLL_BATCH);
    while !stop.is_cancelled() {
        // Waits for one record, then takes what else is ready without waiting.
        let mut wait = Duration::from_millis(100);
        while arrived.len() < POLL_BATCH {
            match consumer.poll(wait) {
                None => break,
                Some(Ok(record)) => arrived.extend(state.read(&record)),
                Some(Err(error)) => {
                    tracing::warn!(%error, topic = %state.topic, "the Kafka consumer reported an error; it keeps polling");
                    if arrived.is_empty() {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    break;
                }
            }
            wait = Duration::ZERO;
        }
        state.arrive(&consumer, std::mem::take(&mut arrived));
    }
    let closing = Instant::now();
    tracing::debug!(topic = %state.topic, "the Kafka consumer is closing");
    // What is finished is committed while this consumer still owns its partitions; the revoke
    // that closing triggers commits again, but by then a member joining meanwhile may have
    // started a rebalance, and a coordinator may refuse that commit (`RebalanceInProgress`),
    // which would hand finished messages to the next owner again.
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => {
            tracing::warn!(%error, topic = %state.topic, "could not commit the finished Kafka offsets before leaving the group; the revoke tries again")
        }
    }
    match consumer.close_queue() {
        Ok(()) => {
            while !consumer.closed() && closing.elapsed() < close_timeout {
                // Serves the revoke and the leave; records still returned are not handed out.
                let _ = consumer.poll(Duration::from_millis(100));
            }
        }
        Err(error) => tracing::warn!(%error, "the Kafka consumer could not start closing"),
    }
    tracing::debug!(topic = %state.topic, closed = consumer.closed(), elapsed = ?closing.elapsed(), "the Kafka consumer's close loop ended");
    if !consumer.closed() {
        // librdkafka's drop would poll until the group is left, forever if the brokers are gone:
        // the handle is leaked instead (its threads stay until the process ends).
        tracing::warn!(topic = %state.topic, "the Kafka consumer could not leave its group in time (brokers down?); it is abandoned");
        std::mem::forget(consumer);
    }
    tracing::debug!(topic = %state.topic, "the Kafka consumer stopped");
}

impl Kafka {
    /// Subscribes the consumer and starts its polling thread, once.
    fn start(&self) -> Result<(), SourceError> {
        if self.shared.stop.is_cancelled() {
            return Err(SourceError::backend(
                "receive",
                "the Kafka consumer is closed (`Kafka::close`)",
            ));
        }
        let mut poller = self.shared.poller.lock();
        if poller.is_none() {
            tracing::debug!(topic = %self.shared.topic, group = %self.shared.group, "the Kafka consumer subscribes");
            self.shared
                .consumer
                .subscribe(&[&self.shared.topic])
                .map_err(|e| SourceError::backend("receive", e))?;
            let (consumer, state, stop) = (
                self.shared.consumer.clone(),
                self.shared.state.clone(),
                self.shared.stop.clone(),
            );
            let close_timeout = self.shared.request_timeout;
            let thread = std::thread::Builder::new()
                .name(format!("herald-kafka-{}", self.shared.topic))
                .spawn(move || poll(consumer, state, stop, close_timeout))
                .map_err(|e| SourceError::backend("receive", e))?;
            *poller = Some(thread);
        }
        Ok(())
    }
}

#[async_trait]
impl MessageSource for Kafka {
    async fn receive(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Received>, SourceError> {
        self.start()?;
        let state = &self.shared.state;
        let mut inner = state.inner.lock();
        Ok(inner.lanes.take(owner, limit, lease, Instant::now()))
    }

    async fn keep(
        &self,
        owner: &str,
        receipts: &[Receipt],
        lease: Duration,
    ) -> Result<Vec<Receipt>, SourceError> {
        let mut inner = self.shared.state.inner.lock();
        Ok(inner.lanes.keep(owner, receipts, lease, Instant::now()))
    }

    async fn settle(
        &self,
        owner: &str,
        settled: Vec<(Receipt, Settlement)>,
    ) -> Result<(), SourceError> {
        let state = &self.shared.state;
        let consumer = &self.shared.consumer;
        let now = Instant::now();
        let mut inner = state.inner.lock();
        let mut watermarks: HashMap<i32, i64> = HashMap::new();
        for (receipt, settlement) in settled {
            if let Settled::Finished(position) = inner.lanes.settle(owner, receipt, settlement, now)
            {
                let moved = inner
                    .offsets
                    .get_mut(&position.partition)
                    .and_then(|offsets| offsets.finish(position.offset));
                if let Some(watermark) = moved {
                    watermarks.insert(position.partition, watermark);
                }
            }
        }
        let mut result = Ok(());
        if !watermarks.is_empty() {
            let mut list = TopicPartitionList::new();
            for (partition, watermark) in watermarks {
                if let Err(error) =
                    list.add_partition_offset(&state.topic, partition, Offset::Offset(watermark))
                {
                    tracing::warn!(%error, partition, "could not name a Kafka offset to store");
                }
            }
            // Stored under the lock, so a revoke (which takes it) cannot slip in between.
            if let Err(error) = consumer.store_offsets(&list) {
                tracing::warn!(%error, "could not store finished Kafka offsets (a partition was revoked?); they are delivered again");
                result = Err(SourceError::backend("settle", error));
            }
        }
        state.resume_if_room(&mut inner, consumer);
        drop(inner);
        state.changed.notify_waiters();
        result
    }

    async fn wait(&self, timeout: Duration) {
        if self.start().is_err() {
            tokio::time::sleep(timeout).await;
            return;
        }
        let state = &self.shared.state;
        let changed = state.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let now = Instant::now();
        let timeout = {
            let inner = state.inner.lock();
            match inner.lanes.next_due() {
                Some(due) => timeout.min(due.saturating_duration_since(now)),
                None => timeout,
            }
        };
        let _ = tokio::time::timeout(timeout, changed).await;
    }

    fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES
    }
}
