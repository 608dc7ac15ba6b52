//! The pub/sub suite's broker-restart case against the machine's real brokers: each broker is
//! stopped and started again twice while a publisher goes on, with the same start commands as
//! `.ci/run`. In a test binary of its own, and its cases hold one process-wide lock, so that they
//! run one at a time; a restart still disturbs other processes using that broker, so run this
//! binary only when needed:
//!
//! ```text
//! cargo test -p herald-conformance --features redis,rabbitmq,nats --test restarts
//! ```
//!
//! Whatever happens (a failed command, a panic), a guard starts the broker again before the case
//! ends. How each broker restarts:
//! - **RabbitMQ**: `rabbitmqctl stop_app`, then `rabbitmqctl start_app` (durable queues and
//!   persistent messages survive);
//! - **NATS**: the `nats-server` process (found by its pid on port 4222) gets `SIGTERM`, then the
//!   `.ci/run` command starts it again (file-backed streams survive);
//! - **Redis**: the server runs without persistence (`--save "" --appendonly no`), so a plain
//!   restart would lose every stream: here it stops with `SHUTDOWN SAVE`, which writes a snapshot
//!   of everything it holds (everything it confirmed) and exits, the `.ci/run` command starts it
//!   again and it loads the snapshot, then the snapshot file is removed so that the machine keeps
//!   its no-persistence setup. The transport still does not declare `persistent`: that depends on
//!   the server's configuration, and this case checks reconnecting, not Redis's durability.

// The process helpers below serve the real brokers' harnesses: with some broker features off,
// parts of them have no caller.
#![cfg_attr(
    not(all(feature = "redis", feature = "rabbitmq", feature = "nats")),
    allow(dead_code, unused_imports)
)]

mod brokers;

use brokers::*;
use herald_conformance::pubsub::RestartHarness;
use herald_conformance::restart_suite;
use herald_conformance::source::BoxError;
use herald_transport_memory::MemoryBroker;
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

restart_suite!(memory_restarts, make::<MemoryBroker>);
#[cfg(feature = "redis")]
restart_suite!(redis_restarts, make::<herald_transport_redis::RedisStreams>);
#[cfg(feature = "rabbitmq")]
restart_suite!(
    rabbitmq_restarts,
    make::<herald_transport_rabbitmq::RabbitMq>
);
#[cfg(feature = "nats")]
restart_suite!(nats_restarts, make::<herald_transport_nats::NatsJetStream>);
#[cfg(feature = "kafka")]
restart_suite!(kafka_restarts, make::<herald_transport_kafka::Kafka>);
#[cfg(feature = "kafka")]
restart_suite!(kafka_mock_restarts, make_mock_kafka);

/// Held by each case from start to end: one restart case at a time in this process.
static ONE_AT_A_TIME: LazyLock<Arc<tokio::sync::Mutex<()>>> = LazyLock::new(Arc::default);

async fn make<B: BrokerProcess>(case: &'static str) -> BrokerPubSub<B> {
    let turn = ONE_AT_A_TIME.clone().lock_owned().await;
    BrokerPubSub::new(case, Some(Box::new(turn)))
}

/// Kafka's restart case on librdkafka's `MockCluster`: its one broker is taken down for 2 s and
/// brought up again (`MockCluster::broker_down`/`broker_up`: every connection drops, the log and
/// the group's offsets stay), the restart the machine's Kafka broker cannot do (see
/// `BrokerProcess for Kafka`).
#[cfg(feature = "kafka")]
async fn make_mock_kafka(case: &'static str) -> BrokerPubSub<herald_transport_kafka::Kafka> {
    let turn = ONE_AT_A_TIME.clone().lock_owned().await;
    BrokerPubSub::with_topics(
        case,
        KafkaCluster::Mock(kafka_topics::MockBroker::start()),
        Some(Box::new(turn)),
    )
}

/// A broker's restart, run on a blocking thread: stop, start, wait until it listens.
type Restart = Box<dyn FnOnce() -> Result<(), BoxError> + Send>;

/// How a broker's process is restarted.
trait BrokerProcess: PubSubBroker {
    /// The restart of the broker behind `topics`, or why there is nothing to restart.
    fn restarter(topics: &Self::Topics) -> Result<Restart, &'static str>;
}

impl<B: BrokerProcess> RestartHarness for BrokerPubSub<B> {
    fn restarts(&self) -> Result<(), &'static str> {
        B::restarter(self.topics()).map(drop)
    }

    async fn restart_broker(&self) -> Result<(), BoxError> {
        let restart = B::restarter(self.topics())?;
        tokio::task::spawn_blocking(restart).await?
    }
}

impl BrokerProcess for MemoryBroker {
    fn restarter(_: &Self::Topics) -> Result<Restart, &'static str> {
        Err("the in-memory broker lives in the test's process: there is no broker to restart")
    }
}

#[cfg(feature = "redis")]
impl BrokerProcess for herald_transport_redis::RedisStreams {
    fn restarter(_: &Self::Topics) -> Result<Restart, &'static str> {
        Ok(Box::new(restart_redis))
    }
}

