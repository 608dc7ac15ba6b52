//! One trace from the request to the handler: request → outbox (SQLite) → relay → route → the
//! in-memory broker → the consumer's relay → handler, with OpenTelemetry's in-memory exporter.
#![cfg(feature = "otel")]

use herald::outbox::{self, Relay, SqliteOutbox};
use herald::transport::memory::MemoryBroker;
use herald::{async_handler, Event, Herald, State};
use opentelemetry::trace::{SpanId, SpanKind, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "trace.order_placed")]
struct OrderPlaced {
    order: u64,
}

/// What the consumer's handler saw: the trace id of its own span and the `traceparent` header.
type Sighting = (TraceId, Option<String>);

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Sighting>>>);

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "trace.pinged")]
struct Pinged {}

/// What the in-process handler saw.
#[derive(Clone, Default)]
struct Pings(Arc<Mutex<Vec<Sighting>>>);

mod local {
    use super::*;

    #[async_handler]
    async fn on_pinged(_: Pinged, State(pings): State<Pings>, meta: herald::Meta) {
        let trace_id = tracing::Span::current()
            .context()
            .span()
            .span_context()
            .trace_id();
        let traceparent = meta.headers().extra.get("traceparent").cloned();
        pings.0.lock().expect("lock").push((trace_id, traceparent));
    }
}

mod consumer {
    use super::*;

    #[async_handler]
    async fn on_order_placed(_: OrderPlaced, State(seen): State<Seen>, meta: herald::Meta) {
        let trace_id = tracing::Span::current()
            .context()
            .span()
            .span_context()
            .trace_id();
        let traceparent = meta.envelope().headers.extra.get("traceparent").cloned();
        seen.0.lock().expect("lock").push((trace_id, traceparent));
    }
}

