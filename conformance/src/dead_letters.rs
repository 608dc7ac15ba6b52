//! The dead-letter store suite: what every [`DeadLetterStore`] must do. Each case takes a fresh,
//! empty store; run them all with [`dead_letter_suite!`](crate::dead_letter_suite).
//!
//! Times are given in whole milliseconds, the precision every store keeps.

use chrono::{DateTime, SubsecRound, Utc};
use herald::{
    DeadLetter, DeadLetterId, DeadLetterReason, DeadLetterStore, Envelope, FailureKind, MessageId,
};
use std::borrow::Cow;

const EVERY_REASON: [DeadLetterReason; 5] = [
    DeadLetterReason::Failed,
    DeadLetterReason::Overflow,
    DeadLetterReason::Shutdown,
    DeadLetterReason::Malformed,
    DeadLetterReason::Cancelled,
];

const EVERY_KIND: [FailureKind; 8] = [
    FailureKind::Error,
    FailureKind::PermanentError,
    FailureKind::Panic,
    FailureKind::Timeout,
    FailureKind::Extraction,
    FailureKind::Malformed,
    FailureKind::Cancelled,
    FailureKind::Shutdown,
];

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// A dead letter of a new message for `handler`, with every field set.
fn entry(handler: &str) -> DeadLetter {
    let mut envelope = Envelope::new(Cow::Borrowed("conformance.dead_letter"));
    envelope.occurred_at = now();
    envelope.key = Some("key-1".to_owned());
    envelope.idempotency_key = Some("idem-1".to_owned());
    envelope.headers.correlation_id = Some(MessageId::new());
    envelope.headers.causation_id = Some(MessageId::new());
    envelope
        .headers
        .extra
        .insert("tenant".to_owned(), "acme".to_owned());
    let at = now();
    DeadLetter {
        id: DeadLetterId(0),
        envelope,
        payload: serde_json::json!({ "order": 7, "lines": [1, 2, 3], "note": "kept" }),
        handler: handler.to_owned(),
        reason: DeadLetterReason::Failed,
        failure: Some(FailureKind::Error),
        attempts: 3,
        first_error: Some("first: connection refused".to_owned()),
        last_error: Some("last: connection refused".to_owned()),
        first_failed_at: Some(at),
        last_failed_at: Some(at),
        dead_lettered_at: at,
    }
}

/// `entry` as the store should give it back under `id`.
fn stored(entry: &DeadLetter, id: DeadLetterId) -> DeadLetter {
    DeadLetter {
        id,
        ..entry.clone()
    }
}

async fn put(store: &impl DeadLetterStore, entry: &DeadLetter) -> DeadLetterId {
    store
        .put(entry.clone())
        .await
        .unwrap_or_else(|error| panic!("put failed: {error}"))
}

async fn get(store: &impl DeadLetterStore, id: DeadLetterId) -> Option<DeadLetter> {
    store
        .get(id)
        .await
        .unwrap_or_else(|error| panic!("get failed: {error}"))
}

async fn count(store: &impl DeadLetterStore) -> u64 {
    store
        .count()
        .await
        .unwrap_or_else(|error| panic!("count failed: {error}"))
}

async fn list(store: &impl DeadLetterStore, limit: usize) -> Vec<DeadLetter> {
    store
        .list(limit)
        .await
        .unwrap_or_else(|error| panic!("list failed: {error}"))
}

/// An entry put in comes back from `get` with every field as written and the id `put` returned.
pub async fn put_then_get_returns_the_entry(store: impl DeadLetterStore) {
    let written = entry("conformance::handler");
    let id = put(&store, &written).await;
    assert_eq!(get(&store, id).await, Some(stored(&written, id)));
}

/// `get` of an id that was never given is `None`, not an error.
pub async fn get_of_a_missing_id_is_none(store: impl DeadLetterStore) {
    let id = put(&store, &entry("conformance::handler")).await;
    assert_eq!(get(&store, DeadLetterId(id.0 + 1_000_000)).await, None);
}

/// `list` gives the oldest first and at most `limit`.
pub async fn list_is_oldest_first_and_bounded(store: impl DeadLetterStore) {
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(put(&store, &entry(&format!("conformance::handler_{n}"))).await);
    }
    let all: Vec<DeadLetterId> = list(&store, 10).await.iter().map(|e| e.id).collect();
    assert_eq!(all, ids, "oldest first");
    let first_two: Vec<DeadLetterId> = list(&store, 2).await.iter().map(|e| e.id).collect();
    assert_eq!(first_two, ids[..2].to_vec(), "at most `limit`");
    assert!(list(&store, 0).await.is_empty());
}

/// `take` returns the entry and removes it: a second `take` and a `get` find nothing.
pub async fn take_removes_and_returns_once(store: impl DeadLetterStore) {
    let written = entry("conformance::handler");
    let id = put(&store, &written).await;
    let other = put(&store, &entry("conformance::other")).await;
    let taken = store.take(id).await.expect("take");
    assert_eq!(taken, Some(stored(&written, id)));
    assert_eq!(store.take(id).await.expect("take again"), None);
    assert_eq!(get(&store, id).await, None);
    assert!(get(&store, other).await.is_some(), "only that entry");
    assert_eq!(count(&store).await, 1);
}

/// `purge(Some(id))` removes that entry (1), a missing id removes nothing (0), `purge(None)`
/// removes the rest and says how many.
pub async fn purge_one_then_all(store: impl DeadLetterStore) {
    let first = put(&store, &entry("conformance::a")).await;
    for handler in ["conformance::b", "conformance::c"] {
        put(&store, &entry(handler)).await;
    }
    assert_eq!(store.purge(Some(first)).await.expect("purge one"), 1);
    assert_eq!(get(&store, first).await, None);
    assert_eq!(store.purge(Some(first)).await.expect("purge missing"), 0);
    assert_eq!(store.purge(None).await.expect("purge all"), 2);
    assert_eq!(count(&store).await, 0);
    assert!(list(&store, 10).await.is_empty());
}

