//! The tenant's `outbox`: events that must not be lost but have no other document to be
//! written with (connection-failed, including reauth-required, stored before they are
//! published; auth-link-issued, stored only when JetStream could not take it at once),
//! removed once JetStream has them. connection-succeeded rides in its
//! `googleauths` document instead ([`super::google_auth::PendingEvent`]), in the same write
//! as the tokens.

use bson::DateTime;
use serde::{Deserialize, Serialize};

pub const COLLECTION: &str = "outbox";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEntry {
    /// The envelope id, also the `Nats-Msg-Id`: storing or publishing an entry twice stores
    /// one event.
    #[serde(rename = "_id")]
    pub event_id: String,
    /// The event type (`connection-failed`, `auth-link-issued`).
    pub event_type: String,
    /// The envelope's JSON, exactly as it goes on the wire.
    pub envelope: String,
    pub created_at: DateTime,
}
