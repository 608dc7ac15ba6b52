//! Herald's versioned schema. Herald keeps its own version table (`herald_schema`) rather than
//! sqlx's `_sqlx_migrations`, so that it never collides with the application's own migrations in
//! the same database.

/// The table that records which Herald schema versions are applied.
pub const MIGRATIONS_TABLE: &str = "herald_schema";

/// One schema version, for every SQL dialect: the same number means the same change everywhere.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version number, from 1, applied in order.
    pub version: i64,
    /// What it changes.
    pub description: &'static str,
    /// The SQL for SQLite.
    pub sqlite: &'static str,
    /// The SQL for PostgreSQL.
    pub postgres: &'static str,
    /// The SQL for MySQL and MariaDB. Their DDL commits as it goes, so each script can run again
    /// after a failure (`IF NOT EXISTS`).
    pub mysql: &'static str,
}

/// Every version this build of Herald ships, oldest first.
// Only the SQL backends apply migrations.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(dead_code)
)]
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "outbox, dead letters, inbox",
        sqlite: include_str!("../../../migrations/sqlite/0001_outbox.sql"),
        postgres: include_str!("../../../migrations/postgres/0001_outbox.sql"),
        mysql: include_str!("../../../migrations/mysql/0001_outbox.sql"),
    },
    Migration {
        version: 2,
        description: "relay tuning: key index without keyless rows, fillfactor for HOT leases",
        sqlite: include_str!("../../../migrations/sqlite/0002_claim_tuning.sql"),
        postgres: include_str!("../../../migrations/postgres/0002_claim_tuning.sql"),
        mysql: include_str!("../../../migrations/mysql/0002_claim_tuning.sql"),
    },
    Migration {
        version: 3,
        description: "dead letters: failure kind; PostgreSQL: text for JSON that jsonb refuses",
        sqlite: include_str!("../../../migrations/sqlite/0003_dead_letter_failure.sql"),
        postgres: include_str!("../../../migrations/postgres/0003_dead_letter_failure.sql"),
        mysql: include_str!("../../../migrations/mysql/0003_dead_letter_failure.sql"),
    },
    Migration {
        version: 4,
        description: "deadline SLA expectations",
        sqlite: include_str!("../../../migrations/sqlite/0004_slas.sql"),
        postgres: include_str!("../../../migrations/postgres/0004_slas.sql"),
        mysql: include_str!("../../../migrations/mysql/0004_slas.sql"),
    },
    Migration {
        version: 5,
        description:
            "SQLite: the outbox status check as comparisons (an IN list cost every update)",
        sqlite: include_str!("../../../migrations/sqlite/0005_status_check.sql"),
        postgres: include_str!("../../../migrations/postgres/0005_status_check.sql"),
        mysql: include_str!("../../../migrations/mysql/0005_status_check.sql"),
    },
];

/// The newest version this build ships.
// Only the SQL backends apply migrations.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(dead_code)
)]
pub(crate) fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}
