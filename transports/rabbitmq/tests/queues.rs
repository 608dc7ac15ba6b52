//! The RabbitMQ transport against the real broker at `HERALD_TEST_AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`): each test uses its own queue (deleted at the end),
//! and fails when the broker is missing.

mod common;

use common::*;
use herald::outbox::Relay;
use herald::ports::{Confirmation, MessageSink, OutgoingMessage};
use herald::{DeadLetterReason, MessageId, PublishOptions};
use herald_transport_rabbitmq::{RabbitMq, ID_HEADER};
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::types::AMQPValue;
use lapin::BasicProperties;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_and_headers_arrive_intact() {
    let rabbit = rabbit("intact").await;
    let seen = Seen::default();
    let herald = herald(&seen);
    let correlation = MessageId::new();
    let options = PublishOptions::new()
        .idempotency_key("idem-1")
        .correlation_id(correlation)
        .header("tenant", "acme ✓")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
    let id = publish(&rabbit, parcel(7), options).await;
    let relay = Relay::builder(Arc::new(rabbit.clone()), &herald)
        .poll_interval(Duration::from_millis(20))
        .start();
    eventually("handled", async || seen.count() == 1).await;
    drained(&rabbit).await;
    let stats = relay.stop().await;
    assert_eq!(stats.processed, 1);
    let (parcel, envelope, runs, _) = seen.0.lock().expect("lock")[&id].clone();
    assert_eq!((runs, seen.runs()), (1, 1), "handled once, nothing else");
    assert_eq!(parcel.text, "parcel 7: ü \u{0} ✓");
    assert_eq!(envelope.id, id);
    assert_eq!(envelope.idempotency_key.as_deref(), Some("idem-1"));
    assert_eq!(envelope.headers.correlation_id, Some(correlation));
    assert_eq!(envelope.headers.extra["tenant"], "acme ✓");
    assert_eq!(
        envelope.headers.extra["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    rabbit.delete_queues().await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_is_confirmed_with_its_id_and_persistent() {
    // Published to a queue nobody consumes (the transport consumes its own), to look at it.
    let target = format!("herald-test.confirm-target.{}", uuid::Uuid::new_v4());
    let conn = raw().await;
    let channel = conn.create_channel().await.expect("channel");
    channel
        .queue_declare(&target, Default::default(), Default::default())
        .await
        .expect("declare");
    let queue = format!("herald-test.confirm.{}", uuid::Uuid::new_v4());
    let rabbit = RabbitMq::builder(url(), queue)
        .publish_to("", target.clone())
        .expires_after(Duration::from_secs(60))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ is required for these tests: {e}"));
    let id = publish(&rabbit, parcel(1), PublishOptions::new()).await;
    // Confirmed means the broker has it: it is in the queue as soon as publish returns.
    let got = channel
        .basic_get(&target, BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .expect("the confirmed message is in the queue");
    let properties = &got.delivery.properties;
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
    let id_text = id.to_string();
    assert_eq!(
        properties.message_id().as_ref().map(|m| m.as_str()),
        Some(id_text.as_str())
    );
    let header = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(ID_HEADER).cloned());
    assert!(
        matches!(&header, Some(AMQPValue::LongString(s)) if s.to_string() == id_text),
        "{header:?}"
    );
    let decoded = herald::wire::decode(&got.delivery.data).expect("a wire envelope");
    assert_eq!(decoded.message_id, id_text);
    channel
        .queue_delete(&target, Default::default())
        .await
        .expect("delete");
    rabbit.delete_queues().await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_no_queue_takes_is_a_failed_confirmation() {
    let queue = format!("herald-test.unroutable.{}", uuid::Uuid::new_v4());
    let rabbit = RabbitMq::builder(url(), queue)
        .publish_to("amq.direct", format!("nobody-{}", uuid::Uuid::new_v4()))
        .expires_after(Duration::from_secs(60))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ is required for these tests: {e}"));
    let message = OutgoingMessage::new(&parcel(1), PublishOptions::new()).expect("serialize");
    let confirmations = rabbit.publish(vec![message]).await.expect("publish");
    match &confirmations[..] {
        [Confirmation::Failed { reason }] => assert!(reason.contains("NO_ROUTE"), "{reason}"),
        other => panic!("an unroutable publish was confirmed: {other:?}"),
    }
    rabbit.delete_queues().await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_delivery_is_dead_lettered_and_acked() {
    let rabbit = rabbit("malformed").await;
    let seen = Seen::default();
    let herald = herald(&seen);
    let conn = raw().await;
    let channel = conn.create_channel().await.expect("channel");
    channel
        .basic_publish(
            "",
            rabbit.queue(),
            BasicPublishOptions::default(),
            b"{\"herald\":1,\0 truncated",
            BasicProperties::default().with_message_id("not-an-id".into()),
        )
        .await
        .expect("publish")
        .await
        .expect("published");
    let good = publish(&rabbit, parcel(1), PublishOptions::new()).await;
    let relay = Relay::builder(Arc::new(rabbit.clone()), &herald)
        .poll_interval(Duration::from_millis(20))
        .start();
    eventually("the good one handled", async || seen.count() == 1).await;
    drained(&rabbit).await;
    let stats = relay.stop().await;
    assert_eq!((stats.processed, stats.failed), (1, 1), "{stats:?}");
    assert!(seen.0.lock().expect("lock").contains_key(&good));
    let letters = herald.dead_letters().list(10).await.expect("list");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].reason, DeadLetterReason::Malformed);
    assert_eq!(
        letters[0].envelope.headers.extra["amqp-message-id"],
        "not-an-id"
    );
    assert_eq!(rabbit.unfinished().await.expect("unfinished"), 0, "acked");
    rabbit.delete_queues().await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_comes_back_after_its_delay_not_before() {
    let rabbit = rabbit("retry").await;
    let seen = Seen::default();
    let herald = herald(&seen);
    let mut flaky = parcel(3);
    flaky.fail_first = true;
    let id = publish(&rabbit, flaky, PublishOptions::new()).await;
    let relay = Relay::builder(Arc::new(rabbit.clone()), &herald)
        .poll_interval(Duration::from_millis(20))
        .start();
    eventually("the first attempt failed", async || {
        !seen.1.lock().expect("lock").is_empty()
    })
    .await;
    // While it waits, it is in the delay queue, not redelivered.
    tokio::time::sleep(BACKOFF / 2).await;
    assert_eq!(
        seen.1.lock().expect("lock").len(),
        1,
        "not redelivered early"
    );
    assert!(rabbit.unfinished().await.expect("unfinished") >= 1);
    eventually("the retry succeeded", async || seen.count() == 1).await;
    drained(&rabbit).await;
    let stats = relay.stop().await;
    assert_eq!((stats.retried, stats.processed), (1, 1), "{stats:?}");
    let attempts = seen.1.lock().expect("lock").clone();
    assert_eq!(
        attempts
            .iter()
            .map(|(i, n, _)| (*i, *n))
            .collect::<Vec<_>>(),
        vec![(id, 1), (id, 2)],
        "attempt counted up by the re-published copy"
    );
    let waited = attempts[1].2 - attempts[0].2;
    assert!(
        waited >= BACKOFF,
        "redelivered after {waited:?}, before the delay"
    );
    rabbit.delete_queues().await.expect("delete");
}

/// A producer's sink takes no delivery from its queue, whether built `publish_only` or not (its
/// consumer would start only with a `receive`): every message reaches the consumer while the
/// producer is connected, none waits unacked on the producer's connection.
async fn a_sink_leaves_every_delivery_to_the_consumers(publish_only: bool) {
    let consumer = rabbit("sink-only").await;
    let builder = RabbitMq::builder(url(), consumer.queue())
        .prefetch(16)
        .expires_after(Duration::from_secs(60));
    let builder = if publish_only {
        builder.publish_only()
    } else {
        builder
    };
    let producer = builder.connect().await.expect("connect the producer");
    let seen = Seen::default();
    let herald = herald(&seen);
    for n in 0..20 {
        publish(&producer, parcel(n), PublishOptions::new()).await;
    }
    let relay = Relay::builder(Arc::new(consumer.clone()), &herald)
        .poll_interval(Duration::from_millis(20))
        .start();
    eventually(
        "every message handled while the producer is connected",
        async || seen.count() == 20,
    )
    .await;
    drained(&consumer).await;
    relay.stop().await;
    if publish_only {
        let refused =
            herald::ports::MessageSource::receive(&producer, "me", 1, Duration::from_secs(1))
                .await
                .map(|received| received.len());
        let error = refused.expect_err("a publish-only transport receives nothing");
        assert!(error.to_string().contains("publish_only"), "{error}");
    }
    producer.close().await.expect("close the producer");
    consumer.delete_queues().await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_only_sink_leaves_every_delivery_to_the_consumers() {
    a_sink_leaves_every_delivery_to_the_consumers(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_never_receives_leaves_every_delivery_to_the_consumers() {
    a_sink_leaves_every_delivery_to_the_consumers(false).await;
}