/// `count` follows puts, takes and purges.
pub async fn count_follows_puts_and_removals(store: impl DeadLetterStore) {
    assert_eq!(count(&store).await, 0, "a fresh store is empty");
    let a = put(&store, &entry("conformance::a")).await;
    let b = put(&store, &entry("conformance::b")).await;
    put(&store, &entry("conformance::c")).await;
    assert_eq!(count(&store).await, 3);
    store.take(a).await.expect("take");
    assert_eq!(count(&store).await, 2);
    store.purge(Some(b)).await.expect("purge");
    assert_eq!(count(&store).await, 1);
}

/// A store within its bound has evicted nothing, and says so.
pub async fn evicted_is_zero_within_bounds(store: impl DeadLetterStore) {
    for n in 0..5 {
        put(&store, &entry(&format!("conformance::handler_{n}"))).await;
    }
    assert_eq!(store.evicted(), 0);
    assert_eq!(count(&store).await, 5);
}

/// A second dead letter of the same message for the same handler (a relay that delivered it again
/// after a lost lease) updates the first: same id, one entry, the first error and first failure
/// time kept, the rest from the second.
pub async fn a_second_put_for_the_same_message_and_handler_updates_the_first(
    store: impl DeadLetterStore,
) {
    let first = entry("conformance::handler");
    let id = put(&store, &first).await;
    let later = now() + chrono::Duration::seconds(5);
    let second = DeadLetter {
        reason: DeadLetterReason::Shutdown,
        failure: Some(FailureKind::Timeout),
        attempts: 5,
        first_error: Some("second: first error".to_owned()),
        last_error: Some("second: timed out".to_owned()),
        first_failed_at: Some(later),
        last_failed_at: Some(later),
        dead_lettered_at: later,
        ..first.clone()
    };
    let again = put(&store, &second).await;
    assert_eq!(again, id, "the same entry");
    assert_eq!(count(&store).await, 1, "no second entry");
    let expected = DeadLetter {
        id,
        first_error: first.first_error.clone(),
        first_failed_at: first.first_failed_at,
        ..second
    };
    assert_eq!(get(&store, id).await, Some(expected));
    let other_handler = put(
        &store,
        &DeadLetter {
            handler: "conformance::other".to_owned(),
            ..first
        },
    )
    .await;
    assert_ne!(other_handler, id, "another handler is another entry");
}

/// Every [`DeadLetterReason`] and every [`FailureKind`] (and no kind) come back as written.
pub async fn every_failure_kind_and_reason_round_trips(store: impl DeadLetterStore) {
    let kinds = EVERY_KIND.into_iter().map(Some).chain([None]);
    for (n, (reason, failure)) in EVERY_REASON.into_iter().cycle().zip(kinds).enumerate() {
        let written = DeadLetter {
            reason,
            failure,
            ..entry(&format!("conformance::handler_{n}"))
        };
        let id = put(&store, &written).await;
        let read = get(&store, id).await.expect("stored");
        assert_eq!(read.reason, reason);
        assert_eq!(read.failure, failure);
        assert_eq!(read, stored(&written, id));
    }
    for reason in EVERY_REASON {
        let written = DeadLetter {
            reason,
            ..entry(&format!("conformance::reason_{reason}"))
        };
        let id = put(&store, &written).await;
        assert_eq!(get(&store, id).await.map(|e| e.reason), Some(reason));
    }
}

/// U+0000 and non-ASCII text in the payload, the key, the handler name and the headers come back
/// unchanged (PostgreSQL's JSONB refuses U+0000: a store must still keep it). In the error texts,
/// which are for people, a store may write U+0000 as the six characters `\u0000` (PostgreSQL's
/// `text` refuses it); non-ASCII text is kept there too.
pub async fn nul_and_non_ascii_text_round_trips(store: impl DeadLetterStore) {
    let text = "nul:\u{0} ü ✓ 日本 😀";
    let mut written = entry("conformance::handler_ü");
    written.payload = serde_json::json!({ "text": text, "list": [text, "\u{0}"] });
    written.first_error = Some(format!("first {text}"));
    written.last_error = Some(format!("last {text}"));
    written.envelope.key = Some(format!("key {text}"));
    written
        .envelope
        .headers
        .extra
        .insert("note".to_owned(), text.to_owned());
    let id = put(&store, &written).await;
    let mut read = get(&store, id).await.expect("stored");
    for (got, wrote) in [
        (&mut read.first_error, &written.first_error),
        (&mut read.last_error, &written.last_error),
    ] {
        let escaped = wrote.as_ref().map(|text| text.replace('\0', "\\u0000"));
        assert!(
            *got == *wrote || *got == escaped,
            "error text {got:?} is neither {wrote:?} nor its escaped form"
        );
        got.clone_from(wrote);
    }
    assert_eq!(read, stored(&written, id));
    let raw = DeadLetter {
        payload: serde_json::Value::String(format!("not json {text}")),
        ..entry("conformance::raw")
    };
    let raw_id = put(&store, &raw).await;
    assert_eq!(get(&store, raw_id).await, Some(stored(&raw, raw_id)));
}

/// A payload of 1 MiB comes back whole.
pub async fn a_large_payload_round_trips(store: impl DeadLetterStore) {
    let written = DeadLetter {
        payload: serde_json::json!({ "blob": "x".repeat(1024 * 1024), "n": 1 }),
        ..entry("conformance::handler")
    };
    let id = put(&store, &written).await;
    assert_eq!(get(&store, id).await, Some(stored(&written, id)));
}
