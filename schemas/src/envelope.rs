//! The one envelope every event travels in, and its typed decoder.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::ids::SubaccountId;

/// A payload that travels as an event. The constants are the contract: they appear in the
/// envelope (`type`, `version`), in the subject it is published on and in its JSON Schema file.
pub trait Event: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {
    /// The envelope's `type`, e.g. `connection-succeeded`.
    const TYPE: &'static str;
    /// The envelope's `version`. Bump it (and regenerate the schema) for a breaking change.
    const VERSION: u32;
}

/// An event that is published on the domain stream (as opposed to a request/reply message).
pub trait StreamEvent: Event {
    /// The subject tokens after `<prefix>.events.`, before the subaccount id: `connection.succeeded`.
    /// Grouping by the first token lets one consumer filter, e.g. `connection.*.*`, take a family.
    const SUBJECT_TOKENS: &'static str;
}

/// The envelope. Field names are the wire names (`occurredAt`, `subaccountId`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope<P> {
    /// UUIDv7: unique, time-ordered. Also sent as `Nats-Msg-Id`, so JetStream drops a
    /// re-publish of the same event inside its duplicate window.
    pub id: Uuid,
    /// The event type (`Event::TYPE`); checked before the payload is decoded.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The payload's schema version (`Event::VERSION`).
    pub version: u32,
    /// When the fact the event records happened (not when it was published or delivered).
    pub occurred_at: DateTime<Utc>,
    /// The tenant the event belongs to; also the last subject token.
    pub subaccount_id: SubaccountId,
    /// Follows one connect attempt end to end, through every service and log line.
    pub correlation_id: Uuid,
    pub payload: P,
}

/// An envelope whose payload has not been decoded yet: what tools that handle any event (the
/// dead-letter inspector, replay) work with.
pub type RawEnvelope = Envelope<Box<RawValue>>;

impl<P: Event> Envelope<P> {
    /// A new event that happened now.
    pub fn new(subaccount_id: SubaccountId, correlation_id: Uuid, payload: P) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type: P::TYPE.to_owned(),
            version: P::VERSION,
            occurred_at: Utc::now(),
            subaccount_id,
            correlation_id,
            payload,
        }
    }

    /// The JSON bytes that go on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing these types cannot fail: every field is a string, number, map or list
        // with string keys. A failure here would be a bug in this crate, so say so loudly.
        serde_json::to_vec(self).expect("event envelopes always serialize to JSON")
    }

    /// Decodes an incoming event of type `P`. Never panics: malformed JSON, a wrong type or
    /// version, an unknown field or a missing one each give their own [`DecodeError`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_raw(RawEnvelope::decode_raw(bytes)?)
    }

    /// The event of type `P` in an envelope already decoded with [`RawEnvelope::decode_raw`]
    /// (a consumer that dispatches on `type` parses the envelope once).
    pub fn from_raw(raw: RawEnvelope) -> Result<Self, DecodeError> {
        if raw.event_type != P::TYPE {
            return Err(DecodeError::WrongType {
                expected: P::TYPE,
                found: raw.event_type,
            });
        }
        if raw.version != P::VERSION {
            return Err(DecodeError::UnsupportedVersion {
                event_type: P::TYPE,
                supported: P::VERSION,
                found: raw.version,
            });
        }
        let payload = crate::json::decode_at::<P>(raw.payload.get().as_bytes(), "payload")?;
        Ok(Envelope {
            id: raw.id,
            event_type: raw.event_type,
            version: raw.version,
            occurred_at: raw.occurred_at,
            subaccount_id: raw.subaccount_id,
            correlation_id: raw.correlation_id,
            payload,
        })
    }
}

impl RawEnvelope {
    /// Decodes the envelope of any event, leaving the payload as raw JSON.
    pub fn decode_raw(bytes: &[u8]) -> Result<Self, DecodeError> {
        crate::json::decode_at(bytes, "")
    }
}

