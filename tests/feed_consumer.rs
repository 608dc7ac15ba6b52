//! `examples/feed_consumer.rs` against a live feed, run twice (the first run stopped mid-way):
//! every event is applied exactly once, in order, and the server holds its position.

use herald::outbox::{self, SqliteOutbox};
use herald::web::access::Secret;
use herald::web::HeraldWeb;
use herald::Event;
use serde::{Deserialize, Serialize};
use std::process::Command;
use std::sync::Arc;

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "feed_consumer_test.order_placed")]
struct OrderPlaced {
    order: u32,
}

/// The example's binary, which `cargo test` builds beside the tests.
fn example() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join("examples").join("feed_consumer");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --example feed_consumer --features web`",
        path.display()
    );
    path
}

async fn publish(outbox: &SqliteOutbox, orders: std::ops::Range<u32>) {
    let mut conn = outbox.pool().acquire().await.expect("connection");
    for order in orders {
        outbox
            .publish(&mut *conn, OrderPlaced { order })
            .await
            .expect("publish");
    }
}

fn run(url: &str, state: &std::path::Path, extra: &[&str]) -> String {
    let out = Command::new(example())
        .args(["--url", url, "--state"])
        .arg(state)
        .args(["--name", "billing", "--limit", "3"])
        .args(extra)
        .env("HERALD_FEED_TOKEN", "billing-token")
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn the_feed_consumer_survives_restarts_without_gaps_or_repeats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = outbox::sqlite::connect(dir.path().join("app.db"))
        .await
        .expect("open");
    let outbox = SqliteOutbox::new(pool).await.expect("migrate");
    let web = HeraldWeb::builder(Arc::new(outbox.clone()))
        .feed_consumer("billing", Secret::new("billing-token"))
        .build()
        .expect("build");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(herald::web::serve_on(
        web.clone(),
        listener,
        std::future::pending(),
    ));
    let state = dir.path().join("consumer.db");

    publish(&outbox, 0..7).await;
    // First run: one page of 3, then it stops (as if killed after committing).
    let first = run(&url, &state, &["--max-pages", "1"]);
    assert!(
        first.contains("starting after position 0") && first.contains("stopped after position 3"),
        "{first}"
    );
    publish(&outbox, 7..10).await;
    // Second run: from its stored offset to the end.
    let second = run(&url, &state, &["--until-idle"]);
    assert!(
        second.contains("starting after position 3")
            && second.contains("stopped after position 10"),
        "{second}"
    );
    // A third run finds nothing new.
    let third = run(&url, &state, &["--until-idle"]);
    assert!(
        third.contains("starting after position 10") && third.contains("stopped after position 10"),
        "{third}"
    );

    let consumer = herald::sqlx::SqlitePool::connect(&format!("sqlite:{}", state.display()))
        .await
        .expect("open the consumer's file");
    let applied: Vec<(i64, String)> =
        herald::sqlx::query_as("SELECT position, payload FROM applied ORDER BY position")
            .fetch_all(&consumer)
            .await
            .expect("applied");
    let positions: Vec<i64> = applied.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        positions,
        (1..=10).collect::<Vec<_>>(),
        "every event once, in order"
    );
    let orders: Vec<u32> = applied
        .iter()
        .map(|(_, payload)| {
            serde_json::from_str::<serde_json::Value>(payload).expect("JSON")["order"]
                .as_u64()
                .expect("order") as u32
        })
        .collect();
    assert_eq!(orders, (0..10).collect::<Vec<_>>());
}
