//! Moving batches between machines with the marker-last rule kept end to end: a batch is sent as
//! its data file, then its manifest, then its marker (each uploaded under a temporary name and
//! renamed), and fetched only once its marker is there (data and manifest first, the marker
//! last), so the receiving importer never sees a marker before the files it completes.
//!
//! A [`Remote`] is a directory somewhere: [`Directory`] (local or mounted) or
//! [`Sftp`](crate::sftp::Sftp).

use crate::export::ExportedBatch;
use crate::fsio::{self, at};
use crate::manifest::Manifest;
use crate::names::{temp_name, BatchId, TEMP_PREFIX};
use async_trait::async_trait;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A transfer failed. Sending or fetching the batch again is safe: a marker is written only after
/// the files it completes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// A local or mounted file could not be read or written.
    #[error("batch transfer I/O error: {0}; send or fetch the batch again")]
    Io(#[from] io::Error),
    /// The SFTP server refused or failed an operation.
    #[error("SFTP {operation} of `{path}` failed: {detail}; check the remote directory and the account's rights, then send or fetch again")]
    Sftp {
        /// What was asked: `list`, `upload`, `download`, `rename`, `remove`.
        operation: &'static str,
        /// The remote path.
        path: String,
        /// The server's or the protocol's error.
        detail: String,
    },
    /// The SSH connection could not be set up.
    #[error("SSH connection failed: {0}")]
    Connect(String),
    /// The remote already has this batch's marker: a sent batch is never overwritten.
    #[error("batch `{batch_id}` was already sent to {remote} (its marker is there): a sent batch is never overwritten; export under a new batch id")]
    AlreadySent {
        /// The batch id.
        batch_id: BatchId,
        /// The remote.
        remote: String,
    },
}

/// A directory batches are sent to or fetched from.
#[async_trait]
pub trait Remote: Send + Sync + fmt::Debug {
    /// The names of the files in the directory (temporary files left out).
    ///
    /// # Errors
    /// When the directory cannot be listed.
    async fn list(&self) -> Result<Vec<String>, TransferError>;

    /// Uploads the local file `local` as `name`: under a temporary name first, synced where the
    /// remote can, then renamed to `name` (replacing a file of that name).
    ///
    /// # Errors
    /// When a step fails; `name` is then unchanged.
    async fn upload(&self, local: &Path, name: &str) -> Result<(), TransferError>;

    /// Downloads `name` into the local file `local` (created or truncated).
    ///
    /// # Errors
    /// When the remote file cannot be read or `local` written.
    async fn download(&self, name: &str, local: &Path) -> Result<(), TransferError>;

    /// Where it is, for people (no password): `dir:/srv/batches`, `sftp:partner:/in`.
    fn describe(&self) -> String;
}

/// Sends an exported batch: data file, manifest, then marker.
///
/// # Errors
/// [`TransferError::AlreadySent`] when the remote has the batch's marker; a failed upload (the
/// marker is then not sent, and the receiver does not take the batch).
pub async fn send(batch: &ExportedBatch, remote: &dyn Remote) -> Result<(), TransferError> {
    let id = &batch.batch_id;
    if remote.list().await?.contains(&id.marker_file()) {
        return Err(TransferError::AlreadySent {
            batch_id: id.clone(),
            remote: remote.describe(),
        });
    }
    remote
        .upload(&batch.data_path, &batch.manifest.data_file)
        .await?;
    remote
        .upload(&batch.manifest_path, &id.manifest_file())
        .await?;
    remote.upload(&batch.marker_path, &id.marker_file()).await?;
    tracing::info!(batch_id = %id, remote = %remote.describe(), "batch sent");
    Ok(())
}

