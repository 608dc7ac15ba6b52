//! Every backend through the conformance kit. **Adding a backend is one line per suite here** (and
//! its `make_*` functions below): `dead_letter_suite!(mysql_dead_letters, make_mysql_dead_letters);`
//! and `source_suite!(mysql, make_mysql_source);`.
//!
//! The SQL backends run on the machine's real servers: SQLite in a temporary file, PostgreSQL at
//! `HERALD_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`), one schema per
//! case; Redis at `HERALD_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`), one stream per case;
//! RabbitMQ at `HERALD_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`), one
//! queue per case; NATS JetStream at `HERALD_TEST_NATS_URL` (default `nats://127.0.0.1:4222`), one
//! stream per case.
//! A missing server fails the cases, never skips them.

use herald::outbox::{Relay, RelayBuilder};
use herald::ports::{MessageSink, MessageSource, OutgoingMessage};
use herald::{Herald, HeraldBuilder, InMemoryDeadLetters, Message, MessageId, PublishOptions};
use herald_conformance::source::{BoxError, SourceHarness};
use herald_conformance::{dead_letter_suite, source_suite};
use herald_transport_memory::MemoryBroker;
use std::sync::Arc;

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

// --- in memory -----------------------------------------------------------------------------------

async fn make_in_memory_dead_letters(_case: &'static str) -> InMemoryDeadLetters {
    InMemoryDeadLetters::default()
}

/// A broker transport as the kit drives it: its own sink and source, how much it still holds, and
/// what to clean up after a case.
trait Broker: MessageSink + MessageSource + Clone {
    /// What the broker says in an error when it did not confirm a publish.
    const NAME: &'static str;

    /// Messages the broker still holds unfinished (ready, held, or waiting for a retry).
    fn unfinished(&self) -> impl std::future::Future<Output = Result<u64, BoxError>> + Send;

    /// Called when the case's harness is dropped (for a broker that keeps what a case made).
    fn clean_up(&self) {}
}

/// Any broker transport: published through its sink, relayed from its source.
struct BrokerHarness<B: Broker>(B);

impl<B: Broker> Drop for BrokerHarness<B> {
    fn drop(&mut self) {
        self.0.clean_up();
    }
}

impl<B: Broker> SourceHarness for BrokerHarness<B> {
    fn configure(&self, builder: HeraldBuilder) -> HeraldBuilder {
        builder
    }

    fn relay(&self, herald: &Herald) -> RelayBuilder {
        Relay::builder(Arc::new(self.0.clone()), herald)
    }

    async fn publish<M: Message>(
        &self,
        message: M,
        options: PublishOptions,
    ) -> Result<MessageId, BoxError> {
        let outgoing = OutgoingMessage::new(&message, options)?;
        let id = outgoing.envelope.id;
        let confirmations = self.0.publish(vec![outgoing]).await?;
        match confirmations.first() {
            Some(confirmation) if confirmation.is_confirmed() => Ok(id),
            other => Err(format!("{} did not confirm: {other:?}", B::NAME).into()),
        }
    }

    async fn unfinished(&self) -> Result<u64, BoxError> {
        self.0.unfinished().await
    }
}

impl Broker for MemoryBroker {
    const NAME: &'static str = "the in-memory broker";

    async fn unfinished(&self) -> Result<u64, BoxError> {
        Ok(self.pending() as u64)
    }
}

async fn make_memory_source(_case: &'static str) -> BrokerHarness<MemoryBroker> {
    BrokerHarness(MemoryBroker::new())
}

// --- Redis Streams -------------------------------------------------------------------------------

/// Redis Streams at `HERALD_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`), one stream per case.
#[cfg(feature = "redis")]
mod redis_streams {
    use super::*;
    use herald_transport_redis::RedisStreams;

    impl Broker for RedisStreams {
        const NAME: &'static str = "Redis";

        async fn unfinished(&self) -> Result<u64, BoxError> {
            Ok(RedisStreams::unfinished(self).await?)
        }
    }

    pub(super) async fn make_source(case: &'static str) -> BrokerHarness<RedisStreams> {
        let url = std::env::var("HERALD_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let stream = format!("herald-test:conformance:{case}:{}", MessageId::new());
        let streams = RedisStreams::connect(&url, stream, "conformance")
            .await
            .unwrap_or_else(|e| panic!("Redis is required for these tests: {e}"));
        BrokerHarness(streams)
    }
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

// --- RabbitMQ ------------------------------------------------------------------------------------

/// RabbitMQ at `HERALD_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`), one
/// queue per case, which the broker deletes a minute after the case stops using it.
#[cfg(feature = "rabbitmq")]
mod rabbit_queues {
    use super::*;
    use herald_transport_rabbitmq::RabbitMq;

    impl Broker for RabbitMq {
        const NAME: &'static str = "RabbitMQ";

        async fn unfinished(&self) -> Result<u64, BoxError> {
            Ok(RabbitMq::unfinished(self).await?)
        }
    }

    pub(super) async fn make_source(case: &'static str) -> BrokerHarness<RabbitMq> {
        let url = std::env::var("HERALD_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
        let queue = format!("herald-test.conformance.{case}.{}", MessageId::new());
        let rabbit = RabbitMq::builder(url, queue)
            .expires_after(std::time::Duration::from_secs(60))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ is required for these tests: {e}"));
        BrokerHarness(rabbit)
    }
}

// --- NATS JetStream ------------------------------------------------------------------------------

/// NATS JetStream at `HERALD_TEST_NATS_URL` (default `nats://127.0.0.1:4222`), one stream per case
/// (deleted when the harness is dropped).
#[cfg(feature = "nats")]
mod nats_jetstream {
    use super::*;
    use herald_transport_nats::NatsJetStream;

    impl Broker for NatsJetStream {
        const NAME: &'static str = "JetStream";

        async fn unfinished(&self) -> Result<u64, BoxError> {
            NatsJetStream::unfinished(self).await
        }

        /// Deletes the case's stream (in the background: the runtime may be ending).
        fn clean_up(&self) {
            let nats = self.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { nats.delete_stream().await });
            }
        }
    }

    pub(super) async fn make_source(case: &'static str) -> BrokerHarness<NatsJetStream> {
        let url = std::env::var("HERALD_TEST_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
        let stream = format!("herald-test-conformance-{case}-{}", MessageId::new());
        let nats = NatsJetStream::builder(url, stream, "conformance")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("NATS with JetStream is required for these tests: {e}"));
        BrokerHarness(nats)
    }
}
