//! oauth-worker → metadata-worker (and notifiers), on JetStream: the consent completed, the
//! tokens are stored and the calendar entry exists.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::{Event, StreamEvent};

/// Exactly the facts the spec's `connectorsubaccount.metadata` is built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionSucceeded {
    /// Hex `_id` of the calendar entry in the tenant's `calendars` collection.
    pub calendar_id: String,
    /// The platform user who asked for the connection.
    pub user_email: String,
    /// The Google account that consented (from userinfo / the id_token).
    pub google_email: String,
    /// ISO 8601 with milliseconds and `Z`, exactly as stored in metadata: `2025-10-05T12:00:00.000Z`.
    pub connected_at: String,
}

impl Event for ConnectionSucceeded {
    const TYPE: &'static str = "connection-succeeded";
    const VERSION: u32 = 1;
}

impl StreamEvent for ConnectionSucceeded {
    const SUBJECT_TOKENS: &'static str = "connection.succeeded";
}
