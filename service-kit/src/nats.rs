//! NATS and JetStream: connecting with a bounded retry, and provisioning the domain and
//! dead-letter streams idempotently (creating them, or updating an existing stream whose
//! settings differ from the configured ones).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use schemas::subjects::Namespace;
use secrecy::{ExposeSecret, SecretString};

use crate::config::{Env, NatsUrl, StreamSettings};
use crate::startup::{Dependency, StartupError, retry_for};

const NATS: Dependency = Dependency {
    setting: "NATS_URL",
    what: "NATS",
};

/// Who a client is to NATS and how it protects the connection: credentials (a `.creds` file
/// of NATS decentralized auth, or a user and password) and TLS (the CA that signs the server's
/// certificate, and a client certificate for mutual TLS). Without any of them the client
/// connects anonymously in plaintext, which is allowed only to a loopback server unless
/// `NATS_ALLOW_PLAINTEXT=true` says the network is private and `NATS_ALLOW_ANONYMOUS=true`
/// that the server wants no credentials.
#[derive(Clone, Default)]
pub struct NatsClientSettings {
    pub creds_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<SecretString>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub allow_plaintext: bool,
    pub allow_anonymous: bool,
}

impl fmt::Debug for NatsClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsClientSettings")
            .field("creds_file", &self.creds_file)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("allow_plaintext", &self.allow_plaintext)
            .field("allow_anonymous", &self.allow_anonymous)
            .finish()
    }
}

impl NatsClientSettings {
    /// Reads the settings and checks them against each other and against `url`.
    pub fn from_env(env: &mut Env, url: &NatsUrl) -> Self {
        let settings = Self {
            creds_file: env.optional(
                "NATS_CREDS_FILE",
                "A NATS credentials file (decentralized auth: the user's JWT and nkey seed) this service connects with.",
            ),
            user: env.optional("NATS_USER", "User this service connects to NATS as (with NATS_PASSWORD)."),
            password: env
                .optional::<String>("NATS_PASSWORD", "Password of NATS_USER (never logged).")
                .map(SecretString::from),
            tls_ca_file: env.optional(
                "NATS_TLS_CA_FILE",
                "PEM file of the CA that signs the NATS server's certificate; set, the connection must use TLS.",
            ),
            tls_cert_file: env.optional(
                "NATS_TLS_CERT_FILE",
                "PEM client certificate for mutual TLS with NATS (with NATS_TLS_KEY_FILE).",
            ),
            tls_key_file: env.optional(
                "NATS_TLS_KEY_FILE",
                "PEM private key of NATS_TLS_CERT_FILE.",
            ),
            allow_plaintext: env.value(
                "NATS_ALLOW_PLAINTEXT",
                "false",
                "`true` allows a plaintext connection to a NATS server that is not on loopback (a private network you trust). `false`: such a NATS_URL is refused at start-up unless TLS is configured (`tls://`, or NATS_TLS_CA_FILE).",
            ),
            allow_anonymous: env.value(
                "NATS_ALLOW_ANONYMOUS",
                "false",
                "`true` connects without credentials to a NATS server that is not on loopback. `false`: such a NATS_URL is refused at start-up unless NATS_CREDS_FILE (or NATS_USER) says who this service is.",
            ),
        };
        if settings.user.is_some() != settings.password.is_some() {
            env.problem("NATS_USER", "NATS_USER and NATS_PASSWORD go together");
        }
        if settings.creds_file.is_some() && settings.user.is_some() {
            env.problem(
                "NATS_CREDS_FILE",
                "use either NATS_CREDS_FILE or NATS_USER, not both",
            );
        }
        if settings.tls_cert_file.is_some() != settings.tls_key_file.is_some() {
            env.problem(
                "NATS_TLS_CERT_FILE",
                "NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE go together",
            );
        }
        if !settings.allow_plaintext && !settings.uses_tls(url) && !url.is_loopback() {
            env.problem(
                "NATS_URL",
                "a NATS server that is not on loopback needs TLS (a tls:// URL, or NATS_TLS_CA_FILE); NATS_ALLOW_PLAINTEXT=true allows plaintext on a private network",
            );
        }
        let anonymous = settings.creds_file.is_none() && settings.user.is_none();
        if anonymous && !settings.allow_anonymous && !url.is_loopback() {
            env.problem(
                "NATS_CREDS_FILE",
                "a NATS server that is not on loopback needs this service's credentials (a .creds file from `gcal-ops nats-auth generate`); NATS_ALLOW_ANONYMOUS=true connects without",
            );
        }
        settings
    }

    fn uses_tls(&self, url: &NatsUrl) -> bool {
        self.tls_ca_file.is_some() || self.tls_cert_file.is_some() || url.tls_required()
    }

