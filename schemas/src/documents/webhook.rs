//! Webhook endpoints a subaccount registered (`webhookendpoints`) and the log of every
//! delivery attempt to them (`webhookdeliveries`), in the tenant database.

use bson::DateTime;
use serde::{Deserialize, Serialize};

use crate::documents::google_auth::EncryptedToken;

pub const ENDPOINTS_COLLECTION: &str = "webhookendpoints";
pub const DELIVERIES_COLLECTION: &str = "webhookdeliveries";

/// The event types an endpoint can subscribe to (the default: all of them).
pub const WEBHOOK_EVENT_TYPES: [&str; 3] = [
    "connection-succeeded",
    "connection-failed",
    "connection-disconnected",
];

/// One registered endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpoint {
    /// A UUIDv7.
    #[serde(rename = "_id")]
    pub id: String,
    pub subaccount_id: String,
    /// Where the webhooks are POSTed (checked against the target policy when registered and
    /// again at every delivery).
    pub url: String,
    /// Subscribed event types, a subset of [`WEBHOOK_EVENT_TYPES`].
    pub events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `false` once the receiver answered 410 Gone: nothing more is delivered.
    pub enabled: bool,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// The signing secret, AES-256-GCM encrypted (`WEBHOOK_SECRET_KEYS`), bound to the
    /// subaccount and endpoint id. Shown in plain text once, in the registration's answer.
    pub secret: EncryptedToken,
    /// Which of the subaccount's `WEBHOOK_MAX_ENDPOINTS` places this endpoint holds, from 0.
    /// Unique per subaccount ([`ENDPOINT_SLOT_FIELD`] index), so concurrent registrations
    /// cannot together exceed the cap. `None` on endpoints registered before slots existed;
    /// the api gives them one at the next registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<i32>,
}

/// The field of [`WebhookEndpoint::slot`], unique per subaccount where present.
pub const ENDPOINT_SLOT_FIELD: &str = "slot";

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    #[serde(rename = "_id")]
    pub id: String,
    pub endpoint_id: String,
    pub subaccount_id: String,
    /// The announced event's id (the webhook's `Gcal-Webhook-Id`).
    pub event_id: String,
    pub event_type: String,
    /// 1 on the first try (JetStream's delivery count; a replay starts again at 1).
    pub attempt: i64,
    pub attempted_at: DateTime,
    /// The receiver's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
    /// Why the attempt failed without a status (timeout, refused connection, a target the
    /// policy refuses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: i64,
    pub outcome: DeliveryOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// 2xx: done.
    Delivered,
    /// Failed; JetStream redelivers it after the next retry delay.
    Retrying,
    /// Failed on the last allowed delivery (or for good): parked in the dead-letter stream.
    Failed,
    /// 410 Gone: the endpoint is now disabled.
    EndpointDisabled,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
            Self::EndpointDisabled => "endpoint_disabled",
        }
    }
}
