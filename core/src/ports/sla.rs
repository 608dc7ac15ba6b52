//! Where SLA expectations live: the port a store implements to keep them (open, fulfil, sweep the
//! due ones into breaches, count). The SQL outboxes implement it in the outbox's own database, so
//! an A stored with the outbox opens its expectation in the same transaction, and a breach is
//! marked and its [`SlaBreached`] event written into the outbox in one transaction. The engine's
//! in-memory store is the default.

use crate::model::envelope::MessageId;
use crate::model::sla::{Fulfilment, NewExpectation, Sla, SlaBreached, SlaExpectation, SlaStatus};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// An SLA store could not be read or written; the source is the store's own error.
#[derive(Debug, thiserror::Error)]
#[error("SLA store: {context}: {source}")]
pub struct SlaStoreError {
    context: &'static str,
    #[source]
    source: Box<dyn StdError + Send + Sync>,
}

impl SlaStoreError {
    /// Wraps a store's error with what was being done.
    pub fn new(context: &'static str, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        SlaStoreError {
            context,
            source: source.into(),
        }
    }
}

/// A store of SLA expectations (see `docs/SLAS.md`).
///
/// Every write is idempotent, so that the engine may record the same A or B again (a relay
/// delivers a row again after a crash, a broker redelivers): opening is keyed by SLA and A's
/// message id, and a fulfilment moves only expectations that accept one.
#[async_trait]
pub trait SlaStore: Send + Sync + fmt::Debug + 'static {
    /// The SLAs of the runtime being built (`HeraldBuilder::build` calls it once). A store that
    /// also stores messages uses them to open and fulfil expectations in the publishing
    /// transaction (the SQL outboxes do); the default ignores them.
    fn declare(&self, slas: Arc<[Sla]>) {
        let _ = slas;
    }

    /// Whether expectations survive a restart of the process.
    fn durable(&self) -> bool;

    /// Opens each expectation unless it is already open (or was, for the same SLA and A).
    /// Returns how many were new.
    ///
    /// # Errors
    /// When the store cannot be written; nothing is opened then.
    async fn open(&self, expectations: &[NewExpectation]) -> Result<u64, SlaStoreError>;

    /// A B of `sla` with correlation key `key` (message `by`) happened at `at`: every expectation
    /// of the key that accepts a fulfilment moves to `fulfilled` (open, and `at` by its due time)
    /// or `fulfilled_late`. Returns the ones it moved.
    ///
    /// # Errors
    /// When the store cannot be written; nothing moves then.
    async fn fulfil(
        &self,
        sla: &str,
        key: &str,
        by: MessageId,
        at: DateTime<Utc>,
    ) -> Result<Vec<Fulfilment>, SlaStoreError>;

    /// Marks up to `limit` open expectations whose due time has passed as breached, and returns
    /// their [`SlaBreached`] events. Competing sweepers (in this process or others) never breach
    /// one expectation twice.
    ///
    /// When [`delivers_breaches`](Self::delivers_breaches) is true the store has stored each
    /// event for delivery in the same transaction (an outbox row), and the caller only counts
    /// them; otherwise the caller publishes them and hands back with [`reopen`](Self::reopen) the
    /// ones it could not publish.
    ///
    /// # Errors
    /// When the store cannot be written; nothing is breached then.
    async fn sweep(&self, limit: usize) -> Result<Vec<SlaBreached>, SlaStoreError>;

    /// Whether [`sweep`](Self::sweep) stores the breach events itself.
    fn delivers_breaches(&self) -> bool;

    /// Opens again an expectation whose breach event could not be published, so that the next
    /// sweep emits it again.
    ///
    /// # Errors
    /// When the store cannot be written.
    async fn reopen(&self, breach: &SlaBreached) -> Result<(), SlaStoreError>;

    /// Counts by SLA and state, with the next due time of each SLA's open expectations.
    ///
    /// # Errors
    /// When the store cannot be read.
    async fn status(&self) -> Result<Vec<SlaStatus>, SlaStoreError>;

    /// The expectation `sla` opened for the A `a_message_id`, if any.
    ///
    /// # Errors
    /// When the store cannot be read.
    async fn expectation(
        &self,
        sla: &str,
        a_message_id: MessageId,
    ) -> Result<Option<SlaExpectation>, SlaStoreError>;
}

/// A shared store is a store.
#[async_trait]
impl<T: SlaStore + ?Sized> SlaStore for Arc<T> {
    fn declare(&self, slas: Arc<[Sla]>) {
        (**self).declare(slas);
    }
    fn durable(&self) -> bool {
        (**self).durable()
    }
    async fn open(&self, expectations: &[NewExpectation]) -> Result<u64, SlaStoreError> {
        (**self).open(expectations).await
    }
    async fn fulfil(
        &self,
        sla: &str,
        key: &str,
        by: MessageId,
        at: DateTime<Utc>,
    ) -> Result<Vec<Fulfilment>, SlaStoreError> {
        (**self).fulfil(sla, key, by, at).await
    }
    async fn sweep(&self, limit: usize) -> Result<Vec<SlaBreached>, SlaStoreError> {
        (**self).sweep(limit).await
    }
    fn delivers_breaches(&self) -> bool {
        (**self).delivers_breaches()
    }
    async fn reopen(&self, breach: &SlaBreached) -> Result<(), SlaStoreError> {
        (**self).reopen(breach).await
    }
    async fn status(&self) -> Result<Vec<SlaStatus>, SlaStoreError> {
        (**self).status().await
    }
    async fn expectation(
        &self,
        sla: &str,
        a_message_id: MessageId,
    ) -> Result<Option<SlaExpectation>, SlaStoreError> {
        (**self).expectation(sla, a_message_id).await
    }
}
