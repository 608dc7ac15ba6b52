//! Slot lag: how far each replication slot's consumer is behind, how much WAL the slot keeps,
//! and whether anything consumes it at all. A slot nobody reads pins WAL until the disk fills.

use crate::error::CdcError;
use crate::lsn::Lsn;
use sqlx::PgPool;
use std::future::Future;
use std::time::Duration;

/// The `application_name` of a source's session: `herald-cdc:<slot>` (PostgreSQL keeps 63 bytes).
pub(crate) fn application_name(slot: &str) -> String {
    let mut name = format!("herald-cdc:{slot}");
    name.truncate(63);
    name
}

/// One replication slot, as `pg_replication_slots` and `pg_stat_activity` show it now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlotLag {
    /// The slot's name.
    pub slot: String,
    /// `logical` or `physical`.
    pub slot_type: String,
    /// The output plugin of a logical slot (`pgoutput` for herald-cdc's).
    pub plugin: Option<String>,
    /// The database of a logical slot.
    pub database: Option<String>,
    /// A session has the slot acquired right now (a walsender, or a peek running). A herald-cdc
    /// source reads through SQL calls, so its slot is active only during each call: see
    /// [`consumer_pid`](Self::consumer_pid).
    pub active: bool,
    /// The backend that has the slot acquired.
    pub active_pid: Option<i32>,
    /// The backend of the herald-cdc session reading this slot (the one holding the slot's
    /// advisory lock; its `application_name` is `herald-cdc:<slot>`), connected even between
    /// reads.
    pub consumer_pid: Option<i32>,
    /// The oldest WAL the slot needs: PostgreSQL keeps everything from here.
    pub restart_lsn: Option<Lsn>,
    /// How far the consumer confirmed (logical slots).
    pub confirmed_flush_lsn: Option<Lsn>,
    /// Bytes of WAL written since the confirmed position (`pg_current_wal_lsn() -
    /// confirmed_flush_lsn`): how far the consumer is behind. `None` for physical slots.
    pub lag_bytes: Option<u64>,
    /// Bytes of WAL the slot keeps on disk (`pg_current_wal_lsn() - restart_lsn`).
    pub retained_bytes: Option<u64>,
    /// `reserved`, `extended`, `unreserved` (at risk) or `lost` (changes are gone).
    pub wal_status: Option<String>,
}

impl SlotLag {
    /// Something reads the slot: it is active, or a herald-cdc session for it is connected.
    pub fn in_use(&self) -> bool {
        self.active || self.consumer_pid.is_some()
    }

    /// Nothing reads the slot, and it keeps WAL: abandoned, unless its consumer is only
    /// restarting.
    pub fn abandoned(&self) -> bool {
        !self.in_use()
    }

    /// What an operator must know, if anything: the slot lost its WAL, is about to, or has no
    /// consumer and pins WAL. Each says what to do.
    pub fn warning(&self) -> Option<String> {
        let slot = &self.slot;
        let retained = self.retained_bytes.unwrap_or_default();
        match self.wal_status.as_deref() {
            Some("lost") => {
                return Some(format!(
                    "replication slot `{slot}` has lost WAL it needed (wal_status = lost): its consumer cannot resume. Drop it (SELECT pg_drop_replication_slot('{slot}')) and resynchronise its consumer"
                ))
            }
            Some("unreserved") => {
                return Some(format!(
                    "replication slot `{slot}` keeps {retained} bytes of WAL, past max_slot_wal_keep_size (wal_status = unreserved): the WAL will be removed at the next checkpoint unless its consumer catches up"
                ))
            }
            _ => {}
        }
        if self.abandoned() {
            return Some(format!(
                "replication slot `{slot}` has no consumer (not active, no herald-cdc session) and keeps {retained} bytes of WAL that PostgreSQL cannot remove ({} bytes behind). Start its consumer, or if it is gone for good drop the slot: SELECT pg_drop_replication_slot('{slot}')",
                self.lag_bytes.unwrap_or(retained)
            ));
        }
        None
    }
}

