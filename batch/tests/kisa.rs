//! The seeds' KISA case, exactly: a file that exists but is empty, a truncated file, a file whose
//! checksum does not match, a marker without data. Each is refused before any record is handled,
//! reported (a dead letter for `herald.batch`, the rejection counter), and gets no receipt. Beside
//! them: a good batch imported once, an empty batch that says 0, an unknown message type.

mod common;

use common::*;
use herald::{async_handler, HandlerError, Herald, State};
use herald_batch::{ImportOutcome, RejectReason, BATCH_HANDLER};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use std::fs;
use std::sync::OnceLock;

#[async_handler]
async fn book_invoice(
    invoice: Invoice,
    State(effects): State<Effects>,
) -> Result<(), HandlerError> {
    effects.0.lock().expect("effects").push(invoice.id);
    Ok(())
}

fn herald(effects: &Effects) -> Herald {
    Herald::builder()
        .handlers_under(module_path!())
        .state(effects.clone())
        .build()
        .expect("herald")
}

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this test binary");
        snapshotter
    })
}

/// Exports a good batch of three invoices into the inbox, then lets `damage` spoil it, then
/// imports: returns the reason it was refused, after checking that it was refused whole.
async fn refused_after(
    id: &str,
    damage: impl FnOnce(&herald_batch::ExportedBatch),
) -> RejectReason {
    snapshotter();
    let dirs = Dirs::new();
    let effects = Effects::default();
    let herald = herald(&effects);
    let batch = dirs
        .exporter(&dirs.inbox)
        .export(id, invoices(3))
        .expect("export");
    damage(&batch);
    let importer = dirs.importer(&herald);
    let rejection = match importer.import(id).await.expect("import runs") {
        ImportOutcome::Rejected(rejection) => rejection,
        other => panic!("batch `{id}` was not refused: {other:?}"),
    };
    assert_eq!(rejection.batch_id.as_str(), id);
    // Nothing handled, no receipt, reported as a dead letter for the batch.
    assert_eq!(
        effects.ids(),
        Vec::<u64>::new(),
        "a record of a refused batch was handled"
    );
    assert!(
        !receipt_exists(&dirs.inbox, id),
        "a refused batch got a receipt"
    );
    let letters = dead_letters(&herald).await;
    let letter = letters
        .iter()
        .find(|l| l.handler == BATCH_HANDLER)
        .unwrap_or_else(|| panic!("no dead letter for the refused batch: {letters:?}"));
    assert_eq!(letter.payload["batch_id"], id);
    assert_eq!(letter.payload["reason"], rejection.reason.code());
    assert_eq!(
        letter.last_error.as_deref(),
        Some(rejection.reason.to_string().as_str())
    );
    assert_eq!(
        herald.ledger().total.accepted,
        0,
        "a record reached a handler"
    );
    // A poll does not report the same files again, and still writes no receipt.
    assert!(importer.poll().await.expect("poll").is_empty());
    assert!(!receipt_exists(&dirs.inbox, id));
    assert_eq!(dead_letters(&herald).await.len(), 1);
    rejection.reason
}

#[tokio::test]
async fn a_named_but_empty_file_is_refused() {
    let reason = refused_after("kisa-empty", |batch| {
        fs::write(&batch.data_path, b"").expect("empty the data file");
    })
    .await;
    assert_eq!(
        reason,
        RejectReason::EmptyData {
            data_file: "kisa-empty.jsonl".into(),
            records: 3
        }
    );
    assert!(reason
        .to_string()
        .contains("empty but the manifest's record count is 3"));
}

#[tokio::test]
async fn a_truncated_file_is_refused() {
    let reason = refused_after("kisa-truncated", |batch| {
        let data = fs::read(&batch.data_path).expect("read");
        fs::write(&batch.data_path, &data[..data.len() - 10]).expect("truncate");
    })
    .await;
    let RejectReason::SizeMismatch {
        expected, found, ..
    } = reason
    else {
        panic!("not a size mismatch: {reason:?}");
    };
    assert_eq!(found + 10, expected);
}

