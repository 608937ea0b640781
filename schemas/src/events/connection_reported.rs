//! api → metadata-worker (and notifiers), on JetStream: another service reported a completed
//! connection through the deprecated `POST /api/connectors/{id}/metadata/update`.
//!
//! The facts are those of [`ConnectionSucceeded`], under their own type and subject so the bus
//! can tell them apart: only the oauth-worker, which ran the consent itself, may publish
//! `connection-succeeded`; the api, which only relays what a service token claims, publishes
//! this. The metadata-worker applies both the same way.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::{Event, StreamEvent};
use crate::events::ConnectionSucceeded;

/// The reported metadata, field for field [`ConnectionSucceeded`]'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionReported {
    /// Hex `_id` of the calendar entry in the tenant's `calendars` collection.
    pub calendar_id: String,
    /// The platform user the reporting service names.
    pub user_email: String,
    /// The Google account, in the key form every lookup uses.
    pub google_email: String,
    /// ISO 8601 with milliseconds and `Z`, exactly as stored in metadata.
    pub connected_at: String,
}

impl Event for ConnectionReported {
    const TYPE: &'static str = "connection-reported";
    const VERSION: u32 = 1;
}

impl StreamEvent for ConnectionReported {
    const SUBJECT_TOKENS: &'static str = "connection.reported";
}

impl From<ConnectionReported> for ConnectionSucceeded {
    fn from(r: ConnectionReported) -> Self {
        Self {
            calendar_id: r.calendar_id,
            user_email: r.user_email,
            google_email: r.google_email,
            connected_at: r.connected_at,
        }
    }
}
