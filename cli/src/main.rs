//! `herald`: look into a Herald database (SQLite, PostgreSQL, MySQL or MariaDB) from the shell.
//!
//! ```text
//! herald --database-url sqlite:app.db outbox status
//! herald --database-url postgres://localhost/app dead-letters list
//! herald --database-url mysql://app@localhost/app outbox status
//! herald --database-url postgres://localhost/app dead-letters redrive 42
//! herald --database-url sqlite:app.db events tail --after 100 --follow
//! herald --database-url sqlite:app.db dead-letters redrive --handler app::send_mail
//! herald --database-url postgres://localhost/app serve --bind 127.0.0.1:8080 --read-only
//! herald --database-url postgres://localhost/app cdc lag
//! ```
//!
//! `dead-letters redrive` needs no handler code: it moves the dead letter back into the outbox,
//! due now and for its handler only, and the application's running relay delivers it.
//! `serve` runs the web console and the HTTP event feed (crate `herald-web`) on that database.
//! `cdc lag` lists PostgreSQL's replication slots (crate `herald-cdc`): how far each is behind,
//! how much WAL it keeps, whether anything reads it, with a warning for an abandoned slot.
//! Every command that prints takes `--json`; long operations show a progress bar on a terminal.

use clap::{Parser, Subcommand};
use herald_core::feed::OutboxOps;
use herald_core::outbox::{self, MySqlOutbox, OutboxError, PgOutbox, SqliteOutbox};
use herald_core::sqlx;
use herald_core::{DeadLetter, DeadLetterId};
use herald_web::access::Secret;
use herald_web::positions::FilePositionStore;
use herald_web::HeraldWeb;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Inspect a Herald outbox, its dead letters and its event store"
)]
struct Cli {
    /// `sqlite:PATH` (or `sqlite://PATH`), `postgres://USER@HOST/DB`, or
    /// `mysql://USER@HOST/DB` (`mariadb://` as well).
    #[arg(long, env = "HERALD_DATABASE_URL")]
    database_url: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The transactional outbox.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Durable dead letters.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
    /// The event store (outbox rows in commit order).
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// The web console and the HTTP event feed on this database (loopback unless told otherwise).
    Serve(ServeArgs),
    /// Change data capture (PostgreSQL): replication slots.
    Cdc {
        #[command(subcommand)]
        command: CdcCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CdcCommand {
    /// Every replication slot: bytes behind, WAL kept, whether anything reads it; a warning for an
    /// abandoned slot (it pins WAL) or one that lost its WAL. Needs no Herald schema.
    Lag {
        /// Only this slot.
        #[arg(long)]
        slot: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on. Anything but loopback needs `--token` or `--proxy-header`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: std::net::SocketAddr,
    /// The console's access token (prefer the environment variable: arguments show in `ps`).
    #[arg(long, env = "HERALD_WEB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Trust this header, set by an authenticating reverse proxy (e.g. `X-Forwarded-User`).
    #[arg(long)]
    proxy_header: Option<String>,
    /// Refuse re-drive, purge and stored positions; hide their buttons.
    #[arg(long)]
    read_only: bool,
    /// A feed consumer and its bearer token, `NAME=TOKEN` (repeat, or comma-separate in the
    /// environment variable).
    #[arg(
        long = "feed-consumer",
        env = "HERALD_FEED_CONSUMERS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    feed_consumers: Vec<String>,
    /// Keep consumers' stored positions in this JSON file (default: in memory).
    #[arg(long)]
    positions: Option<std::path::PathBuf>,
    /// The longest feed long-poll, in seconds.
    #[arg(long, default_value_t = 30)]
    max_wait: u64,
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// Pending, in flight, retrying, failed, processed, and the lag (age of the oldest pending row).
    Status,
    /// Ordering keys held up by a failing message, with the messages waiting behind it.
    Stuck {
        /// At most this many keys, oldest first.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetterCommand {
    /// Oldest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One dead letter in full.
    Show {
        /// Its id.
        id: i64,
    },
    /// Puts dead letters back into the outbox for their handler; the running relay delivers them.
    Redrive {
        /// Their ids.
        #[arg(required_unless_present_any = ["all", "handler", "kind"], conflicts_with_all = ["all", "handler", "kind"])]
        ids: Vec<i64>,
        #[command(flatten)]
        selection: Selection,
    },
    /// Deletes dead letters: by id, all matching `--handler`/`--kind`, or all with `--all`.
    Purge {
        /// Its id.
        #[arg(required_unless_present_any = ["all", "handler", "kind"], conflicts_with_all = ["all", "handler", "kind"])]
        id: Option<i64>,
        #[command(flatten)]
        selection: Selection,
    },
}

/// Many dead letters at once.
#[derive(Debug, clap::Args)]
struct Selection {
    /// Every dead letter.
    #[arg(long, conflicts_with_all = ["handler", "kind"])]
    all: bool,
    /// Those of this handler.
    #[arg(long)]
    handler: Option<String>,
    /// Those of this failure kind (`error`, `permanent_error`, `panic`, `timeout`, ..., or `none`).
    #[arg(long)]
    kind: Option<String>,
}

/// The most dead letters one command selects.
const SELECT_LIMIT: usize = 10_000_000;

impl Selection {
    fn is_set(&self) -> bool {
        self.all || self.handler.is_some() || self.kind.is_some()
    }

    async fn ids(&self, db: &dyn OutboxOps) -> Result<Vec<DeadLetterId>, Failure> {
        let letters = db.dead_letters().list(SELECT_LIMIT).await?;
        Ok(letters
            .iter()
            .filter(|l| self.handler.as_deref().is_none_or(|h| l.handler == h))
            .filter(|l| {
                self.kind
                    .as_deref()
                    .is_none_or(|k| l.failure.map_or("none", |f| f.as_str()) == k)
            })
            .map(|l| l.id)
            .collect())
    }
}

/// A progress bar on stderr, only on a terminal and never with `--json`.
fn progress(len: u64, json: bool, message: &'static str) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Stored events after an offset (exclusive), in commit order.
    Tail {
        /// The last position you have read (0: from the start).
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// At most this many per read.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Keep reading: catch up (with a progress bar on a terminal), then wait for new events.
        #[arg(long)]
        follow: bool,
        /// How often `--follow` looks for new events, in milliseconds.
        #[arg(long, default_value_t = 500)]
        poll_ms: u64,
    },
}

#[derive(Debug)]
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure(error.to_string())
    }
}

/// `url` as it may be shown: the password (in the user part or a `password=` parameter) becomes
/// `***`. A URL that does not parse is shown as its scheme only, since where its secret sits is
/// unknown.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Only fails for URLs that cannot have a password, and this one has one.
                let _ = parsed.set_password(Some("***"));
            }
            if parsed.query_pairs().any(|(name, _)| name == "password") {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(name, value)| {
                        let value = if name == "password" {
                            "***".to_owned()
                        } else {
                            value.into_owned()
                        };
                        (name.into_owned(), value)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) => match url.split_once(':') {
            Some((scheme, _)) => format!("{scheme}:… (not a valid URL)"),
            None => "(not a valid URL)".to_owned(),
        },
    }
}