/// Fetches every batch the remote has a marker for, unless `inbox` has that same marker already or
/// the remote has the batch's receipt (it was imported): its manifest and data file first, its
/// marker last, each written under a temporary name, fsynced and renamed. A batch sent again
/// under its id (a new marker) is fetched again: the old local marker is removed first, so the
/// importer never pairs it with the new files. A file missing on the remote is not fetched; the
/// importer then refuses the batch and reports it. Returns the ids fetched.
///
/// # Errors
/// A failed listing or download; batches fetched before it are whole.
pub async fn fetch(remote: &dyn Remote, inbox: &Path) -> Result<Vec<BatchId>, TransferError> {
    let names = remote.list().await?;
    let mut ids: Vec<BatchId> = names
        .iter()
        .filter_map(|name| BatchId::from_marker_file(name))
        .filter(|id| !names.contains(&id.receipt_file()))
        .collect();
    ids.sort();
    let mut fetched = Vec::new();
    for id in ids {
        let marker_name = id.marker_file();
        let local_marker = inbox.join(&marker_name);
        let marker_temp = inbox.join(temp_name(&marker_name));
        if let Err(error) = remote.download(&marker_name, &marker_temp).await {
            let _ = fs::remove_file(&marker_temp);
            return Err(error);
        }
        let unchanged = match (fs::read(&marker_temp), fs::read(&local_marker)) {
            (Ok(remote_marker), Ok(local)) => remote_marker == local,
            _ => false,
        };
        if unchanged {
            let _ = fs::remove_file(&marker_temp);
            continue;
        }
        let files = async {
            if local_marker.exists() {
                fs::remove_file(&local_marker).map_err(at(&local_marker))?;
                fsio::sync_dir(inbox)?;
            }
            let manifest_name = id.manifest_file();
            if names.contains(&manifest_name) {
                let manifest_path = fetch_file(remote, inbox, &manifest_name).await?;
                // The data file's name comes from the manifest; an unreadable manifest or a name
                // that is not this batch's is left for the importer to refuse.
                let data_file = fs::read(&manifest_path)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<Manifest>(&bytes).ok())
                    .filter(|m| m.data_file == id.data_file(m.schema.format.extension()))
                    .map(|manifest| manifest.data_file);
                if let Some(data_file) = data_file.filter(|name| names.contains(name)) {
                    fetch_file(remote, inbox, &data_file).await?;
                }
            }
            // The marker last.
            publish(&marker_temp, &local_marker, inbox)
        }
        .await;
        if let Err(error) = files {
            let _ = fs::remove_file(&marker_temp);
            return Err(error);
        }
        tracing::info!(batch_id = %id, remote = %remote.describe(), "batch fetched");
        fetched.push(id);
    }
    Ok(fetched)
}

/// Sends a batch's receipt from `receipts` back to the remote (the seeds' FIN).
///
/// # Errors
/// The receipt is missing locally, or the upload failed.
pub async fn send_receipt(
    remote: &dyn Remote,
    receipts: &Path,
    batch_id: &BatchId,
) -> Result<(), TransferError> {
    let path = receipts.join(batch_id.receipt_file());
    if !path.exists() {
        return Err(TransferError::Io(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{}: no receipt: the batch is not imported yet",
                path.display()
            ),
        )));
    }
    remote.upload(&path, &batch_id.receipt_file()).await
}

async fn fetch_file(
    remote: &dyn Remote,
    inbox: &Path,
    name: &str,
) -> Result<PathBuf, TransferError> {
    let temp = inbox.join(temp_name(name));
    let result = remote.download(name, &temp).await;
    let target = inbox.join(name);
    let finish = result.and_then(|()| publish(&temp, &target, inbox));
    if finish.is_err() {
        let _ = fs::remove_file(&temp);
    }
    finish.map(|()| target)
}

/// Fsyncs a downloaded file, renames it into place and fsyncs the directory.
fn publish(temp: &Path, target: &Path, inbox: &Path) -> Result<(), TransferError> {
    fs::File::open(temp).map_err(at(temp))?.sync_all()?;
    fs::rename(temp, target).map_err(at(target))?;
    fsio::sync_dir(inbox)?;
    Ok(())
}

/// A local or mounted directory as a [`Remote`].
#[derive(Debug, Clone)]
pub struct Directory {
    dir: PathBuf,
}

impl Directory {
    /// The directory at `dir` (which must exist when used).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Directory { dir: dir.into() }
    }
}

#[async_trait]
impl Remote for Directory {
    async fn list(&self) -> Result<Vec<String>, TransferError> {
        let dir = self.dir.clone();
        blocking(move || {
            Ok(fs::read_dir(&dir)
                .map_err(at(&dir))?
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| !name.starts_with(TEMP_PREFIX))
                .collect())
        })
        .await
    }

    async fn upload(&self, local: &Path, name: &str) -> Result<(), TransferError> {
        let (dir, local, name) = (self.dir.clone(), local.to_owned(), name.to_owned());
        blocking(move || {
            let temp = dir.join(temp_name(&name));
            let copied = fs::copy(&local, &temp)
                .map_err(at(&local))
                .and_then(|_| fs::File::open(&temp)?.sync_all())
                .and_then(|()| fs::rename(&temp, dir.join(&name)))
                .and_then(|()| fsio::sync_dir(&dir));
            if copied.is_err() {
                let _ = fs::remove_file(&temp);
            }
            Ok(copied?)
        })
        .await
    }

    async fn download(&self, name: &str, local: &Path) -> Result<(), TransferError> {
        let (source, local) = (self.dir.join(name), local.to_owned());
        blocking(move || {
            fs::copy(&source, &local).map_err(at(&source))?;
            Ok(())
        })
        .await
    }

    fn describe(&self) -> String {
        format!("dir:{}", self.dir.display())
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TransferError> + Send + 'static,
) -> Result<T, TransferError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        TransferError::Io(io::Error::other(format!(
            "a blocking transfer task failed: {e}"
        )))
    })?
}
