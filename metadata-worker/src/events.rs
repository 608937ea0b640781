//! What the metadata-worker consumes: connection-succeeded (and connection-reported, the same
//! facts relayed by the api's deprecated metadata update), connection-failed and
//! connection-disconnected, read by one
//! durable consumer (`<ns>.events.connection.*.*`) and decoded by their `type`.

use schemas::events::{
    ConnectionDisconnected, ConnectionFailed, ConnectionReported, ConnectionSucceeded,
};
use schemas::{DecodeError, Envelope, Event, RawEnvelope, SubaccountId};
use service_kit::consumer::Consumable;

/// One connection event.
#[derive(Debug, Clone)]
pub enum ConnectionEvent {
    Succeeded(Envelope<ConnectionSucceeded>),
    Failed(Envelope<ConnectionFailed>),
    Disconnected(Envelope<ConnectionDisconnected>),
}

impl ConnectionEvent {
    pub fn subaccount(&self) -> &SubaccountId {
        match self {
            Self::Succeeded(e) => &e.subaccount_id,
            Self::Failed(e) => &e.subaccount_id,
            Self::Disconnected(e) => &e.subaccount_id,
        }
    }
}

/// The consumer's message family.
#[derive(Debug)]
pub struct ConnectionEvents;

impl Consumable for ConnectionEvents {
    type Message = ConnectionEvent;
    const NAME: &'static str = "connection";

    fn decode(bytes: &[u8]) -> Result<ConnectionEvent, DecodeError> {
        let raw = RawEnvelope::decode_raw(bytes)?;
        match raw.event_type.as_str() {
            ConnectionSucceeded::TYPE => Envelope::from_raw(raw).map(ConnectionEvent::Succeeded),
            // Applied, and announced to webhooks, exactly like connection-succeeded (what the
            // same report was before the api got an identity of its own); it keeps its id.
            ConnectionReported::TYPE => {
                Envelope::<ConnectionReported>::from_raw(raw).map(|reported| {
                    ConnectionEvent::Succeeded(Envelope {
                        id: reported.id,
                        event_type: ConnectionSucceeded::TYPE.to_owned(),
                        version: reported.version,
                        occurred_at: reported.occurred_at,
                        subaccount_id: reported.subaccount_id,
                        correlation_id: reported.correlation_id,
                        payload: reported.payload.into(),
                    })
                })
            }
            ConnectionFailed::TYPE => Envelope::from_raw(raw).map(ConnectionEvent::Failed),
            ConnectionDisconnected::TYPE => {
                Envelope::from_raw(raw).map(ConnectionEvent::Disconnected)
            }
            _ => Err(DecodeError::WrongType {
                expected: "connection-succeeded, connection-reported, connection-failed or connection-disconnected",
                found: raw.event_type,
            }),
        }
    }

    fn describe(event: &ConnectionEvent) -> (uuid::Uuid, uuid::Uuid, String) {
        match event {
            ConnectionEvent::Succeeded(e) => (e.id, e.correlation_id, e.subaccount_id.to_string()),
            ConnectionEvent::Failed(e) => (e.id, e.correlation_id, e.subaccount_id.to_string()),
            ConnectionEvent::Disconnected(e) => {
                (e.id, e.correlation_id, e.subaccount_id.to_string())
            }
        }
    }
}
