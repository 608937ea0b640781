//! oauth-worker → metadata-worker (and notifiers), on JetStream: a connected Google account
//! was disconnected (its tokens revoked at the provider and deleted).

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
}

impl Event for ConnectionDisconnected {
    const TYPE: &'static str = "connection-disconnected";
    const VERSION: u32 = 1;
}

impl StreamEvent for ConnectionDisconnected {
    const SUBJECT_TOKENS: &'static str = "connection.disconnected";
}
