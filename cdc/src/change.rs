//! The message a committed row change becomes: [`Change`], wire name `herald.cdc.change`.

use crate::lsn::Lsn;
use chrono::{DateTime, Utc};
use herald_core::{Event, Message, MessageDescriptor, MessageId, MessageKind, Payload};
use serde::{Deserialize, Serialize};

/// A row's values by column name: JSON numbers for integer and floating-point columns, booleans,
/// JSON for `json`/`jsonb`, `null` for SQL `NULL`, and PostgreSQL's text form for everything else
/// (`numeric` too, so that no digit is lost; timestamps, UUIDs, arrays, `bytea` as `\x..` hex).
pub type Row = serde_json::Map<String, serde_json::Value>;

/// The header holding the slot a change was read from.
pub const SLOT_HEADER: &str = "herald.cdc.slot";
/// The header holding a change's commit LSN.
pub const LSN_HEADER: &str = "herald.cdc.lsn";
/// The header holding a change's number within its transaction.
pub const SEQ_HEADER: &str = "herald.cdc.seq";
/// The header holding a change's table (`schema.table`).
pub const TABLE_HEADER: &str = "herald.cdc.table";

/// One committed change of one row (or one truncated table), delivered in commit order.
///
/// A change is a Herald event named `herald.cdc.change`: handle it with an `#[async_handler]`
/// taking a `Change`, or forward it with `Herald::builder().route::<Change>().to(sink)`. Its
/// message id is derived from the slot, the commit LSN and the number in the transaction
/// ([`change_id`]), so a change delivered again after a crash has the same id (the durable inbox
/// and brokers' de-duplication recognise it). Its ordering key is the table (`schema.table`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The replication slot it was read from.
    pub slot: String,
    /// The table's schema.
    pub schema: String,
    /// The table.
    pub table: String,
    /// What happened to the row.
    pub op: Operation,
    /// The row after an insert or update. A TOASTed column an update did not change is not sent by
    /// PostgreSQL: it is missing here and named in [`unchanged_toast`](Self::unchanged_toast).
    pub new: Option<Row>,
    /// The row before an update or delete, as far as the table's `REPLICA IDENTITY` provides it:
    /// every column under `FULL`; under `DEFAULT` (the primary key) or `USING INDEX`, the key
    /// columns of a delete, and of an update that changed the key (`None` for other updates).
    pub old: Option<Row>,
    /// The columns of the replica identity key (the primary key by default; every column under
    /// `FULL`).
    pub key_columns: Vec<String>,
    /// The table's `REPLICA IDENTITY`.
    pub replica_identity: ReplicaIdentity,
    /// Columns whose TOASTed value the update did not change (not sent, so not in `new`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged_toast: Vec<String>,
    /// The LSN of the transaction's commit record: changes are delivered in this order.
    pub commit_lsn: Lsn,
    /// When the transaction committed.
    pub commit_time: DateTime<Utc>,
    /// The transaction id.
    pub xid: u32,
    /// The change's number within its transaction, from 0. `(commit_lsn, seq)` is the change's
    /// position: it grows with every change of a slot.
    pub seq: u32,
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Operation {
    /// `INSERT`: [`Change::new`] holds the row.
    Insert,
    /// `UPDATE`: [`Change::new`] holds the row, [`Change::old`] what the replica identity gives.
    Update,
    /// `DELETE`: [`Change::old`] holds the key (or the row, under `REPLICA IDENTITY FULL`).
    Delete,
    /// `TRUNCATE` of the table: no row values.
    Truncate,
}

impl Operation {
    /// `insert`, `update`, `delete` or `truncate` (the metrics' `op` label).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Truncate => "truncate",
        }
    }
}

/// A table's `REPLICA IDENTITY`: what PostgreSQL logs of the old row of an update or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ReplicaIdentity {
    /// The primary key (the default).
    Default,
    /// Nothing: updates and deletes of a published table fail on the primary.
    Nothing,
    /// Every column.
    Full,
    /// The columns of a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    pub(crate) fn from_code(code: u8) -> Self {
        match code {
            b'n' => ReplicaIdentity::Nothing,
            b'f' => ReplicaIdentity::Full,
            b'i' => ReplicaIdentity::Index,
            _ => ReplicaIdentity::Default,
        }
    }
}

impl Change {
    /// The table as `schema.table`.
    pub fn qualified_table(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// The change's position in its slot: later changes have greater positions.
    pub fn position(&self) -> (Lsn, u32) {
        (self.commit_lsn, self.seq)
    }

    /// A column of the new row.
    pub fn new_value(&self, column: &str) -> Option<&serde_json::Value> {
        self.new.as_ref()?.get(column)
    }

    /// A column of the old row.
    pub fn old_value(&self, column: &str) -> Option<&serde_json::Value> {
        self.old.as_ref()?.get(column)
    }

    /// The row's key: the key columns' values, from the new row (insert, update) or the old one
    /// (delete). Empty for a truncate, or when the table has no replica identity.
    pub fn key(&self) -> Row {
        let row = match self.op {
            Operation::Delete => self.old.as_ref(),
            _ => self.new.as_ref().or(self.old.as_ref()),
        };
        let Some(row) = row else {
            return Row::new();
        };
        self.key_columns
            .iter()
            .filter_map(|column| Some((column.clone(), row.get(column)?.clone())))
            .collect()
    }
}

impl Message for Change {
    const NAME: &'static str = CHANGE;
    const KIND: MessageKind = MessageKind::Event;
    type Reply = ();
    const HAS_KEY: bool = true;

