//! Every NATS subject, stream, consumer, queue group and header name, in one place. No other
//! module in the workspace spells a subject as a string literal.
//!
//! All names hang off a [`Namespace`] prefix (default `gcal`) so that several deployments — or
//! several tests running in parallel against one nats-server — never see each other's traffic.
//!
//! | what | name |
//! |---|---|
//! | connect request (request/reply, queue group `oauth-worker`) | `<prefix>.rpc.connect-requested` |
//! | domain events | `<prefix>.events.<family>.<fact>.<subaccountId>` in stream `<PREFIX>_EVENTS` |
//! | dead letters | `<prefix>.dead-letter.<consumer>` in stream `<PREFIX>_DEAD_LETTERS` |

use crate::envelope::StreamEvent;
use crate::ids::SubaccountId;

/// Durable consumer of auth-link-issued (the mailer).
pub const MAILER_CONSUMER: &str = "mailer-worker";
/// Durable consumer of connection events (the metadata writer).
pub const METADATA_CONSUMER: &str = "metadata-worker";
/// Durable consumer of disconnect-requested (the oauth-worker revokes and deletes).
pub const DISCONNECT_CONSUMER: &str = "oauth-worker-disconnect";
/// Durable consumer of connection events that requests one webhook delivery per subscribed
/// endpoint (in the metadata-worker).
pub const WEBHOOK_FAN_OUT_CONSUMER: &str = "webhook-fan-out";
/// Durable consumer of webhook-delivery-requested that POSTs signed webhooks (in the
/// metadata-worker).
pub const WEBHOOK_DELIVERY_CONSUMER: &str = "webhook-delivery";
/// Queue group in which oauth-worker replicas share connect requests.
pub const OAUTH_WORKER_QUEUE: &str = "oauth-worker";

/// Header names our services set on NATS messages (besides JetStream's own `Nats-Msg-Id`).
pub mod headers {
    /// The envelope's `type`, so tools can route or filter without decoding the body.
    pub const EVENT_TYPE: &str = "Gcal-Event-Type";
    /// The envelope's `correlationId`, for log correlation before the body is decoded.
    pub const CORRELATION_ID: &str = "Gcal-Correlation-Id";
    /// On a connect request: the api wants the link settings in the reply
    /// (`ConnectRequestedReply::Issued.link_settings`). A header, not a payload field, so a
    /// worker of an earlier version ignores it.
    pub const LINK_SETTINGS_WANTED: &str = "Gcal-Link-Settings-Wanted";
    /// W3C trace context of the span that sent the message (`00-<trace id>-<span id>-<flags>`):
    /// the receiver's handling continues the same trace.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C vendor trace state, next to [`TRACEPARENT`] when the trace has any.
    pub const TRACESTATE: &str = "tracestate";
    /// On a replayed message: the `Nats-Msg-Id` it was first published with.
    pub const ORIGINAL_MSG_ID: &str = "Gcal-Original-Msg-Id";
    /// On a dead letter: the subject the message was first published on.
    pub const DEAD_LETTER_SUBJECT: &str = "Gcal-Dead-Letter-Subject";
    /// On a dead letter: the stream sequence of the original in the domain stream.
    pub const DEAD_LETTER_STREAM_SEQUENCE: &str = "Gcal-Dead-Letter-Stream-Sequence";
    /// On a dead letter: the durable consumer that gave up.
    pub const DEAD_LETTER_CONSUMER: &str = "Gcal-Dead-Letter-Consumer";
    /// On a dead letter: how many times it had been delivered.
    pub const DEAD_LETTER_DELIVERIES: &str = "Gcal-Dead-Letter-Deliveries";
    /// On a dead letter: the first error seen, and the last one.
    pub const DEAD_LETTER_FIRST_ERROR: &str = "Gcal-Dead-Letter-First-Error";
    pub const DEAD_LETTER_LAST_ERROR: &str = "Gcal-Dead-Letter-Last-Error";
    /// On a dead letter: when the message was first published, and when it was parked (RFC 3339).
    pub const DEAD_LETTER_PUBLISHED_AT: &str = "Gcal-Dead-Letter-Published-At";
    pub const DEAD_LETTER_PARKED_AT: &str = "Gcal-Dead-Letter-Parked-At";
}

/// Why a string cannot be a namespace prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a NATS namespace prefix must be 1-32 characters of a-z, 0-9, '-' and '_', got {0:?}")]
pub struct InvalidPrefix(pub String);

/// The prefix every subject and stream name of one deployment shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    prefix: String,
}

impl Default for Namespace {
    fn default() -> Self {
        Self {
            prefix: "gcal".to_owned(),
        }
    }
}

