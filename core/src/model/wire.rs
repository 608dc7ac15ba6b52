//! The envelope on the wire: one JSON object per message, versioned, that any service (Rust or
//! not) can produce and consume. Brokers carry it as their message body; `docs/WIRE.md` is the
//! specification for other languages.
//!
//! ```json
//! {"herald":1,"id":"0190f5e2-7c1a-7b3e-9f00-5a1c2d3e4f50","name":"order.placed","key":"acct-7",
//!  "occurred_at":"2025-01-31T12:00:00.123456Z","attempt":1,"headers":{"tenant":"acme"},
//!  "traceparent":null,"payload":{"order":7}}
//! ```
//!
//! [`encode`] writes a first delivery of an [`OutgoingMessage`]; [`encode_stored`] writes a
//! [`StoredMessage`] again (a retry, with its attempt and the handlers that finished); [`decode`]
//! reads either back as a [`StoredMessage`] for [`Herald::ingest`](crate::Herald::ingest), or
//! says with a [`WireError`] why the bytes are not a message (the consumer then dead-letters
//! them with reason `malformed`).

use crate::model::envelope::MessageId;
use crate::model::stored_message::{OutgoingMessage, Progress, StoredHeaders, StoredMessage};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The major version of the wire format this Herald writes, and the newest it reads. Fields are
/// only ever added within a major version (readers ignore the ones they do not know); a change
/// that an older reader would misread bumps it.
pub const WIRE_VERSION: u64 = 1;

/// The extra header a W3C `traceparent` is kept under inside Herald (the envelope has a slot
/// for it on the wire, and the handlers see it in `headers.extra`).
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Why bytes could not be read as a Herald wire envelope. The message cannot be delivered: the
/// consumer dead-letters it with reason `malformed` (and acknowledges it), never redelivers it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not a JSON object (invalid UTF-8, a NUL byte, truncated or otherwise invalid JSON).
    #[error("the message is not a JSON object: {source}; the producer must write the envelope of docs/WIRE.md")]
    NotJson {
        /// The JSON parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The `"herald"` version field is missing or not a whole number.
    #[error("the message has no `herald` version number; the producer must write `\"herald\": 1` (docs/WIRE.md)")]
    MissingVersion,
    /// A newer major version than this Herald reads.
    #[error("the message is wire version {found}, newer than version {WIRE_VERSION} this Herald reads; upgrade the consumer")]
    UnsupportedVersion {
        /// The version found.
        found: u64,
    },
    /// A field is missing or has the wrong type.
    #[error("the envelope does not have the shape of version {WIRE_VERSION}: {source}; see docs/WIRE.md")]
    Shape {
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
    /// An id field (`id`, `correlation_id`, `causation_id`) is not a UUID.
    #[error("the envelope's `{field}` is `{value}`, not a UUID")]
    BadId {
        /// Which field.
        field: &'static str,
        /// What it held.
        value: String,
    },
    /// `occurred_at` is not an RFC 3339 time.
    #[error("the envelope's `occurred_at` is `{value}`, not an RFC 3339 time: {source}")]
    BadTime {
        /// What it held.
        value: String,
        /// The parser's error.
        #[source]
        source: chrono::ParseError,
    },
}

/// The JSON object on the wire, field by field (see `docs/WIRE.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireEnvelope {
    /// The major version of the format: [`WIRE_VERSION`].
    pub herald: u64,
    /// The message id, a UUID (Herald writes v7).
    pub id: String,
    /// The message's wire name (`order.placed`).
    pub name: String,
    /// The ordering key.
    #[serde(default)]
    pub key: Option<String>,
    /// When it was published, RFC 3339.
    pub occurred_at: String,
    /// The conversation's id (UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The id of the message whose handler published this one (UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The producer's re-send id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Which delivery this is, 1 for the first.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// Free-form string headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A W3C trace context `traceparent`, or null.
    #[serde(default)]
    pub traceparent: Option<String>,
    /// The payload, any JSON value.
    pub payload: serde_json::Value,
    /// Herald's own: handlers that already finished this message (`!` marks failed for good);
    /// other producers leave it out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handlers_done: Vec<String>,
}

fn first_attempt() -> u32 {
    1
}

/// The wire bytes of a first delivery of `message`.
pub fn encode(message: &OutgoingMessage) -> Vec<u8> {
    encode_stored(&message.to_stored())
}

