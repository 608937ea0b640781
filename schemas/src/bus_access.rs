//! Who may do what on the bus: one NATS identity per service, and for every subject family of
//! [`crate::subjects`] a decision for every identity. The NATS permissions each identity's
//! credentials carry are computed here ([`permissions`]), so the server enforces exactly this
//! table; `gcal-ops nats-auth generate` writes them into the credentials.
//!
//! A new subject cannot be forgotten: [`decide`] matches every ([`Identity`], [`Subject`])
//! pair without a catch-all, so a new [`Subject`] variant does not compile until each identity
//! has a decision, and a test fails when an event type or a [`crate::subjects::Namespace`]
//! method exists without a [`Subject`] variant.
//!
//! | identity | who connects with it |
//! |---|---|
//! | `api` | the api |
//! | `oauth-worker` | the oauth-worker |
//! | `metadata-worker` | the metadata-worker |
//! | `mailer-worker` | the mailer-worker |
//! | `token-client` | a platform service that reads calendars with the connected accounts' live Google access tokens (the only identity besides the oauth-worker that gets them) |
//! | `operator` | `gcal-ops` for dead-letter replay and purge |
//! | `operator-readonly` | `gcal-ops` for looking only (`dlq list`, `dlq show`, `--dry-run`) |

use crate::envelope::StreamEvent;
use crate::events::{
    AuthLinkIssued, ConnectionDisconnected, ConnectionFailed, ConnectionReported,
    ConnectionSucceeded, DisconnectRequested, WebhookDeliveryRequested,
};
use crate::subjects::{
    DISCONNECT_CONSUMER, MAILER_CONSUMER, METADATA_CONSUMER, Namespace, WEBHOOK_DELIVERY_CONSUMER,
    WEBHOOK_FAN_OUT_CONSUMER,
};

/// One NATS identity: its own credentials, permissions and reply inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    Api,
    OAuthWorker,
    MetadataWorker,
    MailerWorker,
    TokenClient,
    Operator,
    OperatorReadonly,
}

impl Identity {
    pub const ALL: [Identity; 7] = [
        Self::Api,
        Self::OAuthWorker,
        Self::MetadataWorker,
        Self::MailerWorker,
        Self::TokenClient,
        Self::Operator,
        Self::OperatorReadonly,
    ];

    /// The name of the identity: the credentials file's stem and the user's name in NATS. The
    /// four services' names are their service names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::OAuthWorker => "oauth-worker",
            Self::MetadataWorker => "metadata-worker",
            Self::MailerWorker => "mailer-worker",
            Self::TokenClient => "token-client",
            Self::Operator => "operator",
            Self::OperatorReadonly => "operator-readonly",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.name() == name)
    }
}

/// Every event type on the domain stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    AuthLinkIssued,
    ConnectionSucceeded,
    ConnectionReported,
    ConnectionFailed,
    ConnectionDisconnected,
    DisconnectRequested,
    WebhookDeliveryRequested,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        Self::AuthLinkIssued,
        Self::ConnectionSucceeded,
        Self::ConnectionReported,
        Self::ConnectionFailed,
        Self::ConnectionDisconnected,
        Self::DisconnectRequested,
        Self::WebhookDeliveryRequested,
    ];

    /// The event's subject tokens ([`StreamEvent::SUBJECT_TOKENS`]).
    pub fn subject_tokens(self) -> &'static str {
        match self {
            Self::AuthLinkIssued => AuthLinkIssued::SUBJECT_TOKENS,
            Self::ConnectionSucceeded => ConnectionSucceeded::SUBJECT_TOKENS,
            Self::ConnectionReported => ConnectionReported::SUBJECT_TOKENS,
            Self::ConnectionFailed => ConnectionFailed::SUBJECT_TOKENS,
            Self::ConnectionDisconnected => ConnectionDisconnected::SUBJECT_TOKENS,
            Self::DisconnectRequested => DisconnectRequested::SUBJECT_TOKENS,
            Self::WebhookDeliveryRequested => WebhookDeliveryRequested::SUBJECT_TOKENS,
        }
    }

    /// The subjects of this event for every subaccount.
    pub fn filter(self, ns: &Namespace) -> String {
        format!("{}.events.{}.*", ns.prefix(), self.subject_tokens())
    }
}

/// Every durable JetStream consumer, each owned by one identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durable {
    Mailer,
    Metadata,
    WebhookFanOut,
    WebhookDelivery,
    Disconnect,
}

