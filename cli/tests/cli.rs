//! The `herald` binary against a real SQLite file and the machine's MySQL/MariaDB: status, dead
//! letters (list, show, redrive, purge), events tail, and the errors for a bad URL, a database
//! without the schema, and URLs with passwords; `cdc lag` on the machine's PostgreSQL
//! (`wal_level = logical`).

use herald_core::outbox::SqliteOutbox;
use herald_core::{
    DeadLetter, DeadLetterId, DeadLetterReason, DeadLetterStore, Envelope, FailureKind,
};
use std::process::Command;

fn herald(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("--database-url")
        .arg(url)
        .args(args)
        .output()
        .expect("run herald");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn stuck_keys_on_a_sqlite_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.db");
    let pool = herald_core::outbox::sqlite::connect(&path)
        .await
        .expect("open");
    SqliteOutbox::new(pool.clone()).await.expect("migrate");
    // The key's first message failed three times and waits; one more waits behind it.
    herald_core::sqlx::raw_sql(
        "INSERT INTO herald_outbox (message_id, message_type, key, payload, occurred_at, fail_count,
                                    last_error, failed_at, next_attempt_at)
         VALUES ('0190b2a8-0000-7000-8000-0000000000b1', 'cli.refund_requested', 'order-9', '{}',
                 '2026-01-01T00:00:00.000Z', 3, 'psp timeout', '2026-01-01T00:00:09.000Z',
                 99999999999999),
                ('0190b2a8-0000-7000-8000-0000000000b2', 'cli.refund_requested', 'order-9', '{}',
                 '2026-01-01T00:00:01.000Z', 0, NULL, NULL, 0)",
    )
    .execute(&pool)
    .await
    .expect("a stuck key");
    pool.close().await;
    let url = format!("sqlite:{}", path.display());
    let (ok, out, err) = herald(&url, &["outbox", "stuck"]);
    assert!(ok, "{err}");
    let line = out.lines().nth(1).expect("one key under the header");
    for part in [
        "order-9",
        "cli.refund_requested",
        "3",
        "1",
        "2026-01-01 00:00:09",
        "psp timeout",
    ] {
        assert!(line.contains(part), "{part} in {out}");
    }
    let (ok, out, _) = herald(&url, &["--json", "outbox", "stuck", "--limit", "5"]);
    let listed: serde_json::Value = serde_json::from_str(&out).expect("JSON list");
    assert!(
        ok && listed[0]["key"] == "order-9" && listed[0]["waiting"] == 1,
        "{out}"
    );
    assert_eq!(listed[0]["head"], 1, "{out}");
}

#[tokio::test]
async fn status_dead_letters_and_events_on_a_sqlite_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.db");
    let pool = herald_core::outbox::sqlite::connect(&path)
        .await
        .expect("open");
    let outbox = SqliteOutbox::new(pool.clone()).await.expect("migrate");
    let now = chrono::Utc::now();
    let id = outbox
        .dead_letters()
        .put(DeadLetter {
            id: DeadLetterId(0),
            envelope: Envelope::new("cli.sms_requested"),
            payload: serde_json::json!({ "phone": "010" }),
            handler: "app::send_sms".into(),
            reason: DeadLetterReason::Failed,
            failure: Some(FailureKind::PermanentError),
            attempts: 3,
            first_error: Some("partner 503".into()),
            last_error: Some("partner 503".into()),
            first_failed_at: Some(now),
            last_failed_at: Some(now),
            dead_lettered_at: now,
        })
        .await
        .expect("put");
    pool.close().await;
    let url = format!("sqlite:{}", path.display());

    let (ok, out, _) = herald(&url, &["outbox", "status"]);
    assert!(ok && out.contains("dead letters  1"), "{out}");
    let (ok, out, _) = herald(&url, &["outbox", "stuck"]);
    assert!(ok && out.contains("no stuck keys"), "{out}");
    let (ok, out, _) = herald(&url, &["dead-letters", "list"]);
    assert!(
        ok && out.contains("app::send_sms") && out.contains("partner 503"),
        "{out}"
    );
    assert!(
        out.contains("permanent_error"),
        "the failure kind is listed: {out}"
    );
    let (ok, out, _) = herald(&url, &["--json", "dead-letters", "list"]);
    let listed: serde_json::Value = serde_json::from_str(&out).expect("JSON list");
    assert!(ok && listed[0]["failure"] == "permanent_error", "{out}");
    let (ok, out, _) = herald(&url, &["dead-letters", "show", &id.to_string()]);
    assert!(ok && out.contains("\"phone\": \"010\""), "{out}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("JSON entry");
    assert_eq!(shown["failure"], "permanent_error", "{out}");
    let (ok, out, _) = herald(&url, &["dead-letters", "redrive", &id.to_string()]);
    assert!(ok && out.contains("back in the outbox"), "{out}");
    let (ok, out, _) = herald(&url, &["--json", "outbox", "status"]);
    assert!(ok && out.contains("\"pending\": 1"), "{out}");
    let (ok, out, _) = herald(&url, &["events", "tail", "--after", "0"]);
    assert!(ok && out.contains("cli.sms_requested"), "{out}");
    let (ok, _, err) = herald(&url, &["dead-letters", "purge", "99"]);
    assert!(!ok && err.contains("no dead letter with id 99"), "{err}");
    let (ok, out, _) = herald(&url, &["dead-letters", "purge", "--all"]);
    assert!(ok && out.contains("purged 0"), "{out}");
}

