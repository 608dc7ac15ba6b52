//! The web console and the HTTP event feed, mounted in the application's own process (so the
//! overview shows its pools and ledger too).
//!
//! The application sends invoices through a partner that is down at first: the first invoice
//! fails for good and lands in the dead letters. The partner then comes back; open the console,
//! find the dead letter and re-drive it: the relay delivers it and the feed shows it processed.
//!
//! ```text
//! cargo run --example console --features web -- [--db PATH] [--bind 127.0.0.1:8080] [--token TOKEN]
//! ```
//!
//! It prints `console: http://ADDR/` once it listens (the browser test in `web/browser/` reads
//! that line). Prometheus metrics are served beside it on `/metrics`: the runtime's ledger and pools,
//! the outbox's gauges, and the relay's counters (`herald_relay_*`, `docs/OBSERVABILITY.md`). Stop
//! it with Ctrl-C.

use herald::outbox::{self, SqliteOutbox};
use herald::web::access::Secret;
use herald::web::metrics::HeraldMetrics;
use herald::web::HeraldWeb;
use herald::{async_handler, DeadLetterStore, Event, HandlerError, Herald, State};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "billing.invoice_requested")]
struct InvoiceRequested {
    customer: String,
    amount_cents: i64,
    /// Free text from the customer: shown escaped in the console.
    note: String,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "shop.order_placed")]
struct OrderPlaced {
    order: String,
}

/// The invoicing partner, down until the first invoice has failed.
#[derive(Clone, Default)]
struct Partner {
    up: Arc<AtomicBool>,
}

#[async_handler]
async fn send_invoice(
    event: InvoiceRequested,
    State(partner): State<Partner>,
) -> Result<(), HandlerError> {
    if !partner.up.load(Ordering::SeqCst) {
        return Err(HandlerError::permanent(HandlerError::msg(format!(
            "partner refused the invoice for {}: 503 Service Unavailable <html><script>alert('partner')</script></html>",
            event.customer
        ))));
    }
    println!(
        "  [handler] invoice of {} cents sent for {}",
        event.amount_cents, event.customer
    );
    Ok(())
}

#[async_handler]
async fn record_order(_event: OrderPlaced) {}

fn arg(name: &str) -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == name {
            return args.next();
        }
    }
    None
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = match arg("--db") {
        Some(path) => std::path::PathBuf::from(path),
        None => {
            let dir = std::env::temp_dir().join(format!("herald-console-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            dir.join("app.db")
        }
    };
    let bind: std::net::SocketAddr = arg("--bind")
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned())
        .parse()?;
    let token = arg("--token").or_else(|| std::env::var("HERALD_WEB_TOKEN").ok());

    let pool = outbox::sqlite::connect(&db).await?;
    let outbox = SqliteOutbox::new(pool.clone()).await?;
    let partner = Partner::default();
    let metrics = HeraldMetrics::new();
    let herald = metrics.build(
        Herald::builder()
            .handlers_under(module_path!())
            .state(partner.clone())
            .dead_letters(outbox.dead_letters()),
    )?;
    let relay = outbox
        .relay(&herald)
        .poll_interval(Duration::from_millis(50))
        .start();
    metrics
        .watch_outbox("app", Arc::new(outbox.clone()))
        .watch_relay("app", relay.watch());

    let mut conn = pool.acquire().await?;
    for n in 1..=3 {
        outbox
            .publish(
                &mut *conn,
                OrderPlaced {
                    order: format!("A-{n}"),
                },
            )
            .await?;
    }
    outbox
        .publish(
            &mut *conn,
            InvoiceRequested {
                customer: "kim".into(),
                amount_cents: 4200,
                note: "<script>alert('note')</script> please send by mail".into(),
            },
        )
        .await?;
    drop(conn);

    let deadline = Instant::now() + Duration::from_secs(20);
    while outbox.dead_letters().count().await? == 0 {
        if Instant::now() > deadline {
            return Err("the invoice did not fail in time".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    partner.up.store(true, Ordering::SeqCst);
    println!(
        "the invoice is in the dead letters; the partner is back: re-drive it from the console"
    );

    let mut web = HeraldWeb::builder(Arc::new(outbox.clone()))
        .herald(herald.clone())
        .merge(metrics.router());
    if let Some(token) = token {
        web = web.access_token(Secret::new(token));
    }
    let web = web.build()?;
    let listener = tokio::net::TcpListener::bind(bind).await?;
    println!("console: http://{}/", listener.local_addr()?);
    println!("metrics: http://{}/metrics", listener.local_addr()?);
    std::io::stdout().flush()?;
    herald::web::serve_on(web, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    relay.stop().await;
    herald.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