impl Durable {
    pub const ALL: [Durable; 5] = [
        Self::Mailer,
        Self::Metadata,
        Self::WebhookFanOut,
        Self::WebhookDelivery,
        Self::Disconnect,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Mailer => MAILER_CONSUMER,
            Self::Metadata => METADATA_CONSUMER,
            Self::WebhookFanOut => WEBHOOK_FAN_OUT_CONSUMER,
            Self::WebhookDelivery => WEBHOOK_DELIVERY_CONSUMER,
            Self::Disconnect => DISCONNECT_CONSUMER,
        }
    }

    /// The only identity that may create, read and acknowledge this consumer, and park its
    /// dead letters.
    pub fn owner(self) -> Identity {
        match self {
            Self::Mailer => Identity::MailerWorker,
            Self::Metadata | Self::WebhookFanOut | Self::WebhookDelivery => {
                Identity::MetadataWorker
            }
            Self::Disconnect => Identity::OAuthWorker,
        }
    }
}

/// Every subject family of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// `<ns>.rpc.connect-requested`: the api asks the oauth-worker for an auth URL.
    ConnectRequested,
    /// `<ns>.rpc.access-token-requested`: the reply carries a live Google access token.
    AccessTokenRequested,
    /// `<ns>.events.<tokens>.<subaccountId>`, stored in the domain stream.
    Event(EventKind),
    /// `<ns>.dead-letter.<consumer>`, stored in the dead-letter stream.
    DeadLetter(Durable),
    /// The domain stream's JetStream API: provisioning (info, create, update), reading stored
    /// events, purging and deleting.
    EventsStream,
    /// The dead-letter stream's JetStream API.
    DeadLetterStream,
}

impl Subject {
    /// Every subject family, each event and each dead-letter subject once.
    pub fn all() -> Vec<Subject> {
        let mut all = vec![Self::ConnectRequested, Self::AccessTokenRequested];
        all.extend(EventKind::ALL.map(Self::Event));
        all.extend(Durable::ALL.map(Self::DeadLetter));
        all.extend([Self::EventsStream, Self::DeadLetterStream]);
        all
    }

    /// A short name for tables and test messages.
    pub fn label(self) -> String {
        match self {
            Self::ConnectRequested => "rpc.connect-requested".into(),
            Self::AccessTokenRequested => "rpc.access-token-requested".into(),
            Self::Event(kind) => format!("events.{}", kind.subject_tokens()),
            Self::DeadLetter(durable) => format!("dead-letter.{}", durable.name()),
            Self::EventsStream => "stream EVENTS (JetStream API)".into(),
            Self::DeadLetterStream => "stream DEAD_LETTERS (JetStream API)".into(),
        }
    }
}

/// What one identity may do with one subject family. Anything not granted is refused by the
/// server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    None,
    /// Send requests; the reply comes to the identity's private inbox.
    Request,
    /// Receive requests (queue group) and answer each once.
    Serve,
    /// Publish (through JetStream, which acknowledges to the private inbox).
    Publish,
    /// Publish again what a dead letter holds (`gcal-ops dlq replay`, `events replay`).
    Replay,
    /// Streams: create the stream when it is missing, read its settings and bring them to the
    /// configured ones (every service provisions at start-up).
    Provision,
    /// Streams: read stored messages (ordered consumers, message get) without touching any
    /// service's durable consumer.
    Read,
    /// Streams: read, and delete messages or purge (the dead-letter stream, for operators).
    ReadAndPurge,
}

/// The decision for `identity` on `subject`. Exhaustive on purpose: no catch-all arm.
pub fn decide(identity: Identity, subject: Subject) -> Access {
    use Access::*;
    use Identity as I;
    match subject {
        Subject::ConnectRequested => match identity {
            I::Api => Request,
            I::OAuthWorker => Serve,
            I::MetadataWorker
            | I::MailerWorker
            | I::TokenClient
            | I::Operator
            | I::OperatorReadonly => None,
        },
        // Live Google tokens: the platform's calendar readers ask, the oauth-worker answers.
        // The api never needs one.
        Subject::AccessTokenRequested => match identity {
            I::TokenClient => Request,
            I::OAuthWorker => Serve,
            I::Api | I::MetadataWorker | I::MailerWorker | I::Operator | I::OperatorReadonly => {
                None
            }
        },
        Subject::Event(kind) => decide_event(identity, kind),
        Subject::DeadLetter(durable) => match identity {
            owner if owner == durable.owner() => Publish,
            I::Api
            | I::OAuthWorker
            | I::MetadataWorker
            | I::MailerWorker
            | I::TokenClient
            | I::Operator
            | I::OperatorReadonly => None,
        },
        Subject::EventsStream => match identity {
            I::Api | I::OAuthWorker | I::MetadataWorker | I::MailerWorker => Provision,
            // `events replay` reads the domain stream; nobody may purge it.
            I::Operator | I::OperatorReadonly => Read,
            I::TokenClient => None,
        },
        Subject::DeadLetterStream => match identity {
            I::Api | I::OAuthWorker | I::MetadataWorker | I::MailerWorker => Provision,
            I::Operator => ReadAndPurge,
            I::OperatorReadonly => Read,
            I::TokenClient => None,
        },
    }
}

