//! Every backend through the conformance kit. **Adding a backend is one line per suite here** (and
//! its `make_*` functions below): `dead_letter_suite!(mysql_dead_letters, make_mysql_dead_letters);`
//! and `source_suite!(mysql, make_mysql_source);`; a broker adds `pubsub_suite!` too (its harness,
//! in `brokers/`, is shared with `restarts.rs`).
//!
//! The SQL backends run on the machine's real servers: SQLite in a temporary file, PostgreSQL at
//! `HERALD_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`), one schema per
//! case; Redis at `HERALD_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`), one stream per case;
//! RabbitMQ at `HERALD_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`), one
//! queue per case; NATS JetStream at `HERALD_TEST_NATS_URL` (default `nats://127.0.0.1:4222`), one
//! stream per case; Kafka at `HERALD_TEST_KAFKA_BROKERS` (default `127.0.0.1:9092`, tansu in CI)
//! and on librdkafka's in-process `MockCluster`, one topic per case.
//! A missing server fails the cases, never skips them.

mod brokers;

use brokers::*;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
use herald::outbox::RelayBuilder;
use herald::InMemoryDeadLetters;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
use herald::{Herald, HeraldBuilder, Message, MessageId, PublishOptions};
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
use herald_conformance::source::{BoxError, SourceHarness};
use herald_conformance::{dead_letter_suite, pubsub_suite, source_suite};

// --- the list ------------------------------------------------------------------------------------

dead_letter_suite!(in_memory_dead_letters, make_in_memory_dead_letters);
#[cfg(feature = "sqlite")]
dead_letter_suite!(sqlite_dead_letters, sqlite::make_dead_letters);
#[cfg(feature = "postgres")]
dead_letter_suite!(postgres_dead_letters, postgres::make_dead_letters);
#[cfg(feature = "mysql")]
dead_letter_suite!(mysql_dead_letters, mysql::make_dead_letters);

source_suite!(memory, make_memory_source);
#[cfg(feature = "sqlite")]
source_suite!(sqlite_outbox, sqlite::make_source);
#[cfg(feature = "postgres")]
source_suite!(postgres_outbox, postgres::make_source);
#[cfg(feature = "mysql")]
source_suite!(mysql_outbox, mysql::make_source);
#[cfg(feature = "redis")]
source_suite!(redis, redis_streams::make_source);
#[cfg(feature = "rabbitmq")]
source_suite!(rabbitmq, rabbit_queues::make_source);
#[cfg(feature = "nats")]
source_suite!(nats, nats_jetstream::make_source);
#[cfg(feature = "kafka")]
source_suite!(kafka, kafka_topics::make_source);
#[cfg(feature = "kafka")]
source_suite!(kafka_mock, kafka_topics::make_mock_source);

pubsub_suite!(memory_pubsub, make_memory_pubsub);
#[cfg(feature = "redis")]
pubsub_suite!(
    redis_pubsub,
    make_pubsub::<herald_transport_redis::RedisStreams>
);
#[cfg(feature = "rabbitmq")]
pubsub_suite!(
    rabbitmq_pubsub,
    make_pubsub::<herald_transport_rabbitmq::RabbitMq>
);
#[cfg(feature = "nats")]
pubsub_suite!(
    nats_pubsub,
    make_pubsub::<herald_transport_nats::NatsJetStream>
);
#[cfg(feature = "kafka")]
pubsub_suite!(kafka_pubsub, make_pubsub::<herald_transport_kafka::Kafka>);
#[cfg(feature = "kafka")]
pubsub_suite!(kafka_mock_pubsub, make_mock_kafka_pubsub);

// --- in memory -----------------------------------------------------------------------------------

async fn make_in_memory_dead_letters(_case: &'static str) -> InMemoryDeadLetters {
    InMemoryDeadLetters::default()
}

// --- the SQL outboxes: one harness for every dialect ----------------------------------------------

