//! Batch files for [Herald](https://docs.rs/herald) that prove they are complete before anyone
//! acts on them.
//!
//! The failure this crate exists for: a partner sent a file that existed but was empty (or cut
//! short); the receiver saw the name, wrote its "done" file and reported success, and the data was
//! lost for good. Here a batch is three files, written in this order, each under a temporary
//! name, fsynced, then renamed:
//!
//! 1. the **data file** (`<id>.jsonl`, JSON Lines by default; `.csv`/`.tsv`/`.dsv` for
//!    delimiter-separated values; `.nv` for `name=value` lines);
//! 2. the **manifest** (`<id>.manifest.json`): batch id, message type and schema, producer,
//!    created-at, record count, byte count and SHA-256 of the data file;
//! 3. the **completion marker** (`<id>.done`), last, naming the manifest by its SHA-256.
//!
//! The [`Importer`] takes a batch only once its marker is there, checks the data file against the
//! manifest (count, bytes, checksum) before it processes one record, refuses and reports a batch
//! that does not match (a dead letter for [`BATCH_HANDLER`], an error in the log,
//! `herald_batch_rejected_total{reason}`), delivers each record as a message through
//! [`Herald::ingest`](herald_core::Herald::ingest) (the normal pools, retries, dead letters and
//! ledger) under an id derived from the batch id and the record number, and writes the receipt
//! (`<id>.receipt.json`, the seeds' FIN, with the counts) only when every record was handled or
//! dead-lettered. An importer's ledger makes sure a batch id is imported once.
//!
//! ```no_run
//! use herald_batch::{Exporter, ImportOutcome, Importer, RecordFormat};
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct Invoice { id: u64 }
//! # impl herald_core::Message for Invoice { const NAME: &'static str = "billing.invoice";
//! #   const KIND: herald_core::MessageKind = herald_core::MessageKind::Event; type Reply = (); }
//! # async fn run(herald: herald_core::Herald) -> Result<(), Box<dyn std::error::Error>> {
//! // The sender: records → data file, manifest, marker.
//! let exporter = Exporter::builder("/srv/outgoing").producer("billing").build()?;
//! let batch = exporter.export("invoices-2026-12-06", (1..=3).map(|id| Invoice { id }))?;
//! assert_eq!(batch.manifest.records, 3);
//!
//! // The receiver: verified, then each record through the handlers of `billing.invoice`.
//! let importer = Importer::builder(&herald, "/srv/incoming").build()?;
//! match importer.import("invoices-2026-12-06").await? {
//!     ImportOutcome::Imported(receipt) => println!("{} of {} handled", receipt.succeeded, receipt.records),
//!     ImportOutcome::Rejected(rejection) => eprintln!("{rejection}"),
//!     other => println!("{other:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! Batches move between machines with [`transfer::send`] and [`transfer::fetch`] over a
//! [`transfer::Directory`] (local or mounted) or [`sftp::Sftp`], keeping the marker last end to
//! end. See `docs/BATCH.md` for the protocol, the formats and the guarantees.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod export;
mod format;
mod fsio;
mod import;
mod ledger;
mod manifest;
mod names;
mod receipt;
pub mod sftp;
pub mod transfer;

pub use export::{BatchWriter, ExportError, ExportedBatch, Exporter, ExporterBuilder};
pub use import::{
    record_id, ImportError, ImportOutcome, Importer, ImporterBuilder, RejectReason, Rejection,
    BATCH_HANDLER, BATCH_ID_HEADER, RECORD_HEADER,
};
pub use manifest::{Field, FieldKind, Manifest, Marker, RecordFormat, Schema, MANIFEST_VERSION};
pub use names::{BatchId, InvalidBatchId, MANIFEST_SUFFIX, MARKER_SUFFIX, RECEIPT_SUFFIX};
pub use receipt::BatchReceipt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Exporter>();
        assert_send_sync::<BatchWriter>();
        assert_send_sync::<ExportedBatch>();
        assert_send_sync::<ExportError>();
        assert_send_sync::<Importer>();
        assert_send_sync::<ImportOutcome>();
        assert_send_sync::<ImportError>();
        assert_send_sync::<Rejection>();
        assert_send_sync::<BatchReceipt>();
        assert_send_sync::<Manifest>();
        assert_send_sync::<transfer::TransferError>();
        assert_send_sync::<transfer::Directory>();
        assert_send_sync::<sftp::Sftp>();
    }

    #[test]
    fn record_ids_are_deterministic_and_distinct() {
        let a = BatchId::new("a").expect("valid");
        let b = BatchId::new("b").expect("valid");
        assert_eq!(record_id(&a, 1), record_id(&a, 1));
        assert_ne!(record_id(&a, 1), record_id(&a, 2));
        assert_ne!(record_id(&a, 1), record_id(&b, 1));
        assert_eq!(record_id(&a, 1).as_uuid().get_version_num(), 8);
    }
}
