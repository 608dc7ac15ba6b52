//! The ops port (`crate::ports::feed`) for every SQL outbox: what the CLI and other tools talk to.

use super::{Dialect, SqlOutbox};
use crate::model::dead_letter::DeadLetterId;
use crate::model::sla::SlaStatus;
use crate::ports::dead_letters::DeadLetterStore;
use crate::ports::feed::{EventFeed, OpsError, OutboxOps, OutboxStatus, StoredEvent, StuckKey};
use async_trait::async_trait;
use std::sync::Arc;

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
#[async_trait]
impl<D: Dialect> EventFeed for SqlOutbox<D> {
    async fn events_after(&self, offset: i64, limit: usize) -> Result<Vec<StoredEvent>, OpsError> {
        SqlOutbox::events_after(self, offset, limit)
            .await
            .map_err(|e| OpsError::new("reading the event feed", e))
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
#[async_trait]
impl<D: Dialect> OutboxOps for SqlOutbox<D> {
    async fn status(&self) -> Result<OutboxStatus, OpsError> {
        SqlOutbox::status(self)
            .await
            .map_err(|e| OpsError::new("reading the outbox status", e))
    }

    fn dead_letters(&self) -> Arc<dyn DeadLetterStore> {
        Arc::new(SqlOutbox::dead_letters(self))
    }

    async fn redrive(&self, id: DeadLetterId) -> Result<Option<i64>, OpsError> {
        SqlOutbox::dead_letters(self)
            .redrive_to_outbox(id)
            .await
            .map_err(|e| OpsError::new("re-driving a dead letter into the outbox", e))
    }

    async fn sla_status(&self) -> Result<Vec<SlaStatus>, OpsError> {
        SqlOutbox::sla_status(self)
            .await
            .map_err(|e| OpsError::new("counting SLA expectations", e))
    }

    async fn stuck_keys(&self, limit: usize) -> Result<Vec<StuckKey>, OpsError> {
        SqlOutbox::stuck_keys(self, limit)
            .await
            .map_err(|e| OpsError::new("listing stuck ordering keys", e))
    }
}
