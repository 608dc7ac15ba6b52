//! The two services of `examples/orders/` as real processes against the real RabbitMQ at
//! `HERALD_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`; the test fails when it
//! is down): 200 orders posted over HTTP, the notification service killed with SIGKILL mid-stream
//! and restarted, the order service killed with SIGKILL while committed orders were still waiting
//! in its outbox and restarted. In the end every order has exactly one e-mail row and exactly one
//! points grant, the balances add up, nothing is pending or dead-lettered, and both services stop
//! cleanly on SIGTERM. With the `kafka` feature the same run goes over Kafka
//! (`--transport kafka`, the broker at `HERALD_TEST_KAFKA_BROKERS`, default `127.0.0.1:9092`).
//!
//! The binaries are the examples `orders-service` and `notifications-service`, which `cargo test`
//! builds into `target/debug/examples/` when the features are on.
#![cfg(all(feature = "sqlite", feature = "rabbitmq", unix))]

use herald::outbox;
use herald::sqlx::{self, SqlitePool};
use herald::transport::rabbitmq::RabbitMq;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ORDERS: u32 = 200;
/// The queue expiry given to both services: a backstop when the test dies before deleting them.
const QUEUE_EXPIRES_SECS: &str = "120";

fn amqp_url() -> String {
    std::env::var("HERALD_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// `target/debug/examples/<name>`, next to this test's `target/debug/deps/`.
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|debug| debug.join("examples").join(name))
        .expect("the test binary sits in target/<profile>/deps");
    assert!(
        path.is_file(),
        "the example binary {} is missing: build it with `cargo build --examples --features sqlite,rabbitmq` \
         (`cargo test --workspace --all-features` builds it too)",
        path.display()
    );
    path
}

