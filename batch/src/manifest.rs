//! What a batch says about itself: the manifest (what the data file must be) and the completion
//! marker (the manifest it completes). Both are JSON.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The manifest format this crate writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// How records are laid out in the data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecordFormat {
    /// One JSON document per line, each the message's payload (the default).
    #[default]
    JsonLines,
    /// Delimiter-separated values with a header line of field names (`,` for CSV, tab for TSV);
    /// values that hold the delimiter, a quote or a line break are quoted. Records are flat JSON
    /// objects; a nested value is written as JSON text.
    Delimited {
        /// The delimiter, an ASCII character.
        delimiter: char,
    },
    /// One line per record of `name=value` pairs joined by `&`, form-encoded
    /// (`id=7&customer=Ann%20Lee`). Records are flat JSON objects; a nested value is written as
    /// JSON text.
    NameValue,
}

impl RecordFormat {
    /// Comma-separated values.
    pub const CSV: RecordFormat = RecordFormat::Delimited { delimiter: ',' };
    /// Tab-separated values.
    pub const TSV: RecordFormat = RecordFormat::Delimited { delimiter: '\t' };

    /// The data file's extension: `jsonl`, `csv`, `tsv`, `dsv` (another delimiter) or `nv`.
    pub fn extension(&self) -> &'static str {
        match self {
            RecordFormat::JsonLines => "jsonl",
            RecordFormat::Delimited { delimiter: ',' } => "csv",
            RecordFormat::Delimited { delimiter: '\t' } => "tsv",
            RecordFormat::Delimited { .. } => "dsv",
            RecordFormat::NameValue => "nv",
        }
    }

    /// Whether records are flat objects whose values are text (every format but JSON Lines).
    pub(crate) fn is_textual(&self) -> bool {
        !matches!(self, RecordFormat::JsonLines)
    }
}

/// The JSON type of a field in a delimited or `name=value` file, so that text reads back as the
/// value it was (`7` a number, `"007"` a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FieldKind {
    /// A string, written as is.
    String,
    /// A number.
    Number,
    /// `true` or `false`.
    Bool,
    /// An object or an array, written as JSON text.
    Json,
}

/// One field of a delimited or `name=value` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// The field's name (the JSON key).
    pub name: String,
    /// Its type.
    pub kind: FieldKind,
    /// Whether it was null (or missing) in some record: an empty value then reads back as null.
    #[serde(default)]
    pub nullable: bool,
}

/// How to read the data file: its format and, for the textual formats, its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Schema {
    /// The record format.
    pub format: RecordFormat,
    /// The fields of a delimited or `name=value` file, in header order (empty for JSON Lines).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
}

/// What a batch's data file must be, written after the data file and before the marker. The
/// importer checks the data file against every number here before it processes a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The manifest format ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// The batch id.
    pub batch_id: String,
    /// The wire name of the messages the records are (`#[event(name = "...")]`).
    pub message_type: String,
    /// How the records are laid out.
    pub schema: Schema,
    /// Who wrote the batch (a service name).
    pub producer: String,
    /// When the batch was written; also the `occurred_at` of its messages.
    pub created_at: DateTime<Utc>,
    /// The data file's name, beside the manifest.
    pub data_file: String,
    /// How many records the data file holds. An empty batch says 0.
    pub records: u64,
    /// The data file's size in bytes.
    pub bytes: u64,
    /// The SHA-256 of the data file, lowercase hex.
    pub sha256: String,
}

/// The completion marker, written last: it names the manifest it completes by its checksum, so a
/// marker and a manifest of two different sends of one batch id are never taken together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The batch id.
    pub batch_id: String,
    /// The SHA-256 of the manifest file, lowercase hex.
    pub manifest_sha256: String,
}

/// The SHA-256 of some bytes, lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
