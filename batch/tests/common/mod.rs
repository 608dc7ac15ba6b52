//! What the batch tests share: the message, a recorder of effects, directories, and checks.

#![allow(dead_code, unreachable_pub)]

use herald::dead_letter::DeadLetter;
use herald::Herald;
use herald_batch::{Exporter, ImportOutcome, Importer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The message every batch here carries.
#[derive(herald::Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "batch_test.invoice")]
pub struct Invoice {
    pub id: u64,
    pub customer: String,
    pub cents: i64,
    pub note: Option<String>,
}

pub fn invoices(n: u64) -> Vec<Invoice> {
    (1..=n)
        .map(|id| Invoice {
            id,
            customer: format!("customer, \"{id}\""),
            cents: id as i64 * 100 - 7,
            note: id.is_multiple_of(2).then(|| format!("line one\nline {id}")),
        })
        .collect()
}

/// The ids the handlers saw, in the order they ran.
#[derive(Clone, Default, Debug)]
pub struct Effects(pub Arc<Mutex<Vec<u64>>>);

impl Effects {
    pub fn ids(&self) -> Vec<u64> {
        let mut ids = self.0.lock().expect("effects").clone();
        ids.sort_unstable();
        ids
    }
}

/// An outgoing directory, an inbox, a ledger: all under one temporary directory.
pub struct Dirs {
    pub root: tempfile::TempDir,
    pub out: PathBuf,
    pub inbox: PathBuf,
    pub ledger: PathBuf,
}

impl Dirs {
    pub fn new() -> Dirs {
        let root = tempfile::tempdir().expect("temp dir");
        let out = root.path().join("out");
        let inbox = root.path().join("inbox");
        let ledger = root.path().join("ledger");
        std::fs::create_dir_all(&out).expect("out");
        std::fs::create_dir_all(&inbox).expect("inbox");
        Dirs {
            out,
            inbox,
            ledger,
            root,
        }
    }

    pub fn exporter(&self, dir: &Path) -> Exporter {
        Exporter::builder(dir)
            .producer("batch-tests")
            .build()
            .expect("exporter")
    }

    pub fn importer(&self, herald: &Herald) -> Importer {
        Importer::builder(herald, &self.inbox)
            .ledger(&self.ledger)
            .build()
            .expect("importer")
    }
}

pub async fn dead_letters(herald: &Herald) -> Vec<DeadLetter> {
    herald.dead_letters().list(1_000).await.expect("list")
}

pub fn receipt_exists(dir: &Path, id: &str) -> bool {
    dir.join(format!("{id}.receipt.json")).exists()
}

pub fn imported(outcome: ImportOutcome) -> herald_batch::BatchReceipt {
    match outcome {
        ImportOutcome::Imported(receipt) => receipt,
        other => panic!("expected Imported, got {other:?}"),
    }
}
