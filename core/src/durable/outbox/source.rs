//! A SQL outbox as a [`MessageSource`]: the adapter between the relay's public seam and a backend's
//! rows (`Backend` in `row.rs`).

use super::row::{Backend, ClaimedRow, Outcome, Waiter};
use crate::ports::{Capabilities, MessageSource, Receipt, Received, Settlement, SourceError};
use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// An outbox backend seen as a message source. A receipt is the row id.
pub(crate) struct BackendSource {
    backend: Arc<dyn Backend>,
    /// Made at the first wait (a `LISTEN` connection on PostgreSQL). A relay waiting while another
    /// holds it sleeps instead.
    waiter: Mutex<Option<Box<dyn Waiter>>>,
}

impl BackendSource {
    pub(crate) fn new(backend: Arc<dyn Backend>) -> Self {
        BackendSource {
            backend,
            waiter: Mutex::new(None),
        }
    }
}

impl fmt::Debug for BackendSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendSource")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

// Row ids are positive `BIGINT`s: the casts keep every bit, so a receipt maps back to its row.
#[allow(clippy::cast_sign_loss)]
fn receipt(id: i64) -> Receipt {
    Receipt(id as u64)
}

#[allow(clippy::cast_possible_wrap)]
fn row_id(receipt: Receipt) -> i64 {
    receipt.0 as i64
}

fn received(rows: &[ClaimedRow]) -> Vec<Received> {
    rows.iter()
        .map(|row| Received {
            receipt: receipt(row.id),
            message: row.to_stored(),
        })
        .collect()
}

#[async_trait]
impl MessageSource for BackendSource {
    async fn receive(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Received>, SourceError> {
        let rows = self
            .backend
            .claim(owner, limit, lease)
            .await
            .map_err(|e| SourceError::backend("receive", e))?;
        Ok(received(&rows))
    }

    async fn keep(
        &self,
        owner: &str,
        receipts: &[Receipt],
        lease: Duration,
    ) -> Result<Vec<Receipt>, SourceError> {
        let ids: Vec<i64> = receipts.iter().copied().map(row_id).collect();
        let kept = self
            .backend
            .renew(owner, &ids, lease)
            .await
            .map_err(|e| SourceError::backend("keep", e))?;
        Ok(kept.into_iter().map(receipt).collect())
    }

    async fn settle(
        &self,
        owner: &str,
        settled: Vec<(Receipt, Settlement)>,
    ) -> Result<(), SourceError> {
        let outcomes = settled
            .into_iter()
            .map(|(receipt, settlement)| Outcome::from_settlement(row_id(receipt), settlement))
            .collect();
        self.backend
            .finish(owner, outcomes)
            .await
            .map_err(|e| SourceError::backend("settle", e))
    }

    async fn settle_and_receive(
        &self,
        owner: &str,
        settled: Vec<(Receipt, Settlement)>,
        limit: usize,
        lease: Duration,
    ) -> (Result<(), SourceError>, Result<Vec<Received>, SourceError>) {
        let outcomes = settled
            .into_iter()
            .map(|(receipt, settlement)| Outcome::from_settlement(row_id(receipt), settlement))
            .collect();
        let (finished, claimed) = self
            .backend
            .finish_and_claim(owner, outcomes, limit, lease)
            .await;
        (
            finished.map_err(|e| SourceError::backend("settle", e)),
            claimed
                .map(|rows| received(&rows))
                .map_err(|e| SourceError::backend("receive", e)),
        )
    }

    async fn wait(&self, timeout: Duration) {
        let Ok(mut waiter) = self.waiter.try_lock() else {
            tokio::time::sleep(timeout).await;
            return;
        };
        if waiter.is_none() {
            *waiter = Some(self.backend.waiter().await);
        }
        if let Some(waiter) = waiter.as_mut() {
            waiter.wait(timeout).await;
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_per_message_ack()
            .with_native_delay()
            .with_ordered_by_key()
            .with_persistent()
    }

    fn overlaps_settle(&self) -> bool {
        self.backend.overlaps_write_back()
    }

    async fn sweep(&self, older_than: Duration, batch: usize) -> Result<u64, SourceError> {
        self.backend
            .delete_finished(older_than, batch)
            .await
            .map_err(|e| SourceError::backend("sweep", e))
    }
}
