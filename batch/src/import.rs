//! The importer: waits for a batch's completion marker, proves the data file is the one the
//! manifest describes (count, bytes, SHA-256) before it processes anything, turns each record into
//! a message through [`Herald::ingest`] (the normal pools, retries, dead letters and ledger), and
//! writes the receipt only when every record was handled or dead-lettered.

use crate::format::{Decoder, RawRecord, SharedDigest};
use crate::fsio::{self, at};
use crate::ledger::{Ledger, RejectedEntry};
use crate::manifest::{sha256_hex, Manifest, Marker, MANIFEST_VERSION};
use crate::names::{BatchId, InvalidBatchId};
use crate::receipt::BatchReceipt;
use chrono::Utc;
use futures_util::StreamExt;
use herald_core::{
    DeadLetter, DeadLetterError, DeadLetterId, DeadLetterReason, Envelope, FailureKind, Herald,
    MessageId, Settlement, StoredError, StoredMessage,
};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The handler name on the dead letter of a rejected batch, and of a record that cannot be read
/// as a message.
pub const BATCH_HANDLER: &str = "herald.batch";

/// The header holding a batch message's batch id.
pub const BATCH_ID_HEADER: &str = "herald.batch.id";
/// The header holding a batch message's record number.
pub const RECORD_HEADER: &str = "herald.batch.record";

/// Why a batch was refused. Nothing of it was processed, no receipt was written, and it is
/// reported: a dead letter for [`BATCH_HANDLER`], an error in the log, and
/// `herald_batch_rejected_total{reason}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// The marker is there, the manifest is not.
    #[error("the completion marker is there but the manifest `{manifest}` is not: the sender must write the data file, then the manifest, then the marker; ask for the batch again")]
    MissingManifest {
        /// The manifest's file name.
        manifest: String,
    },
    /// The marker cannot be read, or names another batch.
    #[error(
        "the completion marker is not valid: {detail}; ask the sender to write the marker again"
    )]
    BadMarker {
        /// What is wrong.
        detail: String,
    },
    /// The manifest is not the one the marker completes.
    #[error("the manifest is not the one the marker completes (its SHA-256 is {found}, the marker names {expected}): the manifest was replaced after the marker was written; ask for the batch again")]
    ManifestNotMarked {
        /// The manifest checksum the marker names.
        expected: String,
        /// The manifest's checksum.
        found: String,
    },
    /// The manifest cannot be read.
    #[error("the manifest cannot be read: {detail}; ask the sender for a valid manifest")]
    BadManifest {
        /// What is wrong.
        detail: String,
    },
    /// The marker and manifest are there, the data file is not.
    #[error("the marker and manifest are there but the data file `{data_file}` is not (a marker without data); ask for the batch again")]
    MissingData {
        /// The data file's name.
        data_file: String,
    },
    /// The data file is empty, the manifest counts records.
    #[error("the data file `{data_file}` is empty but the manifest's record count is {records}: the file was named before it was written; ask for the batch again (an empty batch must say 0 records)")]
    EmptyData {
        /// The data file's name.
        data_file: String,
        /// The manifest's count.
        records: u64,
    },
    /// The data file's size is not the manifest's.
    #[error("the data file `{data_file}` has {found} bytes, the manifest says {expected}: the file is truncated or still being written; ask for the batch again")]
    SizeMismatch {
        /// The data file's name.
        data_file: String,
        /// The manifest's size.
        expected: u64,
        /// The file's size.
        found: u64,
    },
    /// The data file's SHA-256 is not the manifest's.
    #[error("the data file `{data_file}` has SHA-256 {found}, the manifest says {expected}: the file was changed or damaged in transfer; ask for the batch again")]
    ChecksumMismatch {
        /// The data file's name.
        data_file: String,
        /// The manifest's checksum.
        expected: String,
        /// The file's checksum.
        found: String,
    },
    /// The data file holds another number of records than the manifest says.
    #[error("the data file `{data_file}` holds {found} records, the manifest says {expected}: the sender counted wrong; ask for a corrected batch")]
    CountMismatch {
        /// The data file's name.
        data_file: String,
        /// The manifest's count.
        expected: u64,
        /// The records in the file.
        found: u64,
    },
    /// No message type of this name is registered in this process.
    #[error("message type `{message_type}` is not known here: derive `Event` (or `Command`) with this name in this service, or send the batch to the service that handles it")]
    UnknownMessageType {
        /// The manifest's message type.
        message_type: String,
    },
    /// The message type has no handler here: its records would be acknowledged with no effect.
    #[error("message type `{message_type}` has no handler here, so its records would be acknowledged without effect: register a handler for it (check `handlers_under`)")]
    NoHandler {
        /// The manifest's message type.
        message_type: String,
    },
}

