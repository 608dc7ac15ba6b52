//! A decoder for the messages of `pgoutput`, PostgreSQL's built-in logical decoding output plugin
//! (protocol version 1, text values): the "Logical Replication Message Formats" chapter of the
//! PostgreSQL documentation. Each row of `pg_logical_slot_peek_binary_changes(..)` carries one
//! message.
//!
//! Only what protocol version 1 sends is decoded; the messages of later versions (streamed and
//! two-phase transactions) are refused with a clear error, since the source never asks for them.

use crate::lsn::Lsn;
use chrono::{DateTime, Utc};
use std::fmt;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LogicalMessage {
    /// A transaction starts. Its changes follow, then its [`Commit`](Self::Commit).
    Begin {
        /// The LSN of the transaction's commit record.
        final_lsn: Lsn,
        /// When it committed.
        commit_time: DateTime<Utc>,
        /// Its transaction id.
        xid: u32,
    },
    /// The transaction committed.
    Commit {
        /// The LSN of the commit record.
        commit_lsn: Lsn,
        /// The LSN just past the commit record: confirm up to here once the transaction is done.
        end_lsn: Lsn,
        /// When it committed.
        commit_time: DateTime<Utc>,
    },
    /// The transaction came from another node (replication origin).
    Origin {
        /// The origin's commit LSN.
        lsn: Lsn,
        /// The origin's name.
        name: String,
    },
    /// A table's shape, sent before the first change of it in each decoding call.
    Relation(Relation),
    /// A data type's name, sent before a relation uses a non-built-in type.
    Type {
        /// Its OID.
        oid: u32,
        /// Its schema.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A row was inserted.
    Insert {
        /// The relation's OID.
        relation: u32,
        /// The new row.
        new: Tuple,
    },
    /// A row was updated.
    Update {
        /// The relation's OID.
        relation: u32,
        /// The old row, when the replica identity provides it: the key columns (`K`, when the
        /// key changed) or every column (`O`, `REPLICA IDENTITY FULL`).
        old: Option<(OldKind, Tuple)>,
        /// The new row.
        new: Tuple,
    },
    /// A row was deleted.
    Delete {
        /// The relation's OID.
        relation: u32,
        /// The old row: the key columns, or every column under `REPLICA IDENTITY FULL`.
        old: (OldKind, Tuple),
    },
    /// Tables were truncated.
    Truncate {
        /// `1`: `CASCADE`, `2`: `RESTART IDENTITY` (bits).
        options: u8,
        /// The relations' OIDs.
        relations: Vec<u32>,
    },
    /// A logical decoding message (`pg_logical_emit_message`).
    Message {
        /// Whether it was emitted in a transaction.
        transactional: bool,
        /// Its LSN.
        lsn: Lsn,
        /// Its prefix.
        prefix: String,
        /// Its content.
        content: Vec<u8>,
    },
}

/// What an old row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OldKind {
    /// The replica identity's key columns only (the other columns are null).
    Key,
    /// Every column (`REPLICA IDENTITY FULL`).
    Full,
}

/// A table's shape, as the `Relation` message describes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Relation {
    /// The relation's OID.
    pub(crate) id: u32,
    /// Its schema (empty for `pg_catalog`).
    pub(crate) namespace: String,
    /// Its name.
    pub(crate) name: String,
    /// Its `REPLICA IDENTITY` setting: `d` default, `n` nothing, `f` full, `i` index.
    pub(crate) replica_identity: u8,
    /// Its columns, in order.
    pub(crate) columns: Vec<Column>,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Column {
    /// Part of the replica identity key.
    pub(crate) key: bool,
    /// Its name.
    pub(crate) name: String,
    /// Its data type's OID.
    pub(crate) type_oid: u32,
    /// Its type modifier (`-1` for none).
    pub(crate) type_modifier: i32,
}

/// A row: one datum per column of its relation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tuple(pub(crate) Vec<Datum>);

/// One column's value in a [`Tuple`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Datum {
    /// SQL `NULL`.
    Null,
    /// A TOASTed value that did not change (it is not sent).
    UnchangedToast,
    /// The value in its text form.
    Text(String),
    /// The value in binary form (only with the `binary` option, which the source does not use).
    Binary(Vec<u8>),
}

/// A message that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pgoutput message {tag} cannot be decoded at byte {offset}: {detail}")]
pub struct DecodeError {
    tag: String,
    offset: usize,
    detail: String,
}

impl DecodeError {
    fn new(tag: u8, offset: usize, detail: impl fmt::Display) -> Self {
        DecodeError {
            tag: describe_tag(tag),
            offset,
            detail: detail.to_string(),
        }
    }
}