const SLOTS: &str = r#"
WITH here AS (
    SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END AS lsn
)
SELECT s.slot_name::text,
       s.slot_type::text,
       s.plugin::text,
       s.database::text,
       s.active,
       s.active_pid,
       (SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
           AND l.classid = hashtext('herald.cdc')::oid AND l.objid = hashtext(s.slot_name)::oid
           AND d.datname = s.database
         LIMIT 1) AS consumer_pid,
       s.restart_lsn::text,
       s.confirmed_flush_lsn::text,
       pg_wal_lsn_diff(here.lsn, s.confirmed_flush_lsn)::bigint AS lag_bytes,
       pg_wal_lsn_diff(here.lsn, s.restart_lsn)::bigint AS retained_bytes,
       s.wal_status::text
  FROM pg_replication_slots s, here
 WHERE $1::text IS NULL OR s.slot_name = $1
 ORDER BY s.slot_name
"#;

type SlotRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    bool,
    Option<i32>,
    Option<i32>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

async fn read(pool: &PgPool, slot: Option<&str>) -> Result<Vec<SlotLag>, CdcError> {
    let rows: Vec<SlotRow> = sqlx::query_as(SLOTS).bind(slot).fetch_all(pool).await?;
    let lsn = |text: Option<String>| -> Result<Option<Lsn>, CdcError> {
        text.map(|t| t.parse::<Lsn>())
            .transpose()
            .map_err(|e| CdcError::Database(sqlx::Error::Decode(Box::new(e))))
    };
    let bytes = |n: Option<i64>| n.map(|n| u64::try_from(n).unwrap_or(0));
    rows.into_iter()
        .map(|row| {
            Ok(SlotLag {
                slot: row.0,
                slot_type: row.1,
                plugin: row.2,
                database: row.3,
                active: row.4,
                active_pid: row.5,
                consumer_pid: row.6,
                restart_lsn: lsn(row.7)?,
                confirmed_flush_lsn: lsn(row.8)?,
                lag_bytes: bytes(row.9),
                retained_bytes: bytes(row.10),
                wal_status: row.11,
            })
        })
        .collect()
}

/// Every replication slot of the server (logical and physical, every database).
///
/// # Errors
/// A database error.
pub async fn slots(pool: &PgPool) -> Result<Vec<SlotLag>, CdcError> {
    read(pool, None).await
}

/// One slot.
///
/// # Errors
/// [`CdcError::NoSlot`] when there is no such slot; a database error.
pub async fn slot_lag(pool: &PgPool, slot: &str) -> Result<SlotLag, CdcError> {
    read(pool, Some(slot))
        .await?
        .pop()
        .ok_or_else(|| CdcError::NoSlot {
            slot: slot.to_owned(),
        })
}

/// Sets the slot gauges of the `metrics` facade for these readings:
/// `herald_cdc_slot_lag_bytes{slot}`, `herald_cdc_slot_retained_bytes{slot}`,
/// `herald_cdc_slot_in_use{slot}` (1 or 0) and `herald_cdc_slot_abandoned{slot}` (1 or 0).
/// Export them with any recorder (`herald_web::metrics` serves them on `/metrics`).
pub fn record_metrics(readings: &[SlotLag]) {
    for reading in readings {
        let slot = reading.slot.clone();
        if let Some(lag) = reading.lag_bytes {
            metrics::gauge!("herald_cdc_slot_lag_bytes", "slot" => slot.clone()).set(lag as f64);
        }
        if let Some(retained) = reading.retained_bytes {
            metrics::gauge!("herald_cdc_slot_retained_bytes", "slot" => slot.clone())
                .set(retained as f64);
        }
        metrics::gauge!("herald_cdc_slot_in_use", "slot" => slot.clone())
            .set(if reading.in_use() { 1.0 } else { 0.0 });
        metrics::gauge!("herald_cdc_slot_abandoned", "slot" => slot).set(if reading.abandoned() {
            1.0
        } else {
            0.0
        });
    }
}

