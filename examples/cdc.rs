//! Committed PostgreSQL changes into a Herald handler, exactly once in effect.
//!
//! The "application" writes orders: a transaction of three inserts, a transaction that rolls
//! back, an update and a delete. It knows nothing of Herald. A CDC source reads the committed
//! changes of `cdc_example_orders` from a logical replication slot (pgoutput), in commit order,
//! and delivers each as a `herald.cdc.change` event to `post_to_ledger`, which writes a ledger
//! line and its CDC position in one transaction: after a crash, a change delivered again is
//! recognised and not posted twice. The rolled-back order never appears.
//!
//! Needs PostgreSQL with `wal_level = logical` (see docs/CDC.md):
//!
//! ```sh
//! HERALD_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --example cdc --features cdc,postgres
//! ```
//!
//! At the end the example drops its slot (a slot nobody reads keeps WAL on the server forever),
//! its publication and its tables.

use herald::cdc::{self, CdcPosition, CdcSource, Change, Operation};
use herald::sqlx::{self, PgPool};
use herald::{async_handler, HandlerError, Herald};

const SLOT: &str = "herald_cdc_example";
const PUBLICATION: &str = "herald_cdc_example_pub";

/// A ledger line: order id, event, amount, the amount before (an update).
type LedgerLine = (Option<i64>, String, Option<i64>, Option<i64>);

/// Posts each committed order change to the ledger; the line and the position commit together.
#[async_handler]
async fn post_to_ledger(change: Change, position: CdcPosition) -> Result<(), HandlerError> {
    let (event, row) = match change.op {
        Operation::Insert => ("placed", change.new.as_ref()),
        Operation::Update => ("changed", change.new.as_ref()),
        Operation::Delete => ("removed", change.old.as_ref()),
        _ => return Ok(()), // a truncate: nothing to post
    };
    let field = |name: &str| row.and_then(|r| r.get(name)).cloned().unwrap_or_default();
    let mut tx = position.begin().await?; // Err(duplicate) when already posted
    sqlx::query(
        "INSERT INTO cdc_example_ledger (order_id, event, cents, was_cents, commit_lsn) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(field("id").as_i64())
    .bind(event)
    .bind(field("cents").as_i64())
    .bind(change.old_value("cents").and_then(|v| v.as_i64()))
    .bind(change.commit_lsn.to_string())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .init();
    let url = std::env::var("HERALD_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let pool = PgPool::connect(&url).await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS cdc_example_orders (
             id bigint PRIMARY KEY, customer text NOT NULL, cents bigint NOT NULL);
         ALTER TABLE cdc_example_orders REPLICA IDENTITY FULL; -- old values of updates, whole rows of deletes
         CREATE TABLE IF NOT EXISTS cdc_example_ledger (
             order_id bigint, event text NOT NULL, cents bigint, was_cents bigint, commit_lsn text NOT NULL);",
    )
    .execute(&pool)
    .await?;

    let herald = Herald::builder()
        .handlers_under(module_path!())
        .state(pool.clone())
        .build()?;
    // Creates the publication (before the slot), the slot and the position tables if missing.
    let source = CdcSource::builder(&herald, pool.clone())
        .slot(SLOT)
        .publication(PUBLICATION)
        .tables(["public.cdc_example_orders"])
        .build()
        .await?;

    // --- The application, unaware of Herald. ---
    let mut tx = pool.begin().await?;
    for (id, customer, cents) in [(1, "ada", 1200), (2, "grace", 800), (3, "linus", 4500)] {
        sqlx::query("INSERT INTO cdc_example_orders VALUES ($1, $2, $3)")
            .bind(id as i64)
            .bind(customer)
            .bind(cents as i64)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let mut doomed = pool.begin().await?;
    sqlx::query("INSERT INTO cdc_example_orders VALUES (99, 'rolled back', 1)")
        .execute(&mut *doomed)
        .await?;
    doomed.rollback().await?;
    sqlx::query("UPDATE cdc_example_orders SET cents = 900 WHERE id = 2")
        .execute(&pool)
        .await?;
    sqlx::query("DELETE FROM cdc_example_orders WHERE id = 3")
        .execute(&pool)
        .await?;

    // --- The CDC side: deliver what was committed (a service would `run_until` a signal). ---
    let lag = source.lag().await?;
    println!(
        "before: slot {} is {} bytes behind",
        lag.slot,
        lag.lag_bytes.unwrap_or_default()
    );
    let report = source.catch_up().await?;
    println!(
        "delivered {} changes of {} transactions; slot confirmed to {}",
        report.changes,
        report.transactions,
        report
            .confirmed
            .map(|lsn| lsn.to_string())
            .unwrap_or_default()
    );
    let ledger: Vec<LedgerLine> = sqlx::query_as(
        "SELECT order_id, event, cents, was_cents FROM cdc_example_ledger ORDER BY commit_lsn, order_id",
    )
    .fetch_all(&pool)
    .await?;
    for (order, event, cents, was) in &ledger {
        println!("ledger: order {order:?} {event}, cents {cents:?} (was {was:?})");
    }
    assert!(
        ledger.iter().all(|(order, ..)| *order != Some(99)),
        "the rolled-back order never appears"
    );
    // Again: nothing new, nothing posted twice.
    assert_eq!(source.catch_up().await?.changes, 0);
    // Between catch-ups nothing reads the slot: the lag reading says so (a running source,
    // `run_until`, keeps its session and is not reported).
    let after = source.lag().await?;
    println!(
        "after: {} bytes behind; warning: {}",
        after.lag_bytes.unwrap_or_default(),
        after.warning().unwrap_or_default()
    );

    // An example leaves nothing behind: a slot nobody reads pins WAL.
    cdc::drop_slot(&pool, SLOT).await?;
    sqlx::raw_sql(&format!(
        "DROP PUBLICATION {PUBLICATION}; DROP TABLE cdc_example_orders, cdc_example_ledger;"
    ))
    .execute(&pool)
    .await?;
    herald.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(())
}