#[tokio::test]
async fn the_trace_id_survives_outbox_relay_broker_and_handler() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("herald-test")));
    // Global: pool workers and relays run on the runtime's other threads.
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this test");
    herald_web::otel::install().expect("the only propagator of this test");

    let dir = tempfile::tempdir().expect("temp dir");
    let pool = outbox::sqlite::connect(dir.path().join("app.db"))
        .await
        .expect("open sqlite");
    let outbox = SqliteOutbox::new(pool.clone()).await.expect("migrate");
    let broker = MemoryBroker::new();
    let producer = Herald::builder()
        .handlers_under("no::local::handlers")
        .route::<OrderPlaced>()
        .to(Arc::new(broker.clone()))
        .build()
        .expect("producer");
    let seen = Seen::default();
    let consumer = Herald::builder()
        .handlers_under(format!("{}::consumer", module_path!()))
        .state(seen.clone())
        .build()
        .expect("consumer");
    let outbox_relay = outbox
        .relay(&producer)
        .poll_interval(Duration::from_millis(5))
        .start();
    let broker_relay = Relay::builder(Arc::new(broker.clone()), &consumer)
        .poll_interval(Duration::from_millis(5))
        .start();

    // The request: a span of the application, in which the order is written with its event.
    let request = tracing::info_span!("POST /orders", otel.kind = "server");
    let request_trace = request.context().span().span_context().trace_id();
    assert_ne!(
        request_trace,
        TraceId::INVALID,
        "the OpenTelemetry layer is active"
    );
    async {
        let mut tx = pool.begin().await.expect("begin");
        outbox
            .publish(&mut *tx, OrderPlaced { order: 7 })
            .await
            .expect("publish");
        tx.commit().await.expect("commit");
    }
    .instrument(request.clone())
    .await;
    drop(request);

    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.0.lock().expect("lock").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the consumer never handled the order"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    outbox_relay.stop().await;
    broker_relay.stop().await;
    provider.force_flush().expect("flush");

    // The handler ran inside the request's trace, and its message carried a context of it.
    let (handler_trace, traceparent) = seen.0.lock().expect("lock")[0].clone();
    assert_eq!(handler_trace, request_trace);
    let traceparent = traceparent.expect("the consumer's copy carries a traceparent");
    assert!(
        traceparent.contains(&request_trace.to_string()),
        "{traceparent} is in trace {request_trace}"
    );

    // In process: `publish` inside a span, then with a `traceparent` the caller set itself.
    let pings = Pings::default();
    let local = Herald::builder()
        .handlers_under(format!("{}::local", module_path!()))
        .state(pings.clone())
        .build()
        .expect("local");
    let job = tracing::info_span!("job");
    let job_trace = job.context().span().span_context().trace_id();
    let delivery = local.publish(Pinged {}).instrument(job.clone()).await;
    assert!(delivery.expect("admitted").await.is_success());
    drop(job);
    let explicit = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let options = herald::PublishOptions::new().header("traceparent", explicit);
    let delivery = local.publish_with(Pinged {}, options).await;
    assert!(delivery.expect("admitted").await.is_success());
    {
        let pings = pings.0.lock().expect("lock");
        assert_eq!(
            pings[0].0, job_trace,
            "the handler continues the publisher's trace"
        );
        assert_eq!(pings[1].0.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            pings[1].1.as_deref(),
            Some(explicit),
            "an explicit context is kept"
        );
    }
    provider.force_flush().expect("flush");

    let spans = exporter.get_finished_spans().expect("spans");
    let named = |name: &str| -> &SpanData {
        spans
            .iter()
            .find(|span| span.name == name)
            .unwrap_or_else(|| panic!("no span {name} in {:#?}", names(&spans)))
    };
    let request = named("POST /orders");
    let create = named("create trace.order_placed");
    let send = named("send memory");
    let process = named("process trace.order_placed");
    let receive: Vec<&SpanData> = spans.iter().filter(|s| s.name == "receive").collect();
    // request → outbox create → (relay) route send → (broker, relay) handler process.
    for span in [create, send, process] {
        assert_eq!(span.span_context.trace_id(), request_trace, "{}", span.name);
    }
    assert_eq!(create.parent_span_id, request.span_context.span_id());
    assert_eq!(send.parent_span_id, create.span_context.span_id());
    assert_eq!(process.parent_span_id, send.span_context.span_id());
    assert!(send.parent_span_is_remote && process.parent_span_is_remote);
    // Kinds and messaging attributes of the semantic conventions.
    assert_eq!(create.span_kind, SpanKind::Producer);
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(
        attribute(process, "messaging.system"),
        Some("herald".into())
    );
    assert_eq!(
        attribute(process, "messaging.operation.type"),
        Some("process".into())
    );
    assert_eq!(
        attribute(process, "messaging.destination.name"),
        Some("trace.order_placed".into())
    );
    assert_eq!(
        attribute(send, "messaging.operation.type"),
        Some("send".into())
    );
    assert_eq!(
        attribute(send, "messaging.destination.name"),
        Some("memory".into())
    );
    assert_eq!(
        attribute(create, "messaging.operation.type"),
        Some("create".into())
    );
    assert!(attribute(process, "messaging.message.id").is_some());
    // In process: the handler's `process` span is a child of the `publish` span, itself a child
    // of the publisher's span.
    let job = named("job");
    let publish = spans
        .iter()
        .find(|s| s.name == "publish trace.pinged" && s.span_context.trace_id() == job_trace)
        .expect("a publish span in the job's trace");
    assert_eq!(publish.span_kind, SpanKind::Producer);
    assert_eq!(publish.parent_span_id, job.span_context.span_id());
    let pinged = spans
        .iter()
        .find(|s| s.name == "process trace.pinged" && s.span_context.trace_id() == job_trace)
        .expect("a process span in the job's trace");
    assert_eq!(pinged.parent_span_id, publish.span_context.span_id());
    let continued = spans
        .iter()
        .find(|s| s.name == "process trace.pinged" && s.span_context.trace_id() != job_trace)
        .expect("the second handler's span");
    assert_eq!(continued.parent_span_id.to_string(), "00f067aa0ba902b7");
    // Both relays' batches are `receive` spans of kind consumer, in traces of their own.
    assert!(receive.len() >= 2, "{:#?}", names(&spans));
    for batch in receive {
        assert_eq!(batch.span_kind, SpanKind::Consumer);
        assert_eq!(
            attribute(batch, "messaging.operation.type"),
            Some("receive".into())
        );
        assert_eq!(batch.parent_span_id, SpanId::INVALID);
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans
        .iter()
        .map(|s| format!("{} ({:?}) parent {}", s.name, s.span_kind, s.parent_span_id))
        .collect()
}