#[test]
fn a_bad_url_and_a_database_without_the_schema_are_clear_errors() {
    let (ok, _, err) = herald("oracle://x", &["outbox", "status"]);
    assert!(!ok && err.contains("unsupported database URL"), "{err}");
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = format!("sqlite:{}", dir.path().join("missing.db").display());
    let (ok, _, err) = herald(&missing, &["outbox", "status"]);
    assert!(!ok && err.contains("no SQLite database"), "{err}");
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").expect("empty file");
    let (ok, _, err) = herald(
        &format!("sqlite:{}", empty.display()),
        &["outbox", "status"],
    );
    assert!(!ok && err.contains("no Herald schema"), "{err}");
}

/// The machine's PostgreSQL, as the core tests find it (`HERALD_TEST_DATABASE_URL`).
fn postgres_url() -> String {
    std::env::var("HERALD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[test]
fn a_database_password_is_never_printed() {
    const SECRET: &str = "s3cret-Pw";
    // A reachable server (trust authentication accepts any password) whose database has no
    // Herald schema in its default search path: the error shows the URL.
    let mut reachable = url::Url::parse(&postgres_url()).expect("valid HERALD_TEST_DATABASE_URL");
    reachable.set_password(Some(SECRET)).expect("password");
    let refused = format!("postgres://alice:{SECRET}@127.0.0.1:{}/app", closed_port());
    let in_query = format!(
        "postgres://alice@127.0.0.1:{}/app?password={SECRET}&sslmode=disable",
        closed_port()
    );
    for url in [reachable.to_string(), refused, in_query] {
        let (ok, _, err) = herald(&url, &["outbox", "status"]);
        assert!(!ok, "{err}");
        assert!(!err.contains(SECRET), "the password leaked: {err}");
        assert!(err.contains("127.0.0.1"), "the host is shown: {err}");
        let user = url::Url::parse(&url).expect("url").username().to_owned();
        assert!(
            err.contains(&format!("{user}:***@")) || err.contains("password=***"),
            "{err}"
        );
    }
}

#[test]
fn an_unreachable_server_is_reported_as_such_and_quickly() {
    let url = format!("postgres://alice@127.0.0.1:{}/app", closed_port());
    let started = std::time::Instant::now();
    let (ok, _, err) = herald(&url, &["outbox", "status"]);
    let took = started.elapsed();
    assert!(!ok);
    assert!(
        err.to_lowercase().contains("connection refused"),
        "the real cause is shown: {err}"
    );
    assert!(!err.contains("pool timed out"), "{err}");
    // The pool used to retry for its whole 5 s acquire timeout.
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
}

/// A logical replication slot of the test, dropped at its end even on panic (a forgotten slot
/// pins WAL on the shared server).
struct Slot(String);

impl Drop for Slot {
    fn drop(&mut self) {
        let name = self.0.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let pool = herald_core::sqlx::PgPool::connect(&postgres_url()).await?;
                herald_core::sqlx::query(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                )
                .bind(&name)
                .execute(&pool)
                .await
                .map(|_| ())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "!! could not drop replication slot `{}`: drop it by hand",
                self.0
            );
        }
    }
}

