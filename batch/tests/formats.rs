//! Every record format carries the messages through whole (quotes, delimiters, line breaks,
//! nulls), and a batch whose records fail is still imported: each record handled or
//! dead-lettered, and the receipt says how many of each.

mod common;

use common::*;
use herald::{async_handler, HandlerError, Herald, Meta, State};
use herald_batch::{
    record_id, BatchId, Exporter, Field, FieldKind, Manifest, Marker, RecordFormat, Schema,
    BATCH_HANDLER, BATCH_ID_HEADER, MANIFEST_VERSION, RECORD_HEADER,
};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(Invoice, String, String)>>>);

/// Records what it got; refuses invoice 13 for good.
#[async_handler(retry(max_attempts = 2, backoff = fixed(1ms)))]
async fn keep_invoice(
    invoice: Invoice,
    meta: Meta,
    State(seen): State<Seen>,
) -> Result<(), HandlerError> {
    if invoice.id == 13 {
        return Err(HandlerError::permanent(HandlerError::msg(
            "invoice 13 is cursed",
        )));
    }
    let envelope = meta.envelope();
    let record = envelope
        .headers
        .extra
        .get(RECORD_HEADER)
        .cloned()
        .unwrap_or_default();
    let batch = envelope
        .headers
        .extra
        .get(BATCH_ID_HEADER)
        .cloned()
        .unwrap_or_default();
    seen.0.lock().expect("seen").push((
        invoice,
        format!("{batch}#{record}"),
        envelope.id.to_string(),
    ));
    Ok(())
}

fn herald(seen: &Seen) -> Herald {
    Herald::builder()
        .handlers_under(module_path!())
        .state(seen.clone())
        .build()
        .expect("herald")
}

#[tokio::test]
async fn every_format_carries_the_messages_whole() {
    for format in [
        RecordFormat::JsonLines,
        RecordFormat::CSV,
        RecordFormat::TSV,
        RecordFormat::Delimited { delimiter: '|' },
        RecordFormat::NameValue,
    ] {
        let dirs = Dirs::new();
        let seen = Seen::default();
        let herald = herald(&seen);
        let sent = invoices(6);
        let batch = Exporter::builder(&dirs.inbox)
            .format(format)
            .build()
            .expect("exporter")
            .export("formats", sent.clone())
            .expect("export");
        assert!(batch
            .data_path
            .to_string_lossy()
            .ends_with(format.extension()));
        let receipt = imported(
            dirs.importer(&herald)
                .import("formats")
                .await
                .expect("import"),
        );
        assert_eq!(
            (receipt.records, receipt.succeeded, receipt.dead_lettered),
            (6, 6, 0),
            "{format:?}"
        );
        let mut got = seen.0.lock().expect("seen").clone();
        got.sort_by_key(|(invoice, _, _)| invoice.id);
        let id = BatchId::new("formats").expect("id");
        for (n, (invoice, record, message_id)) in got.iter().enumerate() {
            assert_eq!(invoice, &sent[n], "{format:?}");
            assert_eq!(record, &format!("formats#{}", n + 1));
            assert_eq!(message_id, &record_id(&id, n as u64 + 1).to_string());
        }
        assert_eq!(got.len(), 6);
    }
}

#[tokio::test]
async fn failed_and_unreadable_records_are_dead_lettered_and_counted() {
    let dirs = Dirs::new();
    let seen = Seen::default();
    let herald = herald(&seen);
    let mut writer = Exporter::builder(&dirs.inbox)
        .build()
        .expect("exporter")
        .writer("formats", "batch_test.invoice")
        .expect("writer");
    let mut records: Vec<serde_json::Value> = invoices(3)
        .into_iter()
        .map(|i| serde_json::to_value(i).expect("json"))
        .collect();
    records.push(serde_json::json!({"id": "not a number"}));
    records.push(serde_json::json!({"id": 13, "customer": "c", "cents": 1, "note": null}));
    for record in &records {
        writer.push(record).expect("push");
    }
    writer.finish().expect("finish");

    let receipt = imported(
        dirs.importer(&herald)
            .import("formats")
            .await
            .expect("import"),
    );
    assert_eq!(
        (receipt.records, receipt.succeeded, receipt.dead_lettered),
        (5, 3, 2)
    );
    let letters = dead_letters(&herald).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    let id = BatchId::new("formats").expect("id");
    let malformed = letters
        .iter()
        .find(|l| l.envelope.id == record_id(&id, 4))
        .expect("record 4");
    assert_eq!(malformed.reason.as_str(), "malformed");
    let failed = letters
        .iter()
        .find(|l| l.envelope.id == record_id(&id, 5))
        .expect("record 5");
    assert_eq!(failed.reason.as_str(), "failed");
    assert!(failed
        .last_error
        .as_deref()
        .unwrap_or_default()
        .contains("cursed"));
}

#[tokio::test]
async fn a_bad_value_in_a_textual_file_is_a_dead_lettered_record() {
    let dirs = Dirs::new();
    let seen = Seen::default();
    let herald = herald(&seen);
    // A sender wrote a value that is not of its field's type, and a manifest that matches the
    // file: the batch is whole, one record of it is not readable.
    let data = "cents=1&customer=a&id=1&note=\ncents=ninety&customer=b&id=2&note=\n";
    let field = |name: &str, kind| Field {
        name: name.into(),
        kind,
        nullable: name == "note",
    };
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        batch_id: "by-hand".into(),
        message_type: "batch_test.invoice".into(),
        schema: Schema {
            format: RecordFormat::NameValue,
            fields: vec![
                field("cents", FieldKind::Number),
                field("customer", FieldKind::String),
                field("id", FieldKind::Number),
                field("note", FieldKind::String),
            ],
        },
        producer: "by hand".into(),
        created_at: chrono::Utc::now(),
        data_file: "by-hand.nv".into(),
        records: 2,
        bytes: data.len() as u64,
        sha256: sha256(data.as_bytes()),
    };
    std::fs::write(dirs.inbox.join("by-hand.nv"), data).expect("data");
    let manifest_json = serde_json::to_vec(&manifest).expect("json");
    std::fs::write(dirs.inbox.join("by-hand.manifest.json"), &manifest_json).expect("manifest");
    let marker = Marker {
        batch_id: "by-hand".into(),
        manifest_sha256: sha256(&manifest_json),
    };
    std::fs::write(
        dirs.inbox.join("by-hand.done"),
        serde_json::to_vec(&marker).expect("json"),
    )
    .expect("marker");

    let receipt = imported(
        dirs.importer(&herald)
            .import("by-hand")
            .await
            .expect("import"),
    );
    assert_eq!(
        (receipt.records, receipt.succeeded, receipt.dead_lettered),
        (2, 1, 1)
    );
    let letters = dead_letters(&herald).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].handler, BATCH_HANDLER);
    assert_eq!(
        letters[0].payload,
        serde_json::json!("cents=ninety&customer=b&id=2&note=")
    );
    assert!(
        letters[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("field `cents`: `ninety` is not a number"),
        "{:?}",
        letters[0].last_error
    );
    let got = seen.0.lock().expect("seen").clone();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].0,
        Invoice {
            id: 1,
            customer: "a".into(),
            cents: 1,
            note: None
        }
    );
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
