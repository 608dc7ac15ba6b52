//! The importer's durable record of batches: which were imported (with their receipt), which were
//! rejected (and for which files), and a lock per batch so two importers never run one batch at
//! once.
//!
//! It is a directory of small files rather than a database table: the importer then needs no
//! database (a batch job may run beside a service that has none), it works the same for local,
//! mounted and SFTP-fetched batches, each entry is written atomically (temporary name, fsync,
//! rename) like the batches themselves, and an operator reads or clears it with `ls` and `rm`.
//! Keep it on a local disk: the per-batch lock is an advisory file lock, which some network file
//! systems do not honour.

use crate::fsio::{self, at};
use crate::names::BatchId;
use crate::receipt::BatchReceipt;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

const IMPORTED_SUFFIX: &str = ".imported.json";
const REJECTED_SUFFIX: &str = ".rejected.json";
const LOCK_SUFFIX: &str = ".lock";

/// The ledger directory.
#[derive(Debug, Clone)]
pub(crate) struct Ledger {
    dir: PathBuf,
}

/// Holds a batch's lock until dropped.
#[derive(Debug)]
pub(crate) struct BatchLock {
    _file: File,
}

/// A rejection as the ledger keeps it: the reason, and the files it was about.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RejectedEntry {
    pub(crate) fingerprint: String,
    pub(crate) reason: String,
}

impl Ledger {
    pub(crate) fn open(dir: &Path) -> io::Result<Ledger> {
        fs::create_dir_all(dir).map_err(at(dir))?;
        Ok(Ledger {
            dir: dir.to_owned(),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The receipt of a batch already imported.
    pub(crate) fn imported(&self, id: &BatchId) -> io::Result<Option<BatchReceipt>> {
        let path = self.dir.join(format!("{id}{IMPORTED_SUFFIX}"));
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: not a receipt ({e}); restore it from the batch's receipt file, or remove it to import the batch again", path.display()),
                    )
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(at(&path)(e)),
        }
    }

    pub(crate) fn record_imported(&self, receipt: &BatchReceipt) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(receipt).map_err(io::Error::other)?;
        fsio::write_atomic(
            &self.dir,
            &format!("{}{IMPORTED_SUFFIX}", receipt.batch_id),
            &json,
        )?;
        let _ = fs::remove_file(
            self.dir
                .join(format!("{}{REJECTED_SUFFIX}", receipt.batch_id)),
        );
        Ok(())
    }

    pub(crate) fn rejected(&self, id: &BatchId) -> Option<RejectedEntry> {
        let bytes = fs::read(self.dir.join(format!("{id}{REJECTED_SUFFIX}"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub(crate) fn record_rejected(&self, id: &BatchId, entry: &RejectedEntry) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(entry).map_err(io::Error::other)?;
        fsio::write_atomic(&self.dir, &format!("{id}{REJECTED_SUFFIX}"), &json).map(|_| ())
    }

    /// Takes the batch's lock, or `None` when another importer holds it. A crashed importer's
    /// lock goes with its process.
    pub(crate) fn lock(&self, id: &BatchId) -> io::Result<Option<BatchLock>> {
        let path = self.dir.join(format!("{id}{LOCK_SUFFIX}"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(at(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(BatchLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(at(&path)(e)),
        }
    }
}
