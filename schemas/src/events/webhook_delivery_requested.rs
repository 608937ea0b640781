//! metadata-worker (webhook fan-out) → metadata-worker (webhook delivery), on JetStream: one
//! connection event is to be POSTed to one registered webhook endpoint.
//!
//! It carries the original event whole (id, type, occurredAt, subaccountId, payload), so the
//! delivery depends on nothing but the endpoint document. Published with the `Nats-Msg-Id`
//! `<event id>.<endpoint id>`, so a redelivered fan-out does not request a second delivery.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::{Event, StreamEvent};
use crate::ids::SubaccountId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookDeliveryRequested {
    /// The `webhookendpoints` document (`_id`, a UUIDv7) to deliver to.
    pub endpoint_id: String,
    /// The event being announced.
    pub event: WebhookEvent,
}

/// The announced event, as its envelope had it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookEvent {
    /// The original event's id: the webhook's `id` and `Gcal-Webhook-Id` (receivers
    /// de-duplicate on it).
    pub id: Uuid,
    /// `connection-succeeded`, `connection-failed` or `connection-disconnected`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub subaccount_id: SubaccountId,
    /// The original event's payload, unchanged.
    pub payload: serde_json::Value,
}

impl Event for WebhookDeliveryRequested {
    const TYPE: &'static str = "webhook-delivery-requested";
    const VERSION: u32 = 1;
}

impl StreamEvent for WebhookDeliveryRequested {
    const SUBJECT_TOKENS: &'static str = "webhook.delivery-requested";
}