#[tokio::test]
async fn a_file_whose_checksum_does_not_match_is_refused_and_counted() {
    let reason = refused_after("kisa-checksum", |batch| {
        // Same size, same number of lines: only the checksum can tell.
        let mut data = fs::read(&batch.data_path).expect("read");
        let at = data.iter().position(|b| *b == b'1').expect("a digit");
        data[at] = b'9';
        fs::write(&batch.data_path, &data).expect("write");
    })
    .await;
    assert!(
        matches!(reason, RejectReason::ChecksumMismatch { .. }),
        "{reason:?}"
    );
    let counted = snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .any(|(key, _, _, value)| {
            key.key().name() == "herald_batch_rejected_total"
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "reason" && l.value() == "checksum_mismatch")
                && matches!(value, DebugValue::Counter(n) if n >= 1)
        });
    assert!(
        counted,
        "herald_batch_rejected_total{{reason=checksum_mismatch}} was not counted"
    );
}

#[tokio::test]
async fn a_marker_without_data_is_refused() {
    let reason = refused_after("kisa-no-data", |batch| {
        fs::remove_file(&batch.data_path).expect("remove the data file");
    })
    .await;
    assert_eq!(
        reason,
        RejectReason::MissingData {
            data_file: "kisa-no-data.jsonl".into()
        }
    );
}

#[tokio::test]
async fn a_marker_without_a_manifest_is_refused() {
    let reason = refused_after("kisa-no-manifest", |batch| {
        fs::remove_file(&batch.manifest_path).expect("remove the manifest");
    })
    .await;
    assert!(
        matches!(reason, RejectReason::MissingManifest { .. }),
        "{reason:?}"
    );
}

#[tokio::test]
async fn a_manifest_that_lies_about_the_count_is_refused() {
    let reason = refused_after("kisa-count", |batch| {
        // A manifest that agrees with the file's bytes and checksum but not its count, and a
        // marker naming that manifest (a sender that counted wrong).
        let mut manifest = batch.manifest.clone();
        manifest.records = 4;
        let json = serde_json::to_vec(&manifest).expect("json");
        fs::write(&batch.manifest_path, &json).expect("manifest");
        let marker = herald_batch::Marker {
            batch_id: manifest.batch_id.clone(),
            manifest_sha256: sha256(&json),
        };
        fs::write(
            &batch.marker_path,
            serde_json::to_vec(&marker).expect("json"),
        )
        .expect("marker");
    })
    .await;
    assert!(
        matches!(
            reason,
            RejectReason::CountMismatch {
                expected: 4,
                found: 3,
                ..
            }
        ),
        "{reason:?}"
    );
}