/// One service process; killed (SIGKILL) when dropped, so a failing test leaves none behind.
struct Service {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Starts `binary` with `args`, logs to `<dir>/<name>.<n>.log`, and waits for its ready line
    /// on stdout (the line is returned).
    fn start(name: &'static str, dir: &Path, run: u32, args: &[&str]) -> (Service, String) {
        let log = dir.join(format!("{name}.{run}.log"));
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(example_binary(name))
            .args(args)
            .env("RUST_LOG", "info,lapin=off")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (ready, line) = mpsc::channel();
        std::thread::spawn(move || {
            for text in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = ready.send(text);
            }
        });
        let service = Service { name, child, log };
        match line.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => (service, line),
            Err(_) => panic!(
                "{name} did not start (is its broker up?); its log:\n{}",
                service.log_text()
            ),
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, then the exit status must be success within 15 s.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            matches!(sent, Ok(s) if s.success()),
            "kill -TERM {pid}: {sent:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "{} exited with {status} on SIGTERM; its log:\n{}",
                    self.name,
                    self.log_text()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop within 15 s of SIGTERM; its log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log_text());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST /orders` over a fresh HTTP/1.1 connection; the status code and body.
async fn post_order(
    addr: SocketAddr,
    customer: &str,
    total_cents: i64,
) -> std::io::Result<(u16, String)> {
    let body = format!(r#"{{"customer":"{customer}","total_cents":{total_cents}}}"#);
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "POST /orders HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// What the test placed: order id → (customer, points).
type Placed = BTreeMap<i64, (String, i64)>;

/// Posts orders `numbers` with `concurrency` clients at once; every one must be accepted.
async fn place(
    addr: SocketAddr,
    numbers: std::ops::RangeInclusive<u32>,
    concurrency: usize,
    customer: Option<&str>,
) -> Placed {
    let numbers: Vec<u32> = numbers.collect();
    let mut placed = Placed::new();
    for chunk in numbers.chunks(concurrency) {
        let mut tasks = tokio::task::JoinSet::new();
        for &n in chunk {
            let customer = customer.map_or_else(|| format!("customer-{}", n % 7), str::to_owned);
            tasks.spawn(async move {
                let total_cents = i64::from(n) * 137;
                let (code, body) = post_order(addr, &customer, total_cents)
                    .await
                    .unwrap_or_else(|e| panic!("POST /orders (order {n}) failed: {e}"));
                assert_eq!(code, 201, "order {n} refused: {body}");
                let reply: serde_json::Value = serde_json::from_str(&body).expect("JSON reply");
                let id = reply["order_id"].as_i64().expect("order_id");
                assert_eq!(reply["points"].as_i64(), Some(total_cents / 100), "{body}");
                (id, customer, total_cents / 100)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (id, customer, points) = done.expect("poster task");
            assert!(
                placed.insert(id, (customer, points)).is_none(),
                "order id {id} given twice"
            );
        }
    }
    placed
}

async fn open(path: &Path) -> SqlitePool {
    outbox::sqlite::connect(path)
        .await
        .expect("open the service's database")
}

async fn count(pool: &SqlitePool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The broker both services use, as the test sees it: to check it is up, to read what is left
/// for the consumer, and to clean up.
enum BrokerUnderTest {
    RabbitMq(RabbitMq),
    #[cfg(feature = "kafka")]
    Kafka(herald::transport::kafka::Kafka),
}

impl BrokerUnderTest {
    /// Messages the notification service has not finished (queue depth, or the group's lag).
    async fn unfinished(&self) -> u64 {
        match self {
            BrokerUnderTest::RabbitMq(rabbit) => rabbit.unfinished().await.expect("queue depth"),
            #[cfg(feature = "kafka")]
            BrokerUnderTest::Kafka(kafka) => kafka.unfinished().await.expect("the group's lag"),
        }
    }

    async fn clean_up(self) {
        match self {
            BrokerUnderTest::RabbitMq(rabbit) => {
                rabbit
                    .delete_queues()
                    .await
                    .expect("delete the test's queues");
                let _ = rabbit.close().await;
            }
            #[cfg(feature = "kafka")]
            BrokerUnderTest::Kafka(kafka) => {
                kafka.delete_topic().await.expect("delete the test's topic");
            }
        }
    }
}

fn unique_name(started: Instant) -> String {
    format!(
        "herald-test.orders.{}.{}",
        std::process::id(),
        started.elapsed().as_nanos()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_rabbitmq_every_order_is_emailed_and_granted_exactly_once_across_kill_9_of_both_services(
) {
    let started = Instant::now();
    let queue = unique_name(started);
    let url = amqp_url();
    // Fails loudly, with the fix, when the broker is down; also deletes the queues at the end.
    let admin = RabbitMq::builder(&url, &queue)
        .expires_after(Duration::from_secs(120))
        .publish_only()
        .connect()
        .await
        .unwrap_or_else(|e| {
            panic!("RabbitMQ is required at {url} (set HERALD_TEST_AMQP_URL): {e}")
        });
    let broker = [
        "--transport",
        "rabbitmq",
        "--amqp-url",
        &url,
        "--queue",
        &queue,
        "--queue-expires-secs",
        QUEUE_EXPIRES_SECS,
    ];
    orders_survive_kill_9(started, &broker, BrokerUnderTest::RabbitMq(admin)).await;
}

/// The same run over Kafka (`--transport kafka`) at `HERALD_TEST_KAFKA_BROKERS` (default
/// `127.0.0.1:9092`, tansu in CI): the killed consumer's partitions come back to its successor in
/// the group, which reads again from the last committed offset.
#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_kafka_every_order_is_emailed_and_granted_exactly_once_across_kill_9_of_both_services()
{
    use herald::transport::kafka::Kafka;
    let started = Instant::now();
    let topic = unique_name(started);
    let brokers =
        std::env::var("HERALD_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    // Reads the group's lag at the end (it never subscribes); creating the topic fails loudly
    // when the broker is down.
    // A group of the test's own: groups live on the broker, beyond this run.
    let group = format!("{topic}.notifications");
    let admin = Kafka::builder(&brokers, &topic, &group)
        .create_topic(3, 1)
        .connect()
        .await
        .unwrap_or_else(|e| {
            panic!("a Kafka broker is required at {brokers} (set HERALD_TEST_KAFKA_BROKERS): {e}")
        });
    let broker = [
        "--transport",
        "kafka",
        "--kafka-brokers",
        &brokers,
        "--kafka-session-timeout-ms",
        "6000",
        // One record per batch: tansu 0.6 (the broker in CI) answers a fetch that starts inside
        // a record batch with none of that batch's records, so a consumer resuming at a
        // committed offset inside a batch would skip its rest (see
        // conformance/tests/brokers/mod.rs, `real_builder`). Kafka has no such defect.
        "--kafka-set",
        "batch.num.messages=1",
        "--kafka-group",
        &group,
        "--queue",
        &topic,
    ];
    orders_survive_kill_9(started, &broker, BrokerUnderTest::Kafka(admin)).await;
}

/// 200 orders; the notification service killed mid-stream and restarted, the order service killed
/// with committed rows in its outbox and restarted; every effect exactly once.
async fn orders_survive_kill_9(started: Instant, broker: &[&str], admin: BrokerUnderTest) {
    let dir = tempfile::tempdir().expect("temp dir");
    let orders_db = dir.path().join("orders.db");
    let notifications_db = dir.path().join("notifications.db");
    let (orders_db_arg, notifications_db_arg) = (
        orders_db.to_str().expect("UTF-8 path").to_owned(),
        notifications_db.to_str().expect("UTF-8 path").to_owned(),
    );
    let start_orders = |run: u32| {
        let mut args = vec![
            "--port",
            "0",
            "--database",
            &orders_db_arg,
            "--relay-lease-secs",
            "2",
        ];
        args.extend_from_slice(broker);
        let (service, line) = Service::start("orders-service", dir.path(), run, &args);
        let addr: SocketAddr = line
            .rsplit("http://")
            .next()
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in the ready line `{line}`"));
        (service, addr)
    };
    let start_notifications = |run: u32| {
        let mut args = vec!["--database", &notifications_db_arg, "--prefetch", "32"];
        args.extend_from_slice(broker);
        Service::start("notifications-service", dir.path(), run, &args).0
    };

    let notifications = start_notifications(1);
    let (orders, addr) = start_orders(1);
    let notifications_pool = open(&notifications_db).await;
    let emails = async || count(&notifications_pool, "SELECT COUNT(*) FROM emails").await;

    // 1. Orders 1..=80 flow; the notification service is killed once it has e-mailed 15.
    let poster = tokio::spawn(place(addr, 1..=80, 4, None));
    let deadline = Instant::now() + Duration::from_secs(20);
    while emails().await < 15 {
        assert!(
            Instant::now() < deadline,
            "the notification service e-mailed fewer than 15 orders in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    notifications.kill_9();
    let mut placed = poster.await.expect("poster");
    let emailed_at_kill = emails().await;
    assert!(
        emailed_at_kill < i64::from(ORDERS),
        "the kill came mid-stream"
    );

    // 2. Orders 81..=120 while it is down: they wait in RabbitMQ. Then it comes back.
    placed.extend(place(addr, 81..=120, 4, None).await);
    let notifications = start_notifications(2);

    // 3. The order service is killed right after a burst of orders of one customer (forwarded one
    //    at a time, in order), so committed rows are still waiting in its outbox; it must be seen.
    let orders_pool = open(&orders_db).await;
    let pending = async || {
        count(
            &orders_pool,
            "SELECT COUNT(*) FROM herald_outbox WHERE status = 'pending'",
        )
        .await
    };
    let (mut orders, mut addr, mut next, mut run) = (orders, addr, 121_u32, 1);
    let mut caught = 0;
    while caught == 0 {
        assert!(
            run <= 3,
            "three kills of the order service found no committed row left to forward"
        );
        placed.extend(place(addr, next..=next + 24, 25, Some("burst")).await);
        next += 25;
        orders.kill_9();
        caught = pending().await;
        run += 1;
        (orders, addr) = start_orders(run);
    }

    // 4. The rest of the orders through the restarted order service.
    placed.extend(place(addr, next..=ORDERS, 4, None).await);
    assert_eq!(placed.len(), ORDERS as usize);

    // 5. Wait for every effect and an empty outbox, then stop both with SIGTERM.
    let notified = async || {
        count(
            &notifications_pool,
            "SELECT COUNT(DISTINCT order_id) FROM emails",
        )
        .await
            + count(
                &notifications_pool,
                "SELECT COUNT(DISTINCT order_id) FROM point_grants",
            )
            .await
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while notified().await < 2 * i64::from(ORDERS) || pending().await > 0 {
        assert!(
            Instant::now() < deadline,
            "not every order was notified within 30 s: {} of {} e-mail/grant effects, {} outbox rows pending",
            notified().await,
            2 * ORDERS,
            pending().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    notifications.stop();
    orders.stop();

    // 6. Exactly once in effect: one e-mail and one grant per order, nothing else.
    let per_order = async |table: &str| -> HashMap<i64, i64> {
        sqlx::query_as::<_, (i64, i64)>(&format!(
            "SELECT order_id, COUNT(*) FROM {table} GROUP BY order_id"
        ))
        .fetch_all(&notifications_pool)
        .await
        .expect("per-order counts")
        .into_iter()
        .collect()
    };
    for table in ["emails", "point_grants"] {
        let counts = per_order(table).await;
        let wrong: Vec<_> = placed
            .keys()
            .filter(|id| counts.get(id) != Some(&1))
            .map(|id| (id, counts.get(id).copied().unwrap_or(0)))
            .collect();
        assert!(
            wrong.is_empty(),
            "{table}: orders without exactly one row (id, rows): {wrong:?}"
        );
        assert_eq!(
            counts.len(),
            placed.len(),
            "{table}: rows for orders never placed"
        );
    }
    let mut expected_balance = BTreeMap::<String, i64>::new();
    for (customer, points) in placed.values() {
        *expected_balance.entry(customer.clone()).or_default() += points;
    }
    let balances: BTreeMap<String, i64> = sqlx::query_as("SELECT customer, balance FROM points")
        .fetch_all(&notifications_pool)
        .await
        .expect("balances")
        .into_iter()
        .collect();
    assert_eq!(balances, expected_balance, "points balances");
    assert_eq!(
        count(
            &notifications_pool,
            "SELECT COUNT(*) FROM herald_dead_letters"
        )
        .await,
        0
    );

    // The order service: every order forwarded and confirmed, nothing pending or failed.
    assert_eq!(
        count(&orders_pool, "SELECT COUNT(*) FROM orders").await,
        i64::from(ORDERS)
    );
    assert_eq!(
        count(
            &orders_pool,
            "SELECT COUNT(*) FROM herald_outbox WHERE status = 'processed'"
        )
        .await,
        i64::from(ORDERS),
        "every outbox row forwarded"
    );
    assert_eq!(pending().await, 0);
    assert_eq!(
        count(&orders_pool, "SELECT COUNT(*) FROM herald_dead_letters").await,
        0
    );
    assert_eq!(admin.unfinished().await, 0, "nothing left for the consumer");
    admin.clean_up().await;
    notifications_pool.close().await;
    orders_pool.close().await;
    eprintln!(
        "{ORDERS} orders; notification service killed after {emailed_at_kill} e-mails; order service killed with {caught} rows pending ({} kill(s)); {:.1} s",
        run - 1,
        started.elapsed().as_secs_f64()
    );
}