/// Opens the database behind `url` as the ops port: the commands below never know which it is.
async fn open(url: &str) -> Result<Box<dyn OutboxOps>, Failure> {
    let shown = redact(url);
    let schema_hint = |error: OutboxError| {
        match error {
        OutboxError::NoSchema => Failure(format!(
            "{shown} has no Herald schema (table `herald_outbox` is missing): is this the application's database? The application creates the schema when it starts its outbox"
        )),
        other => Failure(format!("{shown}: {other}")),
    }
    };
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if !std::path::Path::new(path).exists() {
            return Err(Failure(format!("no SQLite database at `{path}`")));
        }
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(outbox::sqlite::connect_options(path).create_if_missing(false))
            .await
            .map_err(|e| Failure(format!("cannot open SQLite database `{path}`: {e}")))?;
        return SqliteOutbox::open(pool)
            .await
            .map(|outbox| Box::new(outbox) as Box<dyn OutboxOps>)
            .map_err(schema_hint);
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let cannot = |e: &dyn std::fmt::Display| {
            Failure(format!("cannot connect to PostgreSQL at {shown}: {e}"))
        };
        let options = sqlx::postgres::PgConnectOptions::from_str(url).map_err(|e| cannot(&e))?;
        let pool = outbox::postgres::connect_with(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(std::time::Duration::from_secs(5)),
            options,
        )
        .await
        .map_err(|e| cannot(&e))?;
        return PgOutbox::open(pool)
            .await
            .map(|outbox| Box::new(outbox) as Box<dyn OutboxOps>)
            .map_err(schema_hint);
    }
    if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        let cannot =
            |e: &dyn std::fmt::Display| Failure(format!("cannot connect to MySQL at {shown}: {e}"));
        // sqlx knows the `mysql` scheme; MariaDB speaks the same protocol.
        let mysql_url = match url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => url.to_owned(),
        };
        let options =
            sqlx::mysql::MySqlConnectOptions::from_str(&mysql_url).map_err(|e| cannot(&e))?;
        let pool = outbox::mysql::connect_with(
            sqlx::mysql::MySqlPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(std::time::Duration::from_secs(5)),
            options,
        )
        .await
        .map_err(|e| cannot(&e))?;
        return MySqlOutbox::open(pool)
            .await
            .map(|outbox| Box::new(outbox) as Box<dyn OutboxOps>)
            .map_err(schema_hint);
    }
    Err(Failure(format!(
        "unsupported database URL `{shown}`: use `sqlite:PATH`, `postgres://USER@HOST/DB` or `mysql://USER@HOST/DB`"
    )))
}