impl RejectReason {
    /// A short, stable code for the reason (the metric's `reason` label).
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::MissingManifest { .. } => "missing_manifest",
            RejectReason::BadMarker { .. } => "bad_marker",
            RejectReason::ManifestNotMarked { .. } => "manifest_not_marked",
            RejectReason::BadManifest { .. } => "bad_manifest",
            RejectReason::MissingData { .. } => "missing_data",
            RejectReason::EmptyData { .. } => "empty_data",
            RejectReason::SizeMismatch { .. } => "size_mismatch",
            RejectReason::ChecksumMismatch { .. } => "checksum_mismatch",
            RejectReason::CountMismatch { .. } => "count_mismatch",
            RejectReason::UnknownMessageType { .. } => "unknown_message_type",
            RejectReason::NoHandler { .. } => "no_handler",
        }
    }
}

/// A refused batch: which, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("batch `{batch_id}` refused: {reason}")]
pub struct Rejection {
    /// The batch id.
    pub batch_id: BatchId,
    /// Why.
    pub reason: RejectReason,
}

/// What [`Importer::import`] did with a batch.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ImportOutcome {
    /// Every record was handled or dead-lettered; the receipt is written.
    Imported(BatchReceipt),
    /// The batch was imported before (the ledger has it): nothing was done again.
    AlreadyImported(BatchReceipt),
    /// The batch was refused and reported; nothing of it was processed, no receipt written.
    Rejected(Rejection),
    /// No completion marker yet: the batch is not complete.
    NotReady,
    /// Another importer holds the batch's lock.
    Busy,
}

/// Something went wrong that is not the batch's fault: no receipt was written and the batch is
/// not in the ledger, so importing it again later continues (records already handled are
/// recognised by their deterministic ids: `dedupe` handlers and the inbox skip them).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A file could not be read or written.
    #[error("batch import I/O error: {0}; no receipt was written, import the batch again")]
    Io(#[from] io::Error),
    /// The batch id is not valid.
    #[error(transparent)]
    InvalidBatchId(#[from] InvalidBatchId),
    /// A rejected batch's dead letter, or a record's, could not be stored, so it was not reported
    /// (it is logged in full).
    #[error("batch `{batch_id}`: the dead letter could not be stored ({source}); check the dead-letter store, then import again")]
    DeadLetter {
        /// The batch id.
        batch_id: BatchId,
        /// The store's error.
        #[source]
        source: DeadLetterError,
    },
    /// Herald kept refusing a record (its pools stayed full, or it is shutting down).
    #[error("batch `{batch_id}`: record {record} was refused by Herald for {waited:?} (pools full or shutting down); no receipt was written, import again later")]
    Refused {
        /// The batch id.
        batch_id: BatchId,
        /// The record.
        record: u64,
        /// How long the importer tried.
        waited: Duration,
    },
    /// The data file changed while it was imported.
    #[error("batch `{batch_id}`: the data file changed while it was imported ({detail}); a sender must never write a batch after its marker. No receipt was written; fix the sender and import again")]
    Changed {
        /// The batch id.
        batch_id: BatchId,
        /// Sizes and checksums.
        detail: String,
    },
}

/// Imports batches from one directory. Build it with [`Importer::builder`].
#[derive(Debug, Clone)]
pub struct Importer {
    herald: Herald,
    inbox: PathBuf,
    receipts: PathBuf,
    ledger: Ledger,
    concurrency: usize,
    refused_timeout: Duration,
}

/// Builds an [`Importer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ImporterBuilder {
    herald: Herald,
    inbox: PathBuf,
    receipts: Option<PathBuf>,
    ledger: Option<PathBuf>,
    concurrency: usize,
    refused_timeout: Duration,
}

