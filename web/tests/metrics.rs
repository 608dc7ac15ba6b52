//! `GET /metrics` over real HTTP after a workload with successes, retries, dead letters, a
//! rejection, a drop, a duplicate, a route (one publish confirmed, one refused) and an outbox row:
//! every series of `docs/OBSERVABILITY.md` is there with its value.

use herald::outbox::{self, SqliteOutbox};
use herald::transport::memory::MemoryBroker;
use herald::{
    async_handler, Backoff, Event, HandlerError, Herald, Overload, PoolConfig, PublishError,
    PublishOptions, RetryPolicy, State,
};
use herald_web::metrics::HeraldMetrics;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "obs.ping")]
struct Ping {}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "obs.doom")]
struct Doom {}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "obs.slow")]
struct Slow {}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "obs.lossy")]
struct Lossy {}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "obs.once")]
struct Once {}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "obs.shipped")]
struct Shipped {}

/// Holds the `tight` and `lossy` pools' handlers until the test lets them go.
#[derive(Clone)]
struct Gate(Arc<Semaphore>);

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

#[async_handler]
async fn ping_ok(_: Ping) {}

/// Fails its first attempt, succeeds on the retry.
#[async_handler(retry(max_attempts = 2, backoff = fixed(1ms)))]
async fn ping_flaky(_: Ping) -> Result<(), HandlerError> {
    if FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(HandlerError::msg("first attempt fails"));
    }
    Ok(())
}

#[async_handler(retry(max_attempts = 2, backoff = fixed(1ms)))]
async fn doomed(_: Doom) -> Result<(), HandlerError> {
    Err(HandlerError::msg("never works"))
}

#[async_handler(pool = "tight")]
async fn slow(_: Slow, State(gate): State<Gate>) {
    drop(gate.0.acquire().await);
}

#[async_handler(pool = "lossy")]
async fn lossy(_: Lossy, State(gate): State<Gate>) {
    drop(gate.0.acquire().await);
}

#[async_handler(dedupe)]
async fn once(_: Once) {}

const ROUTE: &str = "route:obs.shipped->memory";

/// A handler's name: its module path and function name.
fn h(function: &str) -> String {
    format!("{}::{function}", module_path!())
}

