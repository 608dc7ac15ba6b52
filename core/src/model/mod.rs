//! Layer 1, the bottom: plain data. Messages, envelopes and ids, errors, outcomes, dead-letter records,
//! handler options (with the retry delay function), SLA declarations and their records, the stored-message form with its typed per-handler
//! progress, and the ledger's counts. Nothing here runs anything; every other layer builds on it, and
//! it imports no other layer.

pub(crate) mod dead_letter;
pub(crate) mod envelope;
pub(crate) mod error;
pub(crate) mod id;
pub(crate) mod ledger;
pub(crate) mod message;
pub(crate) mod options;
pub(crate) mod outcome;
pub(crate) mod retry;
pub(crate) mod sla;
pub(crate) mod stored_message;
pub(crate) mod wire;
