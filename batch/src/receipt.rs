//! The receipt (the seeds' FIN): written only after every record of a batch was handled or
//! dead-lettered, with the counts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the importer did with a batch. Written as `<batch id>.receipt.json` once every record was
/// handled or dead-lettered, never before; `succeeded + dead_lettered == records`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchReceipt {
    /// The batch id.
    pub batch_id: String,
    /// The records' message type.
    pub message_type: String,
    /// The producer named in the manifest.
    pub producer: String,
    /// The SHA-256 of the data file that was imported.
    pub data_sha256: String,
    /// How many records the batch held (the manifest's count, checked against the file).
    pub records: u64,
    /// Records every handler of which succeeded (or had already succeeded: a duplicate).
    pub succeeded: u64,
    /// Records that failed for good: in the dead letters (or logged or ignored, when a handler's
    /// `on_failure` says so), or that could not be read as a message.
    pub dead_lettered: u64,
    /// When the import finished.
    pub imported_at: DateTime<Utc>,
}
