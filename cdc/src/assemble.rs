//! Turns the decoded pgoutput stream into [`Change`]s: keeps the relations announced in the
//! current decoding call, tracks the open transaction, numbers its changes.

use crate::change::{text_value, Change, Operation, ReplicaIdentity, Row};
use crate::lsn::Lsn;
use crate::pgoutput::{Datum, LogicalMessage, OldKind, Relation, Tuple};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// What one message meant.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Nothing to deliver (a relation, a type, an origin, a transaction's start).
    Nothing,
    /// Changes of the open transaction, in order.
    Changes(Vec<Change>),
    /// The open transaction committed; confirm up to `end_lsn` once its changes are done.
    Commit {
        /// Just past its commit record.
        end_lsn: Lsn,
    },
}

#[derive(Debug)]
struct Open {
    final_lsn: Lsn,
    commit_time: DateTime<Utc>,
    xid: u32,
    next_seq: u32,
}

/// The state of one decoding session.
#[derive(Debug)]
pub(crate) struct Assembler {
    slot: String,
    relations: HashMap<u32, Relation>,
    open: Option<Open>,
}

impl Assembler {
    pub(crate) fn new(slot: &str) -> Self {
        Assembler {
            slot: slot.to_owned(),
            relations: HashMap::new(),
            open: None,
        }
    }

    /// Takes the next message of the stream.
    ///
    /// # Errors
    /// When the stream is not as pgoutput sends it (a change outside a transaction, a relation
    /// not announced, a row of the wrong width): the message says what.
    pub(crate) fn push(&mut self, message: LogicalMessage) -> Result<Step, String> {
        match message {
            LogicalMessage::Begin {
                final_lsn,
                commit_time,
                xid,
            } => {
                if let Some(open) = &self.open {
                    return Err(format!(
                        "transaction {xid} begins while transaction {} is open",
                        open.xid
                    ));
                }
                self.open = Some(Open {
                    final_lsn,
                    commit_time,
                    xid,
                    next_seq: 0,
                });
                Ok(Step::Nothing)
            }
            LogicalMessage::Commit {
                commit_lsn,
                end_lsn,
                ..
            } => {
                let open = self
                    .open
                    .take()
                    .ok_or_else(|| format!("a commit at {commit_lsn} with no open transaction"))?;
                if open.final_lsn != commit_lsn {
                    return Err(format!(
                        "transaction {} announced its commit at {} but committed at {commit_lsn}",
                        open.xid, open.final_lsn
                    ));
                }
                Ok(Step::Commit { end_lsn })
            }
            LogicalMessage::Relation(relation) => {
                self.relations.insert(relation.id, relation);
                Ok(Step::Nothing)
            }
            LogicalMessage::Type { .. } | LogicalMessage::Origin { .. } => Ok(Step::Nothing),
            // Not asked for (`messages` is off); a non-transactional one may come outside a
            // transaction. Nothing of a table's data.
            LogicalMessage::Message { .. } => Ok(Step::Nothing),
            LogicalMessage::Insert { relation, new } => {
                let rel = self.relation(relation)?;
                let (new, unchanged) = row(rel, new, false)?;
                let change =
                    self.change(relation, Operation::Insert, Some(new), None, unchanged)?;
                Ok(Step::Changes(vec![change]))
            }
            LogicalMessage::Update { relation, old, new } => {
                let rel = self.relation(relation)?;
                let (new, unchanged) = row(rel, new, false)?;
                let old = match old {
                    Some((kind, tuple)) => Some(row(rel, tuple, kind == OldKind::Key)?.0),
                    None => None,
                };
                let change = self.change(relation, Operation::Update, Some(new), old, unchanged)?;
                Ok(Step::Changes(vec![change]))
            }
            LogicalMessage::Delete {
                relation,
                old: (kind, tuple),
            } => {
                let rel = self.relation(relation)?;
                let (old, _) = row(rel, tuple, kind == OldKind::Key)?;
                let change = self.change(relation, Operation::Delete, None, Some(old), vec![])?;
                Ok(Step::Changes(vec![change]))
            }
            LogicalMessage::Truncate { relations, .. } => {
                let changes = relations
                    .into_iter()
                    .map(|relation| self.change(relation, Operation::Truncate, None, None, vec![]))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Step::Changes(changes))
            }
        }
    }

    fn relation(&self, id: u32) -> Result<&Relation, String> {
        self.relations.get(&id).ok_or_else(|| {
            format!("a change of relation {id}, which was not announced by a Relation message")
        })
    }

    fn change(
        &mut self,
        relation: u32,
        op: Operation,
        new: Option<Row>,
        old: Option<Row>,
        unchanged_toast: Vec<String>,
    ) -> Result<Change, String> {
        let rel = self.relation(relation)?;
        let (schema, table) = (rel.namespace.clone(), rel.name.clone());
        let key_columns = rel
            .columns
            .iter()
            .filter(|c| c.key)
            .map(|c| c.name.clone())
            .collect();
        let replica_identity = ReplicaIdentity::from_code(rel.replica_identity);
        let open = self.open.as_mut().ok_or_else(|| {
            format!(
                "a change of {schema}.{table} outside a transaction (no Begin message before it)"
            )
        })?;
        let seq = open.next_seq;
        open.next_seq = seq
            .checked_add(1)
            .ok_or_else(|| format!("transaction {} has more than 2^32 changes", open.xid))?;
        Ok(Change {
            slot: self.slot.clone(),
            schema: if schema.is_empty() {
                "pg_catalog".to_owned()
            } else {
                schema
            },
            table,
            op,
            new,
            old,
            key_columns,
            replica_identity,
            unchanged_toast,
            commit_lsn: open.final_lsn,
            commit_time: open.commit_time,
            xid: open.xid,
            seq,
        })
    }
}

