//! A nightly batch between two systems, with proof that it is complete.
//!
//! The billing side exports the day's invoices from its database (rows of a query, streamed) into
//! a batch: the data file, then its manifest (count, bytes, SHA-256), then the completion marker,
//! each fsynced and renamed. It sends the batch to a shared directory (a mounted share; SFTP works
//! the same with `herald::batch::sftp::Sftp`), marker last.
//!
//! The ledger side fetches the batch once its marker is there, and its importer checks the data
//! file against the manifest before anything is processed. Each invoice then goes through the
//! normal Herald pools to `post_invoice`, which writes its effect with the durable inbox, so a
//! re-import after a crash posts nothing twice. The receipt (the FIN, with the counts) is written
//! only when every invoice was handled or dead-lettered, and goes back to the share.
//!
//! Then the example spoils a second batch the way the KISA incident did (the file is there but
//! empty) and shows it refused: a dead letter, no receipt, nothing posted.
//!
//! ```sh
//! cargo run --example batch_transfer --features batch
//! ```

use herald::batch::transfer::{self, Directory};
use herald::batch::{Exporter, ImportOutcome, Importer};
use herald::inbox::SqliteInbox;
use herald::outbox::{self, SqliteOutbox};
use herald::sqlx::{self, sqlite::SqliteRow, Row};
use herald::{async_handler, Event, HandlerError, Herald};
use serde::{Deserialize, Serialize};

/// One invoice, as the billing side exports it and the ledger side handles it.
#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "billing.invoice_issued")]
struct InvoiceIssued {
    id: i64,
    customer: String,
    cents: i64,
}

impl<'r> sqlx::FromRow<'r, SqliteRow> for InvoiceIssued {
    fn from_row(row: &'r SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(InvoiceIssued {
            id: row.try_get("id")?,
            customer: row.try_get("customer")?,
            cents: row.try_get("cents")?,
        })
    }
}

/// Posts an invoice to the ledger: the posting and the inbox row commit together.
#[async_handler]
async fn post_invoice(invoice: InvoiceIssued, inbox: SqliteInbox) -> Result<(), HandlerError> {
    let mut tx = inbox.begin().await?;
    sqlx::query("INSERT INTO postings (invoice_id, customer, cents) VALUES (?1, ?2, ?3)")
        .bind(invoice.id)
        .bind(&invoice.customer)
        .bind(invoice.cents)
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
    let root = tempfile::tempdir()?;
    let (outgoing, share, incoming) = (
        root.path().join("billing-out"),
        root.path().join("share"),
        root.path().join("ledger-in"),
    );
    for dir in [&outgoing, &share, &incoming] {
        std::fs::create_dir_all(dir)?;
    }

    // --- The billing side: the day's invoices, from a query, into a batch, onto the share. ---
    let billing = outbox::sqlite::connect(root.path().join("billing.db")).await?;
    sqlx::query("CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, cents INTEGER NOT NULL)")
        .execute(&billing)
        .await?;
    for (id, customer, cents) in [
        (1, "Ann Lee", 12_000),
        (2, "Bo, Ltd.", 990),
        (3, "Cy \"C\" Dee", 45_500),
    ] {
        sqlx::query("INSERT INTO invoices VALUES (?1, ?2, ?3)")
            .bind(id)
            .bind(customer)
            .bind(cents)
            .execute(&billing)
            .await?;
    }
    let exporter = Exporter::builder(&outgoing).producer("billing").build()?;
    let rows =
        sqlx::query_as::<_, InvoiceIssued>("SELECT id, customer, cents FROM invoices ORDER BY id")
            .fetch(&billing);
    let batch = exporter.export_stream("invoices-2026-12-06", rows).await?;
    println!(
        "exported {}: {} records, {} bytes, sha256 {}",
        batch.batch_id, batch.manifest.records, batch.manifest.bytes, batch.manifest.sha256
    );
    let share_remote = Directory::new(&share);
    transfer::send(&batch, &share_remote).await?;

    // --- The ledger side: fetch once the marker is there, verify, handle, receipt back. ---
    let ledger_db = outbox::sqlite::connect(root.path().join("ledger.db")).await?;
    let store = SqliteOutbox::new(ledger_db.clone()).await?; // the inbox and dead-letter tables
    sqlx::query("CREATE TABLE postings (invoice_id INTEGER NOT NULL, customer TEXT NOT NULL, cents INTEGER NOT NULL)")
        .execute(&ledger_db)
        .await?;
    let herald = Herald::builder()
        .state(ledger_db.clone())
        .dead_letters(store.dead_letters())
        .build()?;
    let importer = Importer::builder(&herald, &incoming)
        .ledger(root.path().join("ledger-state"))
        .build()?;
    transfer::fetch(&share_remote, &incoming).await?;
    for (id, outcome) in importer.poll().await? {
        if let ImportOutcome::Imported(receipt) = outcome {
            println!(
                "imported {id}: {} records, {} succeeded, {} dead-lettered",
                receipt.records, receipt.succeeded, receipt.dead_lettered
            );
            transfer::send_receipt(&share_remote, importer.receipts(), &id).await?;
        }
    }
    let posted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM postings")
        .fetch_one(&ledger_db)
        .await?;
    println!("postings: {posted}");
    println!(
        "importing it again: {:?}",
        importer.import("invoices-2026-12-06").await?
    );

    // --- The KISA case: the partner's file is there, but empty. ---
    let spoiled = exporter.export(
        "invoices-2026-12-07",
        std::iter::once(InvoiceIssued {
            id: 4,
            customer: "Di".into(),
            cents: 1,
        }),
    )?;
    std::fs::write(&spoiled.data_path, b"")?;
    transfer::send(&spoiled, &share_remote).await?;
    transfer::fetch(&share_remote, &incoming).await?;
    match importer.import("invoices-2026-12-07").await? {
        ImportOutcome::Rejected(rejection) => println!("refused: {rejection}"),
        other => println!("unexpected: {other:?}"),
    }
    let dead = herald.dead_letters().count().await?;
    let posted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM postings")
        .fetch_one(&ledger_db)
        .await?;
    println!(
        "receipt for the empty batch: {}; dead letters: {dead}; postings still {posted}",
        incoming.join("invoices-2026-12-07.receipt.json").exists()
    );
    herald.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(())
}
