//! api → oauth-worker, as a NATS request in a queue group: the frontend is waiting for the
//! authorization URL, so this is request/reply rather than a stream event.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::Event;
use crate::ids::UserEmail;

/// A frontend asked to connect a Google Calendar for a subaccount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectRequested {
    /// Who asked; receives the link and becomes `metadata.userEmail`.
    pub user_email: UserEmail,
    /// Whether the oauth-worker should also email the link (the spec's default: true).
    pub send_email: bool,
}

impl Event for ConnectRequested {
    const TYPE: &'static str = "connect-requested";
    const VERSION: u32 = 1;
}

/// The oauth-worker's answer. Either the link was issued or the request was refused with a
/// code the api maps to an HTTP status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "camelCase", deny_unknown_fields)]
pub enum ConnectRequestedReply {
    #[serde(rename_all = "camelCase")]
    Issued {
        /// The provider's consent URL, with state and PKCE challenge.
        auth_url: String,
        /// When the state behind the URL expires; after that the callback refuses it.
        expires_at: DateTime<Utc>,
        /// True only once the auth-link-issued event was acknowledged by JetStream. False when
        /// no email was asked for, or when JetStream did not accept it: the link still works
        /// and the caller can hand it to the user directly.
        email_sent: bool,
    },
    #[serde(rename_all = "camelCase")]
    Rejected {
        code: ConnectRejectionCode,
        /// Safe to show to the caller: never contains secrets.
        message: String,
    },
}

/// Why the oauth-worker could not issue a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectRejectionCode {
    /// The request could not be decoded (a contract mismatch between deployed versions).
    InvalidRequest,
    /// Redis, where the single-use state lives, is unavailable: no link can be issued.
    StateStoreUnavailable,
}