fn decide_event(identity: Identity, kind: EventKind) -> Access {
    use Access::*;
    use EventKind as E;
    use Identity as I;
    let publisher = match kind {
        E::AuthLinkIssued
        | E::ConnectionSucceeded
        | E::ConnectionFailed
        | E::ConnectionDisconnected => I::OAuthWorker,
        // The api relays reports and asks for disconnects; it cannot claim a consent happened.
        E::ConnectionReported | E::DisconnectRequested => I::Api,
        E::WebhookDeliveryRequested => I::MetadataWorker,
    };
    match identity {
        i if i == publisher => Publish,
        // Every event can be dead-lettered, so every event can be replayed.
        I::Operator => Replay,
        I::Api
        | I::OAuthWorker
        | I::MetadataWorker
        | I::MailerWorker
        | I::TokenClient
        | I::OperatorReadonly => None,
    }
}

/// Options of the generated permissions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// The api's try-it page (`API_DEV_MODE`, local runs only) reads the domain stream to show
    /// a connection's event trail: grant the api [`Access::Read`] on it.
    pub api_reads_events: bool,
}

/// The NATS permissions of one identity: what its credentials carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish_allow: Vec<String>,
    pub publish_deny: Vec<String>,
    pub subscribe_allow: Vec<String>,
    pub subscribe_deny: Vec<String>,
    /// May answer requests it received (one reply each), whatever the reply subject.
    pub allow_responses: bool,
}

/// The reply inbox prefix of `client_name` in `ns`: only that identity may subscribe below it.
pub fn inbox_prefix(ns: &Namespace, client_name: &str) -> String {
    format!("_INBOX.{}.{}", ns.prefix(), client_name)
}

/// The client name each identity connects with (which sets its inbox prefix): the service
/// name, and `gcal-ops` for both operator identities.
pub fn client_name(identity: Identity) -> &'static str {
    match identity {
        Identity::Operator | Identity::OperatorReadonly => "gcal-ops",
        other => other.name(),
    }
}

