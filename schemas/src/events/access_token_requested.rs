//! Any service → oauth-worker, as a NATS request in a queue group: "give me a usable access
//! token for this connected Google account". The oauth-worker answers from its cache or
//! refreshes the token (once across all replicas). The reply carries a live access token:
//! deployments protect NATS with TLS and per-service credentials.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::Event;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessTokenRequested {
    /// The connected Google account (the envelope's `subaccountId` names the tenant).
    pub google_email: String,
}

impl Event for AccessTokenRequested {
    const TYPE: &'static str = "access-token-requested";
    const VERSION: u32 = 1;
}

#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "camelCase", deny_unknown_fields)]
pub enum AccessTokenReply {
    #[serde(rename_all = "camelCase")]
    Issued {
        /// Valid for at least the worker's `ACCESS_TOKEN_MARGIN`, or half the token's
        /// lifetime when that is shorter.
        access_token: String,
        expires_at: DateTime<Utc>,
    },
    #[serde(rename_all = "camelCase")]
    Rejected {
        code: AccessTokenRejectionCode,
        /// Safe to show: never contains tokens.
        message: String,
    },
}

/// Never prints the token.
impl std::fmt::Debug for AccessTokenReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Issued { expires_at, .. } => f
                .debug_struct("Issued")
                .field("access_token", &"<redacted>")
                .field("expires_at", expires_at)
                .finish(),
            Self::Rejected { code, message } => f
                .debug_struct("Rejected")
                .field("code", code)
                .field("message", message)
                .finish(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessTokenRejectionCode {
    /// The request could not be decoded.
    InvalidRequest,
    /// No such account is connected for this subaccount (or it was disconnected).
    NotConnected,
    /// The provider refused the refresh token: the user must connect again.
    ReauthRequired,
    /// The account was connected without a refresh token (the provider did not grant offline
    /// access: see the oauth-worker's `OAUTH_PROVIDER_PROFILE`) and its access token has
    /// expired: the user must connect again. Answered without calling the provider.
    NoRefreshToken,
    /// The provider, MongoDB or Redis is unavailable, or another replica's refresh did not
    /// finish in time: try again shortly.
    Unavailable,
}
