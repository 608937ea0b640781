//! One message's life in a consumer: decode, run the handler with progress, then ack, NAK with a
//! delay, or park it in the dead-letter stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use schemas::subjects::headers;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::dead_letters::{Original, dead_letter};
use super::{Consumable, ConsumerSpec, Delivery, EventHandler, HandlerError, count};

pub(super) struct Worker<H> {
    pub(super) js: jetstream::Context,
    pub(super) dead_letter_subject: String,
    pub(super) spec: ConsumerSpec,
    pub(super) handler: Arc<H>,
    /// First error of messages still being retried, by stream sequence (for the dead letter).
    pub(super) first_errors: Mutex<HashMap<u64, String>>,
    /// Ends a hold on a message the dead-letter stream would not take ([`Worker::park`]).
    pub(super) shutdown: CancellationToken,
}

/// Bound on remembered first errors; past it, a dead letter reports only the last error.
const MAX_REMEMBERED_ERRORS: usize = 10_000;

impl<H> Worker<H> {
    pub(super) async fn process<E>(&self, message: jetstream::Message)
    where
        E: Consumable,
        H: EventHandler<E>,
    {
        let durable = self.spec.durable;
        let Ok(info) = message.info() else {
            tracing::error!(consumer = durable, subject = %message.subject, "message without JetStream metadata; terminating it");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        };
        let delivery = Delivery {
            stream_sequence: info.stream_sequence,
            delivered: info.delivered,
            max_deliver: self.spec.max_deliver,
            replayed: message
                .headers
                .as_ref()
                .is_some_and(|h| h.get(headers::ORIGINAL_MSG_ID).is_some()),
        };
        // RFC 3339, as the header promises (`OffsetDateTime`'s Display is not); only a
        // message being parked needs it.
        let published = || {
            chrono::DateTime::from_timestamp(
                info.published.unix_timestamp(),
                info.published.nanosecond(),
            )
            .map(|at| at.to_rfc3339())
            .unwrap_or_else(|| info.published.to_string())
        };
        let event = match E::decode(&message.payload) {
            Ok(event) => event,
            Err(e) => {
                let reason = format!("undecodable {} event: {e}", E::NAME);
                self.park(&message, delivery, &published(), reason, "undecodable")
                    .await;
                return;
            }
        };
        let (event_id, correlation_id, subaccount_id) = E::describe(&event);
        let span = tracing::info_span!("event", consumer = durable, event_type = E::NAME, %event_id,
            %correlation_id, %subaccount_id,
            stream_sequence = delivery.stream_sequence, delivered = delivery.delivered,
            trace_id = tracing::field::Empty);
        // The publisher's trace goes on here (its `traceparent` header), or a new one starts.
        match &message.headers {
            Some(headers) => {
                crate::telemetry::continue_trace(&span, &crate::telemetry::NatsHeaders(headers))
            }
            None => crate::telemetry::record_trace_id(&span),
        }
        self.settle(&message, delivery, published, event)
            .instrument(span)
            .await;
    }

