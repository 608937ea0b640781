//! What a dead letter says about itself: the headers service-kit's consumer runner writes when
//! it parks a message (`schemas::subjects::headers::DEAD_LETTER_*`), plus what the original
//! envelope in the payload tells (event id, type, correlation id) when it can be read.

use std::collections::BTreeMap;

use schemas::subjects::headers;
use serde::Serialize;
use serde_json::Value;

use crate::reader::Stored;

/// One line of `dlq list`; also embedded in `dlq show` and in purge reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Sequence in the dead-letter stream: what `dlq show`, `replay` and `purge` take.
    pub sequence: u64,
    /// When the consumer parked it (its header; the stream's timestamp if absent).
    pub parked_at: String,
    /// The durable consumer that gave up.
    pub consumer: Option<String>,
    /// The subject the event was first published on (where a replay publishes it).
    pub subject: Option<String>,
    /// The original's sequence in the domain stream.
    pub original_sequence: Option<u64>,
    pub deliveries: Option<u64>,
    pub first_error: Option<String>,
    pub last_error: Option<String>,
    pub event_type: Option<String>,
    pub event_id: Option<String>,
    pub correlation_id: Option<String>,
    /// When the original was first published.
    pub published_at: Option<String>,
}

/// Everything about one dead letter (`dlq show`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    #[serde(flatten)]
    pub summary: Summary,
    /// The dead-letter stream and the subject the dead letter is stored under there.
    pub stream: String,
    pub dead_letter_subject: String,
    /// When the dead-letter stream stored it.
    pub stored_at: String,
    /// Every header, by name, each with all its values.
    pub headers: BTreeMap<String, Vec<String>>,
    /// The payload as JSON when it is JSON (the envelope)…
    pub payload: Option<Value>,
    /// …and as text when it is not (an undecodable message is parked as it came).
    pub payload_text: Option<String>,
}

/// Reads the dead-letter view of a stored message.
pub fn summarize(letter: &Stored) -> Summary {
    let envelope: Option<Value> = serde_json::from_slice(&letter.payload).ok();
    let from_envelope = |field: &str| {
        envelope
            .as_ref()
            .and_then(|e| e.get(field))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let header = |name: &str| letter.header(name).map(str::to_owned);
    Summary {
        sequence: letter.sequence,
        parked_at: header(headers::DEAD_LETTER_PARKED_AT)
            .unwrap_or_else(|| letter.stored_at.to_rfc3339()),
        consumer: header(headers::DEAD_LETTER_CONSUMER)
            .or_else(|| letter.subject.rsplit('.').next().map(str::to_owned)),
        subject: header(headers::DEAD_LETTER_SUBJECT),
        original_sequence: header(headers::DEAD_LETTER_STREAM_SEQUENCE)
            .and_then(|s| s.parse().ok()),
        deliveries: header(headers::DEAD_LETTER_DELIVERIES).and_then(|s| s.parse().ok()),
        first_error: header(headers::DEAD_LETTER_FIRST_ERROR),
        last_error: header(headers::DEAD_LETTER_LAST_ERROR),
        event_type: header(headers::EVENT_TYPE).or_else(|| from_envelope("type")),
        event_id: from_envelope("id"),
        correlation_id: header(headers::CORRELATION_ID).or_else(|| from_envelope("correlationId")),
        published_at: header(headers::DEAD_LETTER_PUBLISHED_AT),
    }
}

/// Everything, for `dlq show`.
pub fn detail(letter: &Stored, stream: &str) -> Detail {
    let mut all: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, values) in letter.headers.iter() {
        all.entry(name.to_string())
            .or_default()
            .extend(values.iter().map(|v| v.as_str().to_owned()));
    }
    let payload: Option<Value> = serde_json::from_slice(&letter.payload).ok();
    let payload_text = payload
        .is_none()
        .then(|| String::from_utf8_lossy(&letter.payload).into_owned());
    Detail {
        summary: summarize(letter),
        stream: stream.to_owned(),
        dead_letter_subject: letter.subject.clone(),
        stored_at: letter.stored_at.to_rfc3339(),
        headers: all,
        payload,
        payload_text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::HeaderMap;

    fn letter(headers: &[(&str, &str)], payload: &[u8]) -> Stored {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, *v);
        }
        Stored {
            sequence: 7,
            subject: "gcal.dead-letter.mailer-worker".into(),
            headers: map,
            payload: payload.to_vec(),
            stored_at: chrono::DateTime::from_timestamp(1_750_000_000, 0).expect("time"),
        }
    }

    #[test]
    fn headers_and_envelope_fill_the_summary() {
        let l = letter(
            &[
                (headers::DEAD_LETTER_SUBJECT, "gcal.events.auth-link.issued.x"),
                (headers::DEAD_LETTER_STREAM_SEQUENCE, "12"),
                (headers::DEAD_LETTER_CONSUMER, "mailer-worker"),
                (headers::DEAD_LETTER_DELIVERIES, "3"),
                (headers::DEAD_LETTER_LAST_ERROR, "550 no such user"),
                (headers::DEAD_LETTER_PARKED_AT, "2025-06-01T12:00:00+00:00"),
                (headers::EVENT_TYPE, "auth-link-issued"),
            ],
            br#"{"id":"0190a000-0000-7000-8000-000000000001","type":"auth-link-issued","correlationId":"c"}"#,
        );
        let s = summarize(&l);
        assert_eq!(s.subject.as_deref(), Some("gcal.events.auth-link.issued.x"));
        assert_eq!(s.original_sequence, Some(12));
        assert_eq!(s.deliveries, Some(3));
        assert_eq!(s.consumer.as_deref(), Some("mailer-worker"));
        assert_eq!(
            s.event_id.as_deref(),
            Some("0190a000-0000-7000-8000-000000000001")
        );
        assert_eq!(s.correlation_id.as_deref(), Some("c"));
        assert_eq!(s.parked_at, "2025-06-01T12:00:00+00:00");
        assert_eq!(s.first_error, None);
    }

    #[test]
    fn an_undecodable_payload_is_shown_as_text() {
        let l = letter(&[], b"{not json");
        let d = detail(&l, "GCAL_DEAD_LETTERS");
        assert_eq!(d.payload, None);
        assert_eq!(d.payload_text.as_deref(), Some("{not json"));
        assert_eq!(d.summary.event_id, None);
        assert_eq!(
            d.summary.consumer.as_deref(),
            Some("mailer-worker"),
            "from the subject"
        );
        assert!(
            d.summary.parked_at.starts_with("2025-06-15"),
            "stream time stands in"
        );
    }
}
