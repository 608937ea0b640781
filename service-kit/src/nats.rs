//! NATS and JetStream: connecting with a bounded retry, and provisioning the domain and
//! dead-letter streams idempotently (creating them, or updating an existing stream whose
//! settings differ from the configured ones).

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use schemas::subjects::Namespace;

use crate::config::{NatsUrl, StreamSettings};
use crate::startup::{Dependency, StartupError, retry_for};

const NATS: Dependency = Dependency {
    setting: "NATS_URL",
    what: "NATS",
};

/// Connects to NATS, retrying for at most `limit`. After the first connection the client
/// reconnects by itself forever; disconnections are logged and show on `/readyz`.
pub async fn connect(
    url: &NatsUrl,
    client_name: &str,
    limit: Duration,
) -> Result<async_nats::Client, StartupError> {
    let connect_once = || {
        let options = async_nats::ConnectOptions::new()
            .name(client_name)
            .connection_timeout(Duration::from_secs(2))
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS disconnected; reconnecting")
                    }
                    other => tracing::info!(event = %other, "NATS event"),
                }
            });
        let addr = url.0.clone();
        async move { options.connect(addr).await }
    };
    retry_for(limit, NATS, connect_once).await
}

/// The two streams every deployment has.
pub fn stream_configs(ns: &Namespace, settings: &StreamSettings) -> [stream::Config; 2] {
    [
        stream::Config {
            name: ns.events_stream(),
            description: Some(
                "Calendar connector domain events (replayable within max_age)".into(),
            ),
            subjects: ns.events_stream_subjects(),
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            max_age: settings.events_max_age,
            duplicate_window: settings.duplicate_window,
            num_replicas: settings.replicas,
            ..Default::default()
        },
        stream::Config {
            name: ns.dead_letter_stream(),
            description: Some(
                "Calendar connector dead letters: original message, headers and reason".into(),
            ),
            subjects: ns.dead_letter_stream_subjects(),
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            max_age: settings.dead_letter_max_age,
            duplicate_window: settings.duplicate_window,
            num_replicas: settings.replicas,
            ..Default::default()
        },
    ]
}

/// What provisioning did to one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamChange {
    Created,
    Updated,
    Unchanged,
}

/// Creates the domain and dead-letter streams, or brings existing ones to the configured
/// settings. Safe to run from every replica at once.
pub async fn ensure_streams(
    js: &jetstream::Context,
    ns: &Namespace,
    settings: &StreamSettings,
) -> Result<Vec<(String, StreamChange)>, StartupError> {
    let mut changes = Vec::new();
    for config in stream_configs(ns, settings) {
        let name = config.name.clone();
        let change = ensure_stream(js, config).await.map_err(|cause| StartupError::Misconfigured {
            setting: "NATS_URL",
            cause: format!("cannot provision JetStream stream {name} (is JetStream enabled on the server?): {cause}"),
        })?;
        tracing::info!(stream = %name, ?change, "stream ready");
        changes.push((name, change));
    }
    Ok(changes)
}

async fn ensure_stream(
    js: &jetstream::Context,
    wanted: stream::Config,
) -> Result<StreamChange, String> {
    // Two rounds: a replica that loses a creation race finds the stream on its second look.
    for _ in 0..2 {
        match js.get_stream(&wanted.name).await {
            Ok(mut existing) => {
                let info = existing.info().await.map_err(|e| e.to_string())?;
                if differs(&info.config, &wanted) {
                    if info.config.storage != wanted.storage {
                        return Err(format!(
                            "stream {} exists with {:?} storage; it must be recreated as {:?}",
                            wanted.name, info.config.storage, wanted.storage
                        ));
                    }
                    js.update_stream(merge(info.config.clone(), &wanted))
                        .await
                        .map_err(|e| e.to_string())?;
                    return Ok(StreamChange::Updated);
                }
                return Ok(StreamChange::Unchanged);
            }
            Err(e) if is_stream_not_found(&e) => {}
            Err(e) => return Err(e.to_string()),
        }
        match js.create_stream(wanted.clone()).await {
            Ok(_) => return Ok(StreamChange::Created),
            Err(e) if is_name_taken(&e) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "stream {} kept changing while being provisioned",
        wanted.name
    ))
}