/// The permissions of `identity` in `ns`, computed from [`decide`].
pub fn permissions(identity: Identity, ns: &Namespace, options: Options) -> Permissions {
    let mut p = Permissions::default();
    p.subscribe_allow
        .push(format!("{}.>", inbox_prefix(ns, client_name(identity))));
    let api = "$JS.API";
    for subject in Subject::all() {
        let access = decide(identity, subject);
        match (subject, access) {
            (_, Access::None) => {}
            (Subject::ConnectRequested, Access::Request) => {
                p.publish_allow.push(ns.connect_requested())
            }
            (Subject::AccessTokenRequested, Access::Request) => {
                p.publish_allow.push(ns.access_token_requested())
            }
            (Subject::ConnectRequested, Access::Serve) => {
                p.subscribe_allow.push(ns.connect_requested());
                p.allow_responses = true;
            }
            (Subject::AccessTokenRequested, Access::Serve) => {
                p.subscribe_allow.push(ns.access_token_requested());
                p.allow_responses = true;
            }
            (Subject::Event(kind), Access::Publish | Access::Replay) => {
                p.publish_allow.push(kind.filter(ns))
            }
            (Subject::DeadLetter(durable), Access::Publish) => {
                p.publish_allow.push(ns.dead_letter(durable.name()))
            }
            (Subject::EventsStream | Subject::DeadLetterStream, access) => {
                let stream = if subject == Subject::EventsStream {
                    ns.events_stream()
                } else {
                    ns.dead_letter_stream()
                };
                p.publish_allow.push(format!("{api}.STREAM.INFO.{stream}"));
                match access {
                    Access::Provision => {
                        p.publish_allow
                            .push(format!("{api}.STREAM.CREATE.{stream}"));
                        p.publish_allow
                            .push(format!("{api}.STREAM.UPDATE.{stream}"));
                    }
                    Access::Read | Access::ReadAndPurge => {
                        read_stream(&mut p, &stream);
                        if access == Access::ReadAndPurge {
                            p.publish_allow.push(format!("{api}.STREAM.PURGE.{stream}"));
                            p.publish_allow
                                .push(format!("{api}.STREAM.MSG.DELETE.{stream}"));
                        }
                    }
                    _ => unreachable!("no other access is decided for a stream"),
                }
            }
            (subject, access) => {
                unreachable!("{access:?} is not a decision for {subject:?}")
            }
        }
    }
    let events = ns.events_stream();
    let api_reads = options.api_reads_events && identity == Identity::Api;
    if api_reads {
        read_stream(&mut p, &events);
    }
    // Whoever reads the domain stream through ephemeral consumers holds wildcards that would
    // cover the services' durables too.
    let reads_events = api_reads
        || matches!(
            decide(identity, Subject::EventsStream),
            Access::Read | Access::ReadAndPurge
        );
    for durable in Durable::ALL {
        let name = durable.name();
        if durable.owner() == identity {
            // Create (both API spellings) and read its own durable consumer, acknowledge its
            // messages, hear when one exhausts its deliveries, and read that message back.
            p.publish_allow.extend([
                format!("{api}.CONSUMER.CREATE.{events}.{name}"),
                format!("{api}.CONSUMER.CREATE.{events}.{name}.>"),
                format!("{api}.CONSUMER.DURABLE.CREATE.{events}.{name}"),
                format!("{api}.CONSUMER.INFO.{events}.{name}"),
                format!("{api}.CONSUMER.MSG.NEXT.{events}.{name}"),
                format!("$JS.ACK.{events}.{name}.>"),
                format!("{api}.STREAM.MSG.GET.{events}"),
            ]);
            p.subscribe_allow.push(format!(
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{events}.{name}"
            ));
        } else if reads_events {
            // Nobody else touches a service's durable consumer (deny wins over allow).
            p.publish_deny.extend([
                format!("{api}.CONSUMER.CREATE.{events}.{name}"),
                format!("{api}.CONSUMER.CREATE.{events}.{name}.>"),
                format!("{api}.CONSUMER.MSG.NEXT.{events}.{name}"),
                format!("{api}.CONSUMER.DELETE.{events}.{name}"),
            ]);
        }
    }
    // Stream deletion is nobody's: streams are removed by hand with the server's system
    // credentials, never by this system.
    for stream in [ns.events_stream(), ns.dead_letter_stream()] {
        p.publish_deny.push(format!("{api}.STREAM.DELETE.{stream}"));
    }
    p.publish_allow.sort();
    p.publish_allow.dedup();
    p.publish_deny.sort();
    p.publish_deny.dedup();
    p.subscribe_allow.sort();
    p.subscribe_allow.dedup();
    p
}

/// Ordered (ephemeral, unacknowledged) consumers and direct message reads on `stream`.
fn read_stream(p: &mut Permissions, stream: &str) {
    let api = "$JS.API";
    p.publish_allow.extend([
        format!("{api}.STREAM.MSG.GET.{stream}"),
        format!("{api}.DIRECT.GET.{stream}"),
        format!("{api}.DIRECT.GET.{stream}.>"),
        format!("{api}.CONSUMER.CREATE.{stream}"),
        format!("{api}.CONSUMER.CREATE.{stream}.>"),
        format!("{api}.CONSUMER.INFO.{stream}.*"),
        format!("{api}.CONSUMER.MSG.NEXT.{stream}.*"),
        format!("{api}.CONSUMER.DELETE.{stream}.*"),
    ]);
}