/// A SQL outbox as a source: published in a transaction of its own, relayed by its relay.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
struct SqlHarness<D: herald::outbox::Dialect> {
    /// Keeps a SQLite file for as long as the case runs.
    _dir: Option<tempfile::TempDir>,
    pool: herald::sqlx::Pool<D>,
    outbox: herald::outbox::SqlOutbox<D>,
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
impl<D: herald::outbox::Dialect> SqlHarness<D> {
    async fn new(dir: Option<tempfile::TempDir>, pool: herald::sqlx::Pool<D>) -> Self {
        let outbox = herald::outbox::SqlOutbox::new(pool.clone())
            .await
            .expect("migrate");
        SqlHarness {
            _dir: dir,
            pool,
            outbox,
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
impl<D: herald::outbox::Dialect> SourceHarness for SqlHarness<D> {
    fn configure(&self, builder: HeraldBuilder) -> HeraldBuilder {
        builder.dead_letters(self.outbox.dead_letters())
    }

    fn relay(&self, herald: &Herald) -> RelayBuilder {
        self.outbox.relay(herald)
    }

    async fn publish<M: Message>(
        &self,
        message: M,
        options: PublishOptions,
    ) -> Result<MessageId, BoxError> {
        let mut conn = self.pool.acquire().await?;
        Ok(self
            .outbox
            .publish_with(&mut conn, message, options)
            .await?)
    }

    async fn unfinished(&self) -> Result<u64, BoxError> {
        Ok(self.outbox.status().await?.pending)
    }
}

// --- SQLite --------------------------------------------------------------------------------------

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use herald::outbox::{self, SqliteOutbox};
    use herald::SqliteDeadLetters;

    async fn open(case: &str) -> (tempfile::TempDir, herald::sqlx::SqlitePool, SqliteOutbox) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let pool = outbox::sqlite::connect(dir.path().join(format!("{case}.db")))
            .await
            .expect("open SQLite");
        let outbox = SqliteOutbox::new(pool.clone()).await.expect("migrate");
        (dir, pool, outbox)
    }

    pub(super) async fn make_dead_letters(case: &'static str) -> SqliteDeadLetters {
        let (dir, _pool, outbox) = open(case).await;
        // The store outlives this function: keep its file for the rest of the run.
        let _kept = dir.keep();
        outbox.dead_letters()
    }

    pub(super) async fn make_source(case: &'static str) -> SqlHarness<herald::sqlx::Sqlite> {
        let (dir, pool, _outbox) = open(case).await;
        SqlHarness::new(Some(dir), pool).await
    }
}

// --- PostgreSQL ----------------------------------------------------------------------------------

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use herald::outbox::PgOutbox;
    use herald::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use herald::sqlx::{self, PgPool};
    use herald::PgDeadLetters;
    use std::hash::{DefaultHasher, Hash, Hasher};
    use std::str::FromStr;

    fn database_url() -> String {
        std::env::var("HERALD_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    /// A fresh schema for one case of one suite (case names are longer than PostgreSQL's 63-byte
    /// identifiers: the schema is named by a hash of them).
    async fn pool_for(suite: &str, case: &str) -> PgPool {
        let mut hasher = DefaultHasher::new();
        (suite, case).hash(&mut hasher);
        let schema = format!("herald_cf_{:016x}", hasher.finish());
        let url = database_url();
        let options = PgConnectOptions::from_str(&url).expect("valid HERALD_TEST_DATABASE_URL");
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is required for these tests: {e}"));
        sqlx::raw_sql(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
        ))
        .execute(&admin)
        .await
        .expect("create schema");
        admin.close().await;
        PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options.options([("search_path", schema.as_str())]))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is required for these tests: {e}"))
    }

    pub(super) async fn make_dead_letters(case: &'static str) -> PgDeadLetters {
        let pool = pool_for("dead_letters", case).await;
        PgOutbox::new(pool).await.expect("migrate").dead_letters()
    }

    pub(super) async fn make_source(case: &'static str) -> SqlHarness<herald::sqlx::Postgres> {
        SqlHarness::new(None, pool_for("source", case).await).await
    }
}

// --- MySQL / MariaDB -----------------------------------------------------------------------------

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;
    use herald::outbox::MySqlOutbox;
    use herald::sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
    use herald::sqlx::{self, MySqlPool};
    use herald::MySqlDeadLetters;
    use std::hash::{DefaultHasher, Hash, Hasher};
    use std::str::FromStr;

    fn database_url() -> String {
        std::env::var("HERALD_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
    }

    /// A fresh database for one case of one suite, named by a hash of both (MySQL's identifiers
    /// are at most 64 characters).
    async fn pool_for(suite: &str, case: &str) -> MySqlPool {
        let mut hasher = DefaultHasher::new();
        (suite, case).hash(&mut hasher);
        let url = database_url();
        let options = MySqlConnectOptions::from_str(&url).expect("valid HERALD_TEST_MYSQL_URL");
        let base = options.get_database().unwrap_or("test").to_owned();
        let name = format!("{base}_cf_{:016x}", hasher.finish());
        let admin = MySqlPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .unwrap_or_else(|e| panic!("MySQL/MariaDB at {url} is required for these tests: {e}"));
        sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}`"
        ))
        .execute(&admin)
        .await
        .expect("create database");
        admin.close().await;
        MySqlPoolOptions::new()
            .max_connections(8)
            .connect_with(options.database(&name))
            .await
            .unwrap_or_else(|e| panic!("MySQL/MariaDB at {url} is required for these tests: {e}"))
    }

    pub(super) async fn make_dead_letters(case: &'static str) -> MySqlDeadLetters {
        let pool = pool_for("dead_letters", case).await;
        MySqlOutbox::new(pool)
            .await
            .expect("migrate")
            .dead_letters()
    }

    pub(super) async fn make_source(case: &'static str) -> SqlHarness<herald::sqlx::MySql> {
        SqlHarness::new(None, pool_for("source", case).await).await
    }
}
