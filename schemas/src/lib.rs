//! The contracts between the calendar connector's services, and nothing else.
//!
//! Every type here is plain serde data: the event [`envelope`] and the payload of each event
//! ([`events`]), the NATS subject and stream names ([`subjects`]), the MongoDB documents
//! ([`documents`]), the identifiers they share ([`ids`]) and who may use which subject
//! ([`bus_access`]). No module performs I/O, so any
//! service, test or tool can depend on this crate without pulling in a client library.
//!
//! The JSON Schema of every event is generated from these types into `schemas/json/`
//! ([`json_schema`]) and committed; a test fails when a committed file is stale.

pub mod bus_access;
pub mod documents;
pub mod envelope;
pub mod event_id;
pub mod events;
pub mod ids;
pub mod json;
pub mod json_schema;
pub mod subjects;

pub use envelope::{DecodeError, Envelope, Event, RawEnvelope, StreamEvent};
pub use event_id::derived_event_id;
pub use ids::{ConnectorId, DisplayName, IdError, SubaccountId, UserEmail, google_account_key};