#[tokio::test]
async fn a_manifest_replaced_after_its_marker_is_refused() {
    let reason = refused_after("kisa-replaced", |batch| {
        let mut manifest = batch.manifest.clone();
        manifest.producer = "someone else".into();
        fs::write(
            &batch.manifest_path,
            serde_json::to_vec(&manifest).expect("json"),
        )
        .expect("manifest");
    })
    .await;
    assert!(
        matches!(reason, RejectReason::ManifestNotMarked { .. }),
        "{reason:?}"
    );
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn no_marker_means_not_ready_and_nothing_is_read() {
    let dirs = Dirs::new();
    let effects = Effects::default();
    let herald = herald(&effects);
    let batch = dirs
        .exporter(&dirs.inbox)
        .export("half-sent", invoices(2))
        .expect("export");
    fs::remove_file(&batch.marker_path).expect("remove the marker");
    let importer = dirs.importer(&herald);
    assert_eq!(
        importer.import("half-sent").await.expect("import"),
        ImportOutcome::NotReady
    );
    assert!(importer.poll().await.expect("poll").is_empty());
    assert!(effects.ids().is_empty());
    assert!(dead_letters(&herald).await.is_empty());
}

#[tokio::test]
async fn a_good_batch_is_imported_once_with_its_receipt() {
    let dirs = Dirs::new();
    let effects = Effects::default();
    let herald = herald(&effects);
    dirs.exporter(&dirs.inbox)
        .export("good", invoices(5))
        .expect("export");
    let importer = dirs.importer(&herald);
    let outcomes = importer.poll().await.expect("poll");
    assert_eq!(outcomes.len(), 1);
    let receipt = imported(outcomes.into_iter().next().expect("one").1);
    assert_eq!(
        (receipt.records, receipt.succeeded, receipt.dead_lettered),
        (5, 5, 0)
    );
    assert_eq!(effects.ids(), vec![1, 2, 3, 4, 5]);
    let written: herald_batch::BatchReceipt =
        serde_json::from_slice(&fs::read(dirs.inbox.join("good.receipt.json")).expect("receipt"))
            .expect("receipt JSON");
    assert_eq!(written, receipt);
    // The same batch id again: not imported twice, by this importer or a new one.
    assert_eq!(
        importer.import("good").await.expect("again"),
        ImportOutcome::AlreadyImported(receipt.clone())
    );
    let other = dirs.importer(&herald);
    assert!(other.poll().await.expect("poll").is_empty());
    assert_eq!(effects.ids(), vec![1, 2, 3, 4, 5]);
    assert!(dead_letters(&herald).await.is_empty());
}

#[tokio::test]
async fn an_empty_batch_that_says_zero_is_accepted() {
    let dirs = Dirs::new();
    let effects = Effects::default();
    let herald = herald(&effects);
    let batch = dirs
        .exporter(&dirs.inbox)
        .export("nothing-today", Vec::<Invoice>::new())
        .expect("export");
    assert_eq!((batch.manifest.records, batch.manifest.bytes), (0, 0));
    let receipt = imported(
        dirs.importer(&herald)
            .import("nothing-today")
            .await
            .expect("import"),
    );
    assert_eq!(
        (receipt.records, receipt.succeeded, receipt.dead_lettered),
        (0, 0, 0)
    );
    assert!(receipt_exists(&dirs.inbox, "nothing-today"));
    assert!(dead_letters(&herald).await.is_empty());
}

#[tokio::test]
async fn an_unknown_message_type_is_refused() {
    snapshotter();
    let dirs = Dirs::new();
    let effects = Effects::default();
    let herald = herald(&effects);
    let mut writer = dirs
        .exporter(&dirs.inbox)
        .writer("stranger", "batch_test.nobody_knows")
        .expect("writer");
    writer.push(&serde_json::json!({"id": 1})).expect("push");
    writer.finish().expect("finish");
    let outcome = dirs
        .importer(&herald)
        .import("stranger")
        .await
        .expect("import");
    let ImportOutcome::Rejected(rejection) = outcome else {
        panic!("not refused: {outcome:?}");
    };
    assert_eq!(
        rejection.reason,
        RejectReason::UnknownMessageType {
            message_type: "batch_test.nobody_knows".into()
        }
    );
    assert!(!receipt_exists(&dirs.inbox, "stranger"));
    assert_eq!(dead_letters(&herald).await.len(), 1);
}

#[tokio::test]
async fn the_importer_waits_for_the_marker() {
    let dirs = Dirs::new();
    let effects = Effects::default();
    let herald = herald(&effects);
    let batch = dirs
        .exporter(&dirs.inbox)
        .export("later", invoices(2))
        .expect("export");
    // The data file and manifest are there; the marker is held back.
    let held = dirs.root.path().join("held.done");
    fs::rename(&batch.marker_path, &held).expect("hold the marker");
    let importer = dirs.importer(&herald);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let poller = tokio::spawn(async move {
        importer
            .run_until(std::time::Duration::from_millis(10), async {
                let _ = stopped.await;
            })
            .await;
    });
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    assert!(
        effects.ids().is_empty(),
        "a record was handled before the marker"
    );
    assert!(!receipt_exists(&dirs.inbox, "later"));
    fs::rename(&held, &batch.marker_path).expect("the marker arrives");
    let started = std::time::Instant::now();
    while !receipt_exists(&dirs.inbox, "later") {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "never imported"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(effects.ids(), vec![1, 2]);
    stop.send(()).expect("stop");
    poller.await.expect("poller");
}
