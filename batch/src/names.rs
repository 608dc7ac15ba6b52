//! Batch ids and the names of a batch's files. A batch id comes from the partner's side of a
//! transfer, so it is checked before it is ever joined to a path.

use std::fmt;

/// The suffix of the completion marker, the file written last: `<batch id>.done`.
pub const MARKER_SUFFIX: &str = ".done";
/// The suffix of the manifest: `<batch id>.manifest.json`.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// The suffix of the receipt (the seeds' FIN), written by the importer: `<batch id>.receipt.json`.
pub const RECEIPT_SUFFIX: &str = ".receipt.json";
/// Temporary files start with this prefix and are never read as a batch's file.
pub(crate) const TEMP_PREFIX: &str = ".tmp.";

/// A batch id: 1 to 128 ASCII letters, digits, `-`, `_` or `.`, not starting with `.`. It names
/// every file of the batch and the batch in the importer's ledger, so it never holds a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchId(String);

/// A batch id that is not valid, with the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{id}` is not a valid batch id: {rule} (use 1 to 128 ASCII letters, digits, `-`, `_` or `.`, not starting with `.`)")]
pub struct InvalidBatchId {
    /// The id as given.
    pub id: String,
    /// What is wrong with it.
    pub rule: &'static str,
}

impl BatchId {
    /// Checks and wraps a batch id.
    ///
    /// # Errors
    /// [`InvalidBatchId`] when it is empty, longer than 128 bytes, starts with `.`, or holds a
    /// character other than ASCII letters, digits, `-`, `_` and `.`.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidBatchId> {
        let id = id.into();
        let rule = if id.is_empty() {
            Some("it is empty")
        } else if id.len() > 128 {
            Some("it is longer than 128 bytes")
        } else if id.starts_with('.') {
            Some("it starts with `.`")
        } else if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            Some("it holds a character other than ASCII letters, digits, `-`, `_` and `.`")
        } else {
            None
        };
        match rule {
            Some(rule) => Err(InvalidBatchId { id, rule }),
            None => Ok(BatchId(id)),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The completion marker's file name.
    pub fn marker_file(&self) -> String {
        format!("{}{MARKER_SUFFIX}", self.0)
    }

    /// The manifest's file name.
    pub fn manifest_file(&self) -> String {
        format!("{}{MANIFEST_SUFFIX}", self.0)
    }

    /// The receipt's file name.
    pub fn receipt_file(&self) -> String {
        format!("{}{RECEIPT_SUFFIX}", self.0)
    }

    /// The data file's name for a format's extension.
    pub fn data_file(&self, extension: &str) -> String {
        format!("{}.{extension}", self.0)
    }

    /// The batch id of a completion marker's file name (`None` for any other file).
    pub fn from_marker_file(name: &str) -> Option<BatchId> {
        name.strip_suffix(MARKER_SUFFIX)
            .and_then(|id| BatchId::new(id).ok())
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for BatchId {
    type Err = InvalidBatchId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BatchId::new(s)
    }
}

impl AsRef<str> for BatchId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A temporary name beside `name`, unique in this process.
pub(crate) fn temp_name(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP_PREFIX}{name}.{}.{n}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_never_hold_a_path() {
        for bad in ["", "../etc", "a/b", ".hidden", "a b", "é", &"x".repeat(129)] {
            assert!(BatchId::new(bad).is_err(), "{bad:?} was accepted");
        }
        let id = BatchId::new("invoices-2026-12-06.1").expect("valid");
        assert_eq!(id.marker_file(), "invoices-2026-12-06.1.done");
        assert_eq!(
            BatchId::from_marker_file("invoices-2026-12-06.1.done"),
            Some(id)
        );
        assert_eq!(BatchId::from_marker_file("x.manifest.json"), None);
        assert_eq!(BatchId::from_marker_file(".done"), None);
    }
}