/// Describes this crate's metrics to the installed recorder (units and help texts).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_gauge!(
        "herald_cdc_slot_lag_bytes",
        Unit::Bytes,
        "WAL written since the slot's confirmed position: how far its consumer is behind"
    );
    describe_gauge!(
        "herald_cdc_slot_retained_bytes",
        Unit::Bytes,
        "WAL the slot keeps on disk (from its restart_lsn)"
    );
    describe_gauge!(
        "herald_cdc_slot_in_use",
        "1 when the slot is active or a herald-cdc session reads it"
    );
    describe_gauge!(
        "herald_cdc_slot_abandoned",
        "1 when nothing reads the slot: it pins WAL; start its consumer or drop it"
    );
    describe_counter!(
        "herald_cdc_changes_total",
        "Changes delivered to the handlers, by slot and operation"
    );
    describe_counter!(
        "herald_cdc_transactions_total",
        "Committed transactions read from the slot"
    );
    describe_counter!(
        "herald_cdc_replayed_total",
        "Changes read again after a restart and skipped: at or before the stored position"
    );
    describe_counter!(
        "herald_cdc_dead_lettered_total",
        "Changes a handler failed for good (dead-lettered, logged or ignored as it says)"
    );
    describe_counter!(
        "herald_cdc_reconnects_total",
        "CDC sessions lost and opened again"
    );
}

/// Samples every slot each `interval` until `stop` resolves: sets the gauges
/// ([`record_metrics`]) and logs each slot's [`warning`](SlotLag::warning) at warn level.
/// Errors are logged and the next sample tries again.
pub async fn watch(pool: PgPool, interval: Duration, stop: impl Future<Output = ()>) {
    let mut stop = std::pin::pin!(stop);
    loop {
        match slots(&pool).await {
            Ok(readings) => {
                record_metrics(&readings);
                for warning in readings.iter().filter_map(SlotLag::warning) {
                    tracing::warn!("{warning}");
                }
            }
            Err(error) => tracing::error!(%error, "replication slots could not be read"),
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Drops a replication slot (it must not be active) and the positions stored for it. Do it for
/// a slot whose consumer is gone for good: it pins WAL until dropped.
///
/// # Errors
/// [`CdcError::NoSlot`] when there is no such slot; a database error (e.g. the slot is active:
/// stop its consumer first).
pub async fn drop_slot(pool: &PgPool, slot: &str) -> Result<(), CdcError> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
    )
    .bind(slot)
    .fetch_one(pool)
    .await?;
    if !exists {
        return Err(CdcError::NoSlot {
            slot: slot.to_owned(),
        });
    }
    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(slot)
        .execute(pool)
        .await?;
    let has_positions: bool =
        sqlx::query_scalar("SELECT to_regclass('herald_cdc_position') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    if has_positions {
        sqlx::query("DELETE FROM herald_cdc_position WHERE slot_name = $1")
            .bind(slot)
            .execute(pool)
            .await?;
        sqlx::query("DELETE FROM herald_cdc_skipped WHERE slot_name = $1")
            .bind(slot)
            .execute(pool)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading() -> SlotLag {
        SlotLag {
            slot: "orders".into(),
            slot_type: "logical".into(),
            plugin: Some("pgoutput".into()),
            database: Some("app".into()),
            active: false,
            active_pid: None,
            consumer_pid: None,
            restart_lsn: Some(Lsn(100)),
            confirmed_flush_lsn: Some(Lsn(200)),
            lag_bytes: Some(300),
            retained_bytes: Some(400),
            wal_status: Some("reserved".into()),
        }
    }

    #[test]
    fn an_abandoned_slot_is_named_with_the_fix() {
        let abandoned = reading();
        assert!(abandoned.abandoned());
        let warning = abandoned.warning().expect("warning");
        assert!(warning.contains("no consumer"), "{warning}");
        assert!(warning.contains("400 bytes"), "{warning}");
        assert!(
            warning.contains("SELECT pg_drop_replication_slot('orders')"),
            "{warning}"
        );

        let read_by_herald = SlotLag {
            consumer_pid: Some(42),
            ..reading()
        };
        assert!(read_by_herald.in_use() && read_by_herald.warning().is_none());

        let lost = SlotLag {
            consumer_pid: Some(42),
            wal_status: Some("lost".into()),
            ..reading()
        };
        assert!(lost.warning().expect("lost").contains("lost WAL"));
        let unreserved = SlotLag {
            active: true,
            wal_status: Some("unreserved".into()),
            ..reading()
        };
        assert!(unreserved
            .warning()
            .expect("at risk")
            .contains("max_slot_wal_keep_size"));
    }

    #[test]
    fn application_names_fit_postgresql() {
        assert_eq!(application_name("orders"), "herald-cdc:orders");
        assert_eq!(application_name(&"x".repeat(63)).len(), 63);
    }
}