    /// `options` with these credentials and TLS settings.
    async fn apply(
        &self,
        url: &NatsUrl,
        mut options: async_nats::ConnectOptions,
    ) -> std::io::Result<async_nats::ConnectOptions> {
        if let Some(path) = &self.creds_file {
            options = options.credentials_file(path).await?;
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.expose_secret().to_owned());
        }
        if let Some(ca) = &self.tls_ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options.require_tls(self.uses_tls(url)))
    }
}

/// Connects to NATS, retrying for at most `limit`. After the first connection the client
/// reconnects by itself forever; disconnections are logged and show on `/readyz`.
///
/// Replies come to the client's private inbox, `_INBOX.<namespace>.<client_name>.…`
/// ([`schemas::bus_access::inbox_prefix`]): the permissions `gcal-ops nats-auth generate`
/// writes let only this identity subscribe there, so no other client can read its replies
/// (access tokens among them).
pub async fn connect(
    url: &NatsUrl,
    client: &NatsClientSettings,
    ns: &Namespace,
    client_name: &str,
    limit: Duration,
) -> Result<async_nats::Client, StartupError> {
    let inbox = schemas::bus_access::inbox_prefix(ns, client_name);
    let connect_once = || {
        let options = async_nats::ConnectOptions::new()
            .name(client_name)
            .custom_inbox_prefix(inbox.clone())
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
        async move {
            let options = client.apply(url, options).await.map_err(|e| {
                async_nats::ConnectError::with_source(async_nats::ConnectErrorKind::Io, e)
            })?;
            options.connect(addr).await
        }
    };
    retry_for(limit, NATS, connect_once).await
}

/// The two streams every deployment has, with their bounds (see the operator guide's
/// "Bounded storage").
///
/// The domain stream refuses rather than drops: `discard: New` with
/// `discard_new_per_subject`, so a subject (one event type of one subaccount) at
/// `max_msgs_per_subject` gets its own publishes refused while every other subaccount keeps
/// publishing, and a full stream (`max_bytes`) refuses everyone instead of deleting older,
/// possibly unconsumed, events. The dead-letter stream has no per-subject bound (its subjects
/// are per consumer, not per tenant) but is just as bounded and just as unwilling to drop: a
/// full one makes parking fail, and the consumer keeps the message pending.
///
/// `replicas` is [`StreamSettings::replicas`] resolved for the server at hand.
pub fn stream_configs(
    ns: &Namespace,
    settings: &StreamSettings,
    replicas: usize,
) -> [stream::Config; 2] {
    [
        stream::Config {
            name: ns.events_stream(),
            description: Some(
                "Calendar connector domain events (replayable within max_age)".into(),
            ),
            subjects: ns.events_stream_subjects(),
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            discard_new_per_subject: true,
            max_bytes: settings.events_max_bytes,
            max_messages_per_subject: settings.events_max_msgs_per_subject,
            max_message_size: settings.events_max_msg_size,
            max_age: settings.events_max_age,
            duplicate_window: settings.duplicate_window,
            num_replicas: replicas,
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
            discard: stream::DiscardPolicy::New,
            discard_new_per_subject: false,
            max_bytes: settings.dead_letter_max_bytes,
            max_messages_per_subject: UNLIMITED,
            max_message_size: UNLIMITED_SIZE,
            max_age: settings.dead_letter_max_age,
            duplicate_window: settings.duplicate_window,
            num_replicas: replicas,
            ..Default::default()
        },
    ]
}

/// JetStream's "no limit" (the server reports an unset limit as -1).
const UNLIMITED: i64 = -1;
const UNLIMITED_SIZE: i32 = -1;

/// What provisioning did to one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamChange {
    Created,
    Updated,
    Unchanged,
}

/// Creates the domain and dead-letter streams, or brings existing ones to the configured
/// settings. Safe to run from every replica at once. The replica count is resolved here, from
/// the server the client is connected to (`STREAM_REPLICAS=auto`: 3 on a cluster, else 1);
/// consumers inherit it.
pub async fn ensure_streams(
    js: &jetstream::Context,
    ns: &Namespace,
    settings: &StreamSettings,
) -> Result<Vec<(String, StreamChange)>, StartupError> {
    let mut changes = Vec::new();
    let clustered = js.client().server_info().cluster.is_some();
    let replicas = settings.replicas.count(clustered);
    for config in stream_configs(ns, settings, replicas) {
        let name = config.name.clone();
        let budget = if name == ns.events_stream() {
            "EVENTS_MAX_BYTES"
        } else {
            "DEAD_LETTER_MAX_BYTES"
        };
        let change = ensure_stream(js, config).await.map_err(|e| match e {
            ProvisionError::NoStorage(cause) => StartupError::Misconfigured {
                setting: budget,
                cause: format!(
                    "the NATS server cannot reserve it for stream {name} ({cause}): lower it, or raise the server's JetStream max_file_store"
                ),
            },
            ProvisionError::Other(cause) => StartupError::Provisioning {
                // On a cluster the likely cause is another: while it forms (or has lost
                // nodes) the JetStream API times out or finds "no suitable peers".
                what: if clustered {
                    format!(
                        "JetStream stream {name} with {replicas} replicas (is the NATS cluster \
                         still electing its JetStream leader, or short of {replicas} JetStream \
                         nodes?)"
                    )
                } else {
                    format!("JetStream stream {name} (is JetStream enabled on the server?)")
                },
                cause,
            },
        })?;
        tracing::info!(stream = %name, ?change, replicas, "stream ready");
        changes.push((name, change));
    }
    Ok(changes)
}