fn is_stream_not_found(err: &jetstream::context::GetStreamError) -> bool {
    matches!(err.kind(), jetstream::context::GetStreamErrorKind::JetStream(js)
        if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

fn is_name_taken(err: &jetstream::context::CreateStreamError) -> bool {
    matches!(err.kind(), jetstream::context::CreateStreamErrorKind::JetStream(js)
        if js.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST)
}

/// Whether any setting this crate manages differs. Settings we do not manage (an operator's
/// `max_bytes`, say) are left as they are.
fn differs(current: &stream::Config, wanted: &stream::Config) -> bool {
    current.subjects != wanted.subjects
        || current.retention != wanted.retention
        || current.storage != wanted.storage
        || current.discard != wanted.discard
        || current.max_age != wanted.max_age
        || current.duplicate_window != wanted.duplicate_window
        || current.num_replicas != wanted.num_replicas
        || current.description != wanted.description
}

fn merge(mut current: stream::Config, wanted: &stream::Config) -> stream::Config {
    current.subjects = wanted.subjects.clone();
    current.retention = wanted.retention;
    current.discard = wanted.discard;
    current.max_age = wanted.max_age;
    current.duplicate_window = wanted.duplicate_window;
    current.num_replicas = wanted.num_replicas;
    current.description = wanted.description.clone();
    current
}

/// Why an event was not accepted by JetStream.
#[derive(Debug, thiserror::Error)]
#[error("JetStream did not accept {event_type} {event_id} on {subject}: {cause}")]
pub struct PublishError {
    pub event_type: &'static str,
    pub event_id: uuid::Uuid,
    pub subject: String,
    pub cause: String,
}

/// Publishes `event` on its subject and waits for JetStream's acknowledgement, so a returned
/// `Ok` means the event is stored. The event id is the `Nats-Msg-Id`: publishing the same
/// event twice inside the duplicate window stores it once (`PublishAck::duplicate`).
pub async fn publish_event<E: schemas::StreamEvent>(
    js: &jetstream::Context,
    ns: &Namespace,
    event: &schemas::Envelope<E>,
) -> Result<jetstream::publish::PublishAck, PublishError> {
    publish_raw(js, ns.event::<E>(&event.subaccount_id), RawEvent::of(event)).await
}

/// An event already serialized (e.g. read back from an outbox).
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub event_type: &'static str,
    pub event_id: uuid::Uuid,
    pub correlation_id: uuid::Uuid,
    pub bytes: Vec<u8>,
}

impl RawEvent {
    /// An envelope, serialized.
    pub fn of<E: schemas::StreamEvent>(event: &schemas::Envelope<E>) -> Self {
        Self {
            event_type: E::TYPE,
            event_id: event.id,
            correlation_id: event.correlation_id,
            bytes: event.to_bytes(),
        }
    }
}

/// [`publish_event`] with a `Nats-Msg-Id` of the caller's choosing, for an event derived
/// from another one (e.g. `<event id>.<endpoint id>`): a producer that is redelivered its input
/// then derives the same id, and JetStream stores the derived event once.
pub async fn publish_event_with_msg_id<E: schemas::StreamEvent>(
    js: &jetstream::Context,
    ns: &Namespace,
    event: &schemas::Envelope<E>,
    msg_id: &str,
) -> Result<jetstream::publish::PublishAck, PublishError> {
    publish_with_msg_id(
        js,
        ns.event::<E>(&event.subaccount_id),
        RawEvent::of(event),
        msg_id,
    )
    .await
}

/// Publishes serialized event bytes on `subject` with the event id as `Nats-Msg-Id` and
/// waits for JetStream's acknowledgement.
pub async fn publish_raw(
    js: &jetstream::Context,
    subject: String,
    event: RawEvent,
) -> Result<jetstream::publish::PublishAck, PublishError> {
    let msg_id = event.event_id.to_string();
    publish_with_msg_id(js, subject, event, &msg_id).await
}

async fn publish_with_msg_id(
    js: &jetstream::Context,
    subject: String,
    event: RawEvent,
    msg_id: &str,
) -> Result<jetstream::publish::PublishAck, PublishError> {
    let error = |cause: String| PublishError {
        event_type: event.event_type,
        event_id: event.event_id,
        subject: subject.clone(),
        cause,
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(schemas::subjects::headers::EVENT_TYPE, event.event_type);
    headers.insert(
        schemas::subjects::headers::CORRELATION_ID,
        event.correlation_id.to_string().as_str(),
    );
    // W3C trace context of the span publishing: the consumer's handling continues the trace.
    crate::telemetry::inject_nats(&mut headers);
    let message = jetstream::message::PublishMessage::build()
        .payload(event.bytes.clone().into())
        .headers(headers)
        .message_id(msg_id);
    let ack = js
        .send_publish(subject.clone(), message)
        .await
        .map_err(|e| error(e.to_string()))?;
    ack.await.map_err(|e| error(e.to_string()))
}