/// Why incoming bytes are not an event we can handle. Permanent by nature: redelivering the
/// same bytes gives the same error, so consumers dead-letter such messages at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid JSON at line {line} column {column}: {message}")]
    Syntax {
        /// Where in the document the parser was (`.` for the top level).
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// `path` includes the field itself (`payload.surprise`); `message` is serde's, with the
    /// fields that are allowed.
    #[error("unknown field `{field}` at `{path}`")]
    UnknownField {
        path: String,
        field: String,
        message: String,
    },
    /// `path` is the object the field is missing from (`payload`, or `.`).
    #[error("missing required field `{field}` at `{path}`")]
    MissingField {
        path: String,
        field: String,
        message: String,
    },
    #[error("invalid value at `{path}`: {message}")]
    InvalidValue { path: String, message: String },
    #[error("expected an event of type `{expected}`, got `{found}`")]
    WrongType {
        expected: &'static str,
        found: String,
    },
    #[error(
        "`{event_type}` version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedVersion {
        event_type: &'static str,
        supported: u32,
        found: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::ConnectionSucceeded;
    use serde_json::json;

    fn valid() -> serde_json::Value {
        json!({
            "id": "01938f3e-7c2a-7000-8000-000000000001",
            "type": "connection-succeeded",
            "version": 1,
            "occurredAt": "2025-10-05T12:00:00.000Z",
            "subaccountId": "68cf05f060d294db17c0685e",
            "correlationId": "01938f3e-7c2a-7000-8000-000000000002",
            "payload": {
                "calendarId": "507f1f77bcf86cd799439011",
                "userEmail": "user@example.com",
                "googleEmail": "googleuser@gmail.com",
                "connectedAt": "2025-10-05T12:00:00.000Z"
            }
        })
    }

    fn decode(value: &serde_json::Value) -> Result<Envelope<ConnectionSucceeded>, DecodeError> {
        Envelope::decode(&serde_json::to_vec(value).expect("json"))
    }

    #[test]
    fn decodes_a_valid_event_and_round_trips() {
        let event = decode(&valid()).expect("valid event");
        assert_eq!(event.payload.google_email, "googleuser@gmail.com");
        let again = Envelope::<ConnectionSucceeded>::decode(&event.to_bytes()).expect("round trip");
        assert_eq!(again, event);
    }

    #[test]
    fn unknown_payload_field_is_a_typed_error_with_its_path() {
        let mut v = valid();
        v["payload"]["surprise"] = json!(1);
        assert_eq!(
            decode(&v).unwrap_err(),
            DecodeError::UnknownField {
                path: "payload.surprise".into(),
                field: "surprise".into(),
                message: "unknown field `surprise`, expected one of `calendarId`, `userEmail`, \
                          `googleEmail`, `connectedAt`"
                    .into(),
            }
        );
    }

    #[test]
    fn unknown_envelope_field_is_a_typed_error() {
        let mut v = valid();
        v["extra"] = json!("x");
        assert!(
            matches!(decode(&v), Err(DecodeError::UnknownField { field, .. }) if field == "extra")
        );
    }

    #[test]
    fn missing_fields_are_typed_errors() {
        let mut v = valid();
        v["payload"]
            .as_object_mut()
            .expect("object")
            .remove("calendarId");
        assert_eq!(
            decode(&v).unwrap_err(),
            DecodeError::MissingField {
                path: "payload".into(),
                field: "calendarId".into(),
                message: "missing field `calendarId`".into(),
            }
        );
        let mut v = valid();
        v.as_object_mut().expect("object").remove("correlationId");
        assert!(
            matches!(decode(&v), Err(DecodeError::MissingField { field, .. }) if field == "correlationId")
        );
    }

    #[test]
    fn wrong_type_and_version_are_rejected_before_the_payload() {
        let mut v = valid();
        v["type"] = json!("connection-failed");
        assert!(matches!(decode(&v), Err(DecodeError::WrongType { .. })));
        let mut v = valid();
        v["version"] = json!(2);
        assert!(matches!(
            decode(&v),
            Err(DecodeError::UnsupportedVersion { found: 2, .. })
        ));
    }

    #[test]
    fn invalid_values_and_garbage_never_panic() {
        let mut v = valid();
        v["subaccountId"] = json!("not-an-id");
        assert!(
            matches!(decode(&v), Err(DecodeError::InvalidValue { path, .. }) if path == "subaccountId")
        );
        for garbage in [&b""[..], b"{", b"null", b"[]", b"\xff\xfe", b"{\"id\":1}"] {
            assert!(Envelope::<ConnectionSucceeded>::decode(garbage).is_err());
        }
        let trailing = [serde_json::to_vec(&valid()).expect("json"), b" x".to_vec()].concat();
        assert!(matches!(
            Envelope::<ConnectionSucceeded>::decode(&trailing),
            Err(DecodeError::Syntax { .. })
        ));
    }
}
