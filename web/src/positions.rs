//! Where feed consumers' acknowledged positions are kept (`PUT /consumers/{name}/position`).
//!
//! The web crate reaches the database only through the ops port (`dyn OutboxOps`), which has no
//! table for positions and hands out no connection, so it cannot create a table of its own there.
//! Positions therefore go through a small trait: [`FilePositionStore`] (one JSON file, replaced
//! atomically on every write: durable and good for one `herald serve` process) and
//! [`InMemoryPositionStore`] (tests, or consumers that keep their offset themselves, which is the
//! feed's first design). Several servers behind a load balancer need a shared store: implement
//! [`PositionStore`] on a table of the application's own database.

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// A position store failed.
#[derive(Debug, thiserror::Error)]
#[error("position store: {0}")]
pub struct PositionError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Consumers' acknowledged positions, by consumer name.
#[async_trait]
pub trait PositionStore: Send + Sync + fmt::Debug + 'static {
    /// The stored position of `consumer`, if any.
    ///
    /// # Errors
    /// When the store cannot be read.
    async fn load(&self, consumer: &str) -> Result<Option<i64>, PositionError>;

    /// Stores `position` for `consumer` (a later call replaces it, backwards too: a consumer may
    /// rewind to replay).
    ///
    /// # Errors
    /// When the store cannot be written; the previous position is then kept.
    async fn store(&self, consumer: &str, position: i64) -> Result<(), PositionError>;
}

/// Positions in memory: lost on restart.
#[derive(Debug, Default)]
pub struct InMemoryPositionStore {
    positions: parking_lot::Mutex<BTreeMap<String, i64>>,
}

#[async_trait]
impl PositionStore for InMemoryPositionStore {
    async fn load(&self, consumer: &str) -> Result<Option<i64>, PositionError> {
        Ok(self.positions.lock().get(consumer).copied())
    }

    async fn store(&self, consumer: &str, position: i64) -> Result<(), PositionError> {
        self.positions.lock().insert(consumer.to_owned(), position);
        Ok(())
    }
}

/// Positions in one JSON file (`{"billing": 42}`), written to a temporary file, synced, then
/// renamed over the old one: a crash leaves the old or the new file, never half of one.
#[derive(Debug)]
pub struct FilePositionStore {
    path: PathBuf,
    // One writer at a time, and readers see a consistent map.
    positions: tokio::sync::Mutex<BTreeMap<String, i64>>,
}

impl FilePositionStore {
    /// Opens (or starts) the file at `path`.
    ///
    /// # Errors
    /// When the file exists but cannot be read or is not a JSON object of integers.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, PositionError> {
        let path = path.into();
        let positions = match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                PositionError(format!("{} is not a positions file: {e}", path.display()).into())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(PositionError(
                    format!("cannot read {}: {e}", path.display()).into(),
                ))
            }
        };
        Ok(FilePositionStore {
            path,
            positions: tokio::sync::Mutex::new(positions),
        })
    }
}

#[async_trait]
impl PositionStore for FilePositionStore {
    async fn load(&self, consumer: &str) -> Result<Option<i64>, PositionError> {
        Ok(self.positions.lock().await.get(consumer).copied())
    }

    async fn store(&self, consumer: &str, position: i64) -> Result<(), PositionError> {
        let mut positions = self.positions.lock().await;
        let mut next = positions.clone();
        next.insert(consumer.to_owned(), position);
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| PositionError(e.into()))?;
        let temporary = self.path.with_extension("tmp");
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)
        })
        .await
        .map_err(|e| PositionError(e.into()))?
        .map_err(|e| PositionError(format!("cannot write {}: {e}", self.path.display()).into()))?;
        *positions = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_positions_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("positions.json");
        let store = FilePositionStore::open(&path).await.expect("open");
        assert_eq!(store.load("billing").await.expect("load"), None);
        store.store("billing", 42).await.expect("store");
        store.store("search", 7).await.expect("store");
        store.store("billing", 40).await.expect("rewind");
        drop(store);
        let reopened = FilePositionStore::open(&path).await.expect("reopen");
        assert_eq!(reopened.load("billing").await.expect("load"), Some(40));
        assert_eq!(reopened.load("search").await.expect("load"), Some(7));
    }

    #[tokio::test]
    async fn a_corrupt_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("positions.json");
        std::fs::write(&path, b"not json").expect("write");
        let error = FilePositionStore::open(&path).await.expect_err("refused");
        assert!(
            error.to_string().contains("not a positions file"),
            "{error}"
        );
    }
}