/// A tuple as a row: every column, or only the key columns of a key-only old row. Also returns
/// the columns whose unchanged TOASTed value was not sent.
fn row(rel: &Relation, tuple: Tuple, only_key: bool) -> Result<(Row, Vec<String>), String> {
    if tuple.0.len() != rel.columns.len() {
        return Err(format!(
            "a row of {}.{} has {} columns, its Relation message {}",
            rel.namespace,
            rel.name,
            tuple.0.len(),
            rel.columns.len()
        ));
    }
    let mut values = Row::new();
    let mut unchanged = Vec::new();
    for (column, datum) in rel.columns.iter().zip(tuple.0) {
        if only_key && !column.key {
            continue;
        }
        let value = match datum {
            Datum::Null => serde_json::Value::Null,
            Datum::UnchangedToast => {
                unchanged.push(column.name.clone());
                continue;
            }
            Datum::Text(text) => text_value(column.type_oid, text),
            Datum::Binary(bytes) => {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                serde_json::Value::String(format!("\\x{hex}"))
            }
        };
        values.insert(column.name.clone(), value);
    }
    Ok((values, unchanged))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgoutput::Column;
    use serde_json::json;

    fn relation(identity: u8) -> LogicalMessage {
        let column = |key, name: &str, type_oid| Column {
            key,
            name: name.into(),
            type_oid,
            type_modifier: -1,
        };
        LogicalMessage::Relation(Relation {
            id: 7,
            namespace: "public".into(),
            name: "orders".into(),
            replica_identity: identity,
            columns: vec![column(true, "id", 23), column(false, "note", 25)],
        })
    }

    fn begin(lsn: u64, xid: u32) -> LogicalMessage {
        LogicalMessage::Begin {
            final_lsn: Lsn(lsn),
            commit_time: DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
            xid,
        }
    }

    fn commit(lsn: u64) -> LogicalMessage {
        LogicalMessage::Commit {
            commit_lsn: Lsn(lsn),
            end_lsn: Lsn(lsn + 0x30),
            commit_time: DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
        }
    }

    fn tuple(id: &str, note: Datum) -> Tuple {
        Tuple(vec![Datum::Text(id.into()), note])
    }

    fn changes(step: Step) -> Vec<Change> {
        match step {
            Step::Changes(changes) => changes,
            other => panic!("expected changes, got {other:?}"),
        }
    }

    #[test]
    fn numbers_the_changes_of_a_transaction_and_reads_old_rows() {
        let mut a = Assembler::new("slot_a");
        assert_eq!(a.push(relation(b'd')).expect("relation"), Step::Nothing);
        assert_eq!(a.push(begin(0x100, 5)).expect("begin"), Step::Nothing);
        let insert = changes(
            a.push(LogicalMessage::Insert {
                relation: 7,
                new: tuple("1", Datum::Text("a".into())),
            })
            .expect("insert"),
        );
        assert_eq!(insert[0].seq, 0);
        assert_eq!(insert[0].new_value("id"), Some(&json!(1)));
        assert_eq!(insert[0].commit_lsn, Lsn(0x100));
        assert_eq!(insert[0].slot, "slot_a");
        assert_eq!(insert[0].key_columns, vec!["id".to_owned()]);

        // A key-only old row keeps the key columns only; an unchanged TOASTed value is named.
        let update = changes(
            a.push(LogicalMessage::Update {
                relation: 7,
                old: Some((OldKind::Key, tuple("1", Datum::Null))),
                new: tuple("2", Datum::UnchangedToast),
            })
            .expect("update"),
        );
        assert_eq!(update[0].seq, 1);
        assert_eq!(update[0].old.as_ref().map(|o| o.len()), Some(1));
        assert_eq!(update[0].old_value("id"), Some(&json!(1)));
        assert_eq!(update[0].unchanged_toast, vec!["note".to_owned()]);
        assert!(update[0].new_value("note").is_none());

        let delete = changes(
            a.push(LogicalMessage::Delete {
                relation: 7,
                old: (OldKind::Full, tuple("2", Datum::Null)),
            })
            .expect("delete"),
        );
        assert_eq!(delete[0].old_value("note"), Some(&json!(null)));
        assert_eq!(delete[0].key().get("id"), Some(&json!(2)));

        let truncate = changes(
            a.push(LogicalMessage::Truncate {
                options: 0,
                relations: vec![7],
            })
            .expect("truncate"),
        );
        assert_eq!((truncate[0].op, truncate[0].seq), (Operation::Truncate, 3));
        assert_eq!(
            a.push(commit(0x100)).expect("commit"),
            Step::Commit {
                end_lsn: Lsn(0x130)
            }
        );

        // The next transaction numbers from 0 again; the relation is still known.
        a.push(begin(0x200, 6)).expect("begin");
        let next = changes(
            a.push(LogicalMessage::Insert {
                relation: 7,
                new: tuple("3", Datum::Null),
            })
            .expect("insert"),
        );
        assert_eq!((next[0].seq, next[0].xid), (0, 6));
    }

    #[test]
    fn refuses_a_stream_pgoutput_never_sends() {
        let mut a = Assembler::new("s");
        let insert = || LogicalMessage::Insert {
            relation: 7,
            new: tuple("1", Datum::Null),
        };
        a.push(begin(1, 1)).expect("begin");
        assert!(a
            .push(insert())
            .expect_err("unknown relation")
            .contains("not announced"));
        a.push(relation(b'f')).expect("relation");
        let narrow = LogicalMessage::Insert {
            relation: 7,
            new: Tuple(vec![Datum::Null]),
        };
        assert!(a.push(narrow).expect_err("width").contains("1 columns"));
        assert!(a.push(begin(2, 2)).expect_err("nested").contains("is open"));
        assert!(a
            .push(commit(9))
            .expect_err("wrong lsn")
            .contains("announced"));

        let mut b = Assembler::new("s");
        b.push(relation(b'd')).expect("relation");
        assert!(b
            .push(insert())
            .expect_err("outside")
            .contains("outside a transaction"));
        assert!(b
            .push(commit(1))
            .expect_err("no txn")
            .contains("no open transaction"));
    }
}
