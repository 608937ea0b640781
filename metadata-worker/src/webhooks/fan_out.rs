//! The fan-out: for each connection event, one `webhook-delivery-requested` event per enabled
//! endpoint of the subaccount subscribed to the event's type. The metadata writer calls it for
//! every event it handles (one durable consumer reads each connection event once). The
//! endpoints come from the in-memory [`registry`](super::registry), which reads MongoDB only
//! when they changed.
//!
//! The requests are published with the `Nats-Msg-Id` `<event id>.<endpoint id>`: when an event
//! is redelivered (a MongoDB or NATS hiccup half-way through the endpoints), JetStream drops
//! the requests it already stored (within `EVENTS_DUPLICATE_WINDOW`; past it, the deliverer
//! still sends an event to an endpoint once, see `delivery`).
//!
//! Until this version the fan-out was a durable consumer of its own, `webhook-fan-out`. A
//! deployment that still has it is served as before ([`FanOut`] is also its handler), so the
//! events it holds are announced; once its pending count is 0 the operator deletes it (see the
//! operator guide, "Upgrading").

use std::sync::Arc;

use schemas::events::{WebhookDeliveryRequested, WebhookEvent};
use schemas::{Envelope, Event};
use service_kit::Infrastructure;
use service_kit::consumer::{Delivery, EventHandler, HandlerError};

use super::registry::EndpointRegistry;
use crate::events::{ConnectionEvent, ConnectionEvents};

#[derive(Debug, Clone)]
pub struct FanOut {
    pub infra: Infrastructure,
    /// The subaccounts' endpoints, held between events (shared by the metadata writer and
    /// the retired consumer).
    pub endpoints: Arc<EndpointRegistry>,
}

/// The announced event, whole, as the delivery request carries it.
fn webhook_event<P: Event>(event: &Envelope<P>) -> Result<WebhookEvent, HandlerError> {
    Ok(WebhookEvent {
        id: event.id,
        event_type: event.event_type.clone(),
        occurred_at: event.occurred_at,
        subaccount_id: event.subaccount_id.clone(),
        payload: serde_json::to_value(&event.payload)
            .map_err(|e| HandlerError::Permanent(format!("payload is not JSON: {e}")))?,
    })
}

impl FanOut {
    /// Requests a delivery of `event` for each subscribed endpoint; how many.
    pub async fn announce(&self, event: &ConnectionEvent) -> Result<usize, HandlerError> {
        let (announced, correlation_id) = match event {
            ConnectionEvent::Succeeded(e) => (webhook_event(e)?, e.correlation_id),
            ConnectionEvent::Failed(e) => (webhook_event(e)?, e.correlation_id),
            ConnectionEvent::Disconnected(e) => (webhook_event(e)?, e.correlation_id),
        };
        let subaccount = event.subaccount();
        let (endpoints, _) = self
            .endpoints
            .subscribed(&self.infra, subaccount, &announced.event_type)
            .await
            .map_err(|e| HandlerError::Retryable(format!("reading webhook endpoints: {e}")))?;
        for endpoint in &endpoints {
            let request = Envelope::new(
                subaccount.clone(),
                correlation_id,
                WebhookDeliveryRequested {
                    endpoint_id: endpoint.id.clone(),
                    event: announced.clone(),
                },
            );
            let msg_id = format!("{}.{}", announced.id, endpoint.id);
            service_kit::nats::publish_event_with_msg_id(
                &self.infra.jetstream,
                &self.infra.namespace,
                &request,
                &msg_id,
            )
            .await
            .map_err(|e| HandlerError::Retryable(e.to_string()))?;
        }
        if !endpoints.is_empty() {
            tracing::info!(endpoints = endpoints.len(), "webhook deliveries requested");
        }
        Ok(endpoints.len())
    }
}

/// The retired `webhook-fan-out` consumer's handler, while a deployment still has it.
impl EventHandler<ConnectionEvents> for FanOut {
    async fn handle(
        &self,
        event: ConnectionEvent,
        _delivery: Delivery,
    ) -> Result<(), HandlerError> {
        self.announce(&event).await.map(|_| ())
    }
}