/// The wire bytes of a stored message, with its attempt and the handlers that finished it (a
/// retry re-published by a transport). A payload that is not JSON travels as a JSON string.
pub fn encode_stored(message: &StoredMessage) -> Vec<u8> {
    // Headers written by Herald always parse; anything else travels without them.
    let mut headers: StoredHeaders = serde_json::from_str(&message.headers).unwrap_or_default();
    let traceparent = headers.extra.remove(TRACEPARENT_HEADER);
    let envelope = WireEnvelope {
        herald: WIRE_VERSION,
        id: message.message_id.clone(),
        name: message.name.clone(),
        key: message.key.clone(),
        occurred_at: message
            .occurred_at
            .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        correlation_id: headers.correlation_id.map(|id| id.to_string()),
        causation_id: headers.causation_id.map(|id| id.to_string()),
        idempotency_key: headers.idempotency_key,
        attempt: message.attempt.max(1),
        headers: headers.extra,
        traceparent,
        payload: message.payload_json(),
        handlers_done: message.progress.to_stored(),
    };
    // Strings, numbers, a string map and a JSON value always serialize.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// Reads wire bytes as a stored message ready for [`Herald::ingest`](crate::Herald::ingest).
///
/// # Errors
/// When the bytes are not a JSON object, the version is missing or newer than
/// [`WIRE_VERSION`], a field is missing or mistyped, an id is not a UUID, or the time is not
/// RFC 3339. Unknown fields are ignored.
pub fn decode(bytes: &[u8]) -> Result<StoredMessage, WireError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|source| WireError::NotJson { source })?;
    let version = value
        .get("herald")
        .and_then(serde_json::Value::as_u64)
        .ok_or(WireError::MissingVersion)?;
    if version > WIRE_VERSION {
        return Err(WireError::UnsupportedVersion { found: version });
    }
    let envelope: WireEnvelope =
        serde_json::from_value(value).map_err(|source| WireError::Shape { source })?;
    let id = |field: &'static str, value: &str| {
        value.parse::<MessageId>().map_err(|_| WireError::BadId {
            field,
            value: value.to_owned(),
        })
    };
    id("id", &envelope.id)?;
    let correlation_id = envelope
        .correlation_id
        .as_deref()
        .map(|v| id("correlation_id", v))
        .transpose()?;
    let causation_id = envelope
        .causation_id
        .as_deref()
        .map(|v| id("causation_id", v))
        .transpose()?;
    let occurred_at = DateTime::parse_from_rfc3339(&envelope.occurred_at)
        .map_err(|source| WireError::BadTime {
            value: envelope.occurred_at.clone(),
            source,
        })?
        .with_timezone(&Utc);
    let mut extra = envelope.headers;
    if let Some(traceparent) = envelope.traceparent {
        extra.insert(TRACEPARENT_HEADER.to_owned(), traceparent);
    }
    let headers = StoredHeaders {
        idempotency_key: envelope.idempotency_key,
        correlation_id,
        causation_id,
        extra,
    };
    Ok(StoredMessage {
        message_id: envelope.id,
        name: envelope.name,
        key: envelope.key,
        payload: envelope.payload.to_string(),
        headers: serde_json::to_string(&headers).unwrap_or_else(|_| String::from("{}")),
        occurred_at,
        attempt: envelope.attempt.max(1),
        progress: Progress::from_stored(&envelope.handlers_done),
        only_handlers: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::envelope::{Envelope, PublishOptions};
    use crate::model::stored_message::HandlerProgress;

    fn outgoing() -> OutgoingMessage {
        let options = PublishOptions::new()
            .idempotency_key("idem-1")
            .correlation_id(MessageId::new())
            .causation_id(MessageId::new())
            .header("tenant", "acme ü\u{0}")
            .header(
                TRACEPARENT_HEADER,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            );
        let mut envelope = Envelope::new("order.placed");
        envelope.key = Some("acct-7".into());
        envelope.idempotency_key = options.idempotency_key;
        envelope.headers = options.headers;
        OutgoingMessage {
            envelope,
            payload: r#"{"order":7,"text":"nul \u0000 ✓"}"#.to_owned(),
        }
    }

    fn decode_err(bytes: &[u8]) -> WireError {
        match decode(bytes) {
            Ok(message) => panic!("decoded {message:?} from bad bytes"),
            Err(error) => error,
        }
    }

    #[test]
    fn an_envelope_round_trips() {
        let sent = outgoing();
        let bytes = encode(&sent);
        let value: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(value["herald"], 1);
        assert_eq!(
            value["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "the trace parent has its own slot"
        );
        assert!(value["headers"].get(TRACEPARENT_HEADER).is_none());
        let got = decode(&bytes).expect("decode");
        assert_eq!(got.envelope(), Ok(sent.envelope.clone()));
        assert_eq!(got, sent.to_stored());
    }

    #[test]
    fn a_retry_keeps_its_attempt_and_progress() {
        let mut stored = outgoing().to_stored();
        stored.attempt = 3;
        stored.progress.record("a", HandlerProgress::Succeeded);
        stored.progress.record("b", HandlerProgress::FailedForGood);
        let got = decode(&encode_stored(&stored)).expect("decode");
        assert_eq!(got.attempt, 3);
        assert_eq!(got.progress, stored.progress);
    }

    #[test]
    fn a_minimal_foreign_message_decodes_and_unknown_fields_are_ignored() {
        let bytes = br#"{"herald":1,"id":"0190f5e2-7c1a-7b3e-9f00-5a1c2d3e4f50","name":"x",
            "occurred_at":"2025-01-31T13:00:00+01:00","payload":[1,2],"future_field":{"a":1}}"#;
        let got = decode(bytes).expect("decode");
        assert_eq!(got.attempt, 1);
        assert_eq!(got.key, None);
        assert_eq!(got.payload, "[1,2]");
        assert_eq!(got.occurred_at.to_rfc3339(), "2025-01-31T12:00:00+00:00");
        assert!(got.envelope().is_ok());
    }

    #[test]
    fn bad_bytes_are_clear_errors() {
        assert!(matches!(
            decode_err(b"\xff\xfe{"),
            WireError::NotJson { .. }
        ));
        assert!(matches!(
            decode_err(b"{\"herald\":1,\0}"),
            WireError::NotJson { .. }
        ));
        let whole = encode(&outgoing());
        assert!(matches!(
            decode_err(&whole[..whole.len() / 2]),
            WireError::NotJson { .. }
        ));
        assert!(matches!(decode_err(b""), WireError::NotJson { .. }));
        assert!(matches!(decode_err(b"[1]"), WireError::MissingVersion));
        assert!(matches!(
            decode_err(br#"{"herald":"1"}"#),
            WireError::MissingVersion
        ));
        let error = decode_err(br#"{"herald":2,"whatever":true}"#);
        assert!(matches!(error, WireError::UnsupportedVersion { found: 2 }));
        assert!(error.to_string().contains("upgrade the consumer"));
        assert!(matches!(
            decode_err(br#"{"herald":1,"id":"x"}"#),
            WireError::Shape { .. }
        ));
    }

    fn with(field: &str, value: serde_json::Value) -> Vec<u8> {
        let mut envelope: serde_json::Value =
            serde_json::from_slice(&encode(&outgoing())).expect("json");
        envelope[field] = value;
        serde_json::to_vec(&envelope).expect("json")
    }

    #[test]
    fn bad_ids_and_times_name_their_field() {
        let error = decode_err(&with("id", "not-a-uuid".into()));
        assert!(
            matches!(error, WireError::BadId { field: "id", .. }),
            "{error}"
        );
        let error = decode_err(&with("causation_id", "7".into()));
        assert!(matches!(
            error,
            WireError::BadId {
                field: "causation_id",
                ..
            }
        ));
        let error = decode_err(&with("occurred_at", "yesterday".into()));
        assert!(matches!(error, WireError::BadTime { .. }));
        assert!(error.to_string().contains("yesterday"));
    }

    #[test]
    fn a_huge_payload_round_trips() {
        let mut message = outgoing();
        let text = "ü".repeat(4 << 20);
        message.payload = serde_json::json!({ "text": text }).to_string();
        let got = decode(&encode(&message)).expect("decode");
        assert_eq!(got.payload, message.payload);
    }

    #[test]
    fn a_payload_that_is_not_json_travels_as_a_string() {
        let mut message = outgoing();
        message.payload = "not json".to_owned();
        let got = decode(&encode(&message)).expect("decode");
        assert_eq!(got.payload, "\"not json\"");
    }

    #[test]
    fn the_error_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<WireError>();
        assert_send_sync::<WireEnvelope>();
    }
}