    fn key(&self) -> Option<String> {
        Some(self.qualified_table())
    }
}

impl Event for Change {}

/// The wire name of [`Change`].
pub const CHANGE: &str = "herald.cdc.change";

// What `#[derive(Event)]` registers (its generated code names the `herald` facade, which this
// crate does not depend on): stored and received changes decode, and start-up checks see the type.
inventory::submit!(MessageDescriptor {
    name: CHANGE,
    kind: MessageKind::Event,
    rust_type: "Change",
    module: module_path!(),
    file: file!(),
    line: line!(),
    decode: Payload::decode::<Change>,
});

/// The message id of change `seq` of the transaction committed at `commit_lsn` on `slot`: the same
/// on every delivery. A UUID version 8 made of the first bytes of SHA-256(`herald.cdc`, slot, LSN,
/// seq).
pub fn change_id(slot: &str, commit_lsn: Lsn, seq: u32) -> MessageId {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"herald.cdc\0");
    hasher.update(slot.as_bytes());
    hasher.update(b"\0");
    hasher.update(commit_lsn.as_u64().to_be_bytes());
    hasher.update(seq.to_be_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    MessageId::from(uuid::Builder::from_custom_bytes(bytes).into_uuid())
}

/// A column's text value as JSON, by its type's OID.
pub(crate) fn text_value(type_oid: u32, text: String) -> serde_json::Value {
    use serde_json::Value;
    match type_oid {
        // bool
        16 => match text.as_str() {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => Value::String(text),
        },
        // int8, int2, int4, oid
        20 | 21 | 23 | 26 => match text.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => Value::String(text),
        },
        // float4, float8: NaN and the infinities stay text (JSON has no such numbers).
        700 | 701 => match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Value::from(f),
            _ => Value::String(text),
        },
        // json, jsonb
        114 | 3802 => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        _ => Value::String(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_keep_their_json_type() {
        assert_eq!(text_value(16, "t".into()), json!(true));
        assert_eq!(text_value(16, "f".into()), json!(false));
        assert_eq!(
            text_value(20, "-9223372036854775808".into()),
            json!(i64::MIN)
        );
        assert_eq!(text_value(23, "42".into()), json!(42));
        assert_eq!(text_value(701, "1.5".into()), json!(1.5));
        assert_eq!(text_value(701, "NaN".into()), json!("NaN"));
        assert_eq!(text_value(700, "-Infinity".into()), json!("-Infinity"));
        assert_eq!(text_value(3802, "{\"a\": [1]}".into()), json!({"a": [1]}));
        assert_eq!(
            text_value(1700, "12345678901234567890.0001".into()),
            json!("12345678901234567890.0001")
        );
        assert_eq!(text_value(25, "text".into()), json!("text"));
    }

    #[test]
    fn change_ids_are_deterministic_and_distinct() {
        let lsn = Lsn(0x1_0000_0000);
        assert_eq!(change_id("s", lsn, 0), change_id("s", lsn, 0));
        assert_ne!(change_id("s", lsn, 0), change_id("s", lsn, 1));
        assert_ne!(change_id("s", lsn, 0), change_id("t", lsn, 0));
        assert_ne!(change_id("s", lsn, 0), change_id("s", Lsn(1), 0));
        assert_eq!(change_id("s", lsn, 0).as_uuid().get_version_num(), 8);
    }

    #[test]
    fn a_change_travels_as_json_and_knows_its_key() {
        let mut new = Row::new();
        new.insert("id".into(), json!(7));
        new.insert("note".into(), json!("hi"));
        let change = Change {
            slot: "s".into(),
            schema: "public".into(),
            table: "orders".into(),
            op: Operation::Insert,
            new: Some(new),
            old: None,
            key_columns: vec!["id".into()],
            replica_identity: ReplicaIdentity::Default,
            unchanged_toast: vec![],
            commit_lsn: Lsn(0x10),
            commit_time: DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
            xid: 9,
            seq: 0,
        };
        let json = serde_json::to_value(&change).expect("serializes");
        assert_eq!(json["op"], json!("insert"));
        assert_eq!(json["commit_lsn"], json!("0/10"));
        assert!(json.get("unchanged_toast").is_none());
        let back: Change = serde_json::from_value(json).expect("parses");
        assert_eq!(back, change);
        assert_eq!(Message::key(&change).as_deref(), Some("public.orders"));
        assert_eq!(change.key().get("id"), Some(&json!(7)));
        assert_eq!(change.key().len(), 1);
        assert!(Payload::decode::<Change>(&serde_json::to_vec(&change).expect("json")).is_ok());
    }
}