#[tokio::test]
async fn cdc_lag_lists_the_slots_and_warns_about_an_abandoned_one() {
    let pool = herald_core::sqlx::PgPool::connect(&postgres_url())
        .await
        .expect("PostgreSQL (HERALD_TEST_DATABASE_URL) is required for this test");
    let slot = Slot(format!("herald_cli_lag_{}", std::process::id()));
    herald_core::sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
        .bind(&slot.0)
        .execute(&pool)
        .await
        .expect("a logical slot (wal_level = logical)");
    herald_core::sqlx::query("SELECT pg_logical_emit_message(true, 'herald-cli-test', 'x')")
        .execute(&pool)
        .await
        .expect("some WAL");

    let (ok, out, err) = herald(&postgres_url(), &["cdc", "lag"]);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with(&slot.0))
        .unwrap_or_else(|| panic!("the slot is listed: {out}"));
    assert!(
        line.contains("logical") && line.contains("pgoutput") && line.contains(" no "),
        "{line}"
    );
    assert!(
        err.contains(&format!("SELECT pg_drop_replication_slot('{}')", slot.0)),
        "an abandoned slot is named with the fix: {err}"
    );

    let (ok, out, err) = herald(
        &postgres_url(),
        &["--json", "cdc", "lag", "--slot", &slot.0],
    );
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(rows[0]["slot"], slot.0.as_str());
    assert_eq!(rows[0]["in_use"], false);
    assert!(
        rows[0]["lag_bytes"].as_u64().is_some_and(|b| b > 0),
        "{rows}"
    );
    assert!(
        rows[0]["warning"]
            .as_str()
            .is_some_and(|w| w.contains("no consumer")),
        "{rows}"
    );

    let (ok, _, err) = herald(
        &postgres_url(),
        &["cdc", "lag", "--slot", "no_such_slot_here"],
    );
    assert!(
        !ok && err.contains("pg_create_logical_replication_slot"),
        "{err}"
    );
    let (ok, _, err) = herald("sqlite:app.db", &["cdc", "lag"]);
    assert!(!ok && err.contains("postgres://"), "{err}");
}

