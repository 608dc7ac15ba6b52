//! Change data capture from PostgreSQL for [Herald](https://docs.rs/herald): the rows your
//! application commits become [`Change`] messages (`herald.cdc.change`), delivered in commit order
//! to Herald's handlers and routes, with a position stored so that a restart resumes where
//! processing stopped.
//!
//! **How changes are read.** PostgreSQL's logical decoding with its built-in `pgoutput` plugin, on
//! a logical replication slot, through the SQL functions `pg_logical_slot_peek_binary_changes`
//! and `pg_replication_slot_advance` over an ordinary connection (sqlx). No replication-protocol
//! client is needed, the plugin ships with every PostgreSQL, and the slot is confirmed only by an
//! explicit call, after the position is stored. The binary `pgoutput` messages are decoded here
//! (a small, tested module). Logical decoding emits committed transactions only, whole and in
//! commit order: a rolled-back transaction is never seen.
//!
//! ```no_run
//! use herald_cdc::{CdcPosition, CdcSource, Change, Operation};
//! use herald_core::{HandlerError, Herald};
//!
//! // #[async_handler]
//! async fn mirror_orders(change: Change, position: CdcPosition) -> Result<(), HandlerError> {
//!     let mut tx = position.begin().await?; // Err(duplicate) if already applied
//!     if change.op == Operation::Insert {
//!         sqlx::query("INSERT INTO order_feed (order_id) VALUES ($1)")
//!             .bind(change.new_value("id").and_then(|v| v.as_i64()))
//!             .execute(&mut *tx)
//!             .await?;
//!     }
//!     tx.commit().await?; // the effect and the position, together
//!     Ok(())
//! }
//!
//! # async fn run(herald: Herald, pool: sqlx::PgPool) -> Result<(), herald_cdc::CdcError> {
//! // `herald` has the handler above and the pool as state (`.state(pool.clone())`).
//! let source = CdcSource::builder(&herald, pool)
//!     .slot("orders_cdc")
//!     .publication("orders_pub")
//!     .tables(["public.orders"])
//!     .build()
//!     .await?;
//! source.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! **Positions.** The source delivers one change at a time and stores its own position
//! (`herald_cdc_position`) after every handler finished the change; it confirms the slot after
//! that. A handler that takes a [`CdcPosition`] stores *its* position in the transaction of its
//! effects, so a change delivered again after a crash (at most the one in flight) is recognised
//! and its effect is not repeated. After a restart the source reads from the slot and skips the
//! changes at or before its stored position.
//!
//! **Lag.** [`lag::slots`] and [`CdcSource::lag`] read each slot's lag in bytes and whether
//! anything consumes it; [`lag::record_metrics`] and [`lag::watch`] put them into the `metrics`
//! facade, with a warning for an abandoned slot (it pins WAL). See `docs/CDC.md` for setting up
//! PostgreSQL (`wal_level = logical`), publications, `REPLICA IDENTITY`, and dropping slots.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod assemble;
mod change;
mod error;
pub mod lag;
mod lsn;
mod pgoutput;
mod position;
mod source;

pub use change::{
    change_id, Change, Operation, ReplicaIdentity, Row, CHANGE, LSN_HEADER, SEQ_HEADER,
    SLOT_HEADER, TABLE_HEADER,
};
pub use error::CdcError;
pub use lag::{drop_slot, SlotLag};
pub use lsn::{InvalidLsn, Lsn};
pub use pgoutput::DecodeError;
pub use position::{migrate, CdcPosition, SOURCE_CONSUMER};
pub use source::{CdcSource, CdcSourceBuilder, PollReport, SourceStats};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CdcSource>();
        assert_send_sync::<CdcSourceBuilder>();
        assert_send_sync::<CdcPosition>();
        assert_send_sync::<Change>();
        assert_send_sync::<CdcError>();
        assert_send_sync::<SlotLag>();
        assert_send_sync::<PollReport>();
        assert_send_sync::<SourceStats>();
        assert_send_sync::<Lsn>();
        assert_send_sync::<DecodeError>();
    }

    #[test]
    fn the_change_message_is_registered() {
        let names: Vec<&str> = inventory::iter::<herald_core::MessageDescriptor>
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert!(names.contains(&CHANGE), "{names:?}");
    }
}
