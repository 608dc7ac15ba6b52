//! `herald`: look into a Herald database (SQLite, PostgreSQL, MySQL or MariaDB) from the shell.
//!
//! ```text
//! herald --database-url sqlite:app.db outbox status
//! herald --database-url postgres://localhost/app dead-letters list
//! herald --database-url mysql://app@localhost/app outbox status
//! herald --database-url postgres://localhost/app dead-letters redrive 42
//! herald --database-url sqlite:app.db events tail --after 100
//! ```
//!
//! `dead-letters redrive` needs no handler code: it moves the dead letter back into the outbox,
//! due now and for its handler only, and the application's running relay delivers it.

use clap::{Parser, Subcommand};
use herald_core::feed::OutboxOps;
use herald_core::outbox::{self, MySqlOutbox, OutboxError, PgOutbox, SqliteOutbox};
use herald_core::sqlx;
use herald_core::{DeadLetter, DeadLetterId};
use std::process::ExitCode;
use std::str::FromStr;

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
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// Pending, in flight, retrying, failed, processed, and the lag (age of the oldest pending row).
    Status,
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
    /// Puts it back into the outbox for its handler; the running relay delivers it.
    Redrive {
        /// Its id.
        id: i64,
    },
    /// Deletes one dead letter, or all with `--all`.
    Purge {
        /// Its id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Delete every dead letter.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Stored events after an offset (exclusive), in commit order.
    Tail {
        /// The last position you have read (0: from the start).
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
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
                DeadLetterCommand::Redrive { id } => match db.redrive(DeadLetterId(id)).await? {
                    Some(row) => println!(
                        "dead letter {id} is back in the outbox (row {row}); the running relay delivers it"
                    ),
                    None => return Err(Failure(format!("no dead letter with id {id}"))),
                },
                DeadLetterCommand::Purge { id, all } => {
                    let target = if all { None } else { id.map(DeadLetterId) };
                    let removed = store.purge(target).await?;
                    if removed == 0 && target.is_some() {
                        return Err(Failure(format!(
                            "no dead letter with id {}",
                            id.unwrap_or_default()
                        )));
                    }
                    println!("purged {removed} dead letter(s)");
                }
            }
        }
        Command::Events {
            command: EventsCommand::Tail { after, limit },
        } => {
            let events = db.events_after(after, limit).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&events)?);
            } else {
                for event in &events {
                    println!(
                        "{:>8}  {}  {:<10}  {}  {}",
                        event.position,
                        event.occurred_at.format("%Y-%m-%d %H:%M:%S%.3f"),
                        event.status,
                        event.message_type,
                        event.payload
                    );
                }
                match events.last() {
                    Some(last) => eprintln!("next: --after {}", last.position),
                    None => eprintln!("no events after {after}"),
                }
            }
        }
    }
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