/// The machine's MySQL/MariaDB, as the core tests find it (`HERALD_TEST_MYSQL_URL`).
fn mysql_url() -> String {
    std::env::var("HERALD_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

#[tokio::test]
async fn status_dead_letters_and_events_on_mysql() {
    use herald_core::outbox::MySqlOutbox;
    use herald_core::sqlx;
    let mut url = url::Url::parse(&mysql_url()).expect("valid HERALD_TEST_MYSQL_URL");
    let database = format!("{}_cli", url.path().trim_start_matches('/'));
    let admin = herald_core::outbox::mysql::connect(url.as_str())
        .await
        .unwrap_or_else(|e| panic!("MySQL/MariaDB at {url} is required for this test: {e}"));
    sqlx::raw_sql(&format!(
        "DROP DATABASE IF EXISTS `{database}`; CREATE DATABASE `{database}`"
    ))
    .execute(&admin)
    .await
    .expect("create database");
    admin.close().await;
    url.set_path(&database);
    let pool = herald_core::outbox::mysql::connect(url.as_str())
        .await
        .expect("connect");
    let outbox = MySqlOutbox::new(pool.clone()).await.expect("migrate");
    let now = chrono::Utc::now();
    let id = outbox
        .dead_letters()
        .put(DeadLetter {
            id: DeadLetterId(0),
            envelope: Envelope::new("cli.mail_requested"),
            payload: serde_json::json!({ "to": "ada@example.org" }),
            handler: "app::send_mail".into(),
            reason: DeadLetterReason::Failed,
            failure: Some(FailureKind::Timeout),
            attempts: 2,
            first_error: Some("smtp timeout".into()),
            last_error: Some("smtp timeout".into()),
            first_failed_at: Some(now),
            last_failed_at: Some(now),
            dead_lettered_at: now,
        })
        .await
        .expect("put");
    pool.close().await;
    let mariadb = url.as_str().replacen("mysql://", "mariadb://", 1);

    for url in [url.to_string(), mariadb] {
        let (ok, out, err) = herald(&url, &["outbox", "status"]);
        assert!(ok && out.contains("dead letters  1"), "{out}{err}");
    }
    let url = url.to_string();
    let (ok, out, _) = herald(&url, &["dead-letters", "list"]);
    assert!(
        ok && out.contains("app::send_mail") && out.contains("timeout"),
        "{out}"
    );
    let (ok, out, _) = herald(&url, &["dead-letters", "show", &id.to_string()]);
    assert!(ok && out.contains("ada@example.org"), "{out}");
    let (ok, out, _) = herald(&url, &["dead-letters", "redrive", &id.to_string()]);
    assert!(ok && out.contains("back in the outbox"), "{out}");
    let (ok, out, _) = herald(&url, &["--json", "outbox", "status"]);
    assert!(ok && out.contains("\"pending\": 1"), "{out}");
    let (ok, out, _) = herald(&url, &["events", "tail", "--after", "0"]);
    assert!(ok && out.contains("cli.mail_requested"), "{out}");
}

#[test]
fn a_mysql_password_is_never_printed() {
    const SECRET: &str = "s3cret-My";
    // A reachable server that refuses the password, and a closed port.
    let mut reachable = url::Url::parse(&mysql_url()).expect("valid HERALD_TEST_MYSQL_URL");
    reachable.set_username("herald_nobody").expect("user");
    reachable.set_password(Some(SECRET)).expect("password");
    let refused = format!("mariadb://alice:{SECRET}@127.0.0.1:{}/app", closed_port());
    for url in [reachable.to_string(), refused] {
        let (ok, _, err) = herald(&url, &["outbox", "status"]);
        assert!(!ok, "{err}");
        assert!(!err.contains(SECRET), "the password leaked: {err}");
        assert!(err.contains("127.0.0.1"), "the host is shown: {err}");
        assert!(err.contains(":***@"), "{err}");
    }
}

async fn sqlite_with_dead_letters(
    dir: &std::path::Path,
    letters: &[(&str, FailureKind)],
) -> String {
    let path = dir.join("app.db");
    let pool = herald_core::outbox::sqlite::connect(&path)
        .await
        .expect("open");
    let outbox = SqliteOutbox::new(pool.clone()).await.expect("migrate");
    let now = chrono::Utc::now();
    for (handler, kind) in letters {
        outbox
            .dead_letters()
            .put(DeadLetter {
                id: DeadLetterId(0),
                envelope: Envelope::new("cli.order_placed"),
                payload: serde_json::json!({ "order": "A-1" }),
                handler: (*handler).into(),
                reason: DeadLetterReason::Failed,
                failure: Some(*kind),
                attempts: 1,
                first_error: Some("boom".into()),
                last_error: Some("boom".into()),
                first_failed_at: Some(now),
                last_failed_at: Some(now),
                dead_lettered_at: now,
            })
            .await
            .expect("put");
    }
    pool.close().await;
    format!("sqlite:{}", path.display())
}

#[tokio::test]
async fn redrive_and_purge_many_with_json_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_with_dead_letters(
        dir.path(),
        &[
            ("app::a", FailureKind::Error),
            ("app::a", FailureKind::Timeout),
            ("app::b", FailureKind::Error),
            ("app::b", FailureKind::Panic),
        ],
    )
    .await;
    let (ok, out, err) = herald(
        &url,
        &["--json", "dead-letters", "redrive", "--handler", "app::a"],
    );
    assert!(ok, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        answer["redriven"].as_array().expect("array").len(),
        2,
        "{out}"
    );
    assert!(answer["redriven"][0]["outbox_row"].is_i64(), "{out}");
    // No progress bar off a terminal.
    assert!(!err.contains("re-driving"), "{err}");
    let (ok, out, _) = herald(
        &url,
        &["--json", "dead-letters", "purge", "--kind", "panic"],
    );
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).expect("JSON")["purged"],
        1
    );
    let (ok, out, _) = herald(&url, &["--json", "dead-letters", "list"]);
    let left: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert!(ok && left.as_array().expect("array").len() == 1, "{out}");
    let (ok, out, _) = herald(&url, &["--json", "outbox", "status"]);
    assert!(ok && out.contains("\"pending\": 2"), "{out}");
    // Several ids, one of them gone: the others are re-driven, the missing one is an error.
    let id = left[0]["id"].to_string();
    let (ok, out, err) = herald(&url, &["dead-letters", "redrive", &id, "999"]);
    assert!(
        !ok && out.contains("back in the outbox") && err.contains("no dead letter with id 999"),
        "{out}{err}"
    );
    let (ok, _, err) = herald(&url, &["dead-letters", "redrive", "1", "--all"]);
    assert!(!ok && err.contains("cannot be used with"), "{err}");
}

