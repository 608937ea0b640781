//! Parking messages in the dead-letter stream: the ones a handler gave up on, and the ones
//! JetStream stopped delivering (its max-deliveries advisory).

use async_nats::jetstream;
use futures::StreamExt;
use schemas::subjects::headers;
use tokio_util::sync::CancellationToken;

use super::{ConsumerSpec, Delivery, count};

/// The message being parked, as it was published.
pub(super) struct Original<'a> {
    pub(super) subject: &'a str,
    pub(super) payload: bytes::Bytes,
    pub(super) headers: async_nats::HeaderMap,
    pub(super) published: &'a str,
}

/// Publishes `original` to the dead-letter stream with why, where and when, and waits for the
/// ack. One dead letter per original message and consumer (its `Nats-Msg-Id`), even if
/// parking is retried or both the runner and the advisory watcher park it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn dead_letter(
    js: &jetstream::Context,
    dead_letter_subject: &str,
    durable: &str,
    original: Original<'_>,
    delivery: Delivery,
    first_error: &str,
    last_error: &str,
) -> Result<(), String> {
    let mut dead_headers = original.headers;
    dead_headers.insert(headers::DEAD_LETTER_SUBJECT, original.subject);
    dead_headers.insert(
        headers::DEAD_LETTER_STREAM_SEQUENCE,
        delivery.stream_sequence.to_string().as_str(),
    );
    dead_headers.insert(headers::DEAD_LETTER_CONSUMER, durable);
    dead_headers.insert(
        headers::DEAD_LETTER_DELIVERIES,
        delivery.delivered.to_string().as_str(),
    );
    dead_headers.insert(
        headers::DEAD_LETTER_FIRST_ERROR,
        header_safe(first_error).as_str(),
    );
    dead_headers.insert(
        headers::DEAD_LETTER_LAST_ERROR,
        header_safe(last_error).as_str(),
    );
    dead_headers.insert(headers::DEAD_LETTER_PUBLISHED_AT, original.published);
    dead_headers.insert(
        headers::DEAD_LETTER_PARKED_AT,
        chrono::Utc::now().to_rfc3339().as_str(),
    );
    dead_headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("{durable}-{}", delivery.stream_sequence).as_str(),
    );
    let publish = jetstream::message::PublishMessage::build()
        .payload(original.payload)
        .headers(dead_headers);
    match js
        .send_publish(dead_letter_subject.to_owned(), publish)
        .await
    {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// JetStream's advisory when a message used up `max_deliver` without being acked or NAKed
/// (the handler crashed, hung past `ack_wait`, or the process died): the server stops
/// delivering it and only says so here. The runner itself parks messages that fail on their
/// last delivery, so this only sees the ones no handler answered for.
#[derive(Debug, serde::Deserialize)]
struct MaxDeliveriesAdvisory {
    stream_seq: u64,
    deliveries: i64,
}

/// Parks every message JetStream gave up on for this consumer, until `shutdown`.
pub(super) async fn watch_max_deliveries(
    js: jetstream::Context,
    nats: async_nats::Client,
    stream: String,
    dead_letter_subject: String,
    spec: ConsumerSpec,
    shutdown: CancellationToken,
) {
    let subject = format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{}",
        spec.durable
    );
    let mut advisories = match nats.subscribe(subject.clone()).await {
        Ok(subscription) => subscription,
        Err(e) => {
            tracing::error!(error = %e, %subject, "cannot watch for messages JetStream gives up on");
            return;
        }
    };
    loop {
        let advisory = tokio::select! {
            advisory = advisories.next() => advisory,
            () = shutdown.cancelled() => break,
        };
        let Some(advisory) = advisory else { break };
        let Ok(advisory) = serde_json::from_slice::<MaxDeliveriesAdvisory>(&advisory.payload)
        else {
            tracing::warn!(%subject, "unreadable max-deliveries advisory");
            continue;
        };
        let original = match js.get_stream(&stream).await {
            Ok(s) => s
                .get_raw_message(advisory.stream_seq)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let original = match original {
            Ok(message) => message,
            Err(e) => {
                tracing::error!(error = %e, stream_sequence = advisory.stream_seq, "JetStream gave up on a message that cannot be read back; it stays in the domain stream");
                continue;
            }
        };
        let published = chrono::DateTime::from_timestamp(
            original.time.unix_timestamp(),
            original.time.nanosecond(),
        )
        .map(|at| at.to_rfc3339())
        .unwrap_or_default();
        let reason = format!(
            "no answer after {} deliveries (the handler crashed or exceeded ack_wait each time)",
            advisory.deliveries
        );
        let delivery = Delivery {
            stream_sequence: advisory.stream_seq,
            delivered: advisory.deliveries,
            max_deliver: spec.max_deliver,
            replayed: original.headers.get(headers::ORIGINAL_MSG_ID).is_some(),
        };
        // Parked by a task of its own, so one the dead-letter stream refuses (it is full) is
        // retried without holding up the advisories behind it.
        let (js, subject, spec, shutdown) = (
            js.clone(),
            dead_letter_subject.clone(),
            spec.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let sequence = advisory.stream_seq;
            let mut attempt = advisory.deliveries;
            loop {
                let stored = dead_letter(
                    &js,
                    &subject,
                    spec.durable,
                    Original {
                        subject: original.subject.as_str(),
                        payload: original.payload.clone(),
                        headers: original.headers.clone(),
                        published: &published,
                    },
                    delivery,
                    &reason,
                    &reason,
                )
                .await;
                let Err(e) = stored else {
                    tracing::error!(%reason, stream_sequence = sequence, "event dead-lettered");
                    count(spec.durable, "dead_lettered");
                    return;
                };
                count(spec.durable, "park_failed");
                tracing::error!(error = %e, stream_sequence = sequence, "could not dead-letter a message JetStream gave up on; retrying (it stays in the domain stream)");
                tokio::select! {
                    () = tokio::time::sleep(spec.jittered_retry_delay(attempt)) => {}
                    () = shutdown.cancelled() => {
                        tracing::error!(stream_sequence = sequence, "stopping before the dead-letter stream took the message; it stays in the domain stream (replay it with gcal-ops events replay)");
                        return;
                    }
                }
                attempt = attempt.saturating_add(1);
            }
        });
    }
}

/// Header values are one line of visible ASCII; errors may hold anything. Cap the length too.
fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .take(1024)
        .collect()
}
