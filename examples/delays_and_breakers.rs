//! Delayed delivery and a circuit breaker (docs/DELAYS_AND_BREAKERS.md).
//!
//! - A payment reminder written into the SQLite outbox with the order, due two seconds later:
//!   the relay leaves the row until then.
//! - A trial-ended notice published in memory with `deliver_after`.
//! - A shipping partner that is down: order 1's three failed calls open its handler's breaker;
//!   order 1 then waits for its fourth attempt and orders 2 and 3 wait without spending any; after
//!   a second one attempt probes, finds the partner back, the breaker closes and every shipment
//!   goes out (orders 2 and 3 on their first attempt).
//!
//! Run it with `cargo run --example delays_and_breakers`.

use herald::outbox::{self, SqliteOutbox};
use herald::{
    async_handler, BreakerState, Event, HandlerError, Herald, Meta, PublishOptions, State,
};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "payment.reminder_due", key = order_id)]
struct PaymentReminderDue {
    order_id: u64,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "user.trial_ended")]
struct TrialEnded {
    user_id: u64,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.ready_to_ship", key = order_id)]
struct ReadyToShip {
    order_id: u64,
}

/// When the example started, to print times from it.
#[derive(Clone)]
struct Clock(Instant);

impl Clock {
    fn now(&self) -> String {
        format!("{:>5} ms", self.0.elapsed().as_millis())
    }
}

/// Stands in for a shipping partner that is down until told otherwise.
#[derive(Clone, Default)]
struct ShippingPartner {
    up: Arc<AtomicBool>,
    calls: Arc<AtomicU32>,
}

#[async_handler]
async fn remind_payment(event: PaymentReminderDue, meta: Meta, State(clock): State<Clock>) {
    println!(
        "[{}] payment reminder for order {} (attempt {})",
        clock.now(),
        event.order_id,
        meta.attempt()
    );
}

#[async_handler]
async fn offer_subscription(event: TrialEnded, State(clock): State<Clock>) {
    println!(
        "[{}] trial of user {} ended: offer sent",
        clock.now(),
        event.user_id
    );
}

#[async_handler(
    retry(max_attempts = 5, backoff = fixed(100ms)),
    circuit_breaker(failures = 3, open_for = "1s")
)]
async fn book_shipment(
    event: ReadyToShip,
    meta: Meta,
    State(partner): State<ShippingPartner>,
    State(clock): State<Clock>,
) -> Result<(), HandlerError> {
    partner.calls.fetch_add(1, Ordering::SeqCst);
    if !partner.up.load(Ordering::SeqCst) {
        println!(
            "[{}] order {}: partner down (attempt {})",
            clock.now(),
            event.order_id,
            meta.attempt()
        );
        return Err(HandlerError::msg(
            "shipping partner: 503 Service Unavailable",
        ));
    }
    println!(
        "[{}] order {}: shipment booked (attempt {})",
        clock.now(),
        event.order_id,
        meta.attempt()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clock = Clock(Instant::now());
    let partner = ShippingPartner::default();
    let herald = Herald::builder()
        .state(clock.clone())
        .state(partner.clone())
        .build()?;

    // 1. Durable: the reminder commits with the order and is due in two seconds.
    let dir = tempfile::tempdir()?;
    let pool = outbox::sqlite::connect(dir.path().join("shop.db")).await?;
    let outbox = SqliteOutbox::new(pool.clone()).await?;
    let relay = outbox.relay(&herald).start();
    let mut tx = pool.begin().await?;
    // ... the order's own rows, on `&mut *tx` ...
    outbox
        .publish_with(
            &mut *tx,
            PaymentReminderDue { order_id: 42 },
            PublishOptions::new().deliver_after(Duration::from_secs(2)),
        )
        .await?;
    tx.commit().await?;
    println!(
        "[{}] order 42 committed, its payment reminder due in 2 s",
        clock.now()
    );

    // 2. In memory: accepted and counted now, handled in one second.
    let trial = herald
        .publish_with(
            TrialEnded { user_id: 7 },
            PublishOptions::new().deliver_after(Duration::from_secs(1)),
        )
        .await?;
    println!(
        "[{}] trial notice accepted; ledger: {} delayed",
        clock.now(),
        herald.ledger().total.delayed
    );

    // 3. The breaker: order 1 fails three times in a row and opens it; orders 2 and 3 wait.
    let breaker = "delays_and_breakers::book_shipment";
    let mut shipments = vec![(1, herald.publish(ReadyToShip { order_id: 1 }).await?)];
    while herald.circuit_breaker(breaker) != Some(BreakerState::Open) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("[{}] breaker open after 3 failures", clock.now());
    for order_id in [2, 3] {
        shipments.push((order_id, herald.publish(ReadyToShip { order_id }).await?));
    }
    partner.up.store(true, Ordering::SeqCst);
    println!(
        "[{}] partner is back; the breaker probes when its second is over",
        clock.now()
    );
    for (order_id, delivery) in shipments {
        let outcome = delivery.await;
        println!(
            "[{}] order {order_id}: {:?}",
            clock.now(),
            outcome.reports[0].status
        );
    }
    trial.await;
    while outbox.status().await?.pending > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.stop().await;

    let report = herald.shutdown(Duration::from_secs(5)).await;
    let counts = &report.ledger.handlers[breaker];
    println!(
        "\nshipping partner called {} times; breaker opened {}, probes {}, closed {}, jobs held {}",
        partner.calls.load(Ordering::SeqCst),
        counts.breaker_opened,
        counts.breaker_probes,
        counts.breaker_closed,
        counts.breaker_held
    );
    println!("{}", report.ledger);
    assert!(report.ledger.is_balanced());
    Ok(())
}