fn describe_tag(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("`{}`", char::from(tag))
    } else {
        format!("0x{tag:02X}")
    }
}

/// Decodes one pgoutput message.
///
/// # Errors
/// When the message is cut short, has bytes left over, is of a kind protocol version 1 does not
/// send, or holds text that is not UTF-8.
pub(crate) fn decode(data: &[u8]) -> Result<LogicalMessage, DecodeError> {
    let Some((&tag, _)) = data.split_first() else {
        return Err(DecodeError::new(0, 0, "the message is empty"));
    };
    let mut r = Reader { data, pos: 1, tag };
    let message = match tag {
        b'B' => LogicalMessage::Begin {
            final_lsn: r.lsn()?,
            commit_time: r.timestamp()?,
            xid: r.u32()?,
        },
        b'C' => {
            let _flags = r.u8()?;
            LogicalMessage::Commit {
                commit_lsn: r.lsn()?,
                end_lsn: r.lsn()?,
                commit_time: r.timestamp()?,
            }
        }
        b'O' => LogicalMessage::Origin {
            lsn: r.lsn()?,
            name: r.cstring()?,
        },
        b'R' => {
            let id = r.u32()?;
            let namespace = r.cstring()?;
            let name = r.cstring()?;
            let replica_identity = r.u8()?;
            let count = r.i16()?;
            let count = usize::try_from(count).map_err(|_| r.error("negative column count"))?;
            let mut columns = Vec::with_capacity(count);
            for _ in 0..count {
                let flags = r.u8()?;
                columns.push(Column {
                    key: flags & 1 == 1,
                    name: r.cstring()?,
                    type_oid: r.u32()?,
                    type_modifier: r.i32()?,
                });
            }
            LogicalMessage::Relation(Relation {
                id,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => LogicalMessage::Type {
            oid: r.u32()?,
            namespace: r.cstring()?,
            name: r.cstring()?,
        },
        b'I' => {
            let relation = r.u32()?;
            r.expect(b'N')?;
            LogicalMessage::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let old = match r.u8()? {
                b'K' => Some((OldKind::Key, r.tuple()?)),
                b'O' => Some((OldKind::Full, r.tuple()?)),
                b'N' => None,
                other => {
                    return Err(r.error(format!("unexpected tuple kind {}", describe_tag(other))))
                }
            };
            if old.is_some() {
                r.expect(b'N')?;
            }
            LogicalMessage::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            let kind = match r.u8()? {
                b'K' => OldKind::Key,
                b'O' => OldKind::Full,
                other => {
                    return Err(r.error(format!("unexpected tuple kind {}", describe_tag(other))))
                }
            };
            LogicalMessage::Delete {
                relation,
                old: (kind, r.tuple()?),
            }
        }
        b'T' => {
            let count = r.u32()?;
            let options = r.u8()?;
            let mut relations = Vec::with_capacity(count.min(1024) as usize);
            for _ in 0..count {
                relations.push(r.u32()?);
            }
            LogicalMessage::Truncate { options, relations }
        }
        b'M' => {
            let transactional = r.u8()? & 1 == 1;
            let lsn = r.lsn()?;
            let prefix = r.cstring()?;
            let len = r.u32()? as usize;
            LogicalMessage::Message {
                transactional,
                lsn,
                prefix,
                content: r.bytes(len)?.to_vec(),
            }
        }
        b'S' | b'E' | b'c' | b'A' | b'b' | b'P' | b'K' | b'r' | b'p' => return Err(r.error(
            "a streamed or two-phase transaction message, which protocol version 1 never sends: \
                 the source asks for `proto_version` 1 without `streaming` or `two_phase`",
        )),
        _ => return Err(r.error("unknown message type")),
    };
    if r.pos != data.len() {
        return Err(r.error(format!("{} bytes left over", data.len() - r.pos)));
    }
    Ok(message)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    tag: u8,
}

impl<'a> Reader<'a> {
    fn error(&self, detail: impl fmt::Display) -> DecodeError {
        DecodeError::new(self.tag, self.pos, detail)
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.data.len())
            .ok_or_else(|| {
                self.error(format!(
                    "cut short: {len} bytes wanted, {} left",
                    self.data.len() - self.pos
                ))
            })?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn lsn(&mut self) -> Result<Lsn, DecodeError> {
        Ok(Lsn(u64::from_be_bytes(self.array()?)))
    }

    fn timestamp(&mut self) -> Result<DateTime<Utc>, DecodeError> {
        let micros = self.i64()?;
        micros
            .checked_add(POSTGRES_EPOCH_MICROS)
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(|| self.error(format!("timestamp {micros} is out of range")))
    }

    fn expect(&mut self, want: u8) -> Result<(), DecodeError> {
        let got = self.u8()?;
        if got == want {
            Ok(())
        } else {
            Err(self.error(format!(
                "expected {}, found {}",
                describe_tag(want),
                describe_tag(got)
            )))
        }
    }

    fn cstring(&mut self) -> Result<String, DecodeError> {
        let rest = &self.data[self.pos..];
        let len = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| self.error("a string has no terminating zero byte"))?;
        let text = self.utf8(&rest[..len])?;
        self.pos += len + 1;
        Ok(text)
    }

    fn utf8(&self, bytes: &[u8]) -> Result<String, DecodeError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            self.error(format!(
                "text is not UTF-8 ({e}); herald-cdc reads UTF8 databases"
            ))
        })
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let count = self.i16()?;
        let count = usize::try_from(count).map_err(|_| self.error("negative column count"))?;
        let mut datums = Vec::with_capacity(count);
        for _ in 0..count {
            datums.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::UnchangedToast,
                b't' => {
                    let len = self.u32()? as usize;
                    let bytes = self.bytes(len)?;
                    Datum::Text(self.utf8(bytes)?)
                }
                b'b' => {
                    let len = self.u32()? as usize;
                    Datum::Binary(self.bytes(len)?.to_vec())
                }
                other => {
                    return Err(self.error(format!("unknown column kind {}", describe_tag(other))))
                }
            });
        }
        Ok(Tuple(datums))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds pgoutput messages byte by byte, as PostgreSQL writes them.
    #[derive(Default)]
    pub(crate) struct Wire(pub(crate) Vec<u8>);

    impl Wire {
        pub(crate) fn tag(mut self, tag: u8) -> Self {
            self.0.push(tag);
            self
        }
        pub(crate) fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        pub(crate) fn i16(mut self, v: i16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        pub(crate) fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        pub(crate) fn i32(mut self, v: i32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        pub(crate) fn u64(mut self, v: u64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        pub(crate) fn i64(mut self, v: i64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        pub(crate) fn cstr(mut self, s: &str) -> Self {
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(0);
            self
        }
        pub(crate) fn text(mut self, s: &str) -> Self {
            self.0.push(b't');
            self.0.extend_from_slice(&(s.len() as u32).to_be_bytes());
            self.0.extend_from_slice(s.as_bytes());
            self
        }
    }

    /// The bytes PostgreSQL 15 sent for a one-row transaction (captured with psql).
    #[test]
    fn decodes_begin_and_commit_from_a_real_session() {
        let begin =
            b"B\x00\x00\x00\x00\x08\xe5\x7c\xf8\x00\x03\x04\xf6\x3c\x1e\x13\x3a\x00\x00\x10\x53";
        let LogicalMessage::Begin {
            final_lsn,
            commit_time,
            xid,
        } = decode(begin).expect("begin")
        else {
            panic!("not a begin");
        };
        assert_eq!(final_lsn.to_string(), "0/8E57CF8");
        assert_eq!(xid, 4179);
        assert_eq!(
            commit_time.timestamp_micros() - POSTGRES_EPOCH_MICROS,
            0x0003_04f6_3c1e_133a
        );
        let commit = b"C\x00\x00\x00\x00\x00\x08\xe5\x7c\xf8\x00\x00\x00\x00\x08\xe5\x7d\x28\x00\x03\x04\xf6\x3c\x1e\x13\x3a";
        assert_eq!(
            decode(commit).expect("commit"),
            LogicalMessage::Commit {
                commit_lsn: final_lsn,
                end_lsn: "0/8E57D28".parse().expect("lsn"),
                commit_time,
            }
        );
    }

    #[test]
    fn decodes_a_relation_and_its_rows() {
        let relation = Wire::default()
            .tag(b'R')
            .u32(19487)
            .cstr("public")
            .cstr("orders")
            .u8(b'f')
            .i16(2)
            .u8(1)
            .cstr("id")
            .u32(23)
            .i32(-1)
            .u8(0)
            .cstr("note")
            .u32(25)
            .i32(-1);
        let LogicalMessage::Relation(rel) = decode(&relation.0).expect("relation") else {
            panic!("not a relation");
        };
        assert_eq!(
            (rel.id, rel.namespace.as_str(), rel.name.as_str()),
            (19487, "public", "orders")
        );
        assert_eq!(rel.replica_identity, b'f');
        assert!(rel.columns[0].key && !rel.columns[1].key);
        assert_eq!(
            (rel.columns[1].name.as_str(), rel.columns[1].type_oid),
            ("note", 25)
        );

        let insert = Wire::default()
            .tag(b'I')
            .u32(19487)
            .u8(b'N')
            .i16(2)
            .text("1")
            .u8(b'n');
        assert_eq!(
            decode(&insert.0).expect("insert"),
            LogicalMessage::Insert {
                relation: 19487,
                new: Tuple(vec![Datum::Text("1".into()), Datum::Null]),
            }
        );
        let update = Wire::default()
            .tag(b'U')
            .u32(19487)
            .u8(b'O')
            .i16(2)
            .text("1")
            .text("old")
            .u8(b'N')
            .i16(2)
            .text("1")
            .u8(b'u');
        assert_eq!(
            decode(&update.0).expect("update"),
            LogicalMessage::Update {
                relation: 19487,
                old: Some((
                    OldKind::Full,
                    Tuple(vec![Datum::Text("1".into()), Datum::Text("old".into())])
                )),
                new: Tuple(vec![Datum::Text("1".into()), Datum::UnchangedToast]),
            }
        );
        let plain_update = Wire::default().tag(b'U').u32(7).u8(b'N').i16(1).text("x");
        assert!(matches!(
            decode(&plain_update.0).expect("update"),
            LogicalMessage::Update { old: None, .. }
        ));
        let delete = Wire::default().tag(b'D').u32(7).u8(b'K').i16(1).text("x");
        assert!(matches!(
            decode(&delete.0).expect("delete"),
            LogicalMessage::Delete {
                old: (OldKind::Key, _),
                ..
            }
        ));
        let truncate = Wire::default().tag(b'T').u32(2).u8(1).u32(7).u32(8);
        assert_eq!(
            decode(&truncate.0).expect("truncate"),
            LogicalMessage::Truncate {
                options: 1,
                relations: vec![7, 8]
            }
        );
        let origin = Wire::default().tag(b'O').u64(42).cstr("node_a");
        assert_eq!(
            decode(&origin.0).expect("origin"),
            LogicalMessage::Origin {
                lsn: Lsn(42),
                name: "node_a".into()
            }
        );
        let message = Wire::default()
            .tag(b'M')
            .u8(1)
            .u64(9)
            .cstr("app")
            .u32(2)
            .u8(b'h')
            .u8(b'i');
        assert!(matches!(
            decode(&message.0).expect("message"),
            LogicalMessage::Message { transactional: true, ref content, .. } if content == b"hi"
        ));
        let typ = Wire::default()
            .tag(b'Y')
            .u32(16500)
            .cstr("public")
            .cstr("mood");
        assert!(matches!(
            decode(&typ.0).expect("type"),
            LogicalMessage::Type { oid: 16500, .. }
        ));
    }

    #[test]
    fn refuses_what_it_cannot_read_and_says_where() {
        let cut = Wire::default()
            .tag(b'I')
            .u32(7)
            .u8(b'N')
            .i16(1)
            .u8(b't')
            .u32(10)
            .u8(b'a');
        let error = decode(&cut.0).expect_err("cut short");
        assert!(error.to_string().contains("cut short"), "{error}");
        assert!(
            error.to_string().starts_with("pgoutput message `I`"),
            "{error}"
        );

        let extra = Wire::default().tag(b'O').u64(1).cstr("x").u8(0);
        assert!(decode(&extra.0)
            .expect_err("left over")
            .to_string()
            .contains("left over"));

        let streamed = Wire::default().tag(b'S').u32(1).u8(1);
        assert!(decode(&streamed.0)
            .expect_err("stream")
            .to_string()
            .contains("proto_version"));

        assert!(decode(b"").is_err());
        assert!(decode(b"\x01")
            .expect_err("unknown")
            .to_string()
            .contains("0x01"));
        let bad_kind = Wire::default().tag(b'I').u32(7).u8(b'X');
        assert!(decode(&bad_kind.0).is_err());
        let not_utf8 = Wire::default().tag(b'O').u64(1).u8(0xFF).u8(0);
        assert!(decode(&not_utf8.0)
            .expect_err("utf8")
            .to_string()
            .contains("UTF-8"));
        let bad_time = Wire::default().tag(b'B').u64(1).i64(i64::MAX).u32(1);
        assert!(decode(&bad_time.0)
            .expect_err("time")
            .to_string()
            .contains("out of range"));
    }
}
