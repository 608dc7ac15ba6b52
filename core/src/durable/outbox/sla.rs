//! The SQL outboxes as the store of deadline SLA expectations (`herald_sla_expectations`, schema
//! v4), written once for every dialect: [`SlaStore`] for [`SqlOutbox`], and what the outbox's
//! publish does in the caller's transaction.
//!
//! - An A written with `outbox.publish(&mut tx, a)` opens its expectations in `tx`, and a B
//!   fulfils them in its `tx`: they exist (and a B counts) exactly when the transaction commits.
//!   The outbox knows the SLAs once a runtime declared them (`HeraldBuilder::sla_store(outbox
//!   .clone())`, shared by the outbox's clones).
//! - A sweep marks due expectations breached and writes their `SlaBreached` rows into
//!   `herald_outbox` in one transaction (`Dialect::sla_sweep`): a crash loses neither, and
//!   competing sweepers (`FOR UPDATE SKIP LOCKED` on PostgreSQL and MySQL, the single writer on
//!   SQLite) never breach one expectation twice. The outbox's relay delivers the events.

use super::dialect::{Bind, Dialect};
use super::sql::SqlOutbox;
use super::{NewRow, OutboxError};
use crate::model::envelope::{Envelope, MessageId, PublishOptions};
use crate::model::sla::{
    ExpectationState, Fulfilment, NewExpectation, Sla, SlaBreached, SlaExpectation, SlaStatus,
};
use crate::ports::sla::{SlaStore, SlaStoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use std::any::Any;
use std::str::FromStr;
use std::sync::Arc;

/// The SLAs a runtime declared to an outbox (shared by its clones).
#[derive(Debug, Default)]
pub(crate) struct Declared(RwLock<Option<Arc<[Sla]>>>);

impl Declared {
    fn set(&self, slas: Arc<[Sla]>) {
        *self.0.write() = Some(slas);
    }

    /// The declared SLAs, if a runtime declared any.
    fn get(&self) -> Option<Arc<[Sla]>> {
        self.0.read().clone()
    }
}

/// What the outbox's publish does after writing a message's row, on the same connection (the
/// caller's transaction): an A opens the expectations of the declared SLAs, a B fulfils the open
/// ones of its key, at the message's time.
pub(crate) async fn record_in<D: Dialect>(
    declared: &Declared,
    conn: &mut D::Connection,
    envelope: &Envelope,
    // `Send + Sync`: held across the awaits of a publish, whose future must be `Send`.
    message: &(dyn Any + Send + Sync),
) -> Result<(), OutboxError> {
    let Some(slas) = declared.get() else {
        return Ok(());
    };
    let name = envelope.name.as_ref();
    for sla in slas.iter() {
        if sla.after() == name {
            if let Some(key) = sla.key_of_after(message) {
                let new = NewExpectation::new(sla, key, envelope.id, envelope.occurred_at);
                open_on::<D>(conn, &new).await?;
            }
        }
        if sla.expected_handler().is_none() && sla.expected_message() == name {
            if let Some(key) = sla.key_of_expected(message) {
                fulfil_on::<D>(conn, sla.name(), &key, envelope.id, envelope.occurred_at).await?;
            }
        }
    }
    Ok(())
}

/// Opens one expectation unless it exists; returns 1 when it is new.
async fn open_on<D: Dialect>(
    conn: &mut D::Connection,
    new: &NewExpectation,
) -> Result<u64, OutboxError> {
    let query = sqlx::query(D::statements().sla_open)
        .text(new.sla.clone())
        .free_text(Some(new.key.clone()))
        .message_id(new.a_message_id)
        .time(new.opened_at)
        .time(new.due_at);
    Ok(D::execute(conn, query).await?)
}

/// Fulfils the expectations of `sla` and `key` that take a fulfilment, each on time or late.
async fn fulfil_on<D: Dialect>(
    conn: &mut D::Connection,
    sla: &str,
    key: &str,
    by: MessageId,
    at: DateTime<Utc>,
) -> Result<Vec<Fulfilment>, OutboxError> {
    let sql = D::statements();
    let query = sqlx::query(sql.sla_of_key)
        .text(sla.to_owned())
        .free_text(Some(key.to_owned()));
    let rows = D::fetch_all(conn, query).await?;
    let mut moved = Vec::with_capacity(rows.len());
    for row in &rows {
        let id = D::get_int(row, "id")?;
        let a_message_id = message_id::<D>(row, "a_message_id")?;
        let state = state::<D>(row)?;
        let due_at = required_time::<D>(row, "due_at")?;
        let to = state.fulfilled_at(at, due_at);
        let update = sqlx::query(sql.sla_fulfil)
            .text(to.as_str().to_owned())
            .time(at)
            .message_id(by)
            .int(id);
        if D::execute(conn, update).await? == 1 {
            moved.push(Fulfilment::new(a_message_id, to));
        }
    }
    Ok(moved)
}

/// Writes the `SlaBreached` rows of `breaches` into the outbox on `conn` (the sweep's
/// transaction). Each names the A that opened its expectation as its causation.
pub(crate) async fn write_breaches<D: Dialect>(
    conn: &mut D::Connection,
    breaches: &[SlaBreached],
) -> Result<(), OutboxError> {
    if breaches.is_empty() {
        return Ok(());
    }
    let rows = breaches
        .iter()
        .map(|breach| {
            NewRow::new(
                breach,
                PublishOptions::new().causation_id(breach.a_message_id),
                // Never refused for its size: the event must not be lost.
                usize::MAX,
            )
            .map_err(|refused| match refused {
                super::RowRefused::Failed(error) => error,
                super::RowRefused::TooLarge { size, .. } => {
                    OutboxError::Corrupt(format!("an SlaBreached of {size} bytes"))
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    D::insert_all(conn, &rows).await
}

/// A breach as a sweep read it back from the expectation it marked.
pub(crate) fn breach<D: Dialect>(
    row: &D::Row,
    breached_at: Option<DateTime<Utc>>,
) -> Result<SlaBreached, OutboxError> {
    Ok(SlaBreached {
        sla: text::<D>(row, "sla")?,
        key: text::<D>(row, "correlation_key")?,
        a_message_id: message_id::<D>(row, "a_message_id")?,
        due_at: required_time::<D>(row, "due_at")?,
        breached_at: match breached_at {
            Some(at) => at,
            None => required_time::<D>(row, "breached_at")?,
        },
    })
}

fn text<D: Dialect>(row: &D::Row, column: &str) -> Result<String, OutboxError> {
    D::get_text(row, column)?
        .ok_or_else(|| OutboxError::Corrupt(format!("SLA column `{column}` is NULL")))
}

fn message_id<D: Dialect>(row: &D::Row, column: &str) -> Result<MessageId, OutboxError> {
    let text = text::<D>(row, column)?;
    MessageId::from_str(text.trim())
        .map_err(|e| OutboxError::Corrupt(format!("SLA column `{column}` holds `{text}`: {e}")))
}

fn optional_message_id<D: Dialect>(
    row: &D::Row,
    column: &str,
) -> Result<Option<MessageId>, OutboxError> {
    match D::get_text(row, column)? {
        None => Ok(None),
        Some(_) => message_id::<D>(row, column).map(Some),
    }
}

fn required_time<D: Dialect>(row: &D::Row, column: &str) -> Result<DateTime<Utc>, OutboxError> {
    D::get_time(row, column)?
        .ok_or_else(|| OutboxError::Corrupt(format!("SLA column `{column}` is NULL")))
}

fn state<D: Dialect>(row: &D::Row) -> Result<ExpectationState, OutboxError> {
    let word = text::<D>(row, "state")?;
    ExpectationState::parse(&word)
        .ok_or_else(|| OutboxError::Corrupt(format!("SLA state `{word}`")))
}

fn count<D: Dialect>(row: &D::Row, column: &str) -> Result<u64, OutboxError> {
    Ok(u64::try_from(D::get_int(row, column)?).unwrap_or(0))
}

fn store_error(context: &'static str) -> impl FnOnce(OutboxError) -> SlaStoreError {
    move |error| SlaStoreError::new(context, error)
}

impl<D: Dialect> SqlOutbox<D> {
    /// The SLA status of this outbox's database (see [`SlaStore::status`]); for tools that hold
    /// the outbox without a runtime (the console of `herald serve`).
    ///
    /// # Errors
    /// A database error.
    pub async fn sla_status(&self) -> Result<Vec<SlaStatus>, OutboxError> {
        let mut conn = self.pool().acquire().await?;
        let rows = D::fetch_all(&mut conn, sqlx::query(D::statements().sla_status)).await?;
        rows.iter()
            .map(|row| {
                let mut status = SlaStatus::new(text::<D>(row, "sla")?);
                for state in ExpectationState::ALL {
                    status.add(state, count::<D>(row, state.as_str())?);
                }
                status.next_due = D::get_time(row, "next_due")?;
                Ok(status)
            })
            .collect()
    }
}

#[async_trait]
impl<D: Dialect> SlaStore for SqlOutbox<D> {
    fn declare(&self, slas: Arc<[Sla]>) {
        self.declared().set(slas);
    }

    fn durable(&self) -> bool {
        true
    }

    async fn open(&self, expectations: &[NewExpectation]) -> Result<u64, SlaStoreError> {
        let opened: Result<u64, OutboxError> = async {
            let mut conn = self.pool().acquire().await?;
            let mut opened = 0;
            for new in expectations {
                opened += open_on::<D>(&mut conn, new).await?;
            }
            Ok(opened)
        }
        .await;
        opened.map_err(store_error("opening expectations"))
    }

    async fn fulfil(
        &self,
        sla: &str,
        key: &str,
        by: MessageId,
        at: DateTime<Utc>,
    ) -> Result<Vec<Fulfilment>, SlaStoreError> {
        let moved: Result<Vec<Fulfilment>, OutboxError> = async {
            let mut tx = self.pool().begin_with(D::statements().write_begin).await?;
            let moved = fulfil_on::<D>(&mut tx, sla, key, by, at).await?;
            tx.commit().await?;
            Ok(moved)
        }
        .await;
        moved.map_err(store_error("fulfilling expectations"))
    }

    async fn sweep(&self, limit: usize) -> Result<Vec<SlaBreached>, SlaStoreError> {
        D::sla_sweep(self.pool(), limit)
            .await
            .map_err(store_error("sweeping due expectations"))
    }

    fn delivers_breaches(&self) -> bool {
        true
    }

    async fn reopen(&self, breach: &SlaBreached) -> Result<(), SlaStoreError> {
        let reopened: Result<(), OutboxError> = async {
            let mut conn = self.pool().acquire().await?;
            let query = sqlx::query(D::statements().sla_reopen)
                .text(breach.sla.clone())
                .message_id(breach.a_message_id);
            D::execute(&mut conn, query).await?;
            Ok(())
        }
        .await;
        reopened.map_err(store_error("opening a breached expectation again"))
    }

    async fn status(&self) -> Result<Vec<SlaStatus>, SlaStoreError> {
        SqlOutbox::sla_status(self)
            .await
            .map_err(store_error("counting expectations"))
    }

    async fn expectation(
        &self,
        sla: &str,
        a_message_id: MessageId,
    ) -> Result<Option<SlaExpectation>, SlaStoreError> {
        let found: Result<Option<SlaExpectation>, OutboxError> = async {
            let mut conn = self.pool().acquire().await?;
            let query = sqlx::query(D::statements().sla_get)
                .text(sla.to_owned())
                .message_id(a_message_id);
            let Some(row) = D::fetch_optional(&mut conn, query).await? else {
                return Ok(None);
            };
            let new = NewExpectation {
                sla: text::<D>(&row, "sla")?,
                key: text::<D>(&row, "correlation_key")?,
                a_message_id: message_id::<D>(&row, "a_message_id")?,
                opened_at: required_time::<D>(&row, "opened_at")?,
                due_at: required_time::<D>(&row, "due_at")?,
            };
            let mut expectation = SlaExpectation::open(&new);
            expectation.state = state::<D>(&row)?;
            expectation.fulfilled_at = D::get_time(&row, "fulfilled_at")?;
            expectation.fulfilled_by = optional_message_id::<D>(&row, "fulfilled_by")?;
            expectation.breached_at = D::get_time(&row, "breached_at")?;
            Ok(Some(expectation))
        }
        .await;
        found.map_err(store_error("reading an expectation"))
    }
}
