//! What can go wrong, and what to do about it.

use crate::pgoutput::DecodeError;

/// A CDC source could not be set up, or stopped.
///
/// [`is_transient`](CdcError::is_transient) tells a lost connection (the source reconnects and
/// resumes from its stored position) from a problem a person must fix (the message says how).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CdcError {
    /// The server does not keep the logical decoding information.
    #[error("wal_level is `{found}`; set wal_level = logical (ALTER SYSTEM SET wal_level = logical, or in postgresql.conf) and restart PostgreSQL")]
    WalLevel {
        /// The server's `wal_level`.
        found: String,
    },
    /// The server is older than the source needs.
    #[error("PostgreSQL {found} is too old: herald-cdc needs PostgreSQL 13 or later (pg_replication_slot_advance, wal_status)")]
    ServerTooOld {
        /// The server's version.
        found: String,
    },
    /// pgoutput sends text in the server's encoding; only UTF-8 is read.
    #[error("the database's encoding is {found}: herald-cdc reads UTF8 databases only (pgoutput sends values in the server encoding)")]
    Encoding {
        /// The server encoding.
        found: String,
    },
    /// The publication does not exist.
    #[error("publication `{publication}` does not exist: create it before the slot (CREATE PUBLICATION {publication} FOR TABLE ...), or give the tables with `CdcSourceBuilder::tables`")]
    NoPublication {
        /// Its name.
        publication: String,
    },
    /// The replication slot does not exist (and the source was told not to create it).
    #[error("replication slot `{slot}` does not exist: let the source create it (`create_slot(true)`, the default) or run SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")]
    NoSlot {
        /// Its name.
        slot: String,
    },
    /// The slot is not a pgoutput slot of this database.
    #[error("replication slot `{slot}` {problem}: give the source a slot of its own (a new name), or drop this one with SELECT pg_drop_replication_slot('{slot}') if nothing else uses it")]
    WrongSlot {
        /// Its name.
        slot: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The slot's WAL was removed (`wal_status` = `lost`): changes are gone.
    #[error("replication slot `{slot}` has lost WAL it needed (wal_status = lost; max_slot_wal_keep_size removed it): changes since its position are gone. Drop it (SELECT pg_drop_replication_slot('{slot}')), create it again and resynchronise the consumers from a snapshot")]
    SlotLost {
        /// Its name.
        slot: String,
    },
    /// Another consumer holds the slot.
    #[error("replication slot `{slot}` is in use by another herald-cdc session{}: one source per slot; this one waits and takes over if that one goes away", pid.map(|p| format!(" (backend pid {p})")).unwrap_or_default())]
    SlotBusy {
        /// Its name.
        slot: String,
        /// The backend holding it, if known.
        pid: Option<i32>,
    },
    /// No handler or route would see the changes.
    #[error("no handler or route for `herald.cdc.change`: changes would be confirmed without effect. Register an #[async_handler] taking a `herald_cdc::Change` (check `handlers_under`) or `route::<Change>().to(sink)`")]
    NoHandler,
    /// A setting is not valid; every problem is listed.
    #[error("the CDC source is not configured right: {}", .0.join("; "))]
    Config(Vec<String>),
    /// A message from the slot cannot be decoded.
    #[error("{0}; this is a bug in herald-cdc or a server it does not support: report it with the server version")]
    Decode(#[from] DecodeError),
    /// The message stream is not as pgoutput sends it.
    #[error("the pgoutput stream is not as expected: {0}; this is a bug in herald-cdc or a server it does not support: report it with the server version")]
    Stream(String),
    /// A database error.
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
}

impl CdcError {
    /// Whether the source recovers by itself by connecting again: a lost or terminated
    /// connection, a server shutting down or refusing connections, a slot another session holds.
    pub fn is_transient(&self) -> bool {
        match self {
            CdcError::SlotBusy { .. } => true,
            CdcError::Database(error) => transient(error),
            _ => false,
        }
    }
}

fn transient(error: &sqlx::Error) -> bool {
    // 55006: the slot is active for another PID (it frees when that session ends).
    herald_core::outbox::is_transient(error)
        || matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("55006"))
}
