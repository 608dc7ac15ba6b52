//! The exporter: records → a data file, then its manifest, then the completion marker, each
//! written under a temporary name, fsynced and renamed, the marker last.

use crate::format::{EncodeError, Encoder};
use crate::fsio::{self, at, PendingFile};
use crate::manifest::{sha256_hex, FieldKind, Manifest, Marker, RecordFormat, MANIFEST_VERSION};
use crate::names::{BatchId, InvalidBatchId};
use chrono::Utc;
use futures_util::{Stream, StreamExt};
use herald_core::Message;
use serde::Serialize;
use std::io;
use std::path::{Path, PathBuf};

/// Why a batch could not be exported. Nothing of it is visible to an importer then: the data
/// file and the manifest are published only by [`BatchWriter::finish`], and the marker last.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Reading or writing a file failed.
    #[error("batch export I/O error: {0}; nothing of the batch was published, export it again")]
    Io(#[from] io::Error),
    /// The batch id is not valid.
    #[error(transparent)]
    InvalidBatchId(#[from] InvalidBatchId),
    /// A batch with this id already has a file in the directory: a sent batch is never
    /// overwritten.
    #[error("batch `{batch_id}` already exists in {}: choose a new batch id (a sent batch is never overwritten)", dir.display())]
    AlreadyExists {
        /// The batch id.
        batch_id: String,
        /// The export directory.
        dir: PathBuf,
    },
    /// The export directory is not a directory.
    #[error("{} is not a directory: create it or pass the directory batches are written to", .0.display())]
    NotADirectory(PathBuf),
    /// A record did not serialize to JSON.
    #[error("record {record} did not serialize to JSON: {source}")]
    Serialize {
        /// 1-based record number.
        record: u64,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// A record is not a JSON object, which the delimited and `name=value` formats need.
    #[error("record {record} is not a JSON object: the {format:?} format writes objects only; use JSON Lines for other values")]
    NotAnObject {
        /// 1-based record number.
        record: u64,
        /// The format.
        format: RecordFormat,
    },
    /// A record of a delimited file has a field the header (from the first record) does not.
    #[error("record {record} has field `{field}`, which the first record did not have: a delimited file has one set of columns; use JSON Lines or `name=value` for records with varying fields")]
    UnexpectedField {
        /// 1-based record number.
        record: u64,
        /// The field.
        field: String,
    },
    /// A field of a textual format held values of two JSON types.
    #[error("record {record}: field `{field}` was {was:?} and is now {now:?}: a delimited or `name=value` field has one type; use JSON Lines")]
    FieldTypeChanged {
        /// 1-based record number.
        record: u64,
        /// The field.
        field: String,
        /// Its type so far.
        was: FieldKind,
        /// The type of this value.
        now: FieldKind,
    },
    /// The records' stream failed.
    #[error("the records' source failed after {records} records: {source}; nothing of the batch was published")]
    Source {
        /// How many records were written before.
        records: u64,
        /// The stream's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Writes batches into one directory. Build it with [`Exporter::builder`].
#[derive(Debug, Clone)]
pub struct Exporter {
    dir: PathBuf,
    producer: String,
    format: RecordFormat,
}

/// Builds an [`Exporter`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ExporterBuilder {
    dir: PathBuf,
    producer: String,
    format: RecordFormat,
}

impl Exporter {
    /// An exporter writing into `dir` (which must exist).
    pub fn builder(dir: impl Into<PathBuf>) -> ExporterBuilder {
        ExporterBuilder {
            dir: dir.into(),
            producer: "herald".to_owned(),
            format: RecordFormat::JsonLines,
        }
    }

    /// The directory batches are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts a batch of messages named `message_type`; push records, then
    /// [`finish`](BatchWriter::finish). Use it for rows of a query you run: push each row (any
    /// `Serialize`) as the message's payload.
    ///
    /// # Errors
    /// An invalid batch id, a batch of this id already in the directory, or a file that cannot
    /// be created.
    pub fn writer(
        &self,
        batch_id: &str,
        message_type: impl Into<String>,
    ) -> Result<BatchWriter, ExportError> {
        let batch_id = BatchId::new(batch_id)?;
        let data_file = batch_id.data_file(self.format.extension());
        for existing in [
            batch_id.marker_file(),
            batch_id.manifest_file(),
            data_file.clone(),
            batch_id.receipt_file(),
        ] {
            if self.dir.join(&existing).exists() {
                return Err(ExportError::AlreadyExists {
                    batch_id: batch_id.to_string(),
                    dir: self.dir.clone(),
                });
            }
        }
        let mut pending = PendingFile::create(&self.dir, &data_file).map_err(at(&self.dir))?;
        let file = pending
            .file
            .take()
            .ok_or_else(|| io::Error::other("the data file was not open"))?;
        Ok(BatchWriter {
            exporter: self.clone(),
            batch_id,
            message_type: message_type.into(),
            data_file,
            pending,
            encoder: Encoder::new(self.format, file),
            records: 0,
        })
    }

    /// Exports typed messages as one batch; returns it once its marker is written.
    ///
    /// # Errors
    /// See [`ExportError`]; nothing is published on error.
    pub fn export<M: Message>(
        &self,
        batch_id: &str,
        records: impl IntoIterator<Item = M>,
    ) -> Result<ExportedBatch, ExportError> {
        let mut writer = self.writer(batch_id, M::NAME)?;
        for record in records {
            writer.push(&record)?;
        }
        writer.finish()
    }

    /// Exports a stream of typed messages (a query's rows mapped to messages, say
    /// `sqlx::query_as(..).fetch(&pool)`) as one batch. The fsyncs run on the blocking pool.
    ///
    /// # Errors
    /// See [`ExportError`]; an error of the stream is [`ExportError::Source`]. Nothing is
    /// published on error.
    pub async fn export_stream<M, E, S>(
        &self,
        batch_id: &str,
        records: S,
    ) -> Result<ExportedBatch, ExportError>
    where
        M: Message,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
        S: Stream<Item = Result<M, E>>,
    {
        let mut writer = self.writer(batch_id, M::NAME)?;
        let mut records = std::pin::pin!(records);
        while let Some(record) = records.next().await {
            match record {
                Ok(record) => writer.push(&record)?,
                Err(error) => {
                    return Err(ExportError::Source {
                        records: writer.records,
                        source: error.into(),
                    })
                }
            }
        }
        tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(|e| io::Error::other(format!("the export task failed: {e}")))?
    }
}

impl ExporterBuilder {
    /// Who writes the batches (a service name), recorded in each manifest. Default `herald`.
    pub fn producer(mut self, producer: impl Into<String>) -> Self {
        self.producer = producer.into();
        self
    }

    /// The record format. Default [`RecordFormat::JsonLines`].
    pub fn format(mut self, format: RecordFormat) -> Self {
        self.format = format;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`ExportError::NotADirectory`] when the directory does not exist; an I/O error when a
    /// delimiter is not one ASCII character other than a quote or a line break.
    pub fn build(self) -> Result<Exporter, ExportError> {
        if !self.dir.is_dir() {
            return Err(ExportError::NotADirectory(self.dir));
        }
        if let RecordFormat::Delimited { delimiter } = self.format {
            if !delimiter.is_ascii() || matches!(delimiter, '"' | '\n' | '\r') {
                return Err(ExportError::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the delimiter {delimiter:?} is not one ASCII character other than a quote or a line break: use `,`, `;`, `|` or a tab"),
                )));
            }
        }
        Ok(Exporter {
            dir: self.dir,
            producer: self.producer,
            format: self.format,
        })
    }
}

/// One batch being written. Nothing of it is visible until [`finish`](Self::finish); dropped
/// unfinished, its temporary file is removed.
#[derive(Debug)]
pub struct BatchWriter {
    exporter: Exporter,
    batch_id: BatchId,
    message_type: String,
    data_file: String,
    pending: PendingFile,
    encoder: Encoder,
    records: u64,
}

impl BatchWriter {
    /// Writes one record: a message's payload (any `Serialize`, a query's row).
    ///
    /// # Errors
    /// A record that does not serialize, or that the format cannot hold, or a write error.
    pub fn push<T: Serialize + ?Sized>(&mut self, record: &T) -> Result<(), ExportError> {
        let record_number = self.records + 1;
        let value = serde_json::to_value(record).map_err(|source| ExportError::Serialize {
            record: record_number,
            source,
        })?;
        self.encoder.write(&value).map_err(|error| match error {
            EncodeError::Io(error) => ExportError::Io(error),
            EncodeError::NotAnObject => ExportError::NotAnObject {
                record: record_number,
                format: self.exporter.format,
            },
            EncodeError::UnexpectedField(field) => ExportError::UnexpectedField {
                record: record_number,
                field,
            },
            EncodeError::FieldTypeChanged { field, was, now } => ExportError::FieldTypeChanged {
                record: record_number,
                field,
                was,
                now,
            },
        })?;
        self.records = record_number;
        Ok(())
    }

    /// How many records were pushed.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Publishes the batch: the data file (fsynced, renamed), then the manifest, then the
    /// completion marker, each fsynced and renamed, the directory fsynced after each. An
    /// importer sees the batch only once the marker is there, and then it is whole.
    ///
    /// # Errors
    /// A write, fsync or rename that failed; the marker is then not written, and no importer
    /// takes the batch.
    pub fn finish(mut self) -> Result<ExportedBatch, ExportError> {
        let dir = self.exporter.dir.clone();
        let (file, schema, bytes, sha256) = self.encoder.finish()?;
        self.pending.file = Some(file);
        let data_path = self.pending.commit().map_err(at(&dir))?;
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            batch_id: self.batch_id.to_string(),
            message_type: self.message_type,
            schema,
            producer: self.exporter.producer.clone(),
            created_at: Utc::now(),
            data_file: self.data_file,
            records: self.records,
            bytes,
            sha256,
        };
        let manifest_json = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
        let manifest_path =
            fsio::write_atomic(&dir, &self.batch_id.manifest_file(), &manifest_json)
                .map_err(at(&dir))?;
        let marker = Marker {
            batch_id: self.batch_id.to_string(),
            manifest_sha256: sha256_hex(&manifest_json),
        };
        let marker_json = serde_json::to_vec_pretty(&marker).map_err(io::Error::other)?;
        let marker_path = fsio::write_atomic(&dir, &self.batch_id.marker_file(), &marker_json)
            .map_err(at(&dir))?;
        tracing::info!(batch_id = %self.batch_id, records = manifest.records, bytes = manifest.bytes, "batch exported");
        metrics::counter!("herald_batch_exported_total").increment(1);
        Ok(ExportedBatch {
            batch_id: self.batch_id,
            data_path,
            manifest_path,
            marker_path,
            manifest,
        })
    }
}