impl Importer {
    /// An importer of the batches in `inbox`, delivering to `herald`.
    pub fn builder(herald: &Herald, inbox: impl Into<PathBuf>) -> ImporterBuilder {
        ImporterBuilder {
            herald: herald.clone(),
            inbox: inbox.into(),
            receipts: None,
            ledger: None,
            concurrency: 32,
            refused_timeout: Duration::from_secs(60),
        }
    }

    /// The directory batches are read from.
    pub fn inbox(&self) -> &Path {
        &self.inbox
    }

    /// The directory receipts are written to.
    pub fn receipts(&self) -> &Path {
        &self.receipts
    }

    /// The ledger directory.
    pub fn ledger(&self) -> &Path {
        self.ledger.dir()
    }

    /// Imports every complete batch in the inbox (each with a marker) not imported yet, oldest
    /// batch id first. A batch refused before is not reported again until one of its files
    /// changes.
    ///
    /// # Errors
    /// The inbox cannot be listed; a batch's own [`ImportError`] stops the poll (later batches
    /// wait for the next one).
    pub async fn poll(&self) -> Result<Vec<(BatchId, ImportOutcome)>, ImportError> {
        let inbox = self.inbox.clone();
        let ids = tokio::task::spawn_blocking(move || -> io::Result<Vec<BatchId>> {
            let mut ids: Vec<BatchId> = fs::read_dir(&inbox)
                .map_err(at(&inbox))?
                .filter_map(|entry| entry.ok())
                .filter_map(|entry| BatchId::from_marker_file(&entry.file_name().to_string_lossy()))
                .collect();
            ids.sort();
            Ok(ids)
        })
        .await
        .map_err(join_error)??;
        let mut outcomes = Vec::new();
        for id in ids {
            if self.ledger.imported(&id)?.is_some() {
                continue;
            }
            if let Some(entry) = self.ledger.rejected(&id) {
                if entry.fingerprint == fingerprint(&self.inbox, &id) {
                    continue;
                }
            }
            let outcome = self.import(id.as_str()).await?;
            outcomes.push((id, outcome));
        }
        Ok(outcomes)
    }

