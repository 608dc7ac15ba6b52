//! Every option at once, and each retry part on its own; `main` reads back what was registered.
use herald::__private::{inventory, HandlerDescriptor};
use herald::{
    async_handler, Backoff, CircuitBreaker, Event, HandlerOptions, MessageKind, OnFailure, Rate,
    RetryPolicy,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.placed", key = order_id)]
struct OrderPlaced {
    order_id: u64,
}

#[async_handler(
    name = "billing.charge",
    pool = "billing",
    retry(max_attempts = 5, backoff = exponential(100ms, 2.0, 10s), jitter),
    timeout = "1.5s",
    on_failure = dead_letter,
    rate = "180/s",
    dedupe,
    ordered,
    circuit_breaker(failures = 3, open_for = "10s"),
    start_within = "30s",
)]
async fn charge(_event: OrderPlaced) {}

#[async_handler(retry(max_attempts = 1), on_failure = log, rate = "5/ms")]
async fn notify(_event: OrderPlaced) {}

#[async_handler(retry(backoff = fixed(250ms)), on_failure = ignore, timeout = 2m, rate = "1000/m")]
async fn archive(_event: OrderPlaced) {}

#[async_handler(retry(jitter), timeout = "500us", circuit_breaker(open_for = 2m), start_within = 250ms)]
async fn index(_event: OrderPlaced) {}

fn registered(name: &str) -> &'static HandlerDescriptor {
    inventory::iter::<HandlerDescriptor>
        .into_iter()
        .find(|descriptor| descriptor.name.ends_with(name))
        .expect("registered handler")
}

fn main() {
    let charge = registered("billing.charge");
    assert_eq!(charge.message, "order.placed");
    assert_eq!(charge.message_type, "OrderPlaced");
    assert_eq!(charge.kind, MessageKind::Event);
    assert_eq!(charge.pool, Some("billing"));
    assert!(charge.file.ends_with("all_options.rs"), "{}", charge.file);
    assert_eq!(
        charge.line, 28,
        "the line of `async fn charge`, not of the attribute"
    );
    assert!((charge.requirements)().is_empty());
    let backoff = Backoff::Exponential {
        initial: Duration::from_millis(100),
        factor: 2.0,
        max: Duration::from_secs(10),
    };
    assert_eq!(
        charge.options,
        HandlerOptions {
            retry: RetryPolicy {
                max_attempts: 5,
                backoff,
                jitter: true
            },
            timeout: Some(Duration::from_millis(1500)),
            on_failure: OnFailure::DeadLetter,
            rate: Some(Rate {
                count: 180,
                per: Duration::from_secs(1)
            }),
            dedupe: true,
            ordered: true,
            circuit_breaker: Some(CircuitBreaker {
                failures: 3,
                open_for: Duration::from_secs(10),
            }),
            start_within: Some(Duration::from_secs(30)),
        }
    );

    let notify = registered("::notify");
    assert_eq!(notify.name, concat!(module_path!(), "::notify"));
    assert_eq!(notify.pool, None);
    assert_eq!(
        notify.options.retry,
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::DEFAULT
        }
    );
    assert_eq!(notify.options.on_failure, OnFailure::Log);
    assert_eq!(
        notify.options.rate,
        Some(Rate {
            count: 5,
            per: Duration::from_millis(1)
        })
    );
    assert_eq!(notify.options.timeout, None);

    let archive = registered("::archive");
    assert_eq!(
        archive.options.retry.backoff,
        Backoff::Fixed(Duration::from_millis(250))
    );
    assert_eq!(
        archive.options.retry.max_attempts,
        RetryPolicy::DEFAULT.max_attempts
    );
    assert_eq!(archive.options.timeout, Some(Duration::from_secs(120)));
    assert_eq!(archive.options.on_failure, OnFailure::Ignore);

    let index = registered("::index");
    assert!(index.options.retry.jitter);
    assert_eq!(index.options.timeout, Some(Duration::from_micros(500)));
    assert!(!index.options.dedupe && !index.options.ordered);
    assert_eq!(
        index.options.circuit_breaker,
        Some(CircuitBreaker {
            open_for: Duration::from_secs(120),
            ..CircuitBreaker::DEFAULT
        })
    );
    assert_eq!(archive.options.circuit_breaker, None);
    assert_eq!(index.options.start_within, Some(Duration::from_millis(250)));
    assert_eq!(archive.options.start_within, None);
}