/// A batch written whole: its files and its manifest.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExportedBatch {
    /// The batch id.
    pub batch_id: BatchId,
    /// The data file.
    pub data_path: PathBuf,
    /// The manifest.
    pub manifest_path: PathBuf,
    /// The completion marker.
    pub marker_path: PathBuf,
    /// What the manifest says.
    pub manifest: Manifest,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, serde::Serialize, serde::Deserialize)]
    #[serde(transparent)]
    struct Row(serde_json::Value);

    impl herald_core::Message for Row {
        const NAME: &'static str = "t.m";
        const KIND: herald_core::MessageKind = herald_core::MessageKind::Event;
        type Reply = ();
    }

    #[test]
    fn a_failed_export_leaves_nothing_behind_and_a_sent_batch_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("temp dir");
        let exporter = Exporter::builder(dir.path())
            .format(RecordFormat::CSV)
            .build()
            .expect("exporter");
        let mut writer = exporter.writer("b-1", "t.m").expect("writer");
        writer.push(&serde_json::json!({"a": 1})).expect("first");
        let error = writer
            .push(&serde_json::json!({"a": 2, "b": 3}))
            .expect_err("a new column");
        assert!(error.to_string().contains("use JSON Lines"), "{error}");
        drop(writer);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);

        let batch = exporter
            .export("b-1", [Row(serde_json::json!({"a": 1}))])
            .expect("export");
        assert_eq!(batch.manifest.records, 1);
        let again = exporter.export("b-1", std::iter::empty::<Row>());
        assert!(
            matches!(again, Err(ExportError::AlreadyExists { .. })),
            "{again:?}"
        );
    }
}