impl std::str::FromStr for Namespace {
    type Err = InvalidPrefix;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::new(raw)
    }
}

impl Namespace {
    pub fn new(prefix: &str) -> Result<Self, InvalidPrefix> {
        let ok = (1..=32).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self {
                prefix: prefix.to_owned(),
            })
        } else {
            Err(InvalidPrefix(prefix.to_owned()))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where the api sends connect requests and oauth-worker replicas listen (queue group).
    pub fn connect_requested(&self) -> String {
        format!("{}.rpc.connect-requested", self.prefix)
    }

    /// Where services ask the oauth-worker for an access token (queue group).
    pub fn access_token_requested(&self) -> String {
        format!("{}.rpc.access-token-requested", self.prefix)
    }

    /// The subject one event for one subaccount is published on.
    pub fn event<E: StreamEvent>(&self, subaccount: &SubaccountId) -> String {
        format!(
            "{}.events.{}.{}",
            self.prefix,
            E::SUBJECT_TOKENS,
            subaccount
        )
    }

    /// A consumer filter matching one event type for every subaccount.
    pub fn event_filter<E: StreamEvent>(&self) -> String {
        format!("{}.events.{}.*", self.prefix, E::SUBJECT_TOKENS)
    }

    /// A consumer filter matching every `connection.*` event (succeeded, failed, and future
    /// lifecycle events) for every subaccount: what the metadata worker reads.
    pub fn connection_events_filter(&self) -> String {
        format!("{}.events.connection.*.*", self.prefix)
    }

    /// The domain stream's name. Stream names may not contain '.', so the prefix is upper-cased
    /// and '-' becomes '_'.
    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.stream_stem())
    }

    /// Subjects captured by the domain stream.
    pub fn events_stream_subjects(&self) -> Vec<String> {
        vec![format!("{}.events.>", self.prefix)]
    }

    /// The dead-letter stream's name.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DEAD_LETTERS", self.stream_stem())
    }

    /// Subjects captured by the dead-letter stream.
    pub fn dead_letter_stream_subjects(&self) -> Vec<String> {
        vec![format!("{}.dead-letter.>", self.prefix)]
    }

    /// Where a consumer parks the messages it gave up on.
    pub fn dead_letter(&self, consumer: &str) -> String {
        format!("{}.dead-letter.{}", self.prefix, consumer)
    }

    fn stream_stem(&self) -> String {
        self.prefix.to_ascii_uppercase().replace('-', "_")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{AuthLinkIssued, ConnectionFailed, ConnectionSucceeded};

    fn matches(filter: &str, subject: &str) -> bool {
        let f: Vec<_> = filter.split('.').collect();
        let s: Vec<_> = subject.split('.').collect();
        for (i, tok) in f.iter().enumerate() {
            match *tok {
                ">" => return s.len() > i,
                "*" if i < s.len() => {}
                t if s.get(i) == Some(&t) => {}
                _ => return false,
            }
        }
        f.len() == s.len()
    }

    #[test]
    fn subjects_fall_under_the_streams_and_filters_that_should_see_them() {
        let ns = Namespace::new("t-1").expect("valid");
        let sub = SubaccountId::parse("68cf05f060d294db17c0685e").expect("valid");
        let succeeded = ns.event::<ConnectionSucceeded>(&sub);
        let failed = ns.event::<ConnectionFailed>(&sub);
        let link = ns.event::<AuthLinkIssued>(&sub);
        assert_eq!(
            succeeded,
            "t-1.events.connection.succeeded.68cf05f060d294db17c0685e"
        );
        for s in [&succeeded, &failed, &link] {
            assert!(matches(&ns.events_stream_subjects()[0], s), "{s}");
        }
        assert!(matches(&ns.connection_events_filter(), &succeeded));
        assert!(matches(&ns.connection_events_filter(), &failed));
        assert!(!matches(&ns.connection_events_filter(), &link));
        assert!(matches(&ns.event_filter::<AuthLinkIssued>(), &link));
        assert!(!matches(
            &ns.events_stream_subjects()[0],
            &ns.dead_letter("x")
        ));
        assert!(matches(
            &ns.dead_letter_stream_subjects()[0],
            &ns.dead_letter(MAILER_CONSUMER)
        ));
        assert_eq!(ns.events_stream(), "T_1_EVENTS");
    }

    #[test]
    fn prefixes_that_would_break_subjects_are_refused() {
        for bad in ["", "a.b", "a b", "*", ">", "UPPER", &"x".repeat(33)] {
            assert!(Namespace::new(bad).is_err(), "{bad:?}");
        }
    }
}