    /// Polls every `interval` until `stop` resolves ("waits for the marker"). Errors are logged
    /// and the next poll tries again.
    pub async fn run_until(&self, interval: Duration, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            if let Err(error) = self.poll().await {
                tracing::error!(%error, inbox = %self.inbox.display(), "batch poll failed; trying again");
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Imports one batch: verifies it whole, then delivers each record through
    /// [`Herald::ingest`], then writes the receipt and records the batch in the ledger.
    ///
    /// # Errors
    /// See [`ImportError`]: then no receipt was written and the batch can be imported again.
    pub async fn import(&self, batch_id: &str) -> Result<ImportOutcome, ImportError> {
        let id = BatchId::new(batch_id)?;
        if let Some(receipt) = self.ledger.imported(&id)? {
            return Ok(ImportOutcome::AlreadyImported(receipt));
        }
        if !self.inbox.join(id.marker_file()).exists() {
            return Ok(ImportOutcome::NotReady);
        }
        let Some(_lock) = self.ledger.lock(&id)? else {
            return Ok(ImportOutcome::Busy);
        };
        // Another importer may have finished it while we waited for the lock.
        if let Some(receipt) = self.ledger.imported(&id)? {
            return Ok(ImportOutcome::AlreadyImported(receipt));
        }
        let inbox = self.inbox.clone();
        let verify_id = id.clone();
        let verified = tokio::task::spawn_blocking(move || verify(&inbox, &verify_id))
            .await
            .map_err(join_error)??;
        let manifest = match verified {
            Ok(manifest) => manifest,
            Err((reason, manifest)) => return self.reject(id, reason, manifest.as_ref()).await,
        };
        if let Err(reason) = self.check_type(&manifest.message_type) {
            return self.reject(id, reason, Some(&manifest)).await;
        }
        let (succeeded, dead_lettered) = self.deliver(&id, &manifest).await?;
        let receipt = BatchReceipt {
            batch_id: id.to_string(),
            message_type: manifest.message_type.clone(),
            producer: manifest.producer.clone(),
            data_sha256: manifest.sha256.clone(),
            records: manifest.records,
            succeeded,
            dead_lettered,
            imported_at: Utc::now(),
        };
        let json = serde_json::to_vec_pretty(&receipt).map_err(io::Error::other)?;
        // The receipt first, then the ledger: a crash between them imports again (records are
        // recognised as duplicates) and writes the same receipt; the other order could leave a
        // batch in the ledger with no receipt ever sent.
        fsio::write_atomic(&self.receipts, &id.receipt_file(), &json)
            .map_err(at(&self.receipts))?;
        self.ledger.record_imported(&receipt)?;
        tracing::info!(batch_id = %id, records = receipt.records, succeeded, dead_lettered, "batch imported; receipt written");
        metrics::counter!("herald_batch_imported_total").increment(1);
        Ok(ImportOutcome::Imported(receipt))
    }

    fn check_type(&self, message_type: &str) -> Result<(), RejectReason> {
        // `null` is never a message: an unknown type is told apart from a malformed payload.
        if let Err(StoredError::UnknownMessage(_)) = self.herald.decode(message_type, b"null") {
            return Err(RejectReason::UnknownMessageType {
                message_type: message_type.to_owned(),
            });
        }
        if self.herald.handler_names(message_type).is_empty() {
            return Err(RejectReason::NoHandler {
                message_type: message_type.to_owned(),
            });
        }
        Ok(())
    }

    /// Reports a refused batch: its dead letter, an error in the log, the counter; and notes it in
    /// the ledger, so that `poll` does not report the same files again.
    async fn reject(
        &self,
        id: BatchId,
        reason: RejectReason,
        manifest: Option<&Manifest>,
    ) -> Result<ImportOutcome, ImportError> {
        tracing::error!(batch_id = %id, reason = reason.code(), "batch refused: {reason}");
        metrics::counter!("herald_batch_rejected_total", "reason" => reason.code()).increment(1);
        let now = Utc::now();
        let mut envelope = Envelope::new(BATCH_HANDLER);
        envelope.id = record_id(&id, 0);
        envelope
            .headers
            .extra
            .insert(BATCH_ID_HEADER.to_owned(), id.to_string());
        let payload = serde_json::json!({
            "batch_id": id.as_str(),
            "reason": reason.code(),
            "detail": reason.to_string(),
            "inbox": self.inbox.display().to_string(),
            "manifest": manifest,
        });
        self.herald
            .dead_letter(DeadLetter {
                id: DeadLetterId(0),
                envelope,
                payload,
                handler: BATCH_HANDLER.to_owned(),
                reason: DeadLetterReason::Malformed,
                failure: Some(FailureKind::Malformed),
                attempts: 1,
                first_error: Some(reason.to_string()),
                last_error: Some(reason.to_string()),
                first_failed_at: Some(now),
                last_failed_at: Some(now),
                dead_lettered_at: now,
            })
            .await
            .map_err(|source| ImportError::DeadLetter {
                batch_id: id.clone(),
                source,
            })?;
        self.ledger.record_rejected(
            &id,
            &RejectedEntry {
                fingerprint: fingerprint(&self.inbox, &id),
                reason: reason.to_string(),
            },
        )?;
        Ok(ImportOutcome::Rejected(Rejection {
            batch_id: id,
            reason,
        }))
    }

    /// Delivers every record; returns (succeeded, dead-lettered).
    async fn deliver(&self, id: &BatchId, manifest: &Manifest) -> Result<(u64, u64), ImportError> {
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<io::Result<RawRecord>>(self.concurrency * 2);
        let path = self.inbox.join(&manifest.data_file);
        let schema = manifest.schema.clone();
        let reader = tokio::task::spawn_blocking(move || -> io::Result<(u64, String)> {
            let file = File::open(&path).map_err(at(&path))?;
            let (reader, digest) = SharedDigest::reader(file);
            let mut decoder = Decoder::new(&schema, reader);
            loop {
                match decoder.next_record() {
                    Ok(Some(record)) => {
                        if tx.blocking_send(Ok(record)).is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        let _ = tx.blocking_send(Err(error));
                        break;
                    }
                }
            }
            Ok(digest.finish())
        });
        let records = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut settled = records
            .map(|record| async move {
                match record {
                    Ok(record) => self.deliver_record(id, manifest, record).await,
                    Err(error) => Err(ImportError::Io(error)),
                }
            })
            .buffer_unordered(self.concurrency);
        let (mut succeeded, mut dead_lettered) = (0, 0);
        while let Some(outcome) = settled.next().await {
            if outcome? {
                succeeded += 1;
            } else {
                dead_lettered += 1;
            }
        }
        drop(settled);
        let (bytes, sha256) = reader.await.map_err(join_error)??;
        let total = succeeded + dead_lettered;
        if bytes != manifest.bytes || sha256 != manifest.sha256 || total != manifest.records {
            return Err(ImportError::Changed {
                batch_id: id.clone(),
                detail: format!(
                    "verified {} bytes, SHA-256 {}, {} records; read {bytes} bytes, SHA-256 {sha256}, {total} records",
                    manifest.bytes, manifest.sha256, manifest.records
                ),
            });
        }
        metrics::counter!("herald_batch_records_total", "outcome" => "succeeded")
            .increment(succeeded);
        metrics::counter!("herald_batch_records_total", "outcome" => "dead_lettered")
            .increment(dead_lettered);
        Ok((succeeded, dead_lettered))
    }

    /// Delivers one record until every handler finished it: `true` when all succeeded.
    async fn deliver_record(
        &self,
        id: &BatchId,
        manifest: &Manifest,
        record: RawRecord,
    ) -> Result<bool, ImportError> {
        let mut envelope = Envelope::new(manifest.message_type.clone());
        envelope.id = record_id(id, record.number);
        envelope.occurred_at = manifest.created_at;
        let extra = &mut envelope.headers.extra;
        extra.insert(BATCH_ID_HEADER.to_owned(), id.to_string());
        extra.insert(RECORD_HEADER.to_owned(), record.number.to_string());
        let payload = match record.payload {
            Ok(payload) => payload,
            Err(reason) => {
                return self
                    .unreadable_record(id, envelope, record.raw, reason)
                    .await
            }
        };
        envelope.key = self
            .herald
            .decode(&manifest.message_type, payload.as_bytes())
            .ok()
            .and_then(|decoded| decoded.key());
        let mut message = StoredMessage::new(&envelope, payload);
        let started = Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            match self.herald.ingest(&message).await {
                Settlement::Done { .. } => return Ok(true),
                Settlement::FailedForGood { .. } => return Ok(false),
                Settlement::Retry {
                    progress,
                    delay,
                    replacement_id,
                    ..
                } => {
                    tokio::time::sleep(delay).await;
                    message.attempt += 1;
                    message.progress = progress;
                    if let Some(new_id) = replacement_id {
                        message.message_id = new_id.to_string();
                    }
                }
                _ => {
                    // Released: nothing ran (a pool full, or shutting down). Try again a while.
                    if started.elapsed() > self.refused_timeout {
                        return Err(ImportError::Refused {
                            batch_id: id.clone(),
                            record: record.number,
                            waited: started.elapsed(),
                        });
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// A record that cannot be read as a message (a bad value in a textual format, a line that is
    /// not UTF-8): its dead letter, with the record as it stands in the file.
    async fn unreadable_record(
        &self,
        id: &BatchId,
        envelope: Envelope,
        raw: String,
        reason: String,
    ) -> Result<bool, ImportError> {
        let now = Utc::now();
        let reason = format!(
            "record {} of batch `{id}` cannot be read: {reason}",
            envelope
                .headers
                .extra
                .get(RECORD_HEADER)
                .map_or("?", String::as_str)
        );
        tracing::error!(batch_id = %id, message_id = %envelope.id, "{reason}");
        self.herald
            .dead_letter(DeadLetter {
                id: DeadLetterId(0),
                envelope,
                payload: serde_json::Value::String(raw),
                handler: BATCH_HANDLER.to_owned(),
                reason: DeadLetterReason::Malformed,
                failure: Some(FailureKind::Malformed),
                attempts: 1,
                first_error: Some(reason.clone()),
                last_error: Some(reason),
                first_failed_at: Some(now),
                last_failed_at: Some(now),
                dead_lettered_at: now,
            })
            .await
            .map_err(|source| ImportError::DeadLetter {
                batch_id: id.clone(),
                source,
            })?;
        Ok(false)
    }
}

impl ImporterBuilder {
    /// Where receipts are written. Default: the inbox, beside the batch (the seeds' FIN).
    pub fn receipts(mut self, dir: impl Into<PathBuf>) -> Self {
        self.receipts = Some(dir.into());
        self
    }

    /// The ledger directory (imported and refused batches, per-batch locks), created if missing.
    /// Default: `.herald-batch` in the inbox. Keep it on a local disk.
    pub fn ledger(mut self, dir: impl Into<PathBuf>) -> Self {
        self.ledger = Some(dir.into());
        self
    }

    /// How many records of a batch are in Herald at once. Default 32.
    pub fn concurrency(mut self, records: usize) -> Self {
        self.concurrency = records;
        self
    }

    /// How long a record refused by Herald (full pools, shutting down) is tried again before the
    /// import stops with [`ImportError::Refused`]. Default 60 s.
    pub fn refused_timeout(mut self, timeout: Duration) -> Self {
        self.refused_timeout = timeout;
        self
    }

    /// Checks the settings and opens the ledger.
    ///
    /// # Errors
    /// The inbox or receipts directory is not a directory, `concurrency` is 0, or the ledger
    /// directory cannot be created; the message lists every problem.
    pub fn build(self) -> Result<Importer, ImportError> {
        let receipts = self.receipts.unwrap_or_else(|| self.inbox.clone());
        let mut problems = Vec::new();
        if !self.inbox.is_dir() {
            problems.push(format!(
                "the inbox {} is not a directory: create it",
                self.inbox.display()
            ));
        }
        if !receipts.is_dir() {
            problems.push(format!(
                "the receipts directory {} is not a directory: create it",
                receipts.display()
            ));
        }
        if self.concurrency == 0 {
            problems.push("concurrency is 0: at least one record must be in flight".to_owned());
        }
        if !problems.is_empty() {
            return Err(ImportError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                problems.join("; "),
            )));
        }
        let ledger_dir = self
            .ledger
            .unwrap_or_else(|| self.inbox.join(".herald-batch"));
        Ok(Importer {
            herald: self.herald,
            inbox: self.inbox,
            receipts,
            ledger: Ledger::open(&ledger_dir)?,
            concurrency: self.concurrency,
            refused_timeout: self.refused_timeout,
        })
    }
}

/// The message id of record `number` of a batch (0: the batch itself, for its dead letter): the
/// same on every import, so a re-import is recognised by `dedupe` handlers and the inbox.
/// A UUID version 8 made of the first bytes of SHA-256(`herald.batch`, batch id, number).
pub fn record_id(batch_id: &BatchId, number: u64) -> MessageId {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"herald.batch\0");
    hasher.update(batch_id.as_str().as_bytes());
    hasher.update(b"\0");
    hasher.update(number.to_be_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    MessageId::from(uuid::Builder::from_custom_bytes(bytes).into_uuid())
}

/// Checks the batch in `inbox` whole. `Ok(Err(..))` is a refusal (with the manifest when it
/// could be read); `Err` an I/O failure that is not the batch's fault.
#[allow(clippy::type_complexity)]
fn verify(
    inbox: &Path,
    id: &BatchId,
) -> io::Result<Result<Manifest, (RejectReason, Option<Manifest>)>> {
    let marker_path = inbox.join(id.marker_file());
    let marker: Marker =
        match serde_json::from_slice(&fs::read(&marker_path).map_err(at(&marker_path))?) {
            Ok(marker) => marker,
            Err(e) => {
                return Ok(Err((
                    RejectReason::BadMarker {
                        detail: e.to_string(),
                    },
                    None,
                )))
            }
        };
    if marker.batch_id != id.as_str() {
        let detail = format!("it names batch `{}`", marker.batch_id);
        return Ok(Err((RejectReason::BadMarker { detail }, None)));
    }
    let manifest_path = inbox.join(id.manifest_file());
    let manifest_bytes = match fs::read(&manifest_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Err((
                RejectReason::MissingManifest {
                    manifest: id.manifest_file(),
                },
                None,
            )))
        }
        Err(e) => return Err(at(&manifest_path)(e)),
    };
    let found = sha256_hex(&manifest_bytes);
    if found != marker.manifest_sha256 {
        let reason = RejectReason::ManifestNotMarked {
            expected: marker.manifest_sha256,
            found,
        };
        return Ok(Err((reason, None)));
    }
    let manifest: Manifest = match serde_json::from_slice(&manifest_bytes) {
        Ok(manifest) => manifest,
        Err(e) => {
            return Ok(Err((
                RejectReason::BadManifest {
                    detail: e.to_string(),
                },
                None,
            )))
        }
    };
    let bad = |detail: String| {
        Ok(Err((
            RejectReason::BadManifest { detail },
            Some(manifest.clone()),
        )))
    };
    if manifest.version != MANIFEST_VERSION {
        return bad(format!(
            "version {} (this importer reads version {MANIFEST_VERSION})",
            manifest.version
        ));
    }
    if manifest.batch_id != id.as_str() {
        return bad(format!("it names batch `{}`", manifest.batch_id));
    }
    let expected_data = id.data_file(manifest.schema.format.extension());
    if manifest.data_file != expected_data {
        return bad(format!(
            "its data file is `{}`, expected `{expected_data}`",
            manifest.data_file
        ));
    }
    let data_path = inbox.join(&manifest.data_file);
    let file = match File::open(&data_path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let reason = RejectReason::MissingData {
                data_file: manifest.data_file.clone(),
            };
            return Ok(Err((reason, Some(manifest))));
        }
        Err(e) => return Err(at(&data_path)(e)),
    };
    let (reader, digest) = SharedDigest::reader(file);
    let mut decoder = Decoder::new(&manifest.schema, reader);
    let mut count = 0u64;
    while decoder.next_record().map_err(at(&data_path))?.is_some() {
        count += 1;
    }
    let (bytes, sha256) = digest.finish();
    let data_file = manifest.data_file.clone();
    let reason = if bytes == 0 && manifest.records > 0 {
        RejectReason::EmptyData {
            data_file,
            records: manifest.records,
        }
    } else if bytes != manifest.bytes {
        RejectReason::SizeMismatch {
            data_file,
            expected: manifest.bytes,
            found: bytes,
        }
    } else if sha256 != manifest.sha256 {
        RejectReason::ChecksumMismatch {
            data_file,
            expected: manifest.sha256.clone(),
            found: sha256,
        }
    } else if count != manifest.records {
        RejectReason::CountMismatch {
            data_file,
            expected: manifest.records,
            found: count,
        }
    } else {
        return Ok(Ok(manifest));
    };
    Ok(Err((reason, Some(manifest))))
}

/// The sizes and modification times of a batch's files: a refusal is reported again only when
/// they change (the sender sent the batch again).
fn fingerprint(inbox: &Path, id: &BatchId) -> String {
    let mut names = vec![id.marker_file(), id.manifest_file()];
    if let Ok(entries) = fs::read_dir(inbox) {
        let prefix = format!("{id}.");
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && !names.contains(&name) && name != id.receipt_file() {
                names.push(name);
            }
        }
    }
    names.sort();
    names
        .iter()
        .map(|name| match fs::metadata(inbox.join(name)) {
            Ok(meta) => {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                format!("{name}:{}:{modified}", meta.len())
            }
            Err(_) => format!("{name}:-"),
        })
        .collect::<Vec<_>>()
        .join("|")
}

fn join_error(error: tokio::task::JoinError) -> io::Error {
    io::Error::other(format!("a blocking batch task failed: {error}"))
}
