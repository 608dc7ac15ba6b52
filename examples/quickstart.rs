//! Quickstart: the three side effects from Herald's notes, moved off the request path.
//!
//! - sign-up → verification e-mail and audit log (one event, two handlers);
//! - login → grant points (a command with a reply);
//! - order cancelled → refund (retried once after a partner error, then succeeds).
//!
//! Run it with `cargo run --example quickstart`.

use herald::{async_handler, Command, Event, HandlerError, Herald, Meta, State};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "user.signed_up")]
struct UserSignedUp {
    user_id: u64,
    email: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct PointsGranted {
    user_id: u64,
    balance: u32,
}

#[derive(Command, Clone, Debug, Serialize, Deserialize)]
#[command(name = "points.grant", reply = PointsGranted)]
struct GrantPoints {
    user_id: u64,
    points: u32,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.canceled", key = order_id)]
struct OrderCanceled {
    order_id: u64,
    amount_cents: u64,
}

/// Stands in for an e-mail provider.
#[derive(Clone, Default)]
struct Mailer {
    sent: Arc<AtomicU32>,
}

/// Stands in for the points table.
#[derive(Clone, Default)]
struct Points(Arc<Mutex<HashMap<u64, u32>>>);

/// Stands in for a payment partner that fails the first call.
#[derive(Clone, Default)]
struct PaymentPartner {
    calls: Arc<AtomicU32>,
}

#[async_handler(pool = "email", retry(max_attempts = 5, backoff = exponential(100ms, 2.0, 10s)), timeout = "5s")]
async fn send_verification_email(event: UserSignedUp, State(mailer): State<Mailer>) {
    mailer.sent.fetch_add(1, Ordering::SeqCst);
    println!("  [email]  verification e-mail sent to {}", event.email);
}

#[async_handler(on_failure = log)]
async fn write_audit_log(event: UserSignedUp, meta: Meta) {
    println!(
        "  [audit]  user {} signed up (message {})",
        event.user_id,
        meta.id()
    );
}

#[async_handler]
async fn grant_points(command: GrantPoints, State(points): State<Points>) -> PointsGranted {
    let mut table = points
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let balance = table.entry(command.user_id).or_default();
    *balance += command.points;
    PointsGranted {
        user_id: command.user_id,
        balance: *balance,
    }
}

#[async_handler(ordered, dedupe, retry(max_attempts = 3, backoff = fixed(50ms)))]
async fn refund(
    event: OrderCanceled,
    State(partner): State<PaymentPartner>,
    meta: Meta,
) -> Result<(), HandlerError> {
    if partner.calls.fetch_add(1, Ordering::SeqCst) == 0 {
        println!(
            "  [refund] partner timed out on attempt {}; Herald will retry",
            meta.attempt()
        );
        return Err(HandlerError::msg("payment partner timed out"));
    }
    println!(
        "  [refund] order {} refunded {} cents on attempt {}",
        event.order_id,
        event.amount_cents,
        meta.attempt()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let herald = Herald::builder()
        .pool("email", herald::PoolConfig::new().concurrency(4).queue(100))
        .state(Mailer::default())
        .state(Points::default())
        .state(PaymentPartner::default())
        .build()?;
    println!("Routing table:\n{}", herald.routes());

    println!(
        "1. A user signs up: the request returns at once, two handlers run in the background."
    );
    let delivery = herald
        .publish(UserSignedUp {
            user_id: 1,
            email: "kim@example.com".into(),
        })
        .await?;
    let outcome = delivery.await;
    println!(
        "   -> {} handler(s) done, success = {}",
        outcome.reports.len(),
        outcome.is_success()
    );

    println!("2. The user logs in: a command with exactly one handler, and its reply.");
    let reply = herald
        .send(GrantPoints {
            user_id: 1,
            points: 100,
        })
        .await?
        .await?;
    println!(
        "   -> user {} now has {} points",
        reply.user_id, reply.balance
    );

    println!("3. An order is cancelled: the refund fails once and is retried.");
    let outcome = herald
        .publish(OrderCanceled {
            order_id: 42,
            amount_cents: 1_990,
        })
        .await?
        .await;
    println!("   -> refunded = {}", outcome.is_success());

    let report = herald.shutdown(Duration::from_secs(5)).await;
    println!(
        "\nLedger at shutdown (nothing lost if accepted = the sum of the buckets):\n{}",
        report.ledger
    );
    if !report.ledger.is_balanced() || report.ledger.total.dead_lettered != 0 {
        return Err("the ledger does not balance".into());
    }
    Ok(())
}