#[cfg(feature = "rabbitmq")]
impl BrokerProcess for herald_transport_rabbitmq::RabbitMq {
    fn restarter(_: &Self::Topics) -> Result<Restart, &'static str> {
        Ok(Box::new(restart_rabbitmq))
    }
}

#[cfg(feature = "nats")]
impl BrokerProcess for herald_transport_nats::NatsJetStream {
    fn restarter(_: &Self::Topics) -> Result<Restart, &'static str> {
        Ok(Box::new(restart_nats))
    }
}

#[cfg(feature = "kafka")]
impl BrokerProcess for herald_transport_kafka::Kafka {
    fn restarter(cluster: &KafkaCluster) -> Result<Restart, &'static str> {
        match cluster {
            KafkaCluster::Mock(mock) => {
                let mock = mock.clone();
                Ok(Box::new(move || mock.restart(Duration::from_secs(2))))
            }
            KafkaCluster::Real(_) => Err(KAFKA_CANNOT_RESTART),
        }
    }
}

/// Why the restart case does not run on the machine's Kafka broker.
#[cfg(feature = "kafka")]
const KAFKA_CANNOT_RESTART: &str = "tansu 0.6 (the machine's Kafka broker) cannot be restarted without losing what it confirmed: its memory:// storage keeps nothing, its SQLite storage panics on the first idempotent produce after a restart ('more or less than one row', tansu-storage lite.rs:503, which kills its storage thread), and its PostgreSQL storage ships no schema; the restart case runs on MockCluster (kafka_mock_restarts)";

// --- restarting the real brokers -----------------------------------------------------------------

/// The `.ci/run` start commands.
const REDIS_START: &str = r#"redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"#;
const NATS_START: &str = "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log";
/// Where Redis writes its snapshot (`--dir` of the start command, default file name).
const REDIS_SNAPSHOT: &str = "/var/lib/redis/dump.rdb";

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Waits up to 60 s until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Runs `program args…`, failing with its output when it fails.
fn run(program: &str, args: &[&str]) -> Result<String, BoxError> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program} is required for the restart tests: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`{program} {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Starts the broker again with `start` when nothing listens on `port` once it is dropped: a
/// restart that fails or panics half-way never leaves the broker stopped.
struct StartsAgain {
    port: u16,
    start: fn() -> Result<(), BoxError>,
}

impl Drop for StartsAgain {
    fn drop(&mut self) {
        if listening(self.port) {
            return;
        }
        eprintln!(
            "the broker on port {} is down: starting it again",
            self.port
        );
        let started = (self.start)()
            .and_then(|()| wait_until("the broker to listen again", || listening(self.port)));
        if let Err(error) = started {
            eprintln!(
                "!! could not start the broker on port {} again: {error}",
                self.port
            );
        }
    }
}

fn start_redis() -> Result<(), BoxError> {
    run("sh", &["-c", REDIS_START]).map(drop)
}

fn restart_redis() -> Result<(), BoxError> {
    let _guard = StartsAgain {
        port: 6379,
        start: start_redis,
    };
    // SHUTDOWN SAVE answers nothing when it succeeds: the connection just closes.
    let _ = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "shutdown", "save"])
        .output()
        .map_err(|e| format!("redis-cli is required for the restart tests: {e}"))?;
    wait_until("Redis to stop", || !listening(6379))?;
    start_redis()?;
    wait_until("Redis to load its snapshot", || {
        run("redis-cli", &["-h", "127.0.0.1", "-p", "6379", "ping"])
            .is_ok_and(|answer| answer.trim() == "PONG")
    })?;
    std::fs::remove_file(REDIS_SNAPSHOT)
        .map_err(|e| format!("could not remove the snapshot {REDIS_SNAPSHOT}: {e}"))?;
    Ok(())
}

fn start_rabbitmq() -> Result<(), BoxError> {
    run("rabbitmqctl", &["start_app"]).map(drop)
}

fn restart_rabbitmq() -> Result<(), BoxError> {
    let _guard = StartsAgain {
        port: 5672,
        start: start_rabbitmq,
    };
    run("rabbitmqctl", &["stop_app"])?;
    wait_until("RabbitMQ to stop listening", || !listening(5672))?;
    start_rabbitmq()?;
    wait_until("RabbitMQ to listen again", || listening(5672))
}

fn start_nats() -> Result<(), BoxError> {
    run("sh", &["-c", NATS_START]).map(drop)
}

fn restart_nats() -> Result<(), BoxError> {
    let _guard = StartsAgain {
        port: 4222,
        start: start_nats,
    };
    // The one nats-server listening on 4222, by its pid.
    let pids = run("pidof", &["nats-server"])?;
    let pid = match pids.split_whitespace().collect::<Vec<_>>()[..] {
        [pid] => pid.to_owned(),
        ref many => return Err(format!("expected one nats-server, found {many:?}").into()),
    };
    run("kill", &["-TERM", &pid])?;
    wait_until("nats-server to exit", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    })?;
    start_nats()?;
    wait_until("nats-server to listen again", || listening(4222))
}
