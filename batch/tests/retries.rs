//! A record whose handler fails before its last attempt is delivered again by the importer (the
//! engine's backoff, attempt + 1), and the receipt waits for it.

mod common;

use common::*;
use herald::{async_handler, HandlerError, Herald, Meta, State};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Attempts(Arc<Mutex<HashMap<u64, Vec<String>>>>);

/// Fails the first two attempts of every even invoice.
#[async_handler(retry(max_attempts = 3, backoff = fixed(5ms)))]
async fn flaky_booking(
    invoice: Invoice,
    meta: Meta,
    State(attempts): State<Attempts>,
) -> Result<(), HandlerError> {
    let mut attempts = attempts.0.lock().expect("attempts");
    let seen = attempts.entry(invoice.id).or_default();
    seen.push(meta.envelope().id.to_string());
    if invoice.id.is_multiple_of(2) && seen.len() < 3 {
        return Err(HandlerError::msg("the partner's ledger is busy"));
    }
    Ok(())
}

#[tokio::test]
async fn failed_attempts_are_retried_before_the_receipt() {
    let dirs = Dirs::new();
    let attempts = Attempts::default();
    let herald = Herald::builder()
        .handlers_under(module_path!())
        .state(attempts.clone())
        .build()
        .expect("herald");
    dirs.exporter(&dirs.inbox)
        .export("flaky", invoices(4))
        .expect("export");
    let receipt = imported(
        dirs.importer(&herald)
            .import("flaky")
            .await
            .expect("import"),
    );
    assert_eq!(
        (receipt.records, receipt.succeeded, receipt.dead_lettered),
        (4, 4, 0)
    );
    let attempts = attempts.0.lock().expect("attempts").clone();
    for id in 1..=4u64 {
        let seen = &attempts[&id];
        assert_eq!(
            seen.len(),
            if id.is_multiple_of(2) { 3 } else { 1 },
            "invoice {id}"
        );
        assert!(
            seen.iter().all(|m| m == &seen[0]),
            "a retry changed the message id"
        );
    }
    assert!(dead_letters(&herald).await.is_empty());
}