/// Starts `herald serve`, returns the child and the URL it printed.
fn start_serve(url: &str, args: &[&str], envs: &[(&str, &str)]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("--database-url")
        .arg(url)
        .arg("serve")
        .args(args)
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn herald serve");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the first line");
    (child, line)
}

/// A plain HTTP/1.1 request: status line and body.
fn http(addr: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer
}

#[tokio::test]
async fn serve_shows_the_console_and_the_feed_on_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url =
        sqlite_with_dead_letters(dir.path(), &[("app::send_mail", FailureKind::Timeout)]).await;
    let (ok, _, _) = herald(&url, &["dead-letters", "redrive", "--all"]);
    assert!(ok);
    let token = "feed-token-xyz";
    let (mut child, line) = start_serve(
        &url,
        &["--bind", "127.0.0.1:0", "--json", "--read-only"],
        &[("HERALD_FEED_CONSUMERS", &format!("billing={token}"))],
    );
    let started: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(started["read_only"], true);
    let listening = started["listening"].as_str().expect("url").to_owned();
    let addr = listening
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();

    let page = http(
        &addr,
        "GET /outbox HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("read-only"),
        "{page}"
    );
    let refused = http(
        &addr,
        "GET /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let feed = http(
        &addr,
        &format!("GET /events?after=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
    );
    assert!(
        feed.starts_with("HTTP/1.1 200") && feed.contains("cli.order_placed"),
        "{feed}"
    );
    let _ = child.kill();
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains(token) && !line.contains(token),
        "the token leaked: {stderr}{line}"
    );
}

#[tokio::test]
async fn serve_refuses_a_public_address_without_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_with_dead_letters(dir.path(), &[]).await;
    let (ok, _, err) = herald(&url, &["serve", "--bind", "0.0.0.0:0"]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("refusing to serve on 0.0.0.0")
            && err.contains("--token")
            && err.contains("127.0.0.1"),
        "{err}"
    );

    let secret = "console-s3cret";
    let (mut child, line) = start_serve(
        &url,
        &["--bind", "0.0.0.0:0"],
        &[("HERALD_WEB_TOKEN", secret)],
    );
    assert!(
        line.contains("herald console and event feed on http://0.0.0.0:"),
        "{line}"
    );
    let port = line
        .trim()
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .expect("port")
        .to_owned();
    let page = http(
        &format!("127.0.0.1:{port}"),
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        page.starts_with("HTTP/1.1 303") && page.contains("location: /login"),
        "{page}"
    );
    let _ = child.kill();
    let output = child.wait_with_output().expect("wait");
    assert!(!line.contains(secret) && !String::from_utf8_lossy(&output.stderr).contains(secret));
}

#[tokio::test]
async fn events_tail_follow_prints_new_events_as_json_lines() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_with_dead_letters(
        dir.path(),
        &[
            ("app::a", FailureKind::Error),
            ("app::b", FailureKind::Error),
        ],
    )
    .await;
    let (ok, _, _) = herald(&url, &["dead-letters", "redrive", "--all"]);
    assert!(ok);
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "--database-url",
            &url,
            "--json",
            "events",
            "tail",
            "--follow",
            "--limit",
            "1",
            "--poll-ms",
            "20",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first: serde_json::Value =
        serde_json::from_str(&lines.next().expect("line").expect("read")).expect("JSON");
    let second: serde_json::Value =
        serde_json::from_str(&lines.next().expect("line").expect("read")).expect("JSON");
    assert!(first["position"].as_i64() < second["position"].as_i64());
    let _ = child.kill();
    let _ = child.wait();
}