    /// Runs the handler on a decoded event and acks, NAKs or parks the message accordingly.
    async fn settle<E>(
        &self,
        message: &jetstream::Message,
        delivery: Delivery,
        published: impl FnOnce() -> String,
        event: E::Message,
    ) where
        E: Consumable,
        H: EventHandler<E>,
    {
        let durable = self.spec.durable;
        let started = Instant::now();
        let result = self
            .with_progress(message, self.handler.handle(event, delivery))
            .await;
        metrics::histogram!("event_handling_duration_seconds", "consumer" => durable)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                self.forget(delivery.stream_sequence);
                if let Err(e) = message.ack().await {
                    // The effect is durable and handlers are idempotent: a redelivery is harmless.
                    tracing::warn!(error = %e, "ack failed; the event will be redelivered");
                }
                count(durable, "acked");
            }
            Err(HandlerError::Retryable(reason)) if !delivery.is_last_attempt() => {
                self.remember(delivery.stream_sequence, &reason);
                let delay = self.spec.jittered_retry_delay(delivery.delivered);
                tracing::warn!(%reason, retry_in = ?delay, "handler failed; will retry");
                let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
                count(durable, "retried");
            }
            Err(HandlerError::Retryable(reason)) => {
                let reason = format!("gave up after {} deliveries: {reason}", delivery.delivered);
                self.park(message, delivery, &published(), reason, "dead_lettered")
                    .await;
            }
            Err(HandlerError::Permanent(reason)) => {
                self.park(message, delivery, &published(), reason, "dead_lettered")
                    .await;
            }
        }
    }

    /// How often a message being handled, or waiting in a fair buffer, is reported in
    /// progress: well inside `ack_wait`, so the server does not redeliver it meanwhile.
    pub(super) fn progress_interval(&self) -> Duration {
        (self.spec.ack_wait / 3).max(Duration::from_millis(100))
    }

    /// Runs `work`, telling the server every `ack_wait / 3` that the message is in progress.
    async fn with_progress<T>(
        &self,
        message: &jetstream::Message,
        work: impl Future<Output = T>,
    ) -> T {
        let interval = self.progress_interval();
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                () = tokio::time::sleep(interval) => {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
            }
        }
    }

    /// Publishes the message to the dead-letter stream, then acks it (counted as `outcome`).
    /// If the dead-letter publish fails (e.g. the stream is full), the message is never
    /// acked: it is NAKed for a redelivery while it has deliveries left, and on its last one
    /// it is held in progress and parking is retried until it succeeds or the process stops.
    async fn park(
        &self,
        message: &jetstream::Message,
        delivery: Delivery,
        published: &str,
        reason: String,
        outcome: &'static str,
    ) {
        let durable = self.spec.durable;
        let first_error = self
            .forget(delivery.stream_sequence)
            .unwrap_or_else(|| reason.clone());
        let letter = || {
            dead_letter(
                &self.js,
                &self.dead_letter_subject,
                durable,
                Original {
                    subject: message.subject.as_str(),
                    payload: message.payload.clone(),
                    headers: message.headers.clone().unwrap_or_default(),
                    published,
                },
                delivery,
                &first_error,
                &reason,
            )
        };
        let mut stored = letter().await;
        if let Err(e) = &stored {
            count(durable, "park_failed");
            if !delivery.is_last_attempt() {
                tracing::error!(%reason, error = %e, "dead-letter publish failed; the event stays pending");
                self.remember(delivery.stream_sequence, &first_error);
                let _ = message
                    .ack_with(AckKind::Nak(Some(
                        self.spec.jittered_retry_delay(delivery.delivered),
                    )))
                    .await;
                return;
            }
            // A NAK now would use up the last delivery: JetStream would stop delivering the
            // message. Keep it in progress here and try again until there is room.
            tracing::error!(%reason, error = %e, "dead-letter publish failed on the last delivery; holding the event and retrying");
            let mut attempt = delivery.delivered;
            while let Err(e) = &stored {
                let delay = self.spec.jittered_retry_delay(attempt);
                let waited = tokio::select! {
                    () = self.with_progress(message, tokio::time::sleep(delay)) => true,
                    () = self.shutdown.cancelled() => false,
                };
                if !waited {
                    // Handed back: JetStream's max-deliveries advisory reaches a replica's
                    // watcher, which parks it from the domain stream (the original stays).
                    tracing::error!(error = %e, "stopping while the dead-letter stream refuses the event; it stays in the domain stream");
                    self.remember(delivery.stream_sequence, &first_error);
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                    return;
                }
                stored = letter().await;
                if let Err(e) = &stored {
                    count(durable, "park_failed");
                    tracing::warn!(error = %e, "dead-letter stream still refuses the event; holding it");
                }
                attempt = attempt.saturating_add(1);
            }
        }
        tracing::error!(%reason, dead_letter = %self.dead_letter_subject, "event dead-lettered");
        let _ = message.ack().await;
        count(durable, outcome);
    }

    fn remember(&self, sequence: u64, error: &str) {
        if let Ok(mut map) = self.first_errors.lock()
            && map.len() < MAX_REMEMBERED_ERRORS
        {
            map.entry(sequence).or_insert_with(|| error.to_owned());
        }
    }

    fn forget(&self, sequence: u64) -> Option<String> {
        self.first_errors
            .lock()
            .ok()
            .and_then(|mut map| map.remove(&sequence))
    }
}