#[tokio::test]
async fn metrics_are_scraped_over_http_after_a_workload() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pool = outbox::sqlite::connect(dir.path().join("app.db"))
        .await
        .expect("open sqlite");
    let outbox = SqliteOutbox::new(pool.clone()).await.expect("migrate");
    // Room for one message: the route's second publish is refused.
    let broker = MemoryBroker::with_capacity(1);
    let gate = Gate(Arc::new(Semaphore::new(0)));

    let metrics = HeraldMetrics::new();
    let small = PoolConfig::new().concurrency(1).queue(1);
    let herald = metrics
        .build(
            Herald::builder()
                .handlers_under(module_path!())
                .state(gate.clone())
                .pool("tight", small.overload(Overload::Reject))
                .pool("lossy", small.overload(Overload::DropNewest))
                .route::<Shipped>()
                .retry(RetryPolicy {
                    max_attempts: 1,
                    backoff: Backoff::Fixed(Duration::from_millis(1)),
                    jitter: false,
                })
                .to(Arc::new(broker.clone())),
        )
        .expect("valid registry");
    metrics
        .watch_outbox("app", Arc::new(outbox.clone()))
        .watch_consumer(Arc::new(broker.clone()));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let app = axum::Router::new().merge(metrics.router());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // Successes and a retry.
    assert!(herald
        .publish(Ping {})
        .await
        .expect("admitted")
        .await
        .is_success());
    // A dead letter after two attempts.
    assert!(!herald
        .publish(Doom {})
        .await
        .expect("admitted")
        .await
        .is_success());
    // A duplicate.
    for _ in 0..2 {
        let options = PublishOptions::new().idempotency_key("once-1");
        drop(
            herald
                .publish_with(Once {}, options)
                .await
                .expect("admitted")
                .await,
        );
    }
    // A route: the first publish is confirmed, the second refused (the broker is full) and
    // dead-lettered after its single attempt.
    assert!(herald
        .publish(Shipped {})
        .await
        .expect("admitted")
        .await
        .is_success());
    assert!(!herald
        .publish(Shipped {})
        .await
        .expect("admitted")
        .await
        .is_success());

    // `tight` (Reject): one running, one queued, the third rejected.
    let running = herald.try_publish(Slow {}).expect("runs");
    eventually("the first slow job runs", || {
        herald.ledger().handlers[h("slow").as_str()].in_flight == 1
    })
    .await;
    let queued = herald.try_publish(Slow {}).expect("queued");
    match herald.try_publish(Slow {}) {
        Err(PublishError::Rejected { pool, .. }) => assert_eq!(pool, "tight"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    // `lossy` (DropNewest): one running, one queued, the third dropped to the dead letters.
    let lossy_running = herald.try_publish(Lossy {}).expect("runs");
    eventually("the first lossy job runs", || {
        herald.ledger().handlers[h("lossy").as_str()].in_flight == 1
    })
    .await;
    let lossy_queued = herald.try_publish(Lossy {}).expect("queued");
    let dropped = herald
        .try_publish(Lossy {})
        .expect("accepted, then dropped");
    assert!(!dropped.await.is_success());

    // An outbox row nobody relays.
    let mut tx = pool.begin().await.expect("begin");
    outbox.publish(&mut *tx, Ping {}).await.expect("publish");
    tx.commit().await.expect("commit");
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    // Mid-flight: the pools' gauges.
    let text = scrape(address).await;
    let series = Series::parse(&text);
    let at = |name: &str, labels: &[(&str, &str)]| series.value(name, labels, &text);
    assert_eq!(at("herald_pool_queue_depth", &[("pool", "tight")]), 1.0);
    assert_eq!(at("herald_pool_in_flight", &[("pool", "tight")]), 1.0);
    assert_eq!(at("herald_pool_queue_capacity", &[("pool", "tight")]), 1.0);
    assert_eq!(at("herald_pool_concurrency", &[("pool", "tight")]), 1.0);
    assert_eq!(at("herald_pool_queue_depth", &[("pool", "lossy")]), 1.0);
    assert_eq!(at("herald_queued", &[("handler", h("slow").as_str())]), 1.0);
    assert_eq!(
        at("herald_in_flight", &[("handler", h("slow").as_str())]),
        1.0
    );
    assert_eq!(
        at(
            "herald_pool_rejections_total",
            &[("pool", "tight"), ("policy", "reject")]
        ),
        1.0
    );
    // The outbox and the broker's consumer lag.
    assert_eq!(at("herald_outbox_pending", &[("outbox", "app")]), 1.0);
    let age = at(
        "herald_outbox_oldest_pending_age_seconds",
        &[("outbox", "app")],
    );
    assert!(
        (0.5..60.0).contains(&age),
        "oldest pending age {age}\n{text}"
    );
    assert_eq!(
        at(
            "herald_consumer_lag_messages",
            &[("subscription", "memory"), ("partition", "")]
        ),
        1.0
    );

    gate.0.add_permits(16);
    for delivery in [running, queued, lossy_running, lossy_queued] {
        assert!(delivery.await.is_success());
    }

    let text = scrape(address).await;
    let series = Series::parse(&text);
    let at = |name: &str, labels: &[(&str, &str)]| series.value(name, labels, &text);
    let messages = |handler: &str, outcome: &str| {
        at(
            "herald_messages_total",
            &[("handler", handler), ("outcome", outcome)],
        )
    };
    // The ledger mirror, per handler.
    assert_eq!(messages(&h("ping_ok"), "accepted"), 1.0);
    assert_eq!(messages(&h("ping_ok"), "succeeded"), 1.0);
    assert_eq!(messages(&h("ping_flaky"), "succeeded"), 1.0);
    assert_eq!(
        at(
            "herald_failed_attempts_total",
            &[("handler", h("ping_flaky").as_str())]
        ),
        1.0
    );
    assert_eq!(
        at(
            "herald_retries_total",
            &[("handler", h("ping_flaky").as_str())]
        ),
        1.0
    );
    assert_eq!(messages(&h("doomed"), "dead_lettered"), 1.0);
    assert_eq!(
        at(
            "herald_failed_attempts_total",
            &[("handler", h("doomed").as_str())]
        ),
        2.0
    );
    assert_eq!(
        at("herald_retries_total", &[("handler", h("doomed").as_str())]),
        1.0
    );
    assert_eq!(messages(&h("slow"), "accepted"), 2.0);
    assert_eq!(messages(&h("slow"), "rejected"), 1.0);
    assert_eq!(messages(&h("lossy"), "dropped"), 1.0);
    assert_eq!(messages(&h("once"), "succeeded"), 1.0);
    assert_eq!(messages(&h("once"), "deduplicated"), 1.0);
    assert_eq!(
        at("herald_in_flight", &[("handler", h("slow").as_str())]),
        0.0
    );
    assert_eq!(at("herald_queued", &[("handler", h("slow").as_str())]), 0.0);
    // Attempt durations: a histogram per handler and outcome.
    assert_eq!(
        at(
            "herald_attempt_duration_seconds_count",
            &[("handler", h("doomed").as_str()), ("outcome", "failed")]
        ),
        2.0
    );
    assert_eq!(
        at(
            "herald_attempt_duration_seconds_count",
            &[
                ("handler", h("ping_flaky").as_str()),
                ("outcome", "succeeded")
            ]
        ),
        1.0
    );
    assert_eq!(
        at(
            "herald_attempt_duration_seconds_bucket",
            &[
                ("handler", h("ping_ok").as_str()),
                ("outcome", "succeeded"),
                ("le", "+Inf")
            ]
        ),
        1.0
    );
    // Dead letters by handler, reason and kind.
    let dead = |handler: &str, reason: &str, kind: &str| {
        at(
            "herald_dead_letters_total",
            &[("handler", handler), ("reason", reason), ("kind", kind)],
        )
    };
    assert_eq!(dead(&h("doomed"), "failed", "error"), 1.0);
    assert_eq!(dead(&h("lossy"), "overflow", "none"), 1.0);
    assert_eq!(dead(ROUTE, "failed", "error"), 1.0);
    assert_eq!(at("herald_dead_letters_stored", &[]), 3.0);
    // The route's publishes: outcomes and confirm latency per destination.
    let publish = |outcome: &str| {
        at(
            "herald_transport_publish_total",
            &[("destination", "memory"), ("outcome", outcome)],
        )
    };
    assert_eq!(publish("confirmed"), 1.0);
    assert_eq!(publish("failed"), 1.0);
    assert_eq!(
        at(
            "herald_transport_confirm_duration_seconds_count",
            &[("destination", "memory")]
        ),
        1.0
    );
    assert_eq!(messages(ROUTE, "succeeded"), 1.0);
    assert_eq!(messages(ROUTE, "dead_lettered"), 1.0);
    // No sampling failed, and every series says what it is.
    assert!(
        !text.contains("herald_metrics_sample_errors_total"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE herald_attempt_duration_seconds histogram"),
        "{text}"
    );
    assert!(text.contains("# HELP herald_outbox_pending "), "{text}");
    // Bounded labels: no message id anywhere.
    assert!(!text.contains("message_id"), "{text}");

    if std::env::var_os("HERALD_DUMP_METRICS").is_some() {
        eprintln!("{text}");
    }
    server.abort();
}

#[tokio::test]
async fn a_failing_source_is_counted_and_the_rest_still_renders() {
    #[derive(Debug)]
    struct Down;
    #[async_trait::async_trait]
    impl herald::ports::lag::ConsumerLag for Down {
        async fn lag(
            &self,
        ) -> Result<Vec<herald::ports::lag::LagReading>, herald::ports::SourceError> {
            Err(herald::ports::SourceError::backend(
                "lag",
                "the broker is down",
            ))
        }
    }
    let metrics = HeraldMetrics::new();
    let herald = metrics
        .build(Herald::builder().handlers_under("no::handlers"))
        .expect("valid registry");
    metrics.watch_consumer(Arc::new(Down));
    let text = metrics.render().await;
    let series = Series::parse(&text);
    assert_eq!(
        series.value(
            "herald_metrics_sample_errors_total",
            &[("source", "consumer_lag")],
            &text
        ),
        1.0
    );
    assert_eq!(
        series.value("herald_pool_queue_depth", &[("pool", "default")], &text),
        0.0
    );
    drop(herald);
}

mod relay {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "obs.relayed")]
    pub(crate) struct Relayed {
        pub(crate) n: u32,
    }

    /// Calls of `relayed` for message 0 (a static: the crate's other test registers this module's
    /// handler too, under its wider prefix, and never sends it a message).
    static FIRST_MESSAGE_CALLS: AtomicU32 = AtomicU32::new(0);

    /// Fails the first attempt of message 0 (the relay writes the retry back and delivers it
    /// again), succeeds otherwise.
    #[async_handler(retry(max_attempts = 2, backoff = fixed(1ms)))]
    async fn relayed(event: Relayed) -> Result<(), HandlerError> {
        if event.n == 0 && FIRST_MESSAGE_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(HandlerError::msg("the first attempt of message 0 fails"));
        }
        Ok(())
    }

    /// A watched relay's counters are on `/metrics`, labelled with its name, and keep their
    /// values after it stopped.
    #[tokio::test]
    async fn a_watched_relay_reports_its_batches_outcomes_and_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pool = outbox::sqlite::connect(dir.path().join("relay.db"))
            .await
            .expect("open sqlite");
        let outbox = SqliteOutbox::new(pool.clone()).await.expect("migrate");
        let metrics = HeraldMetrics::new();
        let herald = metrics
            .build(Herald::builder().handlers_under(module_path!()))
            .expect("valid registry");
        let relay = outbox
            .relay(&herald)
            .poll_interval(Duration::from_millis(10))
            .start();
        metrics.watch_relay("orders", relay.watch());
        assert_eq!(relay.watch().owner(), relay.owner());
        let mut tx = pool.begin().await.expect("begin");
        for n in 0..3 {
            outbox
                .publish(&mut *tx, Relayed { n })
                .await
                .expect("publish");
        }
        tx.commit().await.expect("commit");
        let watch = relay.watch();
        eventually("the relay processed the three messages", || {
            watch.stats().processed == 3
        })
        .await;
        let stats = relay.stop().await;
        let text = metrics.render().await;
        let series = Series::parse(&text);
        let at = |name: &str, labels: &[(&str, &str)]| series.value(name, labels, &text);
        let orders = ("relay", "orders");
        assert_eq!(
            at(
                "herald_relay_messages_total",
                &[orders, ("outcome", "processed")]
            ),
            3.0
        );
        // Message 0's first attempt failed: its retry was written back and delivered again.
        assert_eq!(
            at(
                "herald_relay_messages_total",
                &[orders, ("outcome", "retried")]
            ),
            1.0
        );
        assert_eq!(
            at(
                "herald_relay_messages_total",
                &[orders, ("outcome", "failed")]
            ),
            0.0
        );
        assert_eq!(
            at("herald_relay_batches_total", &[orders]),
            stats.batches as f64
        );
        assert!(stats.batches >= 1, "{stats:?}");
        assert_eq!(at("herald_relay_errors_total", &[orders]), 0.0);
        assert_eq!(at("herald_relay_lost_total", &[orders]), 0.0);
        assert!(
            text.contains("# HELP herald_relay_messages_total"),
            "described: {text}"
        );
        drop(herald);
    }
}

/// `GET /metrics` over a plain HTTP/1.1 connection.
async fn scrape(address: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    // Small bodies come whole; a chunked one would start with its size line.
    assert!(!head.to_ascii_lowercase().contains("chunked"), "{head}");
    body.to_owned()
}

/// The samples of a Prometheus text exposition: name, labels, value.
struct Series(Vec<(String, BTreeMap<String, String>, f64)>);

impl Series {
    fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                value => value.parse().expect("a number"),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("key=value");
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            samples.push((name.to_owned(), labels, value));
        }
        Series(samples)
    }

    /// The one sample of `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)], text: &str) -> f64 {
        let found: Vec<f64> = self
            .0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str).unwrap_or("") == *v)
            })
            .map(|(_, _, value)| *value)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one sample of {name}{labels:?}, found {found:?} in\n{text}"
        );
        found[0]
    }
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
