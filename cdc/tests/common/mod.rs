//! What the CDC tests share: the server, unique names, and a guard that drops each test's slot
//! (a forgotten slot pins WAL on the shared server), publication and tables, even on panic.
//!
//! The server is `HERALD_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`)
//! with `wal_level = logical`. These tests fail, never skip, when it is missing.

#![allow(dead_code, unreachable_pub)]

use herald::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use herald::sqlx::{self, PgPool};
use herald::Herald;
use herald_cdc::{CdcSource, CdcSourceBuilder, Change};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn database_url() -> String {
    std::env::var("HERALD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub async fn pool() -> PgPool {
    let url = database_url();
    let options = PgConnectOptions::from_str(&url).expect("valid HERALD_TEST_DATABASE_URL");
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {url} (HERALD_TEST_DATABASE_URL) is required for these tests: {e}"
            )
        });
    let wal_level: String = sqlx::query_scalar("SHOW wal_level")
        .fetch_one(&pool)
        .await
        .expect("wal_level");
    assert_eq!(
        wal_level, "logical",
        "the CDC tests need wal_level = logical on {url}: ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL (.ci/run does it)"
    );
    pool
}

/// A name no other test (in this or another process) uses: `<prefix>_<pid>_<n>_<nanos>`.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}_{}_{}_{nanos:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A test's slot, publication and tables; dropped at the end of the test, also on panic.
pub struct Fixture {
    pub pool: PgPool,
    pub slot: String,
    pub publication: String,
    /// The tables, by the suffix given to [`Fixture::new`].
    pub tables: Vec<String>,
}

impl Fixture {
    /// Creates the tables `<unique>_<suffix> (<columns>)`; the publication and the slot are made
    /// by the source's `build` (or by [`Fixture::from_names`]'s owner).
    pub async fn new(name: &str, tables: &[(&str, &str)]) -> Fixture {
        let base = unique(&format!("cdc_{name}"));
        let fixture = Fixture {
            pool: pool().await,
            slot: format!("{base}_slot"),
            publication: format!("{base}_pub"),
            tables: tables
                .iter()
                .map(|(suffix, _)| format!("{base}_{suffix}"))
                .collect(),
        };
        for ((_, columns), table) in tables.iter().zip(&fixture.tables) {
            sqlx::query(&format!("CREATE TABLE {table} ({columns})"))
                .execute(&fixture.pool)
                .await
                .expect("create table");
        }
        fixture
    }

    /// The names of a fixture another process owns (the guard stays with the owner).
    pub async fn from_names(slot: &str, publication: &str, tables: &[String]) -> Borrowed {
        Borrowed {
            pool: pool().await,
            slot: slot.to_owned(),
            publication: publication.to_owned(),
            tables: tables.to_vec(),
        }
    }

    pub fn table(&self, i: usize) -> &str {
        &self.tables[i]
    }

    /// A source builder for this fixture's slot and publication over every table.
    pub fn source(&self, herald: &Herald) -> CdcSourceBuilder {
        CdcSource::builder(herald, self.pool.clone())
            .slot(&self.slot)
            .publication(&self.publication)
            .tables(self.tables.iter().map(|t| format!("public.{t}")))
            .idle_wait(Duration::from_millis(50))
    }

    pub async fn exec(&self, sql: &str) {
        sqlx::raw_sql(sql)
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// A fixture's names without the guard (a child process).
pub struct Borrowed {
    pub pool: PgPool,
    pub slot: String,
    pub publication: String,
    pub tables: Vec<String>,
}

impl Borrowed {
    pub fn source(&self, herald: &Herald) -> CdcSourceBuilder {
        CdcSource::builder(herald, self.pool.clone())
            .slot(&self.slot)
            .publication(&self.publication)
            .idle_wait(Duration::from_millis(50))
            .create_slot(false)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let (slot, publication, tables) = (
            self.slot.clone(),
            self.publication.clone(),
            self.tables.clone(),
        );
        // The test's runtime may be unwinding: clean up on a runtime of our own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(cleanup(&slot, &publication, &tables))
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!(
                "!! could not drop replication slot `{}` ({error}): it pins WAL on the shared server; drop it by hand: SELECT pg_drop_replication_slot('{}')",
                self.slot, self.slot
            ),
            Err(_) => eprintln!("!! the cleanup of slot `{}` panicked", self.slot),
        }
    }
}

async fn cleanup(slot: &str, publication: &str, tables: &[String]) -> Result<(), String> {
    let options = PgConnectOptions::from_str(&database_url()).map_err(|e| e.to_string())?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|e| e.to_string())?;
    // The source's session (a source task still running when the test ended) and whoever has
    // the slot acquired.
    let _ = sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = left('herald-cdc:' || $1, 63)",
    )
    .bind(slot)
    .execute(&pool)
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut result = Ok(());
    loop {
        let dropped = sqlx::query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(slot)
        .execute(&pool)
        .await;
        match dropped {
            Ok(_) => break,
            Err(error) if Instant::now() < deadline => {
                let _ = sqlx::query(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
                )
                .bind(slot)
                .execute(&pool)
                .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = error;
            }
            Err(error) => {
                result = Err(error.to_string());
                break;
            }
        }
    }
    let _ = sqlx::raw_sql(&format!("DROP PUBLICATION IF EXISTS {publication}"))
        .execute(&pool)
        .await;
    for table in tables {
        let _ = sqlx::raw_sql(&format!("DROP TABLE IF EXISTS {table} CASCADE"))
            .execute(&pool)
            .await;
    }
    let _ = sqlx::query("DELETE FROM herald_cdc_position WHERE slot_name = $1")
        .bind(slot)
        .execute(&pool)
        .await;
    let _ = sqlx::query("DELETE FROM herald_cdc_skipped WHERE slot_name = $1")
        .bind(slot)
        .execute(&pool)
        .await;
    pool.close().await;
    result
}

/// The changes a handler saw, in the order it saw them.
#[derive(Clone, Default, Debug)]
pub struct Seen(pub Arc<Mutex<Vec<Change>>>);

impl Seen {
    pub fn push(&self, change: Change) {
        self.0.lock().expect("seen").push(change);
    }

    pub fn all(&self) -> Vec<Change> {
        self.0.lock().expect("seen").clone()
    }

    /// The `column` of each change's new row (or old row for deletes).
    pub fn values(&self, column: &str) -> Vec<serde_json::Value> {
        self.all()
            .iter()
            .map(|c| {
                c.new_value(column)
                    .or_else(|| c.old_value(column))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// Waits until `check` holds (polling), or panics with `what`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