/// The decision table as Markdown (for the operator guide and the note).
pub fn table() -> String {
    let mut out = String::from("| subject |");
    for identity in Identity::ALL {
        out.push_str(&format!(" {} |", identity.name()));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(Identity::ALL.len()));
    out.push('\n');
    for subject in Subject::all() {
        out.push_str(&format!("| {} |", subject.label()));
        for identity in Identity::ALL {
            let cell = match decide(identity, subject) {
                Access::None => "—",
                Access::Request => "request",
                Access::Serve => "serve",
                Access::Publish => "publish",
                Access::Replay => "replay",
                Access::Provision => "provision",
                Access::Read => "read",
                Access::ReadAndPurge => "read, purge",
            };
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    for durable in Durable::ALL {
        out.push_str(&format!("| consumer {} |", durable.name()));
        for identity in Identity::ALL {
            let cell = if durable.owner() == identity {
                "consume"
            } else {
                "—"
            };
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `SUBJECT_TOKENS` in `events/` has an [`EventKind`]: a new event type without a
    /// permission decision fails here.
    #[test]
    fn every_event_type_has_a_permission_decision() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/events");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).expect("events dir") {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
            for line in text.lines() {
                if let Some(rest) = line.split("SUBJECT_TOKENS: &'static str = \"").nth(1) {
                    found.push(rest.split('"').next().expect("literal").to_owned());
                }
            }
        }
        assert!(found.len() >= 7, "{found:?}");
        let decided: Vec<_> = EventKind::ALL.iter().map(|k| k.subject_tokens()).collect();
        for tokens in &found {
            assert!(
                decided.contains(&tokens.as_str()),
                "event subject {tokens:?} has no EventKind, so no identity has a decision for it"
            );
        }
        assert_eq!(found.len(), decided.len(), "{found:?} vs {decided:?}");
    }

    /// Every subject-making method of `Namespace` is one this module covers: a new subject
    /// family fails here until it is added to [`Subject`] and to this list.
    #[test]
    fn every_namespace_subject_has_a_permission_decision() {
        let covered = [
            ("prefix", "the namespace itself"),
            ("new", "constructor"),
            ("connect_requested", "Subject::ConnectRequested"),
            ("access_token_requested", "Subject::AccessTokenRequested"),
            ("event", "Subject::Event"),
            ("event_filter", "Subject::Event"),
            ("connection_events_filter", "Subject::Event (connection.*)"),
            ("events_stream", "Subject::EventsStream"),
            ("events_stream_subjects", "Subject::Event"),
            ("dead_letter_stream", "Subject::DeadLetterStream"),
            ("dead_letter_stream_subjects", "Subject::DeadLetter"),
            ("dead_letter", "Subject::DeadLetter"),
        ];
        let text = include_str!("subjects.rs");
        let body = text
            .split("impl Namespace {")
            .nth(1)
            .expect("impl Namespace")
            .split("\n}\n")
            .next()
            .expect("end of impl");
        for line in body.lines() {
            if let Some(rest) = line.trim().strip_prefix("pub fn ") {
                let name = rest.split(['(', '<']).next().expect("name");
                assert!(
                    covered.iter().any(|(n, _)| *n == name),
                    "Namespace::{name} makes a subject no permission decision covers: add it to bus_access::Subject"
                );
            }
        }
        // The durable consumers too: every `*_CONSUMER` constant has a [`Durable`].
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("pub const ")
                && let Some(name) = rest.split(':').next()
                && name.ends_with("_CONSUMER")
            {
                let value = rest.split('"').nth(1).expect("value");
                assert!(
                    Durable::ALL.iter().any(|d| d.name() == value),
                    "consumer {name} = {value:?} has no bus_access::Durable (no owner)"
                );
            }
        }
    }

    #[test]
    fn the_rules_the_issue_names_hold() {
        let ns = Namespace::new("gcal").expect("ns");
        let d = Options::default();
        let api = permissions(Identity::Api, &ns, d);
        assert!(!api.publish_allow.contains(&ns.access_token_requested()));
        assert!(
            !api.publish_allow
                .iter()
                .any(|s| s.contains("connection.succeeded"))
        );
        let metadata = permissions(Identity::MetadataWorker, &ns, d);
        assert!(!metadata.publish_allow.contains(&ns.connect_requested()));
        for identity in Identity::ALL {
            let p = permissions(identity, &ns, d);
            let purges = p.publish_allow.iter().any(|s| s.contains(".STREAM.PURGE."));
            assert_eq!(purges, identity == Identity::Operator, "{identity:?}");
            assert!(
                !p.publish_allow
                    .iter()
                    .any(|s| s.contains(".STREAM.DELETE."))
            );
            assert!(
                !p.subscribe_allow
                    .iter()
                    .any(|s| s.starts_with("gcal.events")),
                "{identity:?}: nobody reads events outside JetStream"
            );
            assert!(
                p.subscribe_allow[0..]
                    .iter()
                    .any(|s| s.starts_with("_INBOX.gcal."))
            );
            for subject in p.publish_allow.iter().chain(&p.subscribe_allow) {
                assert!(!subject.contains(">.") && !subject.is_empty(), "{subject}");
            }
        }
        let ro = permissions(Identity::OperatorReadonly, &ns, d);
        assert!(
            !ro.publish_allow.iter().any(|s| s.starts_with("gcal.")),
            "{ro:?}"
        );
    }

    #[test]
    fn the_table_has_a_row_per_subject_and_a_column_per_identity() {
        let table = table();
        assert_eq!(
            table.lines().count(),
            2 + Subject::all().len() + Durable::ALL.len()
        );
        assert!(
            table
                .lines()
                .all(|l| l.matches('|').count() == Identity::ALL.len() + 2)
        );
    }
}