/// Why a stream could not be provisioned.
enum ProvisionError {
    /// The server cannot reserve the stream's `max_bytes` (JetStream storage exhausted).
    NoStorage(String),
    Other(String),
}

impl From<String> for ProvisionError {
    fn from(cause: String) -> Self {
        Self::Other(cause)
    }
}

impl ProvisionError {
    fn of(err: &jetstream::context::CreateStreamError) -> Self {
        match err.kind() {
            jetstream::context::CreateStreamErrorKind::JetStream(js)
                if js.error_code() == jetstream::ErrorCode::STORAGE_RESOURCES_EXCEEDED =>
            {
                Self::NoStorage(err.to_string())
            }
            _ => Self::Other(err.to_string()),
        }
    }
}

async fn ensure_stream(
    js: &jetstream::Context,
    wanted: stream::Config,
) -> Result<StreamChange, ProvisionError> {
    // Two rounds: a replica that loses a creation race finds the stream on its second look.
    for _ in 0..2 {
        match js.get_stream(&wanted.name).await {
            Ok(mut existing) => {
                let info = existing.info().await.map_err(|e| e.to_string())?;
                if differs(&info.config, &wanted) {
                    if info.config.storage != wanted.storage {
                        return Err(ProvisionError::Other(format!(
                            "stream {} exists with {:?} storage; it must be recreated as {:?}",
                            wanted.name, info.config.storage, wanted.storage
                        )));
                    }
                    js.update_stream(merge(info.config.clone(), &wanted))
                        .await
                        .map_err(|e| ProvisionError::of(&e))?;
                    return Ok(StreamChange::Updated);
                }
                return Ok(StreamChange::Unchanged);
            }
            Err(e) if is_stream_not_found(&e) => {}
            Err(e) => return Err(ProvisionError::Other(e.to_string())),
        }
        match js.create_stream(wanted.clone()).await {
            Ok(_) => return Ok(StreamChange::Created),
            Err(e) if is_name_taken(&e) => continue,
            Err(e) => return Err(ProvisionError::of(&e)),
        }
    }
    Err(ProvisionError::Other(format!(
        "stream {} kept changing while being provisioned",
        wanted.name
    )))
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
/// `max_msgs` or `max_consumers`, say) are left as they are.
fn differs(current: &stream::Config, wanted: &stream::Config) -> bool {
    current.subjects != wanted.subjects
        || current.retention != wanted.retention
        || current.storage != wanted.storage
        || current.discard != wanted.discard
        || current.discard_new_per_subject != wanted.discard_new_per_subject
        || limit(current.max_bytes) != limit(wanted.max_bytes)
        || limit(current.max_messages_per_subject) != limit(wanted.max_messages_per_subject)
        || limit(current.max_message_size.into()) != limit(wanted.max_message_size.into())
        || current.max_age != wanted.max_age
        || current.duplicate_window != wanted.duplicate_window
        || current.num_replicas != wanted.num_replicas
        || current.description != wanted.description
}

/// A JetStream limit with "unlimited" in one spelling: the server answers -1 for what a
/// client may send as 0.
fn limit(value: i64) -> i64 {
    if value <= 0 { UNLIMITED } else { value }
}

fn merge(mut current: stream::Config, wanted: &stream::Config) -> stream::Config {
    if limit(wanted.max_messages_per_subject) != UNLIMITED
        && (limit(current.max_messages_per_subject) == UNLIMITED
            || wanted.max_messages_per_subject < current.max_messages_per_subject)
    {
        // nats-server trims subjects above a lowered per-subject limit (oldest first), even
        // with discard New: say so where an operator looks after a change.
        tracing::warn!(
            stream = %wanted.name,
            from = current.max_messages_per_subject,
            to = wanted.max_messages_per_subject,
            "lowering max_msgs_per_subject: subjects holding more events lose their oldest ones"
        );
    }
    current.subjects = wanted.subjects.clone();
    current.retention = wanted.retention;
    current.discard = wanted.discard;
    current.discard_new_per_subject = wanted.discard_new_per_subject;
    current.max_bytes = wanted.max_bytes;
    current.max_messages_per_subject = wanted.max_messages_per_subject;
    current.max_message_size = wanted.max_message_size;
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
    /// The stream bound that refused the event, when that is why: retrying soon will not
    /// help (room comes back as events age out, or when an operator raises the bound).
    pub refused_by: Option<StreamLimit>,
}

/// A bound of the domain stream that can refuse a publish (see [`stream_configs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamLimit {
    /// `max_msgs_per_subject`: this event type of this subaccount is at its bound.
    Subject,
    /// `max_bytes`: the stream's disk budget is used up (everyone is refused).
    StreamBytes,
    /// `max_msgs`: the stream holds as many events as it may (not set by this crate).
    StreamMessages,
    /// `max_msg_size`: this one event is too large.
    MessageSize,
}

