//! A consumer of the HTTP event feed that keeps its offset in its own SQLite file and survives
//! restarts without gaps or repeats.
//!
//! Each page of events is applied and the new offset stored in one transaction of the
//! consumer's own database: after a crash, either both happened or neither did, so the next run
//! asks for `after = <stored offset>` and sees each event exactly once. (The feed itself is
//! gap-safe: an event that commits late still comes after the stored offset.) It also reports
//! its position to the server (`PUT /consumers/{name}/position`), which the console shows as the
//! consumer's lag; that is informative only: the local file is the truth.
//!
//! ```text
//! herald --database-url sqlite:app.db serve --feed-consumer billing=TOKEN &
//! HERALD_FEED_TOKEN=TOKEN cargo run --example feed_consumer --features web -- \
//!     --url http://127.0.0.1:8080 --state billing.db --name billing
//! ```
//!
//! Options: `--until-idle` stops at the first empty page (tests), `--max-pages N` stops after N
//! pages, `--limit N` events per page, `--wait S` long-poll seconds.

use axum::body::Bytes;
use herald::sqlx::{self, sqlite::SqliteConnectOptions, SqlitePool};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use std::str::FromStr;

#[derive(Debug, Deserialize)]
struct Page {
    events: Vec<Event>,
    next: i64,
}

#[derive(Debug, Deserialize)]
struct Event {
    position: i64,
    message_id: String,
    message_type: String,
    payload: serde_json::Value,
}

fn arg(name: &str) -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == name {
            return args.next();
        }
    }
    None
}

fn flag(name: &str) -> bool {
    std::env::args().any(|arg| arg == name)
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn request(
    client: &HttpClient,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Result<(u16, Bytes), Box<dyn std::error::Error>> {
    let mut builder = axum::http::Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let request = builder.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = arg("--url").unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let state = arg("--state").unwrap_or_else(|| "feed_consumer.db".to_owned());
    let name = arg("--name");
    let token = arg("--token").or_else(|| std::env::var("HERALD_FEED_TOKEN").ok());
    let limit: usize = arg("--limit").map_or(Ok(100), |l| l.parse())?;
    let wait: u64 = arg("--wait").map_or(Ok(10), |w| w.parse())?;
    let max_pages: Option<usize> = arg("--max-pages").map(|m| m.parse()).transpose()?;
    let until_idle = flag("--until-idle");

    // The consumer's own database: its offset and what it did with each event.
    let db = SqlitePool::connect_with(
        SqliteConnectOptions::from_str(&format!("sqlite:{state}"))?.create_if_missing(true),
    )
    .await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS feed_offset (id INTEGER PRIMARY KEY CHECK (id = 1), position INTEGER NOT NULL);
         INSERT OR IGNORE INTO feed_offset (id, position) VALUES (1, 0);
         -- The position is the primary key: an event applied twice would fail here, loudly.
         CREATE TABLE IF NOT EXISTS applied (position INTEGER PRIMARY KEY, message_id TEXT NOT NULL, message_type TEXT NOT NULL, payload TEXT NOT NULL);",
    )
    .execute(&db)
    .await?;
    let mut offset: i64 = sqlx::query_scalar("SELECT position FROM feed_offset WHERE id = 1")
        .fetch_one(&db)
        .await?;
    println!("starting after position {offset}");

    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let wait = if until_idle { 0 } else { wait };
    let mut pages = 0;
    loop {
        let uri = format!("{base}/events?after={offset}&limit={limit}&wait={wait}");
        let (status, body) = request(&client, "GET", &uri, token.as_deref(), None).await?;
        if status != 200 {
            return Err(format!(
                "the feed answered {status}: {}",
                String::from_utf8_lossy(&body)
            )
            .into());
        }
        let page: Page = serde_json::from_slice(&body)?;
        if page.events.is_empty() {
            if until_idle {
                break;
            }
            continue;
        }
        // Apply the page and move the offset in one transaction.
        let mut tx = db.begin().await?;
        for event in &page.events {
            sqlx::query("INSERT INTO applied (position, message_id, message_type, payload) VALUES (?1, ?2, ?3, ?4)")
                .bind(event.position)
                .bind(&event.message_id)
                .bind(&event.message_type)
                .bind(event.payload.to_string())
                .execute(&mut *tx)
                .await?;
            println!(
                "{:>6}  {}  {}",
                event.position, event.message_type, event.payload
            );
        }
        sqlx::query("UPDATE feed_offset SET position = ?1 WHERE id = 1")
            .bind(page.next)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        offset = page.next;
        if let Some(name) = &name {
            // Informative: lets the console show this consumer's lag.
            let uri = format!("{base}/consumers/{name}/position");
            let body = serde_json::json!({ "position": offset }).to_string();
            let (status, _) = request(&client, "PUT", &uri, token.as_deref(), Some(body)).await?;
            if status != 200 {
                eprintln!("the server did not store the position ({status}); continuing");
            }
        }
        pages += 1;
        if max_pages.is_some_and(|max| pages >= max) {
            break;
        }
    }
    println!("stopped after position {offset}");
    Ok(())
}
