//! A web sign-up with the transactional outbox, on the embedded SQLite default (no setup).
//!
//! The axum 0.8 endpoint `POST /signup` inserts the user row and publishes its `UserSignedUp` event
//! in one database transaction: the event exists if and only if the user does. A relay delivers the
//! event to the handler, which "sends" the welcome e-mail (prints and records it).
//!
//! - `cargo run --example web_signup` serves on `127.0.0.1:0`, signs one user up over HTTP, waits
//!   until the e-mail is sent, prints what happened and shuts down.
//! - `cargo run --example web_signup -- --serve [PORT]` keeps serving on `127.0.0.1:PORT` (default
//!   3000) until Ctrl-C:
//!   `curl -i -X POST localhost:3000/signup -H 'content-type: application/json' -d '{"email":"kim@example.com"}'`

use axum::extract::State as WebState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use herald::outbox::{self, OutboxPublishError, SqliteOutbox};
use herald::sqlx::{self, SqlitePool};
use herald::{async_handler, Event, Herald, State};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "user.signed_up")]
struct UserSignedUp {
    user_id: i64,
    email: String,
}

/// Stands in for an e-mail service: records what it "sent".
#[derive(Clone, Default)]
struct Mailer {
    sent: Arc<Mutex<Vec<String>>>,
}

impl Mailer {
    fn send(&self, to: &str, subject: &str) {
        println!("  [mailer] to {to}: {subject}");
        if let Ok(mut sent) = self.sent.lock() {
            sent.push(to.to_owned());
        }
    }

    fn sent(&self) -> Vec<String> {
        self.sent
            .lock()
            .map(|sent| sent.clone())
            .unwrap_or_default()
    }
}

#[async_handler]
async fn send_welcome_email(event: UserSignedUp, State(mailer): State<Mailer>) {
    mailer.send(
        &event.email,
        &format!("Welcome aboard, user #{}!", event.user_id),
    );
}

/// The web app's state.
#[derive(Clone)]
struct App {
    pool: SqlitePool,
    outbox: SqliteOutbox,
}

#[derive(Deserialize)]
struct SignUpForm {
    email: String,
}

#[derive(Serialize)]
struct SignedUp {
    user_id: i64,
}

/// Why a sign-up failed, as the client sees it.
#[derive(Debug, thiserror::Error)]
enum SignUpError {
    #[error("`{0}` is already signed up")]
    Taken(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Outbox(#[from] OutboxPublishError<UserSignedUp>),
}

impl IntoResponse for SignUpError {
    fn into_response(self) -> Response {
        let status = match self {
            SignUpError::Taken(_) => StatusCode::CONFLICT,
            SignUpError::Database(_) | SignUpError::Outbox(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, self.to_string()).into_response()
    }
}

/// The user row and its event, in one transaction: both commit or neither does.
async fn sign_up(
    WebState(app): WebState<App>,
    Json(form): Json<SignUpForm>,
) -> Result<(StatusCode, Json<SignedUp>), SignUpError> {
    let mut tx = app.pool.begin().await?;
    let user_id: i64 = sqlx::query_scalar("INSERT INTO users (email) VALUES (?1) RETURNING id")
        .bind(&form.email)
        .fetch_one(&mut *tx)
        .await
        .map_err(|error| match error.as_database_error() {
            Some(db) if db.is_unique_violation() => SignUpError::Taken(form.email.clone()),
            _ => SignUpError::Database(error),
        })?;
    app.outbox
        .publish(
            &mut *tx,
            UserSignedUp {
                user_id,
                email: form.email,
            },
        )
        .await?;
    tx.commit().await?; // only now can the relay see the event
    Ok((StatusCode::CREATED, Json(SignedUp { user_id })))
}

/// A one-request HTTP/1.1 client: `POST path` with a JSON body; returns the status line and body.
async fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &str,
) -> Result<(String, String), std::io::Error> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// `--serve [PORT]`: the port to keep serving on.
fn serve_port() -> Result<Option<u16>, String> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None => Ok(None),
        Some("--serve") => match args.next() {
            None => Ok(Some(3000)),
            Some(port) => port
                .parse()
                .map(Some)
                .map_err(|_| format!("`{port}` is not a port: use `--serve 3000`")),
        },
        Some(other) => Err(format!(
            "unknown argument `{other}`: run without arguments, or with `--serve [PORT]`"
        )),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let serve = serve_port()?;
    let dir = tempfile::tempdir()?;
    let pool = outbox::sqlite::connect(dir.path().join("app.db")).await?;
    let outbox = SqliteOutbox::new(pool.clone()).await?; // applies Herald's migrations
    sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE)")
        .execute(&pool)
        .await?;

    let mailer = Mailer::default();
    let herald = Herald::builder()
        .handlers_under(module_path!())
        .state(mailer.clone())
        .dead_letters(outbox.dead_letters())
        .build()?;
    let relay = outbox
        .relay(&herald)
        .poll_interval(Duration::from_millis(20))
        .start();

    let app = Router::new()
        .route("/signup", post(sign_up))
        .with_state(App {
            pool: pool.clone(),
            outbox: outbox.clone(),
        });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", serve.unwrap_or(0))).await?;
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
    });
    println!("serving POST http://{addr}/signup");

    let outcome = if serve.is_some() {
        println!("Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
        Ok(())
    } else {
        sign_up_once(addr, &mailer).await
    };

    let _ = stop.send(true);
    server.await??;
    relay.stop().await;
    herald.shutdown(Duration::from_secs(5)).await;
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&pool)
        .await?;
    let status = outbox.status().await?;
    println!(
        "users: {users}; outbox: {} processed, {} pending, {} failed; e-mails sent: {:?}",
        status.processed,
        status.pending,
        status.failed,
        mailer.sent()
    );
    pool.close().await;
    outcome
}

/// Signs `kim@example.com` up over HTTP (twice: the second is refused and publishes nothing), then
/// waits until the welcome e-mail went out.
async fn sign_up_once(addr: SocketAddr, mailer: &Mailer) -> Result<(), Box<dyn std::error::Error>> {
    for _ in 0..2 {
        let (status, body) = post_json(addr, "/signup", r#"{"email":"kim@example.com"}"#).await?;
        println!("  [client] POST /signup -> {status} {body}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while mailer.sent().is_empty() {
        if Instant::now() > deadline {
            return Err("the welcome e-mail was not sent within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A moment for a wrong second e-mail to show up, if the refused sign-up had published one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = mailer.sent();
    if sent != ["kim@example.com"] {
        return Err(format!("expected one welcome e-mail, sent: {sent:?}").into());
    }
    Ok(())
}
