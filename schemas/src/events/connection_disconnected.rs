//! oauth-worker → metadata-worker (and notifiers), on JetStream: a connected Google account
//! was disconnected (its tokens revoked at the provider, or the revocation refused, and
//! deleted).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::{Event, StreamEvent};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionDisconnected {
    /// The Google account that is no longer connected.
    pub google_email: String,
    /// ISO 8601 with milliseconds and `Z`, like `connectedAt`: `2025-10-05T12:00:00.000Z`.
    pub disconnected_at: String,
    /// The disconnect operation that did it, when one did (the api's operation id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// What the provider answered to the revocation. Absent in events published before it
    /// was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<RevocationOutcome>,
}

/// The provider's answer to revoking a disconnected account's grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevocationOutcome {
    /// Revoked at the provider.
    Revoked,
    /// The provider no longer knew the token as valid (expired, or revoked before, e.g. by
    /// the user in their account settings).
    AlreadyInvalid,
    /// The provider refused the revocation for good (e.g. `invalid_client`). The grant was
    /// deleted here anyway — the user asked to disconnect — but may still be live at the
    /// provider until the user removes it there.
    Refused,
}

impl Event for ConnectionDisconnected {
    const TYPE: &'static str = "connection-disconnected";
    const VERSION: u32 = 1;
}

impl StreamEvent for ConnectionDisconnected {
    const SUBJECT_TOKENS: &'static str = "connection.disconnected";
}