impl StreamLimit {
    /// The `limit` label of `events_publish_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subject => "subject",
            Self::StreamBytes => "stream_bytes",
            Self::StreamMessages => "stream_messages",
            Self::MessageSize => "message_size",
        }
    }

    /// The bound behind a refused publish, read from JetStream's error in the ack.
    fn of(err: &jetstream::context::PublishError) -> Option<Self> {
        let api = std::error::Error::source(err)?.downcast_ref::<jetstream::Error>()?;
        let text = api.to_string();
        match api.error_code() {
            jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM => Some(Self::MessageSize),
            jetstream::ErrorCode::STREAM_STORE_FAILED if text.contains("per subject") => {
                Some(Self::Subject)
            }
            jetstream::ErrorCode::STREAM_STORE_FAILED if text.contains("maximum bytes") => {
                Some(Self::StreamBytes)
            }
            jetstream::ErrorCode::STREAM_STORE_FAILED if text.contains("maximum messages") => {
                Some(Self::StreamMessages)
            }
            _ => None,
        }
    }
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
        refused_by: None,
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
    ack.await.map_err(|e| {
        let refused_by = StreamLimit::of(&e);
        if let Some(limit) = refused_by {
            metrics::counter!("events_publish_refused_total", "event_type" => event.event_type, "limit" => limit.as_str())
                .increment(1);
        }
        PublishError {
            refused_by,
            ..error(e.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CommonConfig, Env};

    fn settings() -> StreamSettings {
        let mut env = Env::from_pairs(Vec::<(String, String)>::new());
        CommonConfig::from_env(&mut env).streams
    }

    #[test]
    fn the_domain_stream_refuses_per_subject_and_the_dead_letters_never_drop() {
        let ns = Namespace::new("t").expect("ns");
        let [events, dead] = stream_configs(&ns, &settings(), 1);
        assert_eq!(events.discard, stream::DiscardPolicy::New);
        assert!(events.discard_new_per_subject);
        assert_eq!(events.max_bytes, 10 << 30);
        assert_eq!(events.max_messages_per_subject, 100_000);
        assert_eq!(events.max_message_size, 64 << 10);
        assert_eq!(dead.discard, stream::DiscardPolicy::New);
        assert!(!dead.discard_new_per_subject);
        assert_eq!(dead.max_bytes, 1 << 30);
    }

    #[test]
    fn unlimited_reads_the_same_however_the_server_spells_it() {
        let ns = Namespace::new("t").expect("ns");
        let [_, wanted] = stream_configs(&ns, &settings(), 1);
        // What the server answers for the dead-letter stream: -1 for unset limits.
        let mut current = wanted.clone();
        current.max_messages_per_subject = -1;
        current.max_message_size = -1;
        assert!(!differs(&current, &wanted));
        current.max_messages_per_subject = 0;
        current.max_message_size = 0;
        assert!(!differs(&current, &wanted));
        current.max_bytes = -1;
        assert!(
            differs(&current, &wanted),
            "an unbounded stream gets its bound"
        );
    }

    #[test]
    fn an_old_unbounded_stream_is_brought_to_the_bounds() {
        let ns = Namespace::new("t").expect("ns");
        let [wanted, _] = stream_configs(&ns, &settings(), 1);
        let old = stream::Config {
            name: wanted.name.clone(),
            subjects: wanted.subjects.clone(),
            discard: stream::DiscardPolicy::Old,
            max_bytes: -1,
            max_messages_per_subject: -1,
            max_message_size: -1,
            max_consumers: 7,
            ..wanted.clone()
        };
        assert!(differs(&old, &wanted));
        let merged = merge(old, &wanted);
        assert!(!differs(&merged, &wanted));
        assert_eq!(merged.max_consumers, 7, "settings we do not manage stay");
    }
}
