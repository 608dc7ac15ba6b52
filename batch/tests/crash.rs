//! A good batch imported exactly once across a crash: the importer runs in a child process (this
//! test binary again) whose handler commits its effect with the durable inbox; the child is
//! killed with SIGKILL mid-import; the batch is imported again here. Every record's effect is
//! there exactly once, and there is one receipt with the full counts.

mod common;

use common::*;
use herald::inbox::SqliteInbox;
use herald::outbox::{self, SqliteOutbox};
use herald::sqlx::{self, SqlitePool};
use herald::{async_handler, HandlerError, Herald};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RECORDS: u64 = 40;
const CHILD_ENV: &str = "HERALD_BATCH_CRASH_CHILD";

/// Slow enough that the child is killed with records still to go.
#[async_handler(retry(max_attempts = 3, backoff = fixed(1ms)))]
async fn book_once(invoice: Invoice, inbox: SqliteInbox) -> Result<(), HandlerError> {
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut tx = inbox.begin().await?;
    sqlx::query("INSERT INTO effects (invoice_id) VALUES (?1)")
        .bind(invoice.id as i64)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn service(dir: &Path) -> (Herald, SqlitePool) {
    let pool = outbox::sqlite::connect(dir.join("service.db"))
        .await
        .expect("database");
    let store = SqliteOutbox::new(pool.clone()).await.expect("migrations");
    sqlx::query("CREATE TABLE IF NOT EXISTS effects (invoice_id INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .expect("effects table");
    let herald = Herald::builder()
        .handlers_under(module_path!())
        .state(pool.clone())
        .dead_letters(store.dead_letters())
        .build()
        .expect("herald");
    (herald, pool)
}

fn importer(herald: &Herald, dir: &Path) -> herald_batch::Importer {
    herald_batch::Importer::builder(herald, dir.join("inbox"))
        .ledger(dir.join("ledger"))
        .concurrency(4)
        .build()
        .expect("importer")
}

async fn effects(pool: &SqlitePool) -> Vec<i64> {
    sqlx::query_scalar("SELECT invoice_id FROM effects ORDER BY invoice_id")
        .fetch_all(pool)
        .await
        .expect("effects")
}

/// The child's part: import the batch (and be killed while at it).
#[tokio::test]
async fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Only the child process runs this.
    };
    let dir = Path::new(&dir);
    let (herald, _pool) = service(dir).await;
    let outcome = importer(&herald, dir).import("crash").await;
    panic!("the child was meant to be killed before it finished: {outcome:?}");
}

#[tokio::test]
async fn a_good_batch_is_imported_exactly_once_across_a_kill_9() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path();
    std::fs::create_dir_all(dir.join("inbox")).expect("inbox");
    let exporter = herald_batch::Exporter::builder(dir.join("inbox"))
        .build()
        .expect("exporter");
    exporter.export("crash", invoices(RECORDS)).expect("export");
    let (herald, pool) = service(dir).await;

    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("child");
    let started = Instant::now();
    loop {
        let done = effects(&pool).await.len();
        if done >= 8 {
            break;
        }
        assert!(
            child.try_wait().expect("child").is_none(),
            "the child ended before it was killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the child made no progress"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let before = effects(&pool).await.len() as u64;
    assert!(
        before < RECORDS,
        "the child finished before the kill ({before} records)"
    );
    assert!(
        !receipt_exists(&dir.join("inbox"), "crash"),
        "a receipt before every record was handled"
    );

    let receipt = imported(
        importer(&herald, dir)
            .import("crash")
            .await
            .expect("import again"),
    );
    assert_eq!(
        (receipt.records, receipt.succeeded, receipt.dead_lettered),
        (RECORDS, RECORDS, 0)
    );
    let expected: Vec<i64> = (1..=RECORDS as i64).collect();
    assert_eq!(
        effects(&pool).await,
        expected,
        "each record's effect exactly once"
    );
    let receipts = std::fs::read_dir(dir.join("inbox"))
        .expect("inbox")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".receipt.json"))
        })
        .count();
    assert_eq!(receipts, 1);
    // Nothing of the first run in the dead letters: the duplicates were recognised, not failed.
    assert!(herald
        .dead_letters()
        .list(10)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        importer(&herald, dir).import("crash").await.expect("third"),
        herald_batch::ImportOutcome::AlreadyImported(receipt)
    );
    assert_eq!(effects(&pool).await.len() as u64, RECORDS);
}