fn print_letter_line(letter: &DeadLetter) {
    println!(
        "{:>6}  {}  {:<9}  {:<15}  {:>3}  {:<32}  {:<28}  {}",
        letter.id,
        letter.dead_lettered_at.format("%Y-%m-%d %H:%M:%S"),
        letter.reason,
        letter.failure.map_or("-", |kind| kind.as_str()),
        letter.attempts,
        letter.envelope.name,
        letter.handler,
        letter.last_error.as_deref().unwrap_or("-")
    );
}

async fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Cdc {
        command: CdcCommand::Lag { slot },
    } = &cli.command
    {
        return cdc_lag(&cli.database_url, slot.as_deref(), cli.json).await;
    }
    let db = open(&cli.database_url).await?;
    match cli.command {
        Command::Outbox {
            command: OutboxCommand::Status,
        } => {
            let status = db.status().await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!("pending       {}", status.pending);
                println!("  in flight   {}", status.in_flight);
                println!("  retrying    {}", status.retrying);
                println!("failed        {}", status.failed);
                println!("processed     {}", status.processed);
                println!("dead letters  {}", status.dead_letters);
                match (status.oldest_pending_at, status.lag) {
                    (Some(at), Some(lag)) => println!(
                        "lag           {:.3} s (oldest pending published {at})",
                        lag.as_secs_f64()
                    ),
                    _ => println!("lag           0 (nothing pending)"),
                }
            }
        }
        Command::Outbox {
            command: OutboxCommand::Stuck { limit },
        } => {
            let stuck = db.stuck_keys(limit).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&stuck)?);
            } else if stuck.is_empty() {
                println!("no stuck keys");
            } else {
                println!(
                    "{:<24}  {:>8}  {:<32}  {:>5}  {:>7}  {:<19}  last error",
                    "key", "held by", "message", "tries", "waiting", "last failed at"
                );
                for key in &stuck {
                    println!(
                        "{:<24}  {:>8}  {:<32}  {:>5}  {:>7}  {:<19}  {}",
                        key.key.escape_debug().to_string(),
                        key.head,
                        key.message_type,
                        key.failed_attempts,
                        key.waiting,
                        key.last_failed_at.map_or("-".to_owned(), |at| at
                            .format("%Y-%m-%d %H:%M:%S")
                            .to_string()),
                        key.last_error.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        Command::DeadLetters { command } => {
            let store = db.dead_letters();
            match command {
                DeadLetterCommand::List { limit } => {
                    let letters = store.list(limit).await?;
                    if cli.json {
                        println!("{}", serde_json::to_string_pretty(&letters)?);
                    } else if letters.is_empty() {
                        println!("no dead letters");
                    } else {
                        println!(
                            "{:>6}  {:<19}  {:<9}  {:<15}  {:>3}  {:<32}  {:<28}  last error",
                            "id",
                            "dead-lettered at",
                            "reason",
                            "failure",
                            "try",
                            "message",
                            "handler"
                        );
                        for letter in &letters {
                            print_letter_line(letter);
                        }
                        println!("{} of {} shown", letters.len(), store.count().await?);
                    }
                }
                DeadLetterCommand::Show { id } => match store.get(DeadLetterId(id)).await? {
                    Some(letter) => println!("{}", serde_json::to_string_pretty(&letter)?),
                    None => return Err(Failure(format!("no dead letter with id {id}"))),
                },
                DeadLetterCommand::Redrive { ids, selection } => {
                    let ids: Vec<DeadLetterId> = if selection.is_set() {
                        selection.ids(&*db).await?
                    } else {
                        ids.into_iter().map(DeadLetterId).collect()
                    };
                    let bar = progress(ids.len() as u64, cli.json, "re-driving");
                    let (mut moved, mut missing) = (Vec::new(), Vec::new());
                    for id in &ids {
                        match db.redrive(*id).await? {
                            Some(row) => moved.push((*id, row)),
                            None => missing.push(*id),
                        }
                        bar.inc(1);
                    }
                    bar.finish_and_clear();
                    if cli.json {
                        let redriven: Vec<_> = moved
                            .iter()
                            .map(|(id, row)| serde_json::json!({ "id": id, "outbox_row": row }))
                            .collect();
                        println!(
                            "{}",
                            serde_json::to_string_pretty(
                                &serde_json::json!({ "redriven": redriven, "missing": missing })
                            )?
                        );
                    } else {
                        for (id, row) in &moved {
                            println!(
                                "dead letter {id} is back in the outbox (row {row}); the running relay delivers it"
                            );
                        }
                        if moved.len() > 1 || selection.is_set() {
                            println!("re-drove {} dead letter(s)", moved.len());
                        }
                    }
                    if !missing.is_empty() && !selection.is_set() {
                        let shown: Vec<String> = missing.iter().map(ToString::to_string).collect();
                        return Err(Failure(format!(
                            "no dead letter with id {}",
                            shown.join(", ")
                        )));
                    }
                }
                DeadLetterCommand::Purge { id, selection } => {
                    let removed = if selection.all {
                        store.purge(None).await?
                    } else if selection.is_set() {
                        let ids = selection.ids(&*db).await?;
                        let bar = progress(ids.len() as u64, cli.json, "purging");
                        let mut removed = 0;
                        for id in ids {
                            removed += store.purge(Some(id)).await?;
                            bar.inc(1);
                        }
                        bar.finish_and_clear();
                        removed
                    } else {
                        let id = id.unwrap_or_default();
                        let removed = store.purge(Some(DeadLetterId(id))).await?;
                        if removed == 0 {
                            return Err(Failure(format!("no dead letter with id {id}")));
                        }
                        removed
                    };
                    if cli.json {
                        println!("{}", serde_json::json!({ "purged": removed }));
                    } else {
                        println!("purged {removed} dead letter(s)");
                    }
                }
            }
        }
        Command::Events {
            command:
                EventsCommand::Tail {
                    after,
                    limit,
                    follow,
                    poll_ms,
                },
        } => tail(&*db, after, limit, follow, poll_ms, cli.json).await?,
        Command::Serve(args) => serve(db, args, cli.json).await?,
        Command::Cdc { .. } => unreachable!("handled before the outbox is opened"),
    }
    Ok(())
}

/// `cdc lag`: the server's replication slots, and a warning (on stderr) for each one at risk.
async fn cdc_lag(url: &str, slot: Option<&str>, json: bool) -> Result<(), Failure> {
    let shown = redact(url);
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(Failure(format!(
            "`cdc lag` reads PostgreSQL's replication slots: give a `postgres://` URL, not `{shown}`"
        )));
    }
    let cannot = |e: &dyn std::fmt::Display| {
        Failure(format!("cannot connect to PostgreSQL at {shown}: {e}"))
    };
    let options = sqlx::postgres::PgConnectOptions::from_str(url).map_err(|e| cannot(&e))?;
    let pool = outbox::postgres::connect_with(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5)),
        options,
    )
    .await
    .map_err(|e| cannot(&e))?;
    let slots = match slot {
        Some(slot) => vec![herald_cdc::lag::slot_lag(&pool, slot).await?],
        None => herald_cdc::lag::slots(&pool).await?,
    };
    if json {
        let rows: Vec<serde_json::Value> = slots
            .iter()
            .map(|s| {
                serde_json::json!({
                    "slot": s.slot,
                    "slot_type": s.slot_type,
                    "plugin": s.plugin,
                    "database": s.database,
                    "active": s.active,
                    "active_pid": s.active_pid,
                    "consumer_pid": s.consumer_pid,
                    "in_use": s.in_use(),
                    "restart_lsn": s.restart_lsn.map(|l| l.to_string()),
                    "confirmed_flush_lsn": s.confirmed_flush_lsn.map(|l| l.to_string()),
                    "lag_bytes": s.lag_bytes,
                    "retained_bytes": s.retained_bytes,
                    "wal_status": s.wal_status,
                    "warning": s.warning(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if slots.is_empty() {
        println!("no replication slots");
    } else {
        println!(
            "{:<32}  {:<8}  {:<10}  {:<6}  {:>14}  {:>14}  wal_status",
            "slot", "type", "plugin", "in use", "lag bytes", "retained bytes"
        );
        for s in &slots {
            let bytes = |b: Option<u64>| b.map_or_else(|| "-".to_owned(), |b| b.to_string());
            println!(
                "{:<32}  {:<8}  {:<10}  {:<6}  {:>14}  {:>14}  {}",
                s.slot,
                s.slot_type,
                s.plugin.as_deref().unwrap_or("-"),
                if s.in_use() { "yes" } else { "no" },
                bytes(s.lag_bytes),
                bytes(s.retained_bytes),
                s.wal_status.as_deref().unwrap_or("-")
            );
        }
    }
    for warning in slots.iter().filter_map(herald_cdc::SlotLag::warning) {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

fn print_event(event: &herald_core::feed::StoredEvent, json: bool) -> Result<(), Failure> {
    if json {
        println!("{}", serde_json::to_string(event)?);
    } else {
        println!(
            "{:>8}  {}  {:<10}  {}  {}",
            event.position,
            event.occurred_at.format("%Y-%m-%d %H:%M:%S%.3f"),
            event.status,
            event.message_type,
            event.payload
        );
    }
    Ok(())
}

/// `events tail`: one read, or with `--follow` a catch-up (progress on a terminal) and then a
/// wait for new events, until Ctrl-C. With `--json`, one read prints a JSON array and `--follow`
/// prints one JSON object per line.
async fn tail(
    db: &dyn OutboxOps,
    after: i64,
    limit: usize,
    follow: bool,
    poll_ms: u64,
    json: bool,
) -> Result<(), Failure> {
    if !follow {
        let events = db.events_after(after, limit).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&events)?);
        } else {
            for event in &events {
                print_event(event, false)?;
            }
            match events.last() {
                Some(last) => eprintln!("next: --after {}", last.position),
                None => eprintln!("no events after {after}"),
            }
        }
        return Ok(());
    }
    let limit = limit.max(1);
    let mut position = after;
    let bar = if json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} catching up: {pos} events read, at position {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar
    };
    let mut caught_up = false;
    loop {
        let events = tokio::select! {
            read = db.events_after(position, limit) => read?,
            _ = tokio::signal::ctrl_c() => break,
        };
        for event in &events {
            bar.suspend(|| print_event(event, json))?;
            position = event.position;
        }
        bar.inc(events.len() as u64);
        bar.set_message(position.to_string());
        if events.len() < limit {
            if !caught_up {
                caught_up = true;
                bar.finish_and_clear();
                if !json {
                    eprintln!(
                        "caught up at position {position}; waiting for new events (Ctrl-C to stop)"
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(poll_ms.max(10))) => {}
                _ = tokio::signal::ctrl_c() => break,
            }
        }
    }
    bar.finish_and_clear();
    if !json {
        eprintln!("next: --after {position}");
    }
    Ok(())
}

/// `serve`: the console and the feed of `herald-web` on this database.
async fn serve(db: Box<dyn OutboxOps>, args: ServeArgs, json: bool) -> Result<(), Failure> {
    let mut web = HeraldWeb::builder(Arc::from(db))
        .read_only(args.read_only)
        .max_wait(Duration::from_secs(args.max_wait));
    if let Some(token) = args.token {
        web = web.access_token(Secret::new(token));
    }
    if let Some(header) = &args.proxy_header {
        web = web.proxy_header(header);
    }
    for consumer in &args.feed_consumers {
        let Some((name, token)) = consumer.split_once('=') else {
            // Never echo the value: it holds a token.
            return Err(Failure(
                "--feed-consumer takes NAME=TOKEN (one value has no `=`)".to_owned(),
            ));
        };
        web = web.feed_consumer(name.trim(), Secret::new(token.trim()));
    }
    if let Some(path) = &args.positions {
        let store = FilePositionStore::open(path).await?;
        web = web.positions(Arc::new(store));
    }
    // The Prometheus `/metrics` router (herald_web::metrics) joins here with `web.merge(..)`
    // once it exists; `herald serve` has no runtime of its own, so it would export the
    // store's gauges only.
    let web = web.build()?;
    web.check_bind(args.bind)?;
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| Failure(format!("cannot listen on {}: {e}", args.bind)))?;
    let addr = listener.local_addr()?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "listening": format!("http://{addr}/"), "read_only": args.read_only })
        );
    } else {
        println!(
            "herald console and event feed on http://{addr}/{}",
            if args.read_only { " (read-only)" } else { "" }
        );
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    herald_web::serve_on(web, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("herald: {message}");
            ExitCode::FAILURE
        }
    }
}
